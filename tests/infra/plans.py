"""Helpers for making and reading offline plans in tests."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from servestack.offline.plan import ROOT, STACKS_DIR


def stack_variant(stacks_dir: Path, stack: str, name: str, **config: Any) -> Path:
    """Write stacks/Pulumi.<stack>.yaml as Pulumi.<name>.yaml into `stacks_dir`, with `config` keys replaced
    (a value of None removes the key); return the directory."""
    document = yaml.safe_load((STACKS_DIR / f"Pulumi.{stack}.yaml").read_text())
    for key, value in config.items():
        if value is None:
            document["config"].pop(key, None)
        else:
            document["config"][key] = value
    (stacks_dir / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump(document))
    return stacks_dir


def run_plan_script(stack: str, stacks_dir: Path = STACKS_DIR, before: str = "",
                    secrets: bool = False) -> subprocess.CompletedProcess[str]:
    """Plan in a fresh process, like every plan, running `before` (Python, with `servestack.offline.plan` as `p`)
    first: to show secrets, or to change the program the way a code change would."""
    script = "\n".join([
        "import json, sys; from pathlib import Path; import servestack.offline.plan as p",
        "p._masked = lambda value: value" if secrets else "",
        before,
        "print(json.dumps(p.run_plan(sys.argv[1], Path(sys.argv[2]))))",
    ])
    return subprocess.run([sys.executable, "-c", script, stack, str(stacks_dir)], capture_output=True, text=True,
                          cwd=ROOT, check=False, timeout=300)


def plan_unmasked(stack: str, stacks_dir: Path = STACKS_DIR, before: str = "") -> dict[str, Any]:
    """A plan with secrets shown (to read a kubeconfig)."""
    result = run_plan_script(stack, stacks_dir, before, secrets=True)
    assert result.returncode == 0, result.stderr
    plan: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return plan


def resources(plan: Mapping[str, Any], type_token: str) -> list[dict[str, Any]]:
    return [r for r in plan["resources"] if r["type"] == type_token]


def one(plan: Mapping[str, Any], type_token: str, name: str | None = None) -> dict[str, Any]:
    found = [r for r in resources(plan, type_token) if name is None or r["name"] == name]
    assert len(found) == 1, f"expected one {type_token} {name or ''}, found {[r['name'] for r in found]}"
    return found[0]


def inputs(plan: Mapping[str, Any], type_token: str, name: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = one(plan, type_token, name)["inputs"]
    return found
