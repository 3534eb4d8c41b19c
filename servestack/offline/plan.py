"""Run the real Pulumi program under the SDK's mock runtime and record what it declares.

The plan is the JSON of DESIGN.md: every resource with its URN, type, name, parent, whether it is a
custom resource, its inputs in wire names and its dependencies, plus the stack's outputs. Secret values
appear as "[secret]". The mock runtime keeps one root stack per process: `run_plan` must run once per
process, and `plan_in_subprocess` gives callers that need several stacks a fresh process each.
"""

from __future__ import annotations

import ipaddress
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
from urllib.parse import urlsplit

import pulumi
import yaml
from pulumi.runtime import mocks, rpc
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from servestack.offline.fakes import CloudError, FakeContext, load

PROJECT = "servestack"
ROOT = Path(__file__).resolve().parents[2]
INFRA_DIR = ROOT / "infra"
STACKS_DIR = ROOT / "stacks"
SECRET = "[secret]"


class PlanError(Exception):
    """The plan could not be made: unknown stack, invalid config, or the program failed."""


class DeployError(PlanError):
    """What `pulumi up` would fail with: the (fake) cloud refused a request, or the deployer could not
    reach the cluster's Kubernetes API."""


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
        # (type, name) -> the declared inputs the cloud answers differently (what `refresh` would bring back)
        self.drift: dict[tuple[str, str], dict[str, Any]] = {}

    def new_resource(self, args: mocks.MockResourceArgs) -> tuple[str | None, dict[Any, Any]]:
        if not args.custom:
            return None, {}
        fake = self._resources.get(args.typ)
        if fake is None:
            return f"{args.name}-{self._context.hex(args.typ, args.name, length=8)}", dict(args.inputs)
        try:
            resource_id, outputs = fake(args, self._context)
        except CloudError as error:
            raise DeployError(f"creating {args.typ} {args.name}: {error}") from None
        changed = {key: {"declared": _plain(args.inputs[key]), "cloud": _plain(value)}
                   for key, value in outputs.items()
                   if key in args.inputs and _drifts(key, _plain(args.inputs[key]), _plain(value))}
        if changed:
            self.drift[(args.typ, args.name)] = changed
        return resource_id, {**args.inputs, **outputs}

    def call(self, args: mocks.MockCallArgs) -> tuple[dict[Any, Any], list[tuple[str, str]] | None]:
        fake = self._calls.get(args.token)
        if fake is None:
            raise PlanError(f"the offline plan has no fake for the call {args.token}; add one to "
                            "servestack/offline/fakes/")
        try:
            result = fake(args, self._context)
        except CloudError as error:
            raise DeployError(f"invoking {args.token}: {error}") from None
        # No check failures: an empty list (the mock monitor iterates it; None would fail).
        return result, []


# Maps whose every entry is the program's to declare: an entry the cloud adds drifts. In other objects,
# the keys the program leaves out are the cloud's to fill (ARNs, addresses, computed settings).
_DECLARED_MAPS = frozenset({"labels", "nodeLabels", "taints", "nodeTaints", "tags", "resourceLabels"})


def _drifts(key: str, declared: Any, cloud: Any) -> bool:
    """Whether the cloud keeps a declared value differently, so that a refresh shows a change."""
    if isinstance(declared, dict) and isinstance(cloud, dict) and key not in _DECLARED_MAPS:
        return any(k in cloud and _drifts(k, v, cloud[k]) for k, v in declared.items())
    if isinstance(declared, list) and isinstance(cloud, dict):
        return set(map(str, declared)) != set(cloud)  # ARM answers a list of ids with a map keyed by them
    return bool(declared != cloud)


class _RecordingMonitor(mocks.MockMonitor):
    """The SDK's mock monitor, also remembering each registration as the engine would see it.

    It stands in for the deployer too: a Kubernetes provider whose API server the deployer's machine
    cannot reach (its address is private to the cluster's network) fails every object it would create,
    as `pulumi up` does.
    """

    def __init__(self, plan_mocks: _PlanMocks, context: FakeContext) -> None:
        super().__init__(plan_mocks)
        self._plan_mocks = plan_mocks
        self._context = context
        self.records: list[dict[str, Any]] = []
        self._unreachable: dict[str, str] = {}  # provider URN -> why the deployer cannot reach its API

    def RegisterResource(self, request: Any) -> Any:
        provider = request.provider.rsplit("::", 1)[0] if request.provider else None
        if provider in self._unreachable:
            raise DeployError(f"creating {request.type} {request.name}: {self._unreachable[provider]}")
        response = super().RegisterResource(request)
        if request.type == "pulumi:providers:kubernetes":
            why = unreachable_api(rpc.deserialize_properties(request.object), self._context)
            if why:
                self._unreachable[response.urn] = why
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
            if request.retainOnDelete:
                # Deleting it from the program (or destroying the stack) only forgets it: the object stays.
                self.records[-1]["retainOnDelete"] = True
            renamed = [alias.spec.name for alias in request.aliases if alias.spec.name]
            if renamed:
                # The names this resource had before: the engine keeps such a rename as an update, not a
                # replacement. (The provider SDKs' own aliases, of their older type tokens, name no resource.)
                self.records[-1]["aliases"] = renamed
            drift = self._plan_mocks.drift.get((request.type, request.name))
            if drift:
                # What the cloud keeps differently from the declaration: after a refresh, the next `up`
                # would change it back.
                self.records[-1]["drift"] = drift
        return response


