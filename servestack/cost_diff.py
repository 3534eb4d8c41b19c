"""`servestack cost-diff`: each stack's policy verdict and cost, before and after a change, as the Markdown
comment a pull request gets (one table, a row per stack, and the priced line items that changed).

A result set is a directory with one `<stack>.json` per stack: the `servestack check` violations and the
`servestack cost` estimate of its offline plan, or the error its plan failed with. `collect` makes one from
a checkout of the repository (this one, or the base branch's in another directory, run with its own code);
`diff` compares two of them and is a pure function.

    servestack cost-diff collect [--root DIR] --out RESULTS
    servestack cost-diff --base RESULTS --head RESULTS [--out comment.md]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servestack.cost import Line
from servestack.pr_comment import MARKER, MAX_BODY

HOURS_PER_MONTH = 730
EXIT_BAD_INPUT = 2
ERROR_CHARS = 400  # of a failed plan's message, in the comment


class CostDiffError(Exception):
    pass


@dataclass(frozen=True)
class StackResult:
    """One stack's verdict and cost; `error` instead when its plan failed."""

    stack: str
    idle_per_hour: float = 0.0
    peak_per_hour: float = 0.0
    lines: tuple[Line, ...] = ()
    mandatory: tuple[str, ...] = ()  # the policies with a mandatory violation, one entry per violation
    advisory: int = 0
    error: str | None = None
    unpriced: tuple[str, ...] = ()

    @property
    def verdict(self) -> str:
        if self.error is not None:
            return "plan failed"
        return "fail" if self.mandatory else "pass"


# --- reading a result set ---------------------------------------------------------------------------


def result_from_json(data: Mapping[str, Any], source: str) -> StackResult:
    """A StackResult from what `collect` wrote; CostDiffError naming the file and the field otherwise."""
    try:
        stack = str(data["stack"])
        if data.get("error") is not None:
            return StackResult(stack, error=str(data["error"]))
        cost, violations = data["cost"], data["violations"]
        lines = tuple(Line(str(line["item"]), float(line["per_hour"]), int(line["idle"]), int(line["peak"]))
                      for line in cost["lines"])
        return StackResult(
            stack, float(cost["idle_per_hour"]), float(cost["peak_per_hour"]), lines,
            tuple(str(v["policy"]) for v in violations if v["level"] == "mandatory"),
            sum(1 for v in violations if v["level"] != "mandatory"),
            unpriced=tuple(str(u) for u in cost.get("unpriced") or ()))
    except (KeyError, TypeError, ValueError) as error:
        raise CostDiffError(f"{source}: not a cost-diff result (stack, cost.lines, violations[].level or error): "
                            f"{type(error).__name__}: {error}") from error


def load_results(directory: Path) -> dict[str, StackResult]:
    if not directory.is_dir():
        raise CostDiffError(f"{directory}: no such directory (a result set from `servestack cost-diff collect`)")
    results = {}
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise CostDiffError(f"{path}: {error}") from error
        result = result_from_json(data, str(path))
        results[result.stack] = result
    return results


# --- the comment -----------------------------------------------------------------------------------


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell and the comment's HTML."""
    text = " ".join(text.split())
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def _shown(per_hour: float, monthly: bool) -> float:
    """The figure as printed: $/h to the cent, or $/month to the dollar."""
    return round(per_hour * HOURS_PER_MONTH) if monthly else round(per_hour, 2)


def _format(amount: float, monthly: bool) -> str:
    return f"${amount:,.0f}" if monthly else f"${amount:,.2f}"


def _money(per_hour: float, monthly: bool) -> str:
    return _format(_shown(per_hour, monthly), monthly)


def _signed(amount: float, monthly: bool) -> str:
    """`+$1.50`, `-$1.50` of a printed figure's units; `$0` when nothing."""
    shown = _format(abs(amount), monthly)
    return shown if amount == 0 else ("+" if amount > 0 else "-") + shown


def _change(before: float | None, after: float | None, monthly: bool) -> str:
    """`$1.00 → $1.50 (+$0.50)`; one figure when equal; `—` for a side without the stack. The change is
    the difference of the figures printed, so that a row adds up as read."""
    shown_before = "—" if before is None else _money(before, monthly)
    shown_after = "—" if after is None else _money(after, monthly)
    if shown_before == shown_after:
        return shown_after
    change = round(_shown(after or 0.0, monthly) - _shown(before or 0.0, monthly), 2)
    if change == 0:  # e.g. a free control plane removed
        return f"{shown_before} → {shown_after}"
    return f"{shown_before} → {shown_after} ({_signed(change, monthly)})"


def _figures(before: StackResult | None, after: StackResult | None) -> list[str]:
    """The idle and peak cells ($/h, then $/month) of one row."""
    cells = []
    for monthly in (False, True):
        for kind in ("idle_per_hour", "peak_per_hour"):
            if (before is not None and before.error) or (after is not None and after.error):
                old = "?" if before is None or before.error else _money(getattr(before, kind), monthly)
                new = "?" if after is None or after.error else _money(getattr(after, kind), monthly)
                cells.append(f"{old} → {new}")
            else:
                cells.append(_change(getattr(before, kind, None), getattr(after, kind, None), monthly))
    return cells


