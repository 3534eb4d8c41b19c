"""A stack's whole life, not only its creation: can the deployer reach the cluster's Kubernetes API, does
`pulumi destroy` delete each cloud load balancer before what its controller needs to delete it, and are
the names a cloud keeps after deletion new in each life of the stack.

A Gateway's load balancer is the one case where the stack does not declare the object that makes it: the gateway
controller (Envoy Gateway) makes a LoadBalancer Service for the Gateway, and deletes it only after the Gateway is
gone, while `pulumi destroy` goes on. The stack then waits for that deletion in a command's delete step, which the
Gateway depends on and which depends on everything the deletion needs.

All three read the stack's dependency graph the way the Pulumi engine orders a destroy: a resource is
deleted before everything it depends on (its explicit and property dependencies, its parent and its
provider), and resources with no dependency between them are deleted in the same wave.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pulumi_policy import EnforcementLevel, Severity

from policies.rules.common import Judge, Rule
from reading import values as v
from reading.load_balancers import GATEWAY, gateway_service
from reading.resources import Resource
from reading.values import Unknown

SERVICE = "kubernetes:core/v1:Service"
INGRESS = "kubernetes:networking.k8s.io/v1:Ingress"
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
COMMAND = "command:local:Command"
EKS_CLUSTER = "aws:eks/cluster:Cluster"
GKE_CLUSTER = "gcp:container/cluster:Cluster"
AKS_CLUSTER = "azure-native:containerservice:ManagedCluster"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
KEY_RING = "gcp:kms/keyRing:KeyRing"
CRYPTO_KEY = "gcp:kms/cryptoKey:CryptoKey"
CUSTOM_ROLE = "gcp:projects/iAMCustomRole:IAMCustomRole"
KEY_VAULT = "azure-native:keyvault:Vault"
AWS_PEERING = "aws:ec2/vpcPeeringConnection:VpcPeeringConnection"
AWS_TGW_ATTACHMENT = "aws:ec2transitgateway/vpcAttachment:VpcAttachment"
AZURE_PEERING = "azure-native:network:VirtualNetworkPeering"
AZURE_DNS_LINK = "azure-native:privatedns:VirtualNetworkLink"

# What carries a cluster's traffic to the cloud's APIs and between nodes and control plane. A load
# balancer's controller (in-cluster on EKS, in the control plane elsewhere) needs it while it deletes
# the load balancer; so does the deployer's path to the Kubernetes API.
NETWORK_PLUMBING = frozenset({
    "aws:ec2/route:Route", "aws:ec2/routeTableAssociation:RouteTableAssociation", "aws:ec2/natGateway:NatGateway",
    "aws:ec2/internetGateway:InternetGateway", "aws:ec2/vpcEndpoint:VpcEndpoint", AWS_PEERING,
    "aws:ec2/securityGroupRule:SecurityGroupRule", "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule",
    "gcp:compute/router:Router", "gcp:compute/routerNat:RouterNat", "gcp:compute/route:Route",
    "gcp:compute/firewall:Firewall",
    "azure-native:network:NatGateway", "azure-native:network:RouteTable", "azure-native:network:Route",
    "azure-native:network:SecurityRule", AZURE_PEERING, AZURE_DNS_LINK,
})
# Helm charts (by name, without their repository) of the in-cluster controllers that create and delete cloud load
# balancers, and of the gateway controllers that create and delete a Gateway's LoadBalancer Service.
LOAD_BALANCER_CONTROLLER_CHARTS = frozenset({"aws-load-balancer-controller"})
GATEWAY_CONTROLLER_CHARTS = frozenset({"gateway-helm"})
# Where a name is reserved after deletion: EKS writes /aws/eks/<cluster>/cluster again while it deletes
# a cluster, GCP never deletes key rings and keeps destroyed keys' names, Azure soft-deletes key vaults.
RETAINED_NAMES: dict[str, tuple[str, str]] = {
    EKS_CLUSTER: ("name", "EKS writes the control-plane log group /aws/eks/<name>/cluster again while it "
                          "deletes the cluster, so the next cluster of that name meets it"),
    LOG_GROUP: ("name", "a log group EKS or a flow log writes to may be written again while its writer is "
                        "being deleted"),
    KEY_RING: ("name", "GCP never deletes a key ring, so its name stays taken"),
    CRYPTO_KEY: ("name", "GCP keeps a destroyed key's name in its key ring"),
    CUSTOM_ROLE: ("roleId", "GCP keeps a deleted custom role's id for up to 37 days"),
    KEY_VAULT: ("vaultName", "Azure keeps a deleted vault, and its name, for its soft-delete retention"),
}


# --- the dependency graph --------------------------------------------------------------------------


def _edges(resource: Resource) -> set[str]:
    """What the engine deletes after this resource: its dependencies, property dependencies, parent and
    provider."""
    found = set(resource.dependencies)
    for urns in resource.property_dependencies.values():
        found.update(urns)
    if resource.parent:
        found.add(resource.parent)
    if resource.provider:
        found.add(resource.provider)
    return found


def outlives(resource: Resource, by_urn: Mapping[str, Resource]) -> set[str]:
    """Every resource `pulumi destroy` deletes only after this one: its transitive dependencies."""
    seen: set[str] = set()
    todo = list(_edges(resource))
    while todo:
        urn = todo.pop()
        if urn in seen:
            continue
        seen.add(urn)
        if urn in by_urn:
            todo.extend(_edges(by_urn[urn]))
    return seen


def _makes_load_balancer(resource: Resource, resources: list[Resource]) -> bool:
    if resource.type == SERVICE:
        return v.dig(resource.props, "spec", "type") == "LoadBalancer"
    if resource.type == GATEWAY:
        return gateway_service(resource, resources)["type"] == "LoadBalancer"
    return resource.type == INGRESS


def _chart(resource: Resource) -> str:
    """A Helm release's chart by name (`oci://docker.io/envoyproxy/gateway-helm` is gateway-helm)."""
    chart = resource.props.get("chart")
    return chart.rstrip("/").rsplit("/", 1)[-1] if isinstance(chart, str) else ""


