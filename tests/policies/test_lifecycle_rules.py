"""The lifecycle stack rules on hostile stacks: an API the deployer cannot reach, a destroy that deletes the
network under a load balancer's controller, names a cloud keeps after deletion."""

from __future__ import annotations

from pulumi_policy import PolicyProviderResource, PolicyResource
from pulumi_policy.proxy import UNKNOWN_BOOLEAN_VALUE

from tests.policies.harness import check_stack, stack_resource, urn

EKS = "aws:eks/cluster:Cluster"
GKE = "gcp:container/cluster:Cluster"
AKS = "azure-native:containerservice:ManagedCluster"
ROUTE = "aws:ec2/route:Route"
RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
SERVICE = "kubernetes:core/v1:Service"
NAMESPACE = "kubernetes:core/v1:Namespace"
HELM = "kubernetes:helm.sh/v3:Release"
PROVIDER = "pulumi:providers:kubernetes"
RANDOM = "random:index/randomString:RandomString"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
KEY_RING = "gcp:kms/keyRing:KeyRing"
CUSTOM_ROLE = "gcp:projects/iAMCustomRole:IAMCustomRole"
GATEWAY = "kubernetes:gateway.networking.k8s.io/v1:Gateway"
ENVOY_PROXY = "kubernetes:gateway.envoyproxy.io/v1alpha1:EnvoyProxy"
COMMAND = "command:local:Command"
LB_SERVICE = {"spec": {"type": "LoadBalancer", "loadBalancerSourceRanges": ["203.0.113.0/24"]}}
GATEWAY_SPEC = {"metadata": {"name": "servestack", "namespace": "servestack"},
                "spec": {"gatewayClassName": "servestack",
                         "infrastructure": {"parametersRef": {"group": "gateway.envoyproxy.io", "kind": "EnvoyProxy",
                                                              "name": "servestack"}}}}


def _on(resource: PolicyResource, provider: PolicyResource) -> PolicyResource:
    resource.provider = PolicyProviderResource(provider.resource_type, provider.props, provider.urn, provider.name)
    return resource


# --- kubernetes-api-reachable ----------------------------------------------------------------------


def test_a_private_eks_endpoint_without_a_peered_network_is_unreachable() -> None:
    cluster = stack_resource(EKS, "eks", {"vpcConfig": {"endpointPublicAccess": False, "endpointPrivateAccess": True}})
    verdict = check_stack("kubernetes-api-reachable", [cluster, stack_resource(NAMESPACE, "ns", {})])
    assert verdict.kind == "violation" and verdict.urns == [urn(EKS, "eks")]
    assert "vpcConfig.endpointPublicAccess is false" in verdict.messages[0]
    peering = stack_resource("aws:ec2/vpcPeeringConnection:VpcPeeringConnection", "runner", {})
    assert check_stack("kubernetes-api-reachable", [cluster, peering, stack_resource(NAMESPACE, "ns", {})]).kind == \
        "pass"


def test_an_eks_public_endpoint_that_admits_nobody_is_unreachable() -> None:
    cluster = stack_resource(EKS, "eks", {"vpcConfig": {"endpointPublicAccess": True, "publicAccessCidrs": []}})
    verdict = check_stack("kubernetes-api-reachable", [cluster, stack_resource(NAMESPACE, "ns", {})])
    assert verdict.kind == "violation" and "admits no address" in verdict.messages[0]
    open_to_ops = stack_resource(EKS, "eks", {"vpcConfig": {"publicAccessCidrs": ["198.51.100.0/24"]}})
    assert check_stack("kubernetes-api-reachable", [open_to_ops, stack_resource(NAMESPACE, "ns", {})]).kind == "pass"


def test_a_cluster_without_kubernetes_objects_needs_no_way_in() -> None:
    cluster = stack_resource(EKS, "eks", {"vpcConfig": {"endpointPublicAccess": False}})
    assert check_stack("kubernetes-api-reachable", [cluster]).kind == "pass"


def test_a_private_gke_endpoint_needs_the_dns_endpoint_open_to_outside_traffic() -> None:
    private = {"privateClusterConfig": {"enablePrivateEndpoint": True}}
    verdict = check_stack("kubernetes-api-reachable", [stack_resource(GKE, "gke", private),
                                                       stack_resource(NAMESPACE, "ns", {})])
    assert verdict.kind == "violation" and "allowExternalTraffic" in verdict.messages[0]
    dns = {**private, "controlPlaneEndpointsConfig": {"dnsEndpointConfig": {"allowExternalTraffic": True}}}
    assert check_stack("kubernetes-api-reachable", [stack_resource(GKE, "gke", dns),
                                                    stack_resource(NAMESPACE, "ns", {})]).kind == "pass"


