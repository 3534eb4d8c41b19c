"""Stack-level rules: AWS inline vs standalone security-group rules, EKS node subnets, the GPU budget."""

from __future__ import annotations

import pytest
from pulumi_policy import PolicyResource
from pulumi_policy.proxy import UNKNOWN_NUMBER_VALUE

from infra import catalog
from tests.policies.harness import check_stack, stack_resource, urn

SG = "aws:ec2/securityGroup:SecurityGroup"
SGR = "aws:ec2/securityGroupRule:SecurityGroupRule"
VIN = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
SUBNET = "aws:ec2/subnet:Subnet"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
GKE = "gcp:container/cluster:Cluster"
GKE_POOL = "gcp:container/nodePool:NodePool"
AKS = "azure-native:containerservice:ManagedCluster"
AKS_POOL = "azure-native:containerservice:AgentPool"
INLINE = {"ingress": [{"protocol": "tcp", "fromPort": 443.0, "toPort": 443.0, "cidrBlocks": ["10.0.0.0/8"]}]}
RULE = {"type": "ingress", "protocol": "tcp", "fromPort": 80.0, "toPort": 80.0, "cidrBlocks": ["10.0.0.0/8"]}


def test_inline_and_standalone_on_one_group_is_a_violation() -> None:
    group = stack_resource(SG, "web", INLINE)
    rule = stack_resource(SGR, "web-http", RULE, deps=[group], property_deps={"securityGroupId": [group]})
    verdict = check_stack("aws-sg-inline-xor-standalone", [group, rule])
    assert verdict.kind == "violation"
    assert verdict.urns == [urn(SG, "web")]
    assert "web-http" in verdict.messages[0]


def test_vpc_rule_found_through_plain_dependencies() -> None:
    group = stack_resource(SG, "web", {"egress": [{"protocol": "-1", "fromPort": 0.0, "toPort": 0.0,
                                                    "cidrBlocks": ["0.0.0.0/0"]}]})
    rule = stack_resource(VIN, "web-https", {"ipProtocol": "tcp", "fromPort": 443.0, "toPort": 443.0,
                                             "cidrIpv4": "10.0.0.0/8"}, deps=[group])
    assert check_stack("aws-sg-inline-xor-standalone", [group, rule]).kind == "violation"


def test_standalone_only_and_source_group_reference_pass() -> None:
    target = stack_resource(SG, "nodes", {"description": "nodes"})
    source = stack_resource(SG, "lb", INLINE)  # has inline rules, but is only the source of the rule
    rule = stack_resource(SGR, "lb-to-nodes", {**RULE, "sourceSecurityGroupId": "sg-lb"}, deps=[target, source],
                          property_deps={"securityGroupId": [target], "sourceSecurityGroupId": [source]})
    assert check_stack("aws-sg-inline-xor-standalone", [target, source, rule]).kind == "pass"


def test_node_group_in_public_subnet() -> None:
    public = stack_resource(SUBNET, "public-a", {"mapPublicIpOnLaunch": True})
    private = stack_resource(SUBNET, "private-a", {"mapPublicIpOnLaunch": False})
    bad = stack_resource(NODE_GROUP, "gpu", {"scalingConfig": {"maxSize": 1.0}}, deps=[public])
    good = stack_resource(NODE_GROUP, "system", {"scalingConfig": {"maxSize": 1.0}}, deps=[private])
    verdict = check_stack("eks-node-subnets-private", [public, private, bad, good])
    assert verdict.kind == "violation" and len(verdict.messages) == 1
    assert verdict.urns == [urn(NODE_GROUP, "gpu")] and "public-a" in verdict.messages[0]


def _eks_gpu(max_size: object, instance: str = "g6.xlarge", capacity: str = "ON_DEMAND") -> PolicyResource:
    return stack_resource(NODE_GROUP, "gpu", {
        "instanceTypes": [instance], "capacityType": capacity, "scalingConfig": {"minSize": 0.0, "maxSize": max_size},
        "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NO_SCHEDULE"}]})


def test_budget_eks_over_and_within() -> None:
    price = catalog.machine("aws", "g6.xlarge").on_demand_per_hour
    over = check_stack("gpu-budget", [_eks_gpu(4.0)], {"budgetPerHour": 4 * price - 0.01})
    assert over.kind == "violation" and f"${4 * price:.2f}/h" in over.messages[0]
    assert check_stack("gpu-budget", [_eks_gpu(4.0)], {"budgetPerHour": 4 * price}).kind == "pass"


