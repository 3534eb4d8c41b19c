"""The serving alert rules as code, in Prometheus rule-file shape (`{"groups": [...]}`): the spec of a
PrometheusRule, or a file for `promtool` (tests/infra/test_alerts.py checks them and runs their unit tests,
tests/infra/alerts/*.yaml).

They read the server's own metrics (serving/metrics.py, with the `namespace` and `pod` labels the Prometheus
Operator attaches to what a PodMonitor scrapes), kube-state-metrics (as kube-prometheus-stack installs it) and
NVIDIA's DCGM exporter. Every alert has a `severity` label (`critical`: act now; `warning`: within working
hours), a summary, a description with the figures, and a `runbook` annotation: where to look first. No
receivers are configured: the alerts show in Alertmanager and Grafana until the operator routes them (a pager
for `critical`) with an AlertmanagerConfig or the chart's alertmanager.config (infra/monitoring.py).

| alert | fires when |
|---|---|
| ServestackNoReadyPods | a Deployment of the namespace wants replicas and has none available, 5 min |
| ServestackHighErrorRatio | over 5% of the API's answers are 5xx, 5 min |
| ServestackTimeToFirstTokenOverSlo | p95 time to first token over the SLO, 10 min |
| ServestackQueueGrowingAtMaxReplicas | a track's autoscaler at its maximum and that track's queue growing, 10 min |
| ServestackPodPending | a pod Pending for 15 min (no GPU node: stockout, quota, taints) |
| ServestackRolloutStuck | a Deployment's new generation not observed or not rolled out on every replica, 30 min |
| ServestackContainerRestarting | a container restarted more than twice in 15 min |
| ServestackContainerOOMKilled | a container restarted after being OOMKilled |
| ServestackGpuXidError | a GPU reported a new XID error (driver or hardware fault), for 5 min |
"""

from __future__ import annotations

import re
from typing import Any

from infra.autoscaling import POD_SUFFIX

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")

ERROR_RATIO = 0.05  # of the API's answers being 5xx
# The API's answers: not the probes nor the scrapes (a request refused before routing, a 401 say, has handler "none").
API = 'handler!~"/health.*|/metrics"'
RESTARTS = 2  # restarts in 15 minutes beyond which a container is crash-looping
ROLLOUT_MINUTES = 30  # as long as Pulumi waits for a rollout (infra/serving.py's ROLLOUT_MINUTES)


def _alert(name: str, expr: str, wait: str, severity: str, summary: str, description: str,
           runbook: str) -> dict[str, Any]:
    return {"alert": name, "expr": expr, "for": wait, "labels": {"severity": severity},
            "annotations": {"summary": summary, "description": description, "runbook": runbook}}


