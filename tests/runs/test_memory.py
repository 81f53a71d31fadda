"""Thread memory on the real database: encrypted at rest (read back with plain SQL), rotated, expired, forgotten,
and administered over the real app."""

from __future__ import annotations

import dataclasses
import logging
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import text, update
from sqlmodel import col, select
from starlette.testclient import TestClient

from bot.models import ThreadMemory, utcnow
from bot.runs import memory
from bot.runs.memory import ThreadKey
from bot.settings import Settings, SettingsError
from bot.store import Store

KEY = Fernet.generate_key().decode()
NEW_KEY = Fernet.generate_key().decode()
API_TOKEN = "api-" + "m" * 30
THREAD = ThreadKey("Octo/Shop", 12)
SECRET_PLAN = "plan: add a cart total, then run the unittest gate"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, api_token=API_TOKEN, memory_keys=(KEY,))


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_TOKEN}"}


def raw_rows(store: Store) -> list[tuple[str, ...]]:
    with store.engine.connect() as conn:
        return [tuple(str(v) for v in row) for row in conn.execute(text("SELECT * FROM threadmemory"))]


def test_entries_are_encrypted_at_rest_and_come_back_in_order(any_store: Store) -> None:
    memory.remember(any_store, [KEY], THREAD, "request", "add a cart total")
    memory.remember(any_store, [KEY], THREAD, "plan", SECRET_PLAN)
    memory.remember(any_store, [KEY], ThreadKey("octo/shop", 13), "request", "another thread")

    rows = raw_rows(any_store)
    assert len(rows) == 3
    dumped = repr(rows)
    assert "cart total" not in dumped and "unittest" not in dumped and "another thread" not in dumped
    ciphertexts = [r.ciphertext for r in _orm_rows(any_store)]
    assert all(Fernet(KEY.encode()).decrypt(c.encode()) for c in ciphertexts)  # really Fernet tokens
    recalled = memory.recall(any_store, [KEY], ThreadKey("octo/SHOP", 12), limit=10)
    assert [(e.kind, e.text) for e in recalled] == [("request", "add a cart total"), ("plan", SECRET_PLAN)]
    assert recalled[0].thread == "octo/shop#12"
    assert [e.text for e in memory.recall(any_store, [KEY], THREAD, limit=1)] == [SECRET_PLAN]  # the latest
    with pytest.raises(memory.ThreadMemoryError, match="unknown memory kind"):
        memory.remember(any_store, [KEY], THREAD, "gossip", "x")


