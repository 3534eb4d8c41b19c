"""Storage: buckets and blob containers that anybody can read, and storage reachable over plain HTTP.

- AWS S3: canned ACLs and grants to AllUsers or AuthenticatedUsers (on buckets, objects and copies),
  public access blocks (bucket, account, access point) with any of the four flags off or left out, and
  bucket, access point and multi-region access point policies that allow Principal "*" (or everybody
  through NotPrincipal) without a condition that limits the caller's organisation, account or network.
- GCS: ACLs for allUsers or allAuthenticatedUsers (predefined ACLs, role entities, access controls) on
  buckets, default object ACLs and objects. Public IAM members on buckets are `gcp-no-public-iam`'s.
- Azure: storage accounts that allow public blob access, containers with public access (Blob or
  Container, in any case), accounts that accept HTTP or TLS below 1.2 (left out, Azure's default is TLS 1.0).
"""

from __future__ import annotations

from typing import Any

from pulumi_policy import EnforcementLevel, Severity

from policies.rules.common import Judge, Rule, judge_open_to_anyone
from reading import values as v
from reading.resources import Resource
from reading.values import Unknown

S3_ACLS = frozenset({"aws:s3/bucketAcl:BucketAcl", "aws:s3/bucketAclV2:BucketAclV2"})
S3_OBJECTS = frozenset({"aws:s3/bucketObject:BucketObject", "aws:s3/bucketObjectv2:BucketObjectv2",
                        "aws:s3/objectCopy:ObjectCopy"})
S3_PUBLIC_ACCESS_BLOCKS = frozenset({"aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
                                     "aws:s3/accountPublicAccessBlock:AccountPublicAccessBlock"})
S3_ACCESS_POINT = "aws:s3/accessPoint:AccessPoint"
S3_POLICIES = frozenset({"aws:s3/bucketPolicy:BucketPolicy", "aws:s3control/bucketPolicy:BucketPolicy",
                         "aws:s3control/accessPointPolicy:AccessPointPolicy",
                         "aws:s3control/multiRegionAccessPointPolicy:MultiRegionAccessPointPolicy"})
PUBLIC_ACCESS_FLAGS = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
PUBLIC_CANNED_ACLS = frozenset({"public-read", "public-read-write", "authenticated-read"})
S3_PUBLIC_GROUPS = ("/global/allusers", "/global/authenticatedusers")

GCS_PREDEFINED = frozenset({"gcp:storage/bucketACL:BucketACL", "gcp:storage/objectACL:ObjectACL"})
GCS_ROLE_ENTITIES = frozenset({*GCS_PREDEFINED, "gcp:storage/defaultObjectACL:DefaultObjectACL"})
GCS_ACCESS_CONTROLS = frozenset({"gcp:storage/bucketAccessControl:BucketAccessControl",
                                 "gcp:storage/defaultObjectAccessControl:DefaultObjectAccessControl",
                                 "gcp:storage/objectAccessControl:ObjectAccessControl"})
GCS_PUBLIC_ACLS = frozenset({"publicread", "publicreadwrite", "authenticatedread"})
GCS_PUBLIC_ENTITIES = frozenset({"allusers", "allauthenticatedusers"})

AZURE_ACCOUNT = "azure-native:storage:StorageAccount"
AZURE_CONTAINER = "azure-native:storage:BlobContainer"
AZURE_PUBLIC_ACCESS = frozenset({"blob", "container"})
AZURE_OLD_TLS = frozenset({"tls1_0", "tls1_1"})


def _flag(value: Any, what: str, judge: Judge) -> bool | None:
    """A boolean input: None when absent or unknown (an unknown one is noted)."""
    if isinstance(value, Unknown):
        judge.unknown_value(value, what)
        return None
    return None if value is None else v.truthy(value) is True


def _s3_acl(text: str) -> str:
    return text.strip().lower().replace("_", "-")


def _gcs_acl(text: str) -> str:
    """GCS predefined ACLs are camelCase ("publicRead"); read them in any case, with or without separators."""
    return text.strip().lower().replace("-", "").replace("_", "")


