"""How long a terminating pod takes, and why: the timeline the deployment and the config checks share.

A serving pod that gets SIGTERM first pauses (preStop) while whatever sends it requests learns that it is
going, then the server drains (finishes what it holds, refuses new work with 503), then it shuts down.
Who sends it requests decides the pause:

- behind the gateway, Envoy learns of the pod's removal from the EndpointSlice within a second or two, and
  sends it nothing new: a short pause suffices;
- behind the cloud's L4 load balancer (no gateway), with externalTrafficPolicy Local, the load balancer keeps
  sending new connections to the node until its health checks on the healthCheckNodePort fail, which takes
  interval x unhealthy threshold: AWS NLB 10 s x 2 (the load balancer controller's defaults for Local),
  GKE's backend-service NLB (`cloud.google.com/l4-rbs`) 3 s x 2, Azure 5 s x 2.

The gateway's own Envoy pods face the load balancer in the same way: they keep accepting for that long
before they drain (EnvoyProxy `shutdown.minDrainDuration`).

On spot nodes the cloud's preemption notice bounds the whole timeline: AWS gives two minutes; Azure
30 s (AKS cordons and drains the node on the preempt event); GKE 15 s to non-system pods unless the node
pool's graceful shutdown is extended, which servestack does (GKE_SPOT_SHUTDOWN_SECONDS).
"""

from __future__ import annotations

# Seconds until the cloud's load balancer stops sending new connections to a node whose pod is going.
LB_UNHEALTHY_AFTER = {"aws": 20, "gcp": 6, "azure": 10, "local": 10}
# Headroom over the health checks' own timing: propagation, a probe in flight.
MARGIN_SECONDS = 10
# Behind the gateway: the EndpointSlice update reaching Envoy (xDS) takes a second or two.
GATEWAY_PRE_STOP_SECONDS = 5
# After the drain the server still shuts down: uvicorn's graceful shutdown (up to 5 s, serving/__main__.py),
# then the engine's stop. Time for both, before the kubelet's SIGKILL.
SHUTDOWN_SECONDS = 10
DEFAULT_DRAIN_SECONDS = 30
# GKE spot pools: the graceful node shutdown servestack sets (the most GKE allows for spot, on 1.35.0-gke.1171000
# and later), and the part of it kept for system-critical pods (the rest is the serving pods').
GKE_SPOT_SHUTDOWN_SECONDS = 120
GKE_SPOT_CRITICAL_PODS_SECONDS = 15
# The time a serving pod has between the preemption notice and the node's end, on spot nodes.
SPOT_NOTICE_SECONDS = {"aws": 120, "azure": 30, "gcp": GKE_SPOT_SHUTDOWN_SECONDS - GKE_SPOT_CRITICAL_PODS_SECONDS}


def pre_stop_seconds(cloud: str, behind_gateway: bool) -> int:
    if behind_gateway:
        return GATEWAY_PRE_STOP_SECONDS
    return LB_UNHEALTHY_AFTER.get(cloud, LB_UNHEALTHY_AFTER["local"]) + MARGIN_SECONDS


def grace_seconds(cloud: str, behind_gateway: bool, drain_seconds: int) -> int:
    """The pod's terminationGracePeriodSeconds: pause, drain, shutdown."""
    return pre_stop_seconds(cloud, behind_gateway) + drain_seconds + SHUTDOWN_SECONDS


def max_drain_seconds(cloud: str, behind_gateway: bool, spot: bool) -> int | None:
    """The longest drain that fits the preemption notice of a spot pool (None: no bound)."""
    if not spot or cloud not in SPOT_NOTICE_SECONDS:
        return None
    return SPOT_NOTICE_SECONDS[cloud] - pre_stop_seconds(cloud, behind_gateway) - SHUTDOWN_SECONDS


def envoy_min_drain_seconds(cloud: str) -> int:
    """How long a terminating Envoy pod keeps accepting, until the load balancer has failed it out."""
    return LB_UNHEALTHY_AFTER.get(cloud, LB_UNHEALTHY_AFTER["local"]) + MARGIN_SECONDS
