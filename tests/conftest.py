"""Shared fixtures: each stack's offline plan, made once per test session in its own process."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from infra.offline.plan import plan_in_subprocess


@pytest.fixture(scope="session")
def stack_plan() -> Callable[[str], dict[str, Any]]:
    """`stack_plan("aws-dev")` returns that stack's plan; each stack is planned once per session."""
    plans: dict[str, dict[str, Any]] = {}

    def get(stack: str) -> dict[str, Any]:
        if stack not in plans:
            plans[stack] = plan_in_subprocess(stack)
        return plans[stack]

    return get
