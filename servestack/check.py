"""`servestack check`: the policy pack on a stack's offline plan, without the Pulumi CLI.

Every rule of `policies/` runs through its real pulumi_policy object: resource policies get a
`ResourceValidationArgs` per resource, stack policies one `StackValidationArgs` for the stack, built
from the plan the way pulumi_policy's analyzer builds them from the engine's requests (inputs behind
its unknown-checking proxy, parents and dependencies resolved to resources). Enforcement levels and
"cannot verify" notes follow the analyzer too: a policy's config may override its level, and a value
unknown during preview yields an advisory note.

    servestack check --stack aws-prod [--json out/check/aws-prod.json]
    servestack check --plan out/plans/aws-prod.json
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from inspect import isawaitable
from pathlib import Path
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyCustomTimeouts,
    PolicyProviderResource,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.policy import _NotApplicableError
from pulumi_policy.proxy import UnknownValueError, unknown_checking_proxy
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from policies.rules import build_policies
from policies.rules.stack_config import StackConfigError, committed, merged, pack_config
from servestack import terminal

EXIT_BAD_INPUT = 2


@dataclass(frozen=True)
class Violation:
    policy: str
    urn: str
    type: str
    level: str  # "mandatory" or "advisory"
    message: str


def _options(resource: Mapping[str, Any]) -> PolicyResourceOptions:
    return PolicyResourceOptions(protect=False, ignore_changes=[], delete_before_replace=None, aliases=[],
                                 custom_timeouts=PolicyCustomTimeouts(0, 0, 0), additional_secret_outputs=[],
                                 parent=resource.get("parent") or None)


def _props(resource: Mapping[str, Any]) -> Mapping[str, Any]:
    return unknown_checking_proxy(copy.deepcopy(dict(resource.get("inputs") or {})))


def _level(policy: Policy, config: Mapping[str, Any]) -> EnforcementLevel:
    entry = config.get(policy.name)
    if isinstance(entry, str):
        return EnforcementLevel(entry)
    if isinstance(entry, Mapping) and "enforcementLevel" in entry:
        return EnforcementLevel(entry["enforcementLevel"])
    return policy.enforcement_level or EnforcementLevel.ADVISORY


def _policy_config(policy: Policy, config: Mapping[str, Any]) -> dict[str, Any]:
    entry = config.get(policy.name)
    if not isinstance(entry, Mapping):
        return {}
    return {k: v for k, v in entry.items() if k != "enforcementLevel"}


def _stack_resources(plan: Mapping[str, Any]) -> list[PolicyResource]:
    built = {r["urn"]: PolicyResource(r["type"], _props(r), r["urn"], r["name"], _options(r), None, None, [], {})
             for r in plan["resources"]}
    for r in plan["resources"]:
        resource = built[r["urn"]]
        provider = built.get(r.get("provider") or "")
        if provider is not None:
            resource.provider = PolicyProviderResource(provider.resource_type, provider.props, provider.urn,
                                                       provider.name)
        resource.parent = built.get(r.get("parent") or "")
        resource.dependencies = [built[u] for u in r.get("dependencies") or [] if u in built]
        resource.property_dependencies = {
            key: [built[u] for u in urns if u in built]
            for key, urns in (r.get("propertyDependencies") or {}).items()}
    return list(built.values())


def _run(validate: Any, args: Any, report: Any) -> None:
    result = validate(args, report)
    if isawaitable(result):
        asyncio.run(result)  # type: ignore[arg-type]


def check_plan(plan: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> list[Violation]:
    """Run every policy of the pack on the plan with this policy-pack config.

    By default the config is the stack's policies/config/<stack>.json (exemptions and thresholds), with
    the budget and enforcement levels derived from the plan's own stack config.
    """
    if config is None:
        config = merged(committed(str(plan["stack"])), pack_config(plan.get("config") or {}))
    found: list[Violation] = []
    stack_urn = f"urn:pulumi:{plan['stack']}::{plan['project']}::pulumi:pulumi:Stack::{plan['project']}-{plan['stack']}"
    for policy in build_policies():
        level = _level(policy, config)
        if level == EnforcementLevel.DISABLED:
            continue
        if level == EnforcementLevel.REMEDIATE:
            level = EnforcementLevel.MANDATORY
        settings = _policy_config(policy, config)

        def note(message: str, urn: str, type_: str, level: EnforcementLevel = level,
                 name: str = policy.name) -> None:
            found.append(Violation(name, urn, type_, level.value, message))

        if isinstance(policy, ResourceValidationPolicy):
            for r in plan["resources"]:
                args = ResourceValidationArgs(r["type"], _props(r), r["urn"], r["name"], _options(r), None,
                                              settings)
                try:
                    _run(policy.validate, args,
                         lambda message, _urn=None, r=r: note(message, r["urn"], r["type"]))
                except UnknownValueError as e:
                    note(e.message, r["urn"], r["type"], EnforcementLevel.ADVISORY)
                except _NotApplicableError:
                    pass
                except Exception as e:  # a rule that fails must not pass the resource silently
                    note(f"the rule failed on this resource: {type(e).__name__}: {e}", r["urn"], r["type"],
                         EnforcementLevel.MANDATORY)
        elif isinstance(policy, StackValidationPolicy):
            resources = _stack_resources(plan)
            types = {r.urn: r.resource_type for r in resources}
            stack_args = StackValidationArgs(resources, settings)
            try:
                _run(policy.validate, stack_args,
                     lambda message, urn=None, types=types: note(message, urn or stack_urn,
                                                                 types.get(urn or "", "stack")))
            except UnknownValueError as e:
                note(e.message, stack_urn, "stack", EnforcementLevel.ADVISORY)
            except _NotApplicableError:
                pass
            except Exception as e:
                note(f"the rule failed on this stack: {type(e).__name__}: {e}", stack_urn, "stack",
                     EnforcementLevel.MANDATORY)
    return found


def write_json(violations: Sequence[Violation], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"violations": [asdict(v) for v in violations]}, indent=2) + "\n")


def print_table(console: Console, stack: str, violations: Sequence[Violation]) -> None:
    mandatory = sum(1 for v in violations if v.level == "mandatory")
    title = f"policy check of {stack}: {mandatory} mandatory, {len(violations) - mandatory} advisory"
    if not violations:
        console.print(f"[green]policy check of {stack}: no violations[/]")
        return
    table = Table(title=title, title_justify="left", show_lines=True)
    table.add_column("rule", style="bold", no_wrap=True)
    table.add_column("resource", overflow="fold", max_width=36)
    table.add_column("enforcement", no_wrap=True)
    table.add_column("message", ratio=1)
    order = {"mandatory": 0, "advisory": 1}
    for v in sorted(violations, key=lambda v: (order.get(v.level, 2), v.policy, v.urn)):
        style = "red" if v.level == "mandatory" else "yellow"
        resource = v.urn.rsplit("::", 1)[-1] if "::" in v.urn else v.urn
        table.add_row(v.policy, escape(resource), f"[{style}]{v.level}[/]", escape(v.message))
    console.print(table)


def check_all(plans_dir: Path, out_dir: Path, console: Console | None = None) -> int:
    """Check every plan in `plans_dir` (as `servestack plan` writes them), write `out_dir/<stack>.json`,
    print each stack's table and a summary; 1 when any stack has a mandatory violation."""
    console = console or terminal.console
    summary = Table(title="policy check", title_justify="left")
    for column in ("stack", "mandatory", "advisory"):
        summary.add_column(column, justify="left" if column == "stack" else "right")
    worst = 0
    for path in sorted(plans_dir.glob("*.json")):
        plan = json.loads(path.read_text())
        violations = check_plan(plan)
        write_json(violations, out_dir / path.name)
        print_table(console, plan["stack"], violations)
        mandatory = sum(1 for v in violations if v.level == "mandatory")
        summary.add_row(plan["stack"], f"[red]{mandatory}[/]" if mandatory else "0",
                        str(len(violations) - mandatory))
        worst = max(worst, 1 if mandatory else 0)
    console.print(summary)
    return worst