def unreachable_api(inputs: Mapping[str, Any], context: FakeContext) -> str | None:
    """Why the deployer cannot reach a Kubernetes provider's API server, or None when it can.

    The deployer runs outside the networks the stack creates; an API server whose name resolves (as the
    fakes registered it) to a private address is out of its reach."""
    kubeconfig = inputs.get("kubeconfig")
    if rpc.is_rpc_secret(kubeconfig):
        kubeconfig = rpc.unwrap_rpc_secret(kubeconfig)
    if not isinstance(kubeconfig, str):
        return None  # a context of the operator's own kubeconfig (the local stack)
    document = yaml.safe_load(kubeconfig)
    if not isinstance(document, Mapping):
        return None  # a path to a kubeconfig file of the operator's
    for cluster in document.get("clusters") or []:
        server = str((cluster.get("cluster") or {}).get("server") or "")
        host = urlsplit(server).hostname or ""
        address = context.resolve(host)
        if address is not None and ipaddress.ip_address(address).is_private:
            return (f"the Kubernetes API at {server} is out of the deployer's reach: {host} resolves to {address}, "
                    "inside the cluster's own network, and `pulumi up` runs outside it (dial tcp "
                    f"{address}:443: i/o timeout); see servestack:access.apiAccess")
    return None


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


def run_plan(stack: str, stacks_dir: Path = STACKS_DIR, life: int = 0) -> dict[str, Any]:
    """Run the program for one stack in this process and return its plan. Call once per process.

    `life` 1 plans the stack as created again after a `pulumi destroy` (new ids, auto-names and random
    values), 2 the time after that, and so on."""
    config = read_stack_config(stack, stacks_dir)
    values, secret_keys = _engine_config(config)
    pulumi.runtime.set_all_config(values, secret_keys)
    context = FakeContext(stack, config, life)
    monitor = _RecordingMonitor(_PlanMocks(context), context)
    mocks.set_mocks(monitor.mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor)

    # As the Python language host runs it: the folder as a program, the folder as working directory.
    def program() -> None:
        with _working_directory(INFRA_DIR):
            runpy.run_path(str(INFRA_DIR), run_name="__main__")

    try:
        _sync_await(run_pulumi_func(program))
    except Exception as error:
        # The engine wraps what a registration raised; surface the deploy failure itself.
        deploy_error = _find_in_chain(error, DeployError)
        if deploy_error is not None:
            raise deploy_error from None
        raise
    root = pulumi.runtime.settings.get_root_resource()
    outputs = _sync_await(_resolve_outputs(getattr(root, "outputs", {}) or {}))
    return {"project": PROJECT, "stack": stack, "config": config, "resources": monitor.records,
            "outputs": outputs}


def _find_in_chain(error: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first exception of `kind` among `error`'s causes and contexts (chains can loop)."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, kind):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


async def _resolve_outputs(outputs: Mapping[str, Any]) -> dict[str, Any]:
    resolved = {}
    for key, value in outputs.items():
        output = pulumi.Output.from_input(value)
        plain = await output.future()
        resolved[key] = _masked(_plain(plain)) if await output.is_secret() else _plain(plain)
    return resolved


def plan_in_subprocess(stack: str, json_path: Path | None = None, stacks_dir: Path = STACKS_DIR,
                       life: int = 0) -> dict[str, Any]:
    """Plan one stack in a fresh process (the mock runtime holds one stack per process)."""
    with tempfile.TemporaryDirectory() as tmp:
        target = json_path or Path(tmp) / f"{stack}.json"
        result = subprocess.run(
            [sys.executable, "-m", "servestack.cli", "plan", "--stack", stack, "--stacks-dir", str(stacks_dir),
             "--json", str(target), "--quiet", "--life", str(life)],
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
