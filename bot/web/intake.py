"""POST /webhooks: size cap, HMAC check on the raw bytes, parse, record, answer 202, enqueue.

The web process does nothing else with a delivery: no GitHub call, no LLM call, no git. A burst of deliveries
is the one load on this process, so the intake is a bare ASGI app that `bot.web.app.App` calls directly: no
routing, no middleware, no Request object per delivery.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qs

import orjson
from starlette.types import Receive, Scope, Send

from bot import deliveries, handled_events, logs
from bot.metrics.web import Metrics
from bot.models import DeliveryStatus
from bot.queue import WorkQueue
from bot.store import Store
from bot.web.enqueue_after import EnqueueAfter
from bot.web.group_commit import GroupCommit
from bot.web.postgres_intake import DatabaseUnavailable, PostgresRecorder
from bot.web.sqlite_intake import SqliteRecorder

MAX_BODY_BYTES = 25 * 1024 * 1024
# Body bytes held at once across requests until their signature is checked: one body at the cap, plus room for
# the ordinary deliveries (a few KB to a few MB) arriving meanwhile. Over it a request is answered 503 at once.
IN_FLIGHT_BODY_BYTES = 48 * 1024 * 1024
RETRY_AFTER_S = 5
# GitHub sends a UUID. Each id becomes an RQ job id (`dispatch-<id>`), which RQ refuses unless it is letters, digits,
# `_` and `-`: one it refused would fail the whole batch a worker took from the intake list with it.
_DELIVERY_ID = re.compile(r"[A-Za-z0-9_-]{1,100}")
# GitHub's event names: lower case, digits and underscores (`projects_v2_item`, `sub_issues`).
_EVENT_NAME = re.compile(r"[a-z][a-z0-9_]{0,99}")
# Group commits written at once per web process, by database: PostgreSQL takes another batch while one waits for its
# WAL flush; SQLite has a single writer. Each batch costs the same Python around it however small, so more writers
# than that mean smaller batches and more CPU per delivery: in bench/intake.py (two web processes, 16 connections)
# 2 gave 2,176-3,876 deliveries/s at 243-318 us of CPU each, 8 gave 2,218-2,293 at 369-387 us (one busy machine).
CONCURRENT_WRITES = {"postgresql": 2}
# The request headers the intake reads (ASGI gives header names lower-cased).
_HEADERS = frozenset(
    {b"content-length", b"content-type", b"x-github-delivery", b"x-github-event", b"x-hub-signature-256"}
)

log = logging.getLogger(__name__)
T = TypeVar("T")


class Refusal(Exception):
    """A delivery we will not accept; carries the HTTP status and a message for the sender."""

    def __init__(self, status: int, message: str, outcome: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.outcome = outcome
        self.headers = headers


class BodyBudget:
    """Bounds the body bytes buffered at once before their HMAC is checked, across all requests.

    Anyone can send unsigned bodies of up to 25 MB, and the signature can only be checked once the whole body is
    in memory: without a bound, a handful of them at once would push the web past its memory. Over the bound a
    request is refused with 503 and Retry-After before its body is read (GitHub's redelivery brings it back).
    Only the event loop thread uses it, so no lock.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    @contextmanager
    def holding(self) -> Iterator[Callable[[int], None]]:
        """A function that grows this request's share to a total byte count (or refuses it); freed on exit."""
        held = 0

        def hold(total: int) -> None:
            nonlocal held
            if total <= held:
                return
            if self.used + total - held > self.limit:
                raise Refusal(
                    503,
                    "too many large deliveries in flight; retry later",
                    "busy",
                    ((b"retry-after", b"%d" % RETRY_AFTER_S),),
                )
            self.used += total - held
            held = total

        try:
            yield hold
        finally:
            self.used -= held


@dataclass
class Intake:
    """Everything the webhook endpoint needs, passed in by `create_app`; called as the ASGI app of /webhooks."""

    store: Store
    queue: WorkQueue
    metrics: Metrics
    secret: Callable[[], str | None]
    # Decides whether nofx acts on a delivery: returns None to route it, or why it is ignored.
    ignore_reason: Callable[[deliveries.Incoming], str | None]
    body_budget: BodyBudget = field(default_factory=lambda: BodyBudget(IN_FLIGHT_BODY_BYTES))
    group: GroupCommit[deliveries.Incoming, deliveries.Recorded] = field(init=False)
    # Batches go through connections of the intake's own, past the ORM (bot.web.sqlite_intake, postgres_intake).
    recorder: PostgresRecorder | SqliteRecorder = field(init=False)
    # Pushes onto the intake list from the event loop, beside the answer.
    enqueue: EnqueueAfter = field(init=False)
    # SQLite's batches that must wait for the database, and the store updates after a push the queue refused:
    # blocking calls that run here.
    _thread: ThreadPoolExecutor = field(init=False)
    # SQLite's checkpoints, on a thread of their own: most of one runs beside the batches, which must not wait for it.
    _checkpoints: ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        dialect = self.store.engine.dialect.name
        self.group = GroupCommit(self._write, writers=CONCURRENT_WRITES.get(dialect, 1))
        self.recorder = PostgresRecorder(self.store) if dialect == "postgresql" else SqliteRecorder(self.store)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="intake")
        self.enqueue = EnqueueAfter(self.queue.intake_pusher(), self.store, self._in_thread)
        self._checkpoints = ThreadPoolExecutor(1, thread_name_prefix="intake-checkpoint")

    async def close(self) -> None:
        """Push what was answered and not yet pushed, then close the intake's threads and its own database and
        Redis connections (at the app's shutdown)."""
        await self.enqueue.close()
        self._thread.shutdown()
        self._checkpoints.shutdown()
        if isinstance(self.recorder, PostgresRecorder):
            await self.recorder.close()
        else:
            self.recorder.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        if scope["method"] != "POST":
            await _answer(send, 405, {"error": "webhooks are delivered with POST"}, ((b"allow", b"POST"),))
            return
        headers = _headers(scope["headers"])
        event = headers.get(b"x-github-event", "")
        delivery_id = headers.get(b"x-github-delivery", "")
        answer_headers: tuple[tuple[bytes, bytes], ...] = ()
        with logs.bound(delivery_id=_well_formed(_DELIVERY_ID, delivery_id), event=_well_formed(_EVENT_NAME, event)):
            try:
                status, body, outcome = await self._receive(headers, receive, event, delivery_id)
            except Refusal as refusal:
                log.warning("webhook refused: %s", refusal.message, extra=logs.fields(status=refusal.status))
                status, body, outcome = refusal.status, {"error": refusal.message}, refusal.outcome
                answer_headers = refusal.headers
            except Exception:
                log.exception("webhook intake failed")
                status, body, outcome = (
                    500,
                    {"error": "internal error; the delivery will be retried"},
                    "error",
                )
        self.metrics.delivered(_metric_event(event), outcome)
        self.metrics.intake_seconds.observe(time.perf_counter() - started)
        await _answer(send, status, body, answer_headers)

    async def _receive(
        self, headers: dict[bytes, str], receive: Receive, event: str, delivery_id: str
    ) -> tuple[int, dict[str, Any], str]:
        secret = self.secret()
        if not secret:
            raise Refusal(401, "GITHUB_WEBHOOK_SECRET is not configured; every delivery is refused", "unsigned")
        with self.body_budget.holding() as hold:
            raw = await _read_capped(headers.get(b"content-length"), receive, hold)
            _verify_signature(raw, headers.get(b"x-hub-signature-256"), secret)
        if not _EVENT_NAME.fullmatch(event):
            raise Refusal(400, "missing or invalid X-GitHub-Event header", "malformed")
        if not _DELIVERY_ID.fullmatch(delivery_id):
            raise Refusal(400, "missing or invalid X-GitHub-Delivery header", "malformed")
        try:
            delivery = deliveries.incoming_json(delivery_id, event, _json_text(raw, headers.get(b"content-type", "")))
        except deliveries.NotAJsonObject as exc:
            raise Refusal(400, str(exc), "malformed") from None
        with logs.bound(installation=delivery.installation_id, repo=delivery.repository):
            try:
                recorded = await self.group.submit(delivery)
            except DatabaseUnavailable as exc:  # nothing was answered as recorded; GitHub may redeliver it
                raise Refusal(
                    503, f"{exc}; retry later", "unavailable", ((b"retry-after", b"%d" % RETRY_AFTER_S),)
                ) from exc
            if recorded.status == DeliveryStatus.ignored:
                log.info("delivery ignored: %s", recorded.reason)
                return 202, {"delivery": delivery_id, "status": "ignored", "reason": recorded.reason}, "ignored"
            if not recorded.new and recorded.status != DeliveryStatus.received:
                log.info("duplicate delivery; already %s", recorded.status.value)
                return 202, {"delivery": delivery_id, "status": "duplicate"}, "duplicate"
            log.debug("delivery queued")
            return 202, {"delivery": delivery_id, "status": "queued"}, "queued"

    async def _write(self, batch: list[deliveries.Incoming]) -> list[deliveries.Recorded]:
        """Record a batch as queued in one transaction; what needs routing is pushed onto the intake list after
        the answers (`EnqueueAfter`).

        Recorded as queued in the same write, saving a second one per delivery; if the queue refuses them they
        go back to received, and the sweeper enqueues received deliveries and queued ones whose job is missing,
        so neither a queue outage nor a crash between the answer and the push loses one. Answering before the
        push (bench/intake.py, six rounds each way in turn): SQLite 1.37x and PostgreSQL 1.14x the
        deliveries/s of answering after it (medians of each round's ratio).

        The write runs on the event loop, with no hop to a thread and back per batch: on PostgreSQL with psycopg's
        asyncio client; on SQLite the write blocks, so the loop writes only when nobody else is
        writing (a few hundred µs for a batch), and hands the batch to the intake's thread to wait otherwise (in
        bench/intake.py, one web process: 4,700-5,100 deliveries/s at 176-194 µs of CPU each, against 3,800-4,500
        at 208-250 µs with every batch written by the thread).
        """
        reasons = [self.ignore_reason(delivery) for delivery in batch]
        if isinstance(self.recorder, SqliteRecorder):
            answers = self.recorder.try_now(batch, reasons)
            if answers is None:  # another writer has the database (a web process's, a checkpoint, a worker): wait
                answers = await self._in_thread(self.recorder, batch, reasons)
            if self.recorder.claim_checkpoint():
                self._checkpoints.submit(self.recorder.checkpoint)
        else:
            answers = await self.recorder(batch, reasons)
        self.metrics.intake_batch.observe(len(batch))
        self.enqueue.add(*_to_enqueue(batch, answers))
        return answers

    async def _in_thread(self, call: Callable[..., T], *args: Any) -> T:
        """A blocking call on the intake's thread, so the event loop goes on answering meanwhile."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, call, *args)


def _to_enqueue(batch: list[deliveries.Incoming], answers: list[deliveries.Recorded]) -> tuple[list[str], list[str]]:
    """The batch's new deliveries to route, and those recorded earlier but never enqueued (the queue was down then)."""
    new = [d.id for d, a in zip(batch, answers, strict=True) if a.new and a.status == DeliveryStatus.queued]
    stranded = [d.id for d, a in zip(batch, answers, strict=True) if not a.new and a.status == DeliveryStatus.received]
    return new, stranded