def _needed_by_controllers(resource: Resource, gateway: bool) -> bool:
    if resource.type in NETWORK_PLUMBING:
        return True
    charts = LOAD_BALANCER_CONTROLLER_CHARTS | (GATEWAY_CONTROLLER_CHARTS if gateway else frozenset())
    return resource.type == HELM_RELEASE and _chart(resource) in charts


def _waits_on_delete(resource: Resource) -> bool:
    """A command with a delete step (unknown during preview is still one)."""
    return resource.type == COMMAND and resource.props.get("delete") not in (None, "")


def _names(resources: Iterable[Resource], limit: int = 6) -> str:
    shown = sorted(f"{r.name} ({r.type})" for r in resources)
    more = f" and {len(shown) - limit} more" if len(shown) > limit else ""
    return ", ".join(shown[:limit]) + more


def check_destroy_order(resources: list[Resource], config: dict[str, Any], judge: Judge) -> None:
    by_urn = {r.urn: r for r in resources}
    for lb in (r for r in resources if _makes_load_balancer(r, resources)):
        needed = [r for r in resources if _needed_by_controllers(r, gateway=lb.type == GATEWAY)]
        if lb.type == GATEWAY:
            _check_gateway_destroy_order(lb, needed, by_urn, judge)
            continue
        kept = outlives(lb, by_urn)
        missing = [r for r in needed if r.urn not in kept]
        if missing:
            judge.violation(
                f"{lb.name} makes a cloud load balancer, but does not depend on {_names(missing)}: `pulumi "
                "destroy` deletes them in the same wave as it, and the controller that deletes the load "
                "balancer loses its routes, rules or itself first, leaving the load balancer (and the network "
                "it sits in) behind. Make the cluster depend on the network plumbing and the load balancer on "
                "its controller.", lb.urn)


