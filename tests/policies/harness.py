"""Run one policy of the pack the way pulumi_policy's analyzer does, and collect its verdict."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

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
