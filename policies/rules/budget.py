"""The GPU budget: what the stack's GPU node pools cost per hour at their maximum scale.

Capacity is read from the node-pool resources themselves (not from the stack's config), so that
what is priced is what would be deployed. A pool is a GPU pool when it carries the nvidia.com/gpu
taint, the price catalog knows its machine type, or the type is of a GPU family (a GPU pool the catalog
cannot price is "cannot verify"). Prices come from `infra.catalog`.
"""

from __future__ import annotations

from typing import Any

from pulumi_policy import EnforcementLevel, Severity

from policies.rules.common import Judge, Rule
from reading.pools import AKS_CLUSTER, AKS_POOL, EKS_NODE_GROUP, GKE_NODE_POOL, GPU_FAMILIES, known_machine, pools
from reading.resources import Resource
from reading.values import BadValue, Unknown


def check_budget(resources: list[Resource], config: dict[str, Any], judge: Judge) -> None:
    lines: list[str] = []
    total = 0.0
    try:
        found = pools(resources)
    except BadValue as e:
        judge.unknown(f"a node pool's size: {e}")
        return
    for pool in found:
        known = [m for m in (known_machine(pool.cloud, t) for t in pool.machine_types) if m is not None]
        family = GPU_FAMILIES[pool.cloud]
        if not known and not pool.tainted and not any(family.match(t) for t in pool.machine_types):
            continue  # a CPU pool
        if isinstance(pool.max_nodes, Unknown) or isinstance(pool.spot, Unknown):
            unknown = pool.max_nodes if isinstance(pool.max_nodes, Unknown) else pool.spot
            judge.unknown(f"GPU pool {pool.label}: {unknown}")
            continue
        if len(known) < len(pool.machine_types) or not known:
            judge.unknown(f"GPU pool {pool.label}: machine type(s) {list(pool.machine_types)} are not in the "
                          f"price catalog for {pool.cloud}")
            continue
        price = max(m.price_per_hour(pool.spot) for m in known)  # the dearest type the pool may launch
        cost = pool.max_nodes * price
        total += cost
        lines.append(f"{pool.label}: {pool.max_nodes} x {'/'.join(pool.machine_types)} "
                     f"{'spot' if pool.spot else 'on-demand'} at ${price:.3f}/h = ${cost:.2f}/h")
    if not lines:
        return
    budget = config.get("budgetPerHour")
    if budget is None:
        judge.unknown("the policy config sets no budgetPerHour for this stack "
                      f"(GPU capacity at max scale: ${total:.2f}/h)")
        return
    if total > float(budget):
        judge.violation(f"GPU capacity at max scale costs ${total:.2f}/h, over the budget of "
                        f"${float(budget):.2f}/h: " + "; ".join(lines) + ". Lower maxNodes, use spot "
                        "capacity or a smaller machine type, or raise servestack:budgetPerHour.")


BUDGET_RULES = [
    Rule(
        name="gpu-budget",
        description="The stack's GPU node pools at maximum scale, priced from the catalog, stay within the "
                    "stack's $/hour budget.",
        severity=Severity.HIGH,
        enforcement=EnforcementLevel.MANDATORY,
        remediation="Lower the GPU pool's maxNodes, use spot capacity or a cheaper machine type, or raise "
                    "servestack:budgetPerHour (and regenerate the stack's policy config).",
        types=frozenset({EKS_NODE_GROUP, GKE_NODE_POOL, AKS_POOL, AKS_CLUSTER}),
        check=check_budget,
        stack=True,
        config={"budgetPerHour": {
            "type": "number", "exclusiveMinimum": 0,
            "description": "The stack's budget for GPU capacity at max scale, $/hour."}},
    ),
]
