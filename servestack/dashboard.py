"""The Grafana dashboard as code (infra/dashboards/servestack.json), against a real Prometheus.

    python -m servestack.dashboard [--out docs/dashboard.png] [--seconds 90]

starts the server (`python -m serving` with the bundled tiny model, metrics on their own port as in the
Deployment) and Debian's `prometheus` on 127.0.0.1, Prometheus scraping the server every second with the
`namespace` and `pod` labels the Prometheus Operator attaches to what a PodMonitor scrapes (so the dashboard's
queries work unchanged), drives a mixed load at it (`drive_load`: several clients, streamed and whole answers,
a burst past the queue, a client over its limit, a stranger without a key), then asks Prometheus for every
panel's queries over the run (query_range) and draws the panels in their dashboard grid into a PNG.
Panels that read kube-state-metrics or NVIDIA's DCGM exporter have no data outside a cluster with GPUs, and
the picture says so on them.

The pieces (`panel_queries`, `metric_names`, `LocalPrometheus`, `drive_load`) are what
tests/serving/test_prometheus.py uses to evaluate every query against the real server.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import httpx

from serving.sidebyside import free_port

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "infra" / "dashboards" / "servestack.json"
# The labels the Prometheus Operator puts on a pod's series (a PodMonitor's target): what the queries select on.
NAMESPACE = "servestack"
POD = "servestack-5d9c7b-abcde"
# Metrics that only exporters in a cluster provide: kube-state-metrics, and the DCGM exporter on GPU nodes.
CLUSTER_ONLY = re.compile(r"^(kube_|DCGM_)")

_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
             "offset", "inf", "nan"}


class Query(NamedTuple):
    panel: str
    ref: str
    legend: str
    expr: str


def load(path: Path = DASHBOARD) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def panel_queries(dashboard: Mapping[str, Any], namespace: str, rate_interval: str) -> list[Query]:
    """Every target of every panel, its variables replaced as Grafana would (`$namespace`, `$__rate_interval`)."""
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", ()):
            expr = target["expr"].replace("$__rate_interval", rate_interval).replace("$namespace", namespace)
            queries.append(Query(panel["title"], target["refId"], target.get("legendFormat", ""), expr))
    return queries


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (strings, label matchers, ranges, groupings and function
    names left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    return {m[1] for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\(?)", text)
            if not m[2] and m[1].lower() not in _KEYWORDS}


def needs_cluster(expr: str) -> bool:
    return any(CLUSTER_ONLY.match(name) for name in metric_names(expr))


class LocalPrometheus:
    """Debian's `prometheus` on 127.0.0.1 (a free port), scraping `target` every `interval` with `labels`
    attached; a context manager that stops it (and removes nothing it did not create)."""

    def __init__(self, target: str, labels: Mapping[str, str], workdir: Path, interval: str = "1s") -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is not installed: `make promtool` installs Debian's prometheus package")
        self.binary = binary
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        config = {"global": {"scrape_interval": interval, "evaluation_interval": interval},
                  "scrape_configs": [{"job_name": "servestack", "static_configs": [
                      {"targets": [target], "labels": dict(labels)}]}]}
        self.config = workdir / "prometheus.yml"
        self.config.write_text(json.dumps(config))  # YAML is a superset of JSON
        self.log = workdir / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LocalPrometheus:
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [self.binary, f"--config.file={self.config}", f"--storage.tsdb.path={self.workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1d",
                 "--log.level=warn"], stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited ({self.process.returncode}): {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("prometheus was not ready within 30s")
            time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def _api(self, path: str, **params: str) -> Any:
        answer = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=30).json()
        if answer["status"] != "success":
            raise RuntimeError(f"prometheus refused {params.get('query')!r}: {answer.get('error')}")
        return answer["data"]["result"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector of `expr` now."""
        return list(self._api("query", query=expr))

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        return list(self._api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step:g}"))

    def wait_for(self, expr: str, timeout: float = 30) -> None:
        """Until `expr` returns data (the first scrapes are in)."""
        deadline = time.monotonic() + timeout
        while not self.query(expr):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no data for {expr} within {timeout:g}s")
            time.sleep(0.25)


# -- the server and its load --

