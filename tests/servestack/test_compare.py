"""`servestack compare`: stacks side by side from their plans, a measured bench run, the report and plots."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from serving.bench import LoadResult, RequestResult
from serving.sidebyside import ratios

REPO = Path(__file__).resolve().parents[2]
Plan = Callable[[str], dict[str, Any]]


@pytest.fixture
def plans(stack_plan: Plan, tmp_path: Path) -> Path:
    directory = tmp_path / "plans"
    directory.mkdir()
    for stack in ("aws-dev", "gcp-dev", "gcp-prod", "local"):
        (directory / f"{stack}.json").write_text(json.dumps(stack_plan(stack)))
    return directory


def bench_file(path: Path, throughputs: dict[int, float]) -> Path:
    """A `serving.bench --json` file, its levels made by serving.bench itself: concurrency -> tokens/s over 10 s."""
    levels = []
    for concurrency, tokens_per_second in throughputs.items():
        per_request = int(tokens_per_second * 10 / 4)
        results = [RequestResult(ok=True, ttft=0.05 * (i + 1), latency=2.0, output_tokens=per_request)
                   for i in range(4)]
        levels.append(LoadResult(concurrency, 4, 32, per_request, None, 10.0, results).to_dict())
    path.write_text(json.dumps({"url": "http://endpoint", "levels": levels}))
    return path


def sidebyside_file(path: Path) -> Path:
    def result(tokens_per_second: float, ttft_ms: float) -> dict[str, Any]:
        return {"output_throughput": tokens_per_second, "ttft": {"p50": ttft_ms, "p99": ttft_ms * 1.2}}

    results = {"baseline": result(25.0, 70_000), "server": result(370.0, 600), "engine": result(400.0, 570)}
    path.write_text(json.dumps({"model": "smollm2", "date": "2026-11-25T08:14:43+00:00",
                                "machine": {"cpu": "AMD EPYC", "cores": 2}, "workload": {"concurrency": 16},
                                "results": results, "ratios": ratios(results)}))
    return path


def compare(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "servestack.cli", "compare", *arguments], capture_output=True,
                          text=True, timeout=120, cwd=REPO)


def test_a_measured_stack_gets_its_cost_per_million_tokens_and_the_report_its_plots(
    plans: Path, tmp_path: Path
) -> None:
    bench = bench_file(tmp_path / "aws-dev-bench.json", {1: 400.0, 8: 2000.0})
    out = tmp_path / "report"
    result = compare("--plans", str(plans), "--bench", f"aws-dev={bench}", "--sidebyside",
                     str(sidebyside_file(tmp_path / "sbs.json")), "--out", str(out))
    assert result.returncode == 0, result.stderr

    stacks = {s["stack"]: s for s in json.loads((out / "comparison.json").read_text())["stacks"]}
    aws = stacks["aws-dev"]
    assert aws["measured"]["concurrency"] == 8  # the best level
    assert aws["measured"]["replicas"] == 1  # aws-dev's minimum
    assert aws["measured"]["output_throughput"] == pytest.approx(2000.0)
    assert aws["measured"]["ttft_p50_ms"] == pytest.approx(125.0)  # of 50, 100, 150, 200 ms
    assert aws["per_million_tokens"] == pytest.approx(0.33 / (2000 * 3600) * 1e6)  # $0.0458
    assert aws["measured"]["kind"] == "measured" and aws["estimate"] is None  # never both
    # gcp-dev nobody measured: its figures are an estimate, and say so
    assert stacks["gcp-dev"]["measured"] is None and stacks["gcp-dev"]["estimate"]["kind"] == "estimate"
    assert stacks["gcp-dev"]["per_million_tokens_kind"] == "estimate"
    # --sidebyside is a plot, not a measurement: `servestack run` records it as local's (out/verify/local.json)
    assert stacks["local"]["measured"] is None
    assert stacks["local"]["idle_per_hour"] == 0 and stacks["local"]["replica_per_hour"] is None
    assert "$0.046" in result.stdout  # the terminal table

    for png in ("cost.png", "per_million_tokens.png", "tpot.png", "sidebyside.png"):
        assert (out / png).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    report = (out / "report.html").read_text()
    assert report.count("data:image/png;base64,") == 4
    for text in ("aws-dev", "gcp-dev", "nvidia-l4 x1 on g6.xlarge, spot", "$0.046", "NAT gateway aws-network-nat-0",
                 "server &gt;= 8x baseline: met"):
        assert text in report


def test_without_measurements_the_report_still_prices_every_stack(plans: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = compare("--plans", str(plans), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["comparison.json", "cost.png", "per_million_tokens.png",
                                                    "report.html", "tpot.png"]


def test_an_endpoint_measured_with_several_replicas_is_shared_among_them(plans: Path, tmp_path: Path) -> None:
    bench = bench_file(tmp_path / "gcp-prod-bench.json", {16: 3000.0})
    out = tmp_path / "report"
    # gcp-prod's autoscaler keeps 2 replicas: by default each served half of the measured tokens
    assert compare("--plans", str(plans), "--bench", f"gcp-prod={bench}", "--out", str(out)).returncode == 0
    gcp = {s["stack"]: s for s in json.loads((out / "comparison.json").read_text())["stacks"]}["gcp-prod"]
    assert (gcp["min_replicas"], gcp["measured"]["replicas"]) == (2, 2)
    assert gcp["per_million_tokens"] == pytest.approx(0.707 / (1500 * 3600) * 1e6)
    # pinned to one replica for the run, as given after @
    assert compare("--plans", str(plans), "--bench", f"gcp-prod={bench}@1", "--out", str(out)).returncode == 0
    gcp = {s["stack"]: s for s in json.loads((out / "comparison.json").read_text())["stacks"]}["gcp-prod"]
    assert gcp["per_million_tokens"] == pytest.approx(0.707 / (3000 * 3600) * 1e6)


@pytest.mark.parametrize(("bench", "message"), [
    ("aws-dev", "--bench 'aws-dev': expected STACK=FILE or STACK=FILE@REPLICAS"),
    ("aws-dev=b.json@none", "--bench 'aws-dev=b.json@none': expected STACK=FILE or STACK=FILE@REPLICAS"),
    ("aws-dev=b.json@0", "(REPLICAS a whole number >= 1)"),
    ("azure-prod=x.json", "no plan for stack 'azure-prod'; planned: aws-dev, gcp-dev, gcp-prod, local"),
    ("aws-dev=missing.json", "--bench missing.json: not a serving.bench JSON file"),
])
def test_a_bad_bench_argument_is_refused_naming_it(plans: Path, bench: str, message: str) -> None:
    result = compare("--plans", str(plans), "--bench", bench)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_no_plans_is_refused_with_what_to_run(tmp_path: Path) -> None:
    result = compare("--plans", str(tmp_path))
    assert result.returncode == 2
    assert "no plan files; run `servestack plan` first" in result.stderr


def test_a_file_that_is_not_a_plan_is_refused_naming_it(plans: Path) -> None:
    (plans / "notes.json").write_text(json.dumps({"stack": "notes", "resources": "none"}))
    result = compare("--plans", str(plans))
    assert result.returncode == 2
    assert f"{plans / 'notes.json'}: not a servestack plan" in result.stderr and "Traceback" not in result.stderr


def test_a_sidebyside_file_without_its_results_is_refused_naming_it(plans: Path, tmp_path: Path) -> None:
    partial = tmp_path / "sbs.json"
    partial.write_text(json.dumps({"model": "smollm2", "results": {"baseline": {}}}))
    result = compare("--plans", str(plans), "--sidebyside", str(partial))
    assert result.returncode == 2
    assert f"--sidebyside {partial}: not a serving.sidebyside JSON file" in result.stderr
