"""Session memory: what was said and done on an issue or PR thread, so a later run there knows the conversation.

Entries (requests, plans, outcomes, review feedback) are encrypted at rest with Fernet under the keys of
NOFX_MEMORY_KEYS (the first encrypts, all decrypt, so a key can be rotated in: `rotate`), and expire after a TTL.
Without a key, memory is off: nothing is stored, and the log says so once per process.

Threads are named `owner/repo#12` (lower case, as GitHub names are case-insensitive); the API also takes
`owner:repo:12`, which needs no URL-encoding. Entries also record GitHub's repository id, and a run recalls only
entries of its own repository id: a name that now belongs to another repository (renamed, transferred, deleted
and re-created) does not inherit what was said on the old one. The admin API (by name) sees them all.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import delete, update
from sqlmodel import col, select

from bot.models import Run, ThreadMemory, utcnow
from bot.store import Store

log = logging.getLogger(__name__)

KINDS = ("request", "plan", "outcome", "review_feedback", "note")
DEFAULT_TTL_DAYS = 30
MAX_TEXT = 20_000
REDACTED_TEXT = "[redacted]"
_THREAD = re.compile(r"^([A-Za-z0-9._-]{1,100})[/:]([A-Za-z0-9._-]{1,100})[#:](\d{1,10})$")
_said_off = False


class ThreadMemoryError(ValueError):
    """A thread name or an entry kind cannot be used; the message says which and what is allowed."""


@dataclass(frozen=True)
class ThreadKey:
    """An issue or pull request thread of a repository."""

    repository: str  # owner/repo
    number: int
    repository_id: int | None = None  # GitHub's id; None only for the admin API, which addresses threads by name

    def __str__(self) -> str:
        return f"{self.repository.lower()}#{self.number}"

    @classmethod
    def parse(cls, text: str) -> ThreadKey:
        """`owner/repo#12` or `owner:repo:12`."""
        match = _THREAD.match(text.strip())
        if match is None or match[1] in (".", "..") or match[2] in (".", ".."):
            raise ThreadMemoryError(f"not a thread: {text!r}; use owner/repo#12 (URL-encoded) or owner:repo:12")
        return cls(f"{match[1]}/{match[2]}", int(match[3]))


@dataclass(frozen=True)
class Entry:
    """One decrypted memory entry; `text` is None when it can no longer be decrypted (its key was retired)."""

    id: str
    thread: str
    kind: str
    text: str | None
    created_at: datetime
    expires_at: datetime
    redacted: bool = False

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "thread": self.thread,
            "kind": self.kind,
            "text": self.text,
            "redacted": self.redacted,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
        }


def effective_ttl_days(server_days: int, repo_days: int | None) -> int:
    """The server's NOFX_MEMORY_TTL_DAYS is the most any repository keeps; `memory_ttl_days` may ask for less."""
    return min(server_days, repo_days) if repo_days else server_days


def enabled(keys: Sequence[str]) -> bool:
    return bool(keys)


def remember(
    store: Store, keys: Sequence[str], thread: ThreadKey, kind: str, text: str, ttl_days: int = DEFAULT_TTL_DAYS
) -> Entry | None:
    """Store one entry, encrypted with the first key; None (and nothing stored) when memory is off."""
    if kind not in KINDS:
        raise ThreadMemoryError(f"unknown memory kind {kind!r}; kinds are {', '.join(KINDS)}")
    cipher = _cipher(keys)
    if cipher is None:
        return None
    text = text[:MAX_TEXT]
    now = utcnow()
    row = ThreadMemory(
        id=uuid.uuid4().hex,
        thread=str(thread),
        kind=kind,
        repository_id=thread.repository_id,
        ciphertext=cipher.encrypt(text.encode("utf-8")).decode("ascii"),
        created_at=now,
        expires_at=now + timedelta(days=max(ttl_days, 1)),
    )
    with store.session() as session:
        session.add(row)
    return Entry(row.id, row.thread, kind, text, row.created_at, row.expires_at)


def recall(store: Store, keys: Sequence[str], thread: ThreadKey, limit: int = 20) -> list[Entry]:
    """The thread's latest `limit` live entries, oldest first, for a prompt; redacted and expired ones are left out."""
    if _cipher(keys) is None:
        return []
    found = entries(store, keys, thread, limit=limit, include_redacted=False, same_repository=True)
    return [e for e in found if e.text is not None]


def entries(
    store: Store,
    keys: Sequence[str],
    thread: ThreadKey,
    *,
    limit: int = 200,
    include_redacted: bool = True,
    same_repository: bool = False,
) -> list[Entry]:
    """Unexpired entries, decrypted, oldest first (the admin view keeps redacted ones, without their text).

    `same_repository`: only entries recorded for the thread's repository id (for a prompt), never those of an
    earlier repository that had the same name, nor entries from before ids were recorded.
    """
    cipher = _cipher(keys, quiet=True)
    statement = select(ThreadMemory).where(ThreadMemory.thread == str(thread), col(ThreadMemory.expires_at) > utcnow())
    if same_repository:
        owner = col(ThreadMemory.repository_id)
        statement = statement.where(owner.is_(None) if thread.repository_id is None else owner == thread.repository_id)
    if not include_redacted:
        statement = statement.where(col(ThreadMemory.redacted).is_(False))
    with store.session() as session:
        rows = list(session.exec(statement.order_by(col(ThreadMemory.created_at).desc()).limit(limit)))
    return [_decrypt(cipher, row) for row in reversed(rows)]


