"""Scaling the serving Deployments on their load: KEDA, on Prometheus, per track (stable, canary).

A GPU server's load is its queue, not its CPU: each track scales on the requests waiting for a batch slot
per pod, and on how full its batches run (requests running against `serving.maxBatchSize`). KEDA's operator
asks the stack's Prometheus (infra.monitoring.PROMETHEUS_URL) every POLLING_SECONDS and feeds the answer to
an HPA it owns as an external metric of type AverageValue: desired pods = ceil(sum over the track's pods /
target per pod), so each query returns the track's total, and the HPA divides.

- A missing metric (Prometheus down, the scrape broken) is an error, not a zero (`ignoreNullValues: false`):
  after FAILURE_THRESHOLD failed polls KEDA holds the replicas it has (never fewer than the track's minimum)
  instead of scaling a blind server down.
- The GPU nodes follow: a pod that finds no GPU stays Pending and the cluster autoscaler adds a node (the
  clouds' pools scale between gpu.minNodes and gpu.maxNodes); a node whose pods are gone is removed.
- Never to zero: with no pod, no server exports a queue, so nothing would ever wake the track up again;
  `serving.minReplicas` is at least 1 (README, "Autoscaling").

Without the monitoring stack there is no Prometheus to ask: the HPA scales on CPU (infra/serving.py).

Both autoscalers are an HPA named after the Deployment, so turning monitoring on or off on a live stack swaps
one for the other in one `up`:
- on: the ScaledObject takes the CPU HPA over (TRANSFER_HPA); the CPU HPA's resource is `retain_on_delete`, so
  Pulumi then forgets it instead of deleting what is now KEDA's HPA (KEDA would recreate it, and Pulumi's
  delete might wait on the new one). What Pulumi forgets otherwise (a removed canary, destroy) goes with its
  Deployment: the CPU HPA names the Deployment its owner, and Kubernetes' garbage collector deletes it.
- off: Pulumi creates the new CPU HPA before deleting the ScaledObject, and KEDA's HPA holds the name. The CPU
  HPA waits for `keda_released`, which deletes the ScaledObject and waits until KEDA's HPA is gone with it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
from pulumi_command import local

from infra import commands
from infra.platform import Platform

KEDA_VERSION = "2.20.2"  # the chart's version, and KEDA's
KEDA_REPOSITORY = "https://kedacore.github.io/charts"
KEDA_NAMESPACE = "keda"
POLLING_SECONDS = 15
# A pod's fair share of waiting requests: more, and one more pod pays for itself.
WAITING_PER_POD = 4
# How full a pod's batches may run on average before another pod is asked for.
BATCH_FILL_PER_POD = 0.8
FAILURE_THRESHOLD = 3
# GPU nodes take minutes to arrive; do not give them back at the first quiet minute.
SCALE_DOWN_WINDOW_SECONDS = 600
# At most this many new pods (each a GPU, often a new node) per minute; one pod less every two minutes.
SCALE_UP_PODS_PER_MINUTE = 2
SCALE_DOWN_PODS = 1
SCALE_DOWN_PERIOD_SECONDS = 120
# How long turning monitoring off waits for KEDA to let go of a track's HPA (seconds, and between checks).
RELEASE_WAIT_SECONDS = 300
RELEASE_CHECK_SECONDS = 2
# What a Deployment's pod names add to the Deployment's: `-<ReplicaSet hash>-<suffix>`, both alphanumeric.
POD_SUFFIX = "-[a-z0-9]+-[a-z0-9]+"
# Deployment names are DNS labels: they need no escaping inside a PromQL regular expression.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def scaling_queries(namespace: str, deployment: str, max_batch_size: int) -> dict[str, str]:
    """What KEDA asks Prometheus for one track, by trigger name: each the track's total.

    The Prometheus Operator labels every scraped series with the pod's `namespace` and `pod`. A Deployment's
    pods are named `<deployment>-<ReplicaSet hash>-<suffix>`, both alphanumeric, so `servestack-x-y` never
    matches a canary pod (`servestack-canary-x-y`) and the other way round."""
    for what, value in (("namespace", namespace), ("deployment", deployment)):
        if not _DNS_LABEL.match(value):
            raise ValueError(f"{what} {value!r} is not a Kubernetes name (lower-case DNS label)")
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size {max_batch_size} must be at least 1")
    pods = f'namespace="{namespace}",pod=~"{deployment}{POD_SUFFIX}"'
    return {
        "waiting": f"sum(servestack_num_requests_waiting{{{pods}}})",
        "batch-fill": f"sum(servestack_num_requests_running{{{pods}}}) / {max_batch_size}",
    }


# The target per pod of each query in scaling_queries.
TARGETS = {"waiting": str(WAITING_PER_POD), "batch-fill": str(BATCH_FILL_PER_POD)}


def scaled_object_spec(namespace: str, deployment: str, min_replicas: int, max_replicas: int,
                       max_batch_size: int, prometheus_url: str) -> dict[str, Any]:
    """The ScaledObject's spec (keda.sh/v1alpha1) for one track's Deployment."""
    if not 1 <= min_replicas <= max_replicas:
        raise ValueError(f"replicas: need 1 <= min ({min_replicas}) <= max ({max_replicas}); a track never "
                         "scales to zero (no pod, no queue metric to wake it)")
    triggers = [{
        "type": "prometheus",
        "name": name,
        "metricType": "AverageValue",
        "metadata": {"serverAddress": prometheus_url, "query": query, "threshold": TARGETS[name],
                     "ignoreNullValues": "false"},
    } for name, query in scaling_queries(namespace, deployment, max_batch_size).items()]
    return {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment},
        "pollingInterval": POLLING_SECONDS,
        "minReplicaCount": min_replicas,
        "maxReplicaCount": max_replicas,
        "fallback": {"failureThreshold": FAILURE_THRESHOLD, "replicas": min_replicas,
                     "behavior": "currentReplicasIfHigher"},
        "advanced": {"horizontalPodAutoscalerConfig": {
            # The HPA servestack made before KEDA (monitoring off): KEDA adopts it by name (see annotations).
            "name": deployment,
            "behavior": {
                "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [
                    {"type": "Pods", "value": SCALE_UP_PODS_PER_MINUTE, "periodSeconds": 60}]},
                "scaleDown": {"stabilizationWindowSeconds": SCALE_DOWN_WINDOW_SECONDS, "policies": [
                    {"type": "Pods", "value": SCALE_DOWN_PODS, "periodSeconds": SCALE_DOWN_PERIOD_SECONDS}]},
            },
        }},
        "triggers": triggers,
    }


# KEDA's webhook refuses a ScaledObject whose Deployment an HPA already scales, unless told to take that HPA
# over (by its name, horizontalPodAutoscalerConfig.name): turning monitoring on then works in one `up`.
TRANSFER_HPA = {"scaledobject.keda.sh/transfer-hpa-ownership": "true"}


@dataclass(frozen=True)
class QueueScaling:
    """What the serving tracks need to scale on their queue: where Prometheus answers, and KEDA installed."""

    prometheus_url: str
    ready: Sequence[pulumi.Resource]


def scaled_object(resource_name: str, namespace: pulumi.Input[str], namespace_name: str, deployment: str,
                  min_replicas: int, max_replicas: int, max_batch_size: int, labels: dict[str, str],
                  scaling: QueueScaling, opts: pulumi.ResourceOptions) -> k8s.apiextensions.CustomResource:
    return k8s.apiextensions.CustomResource(
        resource_name,
        api_version="keda.sh/v1alpha1",
        kind="ScaledObject",
        metadata=k8s.meta.v1.ObjectMetaArgs(name=deployment, namespace=namespace, labels=labels,
                                            annotations=TRANSFER_HPA),
        spec=scaled_object_spec(namespace_name, deployment, min_replicas, max_replicas, max_batch_size,
                                scaling.prometheus_url),
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=list(scaling.ready))),
    )


def release_script(kubectl: str, namespace: str, deployment: str,
                   timeout_seconds: int = RELEASE_WAIT_SECONDS) -> str:
    """Delete the track's ScaledObject, if any, and wait until KEDA's HPA of the same name is gone with it (its
    owner): nothing to do where KEDA was never installed, or no ScaledObject is left."""
    for what, value in (("namespace", namespace), ("deployment", deployment)):
        if not _DNS_LABEL.match(value):
            raise ValueError(f"{what} {value!r} is not a Kubernetes name (lower-case DNS label)")
    scaled_object = f"{kubectl} -n {namespace} get scaledobject {deployment} --ignore-not-found -o name"
    gone = commands.bounded_wait(
        f'test -z "$({kubectl} -n {namespace} get hpa {deployment} --ignore-not-found -o name)"',
        waiting=f"waiting for KEDA's HPA {namespace}/{deployment} to go with its ScaledObject",
        failed=f"KEDA's HPA {namespace}/{deployment} is still there after {timeout_seconds} s; delete it "
               f"(kubectl -n {namespace} delete hpa {deployment}), then run `pulumi up` again",
        timeout_seconds=timeout_seconds, interval_seconds=RELEASE_CHECK_SECONDS)
    return "\n".join([
        "set -eu",
        f'crd=$({kubectl} get crd scaledobjects.keda.sh --ignore-not-found -o name)',
        'if [ -z "$crd" ]; then exit 0; fi',
        f'found=$({scaled_object})',
        'if [ -z "$found" ]; then exit 0; fi',
        f"echo 'monitoring is off: deleting the ScaledObject {namespace}/{deployment}; an HPA on CPU follows'",
        f"{kubectl} -n {namespace} delete scaledobject {deployment} --ignore-not-found --wait "
        f"--timeout={timeout_seconds}s",
        gone,
    ])


def keda_released(resource_name: str, platform: Platform, namespace: str, deployment: str,
                  opts: pulumi.ResourceOptions) -> local.Command:
    """A command run once when the track's CPU HPA is created: `release_script`, with the stack's kubeconfig."""
    text = "KUBECONFIG_TEXT" if platform.kubeconfig is not None else None
    script = commands.with_kubectl(text, platform.kubectl,
                                   lambda kubectl: release_script(kubectl, namespace, deployment))
    environment = {"KUBECONFIG_TEXT": platform.kubeconfig} if platform.kubeconfig is not None else None
    return local.Command(resource_name, create=script, environment=environment, opts=opts)


class Keda(pulumi.ComponentResource):
    """KEDA's operator, metrics API server and admission webhooks, from the pinned chart, on the system nodes."""

    release: k8s.helm.v3.Release

    def __init__(self, name: str, platform: Platform, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("servestack:kubernetes:Keda", name, None, opts)
        self.release = k8s.helm.v3.Release(
            f"{name}-keda",
            name="keda",
            chart="keda",
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=KEDA_REPOSITORY),
            version=KEDA_VERSION,
            namespace=KEDA_NAMESPACE,
            create_namespace=True,
            values=keda_values(platform),
            opts=pulumi.ResourceOptions(parent=self, provider=platform.k8s_provider,
                                        depends_on=list(platform.ready)),
        )
        self.register_outputs({"version": KEDA_VERSION})


def keda_values(platform: Platform) -> dict[str, Any]:
    tolerations = [{"key": t.key, "operator": t.operator, "effect": t.effect,
                    **({"value": t.value} if t.value is not None else {})} for t in platform.system_tolerations]
    return {
        # The chart's templates carry the CRDs, so `helm upgrade` upgrades them with KEDA.
        "crds": {"install": True},
        # The chart's defaults apply to every KEDA pod (operator, metrics API server, webhooks).
        "nodeSelector": dict(platform.system_node_selector),
        "tolerations": tolerations,
    }
