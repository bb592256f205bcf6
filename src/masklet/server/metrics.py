"""Prometheus metrics of one app (its own registry: no process-global state)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)


class Metrics:
    """Request counts and latencies, model calls, cache bytes and open sessions."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes and friends
        self.requests = Counter(
            "masklet_requests_total", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "masklet_request_duration_seconds",
            "HTTP request latency",
            ["route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.model_seconds = Histogram(
            "masklet_model_call_seconds", "time in model calls", ["device"], registry=self.registry
        )
        self.cache_bytes = Gauge("masklet_image_cache_bytes", "bytes held by the image cache", registry=self.registry)
        self.sessions = Gauge("masklet_video_sessions", "open video sessions", registry=self.registry)
        self.session_bytes = Gauge(
            "masklet_session_bytes", "bytes of tensors held by open sessions", registry=self.registry
        )
        self.model_queue = Gauge(
            "masklet_model_calls_pending", "model calls queued or running", ["device"], registry=self.registry
        )
        self.prompt_batch = Histogram(
            "masklet_prompt_batch_size",
            "prompt requests decoded per model call (the prompt batcher)",
            ["model"],
            registry=self.registry,
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64),
        )
        self.batched_calls = Counter(
            "masklet_prompt_batched_calls",
            "model calls that decoded more than one prompt request",
            ["model"],
            registry=self.registry,
        )
        self.batch_wait = Histogram(
            "masklet_prompt_batch_wait_seconds",
            "time a prompt batch waited for more requests (only with --batch-window-ms > 0)",
            ["model"],
            registry=self.registry,
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.decoder_calls = Counter(
            "masklet_prompt_decoder_calls",
            "mask-decoder calls made for prompt requests (a batch of requests may share one)",
            ["model"],
            registry=self.registry,
        )
        self.decoder_rows = Histogram(
            "masklet_prompt_decoder_rows",
            "objects (decoder batch rows) per mask-decoder call of the prompt batcher",
            ["model"],
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one finished HTTP request."""
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
