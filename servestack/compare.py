"""`servestack compare`: the clouds side by side, in the terminal and as a report with plots.

    servestack compare [--plans out/plans] [--bench STACK=BENCH.json[@REPLICAS] ...]
                       [--measured out/verify] [--sidebyside SIDEBYSIDE.json] [--out out/compare]

For every planned stack: the estimated $/hour idle and at peak (servestack.cost) and the hourly price of one
serving replica. Where a stack has a measurement (`servestack verify`'s out/verify/STACK.json, or `--bench`:
the JSON of `python -m serving.bench` run against that stack's endpoint, with REPLICAS serving it, by default
the Deployment's minimum), its best output throughput and TTFT, and what its output tokens cost: $ per
million = replica $/h / (tokens/s per replica x 3600) x 1e6. Since no stack may have been measured yet,
the report also plots that cost against throughput for every stack, so any measured or expected figure can
be read off. `--sidebyside` adds the serving benchmark run on this machine (`python -m serving.sidebyside`):
baseline, our server and our engine alone, on the CPU.

Writes `report.html` (self-contained: tables and plots), `comparison.json` and the plots as PNG files.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from servestack import terminal
from servestack.cost import Estimate, estimate

EXIT_BAD_INPUT = 2
THROUGHPUTS = (50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000)  # output tokens/s per replica, for the curve


class CompareError(ValueError):
    pass


@dataclass(frozen=True)
class Measured:
    """The best level of a `serving.bench` run against one stack."""

    source: str
    concurrency: int
    output_throughput: float  # of the whole endpoint
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    replicas: int | None = None  # that served it, as given; None: the stack's minimum replicas


@dataclass(frozen=True)
class Row:
    estimate: Estimate
    measured: Measured | None

    @property
    def replicas(self) -> int | None:
        if self.measured is None:
            return None
        return self.measured.replicas or self.estimate.min_replicas

    @property
    def per_million_tokens(self) -> float | None:
        if self.measured is None or not self.replicas:
            return None
        return self.estimate.per_million_tokens(self.measured.output_throughput / self.replicas)

    def to_dict(self) -> dict[str, Any]:
        measured = None
        if self.measured is not None:
            measured = {"source": self.measured.source, "concurrency": self.measured.concurrency,
                        "replicas": self.replicas, "output_throughput": self.measured.output_throughput,
                        "ttft_p50_ms": self.measured.ttft_p50_ms, "ttft_p99_ms": self.measured.ttft_p99_ms}
        return {**self.estimate.to_dict(), "measured": measured, "per_million_tokens": self.per_million_tokens}


def load_bench(path: Path, replicas: int | None = None) -> Measured:
    """The level with the highest output throughput in a `serving.bench --json` file."""
    try:
        data = json.loads(path.read_text())
        levels = [level for level in data["levels"] if level["completed"] > 0]
        if not levels:
            raise CompareError(f"--bench {path}: no level completed a request")
        best = max(levels, key=lambda level: float(level["output_throughput"]))
        return Measured(str(path), int(best["concurrency"]), float(best["output_throughput"]),
                        best["ttft"]["p50"], best["ttft"]["p99"], replicas)
    except (OSError, ValueError, KeyError, TypeError) as error:
        if isinstance(error, CompareError):
            raise
        raise CompareError(f"--bench {path}: not a serving.bench JSON file ({error})") from error


def parse_bench_args(values: Sequence[str], stacks: Sequence[str]) -> dict[str, Measured]:
    measured: dict[str, Measured] = {}
    for value in values:
        stack, sep, target = value.partition("=")
        file, at, count = target.rpartition("@") if "@" in target else (target, "", "")
        if not sep or not stack or not file or (at and not (count.isdigit() and int(count) > 0)):
            raise CompareError(f"--bench {value!r}: expected STACK=FILE or STACK=FILE@REPLICAS (REPLICAS a "
                               f"whole number >= 1), e.g. aws-dev=bench.json@1")
        if stack not in stacks:
            raise CompareError(f"--bench {value!r}: no plan for stack {stack!r}; planned: {', '.join(stacks)}")
        measured[stack] = load_bench(Path(file), int(count) if at else None)
    return measured


def measured_results(measured_dir: Path | None, stacks: Sequence[str]) -> list[str]:
    """`servestack verify`'s measurements (MEASURED_DIR/STACK.json) of the planned stacks, as --bench values."""
    if measured_dir is None:
        return []
    return [f"{stack}={measured_dir / f'{stack}.json'}" for stack in stacks
            if (measured_dir / f"{stack}.json").is_file()]


