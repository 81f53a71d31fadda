"""Run metrics read from the database at scrape time: outcomes, approvals, LLM use, step durations.

The database is the source of truth, so every web process reports the same numbers and nothing is
lost on restart. Each scrape stays cheap: counts go through indexed columns, LLM usage is summed
incrementally (only `llm.call` events newer than the last scrape are read), and step durations
cover only the steps of runs created within `window` (found through the index on `run.created_at`).
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import timedelta

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString as _untyped_float_to_go_string
from sqlalchemy import func
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import col, select

from bot.models import Run, RunEvent, RunStatus, Step, utcnow
from bot.store import Store

log = logging.getLogger(__name__)
DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
APPROVAL_EVENTS = {"step.waiting": "requested", "step.approved": "granted", "step.rejected": "rejected"}
LLM_EVENT = "llm.call"
STARTED_EVENT = "step.started"  # carries the step's queue wait
GATE_EVENT = "gate.finished"  # carries the sandbox isolation used
COUNTED_EVENTS = (LLM_EVENT, STARTED_EVENT, GATE_EVENT)
WAIT_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
_go_float: Callable[[float], str] = _untyped_float_to_go_string  # bucket bounds as Prometheus prints them


class RunMetrics(Collector):
    """A Prometheus collector over the runs tables; register it on the app's registry."""

    def __init__(self, store: Store, *, window: timedelta = timedelta(hours=24), llm_batch: int = 50_000) -> None:
        self.store = store
        self.window = window
        self.llm_batch = llm_batch
        self._lock = threading.Lock()  # two scrapes at once must not count an event twice
        self._cursor = 0
        self._llm_calls: dict[tuple[str, str], int] = defaultdict(int)
        self._llm_tokens: dict[tuple[str, str, str], int] = defaultdict(int)
        self._llm_cost: dict[tuple[str, str], float] = defaultdict(float)
        self._wait_buckets: dict[str, list[int]] = defaultdict(lambda: [0] * len(WAIT_BUCKETS))
        self._wait_count: dict[str, int] = defaultdict(int)
        self._wait_sum: dict[str, float] = defaultdict(float)
        self._sandbox: dict[str, int] = defaultdict(int)

    def collect(self) -> Iterator[Metric]:
        try:
            with self._lock:
                families = self._families()
        except SQLAlchemyError as exc:  # a scrape must not fail because the database is down; /readyz says so
            log.warning("run metrics unavailable: %s", type(exc).__name__)
            return
        yield from families

    def _families(self) -> list[Metric]:
        runs = GaugeMetricFamily("nofx_runs", "Runs in each status, all time.", labels=["status"])
        approvals = CounterMetricFamily(
            "nofx_approvals", "Approval steps requested, granted and rejected.", labels=["decision"]
        )
        with self.store.session() as session:
            by_status = dict(session.exec(select(Run.status, func.count()).group_by(Run.status)).all())
            decisions = dict(
                session.exec(
                    select(RunEvent.type, func.count())
                    .where(col(RunEvent.type).in_(APPROVAL_EVENTS))
                    .group_by(RunEvent.type)
                ).all()
            )
        for status in RunStatus:
            runs.add_metric([status.value], by_status.get(status, 0))
        for type_, decision in APPROVAL_EVENTS.items():
            approvals.add_metric([decision], decisions.get(type_, 0))
        self._read_new_events()
        return [runs, approvals, *self._llm_families(), self._queue_wait(), self._sandbox_use(), self._durations()]

    def _read_new_events(self) -> None:
        """Fold the events written since the last scrape into the running totals (each event counted once)."""
        with self.store.session() as session:
            rows = session.exec(
                select(RunEvent.id, RunEvent.type, RunEvent.payload)
                .where(col(RunEvent.type).in_(COUNTED_EVENTS), col(RunEvent.id) > self._cursor)
                .order_by(col(RunEvent.id))
                .limit(self.llm_batch)
            ).all()
        for event_id, type_, payload in rows:
            data = payload if isinstance(payload, dict) else {}
            if type_ == LLM_EVENT:
                self._count_llm(data)
            elif type_ == STARTED_EVENT and isinstance(data.get("queue_wait_s"), int | float):
                self._count_wait(str(data.get("tool") or "unknown"), float(data["queue_wait_s"]))
            elif type_ == GATE_EVENT:
                self._sandbox[str(data.get("isolation") or "unknown")] += 1
            self._cursor = event_id or self._cursor

    def _count_llm(self, usage: dict[str, object]) -> None:
        key = (str(usage.get("provider") or "unknown"), str(usage.get("model") or "unknown"))
        self._llm_calls[key] += 1
        for direction in ("input", "output"):
            tokens = usage.get(f"{direction}_tokens")
            self._llm_tokens[(*key, direction)] += tokens if isinstance(tokens, int) else 0
        cost = usage.get("cost_usd")
        self._llm_cost[key] += float(cost) if isinstance(cost, int | float) else 0.0

    def _count_wait(self, tool: str, wait: float) -> None:
        for index, bound in enumerate(WAIT_BUCKETS):
            if wait <= bound:
                self._wait_buckets[tool][index] += 1
        self._wait_count[tool] += 1
        self._wait_sum[tool] += wait

    def _queue_wait(self) -> Metric:
        family = HistogramMetricFamily(
            "nofx_step_queue_wait_seconds",
            "Time steps waited in the queue before a worker started them.",
            labels=["tool"],
        )
        for tool, counts in sorted(self._wait_buckets.items()):
            buckets = [(_go_float(bound), count) for bound, count in zip(WAIT_BUCKETS, counts, strict=True)]
            family.add_metric([tool], [*buckets, ("+Inf", self._wait_count[tool])], sum_value=self._wait_sum[tool])
        return family

    def _sandbox_use(self) -> Metric:
        family = CounterMetricFamily("nofx_sandbox_runs", "Gate commands run, by isolation kind.", labels=["isolation"])
        for isolation, count in sorted(self._sandbox.items()):
            family.add_metric([isolation], count)
        return family

    def _llm_families(self) -> list[Metric]:
        calls = CounterMetricFamily("nofx_llm_calls", "LLM calls charged to steps.", labels=["provider", "model"])
        tokens = CounterMetricFamily(
            "nofx_llm_tokens", "LLM tokens charged to steps.", labels=["provider", "model", "direction"]
        )
        cost = CounterMetricFamily(
            "nofx_llm_cost_usd", "LLM cost charged to steps, in USD.", labels=["provider", "model"]
        )
        for key, count in sorted(self._llm_calls.items()):
            calls.add_metric(list(key), count)
            cost.add_metric(list(key), self._llm_cost[key])
        for token_key, count in sorted(self._llm_tokens.items()):
            tokens.add_metric(list(token_key), count)
        return [calls, tokens, cost]

    def _durations(self) -> Metric:
        hours = self.window.total_seconds() / 3600
        family = HistogramMetricFamily(
            "nofx_step_duration_seconds",
            f"Durations of finished steps of the runs created in the last {hours:g} h, by tool.",
            labels=["tool"],
        )
        with self.store.session() as session:
            rows = session.exec(
                select(Step.tool, Step.started_at, Step.finished_at)
                .join(Run, col(Run.id) == col(Step.run_id))
                .where(
                    col(Run.created_at) > utcnow() - self.window,
                    col(Step.started_at).is_not(None),
                    col(Step.finished_at).is_not(None),
                )
            ).all()
        by_tool: dict[str, list[float]] = defaultdict(list)
        for tool, started, finished in rows:
            if started is not None and finished is not None:
                by_tool[tool].append(max(0.0, (finished - started).total_seconds()))
        for tool, durations in sorted(by_tool.items()):
            buckets = [(_go_float(bound), sum(1 for d in durations if d <= bound)) for bound in DURATION_BUCKETS]
            family.add_metric([tool], [*buckets, ("+Inf", len(durations))], sum_value=sum(durations))
        return family
