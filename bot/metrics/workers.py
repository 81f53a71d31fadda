"""Metrics only workers see (GitHub API calls, their own CPU and memory), shared with `/metrics` through Redis.

Workers are separate processes, often on other machines; the web process reads what they wrote at
scrape time. Counters are Redis hash increments, so nothing is lost when a worker restarts.
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
from redis import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)
GITHUB_CALLS = "nofx:metrics:github_calls"  # hash "<method> <status>" -> count
RATE_LIMIT = "nofx:metrics:github_rate_limit"  # hash "remaining", "limit", "reset"
QUEUE_WAIT = "nofx:metrics:queue_wait"  # hash "<queue> sum" -> seconds, "<queue> count" -> jobs started
WORKERS = "nofx:metrics:worker:"  # one hash per worker, expiring when it stops reporting
WORKER_TTL_S = 60


class GitHubCallRecorder:
    """The GitHub client's `on_response` hook: counts every call by status, keeps the latest rate limit."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def __call__(self, method: str, status: int, headers: Mapping[str, str]) -> None:
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.hincrby(GITHUB_CALLS, f"{method.upper()} {status}", 1)
                remaining = headers.get("x-ratelimit-remaining")
                if remaining is not None and remaining.isdigit():
                    pipe.hset(
                        RATE_LIMIT,
                        mapping={"remaining": remaining, "limit": headers.get("x-ratelimit-limit") or "0"},
                    )
                pipe.execute()
        except RedisError as exc:  # metrics must never break a GitHub call
            log.debug("github call not counted: %s", exc)


def record_queue_wait(redis: Redis, queue: str, seconds: float) -> None:
    """How long a job waited in its queue before a worker started it (workers call this per job)."""
    try:
        with redis.pipeline(transaction=False) as pipe:
            pipe.hincrbyfloat(QUEUE_WAIT, f"{queue} sum", max(seconds, 0.0))
            pipe.hincrby(QUEUE_WAIT, f"{queue} count", 1)
            pipe.execute()
    except RedisError as exc:  # metrics must never break a job
        log.debug("queue wait not recorded: %s", exc)


def report_usage(redis: Redis, name: str | None = None) -> None:
    """A worker's CPU seconds and peak memory, refreshed by its maintenance thread."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # gates and git run as child processes
    key = WORKERS + (name or f"{socket.gethostname()}:{os.getpid()}")
    cpu = usage.ru_utime + usage.ru_stime + children.ru_utime + children.ru_stime
    with redis.pipeline(transaction=False) as pipe:
        pipe.hset(
            key, mapping={"cpu_seconds": f"{cpu:.3f}", "max_rss_bytes": usage.ru_maxrss * 1024, "at": time.time()}
        )
        pipe.expire(key, WORKER_TTL_S)
        pipe.execute()


class WorkerMetrics(Collector):
    """Reads what the workers reported; registered on the web app's registry."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def collect(self) -> Iterator[Metric]:
        try:
            calls = self.redis.hgetall(GITHUB_CALLS)
            limit = self.redis.hgetall(RATE_LIMIT)
            waits = self.redis.hgetall(QUEUE_WAIT)
            workers = {key: self.redis.hgetall(key) for key in self.redis.scan_iter(f"{WORKERS}*", count=100)}
        except RedisError as exc:  # a scrape must not fail because the queue is down; /readyz says so
            log.warning("worker metrics unavailable: %s", type(exc).__name__)
            return
        github = CounterMetricFamily(
            "nofx_github_api_calls", "GitHub API calls made by workers.", labels=["method", "status"]
        )
        for field, count in sorted(calls.items()):
            method, _, status = _text(field).partition(" ")
            github.add_metric([method, status], int(count))
        yield github
        remaining = GaugeMetricFamily(
            "nofx_github_rate_limit_remaining", "Requests left in the current rate-limit window."
        )
        if b"remaining" in limit:
            remaining.add_metric([], int(limit[b"remaining"]))
        yield remaining
        cpu = CounterMetricFamily(
            "nofx_worker_cpu_seconds", "CPU time of each live worker and its children.", labels=["worker"]
        )
        memory = GaugeMetricFamily(
            "nofx_worker_max_rss_bytes", "Peak resident memory of each live worker.", labels=["worker"]
        )
        for key, values in sorted(workers.items()):
            name = key.decode().removeprefix(WORKERS)
            cpu.add_metric([name], float(values.get(b"cpu_seconds", 0)))
            memory.add_metric([name], float(values.get(b"max_rss_bytes", 0)))
        yield cpu
        yield memory
        yield _queue_waits(waits)


def _text(value: bytes | str) -> str:
    """A Redis hash field as text (the queue's client returns bytes; redis-py types it as either)."""
    return value.decode() if isinstance(value, bytes) else value


def _queue_waits(values: Mapping[bytes | str, bytes | str]) -> SummaryMetricFamily:
    summary = SummaryMetricFamily(
        "nofx_queue_wait_seconds", "Time jobs waited in each queue before a worker started them.", labels=["queue"]
    )
    totals: dict[str, dict[str, float]] = {}
    for field, value in values.items():
        queue, _, kind = _text(field).rpartition(" ")
        totals.setdefault(queue, {})[kind] = float(value)
    for queue, total in sorted(totals.items()):
        summary.add_metric([queue], count_value=int(total.get("count", 0)), sum_value=total.get("sum", 0.0))
    return summary
