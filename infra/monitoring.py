"""The cluster's metrics, dashboards and alerts: kube-prometheus-stack, the same on every cloud.

    serving pods :9090 ──PodMonitor──┐
    DCGM exporter (GPU nodes) ───────┼──> Prometheus (monitoring namespace, system nodes) ──> Alertmanager
    node exporter, kube-state-metrics┘        │  PrometheusRule: the serving alerts (infra/alerts.py)
                                              └──> Grafana (ClusterIP; `kubectl port-forward`), the dashboards
                                                   of infra/dashboards/ through its sidecar

Why a Prometheus of our own on every cloud rather than each cloud's managed one (Amazon Managed Service for
Prometheus, Azure Monitor managed Prometheus, GKE Managed Prometheus): one PromQL endpoint in the cluster for
Grafana, the alert rules and KEDA's queue trigger, with no cloud identity or request signing; PrometheusRule,
PodMonitor and sidecar dashboards that work the same on every cloud and on `local`; and no per-sample
ingestion charge. GKE keeps its managed collection for its system and DCGM metrics (Cloud Monitoring), and
this Prometheus scrapes GKE's DCGM exporter too.

Prometheus selects PodMonitors, ServiceMonitors and PrometheusRules labelled `release: <release name>` (the
chart's `*SelectorNilUsesHelmValues`, set explicitly below), in every namespace: every scrape and rule object
of the stack carries SCRAPE_LABELS.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from infra.alerts import alert_rules
from infra.config import GpuConfig, MonitoringConfig
from infra.platform import Platform, Toleration

KUBE_PROMETHEUS_STACK_VERSION = "88.5.3"
PROMETHEUS_COMMUNITY_REPOSITORY = "https://prometheus-community.github.io/helm-charts"
DCGM_EXPORTER_VERSION = "4.8.2"
DCGM_EXPORTER_REPOSITORY = "https://nvidia.github.io/dcgm-exporter/helm-charts"
RELEASE = "servestack-monitoring"
# The chart's fullnameOverride: its objects are named servestack-prometheus, servestack-alertmanager, ...
FULLNAME = "servestack"
PROMETHEUS = f"{FULLNAME}-prometheus"  # the Prometheus object, and its Service
PROMETHEUS_PORT = 9090
GRAFANA = f"{FULLNAME}-grafana"  # the Grafana Deployment and its Service (port 80)
GRAFANA_ADMIN_SECRET = "servestack-grafana-admin"
# What Prometheus selects scrape and rule objects by (the chart's default selectors name the release).
SCRAPE_LABELS = {"release": RELEASE}
# The Prometheus pods, as the Prometheus Operator labels them: the serving pods' network policy admits these.
PROMETHEUS_POD_LABELS = {"app.kubernetes.io/name": "prometheus", "operator.prometheus.io/name": PROMETHEUS}
# The Grafana sidecar loads every ConfigMap carrying this label (the chart's default) as dashboards.
DASHBOARD_LABEL, DASHBOARD_LABEL_VALUE = "grafana_dashboard", "1"
DASHBOARDS_DIR = Path(__file__).with_name("dashboards")
HELM_MINUTES = 15


@dataclass(frozen=True)
class Scraper:
    """What the serving deployment needs to be scraped: the labels its PodMonitor carries, the pods its network
    policy admits to the metrics port, and what must exist first (the chart, with the CRDs)."""

    namespace: pulumi.Input[str]
    monitor_labels: dict[str, str]
    pod_labels: dict[str, str]
    ready: list[pulumi.Resource]


@dataclass(frozen=True)
class MonitoringArgs:
    monitoring: MonitoringConfig
    gpu: GpuConfig
    platform: Platform
    # Where the servers run: the alert rules watch that namespace.
    serving_namespace: str


class Monitoring(pulumi.ComponentResource):
    """kube-prometheus-stack, the Grafana admin secret, the dashboards, the alert rules and the GPU exporter."""

    scraper: Scraper
    # How an operator opens Grafana (a port-forward), and its admin password (a secret).
    grafana: pulumi.Output[str]
    grafana_password: pulumi.Output[str]
    # The in-cluster PromQL endpoint (for KEDA's Prometheus trigger).
    prometheus_url: str

    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("servestack:kubernetes:Monitoring", name, None, opts)
        config, platform = args.monitoring, args.platform
        child = pulumi.ResourceOptions(parent=self, provider=platform.k8s_provider)
        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=config.namespace,
                # The node exporter reads the host (hostNetwork, hostPID, hostPath) and the DCGM exporter the
                # GPUs: privileged pods, which the serving namespace's restricted level refuses.
                labels={"pod-security.kubernetes.io/enforce": "privileged",
                        "pod-security.kubernetes.io/warn": "restricted"}),
            # Deleting the namespace deletes Prometheus' claim (the StatefulSet leaves it behind), whose disk the
            # CSI driver then deletes: the driver and the class outlive the namespace.
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(
                depends_on=[*platform.ready, *platform.storage_ready])),
        )
        ns = namespace.metadata.name
        in_ns = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[namespace]))

        password = random.RandomPassword(f"{name}-grafana-password", length=32, special=False,
                                         opts=pulumi.ResourceOptions(parent=self))
        self.grafana_password = pulumi.Output.secret(password.result)
        admin = k8s.core.v1.Secret(
            f"{name}-grafana-admin",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=GRAFANA_ADMIN_SECRET, namespace=ns),
            type="Opaque",
            string_data={"admin-user": "admin", "admin-password": self.grafana_password},
            opts=in_ns,
        )
        stack = k8s.helm.v3.Release(
            f"{name}-kube-prometheus-stack",
            name=RELEASE,
            chart="kube-prometheus-stack",
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=PROMETHEUS_COMMUNITY_REPOSITORY),
            version=KUBE_PROMETHEUS_STACK_VERSION,
            namespace=ns,
            values=kube_prometheus_stack_values(config, platform),
            # Prometheus' volume and first rollout, on nodes the autoscaler may still be adding.
            timeout=HELM_MINUTES * 60,
            # Prometheus' volume needs its class and driver (also through the namespace; named here for the reader).
            opts=pulumi.ResourceOptions.merge(in_ns, pulumi.ResourceOptions(
                depends_on=[namespace, admin, *platform.storage_ready])),
        )
        after_stack = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[stack]))

        k8s.core.v1.ConfigMap(
            f"{name}-dashboards",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="servestack-dashboards", namespace=ns,
                                                labels={DASHBOARD_LABEL: DASHBOARD_LABEL_VALUE}),
            data=dashboards(),
            opts=in_ns,
        )
        k8s.apiextensions.CustomResource(
            f"{name}-alert-rules",
            api_version="monitoring.coreos.com/v1",
            kind="PrometheusRule",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="servestack", namespace=ns, labels=SCRAPE_LABELS),
            spec=alert_rules(ttft_slo_seconds=config.ttft_slo_seconds, namespace=args.serving_namespace),
            opts=after_stack,
        )
        if args.gpu.count > 0:
            _gpu_metrics(name, platform, ns, after_stack)

        self.scraper = Scraper(namespace=ns, monitor_labels=dict(SCRAPE_LABELS),
                               pod_labels=dict(PROMETHEUS_POD_LABELS), ready=[stack])
        self.prometheus_url = f"http://{PROMETHEUS}.{config.namespace}.svc:{PROMETHEUS_PORT}"
        self.grafana = pulumi.Output.from_input(
            f"{platform.kubectl} -n {config.namespace} port-forward service/{GRAFANA} 3000:80")
        self.register_outputs({"grafana": self.grafana, "prometheus_url": self.prometheus_url})


def dashboards() -> dict[str, str]:
    """Every dashboard of infra/dashboards/, by file name, read when the program runs; each must be JSON."""
    found = {}
    for path in sorted(DASHBOARDS_DIR.glob("*.json")):
        text = path.read_text()
        try:
            json.loads(text)
        except ValueError as error:
            raise ValueError(f"infra/dashboards/{path.name}: not JSON ({error}); Grafana could not load it") from error
        found[path.name] = text
    return found


def _toleration(t: Toleration) -> dict[str, Any]:
    out = {"key": t.key, "operator": t.operator, "effect": t.effect}
    if t.value is not None:
        out["value"] = t.value
    return out


def _placement(platform: Platform) -> dict[str, Any]:
    """On the system nodes, whatever keeps other pods off them."""
    return {"nodeSelector": dict(platform.system_node_selector),
            "tolerations": [_toleration(t) for t in platform.system_tolerations]}


def retention_size(storage_gb: int) -> str:
    """85% of the volume (Prometheus' GB are GiB), leaving room for the write-ahead log and compaction."""
    return f"{storage_gb * 85 // 100}GB"


def _volume_claim(config: MonitoringConfig, platform: Platform) -> dict[str, Any]:
    """The claim template of Prometheus' volume. The StatefulSet keeps the claim it made: a larger storageGb
    reaches a new claim only, and an existing disk grows by patching its claim (docs/aws.md)."""
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": f"{config.storage_gb}Gi"}}}
    if platform.storage_class is not None:
        spec["storageClassName"] = platform.storage_class
    return spec


def kube_prometheus_stack_values(config: MonitoringConfig, platform: Platform) -> dict[str, Any]:
    placement = _placement(platform)
    # Selects objects labelled `release: RELEASE` (SCRAPE_LABELS), in every namespace ({}).
    selection: dict[str, Any] = {f"{kind}SelectorNilUsesHelmValues": True
                                 for kind in ("podMonitor", "serviceMonitor", "rule")}
    selection.update({f"{kind}NamespaceSelector": {} for kind in ("podMonitor", "serviceMonitor", "rule")})
    return {
        "fullnameOverride": FULLNAME,
        "prometheusOperator": {**placement, "admissionWebhooks": {"patch": placement}},
        "prometheus": {"prometheusSpec": {
            **placement,
            **selection,
            "retention": f"{config.retention_days}d",
            # Prometheus stops writing on a full disk; past this size it drops its oldest blocks first.
            "retentionSize": retention_size(config.storage_gb),
            # A cloud disk, of the platform's class: history survives a restart or a node change.
            "storageSpec": {"volumeClaimTemplate": {"spec": _volume_claim(config, platform)}},
            "resources": {"requests": {"cpu": "250m", "memory": "1Gi"}, "limits": {"memory": "4Gi"}},
        }},
        # Receivers (e-mail, Slack, PagerDuty) are the operator's: an AlertmanagerConfig, or
        # alertmanager.config in these values. Until then alerts show in Alertmanager and Grafana only.
        "alertmanager": {"alertmanagerSpec": placement},
        "grafana": {
            "fullnameOverride": GRAFANA,
            "admin": {"existingSecret": GRAFANA_ADMIN_SECRET, "userKey": "admin-user", "passwordKey": "admin-password"},
            # Not on any load balancer: operators reach it with `kubectl port-forward`.
            "service": {"type": "ClusterIP"},
            "ingress": {"enabled": False},
            "sidecar": {"dashboards": {"enabled": True, "label": DASHBOARD_LABEL, "labelValue": DASHBOARD_LABEL_VALUE,
                                       "searchNamespace": config.namespace}},
            **placement,
        },
        "kube-state-metrics": placement,
        # The managed control planes (EKS, GKE, AKS) expose no scheduler, controller manager or etcd to scrape, and
        # their clusters run kube-proxy with metrics on localhost or none at all (Dataplane V2, Cilium): their
        # scrapes and "...Down" alerts would fail forever.
        **{component: {"enabled": False}
           for component in ("kubeControllerManager", "kubeScheduler", "kubeEtcd", "kubeProxy")},
        # On every node, GPU nodes included, whatever their taints.
        "prometheus-node-exporter": {"tolerations": [{"operator": "Exists"}]},
    }


def dcgm_exporter_values(platform: Platform) -> dict[str, Any]:
    """NVIDIA's DCGM exporter on the GPU nodes only, scraped through the chart's ServiceMonitor."""
    return {
        "nodeSelector": dict(platform.gpu_node_selector),
        "tolerations": [_toleration(t) for t in platform.gpu_tolerations],
        "serviceMonitor": {"enabled": True, "interval": "15s", "additionalLabels": dict(SCRAPE_LABELS)},
    }


def _gpu_metrics(name: str, platform: Platform, ns: pulumi.Input[str], opts: pulumi.ResourceOptions) -> None:
    """GPU metrics: the cloud's own DCGM exporter where it runs one (GKE), else NVIDIA's on the GPU nodes."""
    managed = platform.managed_dcgm
    if managed is None:
        k8s.helm.v3.Release(
            f"{name}-dcgm-exporter",
            name="dcgm-exporter",
            chart="dcgm-exporter",
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=DCGM_EXPORTER_REPOSITORY),
            version=DCGM_EXPORTER_VERSION,
            namespace=ns,
            values=dcgm_exporter_values(platform),
            opts=opts,
        )
        return
    k8s.apiextensions.CustomResource(
        f"{name}-managed-dcgm-monitor",
        api_version="monitoring.coreos.com/v1",
        kind="PodMonitor",
        metadata=k8s.meta.v1.ObjectMetaArgs(name="managed-dcgm-exporter", namespace=ns, labels=SCRAPE_LABELS),
        spec={"namespaceSelector": {"matchNames": [managed.namespace]},
              "selector": {"matchLabels": dict(managed.pod_labels)},
              "podMetricsEndpoints": [{"port": managed.port, "path": "/metrics", "interval": "30s"}]},
        opts=opts,
    )
