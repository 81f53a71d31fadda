"""The SQLite intake's writers in several web processes take turns on their lock, not on SQLite's busy polling, and
checkpoint the WAL beside the writers and, now and then, in their turn, so that a burst does not grow it without
bound."""

from __future__ import annotations

import json
import sqlite3
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

from bot import deliveries
from bot.models import DeliveryStatus
from bot.store import Store
from bot.web.sqlite_intake import LOOP_WRITE_MAX_BYTES, RESTART_EVERY_BYTES, SqliteRecorder
from tests.support.payloads import load_payload


def test_a_batch_waits_for_the_writer_holding_the_turn_and_is_written_once_it_lets_go(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'nofx.db'}")
    store.create_all()
    payload = load_payload("issue_comment.created")
    batch = [deliveries.incoming("turn-1", "issue_comment", payload, json.dumps(payload))]
    other, ours = SqliteRecorder(store), SqliteRecorder(store)  # as the writers of two web processes
    try:
        with ThreadPoolExecutor(1) as pool:
            with other.writers_turn():
                writing = pool.submit(ours, batch, [None])
                done, _ = wait([writing], timeout=0.5)
                assert not done  # it waits for the turn, not on SQLite's busy handler
                assert deliveries.get(store, "turn-1") is None
            [recorded] = writing.result(timeout=30)
        assert recorded == deliveries.Recorded(DeliveryStatus.queued, None, new=True)
        assert deliveries.get(store, "turn-1") is not None
    finally:
        other.close()
        ours.close()
        store.dispose()


def test_checkpoints_beside_a_writer_that_never_pauses_still_keep_the_wal_to_a_few_restart_intervals(
    tmp_path: Path,
) -> None:
    database = tmp_path / "nofx.db"
    store = Store(f"sqlite:///{database}", auto_checkpoint=False)  # as the web's store
    store.create_all()
    payload = load_payload("issue_comment.created")
    body = json.dumps(payload)
    batches = 8 * RESTART_EVERY_BYTES // (12 * len(body))  # a burst of eight restart intervals
    writer = SqliteRecorder(store)
    checkpoints: list[Future[None]] = []
    try:
        with ThreadPoolExecutor(1) as checkpointing:  # as the intake's: the writes go on while it copies
            for n in range(batches):
                rows = [deliveries.incoming(f"w-{n}-{i}", "issue_comment", payload, body) for i in range(12)]
                writer(rows, [None] * len(rows))
                if writer.claim_checkpoint():
                    checkpoints.append(checkpointing.submit(writer.checkpoint))
        wal_bytes = Path(f"{database}-wal").stat().st_size
    finally:
        writer.close()
    assert len(checkpoints) >= 8 and all(c.exception() is None for c in checkpoints)
    # Frames appended during a copy beside the writer are left for the next one, so only the passes in the writers'
    # turn start the WAL over: the file (which SQLite reuses, never shrinks) holds a few intervals, not the burst.
    # (Without them it ends at 1.4 times the burst; with them 20-52 MB, more on a busy machine, where the writer here,
    # with no network in the way, gets further ahead of a checkpoint than the intake's would.)
    assert wal_bytes < 4 * RESTART_EVERY_BYTES  # half the burst
    assert deliveries.get(store, f"w-{batches - 1}-11") is not None
    store.dispose()


def test_a_checkpoint_copies_beside_the_writers_and_finishes_in_their_turn(tmp_path: Path) -> None:
    database = tmp_path / "nofx.db"
    store = Store(f"sqlite:///{database}", auto_checkpoint=False)
    store.create_all()
    payload = load_payload("issue_comment.created")
    body = json.dumps(payload)
    other, ours = SqliteRecorder(store), SqliteRecorder(store)
    try:
        for n in range(RESTART_EVERY_BYTES // (50 * len(body)) + 1):  # a restart interval's worth
            ours([deliveries.incoming(f"c-{n}-{i}", "issue_comment", payload, body) for i in range(50)], [None] * 50)
        unchecked = database.stat().st_size
        with ThreadPoolExecutor(1) as pool:
            with other.writers_turn():
                checkpointing = pool.submit(ours.checkpoint)
                deadline = time.monotonic() + 30
                while database.stat().st_size <= unchecked + RESTART_EVERY_BYTES and time.monotonic() < deadline:
                    time.sleep(0.01)
                # While another web process's writer is mid-batch, the first pass copied the WAL into the database...
                assert database.stat().st_size > unchecked + RESTART_EVERY_BYTES
                done, _ = wait([checkpointing], timeout=0.3)
                assert not done  # ...and, a restart interval written, the second waits for the writers' turn
            checkpointing.result(timeout=30)
        with store.engine.connect() as conn:
            _busy, frames, copied = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
        assert frames == copied  # nothing left for another checkpoint
    finally:
        other.close()
        ours.close()
        store.dispose()


def test_the_event_loops_try_never_waits_and_leaves_a_busy_database_to_the_thread(tmp_path: Path) -> None:
    database = tmp_path / "nofx.db"
    store = Store(f"sqlite:///{database}")
    store.create_all()
    payload = load_payload("issue_comment.created")
    body = json.dumps(payload)
    other, ours = SqliteRecorder(store), SqliteRecorder(store)
    worker = sqlite3.connect(database, isolation_level=None)  # a worker's connection, beside the web's
    try:
        with other.writers_turn():  # another web process is writing
            assert ours.try_now([deliveries.incoming("t-1", "issue_comment", payload, body)], [None]) is None
        worker.execute("BEGIN IMMEDIATE")  # a worker holds SQLite's write lock
        started = time.monotonic()
        assert ours.try_now([deliveries.incoming("t-2", "issue_comment", payload, body)], [None]) is None
        assert time.monotonic() - started < 1  # not the busy timeout's 30 s
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(ours, [deliveries.incoming("t-3", "issue_comment", payload, body)], [None])
            done, _ = wait([waiting], timeout=0.3)
            assert not done  # the thread's call waits for the worker's write
            worker.execute("COMMIT")
            [recorded] = waiting.result(timeout=30)
        assert recorded.new
        [now] = ours.try_now([deliveries.incoming("t-4", "issue_comment", payload, body)], [None]) or []
        assert now.new  # nobody else writing: written at once
        written = {i for i in ("t-1", "t-2", "t-3", "t-4") if deliveries.get(store, i) is not None}
        assert written == {"t-3", "t-4"}
    finally:
        worker.close()
        other.close()
        ours.close()
        store.dispose()


def test_the_event_loop_leaves_a_large_batch_to_the_thread(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'nofx.db'}")
    store.create_all()
    payload = {"action": "created", "installation": {"id": 1}, "padding": "x" * LOOP_WRITE_MAX_BYTES}
    large = [deliveries.incoming("large-1", "issue_comment", payload, json.dumps(payload))]
    recorder = SqliteRecorder(store)
    try:
        assert recorder.try_now(large, [None]) is None  # milliseconds the loop would answer nothing in
        [recorded] = recorder(large, [None])
        assert recorded.new and deliveries.get(store, "large-1") is not None
    finally:
        recorder.close()
        store.dispose()
