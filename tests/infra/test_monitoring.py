"""servestack:monitoring: kube-prometheus-stack, what its Prometheus selects and may reach, the GPU exporter per
cloud, the dashboards and alert rules, as the offline plans declare them; and the config's checks."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.alerts import alert_rules
from infra.config import ConfigError, parse_config
from infra.monitoring import (
    DASHBOARDS_DIR,
    DCGM_EXPORTER_REPOSITORY,
    DCGM_EXPORTER_VERSION,
    KUBE_PROMETHEUS_STACK_VERSION,
    PROMETHEUS_COMMUNITY_REPOSITORY,
    retention_size,
)
from servestack.offline.plan import SECRET, STACKS_DIR, plan_in_subprocess
from servestack.offline.schemas import validate_plan
from tests.infra.plans import inputs, one, resources, stack_variant
from tests.infra.test_config import TODAY, VALID_AWS, VALID_LOCAL

RELEASE = "kubernetes:helm.sh/v3:Release"
POD_MONITOR = "kubernetes:monitoring.coreos.com/v1:PodMonitor"
RULE = "kubernetes:monitoring.coreos.com/v1:PrometheusRule"
POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
SYSTEM_NODES = {"aws": {"servestack.io/pool": "system"}}


def _release(plan: dict[str, Any], chart: str) -> dict[str, Any]:
    found = [r["inputs"] for r in resources(plan, RELEASE) if r["inputs"]["chart"] == chart]
    assert len(found) == 1, f"expected one {chart} release, found {len(found)}"
    return found[0]


def _server_pod(plan: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = inputs(plan, "kubernetes:apps/v1:Deployment", "servestack-deployment")["spec"]["template"]
    return pod


def _selected(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _chart_selector(values: dict[str, Any], kind: str, release_name: str) -> dict[str, Any]:
    """The selector kube-prometheus-stack puts on its Prometheus for `kind` (its prometheus.yaml template):
    the values' own, else `release: <release name>` while `<kind>SelectorNilUsesHelmValues`, else everything."""
    spec = values["prometheus"]["prometheusSpec"]
    if spec.get(f"{kind}Selector"):
        selector: dict[str, Any] = spec[f"{kind}Selector"]
        return selector
    if spec.get(f"{kind}SelectorNilUsesHelmValues", True):
        return {"matchLabels": {"release": release_name}}
    return {}


@pytest.mark.parametrize("stack", ["aws-prod", "gcp-prod", "azure-prod"])
def test_prod_stacks_install_a_pinned_kube_prometheus_stack_on_the_system_nodes(
        stack: str, stack_plan: Callable[[str], dict[str, Any]]) -> None:
    plan = stack_plan(stack)
    chart = _release(plan, "kube-prometheus-stack")
    assert chart["version"] == KUBE_PROMETHEUS_STACK_VERSION == "88.5.3"
    assert chart["repositoryOpts"] == {"repo": PROMETHEUS_COMMUNITY_REPOSITORY}
    assert chart["repositoryOpts"]["repo"] == "https://prometheus-community.github.io/helm-charts"
    assert chart["namespace"] == "monitoring" and chart["name"] == "servestack-monitoring"
    values = chart["values"]
    system = inputs(plan, RELEASE, "servestack-envoy-gateway")["values"]["deployment"]["pod"]
    for component in (values["prometheus"]["prometheusSpec"], values["alertmanager"]["alertmanagerSpec"],
                      values["grafana"], values["kube-state-metrics"], values["prometheusOperator"]):
        # Where the gateway's controller runs: the system pool.
        assert component["nodeSelector"] == system["nodeSelector"]
        assert component["tolerations"] == system["tolerations"]
    if stack in SYSTEM_NODES:
        assert system["nodeSelector"] == SYSTEM_NODES[stack.split("-")[0]]
    # Nothing to scrape on a managed control plane: no scrape job, no alert that fires forever.
    for component in ("kubeControllerManager", "kubeScheduler", "kubeEtcd", "kubeProxy"):
        assert values[component] == {"enabled": False}
    # The node exporter on every node, the tainted GPU nodes included.
    assert values["prometheus-node-exporter"]["tolerations"] == [{"operator": "Exists"}]
    spec = values["prometheus"]["prometheusSpec"]
    assert spec["retention"] == "15d"
    claim = spec["storageSpec"]["volumeClaimTemplate"]["spec"]
    assert claim["resources"]["requests"]["storage"] == "50Gi"
    # AWS names the stack's gp3 class (EKS has no default class); GKE and AKS have a default disk class.
    assert claim.get("storageClassName") == {"aws": "servestack-gp3"}.get(stack.split("-")[0])
    # A full disk stops Prometheus' writes: it drops old blocks past 85% of it.
    assert spec["retentionSize"] == "42GB"
    grafana = values["grafana"]
    assert grafana["service"] == {"type": "ClusterIP"} and grafana["ingress"] == {"enabled": False}
    assert grafana["admin"] == {"existingSecret": "servestack-grafana-admin", "userKey": "admin-user",
                                "passwordKey": "admin-password"}
    assert plan["outputs"]["grafana"] == \
        "kubectl -n monitoring port-forward service/servestack-grafana 3000:80"
    # No Grafana Service of the stack's is a load balancer: the chart's is ClusterIP (above).
    assert all(s["inputs"]["metadata"].get("namespace") != "monitoring"
               for s in resources(plan, "kubernetes:core/v1:Service"))


