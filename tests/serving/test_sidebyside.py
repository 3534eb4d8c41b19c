"""serving.sidebyside: the goal arithmetic, and one small real run on the tiny model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from serving.sidebyside import ratios


def result(throughput: float, ttft_p50: float, ttft_p99: float) -> dict[str, object]:
    return {"output_throughput": throughput, "ttft": {"p50": ttft_p50, "p99": ttft_p99}}


def test_ratios_judge_each_goal() -> None:
    met = ratios({"baseline": result(10, 5000, 9000), "server": result(85, 100, 400),
                  "engine": result(100, 50, 80)})
    assert met["server_vs_baseline_throughput"] == 8.5
    assert met["server_vs_engine_throughput"] == 0.85
    assert all(met["goals"].values())

    missed = ratios({"baseline": result(10, 300, 400), "server": result(79, 100, 400),
                     "engine": result(100, 50, 80)})
    assert list(missed["goals"].values()) == [False, False, False]


def test_a_small_real_run_on_the_tiny_model(tiny_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, "-m", "serving.sidebyside", "--model", str(tiny_model), "--concurrency", "4",
         "--requests", "8", "--input-len", "16", "--output-len", "8", "--json", str(out),
         "--logs", str(tmp_path / "logs")],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["model"] == "tiny"
    assert report["machine"]["cores"] >= 1
    for phase in ("baseline", "server", "engine"):
        figures = report["results"][phase]
        assert figures["errors"] == 0, phase
        assert figures["output_tokens"] == 8 * 8, phase
        assert figures["output_throughput"] > 0
    assert set(report["ratios"]["goals"]) == {
        "server >= 8x baseline", "server >= 85% of engine alone", "server p99 TTFT < baseline median TTFT"}
    assert "ratios and goals" in done.stdout
