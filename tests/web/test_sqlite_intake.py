"""The SQLite intake's writers in several web processes take turns on their lock, not on SQLite's busy polling."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

from bot import deliveries
from bot.models import DeliveryStatus
from bot.store import Store
from bot.web.sqlite_intake import SqliteRecorder
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