def forget(store: Store, thread: ThreadKey) -> int:
    """Delete everything remembered on a thread (`/nofx forget`, `DELETE /threads/{id}/memory`); returns how many."""
    with store.session() as session:
        result = session.exec(delete(ThreadMemory).where(col(ThreadMemory.thread) == str(thread)))
        return int(result.rowcount or 0)


def redact(store: Store, keys: Sequence[str], thread: ThreadKey, entry_id: str) -> bool:
    """Blank one entry's text but keep that it existed (the conversation shows a gap, not a silent edit)."""
    cipher = _cipher(keys, quiet=True)
    blank = cipher.encrypt(REDACTED_TEXT.encode()).decode("ascii") if cipher else ""
    with store.session() as session:
        result = session.exec(
            update(ThreadMemory)
            .where(col(ThreadMemory.id) == entry_id, col(ThreadMemory.thread) == str(thread))
            .values(ciphertext=blank, redacted=True)
        )
        return bool(result.rowcount)


def purge_expired(store: Store) -> int:
    """Delete entries past their TTL (the worker's sweeper calls this); returns how many."""
    with store.session() as session:
        result = session.exec(delete(ThreadMemory).where(col(ThreadMemory.expires_at) <= utcnow()))
        return int(result.rowcount or 0)


def rotate(store: Store, keys: Sequence[str], batch: int = 500) -> int:
    """Re-encrypt every entry with the first key (after putting a new key first in NOFX_MEMORY_KEYS); entries no
    key can read are left as they are and counted out. Returns how many were re-encrypted."""
    cipher = _cipher(keys, quiet=True)
    if cipher is None:
        raise ThreadMemoryError("NOFX_MEMORY_KEYS is empty: there is no key to rotate to")
    rotated, last_id = 0, ""
    while True:
        with store.session() as session:
            rows = list(
                session.exec(
                    select(ThreadMemory)
                    .where(col(ThreadMemory.id) > last_id)
                    .order_by(col(ThreadMemory.id))
                    .limit(batch)
                )
            )
            for row in rows:
                if not row.ciphertext:
                    continue
                try:
                    row.ciphertext = cipher.rotate(row.ciphertext.encode("ascii")).decode("ascii")
                except InvalidToken:
                    log.warning("memory entry %s cannot be decrypted with any configured key; left as it is", row.id)
                    continue
                session.add(row)
                rotated += 1
        if len(rows) < batch:
            return rotated
        last_id = rows[-1].id


def _cipher(keys: Sequence[str], *, quiet: bool = False) -> MultiFernet | None:
    global _said_off
    if not keys:
        if not quiet and not _said_off:
            _said_off = True
            log.info("thread memory is off: NOFX_MEMORY_KEYS is not set, so no conversation is stored")
        return None
    return MultiFernet([Fernet(key.encode("ascii")) for key in keys])


def _decrypt(cipher: MultiFernet | None, row: ThreadMemory) -> Entry:
    text: str | None = None
    if row.redacted:
        text = None
    elif cipher is not None and row.ciphertext:
        try:
            text = cipher.decrypt(row.ciphertext.encode("ascii")).decode("utf-8")
        except InvalidToken:
            log.warning("memory entry %s cannot be decrypted with the configured keys", row.id)
    return Entry(row.id, row.thread, row.kind, text, row.created_at, row.expires_at, row.redacted)


class ThreadMemoryConfig:
    """The keys and longest TTL of thread memory (NOFX_MEMORY_KEYS, NOFX_MEMORY_TTL_DAYS); no keys: memory off."""

    def __init__(self, keys: tuple[str, ...] = (), ttl_days: int = 30) -> None:
        self.keys = keys
        self.ttl_days = ttl_days

    def thread(self, run: Run) -> ThreadKey:
        return ThreadKey(run.repository, run.thread_number, run.repository_id)

    def remember(self, store: Store, run: Run, kind: str, text: str) -> None:
        ttl = effective_ttl_days(self.ttl_days, run.config.get("memory_ttl_days"))
        remember(store, self.keys, self.thread(run), kind, text, ttl_days=ttl)

    def remember_thread(self, store: Store, thread: ThreadKey, kind: str, text: str) -> None:
        remember(store, self.keys, thread, kind, text, ttl_days=self.ttl_days)

    def recall(self, store: Store, thread: ThreadKey) -> list[str]:
        entries = recall(store, self.keys, thread)
        return [f"[{e.kind}, {e.created_at:%Y-%m-%d}] {e.text}" for e in entries]
