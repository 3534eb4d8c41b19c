"""The cost estimate of a plan: exact lines and totals for real stack plans, and the edges that change them."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from servestack.cost import Estimate, Line, estimate

REPO = Path(__file__).resolve().parents[2]
Plan = Callable[[str], dict[str, Any]]


def lines(e: Estimate) -> list[tuple[str, float, int, int]]:
    return sorted((line.item, line.per_hour, line.idle, line.peak) for line in e.lines)


def test_aws_dev_prices_every_hourly_resource_of_the_plan(stack_plan: Plan) -> None:
    e = estimate(stack_plan("aws-dev"))
    assert lines(e) == sorted([
        # GPU pool 0..2 spot, held at one node by the serving Deployment's one minimum replica
        ("GPU nodes aws-eks-gpu-nodes: g6.xlarge spot", 0.33, 1, 2),
        ("nodes aws-eks-system-nodes: m6i.large", 0.096, 1, 2),
        ("NAT gateway aws-network-nat-0", 0.045, 1, 1),
        ("control plane aws-eks-cluster", 0.10, 1, 1),
        ("load balancer servestack-gateway", 0.0225, 1, 1),
        # AWS charges every public IPv4 address: the NAT gateway's, and the NLB's in each of its two subnets.
        ("public IPv4 aws-network-nat-0-ip", 0.005, 1, 1),
        ("public IPv4 of load balancer servestack-gateway", 0.005, 2, 2),
    ])
    assert e.idle_per_hour == pytest.approx(0.33 + 0.096 + 0.045 + 0.10 + 0.0225 + 3 * 0.005)
    assert e.peak_per_hour == pytest.approx(0.66 + 0.192 + 0.045 + 0.10 + 0.0225 + 3 * 0.005)
    assert e.replica_per_hour == 0.33
    assert e.gpu == "nvidia-l4 x1 on g6.xlarge, spot"
    assert e.unpriced == ()


def test_gcp_prod_counts_cloud_nat_per_vm_and_keeps_room_for_the_minimum_replicas(stack_plan: Plan) -> None:
    e = estimate(stack_plan("gcp-prod"))
    assert lines(e) == sorted([
        ("GPU nodes servestack-gpu-pool: g2-standard-4", 0.707, 2, 8),  # pool minimum 1, minReplicas 2
        ("nodes servestack-system-pool: e2-standard-2", 0.067, 2, 4),
        ("control plane servestack-cluster", 0.10, 1, 1),
        ("load balancer servestack-gateway", 0.025, 1, 1),
        ("Cloud NAT servestack-nat (per VM)", 0.0014, 4, 12),  # every node of every pool
    ])
    assert e.idle_per_hour == pytest.approx(1.414 + 0.134 + 0.1 + 0.025 + 4 * 0.0014)


def test_azure_prices_the_aks_tier_of_each_environment(stack_plan: Plan) -> None:
    dev, prod = estimate(stack_plan("azure-dev")), estimate(stack_plan("azure-prod"))
    assert ("control plane servestack-aks (free tier)", 0.0, 1, 1) in lines(dev)
    assert ("control plane servestack-aks (standard tier)", 0.10, 1, 1) in lines(prod)
    assert ("GPU nodes servestack-gpu-pool: Standard_NC4as_T4_v3 spot", 0.16, 1, 2) in lines(dev)
    assert ("GPU nodes servestack-gpu-pool: Standard_NC24ads_A100_v4", 3.673, 2, 8) in lines(prod)
    assert ("nodes servestack-aks.agentPoolProfiles[0]: Standard_D4ds_v5", 0.226, 1, 3) in lines(dev)
    # The NAT gateway's static IP and the load balancer's frontend.
    assert ("public IPv4 servestack-egress-ip", 0.005, 1, 1) in lines(dev)
    assert ("public IPv4 of load balancer servestack-gateway", 0.005, 1, 1) in lines(dev)


def test_an_internal_load_balancer_holds_no_public_address(stack_plan: Plan) -> None:
    """The gateway's load balancer is the Service its EnvoyProxy describes."""
    plan = copy.deepcopy(stack_plan("aws-dev"))
    proxy = next(r for r in plan["resources"] if r["type"] == "kubernetes:gateway.envoyproxy.io/v1alpha1:EnvoyProxy")
    service = proxy["inputs"]["spec"]["provider"]["kubernetes"]["envoyService"]
    service["annotations"]["service.beta.kubernetes.io/aws-load-balancer-scheme"] = "internal"
    assert not any(item.startswith("public IPv4 of load balancer") for item, *_ in lines(estimate(plan)))
    # Reached through a port-forward, the gateway makes no load balancer at all.
    service["type"] = "ClusterIP"
    assert not any(item.startswith("load balancer") for item, *_ in lines(estimate(plan)))