def _verdict(result: StackResult) -> str:
    if result.error is not None:
        return "⚠️ plan failed"
    advisory = f", {result.advisory} advisory" if result.advisory else ""
    if not result.mandatory:
        return f"✅ pass{advisory}"
    names = ", ".join(f"`{_cell(name)}`" for name in sorted(set(result.mandatory)))
    total = len(result.mandatory) + result.advisory
    return f"❌ {total} violation{'s' if total != 1 else ''}: {len(result.mandatory)} mandatory ({names}){advisory}"


def _row(stack: str, before: StackResult | None, after: StackResult | None) -> str:
    if after is None:
        name, verdict = f"{stack} (removed)", "—"
    else:
        name, verdict = (f"{stack} (new)" if before is None else stack), _verdict(after)
        if before is not None and before.verdict != after.verdict:
            verdict += f" (was {before.verdict})"
    return "| " + " | ".join([_cell(name), verdict, *_figures(before, after)]) + " |"


def _line_changes(before: StackResult | None, after: StackResult | None) -> list[str]:
    """Table rows for the priced items added (+), removed (-) or changed (~) in one stack."""
    old = {line.item: line for line in (before.lines if before else ())}
    new = {line.item: line for line in (after.lines if after else ())}
    rows = []
    for item in sorted(old.keys() | new.keys()):
        a, b = old.get(item), new.get(item)
        if a == b:
            continue
        sign = "+" if a is None else "-" if b is None else "~"

        def pair(attr: str, a: Line | None = a, b: Line | None = b) -> str:
            """One side's figure for an added or removed item, or before -> after."""
            shown = [f"${getattr(x, attr):,.4f}" if attr == "per_hour" else str(getattr(x, attr))
                     for x in (a, b) if x is not None]
            return shown[0] if len(set(shown)) == 1 else f"{shown[0]} → {shown[1]}"

        def monthly(attr: str, a: Line | None = a, b: Line | None = b) -> str:
            x = None if a is None else a.per_hour * getattr(a, attr)
            y = None if b is None else b.per_hour * getattr(b, attr)
            if x is None or y is None:  # added or removed: what it adds to the bill, signed
                return _signed(_shown(y or 0.0, True) - _shown(x or 0.0, True), monthly=True)
            return _change(x, y, monthly=True)

        rows.append(f"| {sign} | {_cell(item)} | {pair('per_hour')} | {pair('idle')} | {pair('peak')} | "
                    f"{monthly('idle')} | {monthly('peak')} |")
    return rows


def diff(base: Mapping[str, StackResult], head: Mapping[str, StackResult], base_label: str = "the base branch",
         head_label: str = "this pull request") -> str:
    """The pull request comment: every stack of either side, its verdict and its cost before -> after."""
    stacks = sorted(base.keys() | head.keys())
    out = [MARKER, "### servestack: policy verdicts and cost", "",
           f"Each stack's offline plan on {_cell(base_label)} and on {_cell(head_label)}, checked by the policy "
           "pack and priced at list prices (US$).", "",
           "| stack | policy | idle $/h | peak $/h | idle $/month | peak $/month |",
           "|---|---|---|---|---|---|"]
    out += [_row(stack, base.get(stack), head.get(stack)) for stack in stacks]
    failed = [s for s in stacks if (s in head and head[s].error) or (s in base and base[s].error)]
    if not failed:
        before = [base[s] for s in stacks if s in base]
        after = [head[s] for s in stacks if s in head]
        total = [_change(sum(getattr(r, kind) for r in before), sum(getattr(r, kind) for r in after), monthly)
                 for monthly in (False, True) for kind in ("idle_per_hour", "peak_per_hour")]
        out.append("| **all stacks** | | " + " | ".join(total) + " |")
    out.append("")
    for stack in failed:
        for side, results in ((base_label, base), (head_label, head)):
            error = results[stack].error if stack in results else None
            if error:
                shown = _cell(error[-ERROR_CHARS:]).replace("`", "'")  # inside a code span
                out.append(f"⚠️ The plan of **{_cell(stack)}** failed on {_cell(side)}: `{shown}`")
    if failed:
        out.append("")

    changed = {s: rows for s in stacks
               if not (s in base and base[s].error) and not (s in head and head[s].error)
               and (rows := _line_changes(base.get(s), head.get(s)))}
    count = sum(len(rows) for rows in changed.values())
    summary = (f"{count} priced line item{'s' if count != 1 else ''} changed in {len(changed)} "
               f"stack{'s' if len(changed) != 1 else ''}")
    details = [f"<details><summary>{summary}</summary>", ""]
    for stack, rows in changed.items():
        details += [f"**{_cell(stack)}**", "", "| | item | $/h each | idle units | peak units | idle $/month | "
                    "peak $/month |", "|---|---|---|---|---|---|---|", *rows, ""]
    details += ["</details>", ""]
    unpriced = sorted({f"{s}: {u}" for s, r in head.items() for u in r.unpriced})
    end = (["Not priced: " + "; ".join(_cell(u) for u in unpriced), ""] if unpriced else []) + [
        f"Idle: every node pool at its minimum, with room for the serving minimum replicas; peak: every pool "
        f"at its maximum; a month is {HOURS_PER_MONTH} h. Disks, storage and traffic are not priced. Made by "
        "`servestack cost-diff`; a pass has no mandatory violation."]
    if not changed:
        details = ["No priced line item changed.", ""]
    elif len("\n".join(out + details + end)) >= MAX_BODY:  # GitHub refuses a longer comment
        details = [f"{summary}: too many to list within the 65,536 characters GitHub allows a comment.", ""]
    return "\n".join(out + details + end) + "\n"


