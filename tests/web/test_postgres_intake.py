"""The PostgreSQL recorder of intake's group commits, on a real PostgreSQL: dedup, durability, outages."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy import func, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlmodel import SQLModel, select

from bot import deliveries
from bot.deliveries import Incoming
from bot.models import Delivery, DeliveryStatus, Installation, utcnow
from bot.queue import WorkQueue
from bot.settings import Settings
from bot.store import PAYLOAD_TO_TEXT, Store
from bot.web.app import create_app
from bot.web.postgres_intake import _INSERT_INTO, DatabaseUnavailable, PostgresRecorder, _record
from tests.support.payloads import load_payload, webhook_headers
from tests.support.web_process import nofx_web


@pytest.fixture
def pg_store(postgres_url: str | None) -> Iterator[Store]:
    """A store on this session's PostgreSQL schema, emptied; skipped when no PostgreSQL answers."""
    if postgres_url is None:
        pytest.skip("no PostgreSQL answers on 127.0.0.1:5432 (set NOFX_TEST_POSTGRES_URL to require one)")
    store = Store(postgres_url)
    store.create_all()
    tables = ", ".join(table.name for table in SQLModel.metadata.sorted_tables)
    with store.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    yield store
    store.dispose()


@pytest.fixture
async def recorder(pg_store: Store) -> AsyncIterator[PostgresRecorder]:
    writer = PostgresRecorder(pg_store)
    yield writer
    await writer.close()


def _incoming(delivery_id: str) -> Incoming:
    payload = load_payload("issue_comment.created")
    return deliveries.incoming(delivery_id, "issue_comment", payload, json.dumps(payload))


def _count(store: Store) -> int:
    with store.session() as session:
        return int(session.exec(select(func.count()).select_from(Delivery)).one())


async def test_a_redelivery_in_the_same_batch_is_recorded_once(recorder: PostgresRecorder, pg_store: Store) -> None:
    batch = [_incoming("a"), _incoming("b"), _incoming("a")]
    answers = await recorder(batch, [None, "not a command", None])

    assert [(a.status, a.new) for a in answers] == [
        (DeliveryStatus.queued, True),
        (DeliveryStatus.ignored, True),
        (DeliveryStatus.queued, False),  # the first copy's row: the second is a redelivery
    ]
    assert _count(pg_store) == 2
    row = deliveries.get(pg_store, "a")
    assert row is not None and row.payload == load_payload("issue_comment.created") and row.event == "issue_comment"
    assert row.installation_id == row.payload["installation"]["id"] and row.repository == "Codertocat/Hello-World"
    ignored = deliveries.get(pg_store, "b")
    assert ignored is not None and ignored.status == DeliveryStatus.ignored and ignored.reason == "not a command"


async def test_a_redelivery_in_a_later_batch_gets_the_stored_status(
    recorder: PostgresRecorder, pg_store: Store
) -> None:
    await recorder([_incoming("a"), _incoming("b")], [None, "not a command"])
    answers = await recorder([_incoming("b"), _incoming("c"), _incoming("a")], [None, None, None])

    assert [(a.status, a.reason, a.new) for a in answers] == [
        (DeliveryStatus.ignored, "not a command", False),  # as stored, not as this copy would have been recorded
        (DeliveryStatus.queued, None, True),
        (DeliveryStatus.queued, None, False),
    ]
    assert _count(pg_store) == 3


async def test_batches_racing_on_the_same_ids_record_each_once(recorder: PostgresRecorder, pg_store: Store) -> None:
    """Several writers at once, as intake runs them, the ids in different orders: each is new in exactly one
    batch, and no two batches deadlock on each other's rows."""
    ids = [f"race-{round_}-{n}" for round_ in range(5) for n in range(40)]
    news: list[str] = []

    async def write(order: list[str]) -> None:
        answers = await recorder([_incoming(i) for i in order], [None] * len(order))
        news.extend(i for i, a in zip(order, answers, strict=True) if a.new)

    for round_ in range(5):
        mine = ids[round_ * 40 : (round_ + 1) * 40]
        # a deadlock between the batches fails one of them, and so the gather
        await asyncio.gather(*(write(mine[n:] + mine[:n]) for n in range(0, 40, 5)))

    assert sorted(news) == sorted(ids)
    assert _count(pg_store) == 200


async def test_payloads_are_stored_with_lz4(recorder: PostgresRecorder, pg_store: Store) -> None:
    with pg_store.engine.connect() as conn:
        try:
            conn.execute(text("SET default_toast_compression = 'lz4'"))
        except DBAPIError:  # PostgreSQL < 14 or built without lz4: the recorder keeps pglz
            pytest.skip("this PostgreSQL has no lz4 for TOAST")
    await recorder([_incoming("big")], [None])
    with pg_store.engine.connect() as conn:
        method = conn.execute(text("SELECT pg_column_compression(payload) FROM delivery WHERE id = 'big'")).scalar()
    assert method == "lz4"


