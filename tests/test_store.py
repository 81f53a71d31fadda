"""The store on SQLite and on PostgreSQL: deliveries recorded once, claimed once, statuses constrained."""

from __future__ import annotations

import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from gidgethub import sansio
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError, StatementError
from sqlmodel import select

from bot import deliveries
from bot import store as store_module
from bot.events import installations
from bot.events.context import EventContext
from bot.models import AppIdentity, Delivery, DeliveryStatus, Installation, Repository, utcnow
from bot.queue import WorkQueue
from bot.runs.engine import Engine
from bot.settings import Settings
from bot.store import WAL_SIZE_LIMIT_BYTES, Store, upsert
from bot.web.sqlite_intake import SqliteRecorder
from tests.support.payloads import load_payload


def _delivery(delivery_id: str = "d-1", event: str = "issue_comment") -> Delivery:
    return deliveries.describe(delivery_id, event, load_payload("issue_comment.created"))


def test_a_delivery_is_recorded_once(any_store: Store) -> None:
    first, new = deliveries.record(any_store, _delivery())
    again, new_again = deliveries.record(any_store, _delivery())

    assert (new, new_again) == (True, False)
    assert again.id == first.id and again.payload == first.payload
    assert again.received_at.tzinfo is not None


def test_only_one_of_many_concurrent_claims_wins(any_store: Store) -> None:
    deliveries.record(any_store, _delivery())
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: deliveries.claim(any_store, "d-1"), range(8)))

    assert sum(result is not None for result in results) == 1
    row = deliveries.get(any_store, "d-1")
    assert row is not None and row.status == DeliveryStatus.processing and row.attempts == 1


def test_finished_delivery_can_be_reset_for_replay_but_not_one_in_flight(any_store: Store) -> None:
    deliveries.record(any_store, _delivery())
    assert deliveries.claim(any_store, "d-1") is not None
    assert not deliveries.reset_for_replay(any_store, "d-1")  # still processing

    deliveries.finish(any_store, "d-1", DeliveryStatus.failed, "RuntimeError: boom")
    failed = deliveries.get(any_store, "d-1")
    assert failed is not None and failed.reason == "RuntimeError: boom"

    assert deliveries.reset_for_replay(any_store, "d-1")
    replayed = deliveries.get(any_store, "d-1")
    assert replayed is not None and replayed.status == DeliveryStatus.queued and replayed.reason is None
    assert not deliveries.reset_for_replay(any_store, "unknown")


def test_database_refuses_an_unknown_status(any_store: Store) -> None:
    deliveries.record(any_store, _delivery())
    with pytest.raises((IntegrityError, StatementError)), any_store.session() as session:
        session.execute(text("UPDATE delivery SET status = 'exploded' WHERE id = 'd-1'"))


def test_stale_received_lists_only_old_never_enqueued_deliveries(any_store: Store) -> None:
    old = _delivery("old")
    old.received_at = utcnow() - timedelta(minutes=5)
    deliveries.record(any_store, old)
    deliveries.record(any_store, _delivery("fresh"))
    queued = _delivery("queued")
    queued.received_at = utcnow() - timedelta(minutes=5)
    deliveries.record(any_store, queued)
    deliveries.mark_queued(any_store, "queued")

    assert deliveries.stale_received(any_store, timedelta(seconds=30)) == ["old"]


async def test_installation_events_keep_the_tables_current(any_store: Store, queue: WorkQueue, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=any_store.url, redis_url=None)
    engine = Engine(any_store, queue, handlers={})
    ctx = EventContext(settings=settings, store=any_store, queue=queue, github=None, after=engine.after)
    created = load_payload("installation.created")
    created["installation"]["id"] = 3_000_000_000  # ids beyond 32 bits exist on github.com

    await installations.router.dispatch(sansio.Event(created, event="installation", delivery_id="1"), ctx)
    added = load_payload("installation_repositories.added")
    added["installation"] = created["installation"]
    await installations.router.dispatch(sansio.Event(added, event="installation_repositories", delivery_id="2"), ctx)
    suspended = {**load_payload("installation.suspend"), "installation": created["installation"]}
    await installations.router.dispatch(sansio.Event(suspended, event="installation", delivery_id="3"), ctx)

    with any_store.session() as session:
        installation = session.get(Installation, 3_000_000_000)
        repos = session.exec(select(Repository).where(Repository.installation_id == 3_000_000_000)).all()
    assert installation is not None
    assert installation.account_login == created["installation"]["account"]["login"]
    assert installation.suspended
    expected = {r["full_name"] for r in created.get("repositories", []) + added["repositories_added"]}
    assert {r.full_name for r in repos} == expected

    deleted = {**load_payload("installation.deleted"), "installation": created["installation"]}
    await installations.router.dispatch(sansio.Event(deleted, event="installation", delivery_id="4"), ctx)
    with any_store.session() as session:
        installation = session.get(Installation, 3_000_000_000)
        assert installation is not None and installation.removed
        assert all(r.removed for r in session.exec(select(Repository)).all())


def test_a_delivery_abandoned_mid_dispatch_is_failed_for_replay(any_store: Store) -> None:
    deliveries.record(any_store, _delivery("stuck"))
    deliveries.claim(any_store, "stuck")
    with any_store.session() as session:
        session.execute(
            text("UPDATE delivery SET updated_at = :t WHERE id = 'stuck'"), {"t": utcnow() - timedelta(hours=1)}
        )

    assert deliveries.fail_abandoned(any_store, timedelta(minutes=10)) == ["stuck"]
    row = deliveries.get(any_store, "stuck")
    assert row is not None and row.status == DeliveryStatus.failed and "nofx replay" in (row.reason or "")
    assert deliveries.fail_abandoned(any_store, timedelta(minutes=10)) == []


