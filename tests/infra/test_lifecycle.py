"""Each cloud stack's whole life as the cloud sees it: the deployer reaches the cluster's API on the first
`up`, `destroy` deletes every load balancer before what its controller needs, the names a cloud keeps
after deletion are new in the next life, nothing drifts after a refresh, and the offline plan fails
where `up` would."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from policies.rules.lifecycle import GATEWAY_CONTROLLER_CHARTS, LOAD_BALANCER_CONTROLLER_CHARTS, NETWORK_PLUMBING
from servestack.check import check_plan
from servestack.offline.plan import PlanError, plan_in_subprocess
from tests.infra.plans import inputs, one, plan_unmasked, resources, run_plan_script, stack_variant

CLOUD_STACKS = ("aws-dev", "aws-prod", "gcp-dev", "gcp-prod", "azure-dev", "azure-prod")
PRODS = ("aws-prod", "gcp-prod", "azure-prod")
LIFECYCLE_RULES = {"kubernetes-api-reachable", "load-balancer-destroy-order", "retained-names-unique"}


@pytest.fixture(scope="module", params=CLOUD_STACKS)
def plan(request: pytest.FixtureRequest, stack_plan: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    return stack_plan(request.param)


# --- the first `up`: the deployer reaches the API -------------------------------------------------


@pytest.mark.parametrize("stack", PRODS)
def test_prod_plans_pass_the_lifecycle_rules(stack: str, stack_plan: Callable[[str], dict[str, Any]]) -> None:
    found = [(v.policy, v.message) for v in check_plan(stack_plan(stack)) if v.policy in LIFECYCLE_RULES]
    assert found == []


@pytest.mark.parametrize(("stack", "access"), [
    ("aws-prod", {"endpointCidrs": ["203.0.113.0/24"]}),
    ("azure-prod", {"endpointCidrs": ["198.51.100.0/24"]}),
    ("gcp-prod", {"endpointCidrs": ["203.0.113.0/24"], "apiAccess": "public"}),
])
def test_prod_without_a_way_to_the_api_is_refused_before_anything_is_created(
        stack: str, access: dict[str, Any], tmp_path: Path) -> None:
    stacks = stack_variant(tmp_path, stack, stack, **{"servestack:access": access})
    with pytest.raises(PlanError) as error:
        plan_in_subprocess(stack, stacks_dir=stacks)
    message = str(error.value)
    assert "servestack:access.apiCidrs: missing, so the Kubernetes API's public endpoint would admit nobody" in message
    assert "List the CIDR blocks of the deployer and the operators" in message
    assert ("or set servestack:access.apiAccess to dns" in message) == stack.startswith("gcp")


def test_the_plan_fails_like_up_when_the_program_leaves_the_api_private(tmp_path: Path) -> None:
    """The safety net under the config check: a program that made the EKS endpoint private would have every
    Kubernetes object time out on the first `up`; the plan resolves the endpoint as EKS's public DNS does
    (to private addresses) and fails the same way."""
    stacks = stack_variant(tmp_path, "aws-prod", "aws-prod", **{"servestack:access": {
        "endpointCidrs": ["203.0.113.0/24"]}})
    result = run_plan_script("aws-prod", stacks, before="import infra.config as c; c._check_api_access = "
                                                        "lambda *args: None")
    assert result.returncode != 0
    assert re.search(r"creating kubernetes:\S+ \S+: the Kubernetes API at https://\S+\.eks\.amazonaws\.com is "
                     r"out of the deployer's reach: \S+ resolves to 10\.0\.\d+\.10, inside the cluster's own "
                     r"network", result.stderr), result.stderr[-2000:]


# --- destroy ---------------------------------------------------------------------------------------


def destroy_waves(plan: Mapping[str, Any]) -> dict[str, int]:
    """The wave in which `pulumi destroy` deletes each resource: a resource goes once everything that depends
    on it (through dependencies, property dependencies, parents and providers) is gone."""
    edges: dict[str, set[str]] = {}
    for r in plan["resources"]:
        needs = set(r["dependencies"]) | {u for urns in r["propertyDependencies"].values() for u in urns}
        needs |= {u for u in (r["parent"], r["provider"]) if u}
        edges[r["urn"]] = needs
    dependents: dict[str, set[str]] = {urn: set() for urn in edges}
    for urn, needs in edges.items():
        for need in needs & set(edges):
            dependents[need].add(urn)
    waves: dict[str, int] = {}
    while len(waves) < len(edges):
        ready = [u for u in edges if u not in waves and all(d in waves for d in dependents[u])]
        assert ready, "the dependency graph has a cycle"
        for urn in ready:
            waves[urn] = max((waves[d] + 1 for d in dependents[urn]), default=0)
    return waves


GATEWAY = "kubernetes:gateway.networking.k8s.io/v1:Gateway"
LOAD_BALANCER_GONE = "servestack-load-balancer-gone"


def _needed_while_deleting_a_load_balancer(plan: Mapping[str, Any]) -> list[dict[str, Any]]:
    charts = LOAD_BALANCER_CONTROLLER_CHARTS | GATEWAY_CONTROLLER_CHARTS
    return [r for r in plan["resources"] if r["type"] in NETWORK_PLUMBING or (
        r["type"] == "kubernetes:helm.sh/v3:Release" and str(r["inputs"].get("chart")).rsplit("/", 1)[-1] in charts)]


def test_destroy_deletes_each_load_balancer_before_what_its_controller_needs(plan: dict[str, Any]) -> None:
    """The one load balancer is the gateway's: Envoy Gateway deletes its Service once the Gateway is gone, and a
    command waits in its delete step until the cloud has deleted the load balancer. The Gateway goes before that
    wait, and everything the deletion needs (the gateway controller, the cloud's load balancer controller, the
    network) only after it."""
    waves = destroy_waves(plan)
    assert [r["name"] for r in resources(plan, "kubernetes:core/v1:Service")
            if r["inputs"]["spec"]["type"] == "LoadBalancer"] == []
    wait = one(plan, "command:local:Command", LOAD_BALANCER_GONE)
    assert waves[one(plan, GATEWAY)["urn"]] < waves[wait["urn"]]
    needed = _needed_while_deleting_a_load_balancer(plan)
    assert needed  # routes or NAT, firewall rules, the controllers: every cloud stack has some
    late = [r["name"] for r in needed if waves[r["urn"]] <= waves[wait["urn"]]]
    assert late == [], f"deleted with or before the load balancer: {late}"


def test_destroy_order_check_catches_a_route_the_cluster_no_longer_waits_for(
        stack_plan: Callable[[str], dict[str, Any]]) -> None:
    """The same graph with one route cut loose from the cluster, as the network was before: the route is
    deleted in the first wave, while the load balancer is still being deleted."""
    plan = json.loads(json.dumps(stack_plan("aws-dev")))
    route = one(plan, "aws:ec2/route:Route", "aws-network-private-0-default-route")
    for r in plan["resources"]:
        r["dependencies"] = [u for u in r["dependencies"] if u != route["urn"]]
    waves = destroy_waves(plan)
    assert waves[route["urn"]] == 0 < waves[one(plan, "command:local:Command", LOAD_BALANCER_GONE)["urn"]]
    found = [v for v in check_plan(plan) if v.policy == "load-balancer-destroy-order"]
    assert [v.policy for v in found] == ["load-balancer-destroy-order"]
    assert "aws-network-private-0-default-route (aws:ec2/route:Route)" in found[0].message


# --- `up` again after `destroy` --------------------------------------------------------------------


# Per stack: where the names a cloud keeps after deletion are declared (type, input, resource name).
RETAINED: dict[str, list[tuple[str, str, str | None]]] = {
    "aws-prod": [("aws:eks/cluster:Cluster", "name", None),
                 ("aws:cloudwatch/logGroup:LogGroup", "name", "aws-eks-control-plane-logs"),
                 ("aws:cloudwatch/logGroup:LogGroup", "name", "aws-network-flow-logs")],
    "gcp-prod": [("gcp:kms/keyRing:KeyRing", "name", None), ("gcp:kms/cryptoKey:CryptoKey", "name", None),
                 ("gcp:projects/iAMCustomRole:IAMCustomRole", "roleId", None)],
    "azure-prod": [("azure-native:containerregistry:Registry", "registryName", None),
                   ("azure-native:storage:StorageAccount", "accountName", "servestack-models")],
}


@pytest.mark.parametrize("stack", PRODS)
def test_names_the_cloud_keeps_after_deletion_are_new_in_the_next_life(stack: str) -> None:
    first, second = (plan_in_subprocess(stack, life=life) for life in (0, 1))
    for type_token, key, name in RETAINED[stack]:
        assert inputs(first, type_token, name)[key] != inputs(second, type_token, name)[key], (type_token, name)
    assert [v for v in check_plan(second) if v.policy == "retained-names-unique"] == []


def test_the_eks_log_group_is_named_after_the_cluster_of_its_life(stack_plan: Callable[[str], dict[str, Any]]) -> None:
    plan = stack_plan("aws-prod")
    cluster = one(plan, "aws:eks/cluster:Cluster")
    suffix = one(plan, "random:index/randomString:RandomString", "aws-cluster-suffix")
    assert suffix["urn"] in cluster["propertyDependencies"]["name"]
    logs = inputs(plan, "aws:cloudwatch/logGroup:LogGroup", "aws-eks-control-plane-logs")
    assert logs["name"] == f"/aws/eks/{cluster['inputs']['name']}/cluster"


# --- later `up`s -----------------------------------------------------------------------------------


def test_nothing_the_cloud_keeps_differs_from_what_the_stack_declares(plan: dict[str, Any]) -> None:
    """A refresh would bring back what the cloud keeps differently (labels or taints it adds, a version it
    moved), and the next `up` would try to change it back."""
    assert [(r["name"], r["drift"]) for r in plan["resources"] if r.get("drift")] == []


def test_a_spot_pool_that_left_out_the_aks_label_would_drift(tmp_path: Path) -> None:
    stacks = stack_variant(tmp_path, "azure-dev", "azure-dev")
    plan = json.loads(run_plan_script("azure-dev", stacks, before=(
        "import infra.clouds.azure as a; a.SPOT_TAINT_KEY = 'servestack.io/not-the-aks-label'")).stdout)
    drift = one(plan, "azure-native:containerservice:AgentPool")["drift"]
    assert drift["nodeLabels"]["cloud"]["kubernetes.azure.com/scalesetpriority"] == "spot"


def test_an_addon_build_eks_does_not_publish_fails_the_plan_like_eks() -> None:
    result = run_plan_script("aws-dev", before=(
        "import infra.clouds.aws.cluster as c; c.ADDON_VERSIONS['1.35']['coredns'] = 'v1.14.2-eksbuild.44'"))
    assert result.returncode != 0
    assert ("creating aws:eks/addon:Addon aws-eks-coredns: InvalidParameterException: Addon version specified is "
            "not supported (coredns v1.14.2-eksbuild.44 on Kubernetes 1.35; published: v1.14.2-eksbuild.4)"
            ) in result.stderr


# --- one identity end to end -----------------------------------------------------------------------


def test_the_eks_kubeconfig_and_commands_act_as_the_providers_identity(tmp_path: Path) -> None:
    role = "arn:aws:iam::123456789012:role/deployer"
    stacks = stack_variant(tmp_path, "aws-dev", "aws-dev", **{"aws:profile": "platform",
                                                              "aws:assumeRoles": [{"roleArn": role}]})
    plan = plan_unmasked("aws-dev", stacks)
    kubeconfig = yaml.safe_load(one(plan, "pulumi:providers:kubernetes")["inputs"]["kubeconfig"])
    args = kubeconfig["users"][0]["user"]["exec"]["args"]
    assert args[args.index("--role-arn") + 1] == role and args[args.index("--profile") + 1] == "platform"
    # The node groups' bounds are changed by the same identity: the profile's credentials assume the role.
    script = inputs(plan, "command:local:Command", "aws-eks-gpu-scaling")["create"]
    assert f"aws --profile platform sts assume-role --role-arn {role}" in script


def test_a_fake_that_fails_fails_the_plan_at_once() -> None:
    """An exception whose chain loops back on itself (as the engine's wrapping can make) ends the plan with
    the error, instead of spinning."""
    result = run_plan_script("aws-dev", before=(
        "import servestack.offline.fakes.aws as f\n"
        "def boom(args, ctx):\n"
        "    error = RuntimeError('the fake VPC failed')\n"
        "    error.__context__ = RuntimeError('wrapped'); error.__context__.__context__ = error\n"
        "    raise error\n"
        "f.RESOURCES['aws:ec2/vpc:Vpc'] = boom"))
    assert result.returncode != 0 and "the fake VPC failed" in result.stderr


def test_a_kubeconfig_path_is_the_operators_own_and_not_judged(tmp_path: Path) -> None:
    from servestack.offline.fakes import FakeContext
    from servestack.offline.plan import unreachable_api

    assert unreachable_api({"kubeconfig": str(tmp_path / "kubeconfig")}, FakeContext("local", {})) is None
    private = "apiVersion: v1\nclusters:\n- cluster: {server: 'https://10.0.0.5'}\n  name: c\n"
    assert "10.0.0.5" in (unreachable_api({"kubeconfig": private}, FakeContext("local", {})) or "")
