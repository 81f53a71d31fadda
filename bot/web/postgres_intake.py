"""Intake's group commit on PostgreSQL: one fixed statement per batch on connections of the intake's own.

On PostgreSQL the intake waits on its commits (each syncs the WAL), so the round trips and the per-batch work
around a commit are what is left to save. Here a batch is one `INSERT … SELECT … FROM unnest(…) ON CONFLICT DO
NOTHING RETURNING id` in autocommit: a single statement is its own transaction, so there is no BEGIN or COMMIT
round trip, and its text is the same for every batch size, so psycopg prepares it once per connection. The
arrays go in binary: as text, psycopg escaped every quote of every payload in Python (~3 ms per 14 KB delivery).
The statements run on psycopg's asyncio connections, on the event loop, with no hop to a thread and back per batch
(in bench/intake.py that gave more deliveries/s for the same CPU). Each connection is kept between batches (no pool
checkout, ping or reset per batch).

The payloads are compressed with lz4 rather than PostgreSQL's default pglz (a setting of these connections only):
a 14 KB payload is stored out of line and compressed, and pglz was half of the server's CPU per delivery.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, LiteralString

import psycopg

from bot.deliveries import Incoming, Recorded
from bot.models import DeliveryStatus, utcnow
from bot.store import PAYLOAD_COLUMN_TYPE, Store

_INSERT: LiteralString = """
INSERT INTO delivery (id, event, action, installation_id, repository, payload, status, reason, attempts,
                      received_at, updated_at)
SELECT id, event, action, installation_id, repository, {payload}, CAST(status AS deliverystatus),
       reason, 0, %(now)b, %(now)b
FROM unnest(%(id)b::text[], %(event)b::text[], %(action)b::text[], %(installation_id)b::bigint[],
            %(repository)b::text[], %(payload)b::text[], %(status)b::text[], %(reason)b::text[])
     AS batch (id, event, action, installation_id, repository, payload, status, reason)