def _canned(value: Any, what: str, public: frozenset[str], judge: Judge, fix: str, spelling: Any = _s3_acl) -> None:
    if isinstance(value, Unknown):
        judge.unknown_value(value, what)
    elif isinstance(value, str) and spelling(value) in public:
        judge.violation(f"{what} is {value!r}: everybody (or every account of the cloud) can read it. {fix}")


S3_FIX = ("Keep the bucket private (acl private, or no ACL with ownership BucketOwnerEnforced) and share objects "
          "through signed URLs.")


def _s3_grants(grants: Any, where: str, judge: Judge) -> None:
    for i, grant in enumerate(v.items(grants)):
        if isinstance(grant, Unknown):
            judge.unknown_value(grant, f"{where}[{i}]")
            continue
        if not isinstance(grant, dict):
            continue
        grantee = grant.get("grantee") if isinstance(grant.get("grantee"), dict | Unknown) else grant
        uri = v.dig(grantee, "uri")
        if isinstance(uri, Unknown):
            judge.unknown_value(uri, f"{where}[{i}].uri")
        elif isinstance(uri, str) and uri.strip().lower().rstrip("/").endswith(S3_PUBLIC_GROUPS):
            judge.violation(f"{where}[{i}] grants {grant.get('permission') or grant.get('permissions')} to {uri}: "
                            f"everybody (or every AWS account) can use it. {S3_FIX}")


def _public_access_block(props: dict[str, Any], where: str, judge: Judge, default: bool) -> None:
    off = []
    for key in PUBLIC_ACCESS_FLAGS:
        flag = _flag(props.get(key), f"{where}{key}", judge)
        if flag is False or (flag is None and not default and not isinstance(props.get(key), Unknown)):
            off.append(f"{key}={props.get(key)!r}" if props.get(key) is not None else f"{key} (left out: false)")
    if off:
        block = where.rstrip(".") or "the public access block"
        judge.violation(f"{block} leaves {', '.join(off)}: S3 then honours public ACLs or policies. Set all four "
                        "flags to true.")


def _s3_policy(raw: Any, what: str, judge: Judge) -> None:
    judge_open_to_anyone(raw, what, judge, "anybody on the internet can use it. Name the principals, or add "
                                           "aws:PrincipalOrgID / aws:SourceVpce.")


def _gcs_entities(entities: Any, where: str, judge: Judge) -> None:
    for i, entry in enumerate(v.items(entities)):
        if isinstance(entry, Unknown):
            judge.unknown_value(entry, f"{where}[{i}]")
            continue
        entity = str(entry).rsplit(":", 1)[-1].strip().lower()
        if entity in GCS_PUBLIC_ENTITIES:
            judge.violation(f"{where}[{i}] {entry!r} gives {entity} access: everybody (or every Google account) can "
                            "read it. Remove the entry; grant named principals through IAM.")