def _check_gateway_destroy_order(gateway: Resource, needed: list[Resource], by_urn: Mapping[str, Resource],
                                 judge: Judge) -> None:
    """The Gateway's load balancer goes while a command the Gateway depends on waits in its delete step: that
    command must outlive nothing the deletion needs (the gateway controller, the cloud's load balancer controller,
    the network plumbing)."""
    waits = [by_urn[urn] for urn in outlives(gateway, by_urn) if urn in by_urn and _waits_on_delete(by_urn[urn])]
    if not waits:
        judge.violation(
            f"{gateway.name} makes a cloud load balancer through its gateway controller, which deletes it only "
            "after the Gateway is gone, but nothing in the stack waits for that: `pulumi destroy` goes on to delete "
            "the controller, the cluster and the network while the load balancer is still there, and leaves it "
            "behind. Make the Gateway depend on a command whose delete step waits until the load balancer Service "
            "is gone, and that command on the gateway controller and the network plumbing.", gateway.urn)
        return
    missing = min(([r for r in needed if r.urn not in outlives(wait, by_urn)] for wait in waits), key=len)
    if missing:
        names = ", ".join(sorted(w.name for w in waits))
        judge.violation(
            f"{gateway.name}'s load balancer is deleted while {names} waits for it, but that wait does not depend on "
            f"{_names(missing)}: `pulumi destroy` deletes them in the same wave as the wait, and the controllers "
            "lose their routes, rules or themselves before the load balancer is gone, leaving it behind. Make the "
            "waiting command depend on the gateway controller and the cluster, and the cluster on the network "
            "plumbing.", gateway.urn)


# --- reaching the Kubernetes API -------------------------------------------------------------------


def _deploys_kubernetes_objects(resources: list[Resource]) -> bool:
    return any(r.type.startswith("kubernetes:") for r in resources)


def _eks_unreachable(cluster: Resource, resources: list[Resource]) -> str | Unknown | None:
    vpc = v.dig(cluster.props, "vpcConfig")
    public = v.dig(vpc, "endpointPublicAccess")
    if isinstance(public, Unknown):
        return public
    if public is None or v.truthy(public):
        cidrs = v.dig(vpc, "publicAccessCidrs")
        if isinstance(cidrs, list) and not cidrs:
            return "its public endpoint admits no address (vpcConfig.publicAccessCidrs is empty)"
        return None
    if any(r.type in (AWS_PEERING, AWS_TGW_ATTACHMENT) for r in resources):
        return None
    return ("its API endpoint is private (vpcConfig.endpointPublicAccess is false) and the stack connects no "
            "other network to the VPC it creates, so a deployer outside that VPC cannot reach it")


def _gke_unreachable(cluster: Resource, resources: list[Resource]) -> str | Unknown | None:
    private = v.dig(cluster.props, "privateClusterConfig", "enablePrivateEndpoint")
    if isinstance(private, Unknown):
        return private
    if not private or not v.truthy(private):
        return None
    dns = v.dig(cluster.props, "controlPlaneEndpointsConfig", "dnsEndpointConfig", "allowExternalTraffic")
    if isinstance(dns, Unknown):
        return dns
    if dns and v.truthy(dns):
        return None
    return ("its IP endpoint is private (privateClusterConfig.enablePrivateEndpoint) and its DNS endpoint "
            "does not admit outside traffic (controlPlaneEndpointsConfig.dnsEndpointConfig."
            "allowExternalTraffic), so a deployer outside the VPC cannot reach it")


def _aks_unreachable(cluster: Resource, resources: list[Resource]) -> str | Unknown | None:
    profile = v.dig(cluster.props, "apiServerAccessProfile")
    private = v.dig(profile, "enablePrivateCluster")
    if isinstance(private, Unknown):
        return private
    if not private or not v.truthy(private):
        ranges = v.dig(profile, "authorizedIPRanges")
        if isinstance(ranges, list) and not ranges:
            return "its public API server admits every address (apiServerAccessProfile.authorizedIPRanges is empty)"
        return None
    zone = v.dig(profile, "privateDNSZone")
    peered = any(r.type == AZURE_PEERING for r in resources)
    linked = any(r.type == AZURE_DNS_LINK for r in resources)
    if peered and linked and zone not in (None, "system", "none"):
        return None
    return ("it is a private cluster and the stack peers no runner network with its VNet and links it to the "
            "cluster's private DNS zone, so a deployer outside that VNet can neither resolve nor reach the API")


_UNREACHABLE = {EKS_CLUSTER: _eks_unreachable, GKE_CLUSTER: _gke_unreachable, AKS_CLUSTER: _aks_unreachable}