@dataclass
class Clients:
    """API keys of the load's clients: their keys file, and which key is held to a small limit per minute."""

    keys: dict[str, str] = field(default_factory=lambda: {"web": "key-of-web", "mobile": "key-of-mobile",
                                                          "batch": "key-of-batch"})
    limited: str = "batch"
    limit_per_minute: int = 20

    def keys_file(self, path: Path) -> Path:
        from serving.keys import digest

        path.write_text(json.dumps({"clients": [
            {"client": client, "sha256": digest(key),
             "requestsPerMinute": self.limit_per_minute if client == self.limited else 0, "tokensPerMinute": 0}
            for client, key in self.keys.items()]}))
        return path


def _request(http: httpx.Client, key: str, rng: random.Random) -> None:
    max_tokens = rng.choice((8, 16, 32, 64))
    headers = {"Authorization": f"Bearer {key}"}
    if rng.random() < 0.5:
        body = {"prompt": "the quick brown fox " * rng.randint(1, 8), "max_tokens": max_tokens,
                "ignore_eos": True, "stream": rng.random() < 0.5}
        path = "/v1/completions"
    else:
        body = {"messages": [{"role": "user", "content": "tell me a story " * rng.randint(1, 6)}],
                "max_tokens": max_tokens, "ignore_eos": True, "stream": rng.random() < 0.5}
        path = "/v1/chat/completions"
    try:
        with http.stream("POST", path, json=body, headers=headers) as answer:
            for _ in answer.iter_bytes():
                pass
    except httpx.HTTPError:
        pass  # a refused or timed-out request is part of the load


def drive_load(base_url: str, clients: Clients, seconds: float, workers: int = 6, burst: int = 16,
               seed: int = 7) -> None:
    """A mixed load for `seconds`: `workers` threads of the unlimited clients, one of the limited client at a
    pace over its limit, one stranger without a valid key now and then, and in the middle a burst of `burst`
    requests at once (past a short queue: 429 queue_full)."""
    stop = time.monotonic() + seconds
    unlimited = [key for client, key in clients.keys.items() if client != clients.limited]

    def worker(index: int) -> None:
        rng = random.Random(seed + index)
        with httpx.Client(base_url=base_url, timeout=120) as http:
            while time.monotonic() < stop:
                _request(http, unlimited[index % len(unlimited)], rng)

    def limited() -> None:
        rng = random.Random(seed - 1)
        with httpx.Client(base_url=base_url, timeout=120) as http:
            while time.monotonic() < stop:
                _request(http, clients.keys[clients.limited], rng)
                time.sleep(0.5)

    def stranger() -> None:
        with httpx.Client(base_url=base_url, timeout=30) as http:
            while time.monotonic() < stop:
                http.post("/v1/completions", json={"prompt": "x"}, headers={"Authorization": "Bearer wrong"})
                time.sleep(2)

    def one(index: int) -> None:
        with httpx.Client(base_url=base_url, timeout=120) as http:
            _request(http, unlimited[0], random.Random(seed * 100 + index))

    def burst_at_midpoint() -> None:
        time.sleep(seconds / 2)
        threads = [threading.Thread(target=one, args=(i,)) for i in range(burst)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    threads += [threading.Thread(target=limited), threading.Thread(target=stranger),
                threading.Thread(target=burst_at_midpoint)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@contextmanager
def serving_process(model: Path, workdir: Path, clients: Clients, **env: str) -> Iterator[tuple[str, str]]:
    """`python -m serving` on 127.0.0.1 with `model`, until ready: (its API's URL, its metrics' host:port)."""
    port, metrics_port = free_port(), free_port()
    environment = {**os.environ, "MODEL_PATH": str(model), "SERVESTACK_HOST": "127.0.0.1",
                   "SERVESTACK_PORT": str(port), "SERVESTACK_METRICS_PORT": str(metrics_port),
                   "SERVESTACK_API_KEYS_FILE": str(clients.keys_file(workdir / "api-keys.json")),
                   "SERVESTACK_LOG_LEVEL": "warning", "SERVESTACK_TORCH_THREADS": "1", **env}
    with (workdir / "server.log").open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "serving"], env=environment, stdout=out,
                                   stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited ({process.returncode}): "
                                   f"{(workdir / 'server.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the server was not ready within 120s")
            time.sleep(0.1)
        yield url, f"127.0.0.1:{metrics_port}"
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# -- the picture --

_BACKGROUND, _PANEL, _TEXT, _GRID = "#111217", "#181b1f", "#ccccdc", "#2c3235"


def _legend(template: str, labels: Mapping[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m[1], ""), template) or "value"