def alert_rules(ttft_slo_seconds: float, *, namespace: str = "servestack") -> dict[str, Any]:
    """The rules for the serving namespace `namespace`, with `ttft_slo_seconds` the p95 time-to-first-token
    objective."""
    if not ttft_slo_seconds > 0:
        raise ValueError(f"ttft_slo_seconds must be a positive number of seconds (got {ttft_slo_seconds!r})")
    if not _DNS_LABEL.fullmatch(namespace):
        raise ValueError(f"namespace {namespace!r} is not a Kubernetes namespace name (lower-case DNS label)")
    ns = f'namespace="{namespace}"'
    kubectl = f"kubectl -n {namespace}"
    # Each serving HPA (KEDA's or the CPU one) is named after its Deployment (infra/autoscaling.py), and each
    # server pod after its Deployment too: both give a `deployment` label to join a track's series on.
    at_max = (f"max by (namespace, deployment) (label_replace(kube_horizontalpodautoscaler_status_current_replicas"
              f"{{{ns}}} >= kube_horizontalpodautoscaler_spec_max_replicas{{{ns}}}, "
              f'"deployment", "$1", "horizontalpodautoscaler", "(.+)"))')

    waiting = f"servestack_num_requests_waiting{{{ns}}}"

    def by_track(vector: str) -> str:
        return (f'sum by (namespace, deployment) (label_replace({vector}, "deployment", "$1", "pod", '
                f'"(.+){POD_SUFFIX}"))')

    serving = [
        _alert("ServestackNoReadyPods",
               f"kube_deployment_status_replicas_available{{{ns}}} == 0 "
               f"and on (namespace, deployment) kube_deployment_spec_replicas{{{ns}}} > 0",
               "5m", "critical",
               "{{ $labels.deployment }} has no available pod",
               "Deployment {{ $labels.namespace }}/{{ $labels.deployment }} wants replicas and none has been "
               "ready for 5 minutes: its requests fail.",
               f"{kubectl} get pods; {kubectl} describe deployment {{{{ $labels.deployment }}}}; "
               "the pods' events and logs say whether they wait for a GPU node, the model, or crash."),
        _alert("ServestackHighErrorRatio",
               f"sum by (namespace) (rate(servestack_http_requests_total{{{ns},{API},status=~\"5..\"}}[5m])) "
               f"/ sum by (namespace) (rate(servestack_http_requests_total{{{ns},{API}}}[5m])) > {ERROR_RATIO:g}",
               "5m", "critical",
               "{{ $value | humanizePercentage }} of the API's answers are server errors",
               f"More than {ERROR_RATIO:.0%} of the API's answers in {{{{ $labels.namespace }}}} have been 5xx for "
               "5 minutes (503: loading or draining; 504: the request timeout; 500: the engine).",
               f"The dashboard's requests panel by status; {kubectl} logs -l app.kubernetes.io/name=servestack "
               "| grep '\"status\": 5' for the request ids."),
        _alert("ServestackTimeToFirstTokenOverSlo",
               "histogram_quantile(0.95, sum by (namespace, le) (rate(servestack_time_to_first_token_seconds_bucket"
               f"{{{ns}}}[5m]))) > {ttft_slo_seconds:g}",
               "10m", "warning",
               f"p95 time to first token is {{{{ $value | humanizeDuration }}}}, over the {ttft_slo_seconds:g}s SLO",
               f"The 95th percentile of the time to first token in {{{{ $labels.namespace }}}} has been above "
               f"{ttft_slo_seconds:g}s for 10 minutes.",
               "The dashboard's waiting and batch-size panels: a long queue wants more replicas (is the autoscaler "
               "at its maximum?); a full batch with no queue wants a smaller max batch or a faster GPU."),
        _alert("ServestackQueueGrowingAtMaxReplicas",
               # Per track: a canary at its own maximum (often 1) says nothing about the stable queue.
               f"({at_max} and on (namespace, deployment) {by_track(waiting)} > 0) "
               f"and on (namespace, deployment) {by_track(f'deriv({waiting}[10m])')} > 0",
               "10m", "warning",
               "Requests keep queueing for {{ $labels.deployment }} with its autoscaler at its maximum",
               "The autoscaler of {{ $labels.namespace }}/{{ $labels.deployment }} is at its maximum replicas and "
               "that track's requests waiting for a batch slot have kept growing for 10 minutes: the load is "
               "beyond its capacity.",
               "Raise servestack:serving maxReplicas (the canary's: its weight) and the GPU pool's maxNodes, and "
               "the quota behind it, or shed load: clients' limits per minute (servestack:serving apiKeys)."),
        _alert("ServestackPodPending",
               f'max by (namespace, pod) (kube_pod_status_phase{{{ns},phase="Pending"}}) == 1',
               "15m", "warning",
               "Pod {{ $labels.pod }} has been Pending for 15 minutes",
               "{{ $labels.namespace }}/{{ $labels.pod }} has not been scheduled or started for 15 minutes: most "
               "often no GPU node can be had (a stockout in the zone, the GPU quota, the pool at its maximum).",
               f"{kubectl} describe pod {{{{ $labels.pod }}}} (FailedScheduling, and the cluster autoscaler's "
               "NotTriggerScaleUp events); the cloud's GPU quota and capacity in the region."),
        _alert("ServestackRolloutStuck",
               f"kube_deployment_status_observed_generation{{{ns}}} != kube_deployment_metadata_generation{{{ns}}} "
               f"or kube_deployment_spec_replicas{{{ns}}} != kube_deployment_status_replicas_updated{{{ns}}}",
               f"{ROLLOUT_MINUTES}m", "warning",
               "Rollout of {{ $labels.deployment }} is stuck",
               "Deployment {{ $labels.namespace }}/{{ $labels.deployment }} has not brought every replica to "
               f"its new template for {ROLLOUT_MINUTES} minutes (the old pods keep serving: maxUnavailable is 0).",
               f"{kubectl} rollout status deployment/{{{{ $labels.deployment }}}}; the new pods' events (a "
               f"GPU node, the image, the model's revision); {kubectl} rollout undo to go back."),
        _alert("ServestackContainerRestarting",
               f"increase(kube_pod_container_status_restarts_total{{{ns}}}[15m]) > {RESTARTS}",
               "0m", "warning",
               "{{ $labels.pod }}/{{ $labels.container }} keeps restarting",
               "Container {{ $labels.container }} of {{ $labels.namespace }}/{{ $labels.pod }} restarted "
               f"{{{{ $value | humanize }}}} times in 15 minutes (more than {RESTARTS}).",
               f"{kubectl} logs {{{{ $labels.pod }}}} -c {{{{ $labels.container }}}} --previous: the server "
               "exits 1 when its engine dies and 2 on bad settings or a model that is not the configured one."),
        _alert("ServestackContainerOOMKilled",
               f'max by (namespace, pod, container) (kube_pod_container_status_last_terminated_reason{{{ns},'
               f'reason="OOMKilled"}}) == 1 and on (namespace, pod, container) '
               f"increase(kube_pod_container_status_restarts_total{{{ns}}}[15m]) > 0",
               "0m", "warning",
               "{{ $labels.pod }}/{{ $labels.container }} was OOMKilled",
               "Container {{ $labels.container }} of {{ $labels.namespace }}/{{ $labels.pod }} ran out of its "
               "memory limit and was killed in the last 15 minutes.",
               "Raise servestack:serving memory, or lower the max batch size and max tokens (the KV cache "
               "grows with both)."),
    ]
    gpu = [
        _alert("ServestackGpuXidError",
               # The gauge holds the last XID until the exporter restarts: alert on a change to a non-zero
               # value, or on a series that starts non-zero (an XID before the exporter's first scrape).
               "max by (Hostname, gpu, UUID) ((DCGM_FI_DEV_XID_ERRORS > 0 and changes(DCGM_FI_DEV_XID_ERRORS[5m]) > 0) "
               "or (DCGM_FI_DEV_XID_ERRORS > 0 unless DCGM_FI_DEV_XID_ERRORS offset 5m))",
               "0m", "critical",
               "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} reported XID error {{ $value }}",
               "The NVIDIA driver reported XID {{ $value }} on GPU {{ $labels.gpu }} ({{ $labels.UUID }}) of "
               "node {{ $labels.Hostname }}: a driver, memory (ECC) or hardware fault; the pods on it may "
               "fail or hang.",
               "Look the XID up in NVIDIA's XID catalogue (48, 63, 64, 74, 79, 94, 95: drain the node and "
               "replace it: kubectl drain {{ $labels.Hostname }} --ignore-daemonsets)."),
    ]
    return {"groups": [{"name": "servestack", "rules": serving}, {"name": "servestack-gpu", "rules": gpu}]}