@pytest.mark.parametrize("stack", ["aws-prod", "gcp-prod", "azure-prod"])
def test_the_charts_prometheus_selects_the_scrape_and_rule_objects(
        stack: str, stack_plan: Callable[[str], dict[str, Any]]) -> None:
    plan = stack_plan(stack)
    chart = _release(plan, "kube-prometheus-stack")
    values, release_name = chart["values"], chart["name"]
    spec = values["prometheus"]["prometheusSpec"]
    # Every namespace ({}), the serving namespace included.
    assert spec["podMonitorNamespaceSelector"] == spec["ruleNamespaceSelector"] == {}
    assert spec["serviceMonitorNamespaceSelector"] == {}

    monitor = inputs(plan, POD_MONITOR, "servestack-pod-monitor")
    assert monitor["metadata"]["namespace"] == "servestack"
    assert _selected(_chart_selector(values, "podMonitor", release_name), monitor["metadata"]["labels"])
    # It selects the serving pods, on a port the server container really names.
    pod = _server_pod(plan)
    assert _selected(monitor["spec"]["selector"], pod["metadata"]["labels"])
    port_names = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
    assert monitor["spec"]["podMetricsEndpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s"}]
    assert port_names["metrics"] == 9090

    rule = inputs(plan, RULE)
    assert _selected(_chart_selector(values, "rule", release_name), rule["metadata"]["labels"])
    if stack != "gcp-prod":
        dcgm = _release(plan, "dcgm-exporter")["values"]["serviceMonitor"]
        assert dcgm["enabled"] is True
        assert _selected(_chart_selector(values, "serviceMonitor", release_name), dcgm["additionalLabels"])
    else:
        managed = inputs(plan, POD_MONITOR, "servestack-monitoring-managed-dcgm-monitor")
        assert _selected(_chart_selector(values, "podMonitor", release_name), managed["metadata"]["labels"])


@pytest.mark.parametrize("stack", ["aws-prod", "gcp-prod", "azure-prod"])
def test_the_network_policy_admits_the_charts_prometheus_pods_to_the_metrics_port_only(
        stack: str, stack_plan: Callable[[str], dict[str, Any]]) -> None:
    plan = stack_plan(stack)
    values = _release(plan, "kube-prometheus-stack")["values"]
    policy = inputs(plan, POLICY, "servestack-network-policy")["spec"]
    api, metrics = policy["ingress"]
    assert all(p["port"] == 8000 for p in api["ports"])
    assert metrics["ports"] == [{"port": 9090, "protocol": "TCP"}]
    # The Prometheus Operator labels its pods with the Prometheus object's name: <fullnameOverride>-prometheus.
    assert metrics["from"] == [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus",
                                        "operator.prometheus.io/name": f"{values['fullnameOverride']}-prometheus"}}}]
    # No other pod of the monitoring namespace (Grafana, the exporters), and no GMP collector.
    assert "gmp-system" not in json.dumps(policy)


@pytest.mark.parametrize("stack", ["aws-prod", "gcp-prod", "azure-prod"])
def test_the_monitoring_namespace_has_no_network_policy(
        stack: str, stack_plan: Callable[[str], dict[str, Any]]) -> None:
    """As the README says; one added there must admit the API server, KEDA and the stack's own traffic (README,
    Observability), and this test is where it must be thought through."""
    plan = stack_plan(stack)
    policies = [r["inputs"]["metadata"] for r in resources(plan, "kubernetes:networking.k8s.io/v1:NetworkPolicy")]
    assert policies and all(metadata.get("namespace") != "monitoring" for metadata in policies)
    values = _release(plan, "kube-prometheus-stack")["values"]
    assert "networkPolicy" not in values["prometheus"] and "networkPolicy" not in values["grafana"]


