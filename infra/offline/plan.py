"""Run the real Pulumi program under the SDK's mock runtime and record what it declares.

The plan is the JSON of DESIGN.md: every resource with its URN, type, name, parent, whether it is a
custom resource, its inputs in wire names and its dependencies, plus the stack's outputs. Secret values
appear as "[secret]". The mock runtime keeps one root stack per process: `run_plan` must run once per
process, and `plan_in_subprocess` gives callers that need several stacks a fresh process each.
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import mocks, rpc
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from infra.offline.fakes import FakeContext, load

PROJECT = "servestack"
ROOT = Path(__file__).resolve().parents[2]
INFRA_DIR = ROOT / "infra"
STACKS_DIR = ROOT / "stacks"
SECRET = "[secret]"


class PlanError(Exception):
    """The plan could not be made: unknown stack, invalid config, or the program failed."""


def stack_names(stacks_dir: Path = STACKS_DIR) -> list[str]:
    return sorted(p.name[len("Pulumi."):-len(".yaml")] for p in stacks_dir.glob("Pulumi.*.yaml"))


def read_stack_config(stack: str, stacks_dir: Path = STACKS_DIR) -> dict[str, Any]:
    """The stack file's `config:` as flat `"ns:key" -> value`, with objects as objects."""
    path = stacks_dir / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        known = ", ".join(stack_names(stacks_dir)) or "none"
        shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        raise PlanError(f"unknown stack {stack!r}: there is no {shown}; known stacks: {known}")
    document = yaml.safe_load(path.read_text()) or {}
    config = document.get("config") or {}
    if not isinstance(config, Mapping):
        raise PlanError(f"{path}: `config` must be a mapping of keys to values")
    return dict(config)


class _PlanMocks(mocks.Mocks):
    def __init__(self, context: FakeContext) -> None:
        self._context = context
        self._resources, self._calls = load()

    def new_resource(self, args: mocks.MockResourceArgs) -> tuple[str | None, dict[Any, Any]]:
        if not args.custom:
            return None, {}
        fake = self._resources.get(args.typ)
        if fake is None:
            return f"{args.name}-{self._context.hex(args.typ, args.name, length=8)}", dict(args.inputs)
        resource_id, outputs = fake(args, self._context)
        return resource_id, {**args.inputs, **outputs}

    def call(self, args: mocks.MockCallArgs) -> tuple[dict[Any, Any], list[tuple[str, str]] | None]:
        fake = self._calls.get(args.token)
        if fake is None:
            raise PlanError(f"the offline plan has no fake for the call {args.token}; add one to "
                            "infra/offline/fakes/")
        # No check failures: an empty list (the mock monitor iterates it; None would fail).
        return fake(args, self._context), []


class _RecordingMonitor(mocks.MockMonitor):
    """The SDK's mock monitor, also remembering each registration as the engine would see it."""

    def __init__(self, plan_mocks: mocks.Mocks) -> None:
        super().__init__(plan_mocks)
        self.records: list[dict[str, Any]] = []

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            self.records.append({
                "urn": response.urn,
                "type": request.type,
                "name": request.name,
                "parent": request.parent or None,
                "custom": bool(request.custom),
                "provider": request.provider.rsplit("::", 1)[0] if request.provider else None,
                "inputs": _plain(rpc.deserialize_properties(request.object)),
                "dependencies": sorted(set(request.dependencies)),
                "propertyDependencies": {key: sorted(set(deps.urns))
                                         for key, deps in sorted(request.propertyDependencies.items()) if deps.urns},
                "ignoreChanges": list(request.ignoreChanges),
                "customTimeouts": _timeouts(request.customTimeouts),
            })
        return response


def _timeouts(timeouts: Any) -> dict[str, str]:
    """The resource's custom timeouts that are set (create, update, delete)."""
    return {op: getattr(timeouts, op) for op in ("create", "update", "delete") if getattr(timeouts, op, "")}


def _plain(value: Any) -> Any:
    """JSON-ready values: secrets masked, resource references as URNs."""
    if rpc.is_rpc_secret(value):
        return _masked(rpc.unwrap_rpc_secret(value))
    if isinstance(value, pulumi.Resource):
        return f"[resource {type(value).__name__}]"
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _masked(value: Any) -> Any:
    """A secret's shape with every leaf replaced, so that schemas still see objects as objects."""
    if isinstance(value, Mapping):
        return {str(k): _masked(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(v) for v in value]
    return SECRET


def _engine_config(config: Mapping[str, Any]) -> tuple[dict[str, str], list[str]]:
    """Config as the engine hands it to a program: strings, with objects JSON-encoded."""
    values: dict[str, str] = {}
    secret_keys: list[str] = []
    for key, value in config.items():
        if isinstance(value, Mapping) and set(value) == {"secure"}:
            values[key], secret_keys = SECRET, [*secret_keys, key]
        elif isinstance(value, str):
            values[key] = value
        else:
            values[key] = json.dumps(value)
    return values, secret_keys


@contextmanager
def _working_directory(path: Path) -> Iterator[None]:
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def run_plan(stack: str, stacks_dir: Path = STACKS_DIR) -> dict[str, Any]:
    """Run the program for one stack in this process and return its plan. Call once per process."""
    config = read_stack_config(stack, stacks_dir)
    values, secret_keys = _engine_config(config)
    pulumi.runtime.set_all_config(values, secret_keys)
    monitor = _RecordingMonitor(_PlanMocks(FakeContext(stack, config)))
    mocks.set_mocks(monitor.mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor)

    # As the Python language host runs it: the folder as a program, the folder as working directory.
    def program() -> None:
        with _working_directory(INFRA_DIR):
            runpy.run_path(str(INFRA_DIR), run_name="__main__")

    _sync_await(run_pulumi_func(program))
    root = pulumi.runtime.settings.get_root_resource()
    outputs = _sync_await(_resolve_outputs(getattr(root, "outputs", {}) or {}))
    return {"project": PROJECT, "stack": stack, "config": config, "resources": monitor.records,
            "outputs": outputs}


async def _resolve_outputs(outputs: Mapping[str, Any]) -> dict[str, Any]:
    resolved = {}
    for key, value in outputs.items():
        output = pulumi.Output.from_input(value)
        plain = await output.future()
        resolved[key] = SECRET if await output.is_secret() else _plain(plain)
    return resolved


def plan_in_subprocess(stack: str, json_path: Path | None = None,
                       stacks_dir: Path = STACKS_DIR) -> dict[str, Any]:
    """Plan one stack in a fresh process (the mock runtime holds one stack per process)."""
    with tempfile.TemporaryDirectory() as tmp:
        target = json_path or Path(tmp) / f"{stack}.json"
        result = subprocess.run(
            [sys.executable, "-m", "infra.cli", "plan", "--stack", stack, "--stacks-dir", str(stacks_dir),
             "--json", str(target), "--quiet"],
            capture_output=True, text=True, cwd=ROOT, check=False)
        if result.returncode != 0:
            raise PlanError((result.stderr or result.stdout).strip() or f"plan of {stack} failed")
        return load_plan(target)


def load_plan(path: Path | str) -> dict[str, Any]:
    plan: dict[str, Any] = json.loads(Path(path).read_text())
    return plan


def write_plan(plan: Mapping[str, Any], path: Path | str) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(plan, indent=2, sort_keys=False) + "\n")
