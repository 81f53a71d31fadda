"""Database engine and sessions: SQLite (WAL) by default, PostgreSQL through DATABASE_URL."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, LiteralString

from sqlalchemy import event, inspect, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect, Engine, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import ConnectionPoolEntry
from sqlmodel import Session, SQLModel, create_engine

from bot import models  # also registers the tables on SQLModel.metadata
from bot.settings import RunLimits

log = logging.getLogger(__name__)
ADMISSION_LOCK = 0x6E6F6678  # "nofx": the key of the PostgreSQL advisory lock `serialized` takes
SCHEMA_LOCK = ADMISSION_LOCK + 1  # the one `create_all` takes
# A pooled server connection idle this long is pinged before use (a restarted server, an idle-connection killer);
# one handed back a moment ago is not: a burst of deliveries pays no SELECT 1 per session.
PING_IDLE_AFTER_S = 1.0
# Indexes an older nofx created that no query uses, dropped by `create_all`: each cost a b-tree write per delivery.
RETIRED_INDEXES = ("ix_delivery_event", "ix_delivery_installation_id")
# How long a SQLite connection waits for another's write lock before its statement fails as busy.
SQLITE_BUSY_TIMEOUT_S = 30
# The WAL file's size once SQLite starts it over. While a reader keeps a snapshot (`nofx serve`'s workers under a burst
# of deliveries), checkpoints cannot copy past it and the WAL grows (566 MB in 16 s of bench/intake.py); SQLite then
# reuses the file, never shrinking it, so that burst's size would stay on disk for good. Over the size the intake's
# checkpoints keep (`bot.web.sqlite_intake`, ~20 MB), so that those never cut and regrow it.
WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024
# PostgreSQL's type of delivery.payload: text, or json in a database an older nofx created (`models.PayloadText`).
PAYLOAD_COLUMN_TYPE: LiteralString = (
    "SELECT format_type(atttypid, NULL) FROM pg_attribute WHERE attrelid = to_regclass('delivery') "
    "AND attname = 'payload'"
)
# What turns an older database's json payload column into text: it rewrites the table, under a lock that holds
# the intake's writes meanwhile, so it is the operator's to run at a quiet moment (`nofx doctor` says so).
PAYLOAD_TO_TEXT = "ALTER TABLE delivery ALTER COLUMN payload TYPE text"
POOL_RECYCLE_S = 1800  # and none is kept longer than this (load balancers and poolers drop old connections)


class Store:
    """Owns the engine; hands out short sessions. One per process, built by an entry point."""

    def __init__(self, url: str, *, run_limits: RunLimits | None = None, auto_checkpoint: bool = True) -> None:
        """`auto_checkpoint=False`: on SQLite, no commit of this process checkpoints the WAL (the web process: its
        intake checkpoints beside its batches, `bot.web.sqlite_intake`; SQLite's automatic
        checkpoint copies the WAL into the database and syncs it in whichever commit crossed 1,000 pages, tens of
        milliseconds on a busy disk that the deliveries of that batch would wait for)."""
        self.url = url
        self.engine = _engine(url, auto_checkpoint=auto_checkpoint)
        self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self.run_limits = run_limits or RunLimits()  # read where runs are admitted (`bot.runs.admission`)

    def create_all(self) -> None:
        """Create missing tables, add the nullable columns a newer nofx added to an existing table, and drop the
        indexes it no longer keeps.

        Only additive, nullable columns are migrated in place; anything else would need a real migration. On
        PostgreSQL the processes starting together (web, workers) take turns: two `CREATE TYPE`s of the same enum
        at once fail one of them (a unique violation in the catalog).
        """
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
            SQLModel.metadata.create_all(conn)
            _add_missing_columns(conn)
            for index in RETIRED_INDEXES:
                conn.execute(text(f"DROP INDEX IF EXISTS {index}"))

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        with Session(self.engine, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    @contextmanager
    def autocommit(self) -> Iterator[Connection]:
        """A connection on which every statement is its own transaction: a one-statement read or write costs one
        round trip (no BEGIN, no COMMIT). For the hot path of routing a delivery; anything that writes two rows
        together takes `session()`."""
        with self._autocommit.connect() as conn:
            yield conn

    @contextmanager
    def serialized(self) -> Iterator[Session]:
        """A session that holds the database's one admission lock until it commits: writers that decide from a
        count (how many runs are active) take turns instead of both acting on the same stale count."""
        with self.session() as session:
            if session.get_bind().dialect.name == "postgresql":
                session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADMISSION_LOCK})
            else:  # SQLite: take the write lock now, not at the first write
                session.execute(text("BEGIN IMMEDIATE"))
            yield session

    def ping(self) -> None:
        """Raise if the database does not answer (used by /readyz)."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def payload_column_type(self) -> str | None:
        """PostgreSQL's type of the delivery payload column (None on SQLite, or before the table exists)."""
        if self.engine.dialect.name != "postgresql":
            return None
        with self.engine.connect() as conn:
            kind = conn.execute(text(PAYLOAD_COLUMN_TYPE)).scalar()
        return None if kind is None else str(kind)

    def dispose(self) -> None:
        self.engine.dispose()


