"""The Platform value: what a cluster offers the cloud-neutral serving deployment.

Each module in `infra/clouds/` builds its cloud's cluster and returns one of these. Downstream code never
asks which cloud it is on: whatever differs between clouds (how GPU nodes are selected and tainted,
load-balancer annotations, the workload-identity annotation and pod label, whether a device plugin must
be installed) is a field here. `cluster` is the escape hatch for the rare caller that needs the
underlying resource.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

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
    load_balancer_annotations: Mapping[str, str] = field(default_factory=dict)
    internal_load_balancer_annotations: Mapping[str, str] = field(default_factory=dict)
    # The cluster network's own ranges: the clients of an internal load balancer.
    internal_cidrs: Sequence[str] = ()
    # Resources the Kubernetes objects must wait for (node pools, add-ons, access entries).
    ready: Sequence[pulumi.Resource] = ()
    cluster: pulumi.Resource | None = None
