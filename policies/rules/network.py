"""Firewall rules: every way AWS, GCP and Azure write an ingress rule, read into one shape.

`openings(resource)` turns a security group, a standalone rule, a GCP firewall or an Azure NSG rule
into `Opening`s: one per allow-ingress entry that is in force, with its protocol, its ports and
whether its sources add up to the whole internet. Deny rules, egress rules and disabled rules open
nothing and yield nothing. The four network rules are then small tests over openings.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from pulumi_policy import EnforcementLevel, Severity

from policies.rules.common import Judge, Rule
from reading import values as v
from reading.resources import Resource
from reading.values import ALL, ICMP_PROTOCOLS, PORT_PROTOCOLS, BadValue, PortRanges, Unknown

AWS_SG = "aws:ec2/securityGroup:SecurityGroup"
AWS_DEFAULT_SG = "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup"
AWS_SG_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
AWS_VPC_INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
AWS_VPC_EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
AWS_NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
GCP_FIREWALL = "gcp:compute/firewall:Firewall"
# Firewall policy rules: global and regional network policies, and hierarchical (folder, organization) ones.
GCP_POLICY_RULES = frozenset({
    "gcp:compute/networkFirewallPolicyRule:NetworkFirewallPolicyRule",
    "gcp:compute/regionNetworkFirewallPolicyRule:RegionNetworkFirewallPolicyRule",
    "gcp:compute/firewallPolicyRule:FirewallPolicyRule",
})
# Other sources a policy rule can match on; each is a bounded set of addresses, not the world.
GCP_POLICY_OTHER_SOURCES = ("srcAddressGroups", "srcFqdns", "srcRegionCodes", "srcThreatIntelligences",
                            "srcSecureTags", "srcNetworks")
AZURE_NSG = "azure-native:network:NetworkSecurityGroup"
AZURE_RULE = "azure-native:network:SecurityRule"
FIREWALL_TYPES = frozenset({AWS_SG, AWS_DEFAULT_SG, AWS_SG_RULE, AWS_VPC_INGRESS, AWS_NODE_GROUP,
                            GCP_FIREWALL, AZURE_NSG, AZURE_RULE, *GCP_POLICY_RULES})

ADMIN_PORTS = ["22", "3389", "5985-5986", "2375-2376", "6443", "10250"]
# Databases, caches, coordination and ML tooling that must never face the internet.
DATA_PORTS = [
    "1433", "1521", "3306", "5432", "27017-27019", "9042", "5984", "11211",  # SQL Server .. memcached
    "6379-6380", "9200", "9300",  # Redis, Elasticsearch / OpenSearch
    "2379-2380",  # etcd
    "8265", "10001", "52365",  # Ray: dashboard, client, agent (its GCS uses 6379)
    "8888",  # Jupyter
    "6006",  # TensorBoard
    "8000-8002",  # Triton HTTP, gRPC, metrics
    "5000",  # MLflow tracking
]


@dataclass(frozen=True)
class Opening:
    """One allow-ingress entry in force. `ports` is None for protocols without ports (ICMP, GRE, ...).

    `networks` are the entry's source CIDR blocks when it is surely in force, for `_together`.
    """

    where: str
    protocol: str | Unknown
    ports: PortRanges | Unknown | None
    world: bool | Unknown
    sources: str
    problem: str | None = None
    networks: tuple[v.Network, ...] = ()


def _problem(where: str, message: str) -> Opening:
    return Opening(where, ALL, v.ALL_PORTS, Unknown(where), "", problem=message)


def _ports_for(proto: str | Unknown, ranges: Callable[[], PortRanges | Unknown],
               all_keeps_ports: bool = False) -> PortRanges | Unknown | None:
    """The ports an entry opens. AWS and GCP ignore ports for "all protocols"; Azure's "*" keeps them."""
    if isinstance(proto, Unknown):
        return proto
    if proto == ALL:
        return ranges() if all_keeps_ports else v.ALL_PORTS
    if proto in PORT_PROTOCOLS:
        return ranges()
    return None  # ICMP types and codes, GRE, ESP, ... are not ports


def _proto(raw: Any) -> str | Unknown:
    return raw if isinstance(raw, Unknown) else v.protocol(raw)


