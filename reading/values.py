"""Exact readings of the values that firewall, cluster, workload and identity rules are written with.

Everything here is pure: addresses, ports and protocols in every spelling the three clouds accept; AWS
IAM policy documents (JSON text or objects, statements as a list or one object, element names in any
case) and their conditions; and resource inputs turned into plain Python values in which a value
unknown during preview becomes an `Unknown` marker instead of an exception, so that a rule can still
judge everything it does know.
"""

from __future__ import annotations

import ipaddress
import json
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


# --- names and wildcards -----------------------------------------------------------------------------


def wildcard_only(text: str) -> bool:
    """True for a pattern that matches every name: "*", "**", "?*" (at least one "*", nothing but "*" and "?")."""
    text = text.strip()
    return bool(text) and "*" in text and set(text) <= {"*", "?"}


def has_wildcard(text: str) -> bool:
    return "*" in text or "?" in text


def folded(text: str) -> str:
    """A name compared without case and without inner spacing: " User  Access Administrator " -> "user access
    administrator"."""
    return " ".join(text.split()).lower()


# --- IAM policy documents (AWS identity, trust and resource policies) --------------------------------

Items = tuple[Any, ...]  # an element's values as written: strings, and `Unknown` where one is unknown during preview

# What an Allow statement's principal can say, normalised: ("*", "*") for `"Principal": "*"`, else the
# principal type in lowercase ("aws", "service", "federated", "canonicaluser") and one value.
Principal = tuple[str, Any]


@dataclass(frozen=True)
class Condition:
    """One test of a statement's Condition block: `"StringEquals": {"aws:PrincipalOrgID": "o-1"}`.

    `operator` and `key` are in lowercase. `binding` is False when a request without the key passes the
    test anyway (an `...IfExists` operator, a `ForAllValues:` set operator, `Null`) or when the test
    negates (`StringNotEquals`, `ArnNotLike`, `NotIpAddress`, ...): such a test restricts nobody.
    """

    operator: str
    key: str
    values: Items
    binding: bool


# Operators whose test, when a request lacks the key, fails: the ones that can restrict who gets in.
_BINDING_OPERATORS = frozenset({
    "stringequals", "stringequalsignorecase", "stringlike", "arnequals", "arnlike", "bool", "numericequals",
    "numericlessthan", "numericlessthanequals", "numericgreaterthan", "numericgreaterthanequals", "dateequals",
    "datelessthan", "datelessthanequals", "dategreaterthan", "dategreaterthanequals", "ipaddress", "binaryequals",
})
# Operators that read "*" and "?" in a value as wildcards (StringEquals reads them as characters).
WILDCARD_OPERATORS = frozenset({"stringlike", "arnlike", "arnequals"})


@dataclass(frozen=True)
class Statement:
    """One statement of a policy document, each element as written (None where the statement leaves it out)."""

    where: str
    effect: str | Unknown  # "allow" or "deny" in lowercase, or what else the statement says
    action: Items | Unknown | None
    not_action: Items | Unknown | None
    resource: Items | Unknown | None
    not_resource: Items | Unknown | None
    principal: tuple[Principal, ...] | Unknown | None
    not_principal: tuple[Principal, ...] | Unknown | None
    conditions: tuple[Condition, ...] | Unknown

    @property
    def allows(self) -> bool | Unknown:
        return self.effect if isinstance(self.effect, Unknown) else self.effect == "allow"


def key_of(mapping: Mapping[str, Any], name: str) -> Any:
    """`mapping[name]`, matching the key in any case when no key is spelled exactly so."""
    if name in mapping:
        return mapping[name]
    lower = name.lower()
    return next((value for key, value in mapping.items() if str(key).lower() == lower), None)


def _items(value: Any) -> Items | Unknown | None:
    if value is None or isinstance(value, Unknown):
        return value
    values = value if isinstance(value, list) else [value]
    return tuple(item if isinstance(item, Unknown) else str(item) for item in values)


def _principals(value: Any) -> tuple[Principal, ...] | Unknown | None:
    if value is None or isinstance(value, Unknown):
        return value
    if isinstance(value, dict):
        found: list[Principal] = []
        for kind, names in value.items():
            found.extend((str(kind).strip().lower(), name) for name in items(names))
        return tuple(found)
    return tuple(("*", "*") if isinstance(p, str) and p.strip() == "*" else ("aws", p) for p in items(value))


