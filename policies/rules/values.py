"""Exact readings of the values that firewall, cluster and workload rules are written with.

Everything here is pure: addresses, ports and protocols in every spelling the three clouds accept,
and resource inputs turned into plain Python values in which a value unknown during preview becomes
an `Unknown` marker instead of an exception, so that a rule can still judge everything it does know.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pulumi_policy import Secret
from pulumi_policy.proxy import UnknownValueError, _is_unknown

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
PortRanges = tuple[tuple[int, int], ...]

ALL_PORTS: PortRanges = ((0, 65535),)
# Azure writes the whole internet as a service tag; "*" and "Any" mean every address.
AZURE_WORLD_TAGS = frozenset({"*", "internet", "any"})
AZURE_TAG = re.compile(r"^[A-Za-z][A-Za-z0-9.\-]*$")


@dataclass(frozen=True)
class Unknown:
    """A value that cannot be known during preview (it depends on another resource's output)."""

    path: str

    def __str__(self) -> str:
        return f"{self.path or 'the value'} is unknown during preview"


class BadValue(ValueError):
    """A value that no cloud would accept where it stands; rules report it as "cannot verify"."""


# --- plain values ------------------------------------------------------------------------------------


def plain(value: Any, path: str = "") -> Any:
    """Copy resource inputs (pulumi_policy's proxies, or plain dicts) into dicts and lists.

    A value that is unknown during preview becomes `Unknown(path)`; a secret becomes its plain value.
    """
    if isinstance(value, Secret):
        value = value.value
    if isinstance(value, str):
        return Unknown(path) if _is_unknown(value) else value
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key in value:
            sub = f"{path}.{key}" if path else str(key)
            try:
                out[str(key)] = plain(value[key], sub)
            except UnknownValueError:
                out[str(key)] = Unknown(sub)
        return out
    if isinstance(value, Sequence):
        items: list[Any] = []
        for i in range(len(value)):
            try:
                items.append(plain(value[i], f"{path}[{i}]"))
            except UnknownValueError:
                items.append(Unknown(f"{path}[{i}]"))
        return items
    return value


def dig(value: Any, *keys: str | int) -> Any:
    """`value[k1][k2]...`, None where a level is missing, the `Unknown` where a level is unknown."""
    for key in keys:
        if isinstance(value, Unknown) or value is None:
            return value
        if isinstance(key, int):
            value = value[key] if isinstance(value, list) and -len(value) <= key < len(value) else None
        else:
            value = value.get(key) if isinstance(value, dict) else None
    return value


def as_list(value: Any) -> list[Any] | Unknown:
    """A list input, or [] where it is absent; a lone string counts as a one-item list."""
    if value is None:
        return []
    if isinstance(value, Unknown):
        return value
    if isinstance(value, list):
        return value
    return [value]


def items(value: Any) -> list[Any]:
    """A list input whose items may be unknown; a wholly unknown list becomes one unknown item."""
    found = as_list(value)
    return [found] if isinstance(found, Unknown) else found


def as_dict(value: Any) -> dict[str, Any]:
    """An object input, or {} where it is absent or not an object."""
    return value if isinstance(value, dict) else {}


def truthy(value: Any) -> bool | Unknown:
    """A boolean input, also spelled as a string ("true", "True"), as the AWS launch template does."""
    if isinstance(value, Unknown):
        return value
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


# --- addresses ---------------------------------------------------------------------------------------


def parse_network(text: str) -> Network:
    """A CIDR block with a non-strict mask ("10.0.0.1/8" means 10.0.0.0/8); a bare address is /32, /128."""
    try:
        return ipaddress.ip_network(str(text).strip(), strict=False)
    except ValueError as e:
        raise BadValue(f"{text!r} is not a CIDR block") from e


IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def as_ipv4(network: Network) -> Network:
    """An IPv4-mapped IPv6 range (inside ::ffff:0:0/96) read as the IPv4 range it maps.

    Cloud firewalls match IPv4 packets by IPv4 rules, but a dual-stack socket, proxy or load balancer
    sees an IPv4 client as ::ffff:a.b.c.d; counting ::ffff:0:0/96 as all of IPv4 keeps such a rule from
    slipping through as "one IPv6 /96".
    """
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(IPV4_MAPPED):
        low = network.network_address.ipv4_mapped
        assert low is not None
        return ipaddress.IPv4Network((int(low), network.prefixlen - 96))
    return network


def covers_world(networks: Iterable[Network]) -> bool:
    """True when the networks together cover all of IPv4 or all of IPv6 (any /0 does alone).

    IPv4-mapped IPv6 ranges count as the IPv4 ranges they map (`as_ipv4`).
    """
    networks = [as_ipv4(n) for n in networks]
    v4 = [n for n in networks if isinstance(n, ipaddress.IPv4Network)]
    v6 = [n for n in networks if isinstance(n, ipaddress.IPv6Network)]
    world4, world6 = ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")
    return (list(ipaddress.collapse_addresses(v4)) == [world4]
            or list(ipaddress.collapse_addresses(v6)) == [world6])


def source_networks(values: Sequence[Any]) -> tuple[Network, ...]:
    """The CIDR blocks among these sources; tags, unknowns and anything else are left out."""
    out: list[Network] = []
    for value in values:
        if isinstance(value, str) and value.strip():
            try:
                out.append(parse_network(value))
            except BadValue:
                continue
    return tuple(out)


def world_sources(values: Sequence[Any], azure: bool = False) -> bool | Unknown:
    """Whether these source addresses, taken together, let in the whole internet.

    `values` are CIDR strings (and, with `azure`, service tags). A value that is neither a CIDR block
    nor a known tag raises BadValue for AWS and GCP; Azure tags such as VirtualNetwork or
    AzureLoadBalancer are not the world. An unknown item makes the answer unknown unless the known
    items already cover the world.
    """
    networks: list[Network] = []
    unknown: Unknown | None = None
    for value in values:
        if isinstance(value, Unknown):
            unknown = unknown or value
            continue
        if value is None or value == "":
            continue
        text = str(value).strip()
        if azure and text.lower() in AZURE_WORLD_TAGS:
            return True
        try:
            networks.append(parse_network(text))
        except BadValue:
            if azure and AZURE_TAG.match(text):
                continue  # another service tag (VirtualNetwork, Storage.EastUS): a bounded set of addresses
            raise
    if covers_world(networks):
        return True
    return unknown if unknown is not None else False


# --- ports -------------------------------------------------------------------------------------------


def port_number(value: Any) -> int:
    """A port given as an int, an integral float (22.0) or a string ("22")."""
    if isinstance(value, bool):
        raise BadValue(f"{value!r} is not a port")
    if isinstance(value, float):
        if not value.is_integer():
            raise BadValue(f"{value!r} is not a port")
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return port_number(float(value.strip()))
        except ValueError as e:
            raise BadValue(f"{value!r} is not a port") from e
    raise BadValue(f"{value!r} is not a port")


def port_range(value: Any) -> PortRanges:
    """One port spec: 22, 22.0, "22", "20-25", "*" (every port), "0-65535"."""
    if isinstance(value, str):
        text = value.strip()
        if text in ("*", "", "any", "Any"):
            return ALL_PORTS
        if "-" in text and not text.startswith("-"):
            low, _, high = text.partition("-")
            lo, hi = port_number(low), port_number(high)
            if lo > hi:
                raise BadValue(f"{value!r} is not a port range (start above end)")
            return ((lo, hi),)
    port = port_number(value)
    return ((port, port),)


def from_to(from_port: Any, to_port: Any) -> PortRanges:
    """An AWS fromPort/toPort pair; -1 (or both absent) means every port."""
    if from_port is None and to_port is None:
        return ALL_PORTS
    lo = port_number(from_port if from_port is not None else to_port)
    hi = port_number(to_port if to_port is not None else from_port)
    if lo == -1 or hi == -1:
        return ALL_PORTS
    if lo > hi:
        raise BadValue(f"fromPort {lo} is above toPort {hi}")
    return ((lo, hi),)


def overlaps(ports: PortRanges, other: PortRanges) -> bool:
    return any(lo <= ohi and olo <= hi for lo, hi in ports for olo, ohi in other)


def covers_all_ports(ports: PortRanges) -> bool:
    """True when the ranges leave no port from 1 to 65535 closed."""
    next_open = 1
    for lo, hi in sorted(ports):
        if lo > next_open:
            return False
        next_open = max(next_open, hi + 1)
    return next_open > 65535


def outside(ports: PortRanges, allowed: PortRanges) -> PortRanges:
    """The parts of `ports` not inside `allowed`."""
    rest: list[tuple[int, int]] = []
    for lo, hi in ports:
        pieces = [(lo, hi)]
        for alo, ahi in allowed:
            nxt = []
            for plo, phi in pieces:
                if ahi < plo or alo > phi:
                    nxt.append((plo, phi))
                    continue
                if plo < alo:
                    nxt.append((plo, alo - 1))
                if phi > ahi:
                    nxt.append((ahi + 1, phi))
            pieces = nxt
        rest.extend(pieces)
    return tuple(rest)


def show_ports(ports: PortRanges | None) -> str:
    if ports is None or covers_all_ports(ports):
        return "all ports"
    return ", ".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ports)


