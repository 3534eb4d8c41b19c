"""Container registries: who can pull (or push), whether a tag always means the same image, and whether
pushed images are scanned.

- Open registries: ECR repository, registry and creation-template policies that allow Principal "*"
  without a condition limiting the caller's organisation, account or network; ECR Public repositories
  (public by design); ACR with the admin user (one shared password with push rights) or anonymous pull.
  Artifact Registry's public IAM members are `gcp-no-public-iam`'s, which reads every GCP IAM kind.
- Mutable tags: ECR `imageTagMutability` MUTABLE (its default) or MUTABLE_WITH_EXCLUSION, in repositories
  and creation templates; Artifact Registry Docker repositories without `dockerConfig.immutableTags`.
- Scanning: an ECR repository is scanned on push when it says so (`imageScanningConfiguration.scanOnPush`)
  or when a registry scanning rule of the stack, scanning on push or continuously, has a filter that
  matches its name.

The stack's policy config makes the tag and scanning rules mandatory in prod
(`policies/rules/stack_config.py`).
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

from pulumi_policy import EnforcementLevel, Severity

from policies.rules.common import Judge, Rule, judge_open_to_anyone
from reading import values as v
from reading.resources import Resource
from reading.values import Unknown

ECR_REPOSITORY = "aws:ecr/repository:Repository"
ECR_TEMPLATE = "aws:ecr/repositoryCreationTemplate:RepositoryCreationTemplate"
ECR_SCANNING = "aws:ecr/registryScanningConfiguration:RegistryScanningConfiguration"
ECR_POLICIES = {
    "aws:ecr/repositoryPolicy:RepositoryPolicy": "policy",
    "aws:ecr/registryPolicy:RegistryPolicy": "policy",
    "aws:ecrpublic/repositoryPolicy:RepositoryPolicy": "policy",
    ECR_TEMPLATE: "repositoryPolicy",
}
ECR_PUBLIC = "aws:ecrpublic/repository:Repository"
ACR = "azure-native:containerregistry:Registry"
ARTIFACT_REGISTRY = "gcp:artifactregistry/repository:Repository"
MUTABLE = frozenset({"mutable", "mutable_with_exclusion"})
SCANNING = frozenset({"scan_on_push", "continuous_scan"})


def _policy(raw: Any, what: str, judge: Judge) -> None:
    judge_open_to_anyone(raw, what, judge, "anybody can use the images. Name the accounts or roles that pull, "
                                           "or add aws:PrincipalOrgID.")


def _flag(value: Any, what: str, judge: Judge) -> bool:
    if isinstance(value, Unknown):
        judge.unknown_value(value, what)
        return False
    return value is not None and v.truthy(value) is True


def check_registry_public(resource: Resource, config: dict[str, Any], judge: Judge) -> None:
    p = resource.props
    if resource.type in ECR_POLICIES:
        key = ECR_POLICIES[resource.type]
        _policy(p.get(key), key, judge)
    elif resource.type == ECR_PUBLIC:
        judge.violation(f"ECR Public repository {p.get('repositoryName')!r} serves its images to anyone on the "
                        "internet. Use a private ECR repository and a repository policy naming who pulls.")
    elif resource.type == ACR:
        if _flag(p.get("adminUserEnabled"), "adminUserEnabled", judge):
            judge.violation("adminUserEnabled is true: one shared username and password with push and pull rights. "
                            "Turn it off; give pullers AcrPull through their managed identity.")
        if _flag(p.get("anonymousPullEnabled"), "anonymousPullEnabled", judge):
            judge.violation("anonymousPullEnabled is true: anybody can pull every image without signing in. Turn it "
                            "off.")


def check_immutable_tags(resource: Resource, config: dict[str, Any], judge: Judge) -> None:
    p = resource.props
    if resource.type in (ECR_REPOSITORY, ECR_TEMPLATE):
        mutability = p.get("imageTagMutability")
        if isinstance(mutability, Unknown):
            judge.unknown_value(mutability, "imageTagMutability")
        elif mutability is None or str(mutability).strip().lower() in MUTABLE:
            shown = "left out (ECR's default is MUTABLE)" if mutability is None else repr(mutability)
            judge.violation(f"imageTagMutability is {shown}: a push can move a tag to another image under running "
                            "deployments. Set it to IMMUTABLE (or IMMUTABLE_WITH_EXCLUSION for a scratch tag).")
        return
    fmt, mode = p.get("format"), p.get("mode")
    for value, what in ((fmt, "format"), (mode, "mode")):
        if isinstance(value, Unknown):
            judge.unknown_value(value, what)
            return
    standard = str(mode or "STANDARD_REPOSITORY").strip().lower() == "standard_repository"
    if str(fmt or "").strip().lower() != "docker" or not standard:
        return  # remote and virtual repositories hold no pushed tags
    immutable = v.dig(p, "dockerConfig", "immutableTags")
    if isinstance(immutable, Unknown):
        judge.unknown_value(immutable, "dockerConfig.immutableTags")
    elif immutable is None or v.truthy(immutable) is not True:
        shown = "left out (false)" if immutable is None else repr(immutable)
        judge.violation(f"dockerConfig.immutableTags is {shown}: a push can move a tag to another image under running "
                        "deployments. Set it to true.")


def _scanned_by_registry(name: Any, rules: list[tuple[str, Any, list[Any]]]) -> bool | Unknown:
    """Whether a registry scanning rule scans this repository on push or continuously."""
    pending: Unknown | None = None
    for _, frequency, filters in rules:
        if isinstance(frequency, Unknown):
            pending = pending or frequency
            continue
        if str(frequency).strip().lower() not in SCANNING:
            continue
        for f in filters:
            pattern = f.get("filter") if isinstance(f, dict) else f
            if isinstance(pattern, Unknown):
                pending = pending or pattern
            elif isinstance(pattern, str) and v.wildcard_only(pattern):
                return True
            elif isinstance(pattern, str):
                if isinstance(name, Unknown) or name is None:
                    pending = pending or (name if isinstance(name, Unknown) else Unknown("name"))
                elif fnmatchcase(str(name).lower(), pattern.strip().lower()):
                    return True
    return pending if pending is not None else False


def check_scan_on_push(resources: list[Resource], config: dict[str, Any], judge: Judge) -> None:
    rules: list[tuple[str, Any, list[Any]]] = []
    for r in resources:
        if r.type != ECR_SCANNING:
            continue
        for i, rule in enumerate(v.items(r.props.get("rules"))):
            if isinstance(rule, Unknown):
                rules.append((f"{r.name} rules[{i}]", rule, []))
            elif isinstance(rule, dict):
                filters = v.items(rule.get("repositoryFilters"))
                rules.append((f"{r.name} rules[{i}]", rule.get("scanFrequency"), filters))
    for repo in (r for r in resources if r.type == ECR_REPOSITORY):
        own = v.dig(repo.props, "imageScanningConfiguration", "scanOnPush")
        if isinstance(own, Unknown):
            judge.unknown(f"{repo.name}: {own}")
            continue
        if own is not None and v.truthy(own) is True:
            continue
        name = repo.props.get("name")
        by_registry = _scanned_by_registry(name, rules)
        if by_registry is True:
            continue
        if isinstance(by_registry, Unknown):
            judge.unknown(f"{repo.name}: whether a registry scanning rule covers it: {by_registry}")
            continue
        judge.violation(f"ECR repository {repo.name} ({name}) does not scan images on push "
                        "(imageScanningConfiguration.scanOnPush is not true) and no registry scanning rule of the "
                        "stack covers it: known vulnerabilities reach the cluster unreported. Set scanOnPush: true, or "
                        "add an ecr.RegistryScanningConfiguration rule (SCAN_ON_PUSH or CONTINUOUS_SCAN) whose filter "
                        "matches it.", repo.urn)


REGISTRY_RULES = [
    Rule(
        name="registry-not-public",
        description="No container registry is open to everybody: ECR policies with Principal \"*\" and no limiting "
                    "condition, ECR Public repositories, ACR admin user or anonymous pull.",
        severity=Severity.CRITICAL,
        enforcement=EnforcementLevel.MANDATORY,
        remediation="Name the accounts or roles that pull (read-only actions), or limit \"*\" with "
                    "aws:PrincipalOrgID; on ACR use AcrPull role assignments.",
        types=frozenset({*ECR_POLICIES, ECR_PUBLIC, ACR}),
        check=check_registry_public,
    ),
    Rule(
        name="registry-immutable-tags",
        description="Image tags cannot be moved: ECR IMMUTABLE tags, Artifact Registry immutableTags.",
        severity=Severity.MEDIUM,
        enforcement=EnforcementLevel.ADVISORY,  # the prod stacks' policy config makes it mandatory
        remediation="ECR: imageTagMutability IMMUTABLE; Artifact Registry: dockerConfig.immutableTags true.",
        types=frozenset({ECR_REPOSITORY, ECR_TEMPLATE, ARTIFACT_REGISTRY}),
        check=check_immutable_tags,
    ),
    Rule(
        name="ecr-scan-on-push",
        description="Every ECR repository scans images on push, by its own setting or a registry scanning rule "
                    "of the stack (stack rule).",
        severity=Severity.MEDIUM,
        enforcement=EnforcementLevel.ADVISORY,  # the prod stacks' policy config makes it mandatory
        remediation="Set imageScanningConfiguration.scanOnPush true, or add a registry scanning rule that "
                    "matches the repository.",
        types=frozenset({ECR_REPOSITORY, ECR_SCANNING}),
        check=check_scan_on_push,
        stack=True,
        exemptible=True,
    ),
]
