"""Helpers for reading offline plans in tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def resources(plan: Mapping[str, Any], type_token: str) -> list[dict[str, Any]]:
    return [r for r in plan["resources"] if r["type"] == type_token]


def one(plan: Mapping[str, Any], type_token: str, name: str | None = None) -> dict[str, Any]:
    found = [r for r in resources(plan, type_token) if name is None or r["name"] == name]
    assert len(found) == 1, f"expected one {type_token} {name or ''}, found {[r['name'] for r in found]}"
    return found[0]


def inputs(plan: Mapping[str, Any], type_token: str, name: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = one(plan, type_token, name)["inputs"]
    return found
