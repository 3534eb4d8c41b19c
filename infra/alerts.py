"""The serving alert rules, in Prometheus rule-file shape (`{"groups": [...]}`), for a PrometheusRule's spec.

A minimal set until the full rules land: no ready serving pod, and p95 time to first token over the SLO.
"""

from __future__ import annotations

from typing import Any


def alert_rules(ttft_slo_seconds: float) -> dict[str, Any]:
    return {"groups": [{
        "name": "servestack",
        "rules": [
            {"alert": "ServestackNoReadyPods",
             "expr": 'sum(kube_deployment_status_replicas_ready{deployment="servestack"}) < 1',
             "for": "5m", "labels": {"severity": "critical"},
             "annotations": {"summary": "No serving pod is ready"}},
            {"alert": "ServestackTimeToFirstTokenSlo",
             "expr": ("histogram_quantile(0.95, sum by (le) (rate(servestack_time_to_first_token_seconds_bucket[5m])))"
                      f" > {ttft_slo_seconds:g}"),
             "for": "10m", "labels": {"severity": "warning"},
             "annotations": {"summary": f"p95 time to first token above {ttft_slo_seconds:g} s"}},
        ],
    }]}