def _union(specs: list[Any]) -> PortRanges | Unknown:
    """Port specs ("22", "20-25", 443.0, "*") as ranges; no spec at all means every port."""
    unknown = next((s for s in specs if isinstance(s, Unknown)), None)
    if unknown is not None:
        return unknown
    return tuple(r for s in specs for r in v.port_range(s)) if specs else v.ALL_PORTS


def _from_to(from_port: Any, to_port: Any) -> PortRanges | Unknown:
    for port in (from_port, to_port):
        if isinstance(port, Unknown):
            return port
    return v.from_to(from_port, to_port)


def _sources_text(sources: list[Any]) -> str:
    return ", ".join(str(s) for s in sources if s not in (None, ""))


def _active(*conditions: bool | Unknown, world: bool | Unknown) -> bool | Unknown:
    """Combine "is this entry in force" with "is it world-open": False wins, then Unknown."""
    for condition in conditions:
        if condition is False:
            return False
    if world is False:
        return False
    for condition in (*conditions, world):
        if isinstance(condition, Unknown):
            return condition
    return True


def _aws_entry(where: str, entry: dict[str, Any], proto_key: str, source_keys: tuple[str, ...],
               in_force: bool | Unknown = True) -> Opening:
    try:
        proto = _proto(entry.get(proto_key))
        ports = _ports_for(proto, partial(_from_to, entry.get("fromPort"), entry.get("toPort")))
        sources = [s for key in source_keys for s in v.items(entry.get(key))]
        world = v.world_sources(sources)
    except BadValue as e:
        return _problem(where, str(e))
    return Opening(where, proto, ports, _active(in_force, world=world), _sources_text(sources),
                   networks=v.source_networks(sources) if in_force is True else ())


def _aws_group(resource: Resource) -> Iterator[Opening]:
    for i, entry in enumerate(v.items(resource.props.get("ingress"))):
        where = f"ingress[{i}]"
        if isinstance(entry, Unknown):
            yield _problem(where, str(entry))
        elif isinstance(entry, dict):
            yield _aws_entry(where, entry, "protocol", ("cidrBlocks", "ipv6CidrBlocks"))


def _aws_rule(resource: Resource) -> Iterator[Opening]:
    kind = resource.props.get("type")
    ingress: bool | Unknown = kind if isinstance(kind, Unknown) else str(kind).lower() == "ingress"
    yield _aws_entry("rule", resource.props, "protocol", ("cidrBlocks", "ipv6CidrBlocks"), ingress)


def _aws_vpc_rule(resource: Resource) -> Iterator[Opening]:
    yield _aws_entry("rule", resource.props, "ipProtocol", ("cidrIpv4", "cidrIpv6"))


def _aws_node_group(resource: Resource) -> Iterator[Opening]:
    remote = resource.props.get("remoteAccess")
    if isinstance(remote, Unknown):
        yield _problem("remoteAccess", str(remote))
    elif isinstance(remote, dict) and remote.get("ec2SshKey") is not None:
        groups = v.items(remote.get("sourceSecurityGroupIds"))
        if not groups:
            # EKS opens SSH to 0.0.0.0/0 when remoteAccess names a key and no source security groups.
            yield Opening("remoteAccess", v.TCP, ((22, 22),), True,
                          "0.0.0.0/0 (EKS default: ec2SshKey without sourceSecurityGroupIds)")


def _gcp_firewall(resource: Resource) -> Iterator[Opening]:
    p = resource.props
    direction = p.get("direction")
    ingress: bool | Unknown = (direction if isinstance(direction, Unknown)
                               else direction is None or str(direction).upper() == "INGRESS")
    disabled = p.get("disabled")
    enabled: bool | Unknown = disabled if isinstance(disabled, Unknown) else not v.truthy(disabled)
    ranges = v.items(p.get("sourceRanges"))
    others = [p.get("sourceTags"), p.get("sourceServiceAccounts")]
    unknown_others = next((o for o in others if isinstance(o, Unknown)), None)
    if not ranges and not any(v.items(o) for o in others if not isinstance(o, Unknown)):
        # GCP applies an ingress rule with no source at all to 0.0.0.0/0; tags or service accounts unknown
        # during preview may turn out empty.
        world: bool | Unknown = True if unknown_others is None else unknown_others
        sources = "no source given (GCP then means 0.0.0.0/0)"
    else:
        try:
            world = v.world_sources(ranges)
        except BadValue as e:
            yield _problem("sourceRanges", str(e))
            return
        sources = _sources_text(ranges)
    for i, allow in enumerate(v.items(p.get("allows"))):
        where = f"allows[{i}]"
        if isinstance(allow, Unknown):
            yield _problem(where, str(allow))
            continue
        if not isinstance(allow, dict):
            continue
        try:
            proto = _proto(allow.get("protocol"))
            ports = _ports_for(proto, partial(_union, v.items(allow.get("ports"))))
        except BadValue as e:
            yield _problem(where, str(e))
            continue
        in_force = ingress is True and enabled is True
        yield Opening(where, proto, ports, _active(ingress, enabled, world=world), sources,
                      networks=v.source_networks(ranges) if in_force else ())