def register(commands: Any) -> None:
    """Add the `check` subcommand to the servestack command line."""
    parser = commands.add_parser("check", help="run the policy pack on a stack's offline plan")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--stack", help="stack name (stacks/Pulumi.NAME.yaml): plan it, then check it")
    source.add_argument("--plan", type=Path, help="a plan JSON written by `servestack plan --json`")
    parser.add_argument("--json", type=Path, help="write the violations as JSON here")
    parser.add_argument("--policy-config", type=Path,
                        help="policy-pack config JSON (as for --policy-pack-config); default: from the "
                             "stack's config")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from servestack.offline.plan import PlanError, load_plan, plan_in_subprocess

    console, errors = terminal.console, terminal.errors
    try:
        if args.plan is not None:
            plan = load_plan(args.plan)
        else:
            with console.status(f"planning {args.stack} under the mock runtime"):
                plan = plan_in_subprocess(args.stack)
        config = json.loads(args.policy_config.read_text()) if args.policy_config is not None else None
        violations = check_plan(plan, config)
    except (PlanError, OSError, ValueError, StackConfigError) as error:
        errors.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
        return EXIT_BAD_INPUT
    print_table(console, plan["stack"], violations)
    if args.json is not None:
        write_json(violations, args.json)
        console.print(f"violations written to {args.json}")
    return 1 if any(v.level == "mandatory" for v in violations) else 0
