"""Intake's group commit on SQLite: one multi-row INSERT per batch, straight on a sqlite3 connection of its own.

Through SQLAlchemy's executemany a batch of eight 14 KB deliveries cost ~170 µs of CPU per delivery,
two thirds of it building, compiling and binding the statement; SQLite's own work is the rest. Here the statement
is one fixed text per batch size (sqlite3 caches it prepared) bound with plain tuples, on one connection the
intake keeps (from the store's pool, so with the store's pragmas: WAL, busy timeout, no automatic checkpoint in
the web). The transaction starts with `BEGIN IMMEDIATE`: with several web processes, a writer waits for the write
lock on the busy timeout, where a deferred transaction upgrading to a write could fail at once as busy.

The web processes' writers take turns on an advisory lock (`flock`) beside the database first. SQLite's busy
handler polls, sleeping 1, 2, 5, 10, 15, 20 … ms between tries, while the other process commits batch after batch
without a pause: a writer that lost the lock waited tens of milliseconds (two processes' p99 was 45-55 ms in
bench/intake.py). The kernel wakes a writer blocked on `flock` as soon as the lock is let go. The lock dies with its
process (kill -9 included); SQLite's own locking still guards the database from everyone else (workers, the CLI).

The event loop writes a batch itself when neither lock is held at that instant and the batch is small (`try_now`: no
hop to a thread and back, and its RPUSH then goes out on the loop); otherwise the intake's thread writes it, waiting
for both locks (`__call__`) and polling SQLite's write lock every quarter of a millisecond where SQLite's busy
handler would sleep 1, 2, 5, 10 … ms.

The intake also checkpoints the WAL after every 2 MB of payloads its process wrote (`checkpoint`, on a thread of its
own once the batch that crossed it is answered). A checkpoint beside the writers copies the frames that were in the
WAL when it began; under a burst they append meanwhile, it never catches up, and SQLite starts the WAL from its
beginning again only once every frame is copied: with a checkpoint thread every 0.5 s the WAL grew to 2 GB in 12 s of
bench/intake.py, and a sixth of the web's CPU went to the kernel zeroing the new file blocks. So the checkpoints copy
beside the writers, and after every 16 MB one more pass runs in the writers' turn: it copies only what they appended
meanwhile, and the next batch writes over the WAL's start. That pass syncs the database file (SQLite syncs it only
once a checkpoint has copied every frame), which holds the 16 MB the passes before it copied: the files are synced
beside the writers first, so that the pass in their turn has only its own pages to sync.

Measured in bench/intake.py (SQLite only, three runs each, one machine): with all of every 2 MB checkpoint in the
writers' turn, batches waited behind checkpoints a quarter of a burst (8 ms each, median, 21 ms p90; 400 in 13 s)
and deliveries/s were 0.66-0.72x Probot's, 0.74-0.88x once most of the copy ran beside the writers. Then, with a pass
in the turn every 2 MB: 6,138-6,711 deliveries/s, p99 8-10 ms, the pass 4.4-4.8 ms (median); every 16 MB without
the syncs beside: 6,125-6,763, p99 16-19 ms, the pass 14-16 ms; every 16 MB with them: 6,678-7,552, p99 8-10 ms,
the pass 4.2-5.1 ms.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bot.deliveries import Incoming, Recorded
from bot.models import DeliveryStatus, utcnow
from bot.store import SQLITE_BUSY_TIMEOUT_S, Store

_COLUMNS = "id, event, action, installation_id, repository, payload, status, reason, attempts, received_at, updated_at"
# How SQLAlchemy's SQLite DateTime stores a time (naive UTC text), so the ORM reads these rows like its own.
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
# Payload bytes written between two checkpoints (SQLite's own automatic checkpoint is at 1,000 pages, 4 MB).
CHECKPOINT_EVERY_BYTES = 2 * 1024 * 1024
# Payload bytes between two starts over of the WAL, which need a checkpoint pass in the writers' turn: the file stays
# at about this size (SQLite reuses it).
RESTART_EVERY_BYTES = 16 * 1024 * 1024
BUSY_POLL_S = 0.00025
# Payload bytes the event loop writes itself: ~5 ms for 1 MB, where a 25 MB delivery took 138 ms that the loop would
# not have read, parsed or answered anything.
LOOP_WRITE_MAX_BYTES = 1024 * 1024

log = logging.getLogger(__name__)


class SqliteRecorder:
    """Records a group commit's batch: a row per new id, and one answer per delivery, in order.

    Used by one group commit writer at a time (SQLite has a single writer): `try_now` from the event loop, which never
    waits and writes the batch only if nobody else is writing; `__call__` from the intake's thread otherwise.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._pooled: Any = None  # the pool's wrapper around the connection, given back at `close`
        database = store.engine.url.database
        # A file database's writers share a lock file; an in-memory one has a single process.
        self._database = database if database and database != ":memory:" else None
        self._lock_path = f"{self._database}-intake-lock" if self._database else None
        # Opened by the process that writes (after the web's fork): a flock belongs to one open file, so this
        # process's own turn (the event loop's batch, the thread's batch or checkpoint) is a lock of its own.
        self._lock_fd: int | None = None
        self._process_turn = threading.Lock()
        # Payload bytes this process wrote (counted in the writers' turn), and that count at the last checkpoint's claim
        # (by the event loop) and at the WAL's last start over (in the writers' turn).
        self._written = 0
        self._written_at_checkpoint = 0
        self._written_at_restart = 0
        self._checkpointing = False  # a checkpoint was claimed and has not ended
        self._checkpointer: Any = None  # the pool's wrapper around the checkpoints' connection

    def __call__(self, batch: list[Incoming], ignore_reasons: list[str | None]) -> list[Recorded]:
        """Write the batch, waiting for the writers' turn and for SQLite's write lock."""
        with self.writers_turn():
            answers = self._write(batch, ignore_reasons, wait=True)
        assert answers is not None  # it waited for the write lock
        return answers

    def try_now(self, batch: list[Incoming], ignore_reasons: list[str | None]) -> list[Recorded] | None:
        """Write the batch if it is quick to: the writers' turn and SQLite's write lock are free this instant, and
        the batch is under `LOOP_WRITE_MAX_BYTES`; None otherwise."""
        if sum(len(delivery.body) for delivery in batch) > LOOP_WRITE_MAX_BYTES:
            return None
        with self.writers_turn(wait=False) as ours:
            return self._write(batch, ignore_reasons, wait=False) if ours else None

    def claim_checkpoint(self) -> bool:
        """True once per `CHECKPOINT_EVERY_BYTES` written, for one caller (the event loop) to run `checkpoint`."""
        if self._checkpointing or self._written - self._written_at_checkpoint < CHECKPOINT_EVERY_BYTES:
            return False
        self._checkpointing = True
        self._written_at_checkpoint = self._written
        return True

    def checkpoint(self) -> None:
        """Copy the WAL into the database beside the writers; after every `RESTART_EVERY_BYTES`, also what they
        appended meanwhile, in their turn, so that the next batch starts the WAL over."""
        try:
            if self._checkpointer is None:
                self._checkpointer = self._store.engine.raw_connection()
            conn: sqlite3.Connection = self._checkpointer.driver_connection
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if self._written - self._written_at_restart >= RESTART_EVERY_BYTES:
                if self._database is not None:  # the pass in the turn then syncs only what it copies
                    _sync(self._database)
                    _sync(f"{self._database}-wal")
                with self.writers_turn():
                    self._written_at_restart = self._written
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except (sqlite3.Error, OSError):  # another checkpoint in the way, say: the next one catches up
            log.warning("WAL checkpoint failed", exc_info=True)
        finally:
            self._checkpointing = False

    def close(self) -> None:
        if self._pooled is not None:
            self._pooled.driver_connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
            self._pooled.close()
            self._pooled = None
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @contextmanager
    def writers_turn(self, *, wait: bool = True) -> Iterator[bool]:
        """Hold this process's turn and the web processes' writer lock, waiting until the writer holding either
        lets go; with `wait=False`, yields False at once instead."""
        if not self._process_turn.acquire(blocking=wait):
            yield False
            return
        try:
            if self._lock_path is None:
                yield True
                return
            if self._lock_fd is None:
                self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            if not _flock(self._lock_fd, wait=wait):
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        finally:
            self._process_turn.release()

    def _write(self, batch: list[Incoming], ignore_reasons: list[str | None], *, wait: bool) -> list[Recorded] | None:
        if self._pooled is None:
            self._pooled = self._store.engine.raw_connection()
            self._pooled.driver_connection.execute("PRAGMA busy_timeout=0")  # `_begin` waits; given back at `close`
        conn: sqlite3.Connection = self._pooled.driver_connection
        try:
            if not _begin(conn, wait=wait):
                return None
            answers = _record(conn, batch, ignore_reasons)
            conn.commit()
        except BaseException:
            self._discard()
            raise
        self._written += sum(len(delivery.body) for delivery in batch)
        return answers

    def _discard(self) -> None:
        """After a failed batch: roll back, and drop the connection whose state is unknown."""
        pooled, self._pooled = self._pooled, None
        try:
            pooled.driver_connection.rollback()
        finally:
            pooled.invalidate()