def test_without_a_key_memory_is_off_and_says_so_once(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    memory._said_off = False  # a fresh process
    with caplog.at_level(logging.INFO, logger="bot.runs.memory"):
        assert memory.remember(store, [], THREAD, "request", "add a cart total") is None
        assert memory.remember(store, (), THREAD, "outcome", "failed") is None
        assert memory.recall(store, [], THREAD, 10) == []
    assert raw_rows(store) == []
    assert [r.message for r in caplog.records].count(
        "thread memory is off: NOFX_MEMORY_KEYS is not set, so no conversation is stored"
    ) == 1


def test_rotation_re_encrypts_every_entry_with_the_first_key(any_store: Store) -> None:
    for i in range(5):
        memory.remember(any_store, [KEY], THREAD, "note", f"entry {i}")
    before = {r.id: r.ciphertext for r in _orm_rows(any_store)}

    rotated = memory.rotate(any_store, [NEW_KEY, KEY], batch=2)

    assert rotated == 5
    after = {r.id: r.ciphertext for r in _orm_rows(any_store)}
    assert all(after[i] != before[i] for i in before)
    assert [e.text for e in memory.recall(any_store, [NEW_KEY], THREAD, 10)] == [f"entry {i}" for i in range(5)]
    with pytest.raises(InvalidToken):
        Fernet(KEY.encode()).decrypt(next(iter(after.values())).encode())  # the old key is no longer needed
    # An entry under a key that was dropped is shown without text, never as garbage.
    [entry] = memory.entries(any_store, [Fernet.generate_key().decode()], THREAD, limit=1)
    assert entry.text is None


def test_entries_expire_and_are_purged(any_store: Store) -> None:
    old = memory.remember(any_store, [KEY], THREAD, "request", "long ago", ttl_days=1)
    memory.remember(any_store, [KEY], THREAD, "request", "recent", ttl_days=30)
    assert old is not None
    assert old.expires_at - old.created_at == timedelta(days=1)
    with any_store.session() as session:
        session.exec(  # type: ignore[call-overload]
            update(ThreadMemory).where(ThreadMemory.id == old.id).values(expires_at=utcnow() - timedelta(seconds=1))
        )

    assert [e.text for e in memory.recall(any_store, [KEY], THREAD, 10)] == ["recent"]
    assert memory.purge_expired(any_store) == 1
    assert len(raw_rows(any_store)) == 1
    assert memory.effective_ttl_days(30, 7) == 7 and memory.effective_ttl_days(30, 90) == 30


def test_forget_and_redact(store: Store) -> None:
    first = memory.remember(store, [KEY], THREAD, "review_feedback", "rename total() to sum_total()")
    memory.remember(store, [KEY], THREAD, "outcome", "pull request #13")
    memory.remember(store, [KEY], ThreadKey("octo/shop", 99), "note", "kept")
    assert first is not None

    assert memory.redact(store, [KEY], THREAD, first.id) is True
    assert memory.redact(store, [KEY], ThreadKey("octo/shop", 99), first.id) is False  # not that thread's entry
    assert "sum_total" not in repr(raw_rows(store))
    assert [e.text for e in memory.recall(store, [KEY], THREAD, 10)] == ["pull request #13"]
    assert [(e.redacted, e.text) for e in memory.entries(store, [KEY], THREAD)] == [
        (True, None),
        (False, "pull request #13"),
    ]
    assert memory.forget(store, THREAD) == 2
    assert memory.recall(store, [KEY], THREAD, 10) == []
    assert len(raw_rows(store)) == 1


def test_memory_api_lists_redacts_and_forgets_for_the_token_holder(store: Store, client: TestClient) -> None:
    first = memory.remember(store, [KEY], THREAD, "request", "add a cart total")
    memory.remember(store, [KEY], THREAD, "plan", SECRET_PLAN)
    assert first is not None

    assert client.get("/threads/octo:shop:12/memory").status_code == 401
    listed = client.get("/threads/octo:shop:12/memory", headers=auth()).json()
    assert listed["thread"] == "octo/shop#12" and listed["enabled"] is True
    assert [e["text"] for e in listed["entries"]] == ["add a cart total", SECRET_PLAN]
    encoded = client.get("/threads/Octo%2FShop%2312/memory", headers=auth()).json()
    assert encoded["entries"] == listed["entries"]
    assert client.get("/threads/octo:shop/memory", headers=auth()).status_code == 400

    assert client.delete(f"/threads/octo:shop:12/memory/{first.id}", headers=auth()).json()["redacted"] == first.id
    assert client.delete("/threads/octo:shop:12/memory/nope", headers=auth()).status_code == 404
    shown = client.get("/threads/octo:shop:12/memory", headers=auth()).json()["entries"]
    assert [(e["redacted"], e["text"]) for e in shown] == [(True, None), (False, SECRET_PLAN)]
    assert client.delete("/threads/octo:shop:12/memory", headers=auth()).json() == {
        "thread": "octo/shop#12",
        "deleted": 2,
    }
    assert client.get("/threads/octo:shop:12/memory", headers=auth()).json()["entries"] == []


def test_keys_come_from_the_environment_and_are_redacted_from_logs(tmp_path: Path) -> None:
    none = tmp_path / "no.env"
    settings = Settings.from_env(
        {"NOFX_MEMORY_KEYS": f" {NEW_KEY}, {KEY} ", "NOFX_MEMORY_TTL_DAYS": "14"}, env_file=none
    )
    assert settings.memory_keys == (NEW_KEY, KEY) and settings.memory_ttl_days == 14
    assert NEW_KEY in settings.secrets and KEY in settings.secrets
    assert KEY not in repr(settings)
    assert Settings.from_env({}, env_file=none).memory_keys == ()
    with pytest.raises(SettingsError, match="NOFX_MEMORY_KEYS: key 2 is not a Fernet key"):
        Settings.from_env({"NOFX_MEMORY_KEYS": f"{KEY},not-a-key"}, env_file=none)
    with pytest.raises(SettingsError, match="NOFX_MEMORY_TTL_DAYS"):
        Settings.from_env({"NOFX_MEMORY_TTL_DAYS": "0"}, env_file=none)


def _orm_rows(store: Store) -> list[ThreadMemory]:
    with store.session() as session:
        return list(session.exec(select(ThreadMemory).order_by(col(ThreadMemory.created_at))))
