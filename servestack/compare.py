"""`servestack compare`: the clouds side by side, in the terminal and as a report with plots.

    servestack compare [--plans out/plans] [--bench STACK=BENCH.json[@REPLICAS] ...]
                       [--measured out/verify] [--sidebyside SIDEBYSIDE.json] [--out out/compare]

For every planned stack: the estimated $/hour idle and at peak (servestack.cost) and the hourly price of one
serving replica. Where a stack has a measurement (`servestack verify`'s out/verify/STACK.json, or `--bench`:
the JSON of `python -m serving.bench` run against that stack's endpoint, with REPLICAS serving it, by default
the Deployment's minimum), its best output throughput, TTFT and TPOT, and what its output tokens cost: $ per
million = replica $/h / (tokens/s per replica x 3600) x 1e6. Every stack nobody measured gets an estimate
instead (servestack.estimate: decode speed from the GPU's memory bandwidth and the model's size, at batch 1
and at the configured batch), marked as one everywhere: "~" and "est." in the tables, `"kind": "estimate"`
in the JSON, open markers in the plots. A measured stack shows its measurement only. `--sidebyside` adds the
serving benchmark run on this machine (`python -m serving.sidebyside`): baseline, our server and our engine
alone, on the CPU (`servestack run` records its server run as the local stack's measurement, in out/verify).

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
from servestack.estimate import CONTEXT_TOKENS, EFFICIENCY, LatencyEstimate, for_plan

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
    tpot_p50_ms: float | None = None


@dataclass(frozen=True)
class Row:
    estimate: Estimate
    measured: Measured | None
    latency: LatencyEstimate | None = None  # only where nothing was measured
    no_latency: str | None = None  # why a stack has neither

    @property
    def tokens_per_second(self) -> float | None:
        """Output tokens/s of one replica: measured, or else estimated at the configured batch."""
        if self.measured is not None:
            return self.measured.output_throughput / self.replicas if self.replicas else None
        return self.latency.batched.tokens_per_second if self.latency is not None else None

    @property
    def kind(self) -> str | None:
        return "measured" if self.measured is not None else "estimate" if self.latency is not None else None

    @property
    def replicas(self) -> int | None:
        if self.measured is None:
            return None
        return self.measured.replicas or self.estimate.min_replicas

    @property
    def per_million_tokens(self) -> float | None:
        tokens = self.tokens_per_second
        return None if tokens is None else self.estimate.per_million_tokens(tokens)

    def to_dict(self) -> dict[str, Any]:
        measured = None
        if self.measured is not None:
            measured = {"kind": "measured", "source": self.measured.source, "concurrency": self.measured.concurrency,
                        "replicas": self.replicas, "output_throughput": self.measured.output_throughput,
                        "ttft_p50_ms": self.measured.ttft_p50_ms, "ttft_p99_ms": self.measured.ttft_p99_ms,
                        "tpot_p50_ms": self.measured.tpot_p50_ms}
        return {**self.estimate.to_dict(), "measured": measured,
                "estimate": None if self.latency is None else self.latency.to_dict(), "no_latency": self.no_latency,
                "per_million_tokens": self.per_million_tokens,
                "per_million_tokens_kind": self.kind if self.per_million_tokens is not None else None}


def load_bench(path: Path, replicas: int | None = None) -> Measured:
    """The level with the highest output throughput in a `serving.bench --json` file."""
    try:
        data = json.loads(path.read_text())
        levels = [level for level in data["levels"] if level["completed"] > 0]
        if not levels:
            raise CompareError(f"--bench {path}: no level completed a request")
        best = max(levels, key=lambda level: float(level["output_throughput"]))
        return Measured(str(path), int(best["concurrency"]), float(best["output_throughput"]),
                        best["ttft"]["p50"], best["ttft"]["p99"], replicas, (best.get("tpot") or {}).get("p50"))
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


def price_plans(plans_dir: Path) -> list[tuple[dict[str, Any], Estimate]]:
    """Every planned stack with its cost estimate."""
    paths = sorted(plans_dir.glob("*.json"))
    if not paths:
        raise CompareError(f"--plans {plans_dir}: no plan files; run `servestack plan` first")
    planned = []
    for path in paths:
        try:
            plan = json.loads(path.read_text())
            planned.append((plan, estimate(plan)))
        except (OSError, ValueError) as error:  # PlanShapeError and JSONDecodeError are ValueErrors
            raise CompareError(f"{path}: {error}") from error
    return planned


def compare(plans: Path | list[tuple[dict[str, Any], Estimate]], bench: Sequence[str] = (),
            measured_dir: Path | None = None) -> list[Row]:
    """Every planned stack (a directory of plans, or `price_plans` of one) priced; measured where verify
    (MEASURED_DIR) or `bench` says, estimated elsewhere."""
    planned = price_plans(plans) if isinstance(plans, Path) else plans
    stacks = [e.stack for _, e in planned]
    # What verify measured, unless --bench gives that stack's figures (later values win).
    measured = parse_bench_args([*measured_results(measured_dir, stacks), *bench], stacks)
    rows = []
    for plan, e in planned:
        if e.stack in measured:
            rows.append(Row(e, measured[e.stack]))
            continue
        latency = for_plan(plan, e.gpu_machine)
        if isinstance(latency, LatencyEstimate):
            rows.append(Row(e, None, latency))
        else:
            rows.append(Row(e, None, None, latency))
    return rows


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


COLUMNS = ("stack", "GPU", "idle $/h", "peak $/h", "replica $/h", "tok/s (~ est.)", "TPOT ms b1 / bN (~ est.)",
           "TTFT p50 / p99 ms", "$/1M tok (~ est.)")
ESTIMATE_NOTE = ("~ ... est.: estimated from the GPU's memory bandwidth and the model's size (servestack.estimate), "
                 "an upper bound, not a measurement")


def _cells(row: Row) -> tuple[str, ...]:
    """One row's cells, estimates marked with ~ and est.; shared by the terminal and the report."""
    e, m, lat = row.estimate, row.measured, row.latency
    if m is not None:
        speed = f"{m.output_throughput:,.1f} ({row.replicas} repl.)"
        tpot = _ms(m.tpot_p50_ms)
        ttft = f"{_ms(m.ttft_p50_ms)} / {_ms(m.ttft_p99_ms)}"
        cost = _money(row.per_million_tokens, 3)
    elif lat is not None:
        speed = f"~{lat.batched.tokens_per_second:,.0f} est. (batch {lat.batched.batch})"
        tpot = f"~{lat.single.tpot_ms:.3g} / ~{lat.batched.tpot_ms:.3g} est."
        ttft = "-"
        cost = "-" if row.per_million_tokens is None else f"~${row.per_million_tokens:.3g} est."
    else:
        speed = tpot = ttft = cost = "-"
    return (e.stack, e.gpu or "-", _money(e.idle_per_hour if e.lines else None),
            _money(e.peak_per_hour if e.lines else None), _money(e.replica_per_hour, 3), speed, tpot, ttft, cost)