ON CONFLICT (id) DO NOTHING
RETURNING id
"""
# The payload column is text; a database an older nofx created has it as json, which takes only an explicit cast.
_INSERT_INTO = {"text": _INSERT.format(payload="payload"), "json": _INSERT.format(payload="CAST(payload AS JSON)")}
# The rows of a batch's ids that were there already; `ours` marks those this very batch wrote (the same
# received_at, to the microsecond) on a connection that broke before the answer came back (see `PostgresRecorder`).
_STORED: LiteralString = (
    "SELECT id, status, reason, received_at = %(now)b AS ours FROM delivery WHERE id = ANY(%(ids)b::text[])"
)
# pglz took ~250 µs of the server's CPU per 14 KB delivery, lz4 ~130 µs (PostgreSQL 15, bench/intake.py's payload).
_LZ4: LiteralString = "SET default_toast_compression = 'lz4'"
# Seconds to wait for a connection, and for a batch's statement: a server that does not answer, or a row lock
# held elsewhere, gets the batch a 503 well inside GitHub's 10 s, not a hung request.
CONNECT_TIMEOUT_S = 3
_STATEMENT_TIMEOUT: LiteralString = "SET statement_timeout = '3s'"

log = logging.getLogger(__name__)


class DatabaseUnavailable(Exception):
    """PostgreSQL could not be reached, or the connection broke mid-batch: nothing of the batch was answered
    as recorded; the request should be answered 503 (GitHub's redelivery, or the workers' start-up recovery,
    brings it back)."""


class PostgresRecorder:
    """Records a group commit's deliveries on PostgreSQL, one statement per batch, on connections of its own.

    Dedup is the primary key's: a redelivery racing its first copy in another batch waits for that batch's
    commit and is then skipped by ON CONFLICT, and it is reported with the stored status, not as new.

    A connection kept idle between batches may have been closed by the server meanwhile (a restart, a failover,
    an idle timeout): a batch that finds it broken is written again once on a new connection. If the first attempt
    did commit before the connection broke, its rows are recognised by their received_at and still reported as
    new, so they are enqueued once, not taken for redeliveries.
    """

    def __init__(self, store: Store) -> None:
        args, kwargs = store.engine.dialect.create_connect_args(store.engine.url)
        self._connect_args: tuple[Any, ...] = tuple(args)
        self._connect_kwargs: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT_S, **kwargs, "autocommit": True}
        self._idle: list[psycopg.AsyncConnection[Any]] = []  # used from the event loop only
        self._insert = _INSERT_INTO["text"]  # for the payload column's type, read on every new connection

    async def __call__(self, batch: list[Incoming], ignore_reasons: list[str | None]) -> list[Recorded]:
        now = utcnow()
        if not self._idle:
            return await self._on_new_connection(batch, ignore_reasons, now)
        conn = self._idle.pop()
        try:
            answers = await _record(conn, self._insert, batch, ignore_reasons, now)
        except psycopg.OperationalError as exc:
            await conn.close()  # its state is unknown (statement cancelled, server gone): the next batch connects anew
            if not conn.broken:  # the server answered, with an error (a timeout): writing again would wait again
                raise DatabaseUnavailable(f"PostgreSQL failed the write: {type(exc).__name__}") from exc
            log.info("a kept PostgreSQL connection broke (%s); writing the batch on a new one", type(exc).__name__)
            await self.close()  # the others were opened as long ago, likely to the same server: let them go too
            return await self._on_new_connection(batch, ignore_reasons, now)
        except BaseException:
            await conn.close()
            raise
        self._idle.append(conn)
        return answers

    async def close(self) -> None:
        while self._idle:
            await self._idle.pop().close()

    async def _on_new_connection(
        self, batch: list[Incoming], ignore_reasons: list[str | None], now: datetime
    ) -> list[Recorded]:
        try:
            conn = await _connect(self._connect_args, self._connect_kwargs)
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(f"PostgreSQL is unavailable: {type(exc).__name__}") from exc
        try:
            self._insert = await _insert_for(conn)
            answers = await _record(conn, self._insert, batch, ignore_reasons, now)
        except psycopg.OperationalError as exc:
            await conn.close()
            raise DatabaseUnavailable(f"PostgreSQL failed during the write: {type(exc).__name__}") from exc
        except BaseException:
            await conn.close()
            raise
        self._idle.append(conn)
        return answers


async def _connect(args: tuple[Any, ...], kwargs: dict[str, Any]) -> psycopg.AsyncConnection[Any]:
    conn = await psycopg.AsyncConnection.connect(*args, **kwargs)
    try:
        await conn.execute(_STATEMENT_TIMEOUT)
        await conn.execute(_LZ4)
    except (psycopg.errors.UndefinedObject, psycopg.errors.InvalidParameterValue):
        # PostgreSQL before 14 has no such setting; a server built without lz4 refuses the value. pglz it is.
        log.info("PostgreSQL has no lz4 for TOAST; the intake's payloads are compressed with pglz")
    except BaseException:
        await conn.close()
        raise
    return conn


async def _insert_for(conn: psycopg.AsyncConnection[Any]) -> LiteralString:
    row = await (await conn.execute(PAYLOAD_COLUMN_TYPE)).fetchone()
    return _INSERT_INTO["json" if row is not None and row[0] == "json" else "text"]


async def _record(
    conn: psycopg.AsyncConnection[Any],
    insert: LiteralString,
    batch: list[Incoming],
    ignore_reasons: list[str | None],
    now: datetime,
) -> list[Recorded]:
    first: dict[str, tuple[Incoming, str | None]] = {}
    for delivery, reason in zip(batch, ignore_reasons, strict=True):
        first.setdefault(delivery.id, (delivery, reason))
    # In id order: two batches inserting some of the same ids (redeliveries racing) then take their row locks in
    # the same order, one waiting for the other, where opposite orders deadlocked.
    rows = [first[delivery_id] for delivery_id in sorted(first)]
    columns = {
        "now": now,
        "id": [d.id for d, _ in rows],
        "event": [d.event for d, _ in rows],
        "action": [d.action for d, _ in rows],
        "installation_id": [d.installation_id for d, _ in rows],
        "repository": [d.repository for d, _ in rows],
        "payload": [d.body for d, _ in rows],
        "status": [(DeliveryStatus.queued if r is None else DeliveryStatus.ignored).value for _, r in rows],
        "reason": [r for _, r in rows],
    }
    inserted = {row[0] for row in await (await conn.execute(insert, columns)).fetchall()}
    known = [delivery_id for delivery_id in first if delivery_id not in inserted]
    stored: dict[str, tuple[str, str | None]] = {}
    if known:
        for delivery_id, status, reason, ours in await (
            await conn.execute(_STORED, {"now": now, "ids": known})
        ).fetchall():
            if ours:
                inserted.add(delivery_id)
            else:
                stored[delivery_id] = (status, reason)
    answers: list[Recorded] = []
    claimed: set[str] = set()
    for delivery in batch:
        reason = first[delivery.id][1]
        own = (DeliveryStatus.queued if reason is None else DeliveryStatus.ignored, reason)
        if delivery.id in inserted and delivery.id not in claimed:  # the first copy in the batch is the new one
            claimed.add(delivery.id)
            answers.append(Recorded(own[0], own[1], new=True))
        else:
            status, stored_reason = stored.get(delivery.id, own)
            answers.append(Recorded(DeliveryStatus(status), stored_reason, new=False))
    return answers
