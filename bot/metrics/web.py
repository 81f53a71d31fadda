"""Prometheus metrics of the web process, on a registry owned by the app (no import-time globals)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """What operators graph: deliveries by event and outcome, intake latency, queue depth."""

    def __init__(
        self, queue_depth: Callable[[], dict[str, int]], queue_wait: Callable[[], dict[str, float]] = dict
    ) -> None:
        self.registry = CollectorRegistry()
        self.deliveries = Counter(
            "nofx_webhook_deliveries",
            "Webhook deliveries answered, by event and outcome.",
            ["event", "outcome"],
            registry=self.registry,
        )
        self.intake_seconds = Histogram(
            "nofx_webhook_intake_seconds",
            "Time from request start to the webhook answer.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.intake_batch = Histogram(
            "nofx_webhook_intake_batch_deliveries",
            "Deliveries recorded per database transaction (intake's group commit).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.registry.register(_QueueDepth(queue_depth, queue_wait))
        self._delivered: dict[tuple[str, str], Counter] = {}

    def delivered(self, event: str, outcome: str) -> None:
        """Count one answered delivery; the caller keeps the labels' values few. Each labelled counter is kept:
        finding it by `labels()` cost more than the count itself, once per delivery."""
        counter = self._delivered.get((event, outcome))
        if counter is None:
            counter = self._delivered[(event, outcome)] = self.deliveries.labels(event=event, outcome=outcome)
        counter.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _QueueDepth(Collector):
    """Read the queue length at scrape time, so the number is never stale."""

    def __init__(self, depth: Callable[[], dict[str, int]], wait: Callable[[], dict[str, float]]) -> None:
        self._depth = depth
        self._wait = wait

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily("nofx_queue_depth", "Jobs waiting in each RQ queue.", labels=["queue"])
        oldest = GaugeMetricFamily(
            "nofx_queue_oldest_wait_seconds",
            "How long the oldest waiting job of each queue has waited.",
            labels=["queue"],
        )
        try:
            depths, waits = self._depth(), self._wait()
        except Exception:  # a scrape must not fail because the queue is down; /readyz reports that
            depths, waits = {}, {}
        for name, depth in depths.items():
            gauge.add_metric([name], depth)
        for name, seconds in waits.items():
            oldest.add_metric([name], seconds)
        yield gauge
        yield oldest
