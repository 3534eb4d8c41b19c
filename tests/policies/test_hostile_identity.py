"""Hostile identity cases: administrator policies in every spelling IAM accepts, trust that lets too many in,
GCP primitive and public grants on every IAM kind, Azure's all-powerful roles by id or by name; and the
legitimate look-alikes that must pass (a policy that reads one bucket, IRSA with the exact sub, ...)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

from policies.rules.identity import GCP_IAM
from tests.policies.harness import Case, assert_case
from tests.sdk import resource_inputs

ADMIN, TRUST = "iam-no-admin-policy", "iam-trust-restricted"
PRIMITIVE, PUBLIC, AZURE = "gcp-no-primitive-roles", "gcp-no-public-iam", "azure-no-admin-roles"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
POLICY = "aws:iam/policy:Policy"
ROLE = "aws:iam/role:Role"
ATTACH = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
ISSUER = "oidc.eks.us-east-1.amazonaws.com/id/47FF84030B293295A85B14DE05BA7933"
OIDC = f"arn:aws:iam::123456789012:oidc-provider/{ISSUER}"
GITHUB = "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com"
PARTNER = "210987654321"
SA = "serviceAccount:ss-serving@servestack-prod.iam.gserviceaccount.com"
SUB = "/subscriptions/00000000-0000-4000-8000-000000000001"
RG = f"{SUB}/resourceGroups/servestack-rg"
OWNER = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"
BLOB_READER = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"
ASSIGNMENT = "azure-native:authorization:RoleAssignment"
DEFINITION = "azure-native:authorization:RoleDefinition"


def doc(*statements: dict[str, Any], text: bool = True, single: bool = False) -> Any:
    document = {"Version": "2012-10-17", "Statement": statements[0] if single else list(statements)}
    return json.dumps(document) if text else document


def allow(action: Any, resource: Any = "*", **more: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **more}


def trust(principal: Any, action: Any = "sts:AssumeRole", condition: dict[str, Any] | None = None,
          key: str = "Principal", effect: str = "Allow") -> dict[str, Any]:
    statement: dict[str, Any] = {"Effect": effect, "Action": action, key: principal}
    if condition is not None:
        statement["Condition"] = condition
    return {"assumeRolePolicy": doc(statement)}


def irsa(condition: dict[str, Any] | None) -> dict[str, Any]:
    return trust({"Federated": OIDC}, "sts:AssumeRoleWithWebIdentity", condition)


def exact_sub(operator: str = "StringEquals", value: Any = "system:serviceaccount:servestack:servestack") -> dict:
    return {operator: {f"{ISSUER}:sub": value, f"{ISSUER}:aud": "sts.amazonaws.com"}}


def assignment(role: str, scope: str = SUB, principal_type: str | None = "ServicePrincipal") -> dict[str, Any]:
    props = {"roleDefinitionId": f"{SUB}/providers/Microsoft.Authorization/roleDefinitions/{role}", "scope": scope,
             "principalId": "02790a5f-7ed0-b483-fe27-8ec24427216c"}
    if principal_type is not None:
        props["principalType"] = principal_type
    return props


READ_ONE_BUCKET = doc(allow(["s3:ListBucket"], "arn:aws:s3:::models"),
                      allow(["s3:GetObject", "s3:GetObjectVersion"], "arn:aws:s3:::models/*"))

CASES = [
    # --- iam-no-admin-policy ---
    Case("star-on-star-json-single-statement", ADMIN, ROLE_POLICY, {"policy": doc(allow("*"), single=True)},
         "violation", "every action of every service (Action '*') on every resource"),
    Case("service-star-object-form", ADMIN, ROLE_POLICY, {"policy": doc(allow("s3:*"), text=False)}, "violation",
         "every action of s3"),
    Case("action-in-upper-case", ADMIN, ROLE_POLICY, {"policy": doc(allow("S3:*"))}, "violation", "every action of s3"),
    Case("star-colon-star", ADMIN, POLICY, {"policy": doc(allow("*:*"))}, "violation", "every service"),
    Case("wildcard-service-prefix", ADMIN, ROLE_POLICY, {"policy": doc(allow("s*:*"))}, "violation",
         "every service matching s*"),
    Case("question-mark-star-action", ADMIN, ROLE_POLICY, {"policy": doc(allow("iam:?*"))}, "violation",
         "every action of iam"),
    Case("admin-hidden-in-a-list", ADMIN, ROLE_POLICY,
         {"policy": doc(allow(["s3:GetObject", "iam:*", "kms:Decrypt"], ["arn:aws:s3:::models/*", "*"]))},
         "violation", "iam:*"),
    Case("not-action-on-star", ADMIN, ROLE_POLICY,
         {"policy": doc({"Effect": "Allow", "NotAction": ["iam:*", "organizations:*"], "Resource": "*"})},
         "violation", "every action except iam:*, organizations:* (NotAction)"),
    Case("service-star-on-every-bucket-arn", ADMIN, ROLE_POLICY, {"policy": doc(allow("s3:*", "arn:aws:s3:::*"))},
         "violation", "arn:aws:s3:::*"),
    Case("not-resource", ADMIN, ROLE_POLICY,
         {"policy": doc({"Effect": "Allow", "Action": "ec2:*", "NotResource": "arn:aws:ec2:*:*:vpc/vpc-1"})},
         "violation", "NotResource"),
    Case("lowercase-element-names", ADMIN, ROLE_POLICY,
         {"policy": json.dumps({"statement": [{"effect": "allow", "action": "*", "resource": "*"}]})}, "violation"),
    Case("user-policy", ADMIN, "aws:iam/userPolicy:UserPolicy", {"policy": doc(allow("*"))}, "violation"),
    Case("group-policy", ADMIN, "aws:iam/groupPolicy:GroupPolicy", {"policy": doc(allow("ec2:*"))}, "violation"),
    Case("role-inline-policy", ADMIN, ROLE,
         {**trust({"Service": "ec2.amazonaws.com"}), "inlinePolicies": [{"name": "ops", "policy": doc(allow("*"))}]},
         "violation", "inlinePolicies[0] (ops)"),
    Case("permission-set-inline-policy", ADMIN, "aws:ssoadmin/permissionSetInlinePolicy:PermissionSetInlinePolicy",
         {"inlinePolicy": doc(allow("*"))}, "violation", "inlinePolicy"),
    Case("attach-administrator-access", ADMIN, ATTACH, {"policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"},
         "violation", "AdministratorAccess"),
    Case("attach-admin-in-gov-cloud", ADMIN, "aws:iam/policyAttachment:PolicyAttachment",
         {"policyArn": "arn:aws-us-gov:iam::aws:policy/AdministratorAccess", "roles": ["nodes"]}, "violation"),
    Case("attach-power-user-exclusively", ADMIN,
         "aws:iam/rolePolicyAttachmentsExclusive:RolePolicyAttachmentsExclusive",
         {"roleName": "nodes", "policyArns": ["arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy",
                                              "arn:aws:iam::aws:policy/PowerUserAccess"]},
         "violation", "PowerUserAccess"),
    Case("role-managed-iam-full-access", ADMIN, ROLE,
         {"managedPolicyArns": ["arn:aws:iam::aws:policy/IAMFullAccess"]}, "violation", "IAMFullAccess"),
    Case("attach-s3-full-access", ADMIN, "aws:iam/userPolicyAttachment:UserPolicyAttachment",
         {"policyArn": "arn:aws:iam::aws:policy/AmazonS3FullAccess", "user": "ci"}, "violation", "*FullAccess"),
    Case("sso-admin-attachment", ADMIN, "aws:ssoadmin/managedPolicyAttachment:ManagedPolicyAttachment",
         {"managedPolicyArn": "arn:aws:iam::aws:policy/AdministratorAccess"}, "violation"),
    Case("policy-unknown-during-preview", ADMIN, ROLE_POLICY, {"policy": UNKNOWN_STRING_VALUE}, "unknown"),
    Case("policy-unknown-fail-closed", ADMIN, ROLE_POLICY, {"policy": UNKNOWN_STRING_VALUE}, "violation",
         "cannot verify", {"failClosed": True}),
    Case("action-unknown-on-star", ADMIN, ROLE_POLICY,
         {"policy": doc(allow(["s3:GetObject", UNKNOWN_STRING_VALUE]), text=False)}, "unknown"),
    Case("policy-not-json", ADMIN, ROLE_POLICY, {"policy": "{\"Statement\": [}"}, "unknown", "not JSON"),
    Case("attachment-arn-unknown", ADMIN, ATTACH, {"policyArn": UNKNOWN_STRING_VALUE}, "unknown"),
    Case("reads-one-bucket", ADMIN, ROLE_POLICY, {"policy": READ_ONE_BUCKET}, "pass"),
    Case("describe-star-on-star", ADMIN, ROLE_POLICY,
         {"policy": doc(allow(["ec2:Describe*", "eks:DescribeNodegroup"]))}, "pass"),
    Case("service-star-on-one-bucket", ADMIN, ROLE_POLICY, {"policy": doc(allow("s3:*", "arn:aws:s3:::models/*"))},
         "pass"),
    Case("deny-everything-guardrail", ADMIN, POLICY,
         {"policy": doc({"Effect": "Deny", "Action": "*", "Resource": "*"})}, "pass"),
    Case("attach-worker-node-policy", ADMIN, ATTACH,
         {"policyArn": "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy"}, "pass"),
    Case("customer-policy-named-like-admin", ADMIN, ATTACH,
         {"policyArn": "arn:aws:iam::123456789012:policy/AdministratorAccess"}, "pass"),
    Case("admin-exempt-with-reason", ADMIN, ATTACH, {"policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"},
         "pass", "", {"exemptions": [{"resource": "subject", "reason": "break-glass role, MFA-only, INC-77"}]}),
    # --- iam-trust-restricted ---
    Case("trust-star-string", TRUST, ROLE, trust("*"), "violation", "any AWS identity of any account"),
    Case("trust-aws-star", TRUST, ROLE, trust({"AWS": "*"}), "violation"),
    Case("trust-aws-star-in-list", TRUST, ROLE, trust({"AWS": ["arn:aws:iam::123456789012:role/ci", "*"]}),
         "violation"),
    Case("trust-not-principal", TRUST, ROLE, trust({"AWS": "arn:aws:iam::123456789012:role/ci"}, key="NotPrincipal"),
         "violation", "NotPrincipal"),
    Case("trust-foreign-account-root", TRUST, ROLE, trust({"AWS": f"arn:aws:iam::{PARTNER}:root"}), "violation",
         f"the whole account {PARTNER}"),
    Case("trust-bare-account-id", TRUST, ROLE, trust({"AWS": PARTNER}), "violation", PARTNER),
    Case("trust-account-external-id-if-exists", TRUST, ROLE,
         trust({"AWS": PARTNER}, condition={"StringEqualsIfExists": {"sts:ExternalId": "x1"}}), "violation"),
    Case("trust-account-mfa-false", TRUST, ROLE,
         trust({"AWS": PARTNER}, condition={"Bool": {"aws:MultiFactorAuthPresent": "false"}}), "violation"),
    Case("trust-star-org-negated", TRUST, ROLE,
         trust("*", condition={"StringNotEquals": {"aws:PrincipalOrgID": "o-abc"}}), "violation"),
    Case("trust-star-arn-like-star", TRUST, ROLE, trust("*", condition={"ArnLike": {"aws:PrincipalArn": "*"}}),
         "violation"),
    Case("trust-action-star", TRUST, ROLE, trust({"AWS": "*"}, action="*"), "violation"),
    Case("trust-action-sts-star-upper-case", TRUST, ROLE, trust({"AWS": "*"}, action="STS:*"), "violation"),
    Case("trust-action-assume-role-prefix", TRUST, ROLE, trust({"AWS": "*"}, action="sts:AssumeRole*"), "violation"),
    Case("trust-not-action-tag-session", TRUST, ROLE,
         {"assumeRolePolicy": doc({"Effect": "Allow", "NotAction": "sts:TagSession", "Principal": "*"})},
         "violation"),
    Case("irsa-without-sub", TRUST, ROLE, irsa({"StringEquals": {f"{ISSUER}:aud": "sts.amazonaws.com"}}),
         "violation", "without an exact"),
    Case("irsa-without-condition", TRUST, ROLE, irsa(None), "violation", ISSUER),
    Case("irsa-namespace-wildcard", TRUST, ROLE, irsa(exact_sub("StringLike", "system:serviceaccount:servestack:*")),
         "violation"),
    Case("irsa-any-service-account", TRUST, ROLE, irsa(exact_sub("StringLike", "system:serviceaccount:*")),
         "violation"),
    Case("irsa-sub-if-exists", TRUST, ROLE, irsa(exact_sub("StringEqualsIfExists")), "violation"),
    Case("irsa-sub-for-all-values", TRUST, ROLE, irsa(exact_sub("ForAllValues:StringEquals")), "violation"),
    Case("irsa-sub-not-equals", TRUST, ROLE, irsa(exact_sub("StringNotEquals")), "violation"),
    Case("irsa-issuer-in-other-case", TRUST, ROLE,
         trust({"Federated": OIDC.lower()}, "sts:AssumeRoleWithWebIdentity",
               {"StringLike": {f"{ISSUER.lower()}:sub": "*"}}), "violation"),
    Case("github-oidc-audience-only", TRUST, ROLE,
         trust({"Federated": GITHUB}, "sts:AssumeRoleWithWebIdentity",
               {"StringEquals": {"token.actions.githubusercontent.com:aud": "sts.amazonaws.com"}}), "violation",
         "token.actions.githubusercontent.com:sub"),
    Case("github-oidc-any-repository", TRUST, ROLE,
         trust({"Federated": GITHUB}, "sts:AssumeRoleWithWebIdentity",
               {"StringLike": {"token.actions.githubusercontent.com:sub": "repo:*"}}), "violation"),
    Case("cognito-without-audience", TRUST, ROLE,
         trust({"Federated": "cognito-identity.amazonaws.com"}, "sts:AssumeRoleWithWebIdentity"), "violation",
         "cognito-identity.amazonaws.com:aud"),
    Case("trust-unknown-during-preview", TRUST, ROLE, {"assumeRolePolicy": UNKNOWN_STRING_VALUE}, "unknown"),
    Case("irsa-sub-unknown", TRUST, ROLE,
         {"assumeRolePolicy": doc({"Effect": "Allow", "Action": "sts:AssumeRoleWithWebIdentity",
                                   "Principal": {"Federated": OIDC},
                                   "Condition": {"StringEquals": {f"{ISSUER}:sub": UNKNOWN_STRING_VALUE}}},
                                  text=False)}, "unknown"),
    Case("trust-service", TRUST, ROLE, trust({"Service": ["ec2.amazonaws.com", "eks.amazonaws.com"]}), "pass"),
    Case("trust-named-partner-role", TRUST, ROLE, trust({"AWS": f"arn:aws:iam::{PARTNER}:role/deployer"}), "pass"),
    Case("trust-account-with-external-id", TRUST, ROLE,
         trust({"AWS": PARTNER}, condition={"StringEquals": {"sts:ExternalId": "f3a9c"}}), "pass"),
    Case("trust-account-with-mfa", TRUST, ROLE,
         trust({"AWS": f"arn:aws:iam::{PARTNER}:root"}, condition={"Bool": {"aws:MultiFactorAuthPresent": True}}),
         "pass"),
    Case("trust-star-own-organisation", TRUST, ROLE,
         trust("*", condition={"StringEquals": {"aws:PrincipalOrgID": "o-abc123"}}), "pass"),
    Case("trust-own-account-listed", TRUST, ROLE, trust({"AWS": "123456789012"}), "pass", "",
         {"trustedAccounts": ["123456789012"]}),
    Case("irsa-exact-sub", TRUST, ROLE, irsa(exact_sub()), "pass"),
    Case("irsa-exact-sub-in-string-like", TRUST, ROLE, irsa(exact_sub("StringLike")), "pass"),
    Case("irsa-two-exact-subs", TRUST, ROLE,
         irsa(exact_sub(value=["system:serviceaccount:a:x", "system:serviceaccount:b:y"])), "pass"),
    Case("github-oidc-one-repository", TRUST, ROLE,
         trust({"Federated": GITHUB}, "sts:AssumeRoleWithWebIdentity",
               {"StringLike": {"token.actions.githubusercontent.com:sub": "repo:octo-org/servestack:*"}}), "pass"),
    Case("trust-deny-everybody", TRUST, ROLE, trust("*", effect="Deny"), "pass"),
    # --- gcp-no-primitive-roles ---
    Case("project-owner", PRIMITIVE, "gcp:projects/iAMMember:IAMMember", {"role": "roles/owner", "member": SA},
         "violation", "roles/owner"),
    Case("project-editor-binding", PRIMITIVE, "gcp:projects/iAMBinding:IAMBinding",
         {"role": "roles/editor", "members": [SA]}, "violation"),
    Case("folder-owner-upper-case", PRIMITIVE, "gcp:folder/iAMMember:IAMMember", {"role": "ROLES/OWNER", "member": SA},
         "violation"),
    Case("organization-policy-data-json", PRIMITIVE, "gcp:organizations/iAMPolicy:IAMPolicy",
         {"policyData": json.dumps({"bindings": [{"role": "roles/viewer", "members": [SA]},
                                                 {"role": "roles/editor", "members": [SA]}]})},
         "violation", "policyData.bindings[1]"),
    Case("service-account-editor", PRIMITIVE, "gcp:serviceaccount/iAMBinding:IAMBinding",
         {"role": "roles/editor", "members": [SA], "serviceAccountId": "x"}, "violation"),
    Case("predefined-role", PRIMITIVE, "gcp:projects/iAMMember:IAMMember",
         {"role": "roles/container.defaultNodeServiceAccount", "member": SA}, "pass"),
    Case("custom-role-named-owner", PRIMITIVE, "gcp:projects/iAMMember:IAMMember",
         {"role": "projects/servestack-prod/roles/owner", "member": SA}, "pass"),
    Case("viewer-forbidden-by-config", PRIMITIVE, "gcp:projects/iAMMember:IAMMember",
         {"role": "roles/viewer", "member": SA}, "violation", "", {"forbiddenRoles": ["roles/viewer"]}),
    Case("role-unknown", PRIMITIVE, "gcp:projects/iAMMember:IAMMember", {"role": UNKNOWN_STRING_VALUE, "member": SA},
         "unknown"),
    # --- gcp-no-public-iam ---
    Case("bucket-all-users", PUBLIC, "gcp:storage/bucketIAMMember:BucketIAMMember",
         {"bucket": "models", "role": "roles/storage.objectViewer", "member": "allUsers"}, "violation", "allUsers"),
    Case("bucket-binding-all-authenticated", PUBLIC, "gcp:storage/bucketIAMBinding:BucketIAMBinding",
         {"bucket": "models", "role": "roles/storage.objectViewer", "members": [SA, "allAuthenticatedUsers"]},
         "violation", "allAuthenticatedUsers"),
    Case("repository-all-users", PUBLIC, "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember",
         {"repository": "r", "location": "us", "role": "roles/artifactregistry.reader", "member": "allUsers"},
         "violation"),
    Case("repository-policy-data-object", PUBLIC, "gcp:artifactregistry/repositoryIamPolicy:RepositoryIamPolicy",
         {"repository": "r", "policyData": {"bindings": [{"role": "roles/artifactregistry.reader",
                                                          "members": ["allUsers"]}]}}, "violation"),
    Case("member-in-other-case", PUBLIC, "gcp:storage/bucketIAMMember:BucketIAMMember",
         {"bucket": "b", "role": "roles/storage.objectViewer", "member": " AllUsers "}, "violation"),
    Case("every-gmail-account", PUBLIC, "gcp:projects/iAMMember:IAMMember",
         {"role": "roles/viewer", "member": "domain:gmail.com"}, "violation"),
    Case("public-principal-set", PUBLIC, "gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember",
         {"cryptoKeyId": "k", "role": "roles/cloudkms.cryptoKeyDecrypter", "member": "principalSet://goog/public:all"},
         "violation"),
    Case("public-cloud-run", PUBLIC, "gcp:cloudrunv2/serviceIamMember:ServiceIamMember",
         {"name": "svc", "role": "roles/run.invoker", "member": "allUsers"}, "violation"),
    Case("partner-service-account-reads-repository", PUBLIC,
         "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember",
         {"repository": "r", "role": "roles/artifactregistry.reader",
          "member": "serviceAccount:puller@partner-project.iam.gserviceaccount.com"}, "pass"),
    Case("company-domain", PUBLIC, "gcp:projects/iAMMember:IAMMember",
         {"role": "roles/viewer", "member": "domain:example.com"}, "pass"),
    Case("user-named-allusers", PUBLIC, "gcp:projects/iAMMember:IAMMember",
         {"role": "roles/viewer", "member": "user:allusers@example.com"}, "pass"),
    Case("binding-member-unknown", PUBLIC, "gcp:storage/bucketIAMBinding:BucketIAMBinding",
         {"bucket": "b", "role": "roles/storage.objectViewer", "members": [SA, UNKNOWN_STRING_VALUE]}, "unknown"),
    Case("public-bucket-exempt", PUBLIC, "gcp:storage/bucketIAMMember:BucketIAMMember",
         {"bucket": "b", "role": "roles/storage.objectViewer", "member": "allUsers"}, "pass", "",
         {"exemptions": [{"resource": "subject", "reason": "the public model mirror, reviewed in SEC-12"}]}),
    # --- azure-no-admin-roles ---
    Case("owner-on-subscription", AZURE, ASSIGNMENT, assignment(OWNER), "violation", "Owner"),
    Case("contributor-upper-case-on-resource-group", AZURE, ASSIGNMENT, assignment(CONTRIBUTOR.upper(), RG),
         "violation", "Contributor"),
    Case("uaa-by-name", AZURE, ASSIGNMENT,
         {**assignment(OWNER), "roleDefinitionId": "  user access  ADMINISTRATOR "}, "violation"),
    Case("owner-tenant-level-id", AZURE, ASSIGNMENT,
         {**assignment(OWNER), "roleDefinitionId": f"/providers/Microsoft.Authorization/roleDefinitions/{OWNER}"},
         "violation"),
    Case("owner-bare-guid-no-principal-type", AZURE, ASSIGNMENT,
         {**assignment(OWNER, principal_type=None), "roleDefinitionId": OWNER}, "violation", "no principalType"),
    Case("owner-on-management-group", AZURE, ASSIGNMENT,
         assignment(OWNER, "/providers/Microsoft.Management/managementGroups/platform"), "violation"),
    Case("owner-on-root-scope", AZURE, ASSIGNMENT, assignment(OWNER, "/"), "violation"),
    Case("resource-group-scope-trailing-slash-lower-case", AZURE, ASSIGNMENT, assignment(OWNER, RG.lower() + "/"),
         "violation"),
    Case("rbac-administrator", AZURE, ASSIGNMENT, assignment("f58310d9-a9f6-439a-9e8d-f62e7b41a168"), "violation"),
    Case("custom-role-star", AZURE, DEFINITION,
         {"roleName": "deployer", "permissions": [{"actions": ["*"], "notActions": []}], "assignableScopes": [SUB]},
         "violation", "'*'"),
    Case("custom-role-assigns-roles", AZURE, DEFINITION,
         {"roleName": "helper", "permissions": [{"actions": ["Microsoft.Authorization/roleAssignments/*"]}]},
         "violation"),
    Case("custom-role-authorization-star", AZURE, DEFINITION,
         {"roleName": "helper", "permissions": [{"actions": ["microsoft.authorization/*"]}]}, "violation"),
    Case("owner-on-one-storage-account", AZURE, ASSIGNMENT,
         assignment(OWNER, f"{RG}/providers/Microsoft.Storage/storageAccounts/models"), "pass"),
    Case("owner-to-a-person", AZURE, ASSIGNMENT, assignment(OWNER, principal_type="User"), "pass"),
    Case("blob-reader-on-subscription", AZURE, ASSIGNMENT, assignment(BLOB_READER), "pass"),
    Case("custom-role-narrow", AZURE, DEFINITION,
         {"roleName": "reader", "permissions": [{"actions": ["Microsoft.Storage/storageAccounts/read"]}]}, "pass"),
    Case("owner-scope-unknown", AZURE, ASSIGNMENT, {**assignment(OWNER), "scope": UNKNOWN_STRING_VALUE}, "unknown"),
    Case("role-unknown-azure", AZURE, ASSIGNMENT, {**assignment(OWNER), "roleDefinitionId": UNKNOWN_STRING_VALUE},
         "unknown"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_identity_case(case: Case) -> None:
    assert_case(case)


def test_case_ids_are_unique() -> None:
    assert len({c.id for c in CASES}) == len(CASES)


def test_the_gcp_rules_read_every_iam_kind_of_the_provider() -> None:
    """The type pattern matches every IAM member, binding and policy kind of the installed pulumi-gcp, and each
    kind has the inputs the rules read (member or members, role; policyData)."""
    kinds = {t: names for t, names in resource_inputs("pulumi_gcp").items()
             if re.search(r"(?:IAM|Iam)(?:Member|Binding|Policy)$", t)}
    assert len(kinds) > 400
    for token, names in kinds.items():
        assert GCP_IAM.search(token), token
        wanted = {"member", "role"} if token.endswith("Member") else (
            {"members", "role"} if token.endswith("Binding") else {"policyData"})
        assert wanted <= set(names), (token, names)
    assert not GCP_IAM.search("gcp:projects/iAMCustomRole:IAMCustomRole")
    assert not GCP_IAM.search("gcp:projects/iamMemberRemove:IamMemberRemove")
