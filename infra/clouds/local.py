"""The `local` platform: an existing Kubernetes cluster reached through a kubeconfig context.

It declares no cloud resources. GPU pods (when the stack asks for GPUs) are steered to nodes labelled
and tainted like the cloud pools, and the NVIDIA device plugin is installed, as on a bare cluster. A
kind or minikube cluster has no load-balancer controller, so unless `local.loadBalancer` says it has one,
the Service is ClusterIP and the `connect` output is the port-forward that reaches it.
"""

from __future__ import annotations

import pulumi_kubernetes as k8s

from infra import commands
from infra.config import StackConfig
from infra.platform import GPU_POOL_LABEL, GPU_POOL_VALUE, GPU_TOLERATION, Platform


def build(config: StackConfig) -> Platform:
    provider = k8s.Provider(
        "local",
        context=config.local.kube_context,
        kubeconfig=config.local.kubeconfig,
    )
    local = config.local
    kubectl = " ".join(["kubectl", *(["--kubeconfig", commands.quote(local.kubeconfig)] if local.kubeconfig else []),
                        "--context", commands.quote(str(local.kube_context))])
    return Platform(
        cloud="local",
        k8s_provider=provider,
        gpu_node_selector={GPU_POOL_LABEL: GPU_POOL_VALUE},
        gpu_tolerations=(GPU_TOLERATION,),
        needs_device_plugin=True,
        service_type="LoadBalancer" if local.load_balancer else "ClusterIP",
        kubectl=kubectl,
        access_groups={"viewer": config.access.viewer_groups, "operator": config.access.operator_groups},
    )