def _add_missing_columns(conn: Connection) -> None:
    existing = inspect(conn)
    for table in SQLModel.metadata.sorted_tables:
        have = {column["name"] for column in existing.get_columns(table.name)}
        for column in table.columns:
            if column.name in have or not column.nullable:
                continue
            kind = column.type.compile(dialect=conn.dialect)
            conn.execute(text(f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {kind}'))


def upsert(
    session: Session,
    table: type[SQLModel],
    values: dict[str, Any],
    *,
    keys: list[str],
    insert_only: tuple[str, ...] = (),
) -> None:
    """Insert a row or update it in one statement, so processes writing the same row at once never collide.

    Columns in `insert_only` are written when the row is new and left as they are otherwise.
    """
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(table).values(**values)
    updates = {name: statement.excluded[name] for name in values if name not in keys and name not in insert_only}
    if not updates:
        session.execute(statement.on_conflict_do_nothing(index_elements=keys))
        return
    session.execute(statement.on_conflict_do_update(index_elements=keys, set_=updates))


def _engine(url: str, *, auto_checkpoint: bool = True) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        engine = create_engine(url, pool_recycle=POOL_RECYCLE_S, json_serializer=models.json_text)
        event.listen(engine.pool, "checkin", _mark_idle)
        event.listen(engine.pool, "checkout", functools.partial(_ping_if_idle, engine.dialect))
        return engine
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S},
        json_serializer=models.json_text,
    )
    event.listen(engine, "connect", _sqlite_pragmas)
    if not auto_checkpoint:
        event.listen(engine, "connect", _no_auto_checkpoint)
    return engine


def _mark_idle(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    record.info["idle_since"] = time.monotonic()


def _ping_if_idle(dialect: Dialect, dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
    """`pool_pre_ping`, for connections that sat idle: SQLAlchemy's custom pessimistic ping. A dead one raises
    DisconnectionError, on which the pool drops it and connects afresh before handing a connection out.

    A connection used within the last PING_IDLE_AFTER_S is not pinged. It fails only if the server dropped it in
    that moment; SQLAlchemy then invalidates every pooled connection older than the error, so the next ones are
    new: the same as a server dying under a query, which pinging never prevented.
    """
    idle_since = record.info.get("idle_since")
    if idle_since is None or time.monotonic() - idle_since < PING_IDLE_AFTER_S:
        return
    try:
        dialect.do_ping(dbapi_connection)
    except dialect.loaded_dbapi.Error as exc:
        raise DisconnectionError(f"an idle pooled connection is dead: {type(exc).__name__}") from exc


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the web process write deliveries while workers read and write runs.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
    cursor.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
    cursor.close()


def _no_auto_checkpoint(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA wal_autocheckpoint=0")
    cursor.close()
