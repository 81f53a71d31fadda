"""Server-sent events of run events, read from the database (the source of truth) and resumable by id.

Each frame carries `id: <event id>`; a client that reconnects with `Last-Event-ID` gets the events
after it, in id order, from the same table the timeline reads, so nothing is missed or sent twice.

Ids are allocated when a row is inserted, not when it commits. On SQLite writers are serialised, so
ids become visible in order; on PostgreSQL two transactions can commit out of order and a reader
could see id 11 before 10 exists. The stream therefore only sends events up to a *horizon*: the
highest id below which every id is visible, or has been missing longer than `settle_s` (a rolled
back transaction leaves a permanent hole). Transactions in `bot.runs` last milliseconds.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import anyio
from anyio import to_thread
from sqlalchemy import func
from sqlmodel import Session, col, select
from starlette.requests import Request
from starlette.responses import StreamingResponse

from bot.models import Run, RunEvent, utcnow
from bot.runs.records import TERMINAL_RUN
from bot.store import Store
from bot.web.openapi import event_json

RECONNECT_MS = 2000
SCAN = 1000


@dataclass(frozen=True)
class StreamTiming:
    """How often streams look at the database and say they are alive (tests shorten these)."""

    poll_s: float = 0.5
    heartbeat_s: float = 15.0
    settle_s: float = 5.0
    batch: int = 200


class EventReader:
    """One stream's position in the event table; `poll` runs in a worker thread (blocking DB calls)."""

    def __init__(self, store: Store, run_id: str | None, cursor: int, timing: StreamTiming) -> None:
        self.store = store
        self.run_id = run_id
        self.cursor = cursor
        self.timing = timing
        self.horizon = cursor
        self._gap: tuple[int, float] | None = None  # (first missing id, when it was first seen missing)

    def start(self) -> None:
        """Skip the scan of ids older than this run's first event: nothing of this run can hide below it."""
        if self.run_id is None:
            return
        with self.store.session() as session:
            first = session.exec(select(func.min(RunEvent.id)).where(RunEvent.run_id == self.run_id)).one()
        if first is not None:
            self.horizon = max(self.horizon, first - 1)

    def poll(self) -> tuple[list[RunEvent], bool, bool]:
        """(events to send, the run is finished and all its events are sent, more are ready right now)."""
        with self.store.session() as session:
            terminal = False
            if self.run_id is not None:  # read before the events: its final events are then among them
                status = session.exec(select(Run.status).where(Run.id == self.run_id)).one_or_none()
                terminal = status is None or status in TERMINAL_RUN
            scanned_all = self._advance_horizon(session)
            statement = select(RunEvent).where(col(RunEvent.id) > self.cursor, col(RunEvent.id) <= self.horizon)
            if self.run_id is not None:
                statement = statement.where(RunEvent.run_id == self.run_id)
            events = list(session.exec(statement.order_by(col(RunEvent.id)).limit(self.timing.batch)))
            full = len(events) == self.timing.batch
            # Every id up to the horizon is settled, so what this stream has not sent of it is others' events.
            self.cursor = (events[-1].id or self.cursor) if full else max(self.cursor, self.horizon)
            more = full or not scanned_all
            finished = False
            if terminal and not more:
                last = session.exec(select(func.max(RunEvent.id)).where(RunEvent.run_id == self.run_id)).one()
                finished = self.cursor >= (last or 0)
        return events, finished, more

    def _advance_horizon(self, session: Session) -> bool:
        """Move the horizon over visible ids; False when a full scan page was used (call again soon)."""
        count, top = session.exec(
            select(func.count(), func.max(RunEvent.id)).where(col(RunEvent.id) > self.horizon)
        ).one()
        if top is None or count == top - self.horizon:  # no hole: the usual case, one cheap query
            self.horizon = top or self.horizon
            self._gap = None
            return True
        rows = session.exec(
            select(RunEvent.id, RunEvent.created_at)
            .where(col(RunEvent.id) > self.horizon)
            .order_by(col(RunEvent.id))
            .limit(SCAN)
        ).all()
        for event_id, created_at in rows:
            assert event_id is not None
            if event_id != self.horizon + 1 and not self._settled(self.horizon + 1, created_at):
                return True
            self.horizon = event_id
            self._gap = None
        return len(rows) < SCAN

    def _settled(self, missing: int, next_created_at: datetime) -> bool:
        """A missing id is given up on once it has been missing, or the row after it is, `settle_s` old."""
        now = time.monotonic()
        if self._gap is None or self._gap[0] != missing:
            self._gap = (missing, now)
        settle = timedelta(seconds=self.timing.settle_s)
        return next_created_at < utcnow() - settle or now - self._gap[1] >= self.timing.settle_s


def frame(event: RunEvent) -> str:
    """One SSE frame: the event id (for Last-Event-ID) and the shared event JSON on one data line."""
    return f"id: {event.id}\ndata: {json.dumps(event_json(event), separators=(',', ':'))}\n\n"


async def frames(request: Request, reader: EventReader) -> AsyncIterator[str]:
    """Poll, send, heartbeat; end after a finished run's last event or when the client goes away."""
    timing = reader.timing
    await to_thread.run_sync(reader.start)
    yield f"retry: {RECONNECT_MS}\n\n"
    quiet_since = time.monotonic()
    while True:
        events, finished, more = await to_thread.run_sync(reader.poll)
        for event in events:
            yield frame(event)
        if events:
            quiet_since = time.monotonic()
        if finished:
            end = {"run_id": reader.run_id, "last_event_id": reader.cursor}
            yield f"event: end\ndata: {json.dumps(end)}\n\n"
            return
        if time.monotonic() - quiet_since >= timing.heartbeat_s:
            yield ": keep-alive\n\n"
            quiet_since = time.monotonic()
        if await request.is_disconnected():
            return
        if not more:
            await anyio.sleep(timing.poll_s)


def stream_response(request: Request, reader: EventReader) -> StreamingResponse:
    """An SSE response; `X-Accel-Buffering: no` keeps proxies (nginx, Fly) from holding frames back."""
    return StreamingResponse(
        frames(request, reader),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def latest_event_id(store: Store) -> int:
    """Where a new `/events/stream` without Last-Event-ID starts: after everything recorded so far."""
    with store.session() as session:
        return session.exec(select(func.max(RunEvent.id))).one() or 0