def _gcp_policy_rule(resource: Resource) -> Iterator[Opening]:
    p = resource.props
    action, direction, disabled = p.get("action"), p.get("direction"), p.get("disabled")
    # "apply_security_profile_group" lets traffic through after inspection, so it opens like "allow"
    allow: bool | Unknown = (action if isinstance(action, Unknown)
                             else str(action).lower() in ("allow", "apply_security_profile_group"))
    ingress: bool | Unknown = (direction if isinstance(direction, Unknown)
                               else direction is None or str(direction).upper() == "INGRESS")
    enabled: bool | Unknown = disabled if isinstance(disabled, Unknown) else not v.truthy(disabled)
    match = p.get("match")
    if isinstance(match, Unknown):
        yield _problem("match", str(match))
        return
    match = v.as_dict(match)
    ranges = v.items(match.get("srcIpRanges"))
    if not ranges and not any(v.items(match.get(k)) for k in GCP_POLICY_OTHER_SOURCES):
        if allow is True and ingress is True and enabled is True:
            yield _problem("match", "an ingress rule that names no source")
        return
    try:
        world = v.world_sources(ranges)
    except BadValue as e:
        yield _problem("match.srcIpRanges", str(e))
        return
    in_force = allow is True and ingress is True and enabled is True
    for i, layer4 in enumerate(v.items(match.get("layer4Configs"))):
        where = f"match.layer4Configs[{i}]"
        if isinstance(layer4, Unknown):
            yield _problem(where, str(layer4))
            continue
        if not isinstance(layer4, dict):
            continue
        try:
            proto = _proto(layer4.get("ipProtocol"))
            ports = _ports_for(proto, partial(_union, v.items(layer4.get("ports"))))
        except BadValue as e:
            yield _problem(where, str(e))
            continue
        yield Opening(where, proto, ports, _active(allow, ingress, enabled, world=world), _sources_text(ranges),
                      networks=v.source_networks(ranges) if in_force else ())


def _azure_entry(where: str, rule: dict[str, Any]) -> Opening:
    access, direction = rule.get("access"), rule.get("direction")
    allow: bool | Unknown = access if isinstance(access, Unknown) else str(access).lower() == "allow"
    inbound: bool | Unknown = (direction if isinstance(direction, Unknown)
                               else str(direction).lower() == "inbound")
    sources = v.items(rule.get("sourceAddressPrefix")) + v.items(rule.get("sourceAddressPrefixes"))
    if not sources and not v.items(rule.get("sourceApplicationSecurityGroups")):
        if allow is False or inbound is False:
            return Opening(where, ALL, v.ALL_PORTS, False, "")
        return _problem(where, "no source address prefix or application security group given")
    try:
        proto = _proto(rule.get("protocol"))
        specs = v.items(rule.get("destinationPortRange")) + v.items(rule.get("destinationPortRanges"))
        ports = _ports_for(proto, partial(_union, specs), all_keeps_ports=True)
        world = v.world_sources(sources, azure=True)
    except BadValue as e:
        return _problem(where, str(e))
    return Opening(where, proto, ports, _active(allow, inbound, world=world), _sources_text(sources),
                   networks=v.source_networks(sources) if allow is True and inbound is True else ())


def _azure_nsg(resource: Resource) -> Iterator[Opening]:
    for i, rule in enumerate(v.items(resource.props.get("securityRules"))):
        name = rule.get("name") if isinstance(rule, dict) else None
        where = f"securityRules[{i}]" + (f" ({name})" if isinstance(name, str) else "")
        if isinstance(rule, Unknown):
            yield _problem(where, str(rule))
        elif isinstance(rule, dict):
            yield _azure_entry(where, rule)


