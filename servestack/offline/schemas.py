"""Validate every Kubernetes object of a plan against real schemas.

Built-in kinds: kubernetes-validate ships the OpenAPI schemas of each Kubernetes release; strict mode also
rejects fields the schema does not know (a typo such as `readinessProbes` would otherwise pass silently).
Custom resources (Gateway API, Envoy Gateway, cert-manager, KEDA, Prometheus Operator, GKE): their
published CRD schemas, as the @kubernetes-models npm packages carry them (`validate_crds.mjs`, run with
Node.js on the packages `npm ci` installs). Those schemas check types, required fields, enums and ranges,
not unknown fields or the CRDs' CEL rules. A custom resource no package covers is reported as skipped.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate

NOT_OBJECTS = ("kubernetes:yaml", "kubernetes:helm", "kubernetes:kustomize")
ROOT = Path(__file__).resolve().parents[2]
CRD_VALIDATOR = Path(__file__).with_name("validate_crds.mjs")


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
    results: list[SchemaResult] = []
    custom: list[tuple[str, str, str, dict[str, Any]]] = []
    for urn, obj in kubernetes_objects(plan):
        kind = str(obj.get("kind", "?"))
        name = str((obj.get("metadata") or {}).get("name", urn.rsplit("::", 1)[-1]))
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            custom.append((urn, kind, name, obj))
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path)
            results.append(SchemaResult(urn, kind, name, f"{path or '(root)'}: {error.message}"))
        else:
            results.append(SchemaResult(urn, kind, name, None))
    verdicts = validate_custom_resources([obj for *_, obj in custom])
    for (urn, kind, name, _), verdict in zip(custom, verdicts, strict=True):
        skipped = verdict.get("skipped")
        results.append(SchemaResult(urn, kind, name, verdict.get("error"), skipped=bool(skipped)))
    return results


class CrdValidatorMissing(RuntimeError):
    """Node.js or the @kubernetes-models packages are not installed (`npm ci` installs them)."""


def validate_custom_resources(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One verdict per object from the published CRD schemas: {"error": None | str} or {"skipped": why}."""
    if not objects:
        return []
    node = shutil.which("node")
    if node is None or not (ROOT / "node_modules" / "@kubernetes-models").is_dir():
        raise CrdValidatorMissing("custom resources are validated with Node.js and the @kubernetes-models "
                                  "packages: install Node.js 20 and run `npm ci` in the repository")
    result = subprocess.run([node, str(CRD_VALIDATOR)], input=json.dumps(objects), capture_output=True,
                            text=True, cwd=ROOT, timeout=120, check=False)
    if result.returncode != 0:
        raise CrdValidatorMissing(f"the CRD schema check failed: {result.stderr.strip()[-2000:]}")
    verdicts: list[dict[str, Any]] = json.loads(result.stdout)
    return verdicts
