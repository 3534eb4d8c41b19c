"""Hostile registry cases: ECR policies open to everybody, ECR Public, ACR's admin user and anonymous pull,
Artifact Registry's public members, mutable tags, images pushed without a scan; and the look-alikes that must
pass (a repository shared read-only with a named partner account, a registry rule that scans everything)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pulumi_policy.proxy import UNKNOWN_BOOLEAN_VALUE, UNKNOWN_STRING_VALUE

from tests.policies.harness import Case, StackCase, assert_case, assert_stack_case, check_stack, stack_resource, urn

OPEN, TAGS, SCAN = "registry-not-public", "registry-immutable-tags", "ecr-scan-on-push"
REPO, REPO_POLICY = "aws:ecr/repository:Repository", "aws:ecr/repositoryPolicy:RepositoryPolicy"
SCANNING = "aws:ecr/registryScanningConfiguration:RegistryScanningConfiguration"
ACR = "azure-native:containerregistry:Registry"
AR = "gcp:artifactregistry/repository:Repository"
PULL = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]


def policy(principal: Any, actions: Any = PULL, condition: dict[str, Any] | None = None, text: bool = True) -> Any:
    statement: dict[str, Any] = {"Sid": "Pull", "Effect": "Allow", "Principal": principal, "Action": actions}
    if condition is not None:
        statement["Condition"] = condition
    document = {"Version": "2012-10-17", "Statement": [statement]}
    return json.dumps(document) if text else document


def acr(**props: Any) -> dict[str, Any]:
    return {"registryName": "servestack", "sku": {"name": "Premium"}, "adminUserEnabled": False,
            "anonymousPullEnabled": False, **props}


CASES = [
    # --- registry-not-public ---
    Case("ecr-policy-principal-star", OPEN, REPO_POLICY, {"repository": "r", "policy": policy("*")}, "violation",
         "ecr:BatchGetImage"),
    Case("ecr-policy-aws-star-push", OPEN, REPO_POLICY,
         {"repository": "r", "policy": policy({"AWS": "*"}, ["ecr:PutImage", "ecr:*"])}, "violation", "ecr:PutImage"),
    Case("ecr-policy-object-form", OPEN, REPO_POLICY, {"repository": "r", "policy": policy("*", text=False)},
         "violation"),
    Case("ecr-policy-org-negated", OPEN, REPO_POLICY,
         {"repository": "r", "policy": policy("*", condition={"StringNotEquals": {"aws:PrincipalOrgID": "o-1"}})},
         "violation"),
    Case("ecr-registry-policy-star", OPEN, "aws:ecr/registryPolicy:RegistryPolicy",
         {"policy": policy("*", ["ecr:ReplicateImage", "ecr:CreateRepository"])}, "violation"),
    Case("ecr-creation-template-policy-star", OPEN, "aws:ecr/repositoryCreationTemplate:RepositoryCreationTemplate",
         {"prefix": "ml", "appliedFors": ["PULL_THROUGH_CACHE"], "repositoryPolicy": policy("*")}, "violation",
         "repositoryPolicy"),
    Case("ecr-public-repository", OPEN, "aws:ecrpublic/repository:Repository", {"repositoryName": "servestack"},
         "violation", "ECR Public"),
    Case("acr-admin-user", OPEN, ACR, acr(adminUserEnabled=True), "violation", "adminUserEnabled"),
    Case("acr-anonymous-pull", OPEN, ACR, acr(anonymousPullEnabled="true"), "violation", "anonymousPullEnabled"),
    Case("acr-admin-unknown", OPEN, ACR, acr(adminUserEnabled=UNKNOWN_BOOLEAN_VALUE), "unknown"),
    Case("ecr-policy-unknown", OPEN, REPO_POLICY, {"repository": "r", "policy": UNKNOWN_STRING_VALUE}, "unknown"),
    Case("artifact-registry-all-users", "gcp-no-public-iam",
         "gcp:artifactregistry/repositoryIamBinding:RepositoryIamBinding",
         {"repository": "r", "role": "roles/artifactregistry.reader", "members": ["allUsers"]}, "violation"),
    Case("ecr-shared-read-only-with-partner", OPEN, REPO_POLICY,
         {"repository": "r", "policy": policy({"AWS": "arn:aws:iam::210987654321:root"})}, "pass"),
    Case("ecr-star-limited-to-organisation", OPEN, REPO_POLICY,
         {"repository": "r", "policy": policy("*", condition={"StringEquals": {"aws:PrincipalOrgID": "o-abc"}})},
         "pass"),
    Case("ecr-lambda-service-pull", OPEN, REPO_POLICY,
         {"repository": "r", "policy": policy({"Service": "lambda.amazonaws.com"},
                                              condition={"StringLike": {"aws:SourceArn": "arn:aws:lambda:*:1:*"}})},
         "pass"),
    Case("acr-private", OPEN, ACR, acr(), "pass"),
    Case("artifact-registry-partner-reader", "gcp-no-public-iam",
         "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember",
         {"repository": "r", "role": "roles/artifactregistry.reader", "member": "group:partner-pullers@example.com"},
         "pass"),
    # --- registry-immutable-tags ---
    Case("ecr-mutable-by-default", TAGS, REPO, {"name": "servestack-serving"}, "violation", "ECR's default is MUTABLE"),
    Case("ecr-mutable", TAGS, REPO, {"name": "r", "imageTagMutability": "MUTABLE"}, "violation"),
    Case("ecr-mutable-with-exclusion", TAGS, REPO,
         {"name": "r", "imageTagMutability": "MUTABLE_WITH_EXCLUSION",
          "imageTagMutabilityExclusionFilters": [{"filter": "release-*", "filterType": "WILDCARD"}]}, "violation"),
    Case("ecr-template-mutable", TAGS, "aws:ecr/repositoryCreationTemplate:RepositoryCreationTemplate",
         {"prefix": "ml", "imageTagMutability": "mutable"}, "violation"),
    Case("artifact-registry-mutable", TAGS, AR, {"repositoryId": "r", "format": "DOCKER"}, "violation",
         "immutableTags"),
    Case("artifact-registry-explicitly-mutable", TAGS, AR,
         {"repositoryId": "r", "format": "docker", "dockerConfig": {"immutableTags": False}}, "violation"),
    Case("ecr-mutability-unknown", TAGS, REPO, {"name": "r", "imageTagMutability": UNKNOWN_STRING_VALUE}, "unknown"),
    Case("ecr-immutable", TAGS, REPO, {"name": "r", "imageTagMutability": "IMMUTABLE"}, "pass"),
    Case("ecr-immutable-with-exclusion", TAGS, REPO,
         {"name": "r", "imageTagMutability": "IMMUTABLE_WITH_EXCLUSION",
          "imageTagMutabilityExclusionFilters": [{"filter": "latest", "filterType": "WILDCARD"}]}, "pass"),
    Case("artifact-registry-immutable", TAGS, AR,
         {"repositoryId": "r", "format": "DOCKER", "dockerConfig": {"immutableTags": True}}, "pass"),
    Case("artifact-registry-remote", TAGS, AR, {"repositoryId": "r", "format": "DOCKER", "mode": "REMOTE_REPOSITORY"},
         "pass"),
    Case("artifact-registry-python", TAGS, AR, {"repositoryId": "r", "format": "PYTHON"}, "pass"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_registry_case(case: Case) -> None:
    assert_case(case)


def test_case_ids_are_unique() -> None:
    assert len({c.id for c in CASES}) == len(CASES)


# --- ecr-scan-on-push (stack rule) ------------------------------------------------------------------


def _repo(name: str, scan: Any = None, **more: Any) -> Any:
    props: dict[str, Any] = {"name": name, "imageTagMutability": "IMMUTABLE", **more}
    if scan is not None:
        props["imageScanningConfiguration"] = {"scanOnPush": scan}
    return stack_resource(REPO, name, props)


def _scanning(frequency: Any, *filters: Any) -> Any:
    return stack_resource(SCANNING, "scanning", {"scanType": "ENHANCED", "rules": [
        {"scanFrequency": frequency, "repositoryFilters": [{"filter": f, "filterType": "WILDCARD"} for f in filters]}]})


STACK_CASES = [
    StackCase("ecr-unscanned", lambda: [_repo("unscanned")], "violation", "scanOnPush"),
    StackCase("ecr-scan-off-as-string", lambda: [_repo("off", "false")], "violation"),
    StackCase("ecr-scan-on-push", lambda: [_repo("scanned", True)], "pass"),
    StackCase("ecr-scanned-by-registry-rule", lambda: [_repo("servestack-serving"), _scanning("SCAN_ON_PUSH", "*")],
              "pass"),
    StackCase("ecr-registry-rule-for-other-repositories", lambda: [
        _repo("servestack-serving"), _scanning("CONTINUOUS_SCAN", "other-*")], "violation"),
]


@pytest.mark.parametrize("case", STACK_CASES, ids=[c.id for c in STACK_CASES])
def test_hostile_scan_stack_case(case: StackCase) -> None:
    assert_stack_case(SCAN, case)


def test_repository_without_scan_on_push_is_a_violation_at_its_urn() -> None:
    verdict = check_stack(SCAN, [_repo("unscanned"), _repo("scanned", True), _repo("off", "false")])
    assert verdict.kind == "violation"
    assert verdict.urns == [urn(REPO, "unscanned"), urn(REPO, "off")]
    assert "scanOnPush" in verdict.messages[0]


@pytest.mark.parametrize(("frequency", "filters", "kind"), [
    ("SCAN_ON_PUSH", ["*"], "pass"),
    ("continuous_scan", ["servestack-*"], "pass"),
    ("SCAN_ON_PUSH", ["other-*"], "violation"),
    ("MANUAL", ["*"], "violation"),
    (UNKNOWN_STRING_VALUE, ["*"], "unknown"),
], ids=["all-on-push", "prefix-continuous-lower-case", "other-prefix", "manual", "frequency-unknown"])
def test_registry_scanning_rules_cover_repositories(frequency: Any, filters: list[str], kind: str) -> None:
    verdict = check_stack(SCAN, [_repo("servestack-serving"), _scanning(frequency, *filters)])
    assert verdict.kind == kind, (verdict.messages, verdict.cannot_verify)


def test_scan_setting_unknown_is_cannot_verify() -> None:
    verdict = check_stack(SCAN, [_repo("r", UNKNOWN_BOOLEAN_VALUE)])
    assert verdict.kind == "unknown" and "r:" in (verdict.cannot_verify or "")


def test_a_stack_rule_exemption_needs_a_reason_and_applies_to_its_resource_only() -> None:
    repos = [_repo("scratch"), _repo("serving")]
    exempt = {"exemptions": [{"resource": "scratch", "reason": "throwaway CI images, deleted nightly"}]}
    verdict = check_stack(SCAN, repos, exempt)
    assert verdict.urns == [urn(REPO, "serving")]
    no_reason = check_stack(SCAN, repos, {"exemptions": [{"resource": "scratch", "reason": ""}]})
    assert urn(REPO, "scratch") in no_reason.urns and any("gives no reason" in m for m in no_reason.messages)
