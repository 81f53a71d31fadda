"""Metrics only workers see (GitHub API calls, their own CPU and memory), shared with `/metrics` through the queue.

Workers are separate processes, often on other machines; the web process reads what they wrote at
scrape time. Counters are hash increments on the queue's server (`bot.queue.SharedState`), so nothing is lost
when a worker restarts.
"""

from __future__ import annotations

import logging
import os
import resource
import socket
import time
from collections.abc import Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector

from bot.queue import QueueUnavailable, SharedState

log = logging.getLogger(__name__)
GITHUB_CALLS = "nofx:metrics:github_calls"  # hash "<method> <status>" -> count
RATE_LIMIT = "nofx:metrics:github_rate_limit"  # hash "remaining", "limit", "reset"
QUEUE_WAIT = "nofx:metrics:queue_wait"  # hash "<queue> sum" -> seconds, "<queue> count" -> jobs started
WORKERS = "nofx:metrics:worker:"  # one hash per worker, expiring when it stops reporting
WORKER_TTL_S = 60


class GitHubCallRecorder:
    """The GitHub client's `on_response` hook: counts every call by status, keeps the latest rate limit."""

    def __init__(self, shared: SharedState) -> None:
        self.shared = shared

    def __call__(self, method: str, status: int, headers: Mapping[str, str]) -> None:
        remaining = headers.get("x-ratelimit-remaining") or ""
        limit: dict[str, str | float] = {"remaining": remaining, "limit": headers.get("x-ratelimit-limit") or "0"}
        try:
            self.shared.update_hashes(
                add={GITHUB_CALLS: {f"{method.upper()} {status}": 1}},
                put={RATE_LIMIT: limit} if remaining.isdigit() else None,
            )
        except QueueUnavailable as exc:  # metrics must never break a GitHub call
            log.debug("github call not counted: %s", exc)


def record_queue_wait(shared: SharedState, queue: str, seconds: float) -> None:
    """How long a job waited in its queue before a worker started it (workers call this per job)."""
    try:
        shared.update_hashes(add={QUEUE_WAIT: {f"{queue} sum": max(seconds, 0.0), f"{queue} count": 1}})
    except QueueUnavailable as exc:  # metrics must never break a job
        log.debug("queue wait not recorded: %s", exc)


def report_usage(shared: SharedState, name: str | None = None) -> None:
    """A worker's CPU seconds and peak memory, refreshed by its maintenance thread."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # gates and git run as child processes
    key = WORKERS + (name or f"{socket.gethostname()}:{os.getpid()}")
    cpu = usage.ru_utime + usage.ru_stime + children.ru_utime + children.ru_stime
    values: dict[str, str | float] = {
        "cpu_seconds": f"{cpu:.3f}",
        "max_rss_bytes": usage.ru_maxrss * 1024,
        "at": time.time(),
    }
    shared.update_hashes(put={key: values}, ttl_s=WORKER_TTL_S)


class WorkerMetrics(Collector):
    """Reads what the workers reported; registered on the web app's registry."""

    def __init__(self, shared: SharedState) -> None:
        self.shared = shared

    def collect(self) -> Iterator[Metric]:
        try:
            calls = self.shared.hash(GITHUB_CALLS)
            limit = self.shared.hash(RATE_LIMIT)
            waits = self.shared.hash(QUEUE_WAIT)
            workers = self.shared.hashes_under(WORKERS)
        except QueueUnavailable as exc:  # a scrape must not fail because the queue is down; /readyz says so
            log.warning("worker metrics unavailable: %s", exc)
            return
        github = CounterMetricFamily(
            "nofx_github_api_calls", "GitHub API calls made by workers.", labels=["method", "status"]
        )
        for field, count in sorted(calls.items()):
            method, _, status = field.partition(" ")
            github.add_metric([method, status], int(count))
        yield github
        remaining = GaugeMetricFamily(
            "nofx_github_rate_limit_remaining", "Requests left in the current rate-limit window."
        )
        if "remaining" in limit:
            remaining.add_metric([], int(limit["remaining"]))
        yield remaining
        cpu = CounterMetricFamily(
            "nofx_worker_cpu_seconds", "CPU time of each live worker and its children.", labels=["worker"]
        )
        memory = GaugeMetricFamily(
            "nofx_worker_max_rss_bytes", "Peak resident memory of each live worker.", labels=["worker"]
        )
        for name, values in sorted(workers.items()):
            cpu.add_metric([name], float(values.get("cpu_seconds", 0)))
            memory.add_metric([name], float(values.get("max_rss_bytes", 0)))
        yield cpu
        yield memory
        yield _queue_waits(waits)


def _queue_waits(values: Mapping[str, str]) -> SummaryMetricFamily:
    summary = SummaryMetricFamily(
        "nofx_queue_wait_seconds", "Time jobs waited in each queue before a worker started them.", labels=["queue"]
    )
    totals: dict[str, dict[str, float]] = {}
    for field, value in values.items():
        queue, _, kind = field.rpartition(" ")
        totals.setdefault(queue, {})[kind] = float(value)
    for queue, total in sorted(totals.items()):
        summary.add_metric([queue], count_value=int(total.get("count", 0)), sum_value=total.get("sum", 0.0))
    return summary