async def test_payloads_are_stored_as_text_and_an_older_json_column_still_works(pg_store: Store) -> None:
    """PostgreSQL parses every value of a `json` column to validate it, a third of its work per delivery at intake:
    payloads go in a text column. A database an older nofx made keeps its json column (changing it rewrites the
    table), and the intake and the ORM both still write and read it."""
    assert pg_store.payload_column_type() == "text"
    fresh = PostgresRecorder(pg_store)
    try:
        await fresh([_incoming("on-text")], [None])
    finally:
        await fresh.close()

    with pg_store.engine.begin() as conn:
        conn.execute(text("ALTER TABLE delivery ALTER COLUMN payload TYPE json USING payload::json"))
    try:
        older = PostgresRecorder(pg_store)
        try:
            answers = await older([_incoming("on-json"), _incoming("on-text")], [None, None])
        finally:
            await older.close()
        deliveries.record(pg_store, deliveries.describe("by-orm", "ping", {"zen": "Keep it logically awesome."}))
        payloads = {d: deliveries.get(pg_store, d) for d in ("on-text", "on-json", "by-orm")}
        assert pg_store.payload_column_type() == "json"
    finally:
        with pg_store.engine.begin() as conn:
            conn.execute(text(PAYLOAD_TO_TEXT))

    assert [(a.status, a.new) for a in answers] == [(DeliveryStatus.queued, True), (DeliveryStatus.queued, False)]
    expected = load_payload("issue_comment.created")
    assert payloads["on-text"] is not None and payloads["on-text"].payload == expected
    assert payloads["on-json"] is not None and payloads["on-json"].payload == expected
    assert payloads["by-orm"] is not None and payloads["by-orm"].payload == {"zen": "Keep it logically awesome."}


async def test_a_kept_connection_the_server_closed_costs_no_delivery(
    recorder: PostgresRecorder, pg_store: Store
) -> None:
    await recorder([_incoming("before")], [None])
    with pg_store.engine.connect() as conn:  # as a restart or an idle timeout would
        conn.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'INSERT INTO delivery%'")
        )
        conn.commit()

    answers = await recorder([_incoming("after")], [None])

    assert answers[0].new and answers[0].status == DeliveryStatus.queued
    assert deliveries.get(pg_store, "after") is not None


async def test_a_batch_written_again_after_its_commit_is_still_new(recorder: PostgresRecorder, pg_store: Store) -> None:
    """A connection can break after the server committed but before the answer arrived: the batch written again
    finds its own rows (same received_at) and reports them new, so they are enqueued, not taken as redeliveries."""
    now = utcnow()
    url = make_url(pg_store.url)
    params = pg_store.engine.dialect.create_connect_args(url)[1]
    async with await psycopg.AsyncConnection.connect(**params, autocommit=True) as conn:
        insert = _INSERT_INTO["text"]
        first = await _record(conn, insert, [_incoming("ambiguous")], [None], now)
        again = await _record(conn, insert, [_incoming("ambiguous"), _incoming("other")], [None, None], now)
        later = await _record(conn, insert, [_incoming("ambiguous")], [None], utcnow())

    assert [a.new for a in first] == [True]
    assert [a.new for a in again] == [True, True]
    assert [a.new for a in later] == [False]  # a real redelivery: another batch's time
    assert _count(pg_store) == 2


async def test_a_row_lock_held_elsewhere_fails_the_batch_in_seconds_not_a_hang(
    recorder: PostgresRecorder, pg_store: Store
) -> None:
    """A transaction that inserted the same id and neither commits nor rolls back makes the insert wait on it:
    the statement timeout ends the wait, the batch fails as unavailable, and once the lock is gone it goes in."""
    with pg_store.engine.connect() as holder:
        holder.execute(
            text(
                "INSERT INTO delivery (id, event, payload, status, attempts, received_at, updated_at) "
                "VALUES ('held', 'ping', '{}', 'received', 0, now(), now())"
            )
        )
        with pytest.raises(DatabaseUnavailable):
            await recorder([_incoming("held"), _incoming("free")], [None, None])
        holder.rollback()

    answers = await recorder([_incoming("held"), _incoming("free")], [None, None])
    assert [a.new for a in answers] == [True, True]
    assert _count(pg_store) == 2


