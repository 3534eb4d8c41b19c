"""Realistic outputs for mocked resources and calls, one module per provider package.

Each module here exports `RESOURCES` (type token -> function returning the resource's id and the outputs
the cloud would add to its inputs: ARNs, endpoints, generated names) and `CALLS` (function token ->
function returning the invoke's result), so that whatever depends on them gets plausible values.
Modules are found by name: a new provider's fakes need only a new module.
"""

from __future__ import annotations

import hashlib
import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pulumi.runtime.mocks import MockCallArgs, MockResourceArgs


@dataclass(frozen=True)
class FakeContext:
    """What fakes may know: the stack and its flat config (`"aws:region" -> value`)."""

    stack: str
    config: Mapping[str, Any]

    def hex(self, *parts: str, length: int = 17) -> str:
        """A stable hexadecimal suffix, like the ones clouds put in ids (`vpc-0a1b...`)."""
        digest = hashlib.sha256("/".join((self.stack, *parts)).encode()).hexdigest()
        return digest[:length]


ResourceFake = Callable[[MockResourceArgs, FakeContext], tuple[str, dict[str, Any]]]
CallFake = Callable[[MockCallArgs, FakeContext], dict[str, Any]]


def load() -> tuple[dict[str, ResourceFake], dict[str, CallFake]]:
    resources: dict[str, ResourceFake] = {}
    calls: dict[str, CallFake] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        resources.update(getattr(module, "RESOURCES", {}))
        calls.update(getattr(module, "CALLS", {}))
    return resources, calls
