"""What every rule shares: its settings, its exemptions, and how it reports what it cannot verify.

A rule is a small function that looks at one resource (or at the whole stack) and tells a `Judge`
what is wrong and what it cannot know. The judge reports violations through pulumi_policy's
`report_violation` at the policy's enforcement level. What cannot be verified during preview is
raised at the end as `CannotVerify`, which pulumi_policy's analyzer reports as an advisory
diagnostic ("can't run policy ... during preview: cannot verify ..."), after the violations already
reported; with the policy's `failClosed` setting it is reported as a violation instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    Severity,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError

from reading import values as v
from reading.resources import Resource
from reading.values import BadValue, Statement, Unknown, plain


class CannotVerify(UnknownValueError):
    """Raised after a rule has judged all it could: these facts are unknown until the update runs."""

    def __init__(self, reasons: Sequence[str]) -> None:
        super().__init__(UNKNOWN_STRING_VALUE, [])
        self.reasons = list(reasons)
        self.message = "cannot verify: " + "; ".join(self.reasons)


FAIL_CLOSED: dict[str, dict[str, Any]] = {
    "failClosed": {
        "type": "boolean",
        "default": False,
        "description": "Report values unknown during preview as violations instead of advisory notes.",
    },
}
EXEMPTIONS: dict[str, dict[str, Any]] = {
    "exemptions": {
        "type": "array",
        "default": [],
        "description": "Resources this rule skips. Each names a resource (its URN or logical name) or a "
                       "Kubernetes namespace, and gives the reason, which reviewers read.",
        "items": {
            "type": "object",
            "properties": {
                "resource": {"type": "string", "description": "URN or logical name"},
                "namespace": {"type": "string", "description": "Kubernetes namespace"},
                "reason": {"type": "string", "minLength": 1},
            },
            "required": ["reason"],
        },
    },
}


def settings(config: Mapping[str, Any], schema: PolicyConfigSchema) -> dict[str, Any]:
    """The policy's config over the defaults its schema declares (the thresholds live in the schema)."""
    values = {k: v["default"] for k, v in schema.properties.items() if "default" in v}
    values.update(plain(config))
    return values


class Judge:
    """Collects one rule's verdict on one resource or on the stack.

    A stack rule's judge knows which resources are exempt (`exempt`): what it reports at their URNs is
    dropped.
    """

    def __init__(self, report: ReportViolation, config: Mapping[str, Any],
                 exempt: frozenset[str] = frozenset()) -> None:
        self._report = report
        self._fail_closed = bool(config.get("failClosed", False))
        self._exempt = exempt
        self.violations: list[str] = []
        self.unknowns: list[str] = []

    def exempt(self, urn: str) -> bool:
        return urn in self._exempt

    def violation(self, message: str, urn: str | None = None) -> None:
        if urn is not None and urn in self._exempt:
            return
        self.violations.append(message)
        self._report(message, urn)

    def unknown(self, message: str) -> None:
        self.unknowns.append(message)

    def unknown_value(self, value: Unknown, what: str) -> None:
        self.unknown(f"{what}: {value}")

    def finish(self) -> None:
        if not self.unknowns:
            return
        if self._fail_closed:
            for message in self.unknowns:
                self.violation(f"cannot verify (failClosed is set): {message}")
            return
        raise CannotVerify(self.unknowns)


def exemption(config: Mapping[str, Any], resource: Resource, judge: Judge, at: str | None = None) -> str | None:
    """The reason this resource is exempt from the rule, or None. Entries without a reason do not count.

    An entry that names the resource without a reason is reported, at `at` (a stack rule reports at the
    resource's URN).
    """
    for i, entry in enumerate(config.get("exemptions") or []):
        if not isinstance(entry, dict):
            continue
        target = entry.get("resource")
        namespace = entry.get("namespace")
        matches = (target is not None and target in (resource.urn, resource.name)) or (
            namespace is not None and target is None and namespace == resource.namespace)
        if not matches:
            continue
        reason = entry.get("reason")
        if isinstance(reason, str) and reason.strip():
            return reason.strip()
        judge.violation(f"exemptions[{i}] names this resource but gives no reason, so it does not apply; "
                        "add a reason reviewers can read", at)
    return None


ResourceCheck = Callable[[Resource, dict[str, Any], Judge], None]
StackCheck = Callable[[list[Resource], dict[str, Any], Judge], None]