# --- collecting a result set from a checkout ------------------------------------------------------------


def collect(root: Path, out: Path) -> int:
    """Plan, check and price every stack of the checkout at `root` with that checkout's own code (one
    process per step, the checkout first on the path), and write `out/<stack>.json`, a failed plan's error
    included; how many failed."""
    stacks = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in (root / "stacks").glob("Pulumi.*.yaml"))
    if not stacks:
        raise CostDiffError(f"{root}: no stacks/Pulumi.*.yaml: not a servestack checkout")
    env = {**os.environ, "PYTHONPATH": str(root.resolve())}
    with tempfile.TemporaryDirectory() as tmp:
        return sum(_collect_one(stack, root, env, Path(tmp), out) for stack in stacks)


def _collect_one(stack: str, root: Path, env: Mapping[str, str], work: Path, out: Path) -> bool:
    """Write out/<stack>.json; True when the plan failed."""
    plan, check, cost = (str((work / kind / f"{stack}.json").resolve()) for kind in ("plans", "check", "cost"))

    def step(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "servestack.cli", *args], cwd=root, env=env,
                              capture_output=True, text=True, check=False)

    result: dict[str, Any] = {"stack": stack}
    stacks_dir = str((root / "stacks").resolve())
    planned = step("plan", "--stack", stack, "--stacks-dir", stacks_dir, "--json", plan, "--quiet")
    if planned.returncode != 0:
        result["error"] = (planned.stderr or planned.stdout).strip() or f"exit code {planned.returncode}"
    else:
        checked = step("check", "--plan", plan, "--json", check)
        priced = step("cost", "--plan", plan, "--json", cost)
        if checked.returncode > 1:  # 1 is a verdict (a mandatory violation), 2 an error
            result["error"] = checked.stderr.strip()
        elif priced.returncode != 0:
            result["error"] = priced.stderr.strip()
        else:
            result["violations"] = json.loads(Path(check).read_text())["violations"]
            result["cost"] = json.loads(Path(cost).read_text())
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stack}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{stack}: " + ("plan failed" if "error" in result else "planned, checked and priced"))
    return "error" in result


# --- the command --------------------------------------------------------------------------------------


def register(commands: Any) -> None:
    """Add the `cost-diff` subcommand to the servestack command line."""
    parser = commands.add_parser("cost-diff", help="policy verdicts and cost before -> after, as a pull request "
                                                   "comment in Markdown",
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, help="the result set before the change")
    parser.add_argument("--head", type=Path, help="the result set after the change")
    parser.add_argument("--base-label", default="the base branch", help="what the base is, in the comment")
    parser.add_argument("--head-label", default="this pull request", help="what the head is, in the comment")
    parser.add_argument("--out", type=Path, help="write the comment here (default: print it)")
    parser.set_defaults(handler=run)
    steps = parser.add_subparsers(dest="step")
    collecting = steps.add_parser("collect", help="plan, check and price every stack of a checkout")
    collecting.add_argument("--root", type=Path, default=Path.cwd(), help="the checkout (default: here)")
    collecting.add_argument("--out", type=Path, required=True, help="the result set's directory")
    collecting.set_defaults(handler=run_collect)


def run(args: argparse.Namespace) -> int:
    if args.base is None or args.head is None:
        print("error: cost-diff needs --base and --head (result sets of `servestack cost-diff collect`)",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        comment = diff(load_results(args.base), load_results(args.head), args.base_label, args.head_label)
    except CostDiffError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.out is None:
        sys.stdout.write(comment)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(comment)
        print(f"comment written to {args.out}")
    return 0


def run_collect(args: argparse.Namespace) -> int:
    try:
        failed = collect(args.root, args.out)
    except CostDiffError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"result set written to {args.out}" + (f"; {failed} plan(s) failed, as the comment says" if failed else ""))
    return 0  # a failed plan is part of the result, shown in the comment