def check_api_reachable(resources: list[Resource], config: dict[str, Any], judge: Judge) -> None:
    if not _deploys_kubernetes_objects(resources):
        return
    for cluster in (r for r in resources if r.type in _UNREACHABLE):
        why = _UNREACHABLE[cluster.type](cluster, resources)
        if isinstance(why, Unknown):
            judge.unknown_value(why, f"{cluster.name}'s API endpoint")
        elif why:
            judge.violation(
                f"The stack deploys Kubernetes objects onto {cluster.name}, but {why}: `pulumi up` and `pulumi "
                "destroy` time out on every one of them. Give the deployer a way in: a public endpoint limited "
                "to its CIDR blocks, GKE's DNS endpoint, or a runner network the stack peers with the cluster's.",
                cluster.urn)


# --- names the clouds keep -------------------------------------------------------------------------


def check_retained_names(resources: list[Resource], config: dict[str, Any], judge: Judge) -> None:
    """The name must be built from a `random:` resource. A preview hands stack rules the resources' outputs,
    where Pulumi's auto-name is a plain name the rule cannot tell from a fixed one, so an auto-name does not
    pass either."""
    by_urn = {r.urn: r for r in resources}
    for resource in resources:
        if resource.type not in RETAINED_NAMES:
            continue
        key, why = RETAINED_NAMES[resource.type]
        name = resource.props.get(key)
        if resource.type == LOG_GROUP and not (isinstance(name, str) and name.startswith(("/aws/eks/", "/aws/vpc/"))):
            continue
        if isinstance(name, Unknown):
            continue  # computed from other resources during preview: known, and judged, at `up`
        random_parts = [u for u in resource.property_dependencies.get(key, ())
                        if u in by_urn and by_urn[u].type.startswith("random:")]
        if not random_parts:
            shown = f"named {name!r}, the same in every life of the stack" if name else "auto-named"
            judge.violation(f"{resource.name} is {shown}, but {why}: the `pulumi up` after a `pulumi destroy` "
                            "can fail on it. Build its name with a suffix from a pulumi-random resource, which "
                            "`destroy` deletes with the stack.", resource.urn)


LIFECYCLE_RULES: list[Rule] = [
    Rule(
        name="kubernetes-api-reachable",
        description="A stack that deploys Kubernetes objects onto a cluster it creates leaves the deployer a way "
                    "to that cluster's API: a restricted public endpoint, GKE's DNS endpoint, or a peered network.",
        severity=Severity.CRITICAL,
        enforcement=EnforcementLevel.MANDATORY,
        remediation="Set servestack:access.apiAccess and its CIDR blocks or runner network (docs per cloud).",
        types=frozenset({EKS_CLUSTER, GKE_CLUSTER, AKS_CLUSTER}),
        check=check_api_reachable,
        stack=True,
    ),
    Rule(
        name="load-balancer-destroy-order",
        description="Every Kubernetes object that makes a cloud load balancer depends on the network plumbing and "
                    "the controller its deletion needs, so `pulumi destroy` deletes the load balancer first; a "
                    "Gateway, whose controller deletes its load balancer after it, on a command that waits for that.",
        severity=Severity.HIGH,
        enforcement=EnforcementLevel.MANDATORY,
        remediation="Make the cluster depend on routes, NAT, gateways and firewall rules, and the Service on the "
                    "load balancer controller; make a Gateway depend on a command whose delete step waits for its "
                    "load balancer Service to be gone, and that command on the gateway controller.",
        types=frozenset({SERVICE, INGRESS, GATEWAY}),
        check=check_destroy_order,
        stack=True,
    ),
    Rule(
        name="retained-names-unique",
        description="Names a cloud keeps after deletion (EKS clusters' log groups, KMS key rings and keys, GCP "
                    "custom roles, soft-deleted key vaults) are built from a random resource, so new in each life "
                    "of the stack.",
        severity=Severity.HIGH,
        enforcement=EnforcementLevel.MANDATORY,
        remediation="Build the name with a suffix from a pulumi-random resource.",
        types=frozenset(RETAINED_NAMES),
        check=check_retained_names,
        stack=True,
    ),
]