def _azure_rule(resource: Resource) -> Iterator[Opening]:
    yield _azure_entry("rule", resource.props)


READERS: dict[str, Callable[[Resource], Iterator[Opening]]] = {
    AWS_SG: _aws_group,
    AWS_DEFAULT_SG: _aws_group,
    AWS_SG_RULE: _aws_rule,
    AWS_VPC_INGRESS: _aws_vpc_rule,
    AWS_NODE_GROUP: _aws_node_group,
    GCP_FIREWALL: _gcp_firewall,
    AZURE_NSG: _azure_nsg,
    AZURE_RULE: _azure_rule,
    **dict.fromkeys(GCP_POLICY_RULES, _gcp_policy_rule),
}


def openings(resource: Resource) -> list[Opening]:
    reader = READERS.get(resource.type)
    return list(reader(resource)) if reader else []


# --- the rules ---------------------------------------------------------------------------------------

# A test looks at a (known) protocol and its ports and says what is wrong with opening them to the world.
Test = Callable[[str, PortRanges | None], str | None]


def _judge_openings(resource: Resource, judge: Judge, test: Test, fix: str) -> None:
    found = openings(resource)
    flagged: set[str] = set()  # protocols an entry already opens wrongly on its own
    for o in found:
        if o.problem is not None:
            judge.unknown(f"{o.where}: {o.problem}")
            continue
        if o.world is False:
            continue
        if isinstance(o.protocol, Unknown) or isinstance(o.ports, Unknown):
            what = o.protocol if isinstance(o.protocol, Unknown) else o.ports
            judge.unknown(f"{o.where}: {what}")
            continue
        wrong = test(o.protocol, o.ports)
        if wrong is None:
            continue
        if o.world is True:
            flagged.add(o.protocol)
            judge.violation(f"{o.where} opens {wrong} to the whole internet (sources: {o.sources}). {fix}")
        else:
            judge.unknown(f"{o.where} would open {wrong} to the internet, and {o.world}")
    for where, proto, ports in _together(found, flagged):
        wrong = test(proto, ports)
        if wrong is not None:
            judge.violation(f"{', '.join(where)} together open {wrong} to the whole internet (their sources and "
                            f"ports add up). {fix}")


@dataclass(frozen=True)
class _Entry:
    """An opening with everything known, for `_together`; `alone` when its own sources are the world."""

    where: str
    protocol: str
    ports: PortRanges  # () for protocols without ports
    alone: bool
    networks: tuple[v.Network, ...]


_WORLD_NETWORKS = (v.parse_network("0.0.0.0/0"), v.parse_network("::/0"))


def _entries(found: list[Opening]) -> list[_Entry]:
    out = []
    for o in found:
        if o.problem is not None or isinstance(o.protocol, Unknown) or isinstance(o.ports, Unknown):
            continue
        if o.world is True:
            out.append(_Entry(o.where, o.protocol, o.ports or (), True, _WORLD_NETWORKS))
        elif o.networks:
            out.append(_Entry(o.where, o.protocol, o.ports or (), False, o.networks))
    return out


def _world_ports(entries: list[_Entry]) -> tuple[PortRanges, list[str]]:
    """The ports on which the sources, summed over the entries that open each port, cover the world."""
    cuts = sorted({p for e in entries for lo, hi in e.ports for p in (lo, hi + 1)})
    found: list[tuple[int, int]] = []
    users: list[str] = []
    for lo, nxt in itertools.pairwise(cuts):
        over = [e for e in entries if any(plo <= lo and nxt - 1 <= phi for plo, phi in e.ports)]
        if over and v.covers_world(n for e in over for n in e.networks):
            if found and found[-1][1] == lo - 1:
                found[-1] = (found[-1][0], nxt - 1)
            else:
                found.append((lo, nxt - 1))
            users.extend(e.where for e in over if e.where not in users)
    return tuple(found), users


