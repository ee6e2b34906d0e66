"""The service's Prometheus metrics, in a registry of their own (never the process-global one)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

STAGES = ("encode", "model", "search", "queue", "total")
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServiceMetrics:
    def __init__(self, queue_depth: Callable[[], float]):
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("lvm_requests", "HTTP requests answered, by route and status", ["route", "status"],
                                registry=self.registry)
        self.latency = Histogram("lvm_stage_latency_seconds", "Seconds per request stage", ["route", "stage"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("lvm_batch_size", "Requests per batched call", ["kind"], buckets=BATCH_BUCKETS,
                                    registry=self.registry)
        self.queue_depth = Gauge("lvm_queue_depth", "Requests waiting for a batch", registry=self.registry)
        self.queue_depth.set_function(queue_depth)
        self.in_flight = Gauge("lvm_in_flight_requests", "HTTP requests being answered", registry=self.registry)
        self.model = Info("lvm_model", "The model and bank served", registry=self.registry)

    def observe_batch(self, kind: str, size: int, seconds: float) -> None:
        self.batch_size.labels(kind).observe(size)

    def observe_latency(self, route: str, latency_ms: dict[str, float]) -> None:
        for stage in STAGES:
            if stage in latency_ms:
                self.latency.labels(route, stage).observe(latency_ms[stage] / 1000)

    def text(self) -> bytes:
        return generate_latest(self.registry)
