"""Hostile storage cases: public S3 ACLs, grants, access blocks and bucket policies; public GCS ACLs and IAM;
public Azure blob access and containers, HTTP and old TLS; and the private look-alikes that must pass."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pulumi_policy.proxy import UNKNOWN_BOOLEAN_VALUE, UNKNOWN_STRING_VALUE

from tests.policies.harness import Case, assert_case

PUBLIC, TRANSPORT, GCP_PUBLIC_IAM = "storage-not-public", "storage-secure-transport", "gcp-no-public-iam"
ACL, ACL_V2 = "aws:s3/bucketAcl:BucketAcl", "aws:s3/bucketAclV2:BucketAclV2"
BLOCK = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
ACCOUNT_BLOCK = "aws:s3/accountPublicAccessBlock:AccountPublicAccessBlock"
BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
ACCESS_POINT = "aws:s3/accessPoint:AccessPoint"
OBJECT = "aws:s3/bucketObjectv2:BucketObjectv2"
GCS_ACL = "gcp:storage/bucketACL:BucketACL"
ACCOUNT = "azure-native:storage:StorageAccount"
CONTAINER = "azure-native:storage:BlobContainer"
ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
BUCKET_ARN = "arn:aws:s3:::models"
ALL_ON = {"blockPublicAcls": True, "blockPublicPolicy": True, "ignorePublicAcls": True, "restrictPublicBuckets": True}


def policy(*statements: dict[str, Any], text: bool = True) -> Any:
    document = {"Version": "2012-10-17", "Statement": list(statements)}
    return json.dumps(document) if text else document


def read(principal: Any = "*", condition: dict[str, Any] | None = None, effect: str = "Allow") -> dict[str, Any]:
    statement: dict[str, Any] = {"Effect": effect, "Principal": principal, "Action": "s3:GetObject",
                                 "Resource": f"{BUCKET_ARN}/*"}
    if condition is not None:
        statement["Condition"] = condition
    return statement


def grant(uri: str, permission: str = "READ") -> dict[str, Any]:
    return {"accessControlPolicy": {"owner": {"id": "o"}, "grants": [
        {"permission": "FULL_CONTROL", "grantee": {"type": "CanonicalUser", "id": "o"}},
        {"permission": permission, "grantee": {"type": "Group", "uri": uri}}]}}


def account(**props: Any) -> dict[str, Any]:
    return {"accountName": "models", "kind": "StorageV2", "sku": {"name": "Standard_LRS"},
            "minimumTlsVersion": "TLS1_2", **props}


CASES = [
    # --- S3 ---
    Case("acl-public-read", PUBLIC, ACL, {"bucket": "models", "acl": "public-read"}, "violation", "public-read"),
    Case("acl-v2-public-read-write-upper-case", PUBLIC, ACL_V2, {"bucket": "models", "acl": "PUBLIC-READ-WRITE"},
         "violation"),
    Case("acl-authenticated-read", PUBLIC, ACL, {"bucket": "models", "acl": "authenticated-read"}, "violation"),
    Case("acl-grant-all-users", PUBLIC, ACL, {"bucket": "models", **grant(ALL_USERS)}, "violation", "AllUsers"),
    Case("acl-grant-authenticated-users-https", PUBLIC, ACL,
         {"bucket": "models", **grant("https://acs.amazonaws.com/groups/global/AuthenticatedUsers/", "WRITE")},
         "violation"),
    Case("object-public-read", PUBLIC, OBJECT, {"bucket": "models", "key": "m.bin", "acl": "public-read"},
         "violation"),
    Case("object-copy-grant-all-users", PUBLIC, "aws:s3/objectCopy:ObjectCopy",
         {"bucket": "models", "key": "k", "source": "a/b", "grants": [{"type": "Group", "uri": ALL_USERS,
                                                                          "permissions": ["READ"]}]}, "violation"),
    Case("block-one-flag-off", PUBLIC, BLOCK, {"bucket": "models", **ALL_ON, "restrictPublicBuckets": False},
         "violation", "restrictPublicBuckets=False"),
    Case("block-flag-left-out", PUBLIC, BLOCK,
         {"bucket": "models", "blockPublicAcls": True, "blockPublicPolicy": True, "ignorePublicAcls": True},
         "violation", "restrictPublicBuckets (left out"),
    Case("block-flag-as-string", PUBLIC, ACCOUNT_BLOCK, {**ALL_ON, "blockPublicPolicy": "false"}, "violation"),
    Case("access-point-block-off", PUBLIC, ACCESS_POINT,
         {"bucket": "models", "publicAccessBlockConfiguration": {"blockPublicPolicy": False}}, "violation"),
    Case("policy-principal-star", PUBLIC, BUCKET_POLICY, {"bucket": "models", "policy": policy(read())}, "violation",
         "Principal \"*\""),
    Case("policy-aws-star-object-form", PUBLIC, BUCKET_POLICY,
         {"bucket": "models", "policy": policy(read({"AWS": ["*"]}), text=False)}, "violation"),
    Case("policy-not-principal", PUBLIC, BUCKET_POLICY,
         {"bucket": "models", "policy": policy({"Effect": "Allow", "NotPrincipal": {"AWS": "arn:aws:iam::1:root"},
                                                "Action": "s3:GetObject", "Resource": f"{BUCKET_ARN}/*"})},
         "violation"),
    Case("policy-org-if-exists", PUBLIC, BUCKET_POLICY,
         {"bucket": "models",
          "policy": policy(read(condition={"StringEqualsIfExists": {"aws:PrincipalOrgID": "o-1"}}))}, "violation"),
    Case("policy-secure-transport-is-no-limit", PUBLIC, BUCKET_POLICY,
         {"bucket": "models", "policy": policy(read(condition={"Bool": {"aws:SecureTransport": "true"}}))},
         "violation"),
    Case("policy-source-ip-world", PUBLIC, BUCKET_POLICY,
         {"bucket": "models", "policy": policy(read(condition={"IpAddress": {"aws:SourceIp": "::/0"}}))}, "violation"),
    Case("access-point-policy-star", PUBLIC, "aws:s3control/accessPointPolicy:AccessPointPolicy",
         {"accessPointArn": "arn:aws:s3:us-east-1:1:accesspoint/ap", "policy": policy(read())}, "violation"),
    Case("policy-unknown", PUBLIC, BUCKET_POLICY, {"bucket": "models", "policy": UNKNOWN_STRING_VALUE}, "unknown"),
    Case("acl-unknown", PUBLIC, ACL, {"bucket": "models", "acl": UNKNOWN_STRING_VALUE}, "unknown"),
    Case("block-flag-unknown", PUBLIC, BLOCK, {"bucket": "models", **ALL_ON, "ignorePublicAcls": UNKNOWN_BOOLEAN_VALUE},
         "unknown"),
    Case("acl-private", PUBLIC, ACL, {"bucket": "models", "acl": "private"}, "pass"),
    Case("block-all-on", PUBLIC, BLOCK, {"bucket": "models", **ALL_ON}, "pass"),
    Case("access-point-defaults", PUBLIC, ACCESS_POINT, {"bucket": "models", "name": "ap"}, "pass"),
    Case("policy-deny-insecure-transport", PUBLIC, BUCKET_POLICY,
         {"bucket": "models", "policy": policy({"Effect": "Deny", "Principal": "*", "Action": "s3:*",
                                                "Resource": [BUCKET_ARN, f"{BUCKET_ARN}/*"],
                                                "Condition": {"Bool": {"aws:SecureTransport": "false"}}})}, "pass"),
    Case("policy-named-reader", PUBLIC, BUCKET_POLICY,
         {"bucket": "models", "policy": policy(read({"AWS": "arn:aws:iam::123456789012:role/serving"}))}, "pass"),
    Case("policy-star-own-organisation", PUBLIC, BUCKET_POLICY,
         {"bucket": "models", "policy": policy(read(condition={"StringEquals": {"aws:PrincipalOrgID": "o-abc"}}))},
         "pass"),
    Case("policy-star-vpc-endpoint", PUBLIC, BUCKET_POLICY,
         {"bucket": "models", "policy": policy(read(condition={"StringEquals": {"aws:SourceVpce": "vpce-0abc"}}))},
         "pass"),
    Case("policy-service-principal", PUBLIC, BUCKET_POLICY,
         {"bucket": "models", "policy": policy(read({"Service": "logging.s3.amazonaws.com"}))}, "pass"),
    # --- GCS ---
    Case("gcs-predefined-public-read", PUBLIC, GCS_ACL, {"bucket": "models", "predefinedAcl": "publicRead"},
         "violation", "publicRead"),
    Case("gcs-predefined-any-spelling", PUBLIC, "gcp:storage/objectACL:ObjectACL",
         {"bucket": "models", "object": "m", "predefinedAcl": "PUBLIC_READ_WRITE"}, "violation"),
    Case("gcs-default-acl-public", PUBLIC, GCS_ACL, {"bucket": "models", "defaultAcl": "publicRead"}, "violation"),
    Case("gcs-role-entity-all-users", PUBLIC, GCS_ACL,
         {"bucket": "models", "roleEntities": ["OWNER:project-owners-1", "READER:allUsers"]}, "violation",
         "READER:allUsers"),
    Case("gcs-default-object-acl-all-authenticated", PUBLIC, "gcp:storage/defaultObjectACL:DefaultObjectACL",
         {"bucket": "models", "roleEntities": ["READER:AllAuthenticatedUsers"]}, "violation"),
    Case("gcs-access-control-all-users", PUBLIC, "gcp:storage/bucketAccessControl:BucketAccessControl",
         {"bucket": "models", "entity": "allUsers", "role": "READER"}, "violation"),
    Case("gcs-object-access-control", PUBLIC, "gcp:storage/objectAccessControl:ObjectAccessControl",
         {"bucket": "models", "object": "m", "entity": "allAuthenticatedUsers", "role": "READER"}, "violation"),
    Case("gcs-bucket-iam-all-users", GCP_PUBLIC_IAM, "gcp:storage/bucketIAMMember:BucketIAMMember",
         {"bucket": "models", "role": "roles/storage.objectViewer", "member": "allUsers"}, "violation"),
    Case("gcs-managed-folder-iam-public", GCP_PUBLIC_IAM, "gcp:storage/managedFolderIamBinding:ManagedFolderIamBinding",
         {"bucket": "models", "managedFolder": "f/", "role": "roles/storage.objectViewer",
          "members": ["allAuthenticatedUsers"]}, "violation"),
    Case("gcs-role-entity-unknown", PUBLIC, GCS_ACL, {"bucket": "models", "roleEntities": [UNKNOWN_STRING_VALUE]},
         "unknown"),
    Case("gcs-project-private", PUBLIC, GCS_ACL,
         {"bucket": "models", "predefinedAcl": "projectPrivate", "roleEntities": ["READER:group-ml@example.com"]},
         "pass"),
    Case("gcs-reader-service-account", GCP_PUBLIC_IAM, "gcp:storage/bucketIAMMember:BucketIAMMember",
         {"bucket": "models", "role": "roles/storage.objectViewer",
          "member": "serviceAccount:ss-serving@p.iam.gserviceaccount.com"}, "pass"),
    # --- Azure ---
    Case("azure-blob-public-access", PUBLIC, ACCOUNT, account(allowBlobPublicAccess=True), "violation",
         "allowBlobPublicAccess"),
    Case("azure-blob-public-access-string", PUBLIC, ACCOUNT, account(allowBlobPublicAccess="True"), "violation"),
    Case("azure-container-blob", PUBLIC, CONTAINER, {"accountName": "models", "publicAccess": "Blob"}, "violation"),
    Case("azure-container-lower-case", PUBLIC, CONTAINER, {"accountName": "models", "publicAccess": "container"},
         "violation"),
    Case("azure-container-unknown", PUBLIC, CONTAINER, {"accountName": "models", "publicAccess": UNKNOWN_STRING_VALUE},
         "unknown"),
    Case("azure-private-account", PUBLIC, ACCOUNT, account(allowBlobPublicAccess=False), "pass"),
    Case("azure-account-default-private", PUBLIC, ACCOUNT, account(), "pass"),
    Case("azure-container-none", PUBLIC, CONTAINER, {"accountName": "models", "publicAccess": "None"}, "pass"),
    Case("azure-http-allowed", TRANSPORT, ACCOUNT, account(enableHttpsTrafficOnly=False), "violation",
         "enableHttpsTrafficOnly"),
    Case("azure-tls-1-0", TRANSPORT, ACCOUNT, account(minimumTlsVersion="TLS1_0"), "violation", "TLS1_0"),
    Case("azure-tls-1-1-lower-case", TRANSPORT, ACCOUNT, account(minimumTlsVersion="tls1_1"), "violation"),
    Case("azure-tls-left-out", TRANSPORT, ACCOUNT, {"accountName": "models"}, "violation", "TLS 1.0"),
    Case("azure-tls-unknown", TRANSPORT, ACCOUNT, account(minimumTlsVersion=UNKNOWN_STRING_VALUE), "unknown"),
    Case("azure-https-tls-1-2", TRANSPORT, ACCOUNT, account(enableHttpsTrafficOnly=True), "pass"),
    Case("azure-https-default-tls-1-3", TRANSPORT, ACCOUNT, account(minimumTlsVersion="TLS1_3"), "pass"),
    Case("azure-old-tls-exempt", TRANSPORT, ACCOUNT, account(minimumTlsVersion="TLS1_0"), "pass", "",
         {"exemptions": [{"resource": "subject", "reason": "legacy scanner until 2026-09, SEC-40"}]}),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_storage_case(case: Case) -> None:
    assert_case(case)


def test_case_ids_are_unique() -> None:
    assert len({c.id for c in CASES}) == len(CASES)
