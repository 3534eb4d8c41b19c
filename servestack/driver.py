"""`servestack preview|up|destroy|refresh|outputs --stack NAME`: the real Pulumi engine on this repository.

The Automation API (`pulumi.automation`) drives the Pulumi CLI with a `LocalWorkspace` on the repository
root (Pulumi.yaml; the stacks' config in stacks/ through `stackConfigDir`). `preview` and `up` attach the
policy pack (policies/) with the stack's policy config (policies/config/STACK.json) unless `--no-policies`.
Progress streams from the engine's events into a live table of resources; a summary of the changes ends
every verb. `up` then runs `servestack verify` unless `--no-verify`.

Before Pulumi runs at all, the driver checks what it cannot do without, and stops with exit code 2 naming
what is missing and how to get it: the Pulumi CLI (at least the version of the pinned SDK), a backend
login (PULUMI_ACCESS_TOKEN, PULUMI_BACKEND_URL or `pulumi login`), and the credentials of the stack's cloud
(not for `outputs`, which reads only the backend's state).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import yaml
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from servestack import terminal
from servestack.offline.plan import ROOT, STACKS_DIR, PlanError, read_stack_config

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
VERBS = ("preview", "up", "destroy", "refresh", "outputs")
POLICY_PACK = ROOT / "policies"
POLICY_CONFIG_DIR = POLICY_PACK / "config"
INSTALL_URL = "https://www.pulumi.com/docs/install/"
# The CLI released with the pinned SDK (requirements.txt): the Automation API speaks its flags and events.
CLI_MINIMUM = package_version("pulumi")
# The order in which a summary of changes lists the engine's operations.
CHANGE_ORDER = ("create", "update", "replace", "delete", "same")
REPLACEMENT_HALVES = ("create-replacement", "delete-replaced")


class DriverError(Exception):
    """Something the driver cannot go on without; the message says what and how to fix it."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code


# --- what must be there before Pulumi runs ---------------------------------------------------------


def require_cli() -> None:
    if shutil.which("pulumi") is None:
        raise DriverError(f"the Pulumi CLI is not installed (no `pulumi` on PATH); servestack needs Pulumi CLI >= "
                          f"{CLI_MINIMUM} (the version of the pinned pulumi SDK). Install it: {INSTALL_URL} "
                          f"(e.g. `curl -fsSL https://get.pulumi.com | sh -s -- --version {CLI_MINIMUM}`)")


def backend_login_missing(env: Mapping[str, str], home: Path) -> str | None:
    """Why the CLI would have no backend to keep the stack's state in, or None when it has one."""
    if env.get("PULUMI_ACCESS_TOKEN") or env.get("PULUMI_BACKEND_URL"):
        return None
    credentials = Path(env.get("PULUMI_HOME") or home / ".pulumi") / "credentials.json"
    try:
        if json.loads(credentials.read_text()).get("current"):
            return None
    except (OSError, ValueError, AttributeError):
        pass
    return ("no Pulumi backend login: set PULUMI_ACCESS_TOKEN (Pulumi Cloud; a token from "
            "https://app.pulumi.com/account/tokens) or PULUMI_BACKEND_URL (e.g. s3://BUCKET, gs://BUCKET, "
            f"azblob://CONTAINER, file://~), or run `pulumi login` (state kept in {credentials})")


def _exists(path: str | Path | None) -> bool:
    return bool(path) and Path(str(path)).expanduser().exists()


