"""Metrics the dashboard and the alerts read from exporters other than the server, as their projects document
them: what a query may name besides the server's own `servestack_*` metrics."""

from __future__ import annotations

# kube-state-metrics (as kube-prometheus-stack installs it), from its docs/metrics/workload/:
# deployment-metrics.md, horizontalpodautoscaler-metrics.md and pod-metrics.md (kubernetes/kube-state-metrics).
KUBE_STATE_METRICS = frozenset({
    "kube_deployment_status_replicas",
    "kube_deployment_status_replicas_ready",
    "kube_deployment_status_replicas_available",
    "kube_deployment_status_replicas_unavailable",
    "kube_deployment_status_replicas_updated",
    "kube_deployment_status_observed_generation",
    "kube_deployment_metadata_generation",
    "kube_deployment_spec_replicas",
    "kube_horizontalpodautoscaler_spec_max_replicas",
    "kube_horizontalpodautoscaler_spec_min_replicas",
    "kube_horizontalpodautoscaler_status_current_replicas",
    "kube_horizontalpodautoscaler_status_desired_replicas",
    "kube_pod_status_phase",
    "kube_pod_status_ready",
    "kube_pod_container_status_restarts_total",
    "kube_pod_container_status_last_terminated_reason",
})

# NVIDIA's DCGM exporter, its default counters: etc/default-counters.csv (NVIDIA/dcgm-exporter); the same
# file the GPU operator's and the Helm chart's exporter load unless told otherwise.
DCGM_DEFAULT_COUNTERS = frozenset({
    "DCGM_FI_DEV_SM_CLOCK",
    "DCGM_FI_DEV_MEM_CLOCK",
    "DCGM_FI_DEV_MEMORY_TEMP",
    "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
    "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_MEM_COPY_UTIL",
    "DCGM_FI_DEV_ENC_UTIL",
    "DCGM_FI_DEV_DEC_UTIL",
    "DCGM_FI_DEV_XID_ERRORS",
    "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_DEV_FB_USED",
})


def documented() -> frozenset[str]:
    return KUBE_STATE_METRICS | DCGM_DEFAULT_COUNTERS