@pytest.mark.parametrize("stack", ["aws-prod", "azure-prod"])
def test_the_dcgm_exporter_runs_on_the_gpu_nodes_where_the_cloud_runs_none(
        stack: str, stack_plan: Callable[[str], dict[str, Any]]) -> None:
    plan = stack_plan(stack)
    chart = _release(plan, "dcgm-exporter")
    assert chart["version"] == DCGM_EXPORTER_VERSION == "4.8.2"
    assert chart["repositoryOpts"] == {"repo": DCGM_EXPORTER_REPOSITORY}
    assert chart["namespace"] == "monitoring"
    # Exactly where the GPU serving pods go, tolerating the same taints.
    pod = _server_pod(plan)["spec"]
    assert chart["values"]["nodeSelector"] == pod["nodeSelector"]
    assert chart["values"]["tolerations"] == pod["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"} in \
        chart["values"]["tolerations"]
    assert not [m for m in resources(plan, POD_MONITOR) if "managed-dcgm" in m["name"]]


def test_on_gke_prometheus_scrapes_gkes_own_dcgm_exporter(stack_plan: Callable[[str], dict[str, Any]]) -> None:
    plan = stack_plan("gcp-prod")
    assert not [r for r in resources(plan, RELEASE) if r["inputs"]["chart"] == "dcgm-exporter"]
    monitor = inputs(plan, POD_MONITOR, "servestack-monitoring-managed-dcgm-monitor")
    assert monitor["metadata"]["namespace"] == "monitoring"
    assert monitor["spec"] == {
        "namespaceSelector": {"matchNames": ["gke-managed-system"]},
        "selector": {"matchLabels": {"app.kubernetes.io/name": "gke-managed-dcgm-exporter"}},
        "podMetricsEndpoints": [{"port": "metrics", "path": "/metrics", "interval": "30s"}]}
    cluster = one(plan, "gcp:container/cluster:Cluster")["inputs"]
    assert "DCGM" in cluster["monitoringConfig"]["enableComponents"]
    # Container logs: GKE's logging agent collects the workloads' stdout.
    assert cluster["loggingConfig"]["enableComponents"] == ["SYSTEM_COMPONENTS", "WORKLOADS"]


def test_the_dashboards_configmap_carries_every_dashboard_for_the_grafana_sidecar(
        stack_plan: Callable[[str], dict[str, Any]]) -> None:
    plan = stack_plan("aws-prod")
    sidecar = _release(plan, "kube-prometheus-stack")["values"]["grafana"]["sidecar"]["dashboards"]
    config_map = inputs(plan, "kubernetes:core/v1:ConfigMap", "servestack-monitoring-dashboards")
    assert config_map["metadata"]["namespace"] == sidecar["searchNamespace"] == "monitoring"
    assert config_map["metadata"]["labels"] == {sidecar["label"]: sidecar["labelValue"]} == {"grafana_dashboard": "1"}
    files = sorted(DASHBOARDS_DIR.glob("*.json"))
    assert files and sorted(config_map["data"]) == [f.name for f in files]
    for f in files:
        assert config_map["data"][f.name] == f.read_text()
        assert json.loads(config_map["data"][f.name])["panels"]


def test_the_grafana_password_is_a_secret(stack_plan: Callable[[str], dict[str, Any]]) -> None:
    plan = stack_plan("aws-prod")
    secret = inputs(plan, "kubernetes:core/v1:Secret", "servestack-monitoring-grafana-admin")
    assert secret["metadata"] == {"name": "servestack-grafana-admin", "namespace": "monitoring"}
    # The whole stringData is secret once one value is.
    assert secret["stringData"] == {"admin-user": SECRET, "admin-password": SECRET}
    assert plan["outputs"]["grafana_admin_password"] == SECRET
    password = inputs(plan, "random:index/randomPassword:RandomPassword", "servestack-monitoring-grafana-password")
    assert password["length"] == 32
    # The chart reads the Secret: its values hold no password.
    assert "admin-password\": \"" not in json.dumps(_release(plan, "kube-prometheus-stack")["values"])


