"""Identities: who may do everything, and who may become whom.

- AWS: identity policies (`iam.Policy`, role, user and group policies, a role's inline policies, IAM
  Identity Center permission sets) that allow every action of a service, or every service, on every
  resource (`"Action": "*"`, `"s3:*"`, `"s*:*"`, `NotAction`, on `"*"`, `"arn:aws:s3:::*"` or `NotResource`);
  attachments of the AWS managed policies that do the same (AdministratorAccess, PowerUserAccess,
  IAMFullAccess, the *FullAccess policies); role trust policies that let anybody, a whole account, or any
  identity of an OIDC provider (an EKS cluster's IRSA issuer without an exact `sub`) assume the role.
- GCP: the primitive roles (roles/owner, roles/editor) granted to anyone, and any role granted to
  allUsers, allAuthenticatedUsers, principalSet://goog/public:all or every Gmail account, on every IAM
  member, binding and policy kind of the provider (projects, folders, buckets, repositories, keys, ...).
- Azure: Owner, Contributor, User Access Administrator and Role Based Access Control Administrator (by
  role definition id or name, in any case) assigned to a workload identity at management-group,
  subscription or resource-group scope, and custom role definitions that grant `*` or the right to assign
  roles.

Policy documents are read by `values.policy_document`: JSON text or objects, one statement or a list,
element names and actions in any case.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from fnmatch import fnmatchcase
from typing import Any

from pulumi_policy import EnforcementLevel, Severity

from policies.rules.common import Judge, Rule, document_statements
from reading import values as v
from reading.resources import Resource
from reading.values import Principal, Statement, Unknown

# --- AWS -------------------------------------------------------------------------------------------

AWS_POLICY = "aws:iam/policy:Policy"
AWS_ROLE = "aws:iam/role:Role"
# Resources whose input holds an identity policy document, and the input's name.
AWS_POLICY_DOCUMENTS = {
    AWS_POLICY: "policy",
    "aws:iam/rolePolicy:RolePolicy": "policy",
    "aws:iam/userPolicy:UserPolicy": "policy",
    "aws:iam/groupPolicy:GroupPolicy": "policy",
    "aws:ssoadmin/permissionSetInlinePolicy:PermissionSetInlinePolicy": "inlinePolicy",
}
# Resources that attach managed policies by ARN: the input, and whether it holds one ARN or a list.
AWS_ATTACHMENTS = {
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": "policyArn",
    "aws:iam/userPolicyAttachment:UserPolicyAttachment": "policyArn",
    "aws:iam/groupPolicyAttachment:GroupPolicyAttachment": "policyArn",
    "aws:iam/policyAttachment:PolicyAttachment": "policyArn",
    "aws:iam/rolePolicyAttachmentsExclusive:RolePolicyAttachmentsExclusive": "policyArns",
    "aws:iam/userPolicyAttachmentsExclusive:UserPolicyAttachmentsExclusive": "policyArns",
    "aws:iam/groupPolicyAttachmentsExclusive:GroupPolicyAttachmentsExclusive": "policyArns",
    "aws:ssoadmin/managedPolicyAttachment:ManagedPolicyAttachment": "managedPolicyArn",
    "aws:ssoadmin/managedPolicyAttachmentsExclusive:ManagedPolicyAttachmentsExclusive": "managedPolicyArns",
    AWS_ROLE: "managedPolicyArns",
}
# AWS managed policies that allow a whole service or more on every resource (or, IAMFullAccess, the power
# to grant oneself that).
FORBIDDEN_MANAGED_POLICIES = ["AdministratorAccess", "PowerUserAccess", "IAMFullAccess", "*FullAccess"]
_AWS_MANAGED = re.compile(r"^arn:[a-z-]+:iam::aws:policy/(?:.*/)?([^/]+)$", re.IGNORECASE)
ASSUME_ACTIONS = ("sts:assumerole", "sts:assumerolewithwebidentity", "sts:assumerolewithsaml")
_ACCOUNT_ROOT = re.compile(r"^(?:arn:[a-z-]+:iam::(\d{12}):root|(\d{12}))$", re.IGNORECASE)
_EKS_ISSUER = re.compile(r"^oidc\.eks\.[a-z0-9-]+\.amazonaws\.com(?:\.cn)?/id/", re.IGNORECASE)
_EXACT_SERVICE_ACCOUNT = re.compile(r"^system:serviceaccount:[^:*?]+:[^:*?]+$")
# Condition keys that narrow a whole-account principal to some of its identities, or to a caller that
# knows the external id the account's owner was given.
ACCOUNT_NARROWING_KEYS = ("sts:externalid", "aws:principalarn", "aws:userid", "aws:username",
                          "aws:multifactorauthpresent", "aws:principaltag/", "aws:sourceidentity",
                          "sts:sourceidentity", "sts:rolesessionname")
# Public identity providers whose tokens anyone can get: the claim that names your application.
PUBLIC_PROVIDER_KEYS = {
    "cognito-identity.amazonaws.com": ("cognito-identity.amazonaws.com:aud",),
    "accounts.google.com": ("accounts.google.com:aud", "accounts.google.com:oaud", "accounts.google.com:sub"),
    "graph.facebook.com": ("graph.facebook.com:app_id",),
    "www.amazon.com": ("www.amazon.com:app_id", "www.amazon.com:user_id"),
}
GITHUB_ISSUER = "token.actions.githubusercontent.com"
PRINCIPAL_TYPES = {"aws": "AWS", "service": "Service", "federated": "Federated", "canonicaluser": "CanonicalUser"}


def _first(values: Any, test: Any) -> tuple[str | None, Unknown | None]:
    """The first known value that passes `test`, and the first unknown one."""
    unknown = None
    for value in values or ():
        if isinstance(value, Unknown):
            unknown = unknown or value
        elif test(value):
            return value, unknown
    return None, unknown


def _admin_grant(s: Statement) -> tuple[str, str] | Unknown | None:
    """What an Allow statement grants when it is a whole service (or more) on every resource."""
    action, not_action, resource, not_resource = s.action, s.not_action, s.resource, s.not_resource
    if isinstance(action, Unknown):
        return action
    if isinstance(not_action, Unknown):
        return not_action
    if isinstance(resource, Unknown):
        return resource
    if isinstance(not_resource, Unknown):
        return not_resource
    if not_action is not None:
        actions: str | Unknown | None = f"every action except {', '.join(map(str, not_action))} (NotAction)"
    else:
        hit, pending = _first(action, v.action_scope)
        actions = f"{v.action_scope(hit)} (Action {hit!r})" if hit is not None else pending
    if actions is None:
        return None
    if not_resource is not None:
        scope: str | Unknown | None = f"every resource except {', '.join(map(str, not_resource))} (NotResource)"
    else:
        hit, pending = _first(resource, v.every_resource)
        scope = f"every resource (Resource {hit!r})" if hit is not None else pending
    if scope is None:
        return None
    if isinstance(actions, Unknown):
        return actions
    if isinstance(scope, Unknown):
        return scope
    return actions, scope


ADMIN_FIX = ("Grant the actions the workload calls (s3:GetObject, not s3:*) on the resources it uses "
             "(arn:aws:s3:::models/*, not *).")


def _judge_identity_policy(raw: Any, what: str, judge: Judge) -> None:
    for s in document_statements(raw, what, judge):
        allow = s.allows
        if allow is False:
            continue
        grant = _admin_grant(s)
        if grant is None:
            continue
        if isinstance(grant, Unknown):
            judge.unknown_value(grant, f"{what} {s.where}")
            continue
        if isinstance(allow, Unknown):
            judge.unknown(f"{what} {s.where} would allow {grant[0]} on {grant[1]}, and its Effect: {allow}")
            continue
        judge.violation(f"{what} {s.where} allows {grant[0]} on {grant[1]}: administrator rights for whoever "
                        f"holds it. {ADMIN_FIX}")


def _forbidden_managed(arn: str, patterns: list[str]) -> str | None:
    match = _AWS_MANAGED.match(arn.strip())
    if match is None:
        return None
    name = match.group(1)
    return next((p for p in patterns if fnmatchcase(name.lower(), p.lower())), None)


def check_admin_policy(resource: Resource, config: dict[str, Any], judge: Judge) -> None:
    p = resource.props
    if resource.type in AWS_POLICY_DOCUMENTS:
        key = AWS_POLICY_DOCUMENTS[resource.type]
        _judge_identity_policy(p.get(key), key, judge)
    if resource.type == AWS_ROLE:
        inline = p.get("inlinePolicies")
        for i, entry in enumerate(v.items(inline)):
            if isinstance(entry, Unknown):
                judge.unknown_value(entry, f"inlinePolicies[{i}]")
            elif isinstance(entry, dict):
                name = entry.get("name")
                label = f"inlinePolicies[{i}]" + (f" ({name})" if isinstance(name, str) else "")
                _judge_identity_policy(entry.get("policy"), label, judge)
    if resource.type in AWS_ATTACHMENTS:
        key = AWS_ATTACHMENTS[resource.type]
        patterns = [str(x) for x in config.get("forbiddenManagedPolicies") or []]
        for arn in v.items(p.get(key)):
            if isinstance(arn, Unknown):
                judge.unknown_value(arn, key)
                continue
            if not isinstance(arn, str):
                continue
            pattern = _forbidden_managed(arn, patterns)
            if pattern is not None:
                judge.violation(f"{key} attaches {arn}, an AWS managed policy that allows a whole service or more on "
                                f"every resource (forbiddenManagedPolicies: {pattern}). Write a policy with the "
                                "actions and resources the workload needs, or attach a narrower managed policy.")


# --- role trust ------------------------------------------------------------------------------------


def _assumes(s: Statement) -> bool | Unknown:
    """Whether the statement allows assuming the role in some way."""
    if isinstance(s.not_action, Unknown):
        return s.not_action
    if s.not_action is not None:
        return not any(isinstance(a, str) and all(fnmatchcase(x, a.strip().lower()) for x in ASSUME_ACTIONS)
                       for a in s.not_action)
    if isinstance(s.action, Unknown):
        return s.action
    hit, pending = _first(s.action, lambda a: any(fnmatchcase(x, a.strip().lower()) for x in ASSUME_ACTIONS))
    return True if hit is not None else (pending if pending is not None else False)


def _account(name: str) -> str | None:
    match = _ACCOUNT_ROOT.match(name.strip())
    return (match.group(1) or match.group(2)) if match else None


def _mfa_true(c: v.Condition) -> bool:
    return c.key != "aws:multifactorauthpresent" or all(x == "true" for x in c.values)


def _exact_subjects(c: v.Condition) -> bool:
    """An IRSA `sub` test that names service accounts exactly: no wildcard in a StringLike, each value one
    namespace and one name."""
    return all(isinstance(x, str) and _EXACT_SERVICE_ACCOUNT.match(x.strip())
               and not (c.operator in v.WILDCARD_OPERATORS and v.has_wildcard(x)) for x in c.values)


def _github_owner_named(c: v.Condition) -> bool:
    """A GitHub `sub` test whose patterns name at least the repository owner before any wildcard
    ("repo:org/*", "repo:org/app:ref:refs/heads/main"); "repo:*" admits every repository on GitHub."""
    for x in c.values:
        text = str(x).strip()
        if c.operator in v.WILDCARD_OPERATORS and v.has_wildcard(text):
            prefix = re.split(r"[*?]", text, maxsplit=1)[0]
            if not re.match(r"^repo:[^/:]+/", prefix, re.IGNORECASE):
                return False
    return True


def _provider_host(name: str) -> str:
    _, sep, rest = name.partition("oidc-provider/")
    return (rest if sep else name).strip()


def _federated_problem(name: str, conditions: tuple[v.Condition, ...]) -> str | Unknown | None:
    """What is wrong with trusting this federated principal under these conditions (with the fix), or None."""
    if "saml-provider/" in name.lower():
        return None  # a SAML provider is an organisation's own identity provider
    shown = _provider_host(name)
    host = shown.lower()
    if _EKS_ISSUER.match(host):
        key = f"{host}:sub"
        exact = v.condition_restricts(conditions, [key], accept=_exact_subjects)
        if exact is True or isinstance(exact, Unknown):
            return exact if isinstance(exact, Unknown) else None
        return (f"the EKS OIDC issuer {shown} is trusted without an exact {shown}:sub condition, so every service "
                "account of the cluster (or of a namespace) can assume the role. Add StringEquals "
                f"{{\"{shown}:sub\": \"system:serviceaccount:<namespace>:<name>\"}}")
    if host in PUBLIC_PROVIDER_KEYS:
        keys = PUBLIC_PROVIDER_KEYS[host]
        limited = v.condition_restricts(conditions, keys)
        if limited is True or isinstance(limited, Unknown):
            return limited if isinstance(limited, Unknown) else None
        return (f"{shown} is trusted without a condition on {' or '.join(keys)}, so anyone with an account there "
                "can assume the role. Add StringEquals on that claim with your application's id")
    key = f"{host}:sub"
    accept = _github_owner_named if host == GITHUB_ISSUER else None
    limited = v.condition_restricts(conditions, [key], accept=accept)
    if limited is True or isinstance(limited, Unknown):
        return limited if isinstance(limited, Unknown) else None
    return (f"the OIDC provider {shown} is trusted without a {shown}:sub condition that names the subject, so every "
            "identity it issues tokens to can assume the role. Add StringEquals (or StringLike) on "
            f"{shown}:sub naming the subject (for GitHub, repo:<owner>/<repository>:...)")


TRUST_FIX = ("Trust a named role or service (Principal {\"AWS\": \"arn:aws:iam::<account>:role/<name>\"}), add a "
             "condition that names who may assume it, or list your own account in trustedAccounts")


def _trust_problems(s: Statement, trusted: set[str]) -> Iterator[str | Unknown]:
    conditions = s.conditions
    if isinstance(conditions, Unknown):
        yield conditions
        return
    if s.not_principal is not None:
        if isinstance(s.not_principal, Unknown):
            yield s.not_principal
            return
        principals: tuple[Principal, ...] = (("*", "*"),)
        label = "NotPrincipal (everybody else)"
    elif isinstance(s.principal, Unknown):
        yield s.principal
        return
    else:
        principals = s.principal or ()
        label = ""
    for kind, name in principals:
        if isinstance(name, Unknown):
            yield name
            continue
        shown = label or ('Principal "*"' if kind == "*"
                          else f"Principal {{{PRINCIPAL_TYPES.get(kind, kind)}: {name!r}}}")
        if v.anyone((kind, name)):
            limited = v.condition_restricts(conditions, v.SCOPING_KEYS)
            if limited is True:
                continue
            yield limited if isinstance(limited, Unknown) else (
                f"{shown} lets any AWS identity of any account assume the role, and no condition limits the "
                f"caller's organisation, account or ARN. {TRUST_FIX}")
        elif kind == "aws" and isinstance(name, str) and _account(name) is not None:
            account = _account(name)
            if account in trusted:
                continue
            limited = v.condition_restricts(conditions, ACCOUNT_NARROWING_KEYS, accept=_mfa_true)
            if limited is True:
                continue
            yield limited if isinstance(limited, Unknown) else (
                f"{shown} trusts the whole account {account}: any identity there that may call sts:AssumeRole can "
                "assume the role, and no condition narrows it (sts:ExternalId, aws:PrincipalArn, MFA). "
                f"{TRUST_FIX}")
        elif kind == "federated" and isinstance(name, str):
            problem = _federated_problem(name, conditions)
            if problem is not None:
                yield problem


def check_trust(resource: Resource, config: dict[str, Any], judge: Judge) -> None:
    trusted = {str(a).strip() for a in config.get("trustedAccounts") or []}
    for s in document_statements(resource.props.get("assumeRolePolicy"), "assumeRolePolicy", judge):
        allow, assumes = s.allows, _assumes(s)
        if allow is False or assumes is False:
            continue
        for problem in _trust_problems(s, trusted):
            if isinstance(problem, Unknown):
                judge.unknown_value(problem, f"assumeRolePolicy {s.where}")
            elif isinstance(allow, Unknown) or isinstance(assumes, Unknown):
                judge.unknown(f"assumeRolePolicy {s.where}: {allow if isinstance(allow, Unknown) else assumes}")
            else:
                judge.violation(f"assumeRolePolicy {s.where}: {problem}.")


# --- GCP -------------------------------------------------------------------------------------------

# Every IAM member, binding and policy kind of pulumi-gcp: gcp:projects/iAMMember:IAMMember,
# gcp:storage/bucketIAMBinding:BucketIAMBinding, gcp:artifactregistry/repositoryIamPolicy:RepositoryIamPolicy, ...
GCP_IAM = re.compile(r"^gcp:[^:]+:\w*(?:IAM|Iam)(?:Member|Binding|Policy)$")
PRIMITIVE_ROLES = ["roles/owner", "roles/editor"]
# Members that mean everybody: anyone on the internet, anyone with a Google account, every Gmail account.
PUBLIC_MEMBERS = frozenset({"allusers", "allauthenticatedusers", "principalset://goog/public:all",
                            "domain:gmail.com", "domain:googlemail.com"})


def _grants(resource: Resource, judge: Judge) -> Iterator[tuple[str, Any, list[Any]]]:
    """(where, role, members) of a GCP IAM member, binding or policy; unknown parts are noted."""
    p = resource.props
    kind = resource.type.rsplit(":", 1)[1].lower()
    if kind.endswith("member"):
        yield "", p.get("role"), [p.get("member")]
    elif kind.endswith("binding"):
        yield "", p.get("role"), v.items(p.get("members"))
    else:
        data = p.get("policyData")
        if isinstance(data, Unknown):
            judge.unknown_value(data, "policyData")
            return
        if isinstance(data, str):
            try:
                data = json.loads(data) if data.strip() else {}
            except ValueError as e:
                judge.unknown(f"policyData is not JSON ({e})")
                return
        bindings = v.key_of(data, "bindings") if isinstance(data, dict) else None
        for i, binding in enumerate(v.items(bindings)):
            if isinstance(binding, Unknown):
                judge.unknown_value(binding, f"policyData.bindings[{i}]")
            elif isinstance(binding, dict):
                yield f"policyData.bindings[{i}] ", binding.get("role"), v.items(binding.get("members"))


def _role_name(role: Any) -> str:
    return str(role).strip().lower()


def check_primitive_roles(resource: Resource, config: dict[str, Any], judge: Judge) -> None:
    forbidden = {_role_name(r) for r in config.get("forbiddenRoles") or []}
    for where, role, members in _grants(resource, judge):
        if isinstance(role, Unknown):
            judge.unknown_value(role, f"{where}role")
            continue
        if role is not None and _role_name(role) in forbidden:
            shown = ", ".join(str(m) for m in members if m is not None) or "its members"
            judge.violation(f"{where}grants {role} to {shown}: a primitive role allows nearly everything in the "
                            "project, across services. Grant predefined roles for what the member does "
                            "(roles/storage.objectViewer, roles/artifactregistry.reader, ...).")


def _public_member(member: Any) -> bool:
    return isinstance(member, str) and member.strip().lower() in PUBLIC_MEMBERS


def check_public_members(resource: Resource, config: dict[str, Any], judge: Judge) -> None:
    for where, role, members in _grants(resource, judge):
        for member in members:
            if isinstance(member, Unknown):
                judge.unknown_value(member, f"{where}member")
            elif _public_member(member):
                judge.violation(f"{where}grants {role} to {member}: everybody on the internet (or every Google "
                                "account) gets it. Grant it to named service accounts, groups or a partner's "
                                "principals instead.")


# --- Azure -----------------------------------------------------------------------------------------

AZURE_ROLE_ASSIGNMENT = "azure-native:authorization:RoleAssignment"
AZURE_ROLE_DEFINITION = "azure-native:authorization:RoleDefinition"
# Built-in roles that can change anything, or give themselves that right, by name and id.
AZURE_BUILT_IN_ROLES = {
    "owner": "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
    "contributor": "b24988ac-6180-42a0-ab88-20f7382dd24c",
    "user access administrator": "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",
    "role based access control administrator": "f58310d9-a9f6-439a-9e8d-f62e7b41a168",
}
PRIVILEGED_ROLES = ["Owner", "Contributor", "User Access Administrator", "Role Based Access Control Administrator"]
# Principal types of people; everything else (ServicePrincipal, an unset type) is read as a workload identity.
AZURE_PEOPLE = frozenset({"user", "group", "foreigngroup"})
_BROAD_SCOPE = re.compile(r"^(?:|/providers/microsoft\.management/managementgroups/[^/]+|/subscriptions/[^/]+"
                          r"|/subscriptions/[^/]+/resourcegroups/[^/]+)$")
# Actions of a custom role that make it Owner, Contributor or User Access Administrator by another name.
_ASSIGNS_ROLES = "microsoft.authorization/roleassignments/write"


def _privileged(config: dict[str, Any]) -> dict[str, str]:
    """Role ids and folded names -> the name to show."""
    found: dict[str, str] = {}
    for entry in config.get("privilegedRoles") or []:
        name = v.folded(str(entry))
        guid = AZURE_BUILT_IN_ROLES.get(name, name)
        found[guid] = str(entry)
        found[name] = str(entry)
    return found


def _role_of(definition: str) -> str:
    """The last segment of a role definition id (its GUID), or the whole value folded (a role name)."""
    return v.folded(definition.strip().rstrip("/").rsplit("/", 1)[-1])


def _broad(scope: str) -> bool:
    return _BROAD_SCOPE.match(scope.strip().rstrip("/").lower()) is not None


def _check_assignment(p: dict[str, Any], config: dict[str, Any], judge: Judge) -> None:
    definition, scope, kind = p.get("roleDefinitionId"), p.get("scope"), p.get("principalType")
    if isinstance(definition, Unknown):
        judge.unknown_value(definition, "roleDefinitionId")
        return
    role = _privileged(config).get(_role_of(str(definition or "")))
    if role is None:
        return
    if isinstance(kind, Unknown):
        judge.unknown_value(kind, "principalType")
        return
    if isinstance(kind, str) and kind.strip().lower() in AZURE_PEOPLE:
        return
    if isinstance(scope, Unknown):
        judge.unknown(f"{role} is assigned to a workload identity and {scope}")
        return
    if not isinstance(scope, str) or not _broad(scope):
        return
    who = f"principalType {kind}" if kind else "no principalType (read as a workload identity)"
    judge.violation(f"assigns {role} ({definition}) at scope {scope!r} to principal {p.get('principalId')} with "
                    f"{who}: the workload can change, or hand out, everything in that scope. Assign the narrow "
                    "built-in role it needs (Storage Blob Data Reader, AcrPull, ...) on the resource it uses.")


def _check_definition(p: dict[str, Any], judge: Judge) -> None:
    for i, permission in enumerate(v.items(p.get("permissions"))):
        if isinstance(permission, Unknown):
            judge.unknown_value(permission, f"permissions[{i}]")
            continue
        if not isinstance(permission, dict):
            continue
        actions = v.items(permission.get("actions"))
        pending = next((a for a in actions if isinstance(a, Unknown)), None)
        hit = next((a for a in actions if isinstance(a, str) and (
            v.wildcard_only(a) or fnmatchcase(_ASSIGNS_ROLES, a.strip().lower()))), None)
        if hit is not None:
            judge.violation(f"permissions[{i}].actions grants {hit!r}: a custom role that is Contributor, Owner or "
                            "User Access Administrator by another name. List the resource provider operations the "
                            "role needs.")
        elif pending is not None:
            judge.unknown_value(pending, f"permissions[{i}].actions")


def check_azure_admin_roles(resource: Resource, config: dict[str, Any], judge: Judge) -> None:
    if resource.type == AZURE_ROLE_ASSIGNMENT:
        _check_assignment(resource.props, config, judge)
    else:
        _check_definition(resource.props, judge)


def _exemptable_list(description: str, default: list[str]) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "string"}, "default": default, "description": description}


IDENTITY_RULES = [
    Rule(
        name="iam-no-admin-policy",
        description="No AWS identity policy or attached managed policy allows every action of a service (or of "
                    "every service) on every resource.",
        severity=Severity.CRITICAL,
        enforcement=EnforcementLevel.MANDATORY,
        remediation="List the actions the workload calls and the ARNs it calls them on; attach narrow managed "
                    "policies only.",
        types=frozenset({*AWS_POLICY_DOCUMENTS, *AWS_ATTACHMENTS}),
        check=check_admin_policy,
        config={"forbiddenManagedPolicies": _exemptable_list(
            "AWS managed policies (names or patterns) that must not be attached.", FORBIDDEN_MANAGED_POLICIES)},
    ),
    Rule(
        name="iam-trust-restricted",
        description="An AWS role's trust policy lets in named principals only: not anybody, not a whole account "
                    "without a condition, not every identity of an OIDC provider (IRSA needs an exact sub).",
        severity=Severity.CRITICAL,
        enforcement=EnforcementLevel.MANDATORY,
        remediation="Trust named roles or services; for IRSA use StringEquals on <issuer>:sub = "
                    "system:serviceaccount:<namespace>:<name>; add sts:ExternalId or aws:PrincipalArn for accounts.",
        types=frozenset({AWS_ROLE}),
        check=check_trust,
        config={"trustedAccounts": _exemptable_list(
            "Account IDs whose whole account may assume roles without a condition (your own).", [])},
    ),
    Rule(
        name="gcp-no-primitive-roles",
        description="No GCP IAM member, binding or policy grants a primitive role (roles/owner, roles/editor).",
        severity=Severity.HIGH,
        enforcement=EnforcementLevel.MANDATORY,
        remediation="Grant predefined roles scoped to what the member does.",
        types=frozenset(),
        type_pattern=GCP_IAM,
        check=check_primitive_roles,
        config={"forbiddenRoles": _exemptable_list("Roles no member may be granted.", PRIMITIVE_ROLES)},
    ),
    Rule(
        name="gcp-no-public-iam",
        description="No GCP IAM member, binding or policy (projects, buckets, Artifact Registry repositories, ...) "
                    "grants a role to allUsers, allAuthenticatedUsers, principalSet://goog/public:all or every "
                    "Gmail account.",
        severity=Severity.CRITICAL,
        enforcement=EnforcementLevel.MANDATORY,
        remediation="Grant roles to named service accounts, groups or a partner's principals.",
        types=frozenset(),
        type_pattern=GCP_IAM,
        check=check_public_members,
    ),
    Rule(
        name="azure-no-admin-roles",
        description="No Azure workload identity holds Owner, Contributor, User Access Administrator or Role "
                    "Based Access Control Administrator at management-group, subscription or resource-group "
                    "scope, and no custom role grants * or role assignment.",
        severity=Severity.CRITICAL,
        enforcement=EnforcementLevel.MANDATORY,
        remediation="Assign narrow built-in roles (Storage Blob Data Reader, AcrPull, ...) on the resources the "
                    "workload uses.",
        types=frozenset({AZURE_ROLE_ASSIGNMENT, AZURE_ROLE_DEFINITION}),
        check=check_azure_admin_roles,
        config={"privilegedRoles": _exemptable_list(
            "Roles (built-in names or role definition GUIDs) no workload identity may hold at a broad scope.",
            PRIVILEGED_ROLES)},
    ),
]