def test_a_private_aks_cluster_needs_a_peered_runner_network_and_a_linked_zone() -> None:
    private = {"apiServerAccessProfile": {"enablePrivateCluster": True, "privateDNSZone": "system"}}
    verdict = check_stack("kubernetes-api-reachable", [stack_resource(AKS, "aks", private),
                                                       stack_resource(NAMESPACE, "ns", {})])
    assert verdict.kind == "violation" and "private DNS zone" in verdict.messages[0]
    zone = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/privateDnsZones/privatelink.eastus.azmk8s.io"
    linked = [stack_resource(AKS, "aks", {"apiServerAccessProfile": {"enablePrivateCluster": True,
                                                                     "privateDNSZone": zone}}),
              stack_resource("azure-native:network:VirtualNetworkPeering", "to-runner", {}),
              stack_resource("azure-native:privatedns:VirtualNetworkLink", "runner-link", {}),
              stack_resource(NAMESPACE, "ns", {})]
    assert check_stack("kubernetes-api-reachable", linked).kind == "pass"


def test_an_endpoint_unknown_during_preview_cannot_be_verified() -> None:
    cluster = stack_resource(EKS, "eks", {"vpcConfig": {"endpointPublicAccess": UNKNOWN_BOOLEAN_VALUE}})
    verdict = check_stack("kubernetes-api-reachable", [cluster, stack_resource(NAMESPACE, "ns", {})])
    assert verdict.kind == "unknown" and "eks's API endpoint" in (verdict.cannot_verify or "")


# --- load-balancer-destroy-order -------------------------------------------------------------------


def test_a_load_balancer_beside_the_routes_is_deleted_with_them() -> None:
    route = stack_resource(ROUTE, "private-default-route", {})
    service = stack_resource(SERVICE, "serving", LB_SERVICE)
    verdict = check_stack("load-balancer-destroy-order", [route, service])
    assert verdict.kind == "violation" and verdict.urns == [urn(SERVICE, "serving")]
    assert "private-default-route (aws:ec2/route:Route)" in verdict.messages[0]


def test_a_load_balancer_that_depends_on_the_network_through_its_provider_and_the_cluster_is_fine() -> None:
    route, rule = stack_resource(ROUTE, "route", {}), stack_resource(RULE, "nodes-from-lb", {})
    cluster = stack_resource(EKS, "eks", {}, deps=[route, rule])
    provider = stack_resource(PROVIDER, "k8s", {}, deps=[cluster])
    controller = _on(stack_resource(HELM, "lb-controller", {"chart": "aws-load-balancer-controller"}), provider)
    namespace = _on(stack_resource(NAMESPACE, "ns", {}, deps=[controller]), provider)
    service = _on(stack_resource(SERVICE, "serving", LB_SERVICE, deps=[namespace]), provider)
    resources = [route, rule, cluster, provider, controller, namespace, service]
    assert check_stack("load-balancer-destroy-order", resources).kind == "pass"
    # Without the wait on the controller, its release may go first: the load balancer is left behind.
    service.dependencies = []
    verdict = check_stack("load-balancer-destroy-order", resources)
    assert verdict.kind == "violation" and "lb-controller" in verdict.messages[0]
    assert "route (aws:ec2/route:Route)" not in verdict.messages[0]  # the provider still leads to the network


def _gateway_stack(wait_on_controller: bool = True, waits: bool = True,
                   service_type: str = "LoadBalancer") -> list[PolicyResource]:
    """A cluster on its network, Envoy Gateway on the cluster, and a Gateway whose load balancer Service Envoy
    Gateway makes, waited for by a command (gateway.py's shape)."""
    route, rule = stack_resource(ROUTE, "route", {}), stack_resource(RULE, "nodes-from-lb", {})
    cluster = stack_resource(EKS, "eks", {}, deps=[route, rule])
    provider = stack_resource(PROVIDER, "k8s", {}, deps=[cluster])
    lb_controller = _on(stack_resource(HELM, "lb-controller", {"chart": "aws-load-balancer-controller"}), provider)
    envoy_gateway = _on(stack_resource(HELM, "envoy-gateway", {"chart": "oci://docker.io/envoyproxy/gateway-helm"},
                                       deps=[lb_controller]), provider)
    proxy = _on(stack_resource(ENVOY_PROXY, "envoy-proxy", {
        "metadata": {"name": "servestack", "namespace": "servestack"},
        "spec": {"provider": {"type": "Kubernetes", "kubernetes": {"envoyService": {"type": service_type}}}}}),
        provider)
    wait = stack_resource(COMMAND, "load-balancer-gone", {"create": "true", **({"delete": "wait"} if waits else {})},
                          deps=[envoy_gateway] if wait_on_controller else [])
    gateway = _on(stack_resource(GATEWAY, "gateway", GATEWAY_SPEC, deps=[proxy, wait]), provider)
    return [route, rule, cluster, provider, lb_controller, envoy_gateway, proxy, wait, gateway]


def test_a_gateway_whose_load_balancer_deletion_is_waited_for_is_fine() -> None:
    """The command's delete waits until Envoy Gateway and the cloud have deleted the load balancer, and outlives
    nothing that needs: the controllers, the cluster (through the controllers' provider) and the network."""
    assert check_stack("load-balancer-destroy-order", _gateway_stack()).kind == "pass"