def _together(found: list[Opening], flagged: set[str]) -> Iterator[tuple[list[str], str, PortRanges | None]]:
    """What several entries of one resource open to the world together though none does alone.

    The world can be split into halves (0.0.0.0/1 and 128.0.0.0/1) over two entries, or the ports over
    two ranges. Per protocol, this sums the sources of every entry in force that opens a port (an
    any-protocol entry counts for every protocol) and yields the protocol with the ports on which they
    cover the world. Ports that entries already opened to the world alone (`flagged` protocols) and
    ports already yielded for every protocol are left out, so that nothing is reported twice.
    """
    entries = _entries(found)
    every: PortRanges = ()  # what the any-protocol entries open to the world together
    for proto in sorted({e.protocol for e in entries}, key=lambda p: p != ALL):
        mine = [e for e in entries if e.protocol in (proto, ALL)]
        reported = ALL in flagged or proto in flagged
        if proto == ALL or proto in PORT_PROTOCOLS:
            ports, users = _world_ports(mine)
            if proto == ALL:
                every = ports
            else:
                ports = v.outside(ports, every)
            if reported:  # the entries alone were reported; only ports that they open together remain
                ports = v.outside(ports, tuple(r for e in mine if e.alone for r in e.ports))
            if ports:
                yield users, proto, ports
        elif not reported and not every and v.covers_world(n for e in mine for n in e.networks):
            yield [e.where for e in mine], proto, None


def _proto_text(proto: str) -> str:
    return "every protocol" if proto == ALL else proto


def _port_test(ports_of: Callable[[dict[str, Any]], PortRanges], label: str,
               config: dict[str, Any]) -> Test:
    watched = ports_of(config)

    def test(proto: str, ports: PortRanges | None) -> str | None:
        if ports is None or not v.overlaps(ports, watched):
            return None
        hit = tuple((max(lo, wlo), min(hi, whi)) for lo, hi in ports for wlo, whi in watched
                    if lo <= whi and wlo <= hi)
        return f"{label} {v.show_ports(hit)} ({_proto_text(proto)})"

    return test


def _config_ports(config: dict[str, Any], *keys: str) -> PortRanges:
    values: list[Any] = []
    for key in keys:
        values.extend(config.get(key) or [])
    return v.ports_from_config(values)


ADMIN_FIX = ("Limit the sources to your operators' CIDR blocks, or reach the nodes through SSM, IAP or Bastion "
             "instead.")
DATA_FIX = ("Keep databases, caches and ML tools on private addresses; let clients in by security group, network "
            "tag or CIDR.")
ALL_PORTS_FIX = "Open only the ports the service needs, to the sources that need them."


def _admin_test(config: dict[str, Any]) -> Test:
    return _port_test(lambda c: _config_ports(c, "adminPorts", "extraAdminPorts"), "admin port(s)", config)


def _data_test(config: dict[str, Any]) -> Test:
    return _port_test(lambda c: _config_ports(c, "dataPorts", "extraDataPorts"), "data/ML port(s)", config)


def _all_ports_test(proto: str, ports: PortRanges | None) -> str | None:
    if proto == ALL:
        every = ports is None or v.covers_all_ports(ports)
        return "every protocol and port" if every else f"every protocol on port(s) {v.show_ports(ports)}"
    if ports is not None and v.covers_all_ports(ports):
        return f"every {proto} port"
    return None


def check_admin_ports(resource: Resource, config: dict[str, Any], judge: Judge) -> None:
    _judge_openings(resource, judge, _admin_test(config), ADMIN_FIX)


def check_data_ports(resource: Resource, config: dict[str, Any], judge: Judge) -> None:
    _judge_openings(resource, judge, _data_test(config), DATA_FIX)


def check_all_ports(resource: Resource, config: dict[str, Any], judge: Judge) -> None:
    _judge_openings(resource, judge, _all_ports_test, ALL_PORTS_FIX)


def check_public_allowlist(resource: Resource, config: dict[str, Any], judge: Judge) -> None:
    allowed = _config_ports(config, "allowedPublicPorts")

    def test(proto: str, ports: PortRanges | None) -> str | None:
        if proto in ICMP_PROTOCOLS:
            return None  # ICMP carries no service; path MTU discovery needs it
        if ports is None:
            return f"protocol {proto}"
        rest = v.outside(ports, allowed)
        return f"{_proto_text(proto)} port(s) {v.show_ports(rest)}" if rest else None

    _judge_openings(resource, judge, test,
                    f"Only {v.show_ports(allowed)} may face the internet (allowedPublicPorts); restrict the "
                    "sources or put the service behind the load balancer.")


