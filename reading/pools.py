"""A stack's node pools, read from the node-pool resources themselves (EKS node groups, GKE node pools, AKS
agent pools and a cluster's inline pools): machine types, node bounds, spot, and whether they are GPU pools.
What is priced and budgeted is what would be deployed, not what the config says."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from infra import catalog
from reading import values as v
from reading.resources import Resource
from reading.values import Unknown

EKS_NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
GKE_CLUSTER = "gcp:container/cluster:Cluster"
GKE_NODE_POOL = "gcp:container/nodePool:NodePool"
AKS_CLUSTER = "azure-native:containerservice:ManagedCluster"
AKS_POOL = "azure-native:containerservice:AgentPool"
GPU_TAINT = "nvidia.com/gpu"
# GKE spreads a regional cluster's node pools over three zones unless nodeLocations says otherwise.
GKE_DEFAULT_ZONES = 3
_ZONE = re.compile(r"^[a-z]+-[a-z]+\d+-[a-z]$")
# GPU machine families, so that a GPU pool of a machine type missing from the catalog is "cannot verify"
# rather than passed as a CPU pool: AWS g*/p* (g4dn, g6e, p5, ...), GCP a2/a3/g2/..., Azure N-series.
GPU_FAMILIES = {
    "aws": re.compile(r"^[gp]\d+[a-z]*\.", re.IGNORECASE),
    "gcp": re.compile(r"^(a\d+|g[2-9])-", re.IGNORECASE),  # g1-small is a shared-core CPU type
    "azure": re.compile(r"^standard_n", re.IGNORECASE),
}


@dataclass(frozen=True)
class Pool:
    resource: Resource
    label: str
    cloud: str
    machine_types: tuple[str, ...]
    max_nodes: int | Unknown
    spot: bool | Unknown
    tainted: bool
    min_nodes: int | Unknown = 0  # what the pool keeps when idle (the cost estimate's floor)


def known_machine(cloud: str, machine_type: str) -> catalog.GpuMachine | None:
    try:
        return catalog.machine(cloud, machine_type)
    except catalog.UnknownMachine:
        return None


def _count(value: Any) -> int | Unknown | None:
    if isinstance(value, Unknown) or value is None:
        return value
    return v.port_number(value)  # a whole number given as int, float or string


def _has_gpu_taint(taints: Any) -> bool:
    for taint in v.items(taints):
        if isinstance(taint, Unknown):
            continue
        key = taint.get("key") if isinstance(taint, dict) else str(taint).split("=", 1)[0].split(":", 1)[0]
        if key == GPU_TAINT:
            return True
    return False


def _aks_pool(resource: Resource, label: str, p: dict[str, Any]) -> Pool:
    auto = p.get("enableAutoScaling")
    if isinstance(auto, Unknown):
        max_nodes: int | Unknown | None = auto
        min_nodes: int | Unknown | None = auto
    else:
        scales = v.truthy(auto or False)
        max_nodes = _count(p.get("maxCount") if scales else p.get("count"))
        min_nodes = _count(p.get("minCount") if scales else p.get("count"))
    priority = p.get("scaleSetPriority")
    spot = priority if isinstance(priority, Unknown) else str(priority or "").lower() == "spot"
    size = p.get("vmSize")
    return Pool(resource, label, "azure", (size,) if isinstance(size, str) else (),
                1 if max_nodes is None else max_nodes, spot, _has_gpu_taint(p.get("nodeTaints")),
                1 if min_nodes is None else min_nodes)


def _gke_zones(pool: Resource, clusters: dict[str, Resource]) -> int:
    locations = pool.props.get("nodeLocations")
    if isinstance(locations, list) and locations:
        return len(locations)
    owner = next((clusters[u] for u in (*pool.property_dependencies.get("cluster", ()), *pool.dependencies)
                  if u in clusters), None)
    if owner is not None:
        cluster_locations = owner.props.get("nodeLocations")
        if isinstance(cluster_locations, list) and cluster_locations:
            return len(cluster_locations)
    location = pool.props.get("location") or (owner.props.get("location") if owner else None)
    return 1 if isinstance(location, str) and _ZONE.match(location) else GKE_DEFAULT_ZONES


def _gke_nodes(pool: Resource, clusters: dict[str, Resource], auto: dict[str, Any] | None, total_key: str,
               per_zone_key: str, fixed: int | Unknown | None, unset: int) -> int | Unknown:
    """A GKE pool's node bound: the autoscaler's total, or its per-zone bound (or the fixed count; `unset`
    where neither is given) times the pool's zones."""
    total = _count(auto.get(total_key)) if auto else None
    if total is not None:
        return total
    per_zone = _count(auto.get(per_zone_key)) if auto else fixed
    if isinstance(per_zone, Unknown):
        return per_zone
    if per_zone is None:
        per_zone = unset
    return per_zone * _gke_zones(pool, clusters)


def pools(resources: list[Resource]) -> list[Pool]:
    clusters = {r.urn: r for r in resources if r.type == GKE_CLUSTER}
    found: list[Pool] = []
    for r in resources:
        p = r.props
        if r.type == EKS_NODE_GROUP:
            types = v.as_list(p.get("instanceTypes"))
            capacity = p.get("capacityType")
            found.append(Pool(
                r, r.name, "aws", tuple(t for t in v.items(types) if isinstance(t, str)),
                _count(v.dig(p, "scalingConfig", "maxSize")) or 0,
                capacity if isinstance(capacity, Unknown) else str(capacity or "").upper() == "SPOT",
                _has_gpu_taint(p.get("taints")), _count(v.dig(p, "scalingConfig", "minSize")) or 0))
        elif r.type == GKE_NODE_POOL:
            node = v.as_dict(p.get("nodeConfig"))
            auto = p.get("autoscaling") if isinstance(p.get("autoscaling"), dict) else None
            fixed = _count(p.get("nodeCount") if p.get("nodeCount") is not None else p.get("initialNodeCount"))
            # without autoscaling a pool runs nodeCount per zone, or initialNodeCount where that is unset
            max_nodes = _gke_nodes(r, clusters, auto, "totalMaxNodeCount", "maxNodeCount", fixed, unset=1)
            min_nodes = _gke_nodes(r, clusters, auto, "totalMinNodeCount", "minNodeCount", fixed,
                                   unset=0 if auto else 1)
            spot_flags = [node.get("spot"), node.get("preemptible")]
            unknown_spot = next((f for f in spot_flags if isinstance(f, Unknown)), None)
            machine = node.get("machineType")
            found.append(Pool(r, r.name, "gcp", (machine,) if isinstance(machine, str) else (), max_nodes,
                              unknown_spot or any(v.truthy(f) is True for f in spot_flags if f is not None),
                              _has_gpu_taint(node.get("taints")) or bool(node.get("guestAccelerators")),
                              min_nodes))
        elif r.type == AKS_POOL:
            found.append(_aks_pool(r, r.name, p))
        elif r.type == AKS_CLUSTER:
            for i, profile in enumerate(v.items(p.get("agentPoolProfiles"))):
                if isinstance(profile, dict):
                    found.append(_aks_pool(r, f"{r.name}.agentPoolProfiles[{i}]", profile))
    return found
