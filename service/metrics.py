"""Prometheus metrics in the service's own registry (so tests and several apps in one process never collide).

Request latency by route template and status; per-stage latency (decode, queue, inference, search); the
inference batch-size histogram (batches above 1 prove cross-request batching); queue depth; windows processed;
failures by error code; and the model's identity as an info metric. One uvicorn worker per container: several
workers would each keep their own registry and ``/metrics`` would show one of them at random.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """All metric objects of one app instance."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.request_latency = Histogram(
            "acula_request_duration_seconds",
            "HTTP request latency by route template and status code.",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stage_latency = Histogram(
            "acula_stage_duration_seconds",
            "Latency of one pipeline stage: decode, queue, inference, probes, search.",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "acula_batch_size", "Windows per encoder call.", buckets=BATCH_BUCKETS, registry=r
        )
        self.queue_depth = Gauge("acula_queue_depth", "Requests inside the batcher.", registry=r)
        self.windows = Counter("acula_windows_total", "Windows run through the encoder.", registry=r)
        self.failures = Counter(
            "acula_failures_total", "Failed requests by error code.", ["code"], registry=r
        )
        self.in_flight = Gauge("acula_requests_in_flight", "HTTP requests being served.", registry=r)
        self.model_info = Info("acula_model", "Served model bundle and execution provider.", registry=r)

    def on_batch(self, size: int) -> None:
        self.batch_size.observe(size)
        self.windows.inc(size)

    def render(self) -> bytes:
        return generate_latest(self.registry)