@pytest.mark.parametrize("stack", ["aws-dev", "gcp-dev", "azure-dev", "local"])
def test_without_monitoring_there_is_no_scraper_and_the_metrics_port_is_closed(
        stack: str, stack_plan: Callable[[str], dict[str, Any]]) -> None:
    plan = stack_plan(stack)
    charts = {r["inputs"]["chart"] for r in resources(plan, RELEASE)}
    assert not charts & {"kube-prometheus-stack", "dcgm-exporter"}
    assert not resources(plan, POD_MONITOR) and not resources(plan, RULE)
    assert "servestack:kubernetes:Monitoring" not in {r["type"] for r in plan["resources"]}
    assert "grafana" not in plan["outputs"]
    (api,) = inputs(plan, POLICY, "servestack-network-policy")["spec"]["ingress"]
    assert all(p["port"] == 8000 for p in api["ports"])
    assert "annotations" not in _server_pod(plan)["metadata"]


@pytest.fixture(scope="module")
def local_monitoring(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The local stack with monitoring on, other namespaces and a stricter SLO."""
    document = yaml.safe_load((STACKS_DIR / "Pulumi.local.yaml").read_text())
    serving = {**document["config"]["servestack:serving"], "namespace": "llm"}
    stacks = stack_variant(tmp_path_factory.mktemp("stacks"), "local", "local-monitoring", **{
        "servestack:monitoring": {"enabled": True, "namespace": "observability", "ttftSloSeconds": 0.75,
                                  "retentionDays": 3, "storageGb": 20},
        "servestack:serving": serving})
    return plan_in_subprocess("local-monitoring", stacks_dir=stacks)


def test_the_alert_rules_take_the_slo_from_the_config(local_monitoring: dict[str, Any]) -> None:
    rule = inputs(local_monitoring, RULE)
    assert rule["metadata"] == {"name": "servestack", "namespace": "observability",
                                "labels": {"release": "servestack-monitoring"}}
    # The rules watch the serving namespace, not their own.
    assert rule["spec"] == alert_rules(ttft_slo_seconds=0.75, namespace="llm")
    assert rule["spec"] != alert_rules(ttft_slo_seconds=2.0, namespace="llm")
    assert rule["spec"] != alert_rules(ttft_slo_seconds=0.75)
    values = _release(local_monitoring, "kube-prometheus-stack")["values"]
    assert values["prometheus"]["prometheusSpec"]["retention"] == "3d"
    spec = values["prometheus"]["prometheusSpec"]
    assert spec["retentionSize"] == "17GB"
    # An existing cluster: its default class.
    assert "storageClassName" not in spec["storageSpec"]["volumeClaimTemplate"]["spec"]
    # local has no system pool: no selector, no toleration.
    assert values["grafana"]["nodeSelector"] == {} and values["grafana"]["tolerations"] == []
    # CPU only: no GPU exporter.
    assert not [r for r in resources(local_monitoring, RELEASE) if r["inputs"]["chart"] == "dcgm-exporter"]
    peer = inputs(local_monitoring, POLICY, "servestack-network-policy")["spec"]["ingress"][1]["from"][0]
    assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "observability"}}
    namespace = one(local_monitoring, "kubernetes:core/v1:Namespace", "servestack-monitoring-namespace")["inputs"]
    assert namespace["metadata"]["name"] == "observability"
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    assert local_monitoring["outputs"]["grafana"] == \
        "kubectl --context kind-servestack -n observability port-forward service/servestack-grafana 3000:80"


def test_the_monitoring_objects_are_schema_valid(local_monitoring: dict[str, Any],
                                                 stack_plan: Callable[[str], dict[str, Any]]) -> None:
    for plan in (local_monitoring, stack_plan("gcp-prod")):
        results = validate_plan(plan, "1.35")
        kinds = {r.kind for r in results}
        assert {"PodMonitor", "PrometheusRule", "ConfigMap", "Namespace"} <= kinds
        assert [f"{r.kind}/{r.name}: {r.error}" for r in results if r.error or r.skipped] == []


@pytest.mark.parametrize("storage_gb", [10, 50, 10_000])
def test_the_storage_values_fit_the_prometheus_crd_and_the_claim_schema(
        storage_gb: int, stack_plan: Callable[[str], dict[str, Any]]) -> None:
    # The chart copies retentionSize into the Prometheus object, and the Operator the claim template's spec into the
    # StatefulSet's claims.
    spec = _release(stack_plan("aws-prod"), "kube-prometheus-stack")["values"]["prometheus"]["prometheusSpec"]
    prometheus = {"apiVersion": "monitoring.coreos.com/v1", "kind": "Prometheus",
                  "metadata": {"name": "servestack-prometheus", "namespace": "monitoring"},
                  "spec": {"retentionSize": retention_size(storage_gb)}}
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
             "metadata": {"name": "prometheus-servestack-prometheus-db", "namespace": "monitoring"},
             "spec": spec["storageSpec"]["volumeClaimTemplate"]["spec"]}
    plan = {"resources": [{"urn": f"urn:{o['kind']}", "type": f"kubernetes:{o['apiVersion']}:{o['kind']}",
                           "custom": True, "inputs": o} for o in (prometheus, claim)]}
    results = validate_plan(plan, "1.35")
    assert sorted((r.kind, r.error, r.skipped) for r in results) == [
        ("PersistentVolumeClaim", None, False), ("Prometheus", None, False)]
    assert retention_size(storage_gb) == f"{storage_gb * 85 // 100}GB"


def _problems(values: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as error:
        parse_config("s", values, TODAY)
    return error.value.problems


def test_monitoring_is_on_in_prod_and_off_elsewhere_by_default() -> None:
    prod = parse_config("aws-prod", VALID_AWS, TODAY).monitoring
    assert prod.enabled and prod.namespace == "monitoring" and prod.ttft_slo_seconds == 2.0
    assert (prod.retention_days, prod.storage_gb) == (15, 50)
    assert not parse_config("local", VALID_LOCAL, TODAY).monitoring.enabled
    dev = {**VALID_AWS, "servestack:environment": "dev"}
    assert not parse_config("aws-dev", dev, TODAY).monitoring.enabled


@pytest.mark.parametrize(("monitoring", "expected"), [
    ({"ttftSloSeconds": 0}, "servestack:monitoring.ttftSloSeconds: 0.0 must be greater than 0"),
    ({"ttftSloSeconds": -1.5}, "servestack:monitoring.ttftSloSeconds: -1.5 must be greater than 0"),
    ({"ttftSloSeconds": "fast"}, "servestack:monitoring.ttftSloSeconds: 'fast' is not a number"),
    ({"enabled": "yes"}, "servestack:monitoring.enabled: 'yes' is not true or false"),
    ({"namespace": "Mon_itoring"},
     "servestack:monitoring.namespace: 'Mon_itoring' is not a Kubernetes namespace name (lower-case DNS label)"),
    ({"retentionDays": 0}, "servestack:monitoring.retentionDays: 0 is less than 1; it must be at least 1"),
    ({"storageGb": 5}, "servestack:monitoring.storageGb: 5 is less than 10; it must be at least 10"),
    ({"grafana": True}, "servestack:monitoring.grafana: unknown key; known: enabled, namespace, retentionDays, "
                        "storageGb, ttftSloSeconds"),
    ({"namespace": "servestack"}, "servestack:monitoring.namespace: 'servestack' is the serving namespace; the node "
                                  "exporter and DCGM exporter need host access, which the serving namespace's "
                                  "restricted pod security refuses: name another namespace"),
])
def test_bad_monitoring_values_name_the_key_the_value_and_what_is_allowed(monitoring: dict[str, Any],
                                                                          expected: str) -> None:
    assert _problems({**VALID_AWS, "servestack:monitoring": monitoring}) == [expected]


@pytest.mark.parametrize(("old", "new"), [("prometheusOperator", "enabled"), ("monitoringNamespace", "namespace")])
def test_the_old_serving_monitoring_keys_say_where_they_went(old: str, new: str) -> None:
    values = {**VALID_AWS, "servestack:serving": {old: "monitoring" if old == "monitoringNamespace" else True}}
    assert _problems(values) == [f"servestack:serving.{old}: replaced by servestack:monitoring.{new} (see the "
                                 "README's Observability); remove it"]


def test_a_dashboard_that_is_not_json_fails_the_plan_by_name(tmp_path: Path) -> None:
    from infra import monitoring

    (tmp_path / "broken.json").write_text("{not json")
    original = monitoring.DASHBOARDS_DIR
    monitoring.DASHBOARDS_DIR = tmp_path
    try:
        with pytest.raises(ValueError, match=r"infra/dashboards/broken.json: not JSON"):
            monitoring.dashboards()
    finally:
        monitoring.DASHBOARDS_DIR = original
