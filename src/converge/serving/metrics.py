"""The server's Prometheus metrics (prometheus_client), in a registry of its own per server."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Latency buckets from 0.5 ms (a batched digit) to 10 s; batch sizes in powers of two.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("converge_requests", "HTTP predict requests by model and status code",
                                ["model", "status"], registry=self.registry)
        self.latency = Histogram("converge_request_seconds", "predict request latency, arrival to answer",
                                 ["model"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_rows = Histogram("converge_batch_rows", "rows per onnxruntime call", ["model"],
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.queue_depth = Gauge("converge_queue_depth", "requests waiting for a batch", ["model"],
                                 registry=self.registry)
        self.model_info = Info("converge_model", "served models", ["model"], registry=self.registry)
        self.drift = Gauge("converge_drift_psi", "population stability index of a statistic over the drift window "
                           "against the bundle's reference (> 0.25: drift)", ["model", "statistic"],
                           registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
