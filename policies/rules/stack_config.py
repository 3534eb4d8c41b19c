"""The policy pack's config for one stack, derived from the stack's own config.

Policies cannot read stack config, so what they need from it travels as policy-pack config: the
GPU budget, and the enforcement level of the public-port allow-list (mandatory where the stack's
environment is prod). `pulumi preview --policy-pack policies --policy-pack-config
policies/config/<stack>.json` uses the committed files; `servestack check` derives the same from
the plan. Regenerate the files after changing a stack's environment or budget:

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


class StackConfigError(ValueError):
    pass


def pack_config(stack_config: Mapping[str, Any]) -> dict[str, Any]:
    """Policy-pack config from a stack's flat config ("servestack:environment" -> "prod", ...)."""
    environment = stack_config.get("servestack:environment", "dev")
    if environment not in ENVIRONMENTS:
        raise StackConfigError(f"servestack:environment: {environment!r} is not allowed; "
                               f"allowed: {', '.join(ENVIRONMENTS)}")
    config: dict[str, Any] = {
        "world-ingress-allowlist": {"enforcementLevel": "mandatory" if environment == "prod" else "advisory"},
    }
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


def render(stack: str) -> str:
    """The committed policies/config/<stack>.json for this stack file."""
    from infra.offline.plan import read_stack_config

    return json.dumps(pack_config(read_stack_config(stack)), indent=2, sort_keys=True) + "\n"


def main() -> int:
    from infra.offline.plan import stack_names

    CONFIG_DIR.mkdir(parents=True, exist_ok=True)
    for stack in stack_names():
        path = CONFIG_DIR / f"{stack}.json"
        path.write_text(render(stack))
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