def test_budget_prices_spot_capacity_at_spot_rates() -> None:
    spot = catalog.machine("aws", "g6.xlarge").spot_per_hour
    pool = _eks_gpu(4.0, capacity="SPOT")
    assert check_stack("gpu-budget", [pool], {"budgetPerHour": 4 * spot}).kind == "pass"
    assert check_stack("gpu-budget", [pool], {"budgetPerHour": 4 * spot - 0.01}).kind == "violation"


def test_budget_gke_per_zone_max_times_default_three_zones() -> None:
    cluster = stack_resource(GKE, "gke", {"location": "us-central1"})
    pool = stack_resource(GKE_POOL, "gpu", {"nodeConfig": {"machineType": "g2-standard-8"},
                                            "autoscaling": {"minNodeCount": 0.0, "maxNodeCount": 2.0}},
                          deps=[cluster], property_deps={"cluster": [cluster]})
    price = catalog.machine("gcp", "g2-standard-8").on_demand_per_hour
    assert check_stack("gpu-budget", [cluster, pool], {"budgetPerHour": 6 * price}).kind == "pass"
    verdict = check_stack("gpu-budget", [cluster, pool], {"budgetPerHour": 6 * price - 0.01})
    assert verdict.kind == "violation" and "gpu: 6 x g2-standard-8" in verdict.messages[0]


def test_budget_gke_total_max_and_node_locations() -> None:
    pool = stack_resource(GKE_POOL, "gpu", {"nodeConfig": {"machineType": "g2-standard-4", "spot": True},
                                            "nodeLocations": ["us-central1-a"],
                                            "autoscaling": {"maxNodeCount": 3.0}})
    spot = catalog.machine("gcp", "g2-standard-4").spot_per_hour
    assert check_stack("gpu-budget", [pool], {"budgetPerHour": 3 * spot}).kind == "pass"
    total = stack_resource(GKE_POOL, "gpu", {"nodeConfig": {"machineType": "g2-standard-4"},
                                             "autoscaling": {"totalMaxNodeCount": 5.0}})
    price = catalog.machine("gcp", "g2-standard-4").on_demand_per_hour
    assert check_stack("gpu-budget", [total], {"budgetPerHour": 5 * price - 0.01}).kind == "violation"


def test_budget_aks_pool_and_inline_profiles() -> None:
    price = catalog.machine("azure", "Standard_NC4as_T4_v3").on_demand_per_hour
    pool = stack_resource(AKS_POOL, "gpu", {"vmSize": "Standard_NC4as_T4_v3", "enableAutoScaling": True,
                                            "minCount": 0.0, "maxCount": 3.0})
    cluster = stack_resource(AKS, "aks", {"agentPoolProfiles": [
        {"name": "system", "vmSize": "Standard_D4s_v5", "count": 2.0},  # a CPU pool: not priced
        {"name": "gpu2", "vmSize": "Standard_NC4as_T4_v3", "count": 1.0}]})
    assert check_stack("gpu-budget", [pool, cluster], {"budgetPerHour": 4 * price}).kind == "pass"
    assert check_stack("gpu-budget", [pool, cluster], {"budgetPerHour": 4 * price - 0.01}).kind == "violation"


def test_budget_tainted_pool_of_unknown_machine_cannot_be_priced() -> None:
    verdict = check_stack("gpu-budget", [_eks_gpu(2.0, instance="g9.future")], {"budgetPerHour": 100.0})
    assert verdict.kind == "unknown" and "price catalog" in (verdict.cannot_verify or "")


def test_budget_unknown_max_size_and_missing_budget() -> None:
    assert check_stack("gpu-budget", [_eks_gpu(UNKNOWN_NUMBER_VALUE)], {"budgetPerHour": 1.0}).kind == "unknown"
    assert check_stack("gpu-budget", [_eks_gpu(1.0)], {}).kind == "unknown"
    assert check_stack("gpu-budget", [_eks_gpu(1.0)], {"failClosed": True}).kind == "violation"


@pytest.mark.parametrize(("cloud_type", "props"), [
    (NODE_GROUP, {"instanceTypes": ["p4de.24xlarge"], "scalingConfig": {"maxSize": 8.0}}),
    (GKE_POOL, {"nodeConfig": {"machineType": "a4-highgpu-8g"}, "nodeCount": 2.0}),
    (AKS_POOL, {"vmSize": "Standard_ND96amsr_A100_v4", "count": 4.0}),
], ids=["aws", "gcp", "azure"])
def test_budget_untainted_gpu_machine_outside_the_catalog_cannot_be_priced(cloud_type: str, props: dict) -> None:
    verdict = check_stack("gpu-budget", [stack_resource(cloud_type, "gpu", props)], {"budgetPerHour": 1.0})
    assert verdict.kind == "unknown" and "price catalog" in (verdict.cannot_verify or "")


