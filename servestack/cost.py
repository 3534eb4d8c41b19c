"""The cost estimate of a stack, from its offline plan and the price catalog (`infra.catalog`).

What is priced is what the plan would create: the node pools (read as the gpu-budget policy reads them),
the managed control plane, NAT, the serving load balancer (the gateway's, or the serving Service's) and the
public IPv4 addresses AWS and Azure charge for. Machines are priced in the stack's own region (an unknown
region leaves them unpriced, saying so, never priced elsewhere); the fixed fees at the cloud's reference
region's list price. Every line names its price's source and as-of date. Three figures per stack:

- idle: every pool at its minimum, with room for the serving Deployment's minimum replicas;
- peak: every pool at its maximum;
- per replica: the GPU capacity one more serving replica takes, which turns a measured throughput into
  dollars per million output tokens.

Left out, because they depend on traffic and data rather than on the plan: disks (Prometheus' volume among
them), object storage, data transfer, per-GB NAT and load-balancer processing, logs and metrics (CloudWatch
Logs, Log Analytics and Cloud Logging ingestion of the container logs, GKE's managed metrics). The monitoring
pods themselves run on the system nodes, which are priced.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from infra import catalog
from infra.config import REGION_KEYS
from reading import values as v
from reading.load_balancers import GATEWAY, gateway_service, internal_load_balancer
from reading.pools import AKS_CLUSTER, pools
from reading.resources import Resource
from reading.values import BadValue, Unknown
from servestack import terminal

GPU_RESOURCE = "nvidia.com/gpu"
EKS_CLUSTER = "aws:eks/cluster:Cluster"
GKE_CLUSTER = "gcp:container/cluster:Cluster"
AWS_NAT = "aws:ec2/natGateway:NatGateway"
AWS_EIP = "aws:ec2/eip:Eip"
AWS_SUBNET = "aws:ec2/subnet:Subnet"
AZURE_PUBLIC_IP = "azure-native:network:PublicIPAddress"
AZURE_NAT = "azure-native:network:NatGateway"
GCP_NAT = "gcp:compute/routerNat:RouterNat"
SERVICE = "kubernetes:core/v1:Service"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
HPA = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
EXIT_BAD_INPUT = 2


@dataclass(frozen=True)
class Line:
    """One priced item: its hourly price per unit, and how many units run idle and at peak."""

    item: str
    per_hour: float
    idle: int
    peak: int
    source: str = ""  # where the price was read, and when
    as_of: str = ""

    @property
    def idle_per_hour(self) -> float:
        return self.per_hour * self.idle

    @property
    def peak_per_hour(self) -> float:
        return self.per_hour * self.peak


@dataclass(frozen=True)
class Estimate:
    stack: str
    cloud: str
    lines: tuple[Line, ...]
    replica_per_hour: float | None  # the GPU capacity of one serving replica; None without a priced GPU pool
    gpu: str | None = None  # e.g. "nvidia-l4 x1 on g6.xlarge, spot"
    unpriced: tuple[str, ...] = field(default_factory=tuple)  # what the catalog cannot price
    min_replicas: int = 1  # of the serving Deployment (its autoscaler's minimum)
    region: str | None = None
    gpu_machine: catalog.GpuMachine | None = None  # of the serving pool

    @property
    def idle_per_hour(self) -> float:
        return sum(line.idle_per_hour for line in self.lines)

    @property
    def peak_per_hour(self) -> float:
        return sum(line.peak_per_hour for line in self.lines)

    def per_million_tokens(self, tokens_per_second: float) -> float | None:
        """Dollars per million output tokens for one replica serving `tokens_per_second` without pause."""
        if self.replica_per_hour is None or tokens_per_second <= 0:
            return None
        return self.replica_per_hour / (tokens_per_second * 3600) * 1_000_000

    def to_dict(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "cloud": self.cloud,
            "region": self.region,
            "gpu": self.gpu,
            "idle_per_hour": round(self.idle_per_hour, 4),
            "peak_per_hour": round(self.peak_per_hour, 4),
            "replica_per_hour": None if self.replica_per_hour is None else round(self.replica_per_hour, 4),
            "min_replicas": self.min_replicas,
            "lines": [{"item": line.item, "per_hour": line.per_hour, "idle": line.idle, "peak": line.peak,
                       "source": line.source, "as_of": line.as_of} for line in self.lines],
            "unpriced": list(self.unpriced),
        }


class PlanShapeError(ValueError):
    pass


def _resources(plan: Mapping[str, Any]) -> list[Resource]:
    try:
        return [Resource(r["type"], r["urn"], r["name"], v.as_dict(v.plain(r.get("inputs") or {})),
                         r.get("parent"), tuple(r.get("dependencies") or ()), r.get("propertyDependencies") or {})
                for r in plan["resources"]]
    except (KeyError, TypeError, AttributeError) as error:
        raise PlanShapeError(f"not a servestack plan: a resource lacks {error}") from error


def _count(value: Any, default: int) -> int:
    try:
        return v.port_number(value)  # a whole number given as int, float or string
    except BadValue:
        return default


def _serving_shape(resources: Sequence[Resource]) -> tuple[int, int]:
    """(GPUs per serving replica, minimum replicas), from the serving Deployment and its autoscaler."""
    gpus, replicas = 0, 0
    for r in resources:
        if r.type == DEPLOYMENT:
            containers = v.items(v.dig(r.props, "spec", "template", "spec", "containers"))
            gpus = max(gpus, sum(_count(v.dig(c, "resources", "limits", GPU_RESOURCE), 0) for c in containers))
            replicas = max(replicas, _count(v.dig(r.props, "spec", "replicas"), 1))
    for r in resources:
        if r.type == HPA:
            replicas = _count(v.dig(r.props, "spec", "minReplicas"), 1)
    return gpus, replicas


def estimate(plan: Mapping[str, Any]) -> Estimate:
    """Price one stack's plan (see the module docstring)."""
    if not isinstance(plan, Mapping) or "stack" not in plan or not isinstance(plan.get("resources"), list):
        raise PlanShapeError("not a servestack plan: it needs a 'stack' and a 'resources' list")
    config = plan.get("config") or {}
    cloud = str(config.get("servestack:cloud") or (plan.get("outputs") or {}).get("cloud") or "local")
    resources = _resources(plan)
    gpus_per_replica, min_replicas = _serving_shape(resources)
    if cloud not in catalog.PRICED_CLOUDS:  # the local stack: a cluster that exists and is paid elsewhere
        return Estimate(str(plan["stack"]), cloud, (), None, min_replicas=min_replicas)
    region = str(config.get(REGION_KEYS[cloud]) or "")
    lines: list[Line] = []
    unpriced: list[str] = []
    floor_left = min_replicas  # serving replicas the GPU pools must hold even when idle
    replica_per_hour: float | None = None
    gpu: str | None = None
    serving_machine: catalog.GpuMachine | None = None
    nodes_idle = nodes_peak = 0

    def fee(item: str, name: str, idle: int = 1, peak: int = 1) -> None:
        price = catalog.fee(cloud, name)
        lines.append(Line(item, price.usd_per_hour, idle, peak, price.source, price.as_of))

    try:
        found = pools(resources)
    except (BadValue, TypeError, AttributeError) as error:
        raise PlanShapeError(f"a node pool of this plan cannot be read: {error}") from error
    for pool in found:
        if isinstance(pool.min_nodes, Unknown) or isinstance(pool.max_nodes, Unknown) or not pool.machine_types:
            unpriced.append(f"node pool {pool.label}: size or machine type unknown in the plan")
            continue
        machine_type = pool.machine_types[0]
        idle, peak = int(pool.min_nodes), int(pool.max_nodes)
        gpu_machine = _gpu_machine(pool.cloud, machine_type)
        spot = pool.spot is True
        try:
            if gpu_machine is not None:
                price = gpu_machine.price(region, spot)
            elif (cpu := catalog.cpu_price(pool.cloud, region, machine_type)) is not None:
                price = cpu
            else:
                unpriced.append(f"node pool {pool.label}: no price for {machine_type} on {pool.cloud}")
                continue
        except catalog.Unpriced as error:
            unpriced.append(f"node pool {pool.label}: {error}")
            continue
        if gpu_machine is not None:
            per_node = gpu_machine.gpus // gpus_per_replica if gpus_per_replica else 1  # replicas per node
            if per_node == 0:
                unpriced.append(f"serving replicas: {gpus_per_replica} GPUs each, but {machine_type} has "
                                f"{gpu_machine.gpus}; they cannot be scheduled on {pool.label}")
                per_node = 1
            # The Deployment's minimum replicas need GPU nodes even when the pool's own minimum is lower.
            held = min(peak, math.ceil(floor_left / per_node)) if gpus_per_replica else 0
            floor_left = max(0, floor_left - held * per_node)
            idle = max(idle, held)
            if replica_per_hour is None:  # the first GPU pool serves; a second one only adds capacity
                replica_per_hour = price.usd_per_hour / per_node
                serving_machine = gpu_machine
            gpu = gpu or f"{gpu_machine.gpu_type} x{gpu_machine.gpus} on {machine_type}" + (", spot" if spot else "")
            item = f"GPU nodes {pool.label}: {machine_type}" + (" spot" if spot else "")
        else:
            item = f"nodes {pool.label}: {machine_type}"
        nodes_idle += idle
        nodes_peak += peak
        lines.append(Line(item, price.usd_per_hour, idle, peak, price.source, price.as_of))

    for r in resources:
        if r.type in (EKS_CLUSTER, GKE_CLUSTER):
            fee(f"control plane {r.name}", "control_plane")
        elif r.type == AKS_CLUSTER:
            tier = str(v.dig(r.props, "sku", "tier") or "Free").lower()
            try:
                fee(f"control plane {r.name} ({tier} tier)", f"aks_{tier}")
            except catalog.Unpriced:
                unpriced.append(f"control plane {r.name}: unknown AKS tier {tier!r}")
        elif r.type in (AWS_NAT, AZURE_NAT):
            fee(f"NAT gateway {r.name}", "nat_gateway")
        elif r.type in (SERVICE, GATEWAY) and (balanced := _load_balancer(r, resources)) is not None:
            fee(f"load balancer {r.name}", "load_balancer")
            addresses = _load_balancer_addresses(cloud, *balanced, resources)
            if addresses:
                fee(f"public IPv4 of load balancer {r.name}", "public_ipv4", addresses, addresses)
        elif r.type in (AWS_EIP, AZURE_PUBLIC_IP):
            fee(f"public IPv4 {r.name}", "public_ipv4")
    for r in resources:
        if r.type == GCP_NAT:  # charged per VM behind it, up to a cap
            fee(f"Cloud NAT {r.name} (per VM)", "nat_per_vm", min(nodes_idle, catalog.GCP_NAT_MAX_VMS),
                min(nodes_peak, catalog.GCP_NAT_MAX_VMS))

    return Estimate(str(plan["stack"]), cloud, tuple(lines), replica_per_hour, gpu, tuple(unpriced), min_replicas,
                    region, serving_machine)