class _Proxy:
    """A TCP relay to PostgreSQL that a test can cut (every connection closed, new ones refused) and restore."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        """Refuse new connections and reset the open ones, as a PostgreSQL that went down."""
        with self._lock:
            self._stopped = True
            self._listener.close()
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    def restore(self) -> None:
        with self._lock:
            self._listener = socket.create_server(("127.0.0.1", self.port))
            self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        listener = self._listener
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            with self._lock:
                if self._stopped:
                    client.close()
                    server.close()
                    return
                self._open += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


async def test_postgresql_briefly_down_fails_batches_at_once_and_loses_nothing(pg_store: Store) -> None:
    url = make_url(pg_store.url)
    proxy = _Proxy(url.host or "127.0.0.1", url.port or 5432)
    through = Store(url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False))
    recorder = PostgresRecorder(through)
    try:
        assert (await recorder([_incoming("up-1")], [None]))[0].new
        proxy.cut()

        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable):
            await recorder([_incoming("down-1")], [None])
        with pytest.raises(DatabaseUnavailable):
            await recorder([_incoming("down-2")], [None])
        assert time.monotonic() - started < 30  # refused, not hung (no timing bound beyond "it returned")

        proxy.restore()
        answers = await recorder(
            [_incoming("down-1"), _incoming("up-2")], [None, None]
        )  # GitHub's redelivery, a new one
    finally:
        await recorder.close()
        proxy.cut()
        through.dispose()

    assert [a.new for a in answers] == [True, True]
    with pg_store.session() as session:
        assert sorted(session.exec(select(Delivery.id))) == ["down-1", "up-1", "up-2"]


async def test_the_webhook_answers_503_while_postgresql_is_down_and_202_once_it_is_back(
    pg_store: Store, settings: Settings, queue: WorkQueue, tmp_path: Path
) -> None:
    url = make_url(pg_store.url)
    proxy = _Proxy(url.host or "127.0.0.1", url.port or 5432)
    through = Store(url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False))
    app = create_app(settings, store=through, queue=queue, env_file=tmp_path / ".env")
    body = json.dumps(load_payload("ping")).encode()
    secret = settings.webhook_secret or ""

    async def post(delivery_id: str) -> httpx.Response:
        headers = webhook_headers("ping", body, secret, delivery_id=delivery_id)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://nofx") as http:
            return await http.post("/webhooks", content=body, headers=headers)

    try:
        assert (await post("before")).status_code == 202
        proxy.cut()
        down = await post("during")
        proxy.restore()
        again = await post("during")  # GitHub's redelivery
    finally:
        await app.state.intake.close()
        proxy.cut()
        through.dispose()

    assert down.status_code == 503 and "retry-after" in down.headers
    assert "PostgreSQL is unavailable" in down.json()["error"]
    assert again.status_code == 202 and again.json()["status"] == "ignored"  # a ping: recorded, not routed
    with pg_store.session() as session:
        assert sorted(session.exec(select(Delivery.id))) == ["before", "during"]


def test_a_202_on_postgresql_survives_kill_9_of_the_web_process(
    pg_store: Store, settings: Settings, redis_url: str, tmp_path: Path
) -> None:
    payload = load_payload("issue_comment.created")
    with pg_store.session() as session:
        session.add(Installation(id=payload["installation"]["id"], account_login="Codertocat"))
    body = json.dumps(payload).encode()
    secret = settings.webhook_secret or ""
    queue = WorkQueue.from_url(redis_url)
    queue.redis.flushdb()

    with _web(tmp_path, pg_store.url, redis_url, secret) as (base, process):
        answers = [
            httpx.post(
                f"{base}/webhooks",
                content=body,
                headers=webhook_headers("issue_comment", body, secret, delivery_id=f"survivor-{n}"),
                timeout=10,
            )
            for n in range(3)
        ]
        os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)

    assert [(a.status_code, a.json()["status"]) for a in answers] == [(202, "queued")] * 3
    for n in range(3):
        row = deliveries.get(pg_store, f"survivor-{n}")
        assert row is not None and row.status == DeliveryStatus.queued and row.payload == payload

    with _web(tmp_path, pg_store.url, redis_url, secret) as (base, _process):
        again = httpx.post(
            f"{base}/webhooks",
            content=body,
            headers=webhook_headers("issue_comment", body, secret, delivery_id="survivor-0"),
            timeout=10,
        )
    assert again.status_code == 202 and again.json()["status"] == "duplicate"
    assert _count(pg_store) == 3
    queue.redis.flushdb()


@contextlib.contextmanager
def _web(
    tmp_path: Path, database_url: str, redis_url: str, secret: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`nofx web` as a real process on the test's PostgreSQL schema and queue server."""
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "GITHUB_WEBHOOK_SECRET": secret}
    with nofx_web(tmp_path, env) as started:
        yield started
