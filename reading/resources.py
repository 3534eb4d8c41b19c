"""One resource of a plan or a preview, as its readers see it: inputs as plain values, unknowns as `Unknown`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reading.values import dig


@dataclass
class Resource:
    """One resource as a rule sees it: inputs as plain values, unknowns as `Unknown`."""

    type: str
    urn: str
    name: str
    props: dict[str, Any]
    parent: str | None = None
    dependencies: tuple[str, ...] = ()
    property_dependencies: Mapping[str, Sequence[str]] = field(default_factory=dict)
    provider: str | None = None  # the URN of the provider resource that manages it

    @property
    def namespace(self) -> str | None:
        """A Kubernetes object's namespace, where it sets one."""
        ns = dig(self.props, "metadata", "namespace")
        return ns if isinstance(ns, str) else None
