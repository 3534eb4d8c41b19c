"""Every Kubernetes object of every stack validates against the schemas of the version it targets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from infra.offline.plan import stack_names
from infra.offline.schemas import kubernetes_objects, validate_plan


@pytest.mark.parametrize("stack", stack_names())
def test_kubernetes_objects_validate(stack: str, stack_plan: Callable[[str], dict[str, Any]]) -> None:
    plan = stack_plan(stack)
    version = str(plan["config"].get("servestack:kubernetesVersion", "1.35"))
    results = validate_plan(plan, version)
    assert len(results) == len(kubernetes_objects(plan)) >= 8
    assert [f"{r.kind}/{r.name}: {r.error}" for r in results if r.error] == []
    # Only custom resources may lack a schema.
    assert {r.kind for r in results if r.skipped} <= {"ServiceMonitor", "NodePool", "EC2NodeClass"}


def test_validation_catches_a_wrong_field() -> None:
    plan = {"resources": [{"urn": "urn:x", "type": "kubernetes:apps/v1:Deployment", "custom": True, "inputs": {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}},
                 "spec": {"containers": [{"name": "c", "image": "i", "readinessProbes": {}}]}}}}}]}
    (result,) = validate_plan(plan, "1.35")
    assert result.error is not None and "readinessProbes" in result.error
