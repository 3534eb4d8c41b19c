"""Validate every Kubernetes object of a plan against the real OpenAPI schemas of the targeted version.

kubernetes-validate ships the schemas of each Kubernetes release; strict mode also rejects fields the
schema does not know (a typo such as `readinessProbes` would otherwise pass silently). Custom resources
(ServiceMonitor, ...) have no schema there and are reported as skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kubernetes_validate

NOT_OBJECTS = ("kubernetes:yaml", "kubernetes:helm", "kubernetes:kustomize")


@dataclass(frozen=True)
class SchemaResult:
    urn: str
    kind: str
    name: str
    error: str | None  # None when valid
    skipped: bool = False


def kubernetes_objects(plan: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(URN, object) for each Kubernetes object the plan declares."""
    found = []
    for resource in plan["resources"]:
        token = resource["type"]
        if not token.startswith("kubernetes:") or token.startswith(NOT_OBJECTS) or not resource["custom"]:
            continue
        found.append((resource["urn"], dict(resource["inputs"])))
    return found


def validate_plan(plan: Mapping[str, Any], kubernetes_version: str) -> list[SchemaResult]:
    version = f"{kubernetes_version}.0"
    results = []
    for urn, obj in kubernetes_objects(plan):
        kind = str(obj.get("kind", "?"))
        name = str((obj.get("metadata") or {}).get("name", urn.rsplit("::", 1)[-1]))
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            results.append(SchemaResult(urn, kind, name, None, skipped=True))
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path)
            results.append(SchemaResult(urn, kind, name, f"{path or '(root)'}: {error.message}"))
        else:
            results.append(SchemaResult(urn, kind, name, None))
    return results
