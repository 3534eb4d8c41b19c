"""Run one policy of the pack the way pulumi_policy's analyzer does, and collect its verdict."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pulumi_policy import (
    Policy,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UnknownValueError, unknown_checking_proxy

from policies.rules import build_policies

POLICIES: dict[str, Policy] = {p.name: p for p in build_policies()}
OPTIONS = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])


@dataclass
class Verdict:
    messages: list[str] = field(default_factory=list)
    urns: list[str | None] = field(default_factory=list)
    cannot_verify: str | None = None

    @property
    def kind(self) -> str:
        if self.messages:
            return "violation"
        return "unknown" if self.cannot_verify else "pass"


def urn(type_: str, name: str) -> str:
    return f"urn:pulumi:test::servestack::{type_}::{name}"


def check_resource(policy: str, type_: str, props: Mapping[str, Any], config: Mapping[str, Any] | None = None,
                   name: str = "subject") -> Verdict:
    rule = POLICIES[policy]
    assert isinstance(rule, ResourceValidationPolicy)
    verdict = Verdict()
    args = ResourceValidationArgs(type_, unknown_checking_proxy(copy.deepcopy(dict(props))), urn(type_, name),
                                  name, OPTIONS, None, config)

    def report(message: str, at: str | None = None) -> None:
        verdict.messages.append(message)
        verdict.urns.append(at)

    try:
        rule.validate(args, report)
    except UnknownValueError as e:
        verdict.cannot_verify = e.message
    return verdict


def stack_resource(type_: str, name: str, props: Mapping[str, Any], deps: Sequence[PolicyResource] = (),
                   property_deps: Mapping[str, Sequence[PolicyResource]] | None = None) -> PolicyResource:
    return PolicyResource(type_, unknown_checking_proxy(copy.deepcopy(dict(props))), urn(type_, name), name,
                          OPTIONS, None, None, list(deps),
                          {k: list(v) for k, v in (property_deps or {}).items()})


def check_stack(policy: str, resources: list[PolicyResource], config: Mapping[str, Any] | None = None) -> Verdict:
    rule = POLICIES[policy]
    assert isinstance(rule, StackValidationPolicy)
    verdict = Verdict()

    def report(message: str, at: str | None = None) -> None:
        verdict.messages.append(message)
        verdict.urns.append(at)

    try:
        rule.validate(StackValidationArgs(resources, config), report)
    except UnknownValueError as e:
        verdict.cannot_verify = e.message
    return verdict


class Case(NamedTuple):
    """One hostile case: a minimal resource and the verdict one policy must reach on it."""

    id: str
    policy: str
    type: str
    props: dict[str, Any]
    expect: str  # "violation", "pass" or "unknown" (reported as cannot verify)
    snippet: str = ""  # a part the violation message must contain
    config: dict[str, Any] | None = None


def assert_case(case: Case) -> None:
    verdict = check_resource(case.policy, case.type, case.props, case.config)
    assert verdict.kind == case.expect, (verdict.messages, verdict.cannot_verify)
    if case.expect == "violation" and case.snippet:
        assert any(case.snippet in m for m in verdict.messages), verdict.messages
    if case.expect == "unknown":
        assert verdict.cannot_verify is not None and verdict.cannot_verify.startswith("cannot verify")
        if case.snippet:
            assert case.snippet in verdict.cannot_verify, verdict.cannot_verify


class StackCase(NamedTuple):
    """One hostile case of a stack rule: the resources of a minimal stack and the verdict the rule must reach."""

    id: str
    resources: Callable[[], list[PolicyResource]]
    expect: str
    snippet: str = ""
    config: dict[str, Any] | None = None


def assert_stack_case(policy: str, case: StackCase) -> None:
    verdict = check_stack(policy, case.resources(), case.config)
    assert verdict.kind == case.expect, (verdict.messages, verdict.cannot_verify)
    if case.snippet:
        found = verdict.messages if case.expect == "violation" else [verdict.cannot_verify or ""]
        assert any(case.snippet in m for m in found), found
