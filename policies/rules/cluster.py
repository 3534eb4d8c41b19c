"""Managed Kubernetes: API endpoints, public addresses on nodes, EKS secrets encryption and logs.

An omitted setting is read as what the cloud does when it is omitted: an EKS cluster without
`publicAccessCidrs` is public to 0.0.0.0/0, a GKE cluster without master authorized networks is
public to the world, an AKS cluster without authorized IP ranges is public to the world.
"""

from __future__ import annotations

from typing import Any

from pulumi_policy import EnforcementLevel, Severity

from policies.rules.common import Judge, Rule
from reading import values as v
from reading.resources import Resource
from reading.values import BadValue, Unknown

EKS_CLUSTER = "aws:eks/cluster:Cluster"
EKS_NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
SUBNET = "aws:ec2/subnet:Subnet"
GKE_CLUSTER = "gcp:container/cluster:Cluster"
GKE_NODE_POOL = "gcp:container/nodePool:NodePool"
AKS_CLUSTER = "azure-native:containerservice:ManagedCluster"
AKS_POOL = "azure-native:containerservice:AgentPool"


def _cidr_verdict(cidrs: Any, what: str, judge: Judge, fix: str) -> None:
    """Judge a list of CIDRs that limits who reaches a public endpoint."""
    items = v.as_list(cidrs)
    if isinstance(items, Unknown):
        judge.unknown_value(items, what)
        return
    try:
        world = v.world_sources(items)
    except BadValue as e:
        judge.unknown(f"{what}: {e}")
        return
    if world is True:
        judge.violation(f"{what} {items} lets the whole internet reach the API endpoint. {fix}")
    elif isinstance(world, Unknown):
        judge.unknown_value(world, what)


def _flag(value: Any, default: bool) -> bool | Unknown:
    return default if value is None else v.truthy(value)


def check_endpoint(resource: Resource, config: dict[str, Any], judge: Judge) -> None:
    p = resource.props
    if resource.type == EKS_CLUSTER:
        vpc = p.get("vpcConfig")
        if isinstance(vpc, Unknown):
            judge.unknown_value(vpc, "vpcConfig")
            return
        vpc = vpc if isinstance(vpc, dict) else {}
        public = _flag(vpc.get("endpointPublicAccess"), True)
        if isinstance(public, Unknown):
            judge.unknown_value(public, "vpcConfig.endpointPublicAccess")
        elif public:
            cidrs = vpc.get("publicAccessCidrs")
            if not cidrs:
                judge.violation("vpcConfig.endpointPublicAccess is on (the default) and publicAccessCidrs is "
                                "not set, so EKS opens the API endpoint to 0.0.0.0/0. List the deployer's and "
                                "operators' CIDR blocks in publicAccessCidrs.")
            else:
                _cidr_verdict(cidrs, "vpcConfig.publicAccessCidrs", judge,
                              "List the deployer's and operators' CIDR blocks.")
    elif resource.type == GKE_CLUSTER:
        private = v.dig(p, "privateClusterConfig", "enablePrivateEndpoint")
        ip_endpoint = v.dig(p, "controlPlaneEndpointsConfig", "ipEndpointsConfig", "enabled")
        for value, what in ((private, "privateClusterConfig.enablePrivateEndpoint"),
                            (ip_endpoint, "controlPlaneEndpointsConfig.ipEndpointsConfig.enabled")):
            if isinstance(value, Unknown):
                judge.unknown_value(value, what)
                return
        if v.truthy(private) is True or (ip_endpoint is not None and v.truthy(ip_endpoint) is False):
            return
        networks = p.get("masterAuthorizedNetworksConfig")
        if isinstance(networks, Unknown):
            judge.unknown_value(networks, "masterAuthorizedNetworksConfig")
        elif not isinstance(networks, dict):
            judge.violation("the API endpoint is public and masterAuthorizedNetworksConfig is not set, so "
                            "GKE lets the whole internet reach it. Set privateClusterConfig."
                            "enablePrivateEndpoint=true, or list CIDRs in masterAuthorizedNetworksConfig.")
        else:
            if v.truthy(networks.get("gcpPublicCidrsAccessEnabled")) is True:
                judge.violation("masterAuthorizedNetworksConfig.gcpPublicCidrsAccessEnabled lets every "
                                "Google Cloud public IP reach the API endpoint; set it to false.")
            blocks = networks.get("cidrBlocks")
            if isinstance(blocks, Unknown):
                judge.unknown_value(blocks, "masterAuthorizedNetworksConfig.cidrBlocks")
            else:
                cidrs = [b.get("cidrBlock") if isinstance(b, dict) else b for b in v.items(blocks)]
                _cidr_verdict(cidrs, "masterAuthorizedNetworksConfig.cidrBlocks", judge,
                              "List your operators' CIDR blocks.")
    elif resource.type == AKS_CLUSTER:
        profile = p.get("apiServerAccessProfile")
        if isinstance(profile, Unknown):
            judge.unknown_value(profile, "apiServerAccessProfile")
            return
        profile = profile if isinstance(profile, dict) else {}
        private = _flag(profile.get("enablePrivateCluster"), False)
        if isinstance(private, Unknown):
            judge.unknown_value(private, "apiServerAccessProfile.enablePrivateCluster")
        elif not private:
            ranges = profile.get("authorizedIPRanges")
            if not ranges:
                judge.violation("the API server is public and apiServerAccessProfile.authorizedIPRanges is "
                                "not set, so AKS lets the whole internet reach it. List the deployer's and "
                                "operators' CIDR blocks in authorizedIPRanges.")
            else:
                _cidr_verdict(ranges, "apiServerAccessProfile.authorizedIPRanges", judge,
                              "List the deployer's and operators' CIDR blocks.")