def check_aws_inline_and_standalone(resources: list[Resource], config: dict[str, Any], judge: Judge) -> None:
    groups = {r.urn: r for r in resources if r.type in (AWS_SG, AWS_DEFAULT_SG)}
    inline = {urn for urn, g in groups.items()
              if v.items(g.props.get("ingress")) or v.items(g.props.get("egress"))}
    for rule in resources:
        if rule.type not in (AWS_SG_RULE, AWS_VPC_INGRESS, AWS_VPC_EGRESS):
            continue
        targets = [u for u in rule.property_dependencies.get("securityGroupId", ()) if u in groups]
        if not targets:
            candidates = [u for u in rule.dependencies if u in groups]
            if len(candidates) > 1 and any(u in inline for u in candidates):
                judge.unknown(f"{rule.urn}: depends on several security groups and the one its "
                              "securityGroupId names is not known")
                continue
            targets = candidates
        for urn in targets:
            if urn in inline:
                judge.violation(
                    f"security group {groups[urn].name} has inline ingress/egress rules and standalone rule "
                    f"{rule.name} also manages it; the two fight over the group's rules on every update. "
                    "Move all its rules to standalone rule resources (vpc.SecurityGroupIngressRule/"
                    "EgressRule), or all inline.", urn)


def _rule_target(rule: Resource, groups: set[str]) -> str | None:
    """The security group, NSG or GCP network and targets that a standalone rule resource adds to."""
    p = rule.props
    if rule.type in (AWS_SG_RULE, AWS_VPC_INGRESS):
        urns = [u for u in rule.property_dependencies.get("securityGroupId", ()) if u in groups]
        if not urns:
            urns = [u for u in rule.dependencies if u in groups]
        if len(urns) == 1:
            return urns[0]
        group = p.get("securityGroupId")
        return f"aws:{group}" if isinstance(group, str) and not urns else None
    if rule.type == AZURE_RULE:
        nsg, rg = p.get("networkSecurityGroupName"), p.get("resourceGroupName")
        return f"azure:{rg}/{nsg}" if isinstance(nsg, str) and isinstance(rg, str) else None
    if rule.type == GCP_FIREWALL:
        parts = [p.get("network"), p.get("targetTags"), p.get("targetServiceAccounts")]
        if any(isinstance(x, Unknown) for x in parts) or not isinstance(parts[0], str):
            return None
        tags, accounts = (",".join(sorted(str(t) for t in v.items(x))) for x in parts[1:])
        return f"gcp:{parts[0]}:{tags}:{accounts}"
    return None


def check_split_over_rules(resources: list[Resource], config: dict[str, Any], judge: Judge) -> None:
    """Standalone rules that open the world together: 0.0.0.0/1 in one rule and 128.0.0.0/1 in another."""
    groups = {r.urn for r in resources if r.type in (AWS_SG, AWS_DEFAULT_SG)}
    by_target: dict[str, list[Resource]] = {}
    for r in resources:
        target = _rule_target(r, groups)
        if target is not None:
            by_target.setdefault(target, []).append(r)
    tests = [(_admin_test(config), ADMIN_FIX), (_data_test(config), DATA_FIX), (_all_ports_test, ALL_PORTS_FIX)]
    for members in by_target.values():
        if len(members) < 2:
            continue
        owner: dict[str, Resource] = {}
        found: list[Opening] = []
        for r in members:
            for o in openings(r):
                label = f"{r.name} {o.where}"
                owner[label] = r
                found.append(Opening(label, o.protocol, o.ports, o.world, o.sources, o.problem, o.networks))
        for test, fix in tests:
            flagged = {o.protocol for o in found
                       if o.world is True and o.problem is None and isinstance(o.protocol, str)
                       and not isinstance(o.ports, Unknown) and test(o.protocol, o.ports) is not None}
            for where, proto, ports in _together(found, flagged):
                involved = {owner[w].urn for w in where}
                wrong = test(proto, ports)
                if wrong is None or len(involved) < 2:
                    continue  # one resource alone: its own rule reports it
                judge.violation(f"rules {', '.join(where)} together open {wrong} to the whole internet (their "
                                f"sources and ports add up). {fix}", owner[where[0]].urn)


def _ports_schema(description: str, default: list[str]) -> dict[str, Any]:
    return {"type": "array", "default": default, "description": description,
            "items": {"type": ["integer", "string"], "description": "a port, or a range \"low-high\""}}