def ports_from_config(values: Sequence[Any]) -> PortRanges:
    """Ports from a policy's config: numbers or "low-high" strings."""
    out: list[tuple[int, int]] = []
    for value in values:
        out.extend(port_range(value))
    return tuple(out)


# --- protocols ---------------------------------------------------------------------------------------

ALL = "all"
TCP, UDP, ICMP, ICMPV6, SCTP = "tcp", "udp", "icmp", "icmpv6", "sctp"
_NUMBERS = {"-1": ALL, "6": TCP, "17": UDP, "1": ICMP, "58": ICMPV6, "132": SCTP}
_NAMES = {"all": ALL, "*": ALL, "any": ALL, "-1": ALL, "tcp": TCP, "udp": UDP, "icmp": ICMP,
          "icmpv6": ICMPV6, "icmp6": ICMPV6, "ipv6-icmp": ICMPV6, "sctp": SCTP}
PORT_PROTOCOLS = frozenset({TCP, UDP, SCTP})
ICMP_PROTOCOLS = frozenset({ICMP, ICMPV6})


def protocol(value: Any) -> str:
    """A protocol in any spelling: -1, "-1", "all", "*", "Any", "TCP", "6", 6.0 ... -> "all", "tcp", ...

    Protocols without ports come back as their lowercase name or number ("gre", "47", "esp").
    """
    if isinstance(value, bool) or value is None:
        raise BadValue(f"{value!r} is not a protocol")
    if isinstance(value, int | float):
        if isinstance(value, float) and not value.is_integer():
            raise BadValue(f"{value!r} is not a protocol")
        value = str(int(value))
    text = str(value).strip().lower()
    if not text:
        raise BadValue("an empty protocol")
    if text in _NAMES:
        return _NAMES[text]
    if text.lstrip("-").isdigit():
        return _NUMBERS.get(str(int(text)), str(int(text)))
    return text