def compare(plans_dir: Path, bench: Sequence[str] = (), measured_dir: Path | None = None) -> list[Row]:
    paths = sorted(plans_dir.glob("*.json"))
    if not paths:
        raise CompareError(f"--plans {plans_dir}: no plan files; run `servestack plan` first")
    estimates = []
    for path in paths:
        try:
            estimates.append(estimate(json.loads(path.read_text())))
        except (OSError, ValueError) as error:  # PlanShapeError and JSONDecodeError are ValueErrors
            raise CompareError(f"{path}: {error}") from error
    stacks = [e.stack for e in estimates]
    # What verify measured, unless --bench gives that stack's figures (later values win).
    measured = parse_bench_args([*measured_results(measured_dir, stacks), *bench], stacks)
    return [Row(e, measured.get(e.stack)) for e in estimates]


def load_sidebyside(path: Path) -> dict[str, Any]:
    """A `serving.sidebyside --json` file, checked for what the report reads."""

    def need(value: Any, *keys: str) -> Any:
        for key in keys:
            value = value[key]
        return value

    try:
        data: dict[str, Any] = json.loads(path.read_text())
        for keys in (("model",), ("date",), ("machine", "cores"), ("workload", "concurrency")):
            need(data, *keys)
        for name in ("baseline", "server", "engine"):
            float(need(data, "results", name, "output_throughput"))
            need(data, "results", name, "ttft", "p50")
            need(data, "results", name, "ttft", "p99")
        return data
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CompareError(f"--sidebyside {path}: not a serving.sidebyside JSON file ({error})") from error


# --- the terminal -----------------------------------------------------------------------------------