def test_budget_gke_pool_without_autoscaling_runs_its_initial_node_count() -> None:
    pool = stack_resource(GKE_POOL, "gpu", {"nodeConfig": {"machineType": "g2-standard-4"}, "initialNodeCount": 4.0,
                                            "nodeLocations": ["us-central1-a"]})
    price = catalog.machine("gcp", "g2-standard-4").on_demand_per_hour
    verdict = check_stack("gpu-budget", [pool], {"budgetPerHour": 4 * price - 0.01})
    assert verdict.kind == "violation" and "gpu: 4 x g2-standard-4" in verdict.messages[0]


@pytest.mark.parametrize("budget", [0.01, 1000.0])
def test_budget_ignores_cpu_pools(budget: float) -> None:
    cpu = stack_resource(NODE_GROUP, "system", {"instanceTypes": ["m6i.large"], "scalingConfig": {"maxSize": 9.0}})
    assert check_stack("gpu-budget", [cpu], {"budgetPerHour": budget}).kind == "pass"


NSR = "azure-native:network:SecurityRule"
FW = "gcp:compute/firewall:Firewall"
SPLIT = "no-world-open-split-over-rules"


def _vin(name: str, cidr: str, port: float, group: PolicyResource) -> PolicyResource:
    return stack_resource(VIN, name, {"ipProtocol": "tcp", "fromPort": port, "toPort": port, "cidrIpv4": cidr},
                          deps=[group], property_deps={"securityGroupId": [group]})


def test_world_halves_over_two_standalone_rules_open_ssh() -> None:
    group = stack_resource(SG, "nodes", {"description": "nodes"})
    rules = [_vin("ssh-low", "0.0.0.0/1", 22.0, group), _vin("ssh-high", "128.0.0.0/1", 22.0, group)]
    verdict = check_stack(SPLIT, [group, *rules])
    assert verdict.kind == "violation" and len(verdict.messages) == 1
    assert "ssh-low rule, ssh-high rule together open admin port(s) 22" in verdict.messages[0]
    assert verdict.urns == [urn(VIN, "ssh-low")]


def test_halves_on_two_groups_or_on_harmless_ports_pass() -> None:
    a, b = stack_resource(SG, "a", {}), stack_resource(SG, "b", {})
    assert check_stack(SPLIT, [a, b, _vin("low", "0.0.0.0/1", 22.0, a), _vin("high", "128.0.0.0/1", 22.0, b)]).kind \
        == "pass"
    assert check_stack(SPLIT, [a, _vin("low", "0.0.0.0/1", 443.0, a), _vin("high", "128.0.0.0/1", 443.0, a)]).kind \
        == "pass"


def test_one_world_rule_is_left_to_the_resource_rule() -> None:
    group = stack_resource(SG, "nodes", {})
    rules = [_vin("ssh-world", "0.0.0.0/0", 22.0, group), _vin("ssh-office", "203.0.113.0/24", 22.0, group)]
    assert check_stack(SPLIT, [group, *rules]).kind == "pass"


def test_azure_rules_on_one_nsg_and_gcp_firewalls_on_one_network() -> None:
    def nsr(name: str, prefix: str) -> PolicyResource:
        return stack_resource(NSR, name, {"resourceGroupName": "rg", "networkSecurityGroupName": "nodes",
                                          "access": "Allow", "direction": "Inbound", "protocol": "*",
                                          "sourceAddressPrefix": prefix, "destinationPortRange": "*"})

    verdict = check_stack(SPLIT, [nsr("low", "0.0.0.0/1"), nsr("high", "128.0.0.0/1")])
    assert verdict.kind == "violation" and "every protocol and port" in " ".join(verdict.messages)

    def fw(name: str, ranges: list[str], tags: list[str]) -> PolicyResource:
        return stack_resource(FW, name, {"network": "vpc", "allows": [{"protocol": "tcp", "ports": ["6379"]}],
                                         "sourceRanges": ranges, "targetTags": tags})

    assert check_stack(SPLIT, [fw("low", ["::/1"], ["db"]), fw("high", ["8000::/1"], ["db"])]).kind == "violation"
    assert check_stack(SPLIT, [fw("low", ["::/1"], ["db"]), fw("high", ["8000::/1"], ["cache"])]).kind == "pass"
