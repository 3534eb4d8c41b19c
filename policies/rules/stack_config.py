"""The policy pack's config for one stack, derived from the stack's own config.

Policies cannot read stack config, so what they need from it travels as policy-pack config: the
GPU budget, and the enforcement level of the rules that are advisory elsewhere and mandatory where the
stack's environment is prod (`PROD_MANDATORY`: the public-port allow-list, immutable image tags, scans on
push, TLS on public endpoints, the serving API key). `pulumi preview --policy-pack policies --policy-pack-config
policies/config/<stack>.json` uses the committed files; `servestack check` derives the same from
the plan (over the file's own entries, such as exemptions). Regenerate the files after changing a
stack's environment or budget; entries written by hand are kept:

    python -m policies.rules.stack_config
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "policies" / "config"
ENVIRONMENTS = ("dev", "staging", "prod")
# Advisory rules that a prod stack must pass.
PROD_MANDATORY = ("world-ingress-allowlist", "registry-immutable-tags", "ecr-scan-on-push", "public-endpoint-tls",
                  "serving-api-key-required")


class StackConfigError(ValueError):
    pass


def pack_config(stack_config: Mapping[str, Any]) -> dict[str, Any]:
    """Policy-pack config from a stack's flat config ("servestack:environment" -> "prod", ...)."""
    environment = stack_config.get("servestack:environment", "dev")
    if environment not in ENVIRONMENTS:
        raise StackConfigError(f"servestack:environment: {environment!r} is not allowed; "
                               f"allowed: {', '.join(ENVIRONMENTS)}")
    level = "mandatory" if environment == "prod" else "advisory"
    config: dict[str, Any] = {rule: {"enforcementLevel": level} for rule in PROD_MANDATORY}
    budget = stack_config.get("servestack:budgetPerHour")
    if budget is not None:
        try:
            value = float(budget)
        except (TypeError, ValueError) as e:
            raise StackConfigError(f"servestack:budgetPerHour: {budget!r} is not a number") from e
        if value <= 0:
            raise StackConfigError(f"servestack:budgetPerHour: {value} must be greater than 0")
        config["gpu-budget"] = {"budgetPerHour": value}
    return config


def merged(existing: Mapping[str, Any], derived: Mapping[str, Any]) -> dict[str, Any]:
    """The derived settings over a config file's own entries (exemptions, thresholds stay as written)."""
    out: dict[str, Any] = {k: dict(v) if isinstance(v, Mapping) else v for k, v in existing.items()}
    for policy, settings in derived.items():
        current = out.get(policy)
        out[policy] = {**(current if isinstance(current, dict) else {}), **settings}
    return out


def committed(stack: str) -> dict[str, Any]:
    """The stack's policies/config/<stack>.json as written, or {} when there is none."""
    path = CONFIG_DIR / f"{stack}.json"
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise StackConfigError(f"{path}: expected a JSON object of policy names to settings")
    return data


def render(stack: str) -> str:
    """What policies/config/<stack>.json must hold: its own entries plus what the stack file says."""
    from servestack.offline.plan import read_stack_config

    config = merged(committed(stack), pack_config(read_stack_config(stack)))
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def main() -> int:
    from servestack.offline.plan import stack_names

    CONFIG_DIR.mkdir(parents=True, exist_ok=True)
    for stack in stack_names():
        path = CONFIG_DIR / f"{stack}.json"
        path.write_text(render(stack))
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
