"""The `servestack` command line (also `python -m servestack.cli`).

  servestack plan [--stack NAME] [--json FILE]   the offline plan of one stack, or of every stack
  servestack check (--stack NAME | --plan FILE)  the policy pack on that plan [--json FILE]
  servestack cost (--stack NAME | --plan FILE)   the estimated $/hour of that plan [--json FILE]
  servestack cost-diff --base DIR --head DIR     policy verdicts and cost before -> after, as a pull request
                                                 comment [--out FILE]; `cost-diff collect --out DIR` makes a
                                                 result set from a checkout [--root DIR]
  servestack compare [--bench STACK=FILE ...]    the stacks side by side, and a report with plots
  servestack run [--model smollm2|tiny]          the main job: plans, checks, costs, serving benchmark,
                                                 comparison report
  servestack catalog refresh                     rebuild the machine prices (infra/prices.json) from the
                                                 clouds' public price APIs [--region CLOUD:REGION ...]
  servestack model push --stack NAME DIR         upload a model directory as one revision of the stack's
                                                 models [--revision R] [--name N] [--bucket URI]
  servestack preview|up|destroy|refresh --stack NAME
                                                 the real Pulumi engine (Automation API) on the stack, with
                                                 the policy pack; `up` then verifies the endpoint
  servestack outputs --stack NAME                the stack's outputs [--show-secrets] [--json FILE]
  servestack verify --stack NAME                 wait for the endpoint, one completion, the fixed benchmark;
                                                 the result feeds `servestack compare`
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from servestack.catalog_refresh import register as register_catalog
from servestack.check import register as register_check
from servestack.compare import register as register_compare
from servestack.cost import register as register_cost
from servestack.cost_diff import register as register_cost_diff
from servestack.driver import register as register_driver
from servestack.model_push import register as register_model
from servestack.offline.plan import ROOT, STACKS_DIR, PlanError, stack_names
from servestack.terminal import console, errors
from servestack.verify import register as register_verify

OUT_DIR = ROOT / "out"
EXIT_BAD_INPUT = 2



def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="servestack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    plan = commands.add_parser("plan", help="the offline plan: the real program under Pulumi's mock runtime")
    plan.add_argument("--stack", help="stack name (stacks/Pulumi.NAME.yaml); every stack when omitted")
    plan.add_argument("--json", type=Path, help="write the plan JSON here (one stack only)")
    plan.add_argument("--quiet", action="store_true", help="print nothing but errors")
    plan.add_argument("--stacks-dir", type=Path, default=STACKS_DIR, help="where the stack files are")
    plan.add_argument("--life", type=int, default=0,
                      help="plan the stack as created again after N destroys (new ids, auto-names, random values)")
    plan.set_defaults(handler=_plan)

    register_check(commands)
    register_cost(commands)
    register_cost_diff(commands)
    register_compare(commands, OUT_DIR)
    register_model(commands)
    register_driver(commands, OUT_DIR)
    register_verify(commands, OUT_DIR)
    register_catalog(commands)

    run = commands.add_parser("run", help="the main job: offline plans, policy check and cost of every stack, "
                                          "the serving benchmark with a bundled model, the comparison report")
    run.add_argument("--model", default="smollm2", choices=("smollm2", "tiny"), help="the bundled model to serve")
    run.add_argument("--skip-serving", action="store_true", help="no serving benchmark")
    run.set_defaults(handler=_run)

    args = parser.parse_args(argv)
    handler: Any = args.handler
    code: int = handler(args)
    return code


def _plan(args: argparse.Namespace) -> int:
    if args.stack is None:
        if args.json is not None or args.life:
            errors.print("--json and --life need --stack: a plan holds one stack")
            return EXIT_BAD_INPUT
        return _plan_all(OUT_DIR / "plans", args.stacks_dir)
    return _plan_one(args.stack, args.json, args.stacks_dir, quiet=args.quiet, life=args.life)


def _plan_one(stack: str, json_path: Path | None, stacks_dir: Path, quiet: bool, life: int = 0) -> int:
    # Imported here: the mock runtime is configured once per process, for this stack only.
    from infra.config import ConfigError
    from servestack.offline.plan import DeployError, read_stack_config, run_plan, write_plan
    from servestack.offline.schemas import CrdValidatorMissing, validate_plan

    try:
        read_stack_config(stack, stacks_dir)
        plan = run_plan(stack, stacks_dir, life)
    except DeployError as error:
        errors.print(f"[bold red]error:[/] `pulumi up` would fail: {escape(str(error))}", highlight=False)
        return 1
    except (PlanError, ConfigError) as error:
        errors.print(f"[bold red]error:[/] {error}", highlight=False)
        return EXIT_BAD_INPUT
    version = str(plan["config"].get("servestack:kubernetesVersion", "1.35"))
    try:
        schema_results = validate_plan(plan, version)
    except CrdValidatorMissing as error:
        errors.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
        return EXIT_BAD_INPUT
    if json_path is not None:
        write_plan(plan, json_path)
    if not quiet:
        _print_plan(plan)
        _print_schema_results(schema_results, version)
        if json_path is not None:
            console.print(f"plan written to {json_path}")
    failures = [r for r in schema_results if r.error]
    for failure in failures if quiet else []:
        errors.print(f"{failure.kind}/{failure.name}: {failure.error}")
    return 1 if failures else 0


def _plan_all(out_dir: Path, stacks_dir: Path = STACKS_DIR) -> int:
    worst = 0
    for stack in stack_names(stacks_dir):
        console.rule(f"[bold]{stack}")
        # One process per stack: the mock runtime keeps one root stack per process.
        code = subprocess.run([sys.executable, "-m", "servestack.cli", "plan", "--stack", stack, "--stacks-dir",
                               str(stacks_dir), "--json", str(out_dir / f"{stack}.json")],
                              cwd=ROOT, check=False).returncode
        worst = max(worst, code)
    return worst


def _run(args: argparse.Namespace) -> int:
    from servestack.check import check_all
    from servestack.compare import CompareError, compare, load_sidebyside, price_plans, print_rows, write_report
    from servestack.cost import print_estimate

    plans = OUT_DIR / "plans"
    shutil.rmtree(plans, ignore_errors=True)  # a removed stack's old plan must not be checked
    planned = _plan_all(plans)
    console.rule("[bold]policy check")
    checked = check_all(plans, OUT_DIR / "check", console)
    console.rule("[bold]cost estimates")
    try:
        priced = price_plans(plans)  # each plan priced once: the comparison below takes these
    except CompareError as error:
        errors.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
        return EXIT_BAD_INPUT
    for _, cost in priced:
        print_estimate(console, cost)
    served, sidebyside = 0, None
    if not args.skip_serving:
        # The serving image's server with its bundled model on this machine, against the naive baseline.
        console.rule(f"[bold]serving benchmark: {args.model}, naive baseline vs our server vs our engine alone")
        sidebyside_json = OUT_DIR / f"sidebyside-{args.model}.json"
        served = subprocess.run([sys.executable, "-m", "serving.sidebyside", "--model", args.model,
                                 "--json", str(sidebyside_json)], cwd=ROOT, check=False).returncode
        if served == 0:
            try:
                sidebyside = load_sidebyside(sidebyside_json)
                _measured_locally(sidebyside)
            except CompareError as error:  # the report goes on without the benchmark, which failed anyway
                errors.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
                served = 1
    console.rule("[bold]comparison")
    try:  # with what verify (or the benchmark above) measured
        rows = compare(priced, measured_dir=OUT_DIR / "verify")
    except CompareError as error:
        errors.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
        return EXIT_BAD_INPUT
    print_rows(rows)
    console.print(f"report written to {write_report(rows, sidebyside, OUT_DIR / 'compare')}")
    return max(planned, checked, served)


def _measured_locally(sidebyside: Mapping[str, Any]) -> None:
    """Our server on this machine is what the `local` stack serves: its figures become that stack's
    measurement, the way `servestack verify` records a deployed stack's."""
    from servestack.verify import write_measurement

    if "local" not in stack_names():
        return
    write_measurement("local", "http://127.0.0.1 (serving.sidebyside)", [sidebyside["results"]["server"]],
                      OUT_DIR / "verify", source="serving.sidebyside", model=sidebyside["model"],
                      workload=sidebyside["workload"], machine=sidebyside["machine"])


