"""The dashboard's and the autoscaler's queries against a real Prometheus (Debian's `prometheus`) on 127.0.0.1,
scraping a real `python -m serving` under a short mixed load every second, with the `namespace` and `pod`
labels the Prometheus Operator attaches: every query returns data.

Queries that read kube-state-metrics or the DCGM exporter are left out here (no cluster, no GPU): their names
are checked against those exporters' documented metrics in tests/infra/test_dashboards.py."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from infra.alerts import alert_rules
from servestack.dashboard import (
    NAMESPACE,
    POD,
    Clients,
    LocalPrometheus,
    drive_load,
    load,
    metric_names,
    needs_cluster,
    panel_queries,
    render,
    serving_process,
)

MAX_BATCH = 4
LOAD_SECONDS = 10
RATE_INTERVAL = "1m"  # the whole run: every rate has its points


class Setup:
    def __init__(self, url: str, metrics: str, prometheus: LocalPrometheus, start: float, end: float) -> None:
        self.url, self.metrics, self.prometheus = url, metrics, prometheus
        self.start, self.end = start, end


@pytest.fixture(scope="module")
def loaded(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """The server and Prometheus, after the load; both stopped when the module is done."""
    workdir = tmp_path_factory.mktemp("prometheus")
    clients = Clients(limit_per_minute=5)  # over it within the run
    with serving_process(tiny_model, workdir, clients, SERVESTACK_MAX_BATCH_SIZE=str(MAX_BATCH),
                         SERVESTACK_MAX_QUEUE="12") as (url, metrics), \
            LocalPrometheus(metrics, {"namespace": NAMESPACE, "pod": POD}, workdir) as prometheus:
        prometheus.wait_for("servestack_num_requests_running")
        start = time.time()
        drive_load(url, clients, LOAD_SECONDS, workers=4, burst=12)
        prometheus.wait_for('servestack_rate_limited_total{client="batch"}')
        yield Setup(url, metrics, prometheus, start, time.time())


def _exported(metrics: str) -> set[str]:
    """The sample names on the server's /metrics (with their _bucket, _sum, _count, _total suffixes)."""
    text = httpx.get(f"http://{metrics}/metrics", timeout=10).text
    return {re.split(r"[{ ]", line, maxsplit=1)[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_every_server_metric_the_dashboard_and_the_alerts_name_is_exported(loaded: Setup) -> None:
    exported = _exported(loaded.metrics)
    queries = [q.expr for q in panel_queries(load(), NAMESPACE, RATE_INTERVAL)]
    queries += [rule["expr"] for group in alert_rules(2.0)["groups"] for rule in group["rules"]]
    named = {name for expr in queries for name in metric_names(expr) if name.startswith("servestack_")}
    assert len(named) >= 15
    assert named - exported == set()


def test_every_dashboard_query_returns_data(loaded: Setup) -> None:
    queries = panel_queries(load(), NAMESPACE, RATE_INTERVAL)
    in_cluster = {q.panel for q in queries if needs_cluster(q.expr)}
    assert in_cluster == {"Replicas: available, wanted, desired", "GPU utilisation", "GPU memory"}
    empty = []
    for query in queries:
        if needs_cluster(query.expr):
            continue
        result = loaded.prometheus.query(query.expr)
        values = [float(series["value"][1]) for series in result]
        if not any(math.isfinite(value) for value in values):
            empty.append(f"{query.panel} / {query.ref}: {query.expr} -> {result}")
    assert empty == []


def test_the_dashboard_sees_what_the_load_did(loaded: Setup) -> None:
    """The load's parts each show: both clients, the limited one refused, the stranger, the full queue."""
    def labels(expr: str, label: str) -> set[str]:
        return {series["metric"].get(label, "") for series in loaded.prometheus.query(expr)}

    assert labels("sum by (client) (servestack_client_requests_total)", "client") == {"web", "mobile", "batch"}
    assert labels("sum by (reason) (servestack_requests_rejected_total)", "reason") >= \
        {"rate_limited", "unauthorized"}
    assert labels('servestack_http_requests_total{status="200"}', "pod") == {POD}
    assert labels("servestack_num_requests_running", "namespace") == {NAMESPACE}


def test_the_autoscaler_queries_return_data(loaded: Setup) -> None:
    from infra.autoscaling import scaling_queries

    queries = scaling_queries(NAMESPACE, "servestack", MAX_BATCH)
    assert queries
    for name, expr in queries.items():
        result = loaded.prometheus.query(expr)
        assert len(result) == 1, f"{name}: {expr} -> {result}"
        assert math.isfinite(float(result[0]["value"][1])), f"{name}: {expr} -> {result}"


def test_the_picture_is_drawn_from_the_queries(loaded: Setup, tmp_path: Path) -> None:
    import matplotlib.image
    import numpy as np

    out = tmp_path / "dashboard.png"
    render(load(), loaded.prometheus, loaded.start, loaded.end, out)
    pixels = matplotlib.image.imread(out)
    assert pixels.shape[1] == 1440 and pixels.shape[0] > 1000
    # lines drawn, not an empty grid: the default colour cycle's blue, orange and green all show
    colours = {tuple(rgb) for rgb in np.unique((pixels[..., :3] * 255).round().astype(int).reshape(-1, 3), axis=0)}
    assert {(31, 119, 180), (255, 127, 14), (44, 160, 44)} <= colours
