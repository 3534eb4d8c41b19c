"""Shared fixtures: each stack's offline plan, made once per test session in its own process; the object
stores of tests/storage.py."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from infra.versions import TODAY_VARIABLE
from servestack.offline.plan import plan_in_subprocess
from tests.storage import azure_store, gcs_store, s3_store, store  # noqa: F401  (the emulated object stores)

# The stacks' Kubernetes versions are judged on a fixed day, so that no test ages out of a support window
# (the plans' subprocesses inherit it).
os.environ[TODAY_VARIABLE] = "2026-11-29"


@pytest.fixture(scope="session")
def stack_plan() -> Callable[[str], dict[str, Any]]:
    """`stack_plan("aws-dev")` returns that stack's plan; each stack is planned once per session."""
    plans: dict[str, dict[str, Any]] = {}

    def get(stack: str) -> dict[str, Any]:
        if stack not in plans:
            plans[stack] = plan_in_subprocess(stack)
        return plans[stack]

    return get
