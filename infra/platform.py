"""The Platform value: what a cluster offers the cloud-neutral serving deployment.

Each module in `infra/clouds/` builds its cloud's cluster and returns one of these. Downstream code never
asks which cloud it is on: whatever differs between clouds (how GPU nodes are selected and tainted,
load-balancer annotations, the workload-identity annotation and pod label, whether a device plugin must
be installed) is a field here. `cluster` is the escape hatch for the rare caller that needs the
underlying resource.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

# The taint every GPU pool carries, on every cloud, so that only pods asking for GPUs land there.
GPU_TAINT_KEY = "nvidia.com/gpu"
GPU_TAINT_VALUE = "present"
GPU_TAINT_EFFECT = "NoSchedule"
# The label every GPU pool carries, on every cloud, beside the cloud's own labels.
GPU_POOL_LABEL = "servestack.io/pool"
GPU_POOL_VALUE = "gpu"


@dataclass(frozen=True)
class Toleration:
    key: str
    effect: str
    value: str | None = None  # None with operator Exists
    operator: str = "Equal"

    def to_args(self) -> k8s.core.v1.TolerationArgs:
        return k8s.core.v1.TolerationArgs(key=self.key, operator=self.operator, value=self.value,
                                          effect=self.effect)


GPU_TOLERATION = Toleration(key=GPU_TAINT_KEY, value=GPU_TAINT_VALUE, effect=GPU_TAINT_EFFECT)


@dataclass(frozen=True)
class Upload:
    """Something the operator puts into a store the stack creates (the serving image, the model): a shell
    command that succeeds once it is there, and the shell lines that put it there."""

    what: str
    check: pulumi.Input[str]
    steps: Sequence[pulumi.Input[str]]
    setup: str = ""  # shell lines run once before the first check (credentials)


def model_push_step(revision: str) -> str:
    """How the operator uploads a model directory as a revision of the stack's bucket."""
    return f"servestack model push --stack {pulumi.get_stack()} --revision {revision} ./MODEL_DIR"


@dataclass(frozen=True)
class AcmeDns:
    """How cert-manager proves to the ACME server that the stack owns its hostname (the DNS-01 challenge, in
    the cloud's DNS zone, as a workload identity), and how the hostname is pointed at the gateway there.

    DNS-01 rather than HTTP-01: the entry admits only `access.endpointCidrs`, so the ACME server could never
    fetch an HTTP challenge from it."""

    # The Issuer's `dns01` solver (cert-manager.io/v1), values may be Outputs.
    solver: Mapping[str, Any]
    # The cert-manager controller's service account annotations and pod labels for its workload identity.
    service_account_annotations: Mapping[str, pulumi.Input[str]]
    pod_labels: Mapping[str, str]
    # The identity, its federation and its grants on the zone: cert-manager waits for them.
    ready: Sequence[pulumi.Resource]
    # (resource name, hostname, the gateway's address: a DNS name or an IP, options) -> the DNS record.
    record: Callable[[str, str, pulumi.Output[str], pulumi.ResourceOptions], pulumi.Resource]


@dataclass(frozen=True)
class ManagedExporter:
    """A metrics exporter the cloud runs by itself: where its pods are and which named port serves metrics."""

    namespace: str
    pod_labels: Mapping[str, str]
    port: str


@dataclass(frozen=True)
class Platform:
    cloud: str
    k8s_provider: k8s.Provider
    # How GPU pods find GPU nodes: a node selector and the tolerations of the pool's taints.
    gpu_node_selector: Mapping[str, str]
    gpu_tolerations: Sequence[Toleration]
    # True where nothing on the nodes advertises nvidia.com/gpu yet (the NVIDIA device plugin is needed).
    needs_device_plugin: bool
    registry_url: pulumi.Input[str] | None = None
    model_bucket_uri: pulumi.Input[str] | None = None
    service_account_annotations: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    pod_labels: Mapping[str, str] = field(default_factory=dict)
    load_balancer_annotations: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    internal_load_balancer_annotations: Mapping[str, str] = field(default_factory=dict)
    # The cluster network's own ranges: the clients of an internal load balancer.
    internal_cidrs: Sequence[str] = ()
    # Resources the Kubernetes objects must wait for (node pools, add-ons, access entries).
    ready: Sequence[pulumi.Resource] = ()
    # The StorageClass the stack's volumes (Prometheus') name, None for the cluster's default class, and what must
    # exist before a volume is claimed and until the last one is deleted (the CSI driver, the class).
    storage_class: str | None = None
    storage_ready: Sequence[pulumi.Resource] = ()
    cluster: pulumi.Resource | None = None
    cluster_name: pulumi.Input[str] | None = None
    # A kubeconfig for operators (a secret): the one the Kubernetes provider uses.
    kubeconfig: pulumi.Input[str] | None = None
    # How the serving Service is exposed: a cloud load balancer, or (a cluster without a load-balancer
    # controller) ClusterIP, reached with `<kubectl> port-forward`.
    service_type: str = "LoadBalancer"
    kubectl: str = "kubectl"
    # How to tell that the serving image (given its tag, and the `docker build` arguments that bake the model
    # where the image carries it) and the model (given its name and revision) are uploaded into the stack's
    # own registry and bucket, and how to upload them; None where the stack has no such store.
    image_upload: Callable[[str, str], Upload] | None = None
    model_upload: Callable[[str, str], Upload] | None = None
    # Where cluster add-ons (the gateway's controller and proxies, cert-manager, the limits store) run: the
    # system pool, whatever taint keeps other pods off it.
    system_node_selector: Mapping[str, str] = field(default_factory=dict)
    system_tolerations: Sequence[Toleration] = ()
    # Load balancer annotations that let connections to a terminating backend finish (given the seconds the
    # backend takes to drain): AWS NLB target group attributes; nothing elsewhere, where the load balancers
    # keep established connections to an unhealthy backend.
    drain_annotations: Callable[[int], Mapping[str, str]] = lambda _seconds: {}
    # The Kubernetes groups (RBAC Group subjects) that on-call's cloud identities arrive in, by the servestack
    # Role they are bound to ("viewer", "operator"; infra/operators.py): the cloud maps its identities to them.
    access_groups: Mapping[str, Sequence[str]] = field(default_factory=dict)
    # ACME DNS-01 in the cloud's DNS zone (servestack:gateway.dnsZone), None where the stack names no zone.
    acme_dns: AcmeDns | None = None
    # The cloud's own NVIDIA DCGM exporter on the GPU nodes (GKE's), which the stack's Prometheus scrapes; None
    # where the stack installs NVIDIA's.
    managed_dcgm: ManagedExporter | None = None
