"""The Grafana dashboard as code (infra/dashboards/servestack.json): its shape for Grafana 11/12 (a Prometheus
data source variable, a namespace variable), a query on every panel that Prometheus parses (promtool), the
panels the on-call table asks for, and only metrics that exist: those of kube-state-metrics and the DCGM
exporter as their docs list them (the server's own, against a real server and a real Prometheus, in
tests/serving/test_prometheus.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from servestack.dashboard import DASHBOARD, load, metric_names, needs_cluster, panel_queries
from tests.infra.external_metrics import documented

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return load()


def test_every_dashboard_file_is_json_with_a_unique_uid() -> None:
    files = sorted(DASHBOARD.parent.glob("*.json"))
    assert files == [DASHBOARD]
    uids = [json.loads(path.read_text())["uid"] for path in files]
    assert len(set(uids)) == len(uids)


def test_the_variables_are_the_data_source_and_the_namespace(dashboard: dict[str, Any]) -> None:
    assert dashboard["schemaVersion"] == 39  # Grafana 11.0's; Grafana 11 and 12 load it and migrate it on save
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert list(variables) == ["datasource", "namespace"]
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")
    namespace = variables["namespace"]
    assert namespace["type"] == "query" and namespace["datasource"] == DATASOURCE
    assert namespace["query"]["query"] == "label_values(servestack_num_requests_running, namespace)"


def test_every_panel_has_queries_on_the_variable_data_source(dashboard: dict[str, Any]) -> None:
    for panel in dashboard["panels"]:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(set(refs)) == len(refs), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE and target["expr"].strip(), panel["title"]
            if not target["expr"].count("DCGM_"):  # GPUs are the cluster's, not a namespace's
                assert 'namespace="$namespace"' in target["expr"], (panel["title"], target["expr"])


def test_the_panels_are_the_on_call_tables(dashboard: dict[str, Any]) -> None:
    assert [panel["title"] for panel in dashboard["panels"]] == [
        "Requests by status", "Rejections by reason", "Requests and rate limits by client", "Waiting and running",
        "Time to first token", "Inter-token latency", "End-to-end latency", "Tokens per second", "Batch size",
        "KV cache usage", "Model revision", "Replicas: available, wanted, desired", "GPU utilisation",
        "GPU memory"]
    legends = {panel["title"]: [t["legendFormat"] for t in panel["targets"]] for panel in dashboard["panels"]}
    for latency in ("Time to first token", "Inter-token latency", "End-to-end latency"):
        assert legends[latency] == ["p50", "p95", "p99"]


def test_the_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_every_query_parses(dashboard: dict[str, Any], tmp_path: Path) -> None:
    """Each query, its variables replaced, as a recording rule that `promtool check rules` parses."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: `make promtool` installs Debian's prometheus package")
    queries = panel_queries(dashboard, "servestack", "2m")
    rules = [{"record": f"panel_{i}", "expr": query.expr} for i, query in enumerate(queries)]
    (tmp_path / "queries.yaml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", "queries.yaml"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout


def test_metrics_from_other_exporters_are_documented_ones(dashboard: dict[str, Any]) -> None:
    names = {name for query in panel_queries(dashboard, "servestack", "2m") for name in metric_names(query.expr)}
    external = {name for name in names if not name.startswith("servestack_")}
    assert external == {"kube_deployment_status_replicas_available", "kube_deployment_spec_replicas",
                        "kube_horizontalpodautoscaler_status_desired_replicas", "DCGM_FI_DEV_GPU_UTIL",
                        "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE"}
    assert external <= documented()


@pytest.mark.parametrize(("expr", "names"), [
    ('sum by (status) (rate(servestack_http_requests_total{namespace="x",handler!~"/health.*"}[1m]))',
     {"servestack_http_requests_total"}),
    ("histogram_quantile(0.95, sum by (le) (rate(servestack_batch_size_bucket[5m])))",
     {"servestack_batch_size_bucket"}),
    ("sum(rate(a_sum[1m])) / sum(rate(a_count[1m]))", {"a_sum", "a_count"}),
    ("avg by (Hostname, gpu) (DCGM_FI_DEV_GPU_UTIL)", {"DCGM_FI_DEV_GPU_UTIL"}),
    ("x > 0 and on (namespace) y == 1 or z offset 5m", {"x", "y", "z"}),
    ('count by (revision) (m{l="a{b}"})', {"m"}),
])
def test_metric_names_of_an_expression(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_cluster_only_queries_are_told_apart() -> None:
    assert needs_cluster("sum(kube_deployment_spec_replicas)") and needs_cluster("DCGM_FI_DEV_FB_USED")
    assert not needs_cluster("sum(servestack_num_requests_waiting)")
