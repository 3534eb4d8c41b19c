"""The readings every rule relies on: world ranges, ports, protocols, unknowns behind pulumi_policy's proxy."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pulumi_policy.proxy import UNKNOWN_ARRAY_VALUE, UNKNOWN_STRING_VALUE, unknown_checking_proxy

from reading import values as v


@pytest.mark.parametrize("sources", [
    ["0.0.0.0/0"], ["::/0"], ["::0/0"], ["1.2.3.4/0"], ["2001:db8::1/0"],
    ["0.0.0.0/1", "128.0.0.0/1"], ["10.0.0.0/8", "0.0.0.0/2", "64.0.0.0/2", "128.0.0.0/1"],
    ["::/1", "8000::/1"],
], ids=str)
def test_world(sources: list[str]) -> None:
    assert v.world_sources(sources) is True


@pytest.mark.parametrize("sources", [
    [], ["10.0.0.0/8"], ["0.0.0.0/1"], ["0.0.0.0/1", "::/1"], ["203.0.113.7"], ["2001:db8::/32"],
], ids=str)
def test_not_world(sources: list[str]) -> None:
    assert v.world_sources(sources) is False


@pytest.mark.parametrize(("sources", "world"), [
    (["Internet"], True), (["*"], True), (["any"], True), (["VirtualNetwork"], False),
    (["AzureLoadBalancer", "10.0.0.0/8"], False), (["Storage.EastUS"], False),
], ids=str)
def test_azure_tags(sources: list[str], world: bool) -> None:
    assert v.world_sources(sources, azure=True) is world


def test_unknown_source_is_unknown_unless_the_rest_is_already_world() -> None:
    assert isinstance(v.world_sources([v.Unknown("cidrBlocks[0]"), "10.0.0.0/8"]), v.Unknown)
    assert v.world_sources([v.Unknown("cidrBlocks[0]"), "0.0.0.0/0"]) is True


def test_bad_cidr_is_a_bad_value() -> None:
    with pytest.raises(v.BadValue, match=re.escape("'10.0.0/33' is not a CIDR block")):
        v.world_sources(["10.0.0/33"])


@pytest.mark.parametrize(("spec", "ranges"), [
    (22, ((22, 22),)), (22.0, ((22, 22),)), ("22", ((22, 22),)), (" 22 ", ((22, 22),)),
    ("20-25", ((20, 25),)), ("*", v.ALL_PORTS), ("0-65535", ((0, 65535),)),
], ids=str)
def test_port_range(spec: Any, ranges: v.PortRanges) -> None:
    assert v.port_range(spec) == ranges


@pytest.mark.parametrize("spec", ["ssh", "25-20", 22.5, True, "1-x"], ids=str)
def test_bad_port(spec: Any) -> None:
    with pytest.raises(v.BadValue):
        v.port_range(spec)


def test_from_to() -> None:
    assert v.from_to(-1.0, -1.0) == v.ALL_PORTS
    assert v.from_to(None, None) == v.ALL_PORTS
    assert v.from_to("80", 80.0) == ((80, 80),)
    assert v.covers_all_ports(((0, 1000), (1001, 65535)))
    assert v.covers_all_ports(((1, 65535),))
    assert not v.covers_all_ports(((0, 1000), (1002, 65535)))
    assert v.outside(((1, 1000),), ((443, 443),)) == ((1, 442), (444, 1000))


@pytest.mark.parametrize(("raw", "name"), [
    ("-1", "all"), (-1.0, "all"), ("ALL", "all"), ("*", "all"), ("Any", "all"), ("TCP", "tcp"), ("6", "tcp"),
    (6.0, "tcp"), ("17", "udp"), ("Icmp", "icmp"), ("58", "icmpv6"), ("47", "47"), ("esp", "esp"),
], ids=str)
def test_protocol(raw: Any, name: str) -> None:
    assert v.protocol(raw) == name


def test_plain_reads_through_the_proxy_and_marks_unknowns() -> None:
    props = unknown_checking_proxy({"a": {"b": [1.0, UNKNOWN_STRING_VALUE]}, "c": UNKNOWN_ARRAY_VALUE})
    assert v.plain(props) == {"a": {"b": [1.0, v.Unknown("a.b[1]")]}, "c": v.Unknown("c")}


# --- IAM policy documents ----------------------------------------------------------------------------


def test_policy_document_as_text_or_object_one_statement_or_a_list_any_case() -> None:
    text = '{"Version": "2012-10-17", "Statement": {"Sid": "All", "Effect": "Allow", "Action": "*", "Resource": "*"}}'
    (one,) = v.policy_document(text, "policy")
    assert isinstance(one, v.Statement)
    assert (one.where, one.effect, one.action, one.resource) == ("Statement (All)", "allow", ("*",), ("*",))
    (lower,) = v.policy_document({"statement": [{"effect": "DENY", "notaction": ["s3:*"], "notresource": "x"}]}, "p")
    assert isinstance(lower, v.Statement)
    assert (lower.where, lower.allows, lower.not_action, lower.not_resource) == (
        "Statement[0]", False, ("s3:*",), ("x",))


def test_policy_document_principals_and_conditions() -> None:
    (s,) = v.policy_document({"Statement": [{
        "Effect": "Allow",
        "Principal": {"AWS": ["*", "arn:aws:iam::210987654321:root"], "Service": "ec2.amazonaws.com"},
        "Condition": {"StringEqualsIfExists": {"aws:PrincipalOrgID": "o-1"},
                      "ForAllValues:StringEquals": {"aws:TagKeys": ["a"]},
                      "ForAnyValue:StringLike": {"aws:PrincipalArn": ["arn:aws:iam::1:role/x"]},
                      "Bool": {"aws:SecureTransport": True}, "StringNotEquals": {"aws:SourceVpce": "vpce-1"}}}]}, "p")
    assert isinstance(s, v.Statement)
    assert s.principal == (("aws", "*"), ("aws", "arn:aws:iam::210987654321:root"), ("service", "ec2.amazonaws.com"))
    assert isinstance(s.conditions, tuple)
    binding = {(c.operator, c.key): c.binding for c in s.conditions}
    assert binding == {("stringequals", "aws:principalorgid"): False, ("stringequals", "aws:tagkeys"): False,
                       ("stringlike", "aws:principalarn"): True, ("bool", "aws:securetransport"): True,
                       ("stringnotequals", "aws:sourcevpce"): False}
    assert next(c for c in s.conditions if c.key == "aws:securetransport").values == ("true",)
    (star,) = v.policy_document('{"Statement": [{"Effect": "Allow", "Principal": "*"}]}', "p")
    assert isinstance(star, v.Statement) and star.principal == (("*", "*"),)


def test_policy_document_unknowns_and_bad_text() -> None:
    assert v.policy_document(v.Unknown("policy"), "policy") == [v.Unknown("policy")]
    (s,) = v.policy_document({"Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", v.Unknown("a")]}]}, "p")
    assert isinstance(s, v.Statement) and s.action == ("s3:GetObject", v.Unknown("a"))
    with pytest.raises(v.BadValue, match="policy is not JSON"):
        v.policy_document("{not json", "policy")
    with pytest.raises(v.BadValue, match="not a policy document"):
        v.policy_document("[1, 2]", "policy")
    assert v.policy_document("", "policy") == []


@pytest.mark.parametrize(("action", "scope"), [
    ("*", "every action of every service"), ("*:*", "every action of every service"),
    ("?*", "every action of every service"), ("s3:*", "every action of s3"), ("S3:?*", "every action of s3"),
    ("s*:*", "every action of every service matching s*"), ("iam:**", "every action of iam"),
    ("s3:Get*", None), ("iam:PassRole", None), ("s3:?", None),
], ids=str)
def test_action_scope(action: str, scope: str | None) -> None:
    assert v.action_scope(action) == scope


@pytest.mark.parametrize(("resource", "every"), [
    ("*", True), ("arn:aws:s3:::*", True), ("arn:aws:iam::123456789012:*", True), ("arn:*:*:*:*:*", True),
    ("arn:aws:s3:::models", False), ("arn:aws:s3:::models/*", False), ("arn:aws:s3:::model-*", False),
], ids=str)
def test_every_resource(resource: str, every: bool) -> None:
    assert v.every_resource(resource) is every


def _statement(condition: dict[str, Any], principal: Any = "*") -> v.Statement:
    (s,) = v.policy_document({"Statement": {"Effect": "Allow", "Principal": principal, "Action": "s3:GetObject",
                                            "Condition": condition}}, "p")
    assert isinstance(s, v.Statement)
    return s


@pytest.mark.parametrize(("condition", "opened"), [
    ({}, True),
    ({"StringEquals": {"aws:PrincipalOrgID": "o-abc"}}, False),
    ({"stringequals": {"AWS:SOURCEVPCE": ["vpce-1"]}}, False),
    ({"StringEqualsIfExists": {"aws:PrincipalOrgID": "o-abc"}}, True),
    ({"ForAllValues:StringEquals": {"aws:PrincipalOrgID": "o-abc"}}, True),
    ({"StringNotEquals": {"aws:PrincipalOrgID": "o-abc"}}, True),
    ({"StringLike": {"aws:PrincipalArn": "*"}}, True),
    ({"Null": {"aws:PrincipalOrgID": "false"}}, True),
    ({"IpAddress": {"aws:SourceIp": ["203.0.113.0/24"]}}, False),
    ({"IpAddress": {"aws:SourceIp": ["0.0.0.0/1", "128.0.0.0/1"]}}, True),
    ({"Bool": {"aws:SecureTransport": "true"}}, True),
    ({"StringEquals": {"aws:PrincipalOrgID": v.Unknown("org")}}, v.Unknown("org")),
], ids=str)
def test_open_to_anyone(condition: dict[str, Any], opened: Any) -> None:
    assert v.open_to_anyone(_statement(condition)) == opened


def test_open_to_anyone_principals() -> None:
    assert v.open_to_anyone(_statement({}, {"AWS": "*"})) is True
    assert v.open_to_anyone(_statement({}, {"AWS": ["arn:aws:iam::210987654321:root"]})) is False
    (excluded,) = v.policy_document({"Statement": {"Effect": "Allow", "NotPrincipal": {"AWS": "arn:aws:iam::1:root"},
                                                   "Action": "s3:GetObject"}}, "p")
    assert isinstance(excluded, v.Statement) and v.open_to_anyone(excluded) is True
    (deny,) = v.policy_document({"Statement": {"Effect": "Deny", "Principal": "*", "Action": "s3:*"}}, "p")
    assert isinstance(deny, v.Statement) and v.open_to_anyone(deny) is False
