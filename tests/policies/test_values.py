"""The readings every rule relies on: world ranges, ports, protocols, unknowns behind pulumi_policy's proxy."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pulumi_policy.proxy import UNKNOWN_ARRAY_VALUE, UNKNOWN_STRING_VALUE, unknown_checking_proxy

from policies.rules import values as v


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