def check_storage_public(resource: Resource, config: dict[str, Any], judge: Judge) -> None:
    p, t = resource.props, resource.type
    if t in S3_ACLS:
        _canned(p.get("acl"), "acl", PUBLIC_CANNED_ACLS, judge, S3_FIX)
        _s3_grants(v.dig(p, "accessControlPolicy", "grants"), "accessControlPolicy.grants", judge)
    elif t in S3_OBJECTS:
        _canned(p.get("acl"), "acl", PUBLIC_CANNED_ACLS, judge, S3_FIX)
        _s3_grants(p.get("grants"), "grants", judge)
    elif t in S3_PUBLIC_ACCESS_BLOCKS:
        _public_access_block(p, "", judge, default=False)
    elif t == S3_ACCESS_POINT:
        block = p.get("publicAccessBlockConfiguration")
        if isinstance(block, Unknown):
            judge.unknown_value(block, "publicAccessBlockConfiguration")
        elif isinstance(block, dict):
            _public_access_block(block, "publicAccessBlockConfiguration.", judge, default=True)
        _s3_policy(p.get("policy"), "policy", judge)
    elif t in S3_POLICIES:
        _s3_policy(p.get("policy"), "policy", judge)
    elif t in GCS_ROLE_ENTITIES or t in GCS_ACCESS_CONTROLS:
        fix = "Use predefinedAcl private or projectPrivate, with uniform bucket-level access."
        if t in GCS_PREDEFINED:
            _canned(p.get("predefinedAcl"), "predefinedAcl", GCS_PUBLIC_ACLS, judge, fix, _gcs_acl)
        if t == "gcp:storage/bucketACL:BucketACL":
            _canned(p.get("defaultAcl"), "defaultAcl", GCS_PUBLIC_ACLS, judge, fix, _gcs_acl)
        if t in GCS_ROLE_ENTITIES:
            _gcs_entities(p.get("roleEntities"), "roleEntities", judge)
        else:
            entity = p.get("entity")
            if isinstance(entity, Unknown):
                judge.unknown_value(entity, "entity")
            elif isinstance(entity, str) and entity.strip().lower() in GCS_PUBLIC_ENTITIES:
                judge.violation(f"entity {entity!r} gets {p.get('role')}: everybody (or every Google account) can "
                                "read it. Grant named principals through IAM instead.")
    elif t == AZURE_ACCOUNT:
        if _flag(p.get("allowBlobPublicAccess"), "allowBlobPublicAccess", judge):
            judge.violation("allowBlobPublicAccess is true: any container of the account can be made public. Set it "
                            "to false.")
    elif t == AZURE_CONTAINER:
        _canned(p.get("publicAccess"), "publicAccess", AZURE_PUBLIC_ACCESS, judge,
                "Set publicAccess to None; hand out user delegation SAS tokens for what must be shared.", _gcs_acl)


def check_secure_transport(resource: Resource, config: dict[str, Any], judge: Judge) -> None:
    p = resource.props
    if _flag(p.get("enableHttpsTrafficOnly"), "enableHttpsTrafficOnly", judge) is False:
        judge.violation("enableHttpsTrafficOnly is false: the account accepts plain HTTP, keys and data in clear "
                        "text. Set it to true.")
    tls = p.get("minimumTlsVersion")
    if isinstance(tls, Unknown):
        judge.unknown_value(tls, "minimumTlsVersion")
    elif tls is None:
        judge.violation("minimumTlsVersion is left out, which Azure reads as TLS 1.0. Set it to TLS1_2.")
    elif str(tls).strip().lower() in AZURE_OLD_TLS:
        judge.violation(f"minimumTlsVersion is {tls!r}: clients may use broken TLS versions. Set it to TLS1_2.")


STORAGE_RULES = [
    Rule(
        name="storage-not-public",
        description="No bucket, object or blob container is readable by everybody: S3 ACLs, public access blocks "
                    "and bucket policies; GCS ACLs; Azure public blob access and public containers.",
        severity=Severity.CRITICAL,
        enforcement=EnforcementLevel.MANDATORY,
        remediation="Keep storage private; grant named principals, and share objects through signed URLs or SAS.",
        types=frozenset({*S3_ACLS, *S3_OBJECTS, *S3_PUBLIC_ACCESS_BLOCKS, S3_ACCESS_POINT, *S3_POLICIES,
                         *GCS_ROLE_ENTITIES, *GCS_ACCESS_CONTROLS, AZURE_ACCOUNT, AZURE_CONTAINER}),
        check=check_storage_public,
    ),
    Rule(
        name="storage-secure-transport",
        description="Azure storage accounts accept HTTPS only, with TLS 1.2 or later.",
        severity=Severity.HIGH,
        enforcement=EnforcementLevel.MANDATORY,
        remediation="Set enableHttpsTrafficOnly to true (or leave it out) and minimumTlsVersion to TLS1_2.",
        types=frozenset({AZURE_ACCOUNT}),
        check=check_secure_transport,
    ),
]