def missing_credentials(cloud: str, config: Mapping[str, Any], env: Mapping[str, str], home: Path) -> str | None:
    """Which credentials of the stack's cloud are missing and how to get them, or None when some are there."""
    if cloud == "aws":
        if (env.get("AWS_PROFILE") or (env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"))
                or env.get("AWS_WEB_IDENTITY_TOKEN_FILE") or env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI")
                or env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") or config.get("aws:profile")
                or _exists(env.get("AWS_SHARED_CREDENTIALS_FILE") or home / ".aws" / "credentials")
                or _exists(env.get("AWS_CONFIG_FILE") or home / ".aws" / "config")):
            return None
        return ("no AWS credentials: set AWS_PROFILE (a profile of ~/.aws/config, e.g. after `aws sso login "
                "--profile NAME`) or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run `aws configure` "
                "(writes ~/.aws/credentials); in CI, OIDC through aws-actions/configure-aws-credentials")
    if cloud == "gcp":
        adc = Path(env.get("CLOUDSDK_CONFIG") or home / ".config" / "gcloud") / "application_default_credentials.json"
        named = env.get("GOOGLE_APPLICATION_CREDENTIALS")
        if named and not _exists(named):
            return (f"GOOGLE_APPLICATION_CREDENTIALS names {named}, which does not exist; point it at a service "
                    f"account key or workload identity file, or unset it and run `gcloud auth application-default "
                    f"login`")
        if named or env.get("GOOGLE_CREDENTIALS") or env.get("GOOGLE_OAUTH_ACCESS_TOKEN") or _exists(adc):
            return None
        return ("no Google Cloud credentials: set GOOGLE_APPLICATION_CREDENTIALS (a service account key or "
                f"workload identity file), or run `gcloud auth application-default login` (writes {adc}); in CI, "
                "google-github-actions/auth")
    if cloud == "azure":
        if env.get("ARM_CLIENT_ID") and any(env.get(k) for k in ("ARM_CLIENT_SECRET", "ARM_CLIENT_CERTIFICATE_PATH",
                                                                   "ARM_USE_OIDC", "ARM_OIDC_TOKEN")):
            return None
        if env.get("ARM_USE_MSI", "").lower() == "true":
            return None
        azure_dir = Path(env.get("AZURE_CONFIG_DIR") or home / ".azure")
        if _exists(azure_dir / "azureProfile.json"):
            return None
        return ("no Azure credentials: run `az login` (keeps its sign-in in "
                f"{azure_dir}), or set ARM_CLIENT_ID with ARM_CLIENT_SECRET (a service principal; also ARM_TENANT_ID "
                "and ARM_SUBSCRIPTION_ID), or ARM_USE_OIDC=true in CI, or ARM_USE_MSI=true on an Azure machine")
    if cloud == "local":
        return _missing_kubeconfig(config, env, home)
    return None  # an unknown cloud: infra/config.py names the problem when the program runs


def _missing_kubeconfig(config: Mapping[str, Any], env: Mapping[str, str], home: Path) -> str | None:
    local = config.get("servestack:local") or {}
    context = local.get("kubeContext") if isinstance(local, Mapping) else None
    given = local.get("kubeconfig") if isinstance(local, Mapping) else None
    if given and "\n" in str(given):
        files: list[Path] = []
        documents = [yaml.safe_load(str(given))]
    else:
        if given:
            files = [Path(str(given)).expanduser()]
        elif env.get("KUBECONFIG"):
            files = [Path(p).expanduser() for p in env["KUBECONFIG"].split(os.pathsep) if p]
        else:
            files = [home / ".kube" / "config"]
        documents = []
        for file in files:
            try:
                documents.append(yaml.safe_load(file.read_text()))
            except (OSError, yaml.YAMLError):
                continue
        if not documents:
            return (f"no kubeconfig: {', '.join(map(str, files))} cannot be read; create the cluster (e.g. `kind "
                    f"create cluster --name servestack`, which writes ~/.kube/config) or set KUBECONFIG")
    contexts = {c.get("name") for d in documents if isinstance(d, Mapping)
                for c in d.get("contexts") or [] if isinstance(c, Mapping)}
    if context and context not in contexts:
        where = ", ".join(map(str, files)) or "servestack:local.kubeconfig"
        return (f"the kubeconfig ({where}) has no context {context!r} (servestack:local.kubeContext); it has: "
                f"{', '.join(sorted(c for c in contexts if c)) or 'none'}. Create the cluster (for "
                f"kind-servestack: `kind create cluster --name servestack`) or name an existing context")
    return None


def preflight(verb: str, stack: str, stacks_dir: Path = STACKS_DIR, env: Mapping[str, str] | None = None,
              home: Path | None = None) -> None:
    """Everything checked before Pulumi runs; DriverError (exit code 2) names what is missing."""
    env = os.environ if env is None else env
    home = Path.home() if home is None else home
    try:
        config = read_stack_config(stack, stacks_dir)
    except PlanError as error:
        raise DriverError(str(error)) from None
    require_cli()
    problems = []
    if (login := backend_login_missing(env, home)) is not None:
        problems.append(login)
    cloud = str(config.get("servestack:cloud", ""))
    if verb != "outputs" and (creds := missing_credentials(cloud, config, env, home)) is not None:
        problems.append(f"{creds} (stack {stack} is on {cloud})")
    if problems:
        raise DriverError(f"cannot run `{verb}` on stack {stack}:\n  - " + "\n  - ".join(problems))


# --- the Automation API ----------------------------------------------------------------------------


def open_stack(stack: str, create: bool) -> Any:
    """The stack in a LocalWorkspace on the repository, created when `create` and it does not exist yet."""
    from pulumi.automation import LocalWorkspace, PulumiCommand, Stack
    from pulumi.automation.errors import CommandError, InvalidVersionError, StackNotFoundError
    from semver import VersionInfo

    try:
        command = PulumiCommand(version=VersionInfo.parse(CLI_MINIMUM))
    except FileNotFoundError:
        require_cli()
        raise
    except InvalidVersionError as error:
        raise DriverError(f"servestack needs Pulumi CLI >= {CLI_MINIMUM} (the version of the pinned pulumi SDK): "
                          f"{error} Install it: {INSTALL_URL}") from None
    workspace = LocalWorkspace(work_dir=str(ROOT), pulumi_command=command)
    try:
        return Stack.create_or_select(stack, workspace) if create else Stack.select(stack, workspace)
    except StackNotFoundError:
        raise DriverError(f"stack {stack} does not exist in the backend yet; `servestack up --stack {stack}` "
                          f"creates it") from None
    except CommandError as error:  # e.g. the backend refused the login
        raise DriverError(f"selecting stack {stack} failed:\n{_command_output(error)}", EXIT_FAILED) from None


def policy_args(stack: str) -> dict[str, list[str]]:
    """The policy pack and, where the stack has one, its policy config, as preview and up take them."""
    config = POLICY_CONFIG_DIR / f"{stack}.json"
    return {"policy_packs": [str(POLICY_PACK)],
            "policy_pack_configs": [str(config)] if config.is_file() else []}


@dataclass
class _Step:
    type: str
    op: str
    state: str  # pending, done, failed


class LiveView:
    """The engine's events as a live table: each resource, what the engine does to it, and how far it got."""

    def __init__(self, verb: str, stack: str) -> None:
        self.title = f"{verb} {stack}"
        self.steps: dict[str, _Step] = {}
        self.diagnostics: list[str] = []
        self.policy: list[str] = []
        self._lock = threading.Lock()
        self._live = Live(self._table(), console=terminal.console, refresh_per_second=4, transient=False)

    def __enter__(self) -> LiveView:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.update(self._table())
        self._live.__exit__(None, None, None)
        if not terminal.console.is_terminal:
            terminal.console.line()  # rich ends a live view in a log without a line break
        for line in self.policy + self.diagnostics:
            terminal.console.print(line, highlight=False)

    def on_event(self, event: Any) -> None:
        with self._lock:
            if event.resource_pre_event is not None:
                meta = event.resource_pre_event.metadata
                done = bool(event.resource_pre_event.planning) or meta.op.value in ("same", "read")
                self.steps[meta.urn] = _Step(meta.type, meta.op.value, "done" if done else "pending")
            elif event.res_outputs_event is not None:
                meta = event.res_outputs_event.metadata
                self.steps[meta.urn] = _Step(meta.type, meta.op.value, "done")
            elif event.res_op_failed_event is not None:
                meta = event.res_op_failed_event.metadata
                self.steps[meta.urn] = _Step(meta.type, meta.op.value, "failed")
            elif event.policy_event is not None:
                p = event.policy_event
                where = f" ({p.resource_urn.rsplit('::', 1)[-1]})" if p.resource_urn else ""
                self.policy.append(f"[yellow]policy {escape(p.policy_name)}[/] \\[{escape(p.enforcement_level)}]"
                                   f"{escape(where)}: {escape(p.message.strip())}")
            elif event.diagnostic_event is not None and event.diagnostic_event.severity in ("error", "warning"):
                d = event.diagnostic_event
                where = f" ({d.urn.rsplit('::', 1)[-1]})" if d.urn else ""
                self.diagnostics.append(f"[red]{d.severity}[/]{escape(where)}: {escape(d.message.strip())}")
            else:
                return
            self._live.update(self._table())

    def _table(self) -> Table:
        table = Table(title=self.title, title_justify="left")
        for column in ("resource", "type", "operation", "state"):
            table.add_column(column)
        colours = {"pending": "yellow", "done": "green", "failed": "bold red"}
        for urn, step in self.steps.items():
            table.add_row(escape(urn.rsplit("::", 1)[-1]), escape(step.type), step.op,
                          f"[{colours[step.state]}]{step.state}[/]")
        return table


def change_counts(changes: Mapping[str, int] | None) -> dict[str, int]:
    """The engine's operation counts, each replacement once (as `replace`, not also as its two halves)."""
    return {op: int(count) for op, count in (changes or {}).items() if op not in REPLACEMENT_HALVES}


def print_summary(verb: str, stack: str, counts: Mapping[str, int]) -> None:
    ordered = [op for op in CHANGE_ORDER if op in counts] + sorted(set(counts) - set(CHANGE_ORDER))
    table = Table(title=f"{verb} {stack}: changes", title_justify="left")
    table.add_column("operation")
    table.add_column("resources", justify="right")
    for op in ordered or ["same"]:
        table.add_row(op, str(counts.get(op, 0)))
    terminal.console.print(table)


def run_verb(verb: str, stack: str, *, policies: bool = True) -> dict[str, int]:
    """Run one of preview, up, destroy, refresh on the stack, shown live: the counts of its changes."""
    from pulumi.automation.errors import CommandError

    pulumi_stack = open_stack(stack, create=verb in ("preview", "up"))
    view = LiveView(verb, stack)
    extra = policy_args(stack) if policies and verb in ("preview", "up") else {}
    try:
        with view:
            if verb == "preview":
                return change_counts(pulumi_stack.preview(on_event=view.on_event, **extra).change_summary)
            if verb == "up":
                result = pulumi_stack.up(on_event=view.on_event, **extra)
            elif verb == "destroy":
                result = pulumi_stack.destroy(on_event=view.on_event)
            else:
                result = pulumi_stack.refresh(on_event=view.on_event)
            return change_counts(result.summary.resource_changes)
    except CommandError as error:
        raise DriverError(f"`pulumi {verb}` on stack {stack} failed:\n{_command_output(error)}",
                          EXIT_FAILED) from None


def _command_output(error: Any) -> str:
    text = "\n".join(part for part in (getattr(error, "stdout", ""), getattr(error, "stderr", "")) if part)
    return text.strip() or str(error)


def read_outputs(stack: str) -> dict[str, Any]:
    """The stack's outputs, secrets in plain text: {"name": {"value": ..., "secret": bool}}."""
    from pulumi.automation.errors import CommandError

    try:
        outputs = open_stack(stack, create=False).outputs()
    except CommandError as error:
        raise DriverError(f"`pulumi stack output` of stack {stack} failed:\n{_command_output(error)}",
                          EXIT_FAILED) from None
    return {name: {"value": output.value, "secret": output.secret} for name, output in outputs.items()}


# --- command line -----------------------------------------------------------------------------------


def register(commands: Any, out_dir: Path) -> None:
    """Add preview, up, destroy, refresh and outputs to the servestack command line."""
    helps = {"preview": "what `up` would change, judged by the policy pack (the real engine, the stack's cloud)",
             "up": "create or update the stack's resources, then verify its endpoint",
             "destroy": "delete every resource of the stack",
             "refresh": "read the stack's resources back from the cloud into its state",
             "outputs": "the stack's outputs (endpoint, API keys, ...); secrets masked unless --show-secrets"}
    for verb in VERBS:
        parser = commands.add_parser(verb, help=helps[verb])
        parser.add_argument("--stack", required=True, help="stack name (stacks/Pulumi.NAME.yaml)")
        if verb in ("preview", "up"):
            parser.add_argument("--no-policies", action="store_true",
                                help="do not attach the policy pack (policies/ with policies/config/STACK.json)")
        if verb == "up":
            parser.add_argument("--no-verify", action="store_true", help="do not run `servestack verify` after")
            parser.add_argument("--verify-timeout", type=float, default=600.0,
                                help="seconds verify waits for the endpoint to answer (default: %(default)s)")
        if verb == "destroy":
            parser.add_argument("--yes", action="store_true", help="really delete everything the stack holds")
        if verb == "outputs":
            parser.add_argument("--show-secrets", action="store_true", help="print secret outputs in plain text")
            parser.add_argument("--json", type=Path, help="also write the outputs (with secrets) to this file")
        parser.set_defaults(handler=_handler, out_dir=out_dir)


def _handler(args: argparse.Namespace) -> int:
    try:
        if args.command == "destroy" and not args.yes:
            raise DriverError(f"`destroy` deletes every resource of stack {args.stack}; pass --yes to go ahead")
        preflight(args.command, args.stack)
        if args.command == "outputs":
            return _outputs(args)
        counts = run_verb(args.command, args.stack, policies=not getattr(args, "no_policies", False))
    except DriverError as error:
        terminal.errors.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
        return error.code
    print_summary(args.command, args.stack, counts)
    if args.command == "up" and not args.no_verify:
        from servestack.verify import verify_stack

        return verify_stack(args.stack, out_dir=args.out_dir / "verify", timeout_s=args.verify_timeout)
    return 0


def _outputs(args: argparse.Namespace) -> int:
    outputs = read_outputs(args.stack)
    table = Table(title=f"outputs of {args.stack}", title_justify="left")
    table.add_column("name")
    table.add_column("value", overflow="fold")
    for name, output in sorted(outputs.items()):
        shown = "[secret]" if output["secret"] and not args.show_secrets else json.dumps(output["value"])
        table.add_row(name, escape(shown))
    terminal.console.print(table)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        # It holds the secrets: readable by its owner only, from the moment it exists.
        with os.fdopen(os.open(args.json, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
            file.write(json.dumps(outputs, indent=2) + "\n")
        terminal.console.print(f"outputs written to {args.json}")
    return 0
