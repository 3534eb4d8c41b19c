"""Where the stack's Prometheus answers queries (the monitoring stack's module owns this; autoscaling reads it).

`prometheus-operated` is the Service the Prometheus Operator makes beside every Prometheus it runs, whatever
the Helm release is called.
"""

PROMETHEUS_URL = "http://prometheus-operated.monitoring.svc:9090"