def _sync(path: str) -> None:
    """Write a file's changed pages to disk (any descriptor of a file syncs all of them)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


def _flock(fd: int, *, wait: bool) -> bool:
    """Take the exclusive lock on `fd`; False if another holds it and `wait` is False."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _begin(conn: sqlite3.Connection, *, wait: bool) -> bool:
    """`BEGIN IMMEDIATE`: False if another connection (a worker's) holds the write lock and `wait` is False;
    otherwise retried every `BUSY_POLL_S` for up to the store's busy timeout, where SQLite's busy handler would
    sleep 1, 2, 5, 10 … ms between its tries while a worker's write takes well under one."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return True
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
            if not wait:
                return False
        time.sleep(BUSY_POLL_S)


def _record(conn: sqlite3.Connection, batch: list[Incoming], ignore_reasons: list[str | None]) -> list[Recorded]:
    first: dict[str, tuple[Incoming, str | None]] = {}
    for delivery, reason in zip(batch, ignore_reasons, strict=True):
        first.setdefault(delivery.id, (delivery, reason))
    now = utcnow().strftime(_TIME_FORMAT)
    values: list[Any] = []
    for delivery, reason in first.values():
        status = DeliveryStatus.queued if reason is None else DeliveryStatus.ignored
        values += (delivery.id, delivery.event, delivery.action, delivery.installation_id, delivery.repository)
        values += (delivery.body, status.value, reason, 0, now, now)
    inserted = {row[0] for row in conn.execute(_insert(len(first)), values)}
    known = [delivery_id for delivery_id in first if delivery_id not in inserted]
    stored: dict[str, tuple[str, str | None]] = {}
    if known:
        query = f"SELECT id, status, reason FROM delivery WHERE id IN ({', '.join('?' * len(known))})"  # noqa: S608 (placeholders only)
        stored = {row[0]: (row[1], row[2]) for row in conn.execute(query, known)}
    answers: list[Recorded] = []
    claimed: set[str] = set()
    for delivery in batch:
        reason = first[delivery.id][1]
        own = (DeliveryStatus.queued if reason is None else DeliveryStatus.ignored).value, reason
        if delivery.id in inserted and delivery.id not in claimed:  # the first copy in the batch is the new one
            claimed.add(delivery.id)
            answers.append(Recorded(DeliveryStatus(own[0]), reason, new=True))
        else:
            status, stored_reason = stored.get(delivery.id, own)
            answers.append(Recorded(DeliveryStatus(status), stored_reason, new=False))
    return answers


@functools.cache
def _insert(rows: int) -> str:
    """The batch's INSERT for `rows` rows: one text per batch size, so sqlite3's statement cache keeps it."""
    row = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    return (
        f"INSERT INTO delivery ({_COLUMNS}) VALUES {', '.join([row] * rows)} "  # noqa: S608 (placeholders only)
        "ON CONFLICT (id) DO NOTHING RETURNING id"
    )