def test_workers_writing_the_identity_row_at_once_never_collide(any_store: Store) -> None:
    def write(n: int) -> None:
        with any_store.session() as session:
            upsert(
                session,
                AppIdentity,
                {"id": 7, "slug": f"nofx-{n}", "name": "nofx", "updated_at": utcnow()},
                keys=["id"],
            )

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(16)))  # raises if any writer hit an IntegrityError

    with any_store.session() as session:
        rows = session.exec(select(AppIdentity)).all()
    assert len(rows) == 1 and rows[0].slug.startswith("nofx-")


def test_create_all_adds_the_nullable_columns_a_newer_nofx_added(any_store: Store) -> None:
    """A database made by an older nofx gains the new nullable columns in place, its rows kept."""
    with any_store.engine.begin() as conn:
        conn.execute(text("ALTER TABLE threadmemory DROP COLUMN repository_id"))
        conn.execute(
            text(
                "INSERT INTO threadmemory (id, thread, kind, ciphertext, redacted, created_at, expires_at) "
                "VALUES ('old', 'o/r#1', 'note', 'x', false, '2026-01-01 00:00:00', '2030-01-01 00:00:00')"
            )
        )

    any_store.create_all()
    any_store.create_all()  # twice: nothing left to add

    with any_store.engine.begin() as conn:
        rows = conn.execute(text("SELECT id, repository_id FROM threadmemory")).all()
    assert [tuple(row) for row in rows] == [("old", None)]


def test_a_store_without_automatic_checkpoints_leaves_them_out_of_commits(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'web.db'}", auto_checkpoint=False)
    store.create_all()
    payload = load_payload("issue_comment.created")
    body = json.dumps(payload)
    record = SqliteRecorder(store)  # the intake's writer, on a connection from the store's pool
    for batch in range(10):  # ~5 MB: SQLite's own checkpoint would have run at 1,000 pages (4 MB)
        rows = [deliveries.incoming(f"c-{batch}-{n}", "issue_comment", payload, body) for n in range(35)]
        record(rows, [None] * len(rows))
    record.close()

    with store.engine.connect() as conn:
        _busy, frames, copied = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()

    assert frames > 1000 and copied == frames  # all of it was still in the WAL, for this checkpoint to copy
    assert deliveries.get(store, "c-9-34") is not None
    store.dispose()


def test_an_idle_connection_the_server_dropped_is_replaced_before_use(
    postgres_url: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No `pool_pre_ping` on every checkout: a connection idle past PING_IDLE_AFTER_S is pinged, and a dead one is
    swapped for a new one instead of failing the session that took it."""
    if postgres_url is None:
        pytest.skip("no PostgreSQL answers on 127.0.0.1:5432 (set NOFX_TEST_POSTGRES_URL to require one)")
    store = Store(postgres_url)
    try:
        with store.autocommit() as conn:
            first = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with Store(postgres_url).engine.connect() as admin:  # the server drops the pooled, idle connection
            assert admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first}).scalar_one()
        monkeypatch.setattr(store_module, "PING_IDLE_AFTER_S", 0.0)  # it has been idle long enough

        with store.session() as session:
            second = session.execute(text("SELECT pg_backend_pid()")).scalar_one()

        assert second != first
    finally:
        store.dispose()


def test_create_all_drops_the_delivery_indexes_no_query_uses(any_store: Store) -> None:
    any_store.create_all()
    with any_store.engine.begin() as conn:  # as an older nofx created them
        conn.execute(text("CREATE INDEX ix_delivery_event ON delivery (event)"))
        conn.execute(text("CREATE INDEX ix_delivery_installation_id ON delivery (installation_id)"))

    any_store.create_all()

    with any_store.engine.connect() as conn:
        indexes = {index["name"] for index in inspect(conn).get_indexes("delivery")}
    assert indexes == {"ix_delivery_status", "ix_delivery_received_at"}


def test_a_wal_a_reader_let_grow_is_cut_back_to_the_limit_once_it_starts_over(tmp_path: Path) -> None:
    database = tmp_path / "nofx.db"
    store = Store(f"sqlite:///{database}", auto_checkpoint=False)  # as the web's store
    store.create_all()
    payload = load_payload("issue_comment.created")
    body = json.dumps(payload)
    record = SqliteRecorder(store)
    reader = sqlite3.connect(database)  # a worker's read transaction, as under `nofx serve`
    wal = Path(f"{database}-wal")
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM delivery").fetchone()
        batches = 1 + WAL_SIZE_LIMIT_BYTES // (50 * len(body))
        for n in range(batches):
            record([deliveries.incoming(f"g-{n}-{i}", "issue_comment", payload, body) for i in range(50)], [None] * 50)
            if record.claim_checkpoint():
                record.checkpoint()  # copies nothing the reader might still read: the WAL cannot start over
        assert wal.stat().st_size > WAL_SIZE_LIMIT_BYTES
        reader.rollback()  # the reader is done: the next checkpoint copies all of it
        n = batches
        while not record.claim_checkpoint():
            n += 1
            record([deliveries.incoming(f"g-{n}-{i}", "issue_comment", payload, body) for i in range(50)], [None] * 50)
        record.checkpoint()  # so that the next batch starts the WAL over
        record([deliveries.incoming("after", "issue_comment", payload, body)], [None])
        assert wal.stat().st_size <= WAL_SIZE_LIMIT_BYTES
    finally:
        reader.close()
        record.close()
    assert deliveries.get(store, "after") is not None
    store.dispose()
