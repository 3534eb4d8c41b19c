"""Realistic outputs for mocked resources and calls, one module per provider package.

Each module here exports `RESOURCES` (type token -> function returning the resource's id and the outputs
the cloud would add to its inputs: ARNs, endpoints, generated names) and `CALLS` (function token ->
function returning the invoke's result), so that whatever depends on them gets plausible values.
Modules are found by name: a new provider's fakes need only a new module.
"""

from __future__ import annotations

import hashlib
import importlib
import ipaddress
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pulumi.runtime.mocks import MockCallArgs, MockResourceArgs


@dataclass(frozen=True)
class FakeContext:
    """What fakes may know: the stack, its flat config (`"aws:region" -> value`), and which life of the
    stack the plan stands for: after `pulumi destroy`, the next `pulumi up` gets new ids, new
    auto-names and new random values, so `life` 1 plans the stack created again."""

    stack: str
    config: Mapping[str, Any]
    life: int = 0
    # What the fake cloud remembers between calls: a cluster's version for its add-ons, the addresses
    # its DNS names resolve to.
    memory: dict[str, Any] = field(default_factory=dict)
    dns: dict[str, str] = field(default_factory=dict)

    def resolve(self, host: str) -> str | None:
        """The address a host name resolves to from the deployer's machine, as the fakes registered it;
        an address stays itself; None for a name no fake registered."""
        try:
            return str(ipaddress.ip_address(host))
        except ValueError:
            return self.dns.get(host.lower())

    def register(self, host: str, address: str) -> None:
        """Make a host name resolve (DNS names are case-insensitive)."""
        self.dns[host.lower()] = address

    def hex(self, *parts: str, length: int = 17) -> str:
        """A hexadecimal suffix, like the ones clouds put in ids (`vpc-0a1b...`): stable within one life
        of the stack, different in the next."""
        lives = (f"life-{self.life}",) if self.life else ()
        digest = hashlib.sha256("/".join((self.stack, *lives, *parts)).encode()).hexdigest()
        return digest[:length]


class CloudError(Exception):
    """What the cloud's API would answer to a request it refuses, raised by a fake."""


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