def _public_ip_flag(value: Any, what: str, judge: Judge, fix: str) -> None:
    flag = v.truthy(value) if value is not None else False
    if isinstance(flag, Unknown):
        judge.unknown_value(flag, what)
    elif flag:
        judge.violation(f"{what} is {value!r}: the nodes get public IP addresses. {fix}")


def check_node_public_ips(resource: Resource, config: dict[str, Any], judge: Judge) -> None:
    p = resource.props
    if resource.type == LAUNCH_TEMPLATE:
        interfaces = v.as_list(p.get("networkInterfaces"))
        if isinstance(interfaces, Unknown):
            judge.unknown_value(interfaces, "networkInterfaces")
            return
        for i, nic in enumerate(interfaces):
            if isinstance(nic, Unknown):
                judge.unknown_value(nic, f"networkInterfaces[{i}]")
            elif isinstance(nic, dict):
                _public_ip_flag(nic.get("associatePublicIpAddress"),
                                f"networkInterfaces[{i}].associatePublicIpAddress", judge,
                                "Launch nodes in private subnets behind NAT; drop associatePublicIpAddress.")
    elif resource.type == AKS_CLUSTER:
        pools = v.as_list(p.get("agentPoolProfiles"))
        if isinstance(pools, Unknown):
            judge.unknown_value(pools, "agentPoolProfiles")
            return
        for i, pool in enumerate(pools):
            if isinstance(pool, dict):
                _public_ip_flag(pool.get("enableNodePublicIP"), f"agentPoolProfiles[{i}].enableNodePublicIP",
                                judge, "Set enableNodePublicIP=false; nodes reach out through the NAT.")
    elif resource.type == AKS_POOL:
        _public_ip_flag(p.get("enableNodePublicIP"), "enableNodePublicIP", judge,
                        "Set enableNodePublicIP=false; nodes reach out through the NAT.")
    elif resource.type == GKE_CLUSTER:
        private = v.dig(p, "privateClusterConfig", "enablePrivateNodes")
        if isinstance(private, Unknown):
            judge.unknown_value(private, "privateClusterConfig.enablePrivateNodes")
        elif v.truthy(private) is not True:
            judge.violation("privateClusterConfig.enablePrivateNodes is not true, so GKE gives every node a "
                            "public IP. Set it to true (with Cloud NAT for egress).")
    elif resource.type == GKE_NODE_POOL:
        private = v.dig(p, "networkConfig", "enablePrivateNodes")
        if isinstance(private, Unknown):
            judge.unknown_value(private, "networkConfig.enablePrivateNodes")
        elif private is not None and v.truthy(private) is False:
            judge.violation("networkConfig.enablePrivateNodes is false, so this pool's nodes get public IPs. "
                            "Remove the override or set it to true.")


def check_node_subnets(resources: list[Resource], config: dict[str, Any], judge: Judge) -> None:
    subnets = {r.urn: r for r in resources if r.type == SUBNET}
    for group in resources:
        if group.type != EKS_NODE_GROUP:
            continue
        urns = [u for u in group.property_dependencies.get("subnetIds", ()) if u in subnets] or [
            u for u in group.dependencies if u in subnets]
        for urn in urns:
            flag = v.truthy(subnets[urn].props.get("mapPublicIpOnLaunch") or False)
            if isinstance(flag, Unknown):
                judge.unknown(f"subnet {subnets[urn].name}: {flag}")
            elif flag:
                judge.violation(f"node group {group.name} launches nodes into subnet {subnets[urn].name}, "
                                "which has mapPublicIpOnLaunch=true, so the nodes get public IPs. Put node "
                                "groups in private subnets.", group.urn)