def _print_plan(plan: Mapping[str, Any]) -> None:
    resources = plan["resources"]
    children: dict[str | None, list[Mapping[str, Any]]] = {}
    urns = {r["urn"] for r in resources}
    for resource in resources:
        parent = resource["parent"] if resource["parent"] in urns else None
        children.setdefault(parent, []).append(resource)

    tree = Tree(f"[bold]{plan['project']}[/] stack [bold cyan]{plan['stack']}[/]")

    def add(node: Tree, parent: str | None) -> None:
        for resource in children.get(parent, []):
            style = "" if resource["custom"] else "bold magenta"
            branch = node.add(f"[{style}]{resource['name']}[/] [dim]{resource['type']}[/]" if style
                              else f"{resource['name']} [dim]{resource['type']}[/]")
            add(branch, resource["urn"])

    add(tree, None)
    console.print(tree)

    counts = Counter(r["type"] for r in resources if r["custom"])
    table = Table(title=f"{sum(counts.values())} resources in {plan['stack']}", title_justify="left")
    table.add_column("type")
    table.add_column("count", justify="right")
    for token, count in sorted(counts.items()):
        table.add_row(token, str(count))
    console.print(table)
    drifting = [r for r in resources if r.get("drift")]
    if drifting:
        drift = Table(title="[yellow]drift: what the cloud keeps differently (a refresh, then `up`, would change it "
                            "back)[/]", title_justify="left")
        for column in ("resource", "input", "declared", "the cloud's"):
            drift.add_column(column, overflow="fold")
        for r in drifting:
            for key, values in r["drift"].items():
                drift.add_row(r["name"], key, escape(str(values["declared"])), escape(str(values["cloud"])))
        console.print(drift)
    if plan["outputs"]:
        outputs = Table(title="outputs", title_justify="left")
        outputs.add_column("name")
        outputs.add_column("value")
        for key, value in plan["outputs"].items():
            outputs.add_row(key, escape(str(value)))
        console.print(outputs)


def _print_schema_results(results: Sequence[Any], version: str) -> None:
    valid = sum(1 for r in results if r.error is None and not r.skipped)
    skipped = [r for r in results if r.skipped]
    failures = [r for r in results if r.error]
    line = f"Kubernetes {version} and published CRD schemas: {valid} object(s) valid"
    if skipped:
        line += f", {len(skipped)} custom resource(s) without a published schema ({', '.join(r.kind for r in skipped)})"
    console.print(line if not failures else f"[red]{line}, {len(failures)} invalid[/]")
    for failure in failures:
        console.print(f"  [red]{failure.kind}/{failure.name}[/]: {failure.error}", highlight=False)


if __name__ == "__main__":
    sys.exit(main())