def _load_balancer(maker: Resource, resources: Sequence[Resource]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The annotations and spec of the LoadBalancer Service a Service is, or a Gateway's controller makes (as the
    Gateway's EnvoyProxy describes it); None when it makes no load balancer."""
    if maker.type == GATEWAY:
        service = gateway_service(maker, list(resources))
        annotations, spec = service.get("annotations"), service
    else:
        annotations, spec = v.dig(maker.props, "metadata", "annotations"), v.dig(maker.props, "spec")
    if not isinstance(spec, dict) or spec.get("type") != "LoadBalancer":
        return None
    return (annotations if isinstance(annotations, dict) else {}), spec


def _load_balancer_addresses(cloud: str, annotations: dict[str, Any], spec: dict[str, Any],
                             resources: Sequence[Resource]) -> int:
    """The public addresses a load balancer holds: an internet-facing NLB one in each public subnet (tagged for
    load balancers), an Azure one for its frontend; none when internal."""
    internal = internal_load_balancer(annotations, spec)
    if internal or cloud == "gcp":  # GCP's forwarding rule includes its address
        return 0
    if cloud == "aws":
        return sum(1 for r in resources if r.type == AWS_SUBNET
                   and v.dig(r.props, "tags", "kubernetes.io/role/elb") == "1")
    return 1


def _gpu_machine(cloud: str, machine_type: str) -> catalog.GpuMachine | None:
    try:
        return catalog.machine(cloud, machine_type)
    except catalog.UnknownMachine:
        return None


# --- `servestack cost` ------------------------------------------------------------------------------


def print_estimate(console: Console, estimate: Estimate) -> None:
    if not estimate.lines:
        console.print(f"{estimate.stack}: nothing to price (a {estimate.cloud} stack runs on a cluster that exists)")
        return
    table = Table(title=f"estimated cost of {estimate.stack} ({estimate.cloud} {estimate.region}), US$ per hour, "
                        "list prices",
                  title_justify="left", caption="idle: every pool at its minimum, the serving minimum replicas up; "
                  "peak: every pool at its maximum", caption_justify="left")
    for column in ("item", "$/h each", "idle", "$/h idle", "peak", "$/h peak", "price as of"):
        table.add_column(column, justify="left" if column == "item" else "right")
    for line in estimate.lines:
        table.add_row(escape(line.item), f"{line.per_hour:.4f}", str(line.idle), f"{line.idle_per_hour:.3f}",
                      str(line.peak), f"{line.peak_per_hour:.3f}", line.as_of)
    table.add_row("[bold]total", "", "", f"[bold]{estimate.idle_per_hour:.3f}", "",
                  f"[bold]{estimate.peak_per_hour:.3f}", "")
    console.print(table)
    if estimate.replica_per_hour is not None:
        console.print(f"one serving replica ({estimate.gpu}): ${estimate.replica_per_hour:.3f}/h")
    for item in estimate.unpriced:
        console.print(f"[yellow]not priced:[/] {escape(item)}")


def register(commands: Any) -> None:
    """Add the `cost` subcommand to the servestack command line."""
    parser = commands.add_parser("cost", help="the estimated $/hour of a stack, from its offline plan")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--stack", help="stack name (stacks/Pulumi.NAME.yaml): plan it, then price it")
    source.add_argument("--plan", type=Path, help="a plan JSON written by `servestack plan --json`")
    parser.add_argument("--json", type=Path, help="write the estimate as JSON here")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from servestack.offline.plan import PlanError, load_plan, plan_in_subprocess

    try:
        if args.plan is not None:
            plan = load_plan(args.plan)
        else:
            with terminal.console.status(f"planning {args.stack} under the mock runtime"):
                plan = plan_in_subprocess(args.stack)
        result = estimate(plan)
    except (PlanError, OSError, ValueError) as error:  # PlanShapeError is a ValueError
        terminal.errors.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
        return EXIT_BAD_INPUT
    print_estimate(terminal.console, result)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        terminal.console.print(f"estimate written to {args.json}")
    return 0