NETWORK_RULES = [
    Rule(
        name="no-world-admin-ports",
        description="No firewall rule opens an administration port (SSH, RDP, WinRM, Docker, the Kubernetes "
                    "API, the kubelet) to the whole internet.",
        severity=Severity.CRITICAL,
        enforcement=EnforcementLevel.MANDATORY,
        remediation="Restrict the rule's sources to known CIDR blocks, a security group or a network tag, "
                    "or reach machines through SSM Session Manager, IAP TCP forwarding or Azure Bastion.",
        types=FIREWALL_TYPES,
        check=check_admin_ports,
        config={
            "adminPorts": _ports_schema("Administration ports.", ADMIN_PORTS),
            "extraAdminPorts": _ports_schema("More administration ports, added to adminPorts.", []),
        },
    ),
    Rule(
        name="no-world-all-ports",
        description="No firewall rule opens every protocol or every port to the whole internet.",
        severity=Severity.CRITICAL,
        enforcement=EnforcementLevel.MANDATORY,
        remediation="Name the protocol (tcp/udp) and the ports the service needs; protocol -1, all or * "
                    "opens everything.",
        types=FIREWALL_TYPES,
        check=check_all_ports,
    ),
    Rule(
        name="no-world-data-ports",
        description="No firewall rule opens a database, cache, etcd or ML tool port (Redis, Ray, Jupyter, "
                    "TensorBoard, Triton, MLflow, ...) to the whole internet.",
        severity=Severity.CRITICAL,
        enforcement=EnforcementLevel.MANDATORY,
        remediation="Keep data and ML services on private addresses; admit clients by security group, "
                    "network tag or private CIDR.",
        types=FIREWALL_TYPES,
        check=check_data_ports,
        config={
            "dataPorts": _ports_schema("Data and ML ports.", DATA_PORTS),
            "extraDataPorts": _ports_schema("More data ports, added to dataPorts.", []),
        },
    ),
    Rule(
        name="world-ingress-allowlist",
        description="Traffic from the whole internet reaches only the allow-listed public ports.",
        severity=Severity.HIGH,
        enforcement=EnforcementLevel.ADVISORY,  # the prod stacks' policy config makes it mandatory
        remediation="Serve the public through the load balancer on an allow-listed port (443 by default), "
                    "or restrict the rule's sources.",
        types=FIREWALL_TYPES,
        check=check_public_allowlist,
        config={"allowedPublicPorts": _ports_schema("Ports that may face the internet.", ["443"])},
    ),
    Rule(
        name="aws-sg-inline-xor-standalone",
        description="An AWS security group is managed either by inline ingress/egress blocks or by "
                    "standalone rule resources, never both.",
        severity=Severity.MEDIUM,
        enforcement=EnforcementLevel.MANDATORY,
        remediation="Keep each security group's rules in one place: all standalone "
                    "(vpc.SecurityGroupIngressRule/EgressRule, recommended) or all inline.",
        types=frozenset({AWS_SG, AWS_DEFAULT_SG, AWS_SG_RULE, AWS_VPC_INGRESS, AWS_VPC_EGRESS}),
        check=check_aws_inline_and_standalone,
        stack=True,
    ),
    Rule(
        name="no-world-open-split-over-rules",
        description="Standalone firewall rules on one security group, NSG or GCP network and targets do not "
                    "open an admin, data or every port to the whole internet together (0.0.0.0/1 in one "
                    "rule, 128.0.0.0/1 in another).",
        severity=Severity.CRITICAL,
        enforcement=EnforcementLevel.MANDATORY,
        remediation="Restrict the rules' sources to known CIDR blocks, a security group or a network tag.",
        types=frozenset({AWS_SG_RULE, AWS_VPC_INGRESS, AZURE_RULE, GCP_FIREWALL}),
        check=check_split_over_rules,
        stack=True,
        config={
            "adminPorts": _ports_schema("Administration ports (as for no-world-admin-ports).", ADMIN_PORTS),
            "extraAdminPorts": _ports_schema("More administration ports, added to adminPorts.", []),
            "dataPorts": _ports_schema("Data and ML ports (as for no-world-data-ports).", DATA_PORTS),
            "extraDataPorts": _ports_schema("More data ports, added to dataPorts.", []),
        },
    ),
]
