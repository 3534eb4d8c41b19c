"""Prometheus metrics, named like vLLM's (`vllm:x` -> `servestack_x`) and labelled with the model.

Each app gets its own registry, so several apps (as in the tests) never collide.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                    20.0, 40.0, 80.0, 160.0, 320.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(
        self,
        model_name: str,
        *,
        running: Callable[[], float],
        waiting: Callable[[], float],
        load_seconds: Callable[[], float],
    ) -> None:
        self.registry = CollectorRegistry()
        self.model_name = model_name
        labels = ["model_name"]
        r = self.registry

        def gauge(name: str, doc: str, read: Callable[[], float]) -> None:
            Gauge(name, doc, labels, registry=r).labels(model_name).set_function(read)

        gauge("servestack_num_requests_running", "Requests in the running batch.", running)
        gauge("servestack_num_requests_waiting", "Requests waiting for a batch slot.", waiting)
        gauge("servestack_model_load_seconds", "Seconds taken to load the model (0 until loaded).", load_seconds)

        def histogram(name: str, doc: str, buckets: tuple[float, ...] = _LATENCY_BUCKETS) -> Histogram:
            return Histogram(name, doc, labels, buckets=buckets, registry=r)

        self.ttft = histogram("servestack_time_to_first_token_seconds", "Time to first token.").labels(model_name)
        self.itl = histogram("servestack_inter_token_latency_seconds", "Time between output deltas.").labels(
            model_name)
        self.e2e = histogram("servestack_e2e_request_latency_seconds", "End-to-end request latency.").labels(
            model_name)
        self.queue = histogram("servestack_request_queue_time_seconds", "Time waiting for a batch slot.").labels(
            model_name)
        self.batch_size = histogram("servestack_batch_size", "Sequences per decode step.", _BATCH_BUCKETS).labels(
            model_name)
        self.prompt_tokens = Counter("servestack_prompt_tokens", "Prompt tokens processed.", labels,
                                     registry=r).labels(model_name)
        self.generation_tokens = Counter("servestack_generation_tokens", "Tokens generated.", labels,
                                         registry=r).labels(model_name)
        self._success = Counter("servestack_request_success", "Requests finished, by finish reason.",
                                [*labels, "finished_reason"], registry=r)
        self._rejected = Counter("servestack_requests_rejected", "Requests refused, by reason.",
                                 [*labels, "reason"], registry=r)

    def success(self, finish_reason: str) -> None:
        self._success.labels(self.model_name, finish_reason).inc()

    def rejected(self, reason: str) -> None:
        self._rejected.labels(self.model_name, reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