def check_eks_encryption(resource: Resource, config: dict[str, Any], judge: Judge) -> None:
    encryption = v.as_list(resource.props.get("encryptionConfig"))
    if isinstance(encryption, Unknown):
        judge.unknown_value(encryption, "encryptionConfig")
        return
    for entry in encryption:
        if isinstance(entry, Unknown):
            judge.unknown_value(entry, "encryptionConfig")
            return
        kinds = v.as_list(entry.get("resources")) if isinstance(entry, dict) else []
        if isinstance(kinds, Unknown):
            judge.unknown_value(kinds, "encryptionConfig.resources")
            return
        if "secrets" in kinds:
            return
    judge.violation("encryptionConfig does not encrypt \"secrets\" with a KMS key. Add encryptionConfig "
                    "{resources: [\"secrets\"], provider: {keyArn: <KMS key ARN>}}.")


def check_eks_logs(resource: Resource, config: dict[str, Any], judge: Judge) -> None:
    enabled = v.as_list(resource.props.get("enabledClusterLogTypes"))
    if isinstance(enabled, Unknown):
        judge.unknown_value(enabled, "enabledClusterLogTypes")
        return
    missing = [t for t in config.get("requiredLogTypes") or [] if t not in enabled]
    if missing:
        judge.violation(f"enabledClusterLogTypes lacks {', '.join(missing)}. Add them so that API calls and "
                        "authentications are on record.")


CLUSTER_RULES = [
    Rule(
        name="cluster-endpoint-restricted",
        description="The Kubernetes API endpoint of EKS, GKE and AKS clusters is private or limited to "
                    "listed CIDR blocks; an unset limit means the whole internet.",
        severity=Severity.CRITICAL,
        enforcement=EnforcementLevel.MANDATORY,
        remediation="EKS: vpcConfig.endpointPublicAccess=false or publicAccessCidrs; GKE: "
                    "privateClusterConfig.enablePrivateEndpoint or "
                    "masterAuthorizedNetworksConfig.cidrBlocks; AKS: "
                    "apiServerAccessProfile.enablePrivateCluster or authorizedIPRanges.",
        types=frozenset({EKS_CLUSTER, GKE_CLUSTER, AKS_CLUSTER}),
        check=check_endpoint,
    ),
    Rule(
        name="nodes-no-public-ip",
        description="Worker and GPU nodes get no public IP addresses (launch templates, GKE private nodes, "
                    "AKS node public IPs).",
        severity=Severity.HIGH,
        enforcement=EnforcementLevel.MANDATORY,
        remediation="Run nodes in private subnets with NAT for egress: no associatePublicIpAddress, GKE "
                    "enablePrivateNodes=true, AKS enableNodePublicIP=false.",
        types=frozenset({LAUNCH_TEMPLATE, GKE_CLUSTER, GKE_NODE_POOL, AKS_CLUSTER, AKS_POOL}),
        check=check_node_public_ips,
    ),
    Rule(
        name="eks-node-subnets-private",
        description="EKS node groups launch only into subnets that do not map public IPs on launch.",
        severity=Severity.HIGH,
        enforcement=EnforcementLevel.MANDATORY,
        remediation="Give node groups the private subnets; keep mapPublicIpOnLaunch for public load-balancer "
                    "subnets only.",
        types=frozenset({EKS_NODE_GROUP, SUBNET}),
        check=check_node_subnets,
        stack=True,
    ),
    Rule(
        name="eks-secrets-encryption",
        description="EKS clusters encrypt Kubernetes secrets with a KMS key.",
        severity=Severity.MEDIUM,
        enforcement=EnforcementLevel.ADVISORY,
        remediation="Add encryptionConfig with resources [\"secrets\"] and a KMS key ARN.",
        types=frozenset({EKS_CLUSTER}),
        check=check_eks_encryption,
    ),
    Rule(
        name="eks-control-plane-logs",
        description="EKS clusters send their control-plane audit logs to CloudWatch.",
        severity=Severity.LOW,
        enforcement=EnforcementLevel.ADVISORY,
        remediation="Set enabledClusterLogTypes to include api, audit and authenticator.",
        types=frozenset({EKS_CLUSTER}),
        check=check_eks_logs,
        config={"requiredLogTypes": {
            "type": "array", "items": {"type": "string"}, "default": ["api", "audit", "authenticator"],
            "description": "Log types that must be enabled."}},
    ),
]