def test_a_gateway_with_nothing_waiting_for_its_load_balancer_leaves_it_behind() -> None:
    for resources in (_gateway_stack(waits=False), [r for r in _gateway_stack() if r.resource_type != COMMAND]):
        verdict = check_stack("load-balancer-destroy-order", resources)
        assert verdict.kind == "violation" and verdict.urns == [urn(GATEWAY, "gateway")]
        assert "nothing in the stack waits for that" in verdict.messages[0]


def test_a_wait_that_does_not_outlive_the_gateway_controller_is_a_violation() -> None:
    """Without the edge to Envoy Gateway the controller is deleted beside the wait: nobody deletes the Service,
    and the wait times out with the load balancer still there."""
    verdict = check_stack("load-balancer-destroy-order", _gateway_stack(wait_on_controller=False))
    assert verdict.kind == "violation" and verdict.urns == [urn(GATEWAY, "gateway")]
    message = verdict.messages[0]
    assert "while load-balancer-gone waits for it" in message
    for name in ("envoy-gateway (kubernetes:helm.sh/v3:Release)", "lb-controller (kubernetes:helm.sh/v3:Release)",
                 "route (aws:ec2/route:Route)"):
        assert name in message


def test_a_gateway_whose_envoy_service_is_cluster_internal_makes_nothing_to_orphan() -> None:
    resources = _gateway_stack(waits=False, service_type="ClusterIP")
    assert check_stack("load-balancer-destroy-order", resources).kind == "pass"


def test_a_service_without_a_load_balancer_makes_nothing_to_orphan() -> None:
    route = stack_resource(ROUTE, "route", {})
    service = stack_resource(SERVICE, "serving", {"spec": {"type": "ClusterIP"}})
    assert check_stack("load-balancer-destroy-order", [route, service]).kind == "pass"


# --- retained-names-unique -------------------------------------------------------------------------


def test_a_fixed_eks_cluster_name_meets_the_log_group_of_its_previous_life() -> None:
    verdict = check_stack("retained-names-unique", [stack_resource(EKS, "eks", {"name": "servestack-aws-dev"})])
    assert verdict.kind == "violation" and "/aws/eks/<name>/cluster" in verdict.messages[0]
    suffix = stack_resource(RANDOM, "suffix", {})
    cluster = stack_resource(EKS, "eks", {"name": "servestack-aws-dev-x1y2z3"}, property_deps={"name": [suffix]})
    assert check_stack("retained-names-unique", [suffix, cluster]).kind == "pass"
    auto = check_stack("retained-names-unique", [stack_resource(EKS, "eks", {})])
    assert auto.kind == "violation" and "auto-named" in auto.messages[0]


def test_an_auto_name_in_the_outputs_is_still_a_fixed_name_to_the_rule() -> None:
    """A real preview hands stack rules the resources' outputs: Pulumi's auto-name of a key ring is there as
    a plain name, indistinguishable from a fixed one, so only a name built from a random resource passes."""
    auto = stack_resource(KEY_RING, "ring", {"name": "servestack-keyring-1a2b3c4", "location": "us-central1"})
    assert check_stack("retained-names-unique", [auto]).kind == "violation"
    suffix = stack_resource(RANDOM, "kms-suffix", {"result": "x1y2z3"})
    named = stack_resource(KEY_RING, "ring", {"name": "servestack-gcp-prod-x1y2z3"}, property_deps={"name": [suffix]})
    assert check_stack("retained-names-unique", [suffix, named]).kind == "pass"


def test_a_gcp_custom_role_id_is_kept_for_weeks_after_deletion() -> None:
    fixed = check_stack("retained-names-unique", [stack_resource(CUSTOM_ROLE, "role", {"roleId": "servestack_acme"})])
    assert fixed.kind == "violation" and "37 days" in fixed.messages[0]
    suffix = stack_resource(RANDOM, "role-suffix", {"result": "x1y2z3"})
    named = stack_resource(CUSTOM_ROLE, "role", {"roleId": "servestack_acme_x1y2z3"},
                           property_deps={"roleId": [suffix]})
    assert check_stack("retained-names-unique", [suffix, named]).kind == "pass"


def test_fixed_eks_log_groups_and_key_rings_are_violations_and_other_log_groups_are_not() -> None:
    resources = [stack_resource(LOG_GROUP, "eks-logs", {"name": "/aws/eks/servestack-aws-dev/cluster"}),
                 stack_resource(LOG_GROUP, "app-logs", {"name": "/servestack/app"}),
                 stack_resource(KEY_RING, "ring", {"name": "servestack"})]
    verdict = check_stack("retained-names-unique", resources)
    assert verdict.urns == [urn(LOG_GROUP, "eks-logs"), urn(KEY_RING, "ring")]
    assert "GCP never deletes a key ring" in verdict.messages[1]