def print_rows(rows: Sequence[Row]) -> None:
    table = Table(title="clouds side by side (estimated list prices, US$)", title_justify="left",
                  caption="idle: pools at their minimum with the serving minimum replicas up; peak: pools at "
                          "their maximum; tok/s: of the endpoint as measured, or of one replica as estimated; "
                          "$/1M tok: one replica; " + ESTIMATE_NOTE,
                  caption_justify="left")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("stack", "GPU") else "right")
    for row in rows:
        table.add_row(*(escape(cell) for cell in _cells(row)))
    terminal.console.print(table)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


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
        span = list(THROUGHPUTS)
        while span[-1] < 2 * max((r.tokens_per_second or 0 for r in priced), default=0):
            span.append(span[-1] * 10)  # the curves reach every point
        for row in priced:
            e = row.estimate
            if e.replica_per_hour is None:
                continue
            costs = [e.per_million_tokens(t) or 0.0 for t in span]  # never None: the replica is priced
            line = ax.plot(span, costs, label=e.stack)[0]
            if row.tokens_per_second and row.per_million_tokens is not None:
                measured = row.kind == "measured"  # filled dot; an estimate is an open diamond
                ax.scatter([row.tokens_per_second], [row.per_million_tokens], zorder=3, s=50,
                           marker="o" if measured else "D", edgecolors=line.get_color() if not measured else "black",
                           facecolors=line.get_color() if measured else "none", linewidths=1.5)
        ax.scatter([], [], marker="o", color="grey", edgecolors="black", label="measured")
        ax.scatter([], [], marker="D", facecolors="none", edgecolors="grey", label="estimate (bandwidth bound)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("output tokens/s of one replica")
        ax.set_ylabel("US$ per 1M output tokens")
        ax.set_title("What a million output tokens cost (filled: measured, open: estimated)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        written["per_million"] = _save(fig, out / "per_million_tokens.png")

    timed = [r for r in rows if r.latency is not None or (r.measured is not None and r.measured.tpot_p50_ms)]
    if timed:
        fig, ax = plt.subplots(figsize=(8, 0.8 + 0.5 * len(timed)))
        for y, row in enumerate(timed):
            if row.latency is not None:  # hatched and labelled: an estimate
                bars = [(row.latency.single.tpot_ms, "batch 1", 0.2), (row.latency.batched.tpot_ms,
                                                                       f"batch {row.latency.batched.batch}", -0.2)]
                for value, label, offset in bars:
                    ax.barh(y + offset, value, height=0.38, color="white", edgecolor="tab:orange", hatch="//")
                    ax.text(value, y + offset, f" ~{value:.3g} ms est. ({label})", va="center", fontsize="small")
            elif row.measured is not None and row.measured.tpot_p50_ms:
                ax.barh(y, row.measured.tpot_p50_ms, height=0.5, color="tab:blue")
                ax.text(row.measured.tpot_p50_ms, y, f" {row.measured.tpot_p50_ms:.3g} ms measured (p50)",
                        va="center", fontsize="small")
        ax.set_yticks(range(len(timed)), [r.estimate.stack for r in timed])
        ax.set_xscale("log")
        ax.set_xlabel("time per output token, ms (log)")
        ax.set_title("Time per output token (solid: measured; hatched: estimate)")
        ax.margins(x=0.6)
        fig.tight_layout()
        written["tpot"] = _save(fig, out / "tpot.png")

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

    body = ["<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS) + "</tr>"]
    for row in rows:
        body.append("<tr>" + "".join(cell(v) for v in _cells(row)) + "</tr>")
    latency = []
    for row in rows:
        if row.measured is not None:
            latency.append(f"<li>{html.escape(row.estimate.stack)}: measured ({html.escape(row.measured.source)})</li>")
        elif row.latency is not None:
            lat = row.latency
            latency.append(f"<li>{html.escape(row.estimate.stack)}: estimate: {html.escape(lat.model)} "
                           f"({lat.parameters:,} parameters, {lat.dtype}) on {html.escape(lat.gpu_type)} "
                           f"({lat.bandwidth_gbps:,} GB/s)</li>")
        else:
            latency.append(f"<li>{html.escape(row.estimate.stack)}: no latency figure: "
                           f"{html.escape(row.no_latency or 'nothing measured')}</li>")
    details = []
    for row in rows:
        e = row.estimate
        if not e.lines:
            continue
        items = "".join(f"<tr>{cell(line.item)}{cell(f'{line.per_hour:.4f}')}{cell(str(line.idle))}"
                        f"{cell(str(line.peak))}<td><a href=\"{html.escape(line.source)}\">"
                        f"{html.escape(line.source)}</a></td>{cell(line.as_of)}</tr>" for line in e.lines)
        unpriced = "".join(f"<li>not priced: {html.escape(u)}</li>" for u in e.unpriced)
        details.append(f"<h3>{html.escape(e.stack)} ({html.escape(str(e.region))})</h3><table><tr><th>item</th>"
                       f"<th>$/h each</th><th>idle</th><th>peak</th><th>price source</th><th>as of</th></tr>{items}"
                       f"</table><ul>{unpriced}</ul>")
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
prices of each stack's own region (machines; fixed fees at the cloud's reference region); disks, storage,
data transfer and per-GB charges are left out. $ per 1M output tokens: one replica's hourly price over its
share of the output tokens per hour, measured or estimated.</p>
<table>{''.join(body)}</table>
<p>{html.escape(ESTIMATE_NOTE)}: step time = (weight bytes + batch x {CONTEXT_TOKENS} tokens x cache bytes per
token) / (datasheet bandwidth x {EFFICIENCY}); batch 1 and the stack's serving.maxBatchSize. A stack with a
measurement shows only its measurement.</p>
<ul>{''.join(latency)}</ul>
{_img(plots.get('cost'), 'cost per hour')}
{_img(plots.get('per_million'), 'dollars per million tokens')}
{_img(plots.get('tpot'), 'time per output token')}
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
        sidebyside = None if args.sidebyside is None else load_sidebyside(args.sidebyside)
        rows = compare(args.plans, args.bench, args.measured)
    except CompareError as error:
        terminal.errors.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
        return EXIT_BAD_INPUT
    print_rows(rows)
    report = write_report(rows, sidebyside, args.out)
    terminal.console.print(f"report written to {report}")
    return 0