def _money(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"${value:,.{digits}f}"


def print_rows(rows: Sequence[Row]) -> None:
    table = Table(title="clouds side by side (estimated list prices, US$)", title_justify="left",
                  caption="idle: pools at their minimum with the serving minimum replicas up; peak: pools at "
                          "their maximum; $/1M tok: one replica at the measured throughput",
                  caption_justify="left")
    for column in ("stack", "GPU", "idle $/h", "peak $/h", "replica $/h", "measured tok/s", "TTFT p50/p99 ms",
                   "$/1M tok"):
        table.add_column(column, justify="left" if column in ("stack", "GPU") else "right")
    for row in rows:
        e, m = row.estimate, row.measured
        ttft = "-" if m is None else f"{_ms(m.ttft_p50_ms)} / {_ms(m.ttft_p99_ms)}"
        table.add_row(e.stack, escape(e.gpu or "-"), _money(e.idle_per_hour if e.lines else None),
                      _money(e.peak_per_hour if e.lines else None), _money(e.replica_per_hour, 3),
                      "-" if m is None else f"{m.output_throughput:,.1f} ({row.replicas} repl.)", ttft,
                      _money(row.per_million_tokens, 3))
    terminal.console.print(table)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


# --- the report -------------------------------------------------------------------------------------


def _plots(rows: Sequence[Row], sidebyside: dict[str, Any] | None, out: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    priced = [r for r in rows if r.estimate.lines]
    written: dict[str, Path] = {}
    if priced:
        fig, ax = plt.subplots(figsize=(8, 4))
        names = [r.estimate.stack for r in priced]
        xs = range(len(priced))
        ax.bar([x - 0.2 for x in xs], [r.estimate.idle_per_hour for r in priced], width=0.4, label="idle")
        ax.bar([x + 0.2 for x in xs], [r.estimate.peak_per_hour for r in priced], width=0.4, label="peak")
        ax.set_xticks(list(xs), names)
        ax.set_ylabel("US$ per hour")
        ax.set_title("Estimated cost per hour")
        ax.legend()
        fig.tight_layout()
        written["cost"] = _save(fig, out / "cost.png")

        fig, ax = plt.subplots(figsize=(8, 4.5))
        for row in priced:
            e = row.estimate
            if e.replica_per_hour is None:
                continue
            costs = [e.per_million_tokens(t) or 0.0 for t in THROUGHPUTS]  # never None: the replica is priced
            line = ax.plot(THROUGHPUTS, costs, label=e.stack)[0]
            if row.measured is not None and row.replicas and row.per_million_tokens is not None:
                ax.scatter([row.measured.output_throughput / row.replicas], [row.per_million_tokens],
                           color=line.get_color(), zorder=3, edgecolors="black")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("output tokens/s of one replica")
        ax.set_ylabel("US$ per 1M output tokens")
        ax.set_title("What a million output tokens cost (dots: measured)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        written["per_million"] = _save(fig, out / "per_million_tokens.png")

    if sidebyside is not None:
        results = sidebyside["results"]
        labels = [k for k in ("baseline", "server", "engine") if k in results]
        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.8))
        left.bar(labels, [results[k]["output_throughput"] for k in labels], color=["grey", "tab:blue", "tab:green"])
        left.set_ylabel("output tokens/s")
        left.set_title("Throughput")
        xs = range(len(labels))
        right.bar([x - 0.2 for x in xs], [results[k]["ttft"]["p50"] or 0 for k in labels], width=0.4, label="p50")
        right.bar([x + 0.2 for x in xs], [results[k]["ttft"]["p99"] or 0 for k in labels], width=0.4, label="p99")
        right.set_xticks(list(xs), labels)
        right.set_yscale("log")
        right.set_ylabel("ms")
        right.set_title("Time to first token")
        right.legend()
        fig.suptitle(f"{sidebyside['model']} on this machine, concurrency {sidebyside['workload']['concurrency']}")
        fig.tight_layout()
        written["sidebyside"] = _save(fig, out / "sidebyside.png")
    return written


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _img(path: Path | None, alt: str) -> str:
    if path is None:
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _html(rows: Sequence[Row], sidebyside: dict[str, Any] | None, plots: dict[str, Path], generated: str) -> str:
    def cell(value: str) -> str:
        return f"<td>{html.escape(value)}</td>"

    body = ["<tr><th>stack</th><th>GPU</th><th>idle $/h</th><th>peak $/h</th><th>replica $/h</th>"
            "<th>measured tok/s</th><th>TTFT p50 / p99 ms</th><th>$ per 1M output tokens</th></tr>"]
    for row in rows:
        e, m = row.estimate, row.measured
        body.append("<tr>" + "".join(cell(v) for v in (
            e.stack, e.gpu or "-", _money(e.idle_per_hour if e.lines else None),
            _money(e.peak_per_hour if e.lines else None), _money(e.replica_per_hour, 3),
            "-" if m is None else f"{m.output_throughput:,.1f} ({row.replicas} replicas)",
            "-" if m is None else f"{_ms(m.ttft_p50_ms)} / {_ms(m.ttft_p99_ms)}",
            _money(row.per_million_tokens, 3))) + "</tr>")
    details = []
    for row in rows:
        e = row.estimate
        if not e.lines:
            continue
        items = "".join(f"<tr>{cell(line.item)}{cell(f'{line.per_hour:.4f}')}{cell(str(line.idle))}"
                        f"{cell(str(line.peak))}</tr>" for line in e.lines)
        unpriced = "".join(f"<li>not priced: {html.escape(u)}</li>" for u in e.unpriced)
        details.append(f"<h3>{html.escape(e.stack)}</h3><table><tr><th>item</th><th>$/h each</th><th>idle</th>"
                       f"<th>peak</th></tr>{items}</table><ul>{unpriced}</ul>")
    serving = ""
    if sidebyside is not None:
        ratios = sidebyside.get("ratios", {})
        goals = "".join(f"<li>{html.escape(goal)}: {'met' if met else 'NOT met'}</li>"
                        for goal, met in ratios.get("goals", {}).items())
        serving = (f"<h2>The serving image on this machine</h2><p>{html.escape(sidebyside['model'])}, "
                   f"{html.escape(str(sidebyside['machine'].get('cpu')))}, {sidebyside['machine'].get('cores')} "
                   f"cores, {html.escape(sidebyside['date'])}: (a) model.generate behind a lock, (b) our server "
                   f"over HTTP, (c) our engine alone.</p>{_img(plots.get('sidebyside'), 'side by side')}"
                   f"<ul>{goals}</ul>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>servestack: clouds side by side</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:right}}
td:first-child,th:first-child{{text-align:left}}img{{max-width:100%}}</style></head><body>
<h1>servestack: clouds side by side</h1>
<p>Generated {html.escape(generated)}. Estimated from each stack's offline plan at on-demand (or spot) list
prices of the clouds' reference regions; disks, storage, data transfer and per-GB charges are left out.
$ per 1M output tokens: one replica's hourly price over its share of the measured output tokens per hour.</p>
<table>{''.join(body)}</table>
{_img(plots.get('cost'), 'cost per hour')}
{_img(plots.get('per_million'), 'dollars per million tokens')}
{serving}
<h2>What each stack pays for</h2>{''.join(details)}
</body></html>
"""


def write_report(rows: Sequence[Row], sidebyside: dict[str, Any] | None, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    generated = datetime.now(UTC).isoformat(timespec="seconds")
    plots = _plots(rows, sidebyside, out)
    (out / "comparison.json").write_text(json.dumps(
        {"generated": generated, "stacks": [row.to_dict() for row in rows],
         "sidebyside": sidebyside}, indent=2) + "\n")
    report = out / "report.html"
    report.write_text(_html(rows, sidebyside, plots, generated))
    return report


# --- command line -----------------------------------------------------------------------------------


def register(commands: Any, out_dir: Path) -> None:
    """Add the `compare` subcommand to the servestack command line."""
    parser = commands.add_parser("compare", help="the stacks side by side: cost, measured throughput, "
                                                 "$ per 1M tokens; writes a report with plots")
    parser.add_argument("--plans", type=Path, default=out_dir / "plans",
                        help="plan JSON files, as `servestack plan` writes them (default: %(default)s)")
    parser.add_argument("--bench", action="append", default=[], metavar="STACK=FILE",
                        help="a `python -m serving.bench --json` file measured against that stack's endpoint")
    parser.add_argument("--measured", type=Path, default=out_dir / "verify",
                        help="`servestack verify`'s measurements, STACK.json each (default: %(default)s)")
    parser.add_argument("--sidebyside", type=Path, help="a `python -m serving.sidebyside --json` file")
    parser.add_argument("--out", type=Path, default=out_dir / "compare", help="report directory (default: "
                                                                              "%(default)s)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        rows = compare(args.plans, args.bench, args.measured)
        sidebyside = None
        if args.sidebyside is not None:
            sidebyside = load_sidebyside(args.sidebyside)
    except CompareError as error:
        terminal.errors.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
        return EXIT_BAD_INPUT
    print_rows(rows)
    report = write_report(rows, sidebyside, args.out)
    terminal.console.print(f"report written to {report}")
    return 0