def render(dashboard: Mapping[str, Any], prometheus: LocalPrometheus, start: float, end: float, out: Path,
           namespace: str = NAMESPACE) -> None:
    """Each panel's queries over [start, end] drawn where the dashboard's grid puts the panel."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    step = max(1.0, (end - start) / 240)
    rate_interval = f"{max(10, int(step * 4))}s"  # Grafana's $__rate_interval: at least 4 scrapes, and 4 steps
    panels = dashboard["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    figure = plt.figure(figsize=(18, rows * 0.42 + 1.0), facecolor=_BACKGROUND)
    grid = figure.add_gridspec(rows, 24, left=0.04, right=0.99, top=1 - 0.9 / (rows * 0.42 + 1.0), bottom=0.02,
                               hspace=8.0, wspace=4.0)
    taken = datetime.fromtimestamp(end, UTC).strftime("%Y-%m-%d %H:%M UTC")
    figure.suptitle(f"{dashboard['title']} (infra/dashboards/servestack.json): the tiny model on a CPU under a "
                    f"mixed load, Prometheus scraping every second, {taken}, namespace {namespace}", color=_TEXT,
                    fontsize=13, x=0.01, ha="left")
    for panel in panels:
        pos = panel["gridPos"]
        axes = figure.add_subplot(grid[pos["y"]:pos["y"] + pos["h"] - 1, pos["x"]:pos["x"] + pos["w"]])
        axes.set_facecolor(_PANEL)
        axes.set_title(panel["title"], color=_TEXT, fontsize=11, loc="left")
        axes.tick_params(colors=_TEXT, labelsize=8)
        for spine in axes.spines.values():
            spine.set_color(_GRID)
        axes.grid(color=_GRID, linewidth=0.5)
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        axes.set_ylabel({"s": "seconds", "reqps": "requests/s", "percentunit": "fraction", "percent": "%",
                         "decmbytes": "MiB"}.get(unit, ""), color=_TEXT, fontsize=8)
        axes.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
        queries = panel_queries({"panels": [panel]}, namespace, rate_interval)
        if all(needs_cluster(q.expr) for q in queries):
            source = "kube-state-metrics" if any("kube_" in q.expr for q in queries) else "the DCGM exporter"
            axes.text(0.5, 0.5, f"no data here: needs {source}\n(in the cluster; not in this local run)",
                      color=_TEXT, ha="center", va="center", transform=axes.transAxes, fontsize=10)
            axes.set_xticks([])
            axes.set_yticks([])
            continue
        drawn = 0
        for query in queries:
            for series in prometheus.query_range(query.expr, start, end, step):
                times = mdates.date2num([datetime.fromtimestamp(float(t), UTC) for t, _ in series["values"]])
                values = [float(v) for _, v in series["values"]]
                axes.plot(times, values, linewidth=1.4, label=_legend(query.legend, series["metric"]))
                drawn += 1
        if drawn:
            axes.legend(fontsize=7, facecolor=_PANEL, edgecolor=_GRID, labelcolor=_TEXT, loc="upper left")
        axes.set_ylim(bottom=0)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=80, facecolor=_BACKGROUND)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m servestack.dashboard", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "dashboard.png")
    parser.add_argument("--seconds", type=float, default=90.0, help="how long the load runs (default 90)")
    args = parser.parse_args(argv)
    if args.seconds < 20:
        parser.error(f"--seconds must be at least 20, so that every panel has a few points (got {args.seconds:g})")
    from serving import manifest
    from serving.models import build_tiny

    dashboard = load()
    clients = Clients()
    with tempfile.TemporaryDirectory(prefix="servestack-dashboard-") as tmp:
        workdir = Path(tmp)
        model = build_tiny(workdir / "tiny")
        manifest.write(manifest.build(model, "tiny", "r1"), model)  # a revision to show, as a stack serves one
        with serving_process(model, workdir, clients, SERVESTACK_MAX_BATCH_SIZE="4", SERVESTACK_MAX_QUEUE="12",
                             SERVESTACK_MODEL_REVISION="r1") as (url, metrics), \
                LocalPrometheus(metrics, {"namespace": NAMESPACE, "pod": POD}, workdir) as prometheus:
            prometheus.wait_for("servestack_num_requests_running")
            start = time.time()
            print(f"load for {args.seconds:g}s against {url}, Prometheus at {prometheus.url}", file=sys.stderr)
            drive_load(url, clients, args.seconds)
            time.sleep(3)  # the last scrapes
            render(dashboard, prometheus, start - 5, time.time(), args.out)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