def _headers(raw: list[tuple[bytes, bytes]]) -> dict[bytes, str]:
    """The headers the intake reads, by lower-case name (the first of repeated ones, as Starlette's `get`)."""
    found: dict[bytes, str] = {}
    for name, value in raw:
        if name in _HEADERS and name not in found:
            found[name] = value.decode("latin-1")
    return found


async def _read_capped(declared: str | None, receive: Receive, hold: Callable[[int], None]) -> bytes:
    """The body, at most `MAX_BODY_BYTES`; `hold` is told the bytes it will take (the declared length up front)."""
    if declared is not None and declared.isdigit():
        if int(declared) > MAX_BODY_BYTES:
            raise Refusal(413, f"payload larger than {MAX_BODY_BYTES} bytes", "too_large")
        hold(int(declared))
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Refusal(400, "client disconnected before the body was read", "malformed")
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise Refusal(413, f"payload larger than {MAX_BODY_BYTES} bytes", "too_large")
        hold(size)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _answer(send: Send, status: int, body: dict[str, Any], headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    content = orjson.dumps(body)
    start = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(content)), *headers]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": content})


def _verify_signature(raw: bytes, header: str | None, secret: str) -> None:
    if not header or not header.startswith("sha256="):
        raise Refusal(401, "missing X-Hub-Signature-256 signature", "bad_signature")
    expected = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), header.strip().encode()):
        raise Refusal(401, "X-Hub-Signature-256 does not match the payload", "bad_signature")


def _json_text(raw: bytes, content_type: str) -> str:
    """The payload's JSON text. GitHub sends JSON, or a form with a `payload` field when the hook is set to
    urlencoded."""
    if content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
        fields = parse_qs(raw.decode("utf-8", "replace"))
        if "payload" not in fields:
            raise Refusal(400, "form-encoded delivery without a payload field", "malformed")
        return fields["payload"][0]
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        raise Refusal(
            400, f"body is not valid JSON: it is not UTF-8 ({exc.reason} at byte {exc.start})", "malformed"
        ) from None


def _well_formed(pattern: re.Pattern[str], value: str) -> str | None:
    """`value` when all of it matches: an unsigned request's headers are anyone's text, not fields for the log."""
    return value if pattern.fullmatch(value) else None


def _metric_event(event: str) -> str:
    """The event's metric label. Anyone can send the header, signed or not: only the events nofx acts on get a label
    of their own, so that made-up names cannot grow the metric without bound."""
    return event if event in handled_events.HANDLED or event == "ping" else "other"