def _scalar(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value if isinstance(value, Unknown) else str(value)


def _conditions(value: Any, where: str) -> tuple[Condition, ...] | Unknown:
    if value is None:
        return ()
    if isinstance(value, Unknown):
        return value
    if not isinstance(value, dict):
        raise BadValue(f"{where}.Condition is not an object")
    found: list[Condition] = []
    for raw_operator, tests in value.items():
        if isinstance(tests, Unknown):
            return tests
        operator = str(raw_operator).strip().lower()
        qualifier, _, operator = operator.rpartition(":")
        if_exists = operator.endswith("ifexists")
        operator = operator.removesuffix("ifexists")
        binding = operator in _BINDING_OPERATORS and not if_exists and qualifier != "forallvalues"
        for key, values in (tests.items() if isinstance(tests, dict) else ()):
            found.append(Condition(operator, str(key).strip().lower(),
                                   tuple(_scalar(x) for x in items(values)), binding))
    return tuple(found)


def policy_document(value: Any, what: str) -> list[Statement | Unknown]:
    """The statements of an IAM policy document, given as JSON text or as an object.

    The Statement element may be a list or one object; element names are read in any case. A document that
    is unknown during preview comes back as one `Unknown`; text that is not a policy document raises BadValue.
    """
    if isinstance(value, Unknown):
        return [value]
    if value is None or (isinstance(value, str) and not value.strip()):
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as e:
            raise BadValue(f"{what} is not JSON ({e})") from e
    if not isinstance(value, dict):
        raise BadValue(f"{what} is not a policy document (a JSON object with a Statement)")
    raw = key_of(value, "Statement")
    if isinstance(raw, Unknown):
        return [raw]
    single = isinstance(raw, dict)
    found: list[Statement | Unknown] = []
    for i, entry in enumerate(items(raw)):
        where = "Statement" if single else f"Statement[{i}]"
        if isinstance(entry, Unknown):
            found.append(entry)
            continue
        if not isinstance(entry, dict):
            raise BadValue(f"{what} {where} is not an object")
        sid = key_of(entry, "Sid")
        if isinstance(sid, str) and sid:
            where += f" ({sid})"
        effect = key_of(entry, "Effect")
        found.append(Statement(
            where=where,
            effect=effect if isinstance(effect, Unknown) else str(effect or "").strip().lower(),
            action=_items(key_of(entry, "Action")),
            not_action=_items(key_of(entry, "NotAction")),
            resource=_items(key_of(entry, "Resource")),
            not_resource=_items(key_of(entry, "NotResource")),
            principal=_principals(key_of(entry, "Principal")),
            not_principal=_principals(key_of(entry, "NotPrincipal")),
            conditions=_conditions(key_of(entry, "Condition"), where),
        ))
    return found


def action_scope(action: str) -> str | None:
    """What an Action pattern grants when it covers a whole service or more, else None.

    "*", "*:*", "?*" -> every action of every service; "s3:*", "S3:?*" -> every action of s3;
    "s*:*" -> every action of every service matching s*. "s3:Get*" and "iam:PassRole" are not service-wide.
    """
    text = action.strip()
    if wildcard_only(text):
        return "every action of every service"
    service, sep, name = text.partition(":")
    if not sep or not wildcard_only(name):
        return None
    if wildcard_only(service):
        return "every action of every service"
    if has_wildcard(service):
        return f"every action of every service matching {service.lower()}"
    return f"every action of {service.lower()}"


def every_resource(resource: str) -> bool:
    """Whether a Resource pattern matches every resource ("*") or every resource of a service
    ("arn:aws:s3:::*", "arn:aws:iam::123456789012:*", "arn:*:*:*:*:*")."""
    text = resource.strip()
    if wildcard_only(text):
        return True
    parts = text.split(":", 5)
    return len(parts) == 6 and parts[0].lower() == "arn" and wildcard_only(parts[5])


def condition_restricts(conditions: tuple[Condition, ...], keys: Iterable[str],
                        accept: Any = None) -> bool | Unknown:
    """Whether a binding test on one of `keys` (lowercase; a key ending in "/" is a prefix) limits who passes.

    A test limits when it binds (see `Condition`) and none of its values matches everything (a StringLike "*").
    `accept(condition)` may refuse more tests. A candidate test with a value unknown during preview makes the
    answer unknown unless another test already limits.
    """
    wanted = tuple(keys)
    unknown: Unknown | None = None
    for c in conditions:
        if not c.binding or not any(c.key == k or (k.endswith("/") and c.key.startswith(k)) for k in wanted):
            continue
        if not c.values:
            continue
        pending = next((x for x in c.values if isinstance(x, Unknown)), None)
        if pending is not None:
            unknown = unknown or pending
            continue
        if c.operator in WILDCARD_OPERATORS and any(wildcard_only(x) for x in c.values):
            continue
        if accept is not None and not accept(c):
            continue
        return True
    return unknown if unknown is not None else False


def anyone(principal: Principal) -> bool:
    """A principal that names everybody: "*", {"AWS": "*"} or a wildcard in an AWS principal."""
    kind, name = principal
    return kind == "*" or (kind == "aws" and isinstance(name, str) and has_wildcard(name))


# Condition keys that limit a statement open to "*" to one organisation, account, principal, network or
# calling service: what makes a resource policy with Principal "*" private.
SCOPING_KEYS = (
    "aws:principalorgid", "aws:principalorgpaths", "aws:principalaccount", "aws:principalarn", "aws:userid",
    "aws:sourceaccount", "aws:sourcearn", "aws:sourceorgid", "aws:sourceorgpaths", "aws:sourcevpc",
    "aws:sourcevpce", "aws:sourceip", "aws:resourceorgid", "aws:principalservicename",
)


def _not_world_ip(c: Condition) -> bool:
    """An aws:SourceIp test limits only when its ranges do not add up to the whole internet."""
    if c.key != "aws:sourceip":
        return True
    try:
        return world_sources(list(c.values)) is False
    except BadValue:
        return False


def open_to_anyone(statement: Statement) -> bool | Unknown:
    """Whether an Allow statement of a resource policy lets anybody in: Principal "*" (or a NotPrincipal,
    which means everybody else) without a condition that limits the caller's organisation, account,
    principal, network or calling service."""
    allow = statement.allows
    if allow is False:
        return False
    principals, excluded = statement.principal, statement.not_principal
    if isinstance(principals, Unknown):
        return principals
    if isinstance(excluded, Unknown):
        return excluded
    everybody: bool | Unknown = True
    if excluded is None:
        found = principals or ()
        pending = next((name for _, name in found if isinstance(name, Unknown)), None)
        everybody = any(anyone(p) for p in found) or (pending if pending is not None else False)
    if everybody is False:
        return False
    conditions = statement.conditions
    if isinstance(conditions, Unknown):
        return conditions
    limited = condition_restricts(conditions, SCOPING_KEYS, accept=_not_world_ip)
    if limited is True:
        return False
    for part in (allow, everybody, limited):
        if isinstance(part, Unknown):
            return part
    return True