@dataclass(frozen=True)
class Rule:
    """A rule's metadata; `policy()` builds the pulumi_policy object the pack and the offline check run."""

    name: str
    description: str
    severity: Severity
    enforcement: EnforcementLevel
    remediation: str
    types: frozenset[str]
    check: Any  # ResourceCheck or StackCheck
    stack: bool = False
    config: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    # More types by their token, for families too large to list (GCP has hundreds of IAM member, binding
    # and policy kinds).
    type_pattern: re.Pattern[str] | None = None
    # Whether a stack rule's findings at a resource can be exempted (resource rules always can).
    exemptible: bool = False

    def applies_to(self, resource_type: str) -> bool:
        return resource_type in self.types or (
            self.type_pattern is not None and self.type_pattern.search(resource_type) is not None)

    def schema(self) -> PolicyConfigSchema:
        properties = {**self.config, **FAIL_CLOSED}
        if not self.stack or self.exemptible:
            properties.update(EXEMPTIONS)
        return PolicyConfigSchema(properties=dict(properties))

    def policy(self) -> ResourceValidationPolicy | StackValidationPolicy:
        schema = self.schema()
        common = dict(enforcement_level=self.enforcement, config_schema=schema, severity=self.severity,
                      remediation_steps=self.remediation, tags=sorted(self._tags()))
        if self.stack:
            return StackValidationPolicy(name=self.name, description=self.description,
                                         validate=self._stack_validator(schema), **common)  # type: ignore[arg-type]
        return ResourceValidationPolicy(name=self.name, description=self.description,
                                        validate=self._resource_validator(schema), **common)  # type: ignore[arg-type]

    def _tags(self) -> set[str]:
        tags = {t.split(":", 1)[0] for t in self.types}
        if self.type_pattern is not None:
            tags.add(self.type_pattern.pattern.removeprefix("^").split(":", 1)[0])
        return tags

    def _resource_validator(self, schema: PolicyConfigSchema) -> Callable[..., None]:
        check: ResourceCheck = self.check

        def validate(args: ResourceValidationArgs, report: ReportViolation) -> None:
            if not self.applies_to(args.resource_type):
                return
            config = settings(args.get_config(), schema)
            resource = Resource(args.resource_type, args.urn, args.name, plain(args.props),
                                parent=args.opts.parent if args.opts else None)
            judge = Judge(report, config)
            if exemption(config, resource, judge) is not None:
                return
            check(resource, config, judge)
            judge.finish()

        validate.__name__ = self.name.replace("-", "_")
        return validate

    def _stack_validator(self, schema: PolicyConfigSchema) -> Callable[..., None]:
        check: StackCheck = self.check

        def validate(args: StackValidationArgs, report: ReportViolation) -> None:
            config = settings(args.get_config(), schema)
            resources = [
                Resource(r.resource_type, r.urn, r.name, plain(r.props),
                         parent=r.parent.urn if r.parent is not None else None,
                         dependencies=tuple(d.urn for d in r.dependencies),
                         property_dependencies={k: tuple(d.urn for d in v)
                                                for k, v in r.property_dependencies.items()},
                         provider=r.provider.urn if r.provider is not None else None)
                for r in args.resources
            ]
            exempt: set[str] = set()
            if self.exemptible:
                finder = Judge(report, config)
                exempt = {r.urn for r in resources if exemption(config, r, finder, r.urn) is not None}
            judge = Judge(report, config, frozenset(exempt))
            check(resources, config, judge)
            judge.finish()

        validate.__name__ = self.name.replace("-", "_")
        return validate


def document_statements(raw: Any, what: str, judge: Judge) -> Iterator[Statement]:
    """The known statements of an IAM policy document; what cannot be read goes to the judge as unknown."""
    try:
        statements = v.policy_document(raw, what)
    except BadValue as e:
        judge.unknown(str(e))
        return
    for s in statements:
        if isinstance(s, Unknown):
            judge.unknown_value(s, what)
        else:
            yield s


def judge_open_to_anyone(raw: Any, what: str, judge: Judge, consequence: str) -> None:
    """A violation for each statement of a resource policy that lets Principal "*" in with no condition that
    limits the caller; `consequence` says what that means for this resource and what to do."""
    for s in document_statements(raw, what, judge):
        opened = v.open_to_anyone(s)
        if isinstance(opened, Unknown):
            judge.unknown_value(opened, f"{what} {s.where}")
        elif opened:
            actions = ", ".join(map(str, s.action)) if isinstance(s.action, tuple) else "every action but NotAction"
            judge.violation(f"{what} {s.where} allows {actions} to Principal \"*\" with no condition that limits "
                            f"the caller's organisation, account or network: {consequence}")
