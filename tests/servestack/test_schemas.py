"""Every Kubernetes object of every stack validates against the schemas of the version it targets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from servestack.offline.plan import stack_names
from servestack.offline.schemas import kubernetes_objects, validate_plan


@pytest.mark.parametrize("stack", stack_names())
def test_kubernetes_objects_validate(stack: str, stack_plan: Callable[[str], dict[str, Any]]) -> None:
    plan = stack_plan(stack)
    version = str(plan["config"].get("servestack:kubernetesVersion", "1.35"))
    results = validate_plan(plan, version)
    assert len(results) == len(kubernetes_objects(plan)) >= 8
    assert [f"{r.kind}/{r.name}: {r.error}" for r in results if r.error] == []
    # Every custom resource the stacks declare has its published schema.
    assert [r.kind for r in results if r.skipped] == []


def test_validation_catches_a_wrong_field() -> None:
    plan = {"resources": [{"urn": "urn:x", "type": "kubernetes:apps/v1:Deployment", "custom": True, "inputs": {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}},
                 "spec": {"containers": [{"name": "c", "image": "i", "readinessProbes": {}}]}}}}}]}
    (result,) = validate_plan(plan, "1.35")
    assert result.error is not None and "readinessProbes" in result.error


def _custom(kind: str, api_version: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"urn": f"urn:{kind}", "type": f"kubernetes:{api_version}:{kind}", "custom": True,
            "inputs": {"apiVersion": api_version, "kind": kind, "metadata": {"name": "x", "namespace": "s"},
                       "spec": spec}}


def test_custom_resources_are_checked_against_their_published_crd_schemas() -> None:
    plan = {"resources": [
        _custom("HTTPRoute", "gateway.networking.k8s.io/v1", {"parentRefs": [{"name": "g"}], "rules": [
            {"backendRefs": [{"name": "servestack", "port": 80, "weight": -1}]}]}),
        _custom("ServiceMonitor", "monitoring.coreos.com/v1", {"selector": {}, "endpoints": [{"port": "metrics"}]}),
        _custom("Widget", "example.com/v1", {}),
    ]}
    route, monitor, widget = validate_plan(plan, "1.35")
    assert route.error is not None and "weight must be >= 0" in route.error
    assert monitor.error is None and not monitor.skipped
    assert widget.skipped and widget.error is None


@pytest.mark.parametrize(("kind", "api_version", "spec", "expected"), [
    ("Gateway", "gateway.networking.k8s.io/v1",
     {"gatewayClassName": "servestack", "listeners": [{"name": "https", "port": "443", "protocol": "HTTPS"}]},
     "port"),
    ("EnvoyProxy", "gateway.envoyproxy.io/v1alpha1",
     {"provider": {"type": "Kubernetes", "kubernetes": {"envoyService": {"type": "Public"}}}}, "type"),
    ("BackendTrafficPolicy", "gateway.envoyproxy.io/v1alpha1",
     {"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "servestack"}],
      "retry": {"retryOn": {"triggers": ["whenever"]}}}, "triggers"),
    ("Certificate", "cert-manager.io/v1",
     {"secretName": "servestack-tls", "dnsNames": ["api.example.com"], "issuerRef": {"name": "acme"},
      "privateKey": {"algorithm": "DSA"}}, "algorithm"),
    ("ClusterIssuer", "cert-manager.io/v1", {"acme": {"server": "https://acme", "solvers": []}}, "privateKeySecretRef"),
])
def test_the_gateway_and_certificate_objects_are_checked_too(kind: str, api_version: str, spec: dict[str, Any],
                                                            expected: str) -> None:
    (result,) = validate_plan({"resources": [_custom(kind, api_version, spec)]}, "1.35")
    assert not result.skipped
    assert result.error is not None and expected in result.error, result.error


@pytest.mark.parametrize(("kind", "spec", "expected"), [
    ("PodMonitor", {"selector": {}, "podMetricsEndpoints": [{"port": 9090}]}, "port"),
    ("ServiceMonitor", {"selector": {}, "endpoints": [{"port": "metrics", "scheme": "ftp"}]}, "scheme"),
    ("PrometheusRule", {"groups": [{"rules": [{"alert": "X", "expr": "up == 0"}]}]}, "name"),
])
def test_the_monitoring_objects_are_checked_too(kind: str, spec: dict[str, Any], expected: str) -> None:
    (result,) = validate_plan({"resources": [_custom(kind, "monitoring.coreos.com/v1", spec)]}, "1.35")
    assert not result.skipped
    assert result.error is not None and expected in result.error, result.error