def test_the_local_stack_has_nothing_to_price(stack_plan: Plan) -> None:
    e = estimate(stack_plan("local"))
    assert (e.lines, e.idle_per_hour, e.replica_per_hour, e.per_million_tokens(100.0)) == ((), 0, None, None)


def test_a_machine_type_the_catalog_cannot_price_is_named_not_guessed(stack_plan: Plan) -> None:
    plan = copy.deepcopy(stack_plan("aws-dev"))
    system = next(r for r in plan["resources"] if r["name"] == "aws-eks-system-nodes")
    system["inputs"]["instanceTypes"] = ["c7gn.16xlarge"]
    e = estimate(plan)
    assert e.unpriced == ("node pool aws-eks-system-nodes: no price for c7gn.16xlarge on aws",)
    assert not any("system" in line.item for line in e.lines)


def test_a_pool_minimum_above_the_replicas_is_its_own_floor(stack_plan: Plan) -> None:
    plan = copy.deepcopy(stack_plan("aws-dev"))
    gpu = next(r for r in plan["resources"] if r["name"] == "aws-eks-gpu-nodes")
    gpu["inputs"]["scalingConfig"]["minSize"] = 2.0
    assert ("GPU nodes aws-eks-gpu-nodes: g6.xlarge spot", 0.33, 2, 2) in lines(estimate(plan))


def test_a_replica_wanting_more_gpus_than_a_node_has_is_named_unschedulable(stack_plan: Plan) -> None:
    plan = copy.deepcopy(stack_plan("aws-dev"))
    deployment = next(r for r in plan["resources"] if r["type"] == "kubernetes:apps/v1:Deployment")
    deployment["inputs"]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "2"
    assert estimate(plan).unpriced == ("serving replicas: 2 GPUs each, but g6.xlarge has 1; they cannot be "
                                       "scheduled on aws-eks-gpu-nodes",)


def test_dollars_per_million_tokens_follow_from_one_replica_per_hour() -> None:
    e = Estimate("s", "aws", (Line("GPU", 0.805, 1, 2),), replica_per_hour=0.805)
    assert e.per_million_tokens(1000.0) == pytest.approx(0.805 / 3.6)  # 3.6M tokens in an hour
    assert e.per_million_tokens(0.0) is None


def test_the_cost_command_prints_the_lines_and_writes_json(stack_plan: Plan, tmp_path: Path) -> None:
    plan_file = tmp_path / "aws-prod.json"
    plan_file.write_text(json.dumps(stack_plan("aws-prod")))
    out = tmp_path / "cost.json"
    result = subprocess.run([sys.executable, "-m", "servestack.cli", "cost", "--plan", str(plan_file), "--json",
                             str(out)], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "NAT gateway aws-network-nat-2" in result.stdout
    assert "one serving replica (nvidia-l4 x1 on g6.xlarge): $0.805/h" in result.stdout
    written = json.loads(out.read_text())
    # Three NAT gateways with an address each, and the NLB's address in each of three subnets.
    assert written["idle_per_hour"] == pytest.approx(2 * 0.096 + 2 * 0.805 + 3 * 0.045 + 0.10 + 0.0225 + 6 * 0.005)
    assert written["peak_per_hour"] == pytest.approx(3 * 0.096 + 8 * 0.805 + 3 * 0.045 + 0.10 + 0.0225 + 6 * 0.005)


def test_the_cost_command_refuses_a_missing_plan_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    result = subprocess.run([sys.executable, "-m", "servestack.cli", "cost", "--plan", str(missing)],
                            capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 2
    assert str(missing) in result.stderr and "Traceback" not in result.stderr
