"""SSE streams on a real uvicorn server: resumption with Last-Event-ID under load, heartbeats, the end event."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from bot.models import RunEvent
from bot.queue import WorkQueue
from bot.runs import queries, records
from bot.settings import Settings
from bot.store import Store
from bot.web.app import create_app
from bot.web.openapi import event_json
from bot.web.sse import EventReader, StreamTiming
from tests.support.runs_api import AUTH, TOKEN, Frame, frames, live_server, make_run

TIMING = StreamTiming(poll_s=0.05, heartbeat_s=0.3)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, api_token=TOKEN)


@pytest.fixture
def app(settings: Settings, store: Store, queue: WorkQueue, tmp_path: Path) -> Starlette:
    return create_app(
        settings,
        store=store,
        queue=queue,
        env_file=tmp_path / ".env",
        stream_timing=TIMING,
    )


@pytest.fixture
def server(app: Starlette) -> Iterator[str]:
    with live_server(app) as base_url:
        yield base_url


def read(
    base_url: str,
    path: str,
    *,
    last_event_id: int | None = None,
    stop_after: int | None = None,
    timeout: float = 10,
    opened: threading.Event | None = None,
) -> list[Frame]:
    """Open a stream and collect frames until it ends, or `stop_after` events arrived (then hang up).

    `opened` is set at the first frame: the server has fixed where the stream starts by then.
    """
    headers = dict(AUTH)
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    collected: list[Frame] = []
    with (
        httpx.Client(base_url=base_url, timeout=timeout) as http,
        http.stream("GET", path, headers=headers) as response,
    ):
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        deadline = time.monotonic() + timeout
        for frame in frames(response):
            if opened is not None:
                opened.set()
            collected.append(frame)
            if stop_after is not None and sum(1 for f in collected if f.id) >= stop_after:
                break
            assert time.monotonic() < deadline, "the stream did not end in time"
    return collected


def event_ids(collected: list[Frame]) -> list[int]:
    return [int(frame.id) for frame in collected if frame.id is not None]


def test_a_reconnecting_client_misses_nothing_and_gets_nothing_twice(server: str, store: Store) -> None:
    run_id = make_run(store)
    other = make_run(store, number=2)  # interleaved events of another run must not leak in
    produced = threading.Event()

    def produce() -> None:
        for n in range(120):
            records.record_event(store, run_id, "test.tick", {"n": n})
            if n % 3 == 0:
                records.record_event(store, other, "test.tick", {"n": n})
            time.sleep(0.006)
        records.cancel(store, run_id, by="alice")
        produced.set()

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        first = read(server, f"/runs/{run_id}/stream", stop_after=25)
        hung_up_while_producing = not produced.is_set()
        assert first[0].fields == ["retry"]  # the reconnection delay comes before any event
        resumed = read(server, f"/runs/{run_id}/stream", last_event_id=event_ids(first)[-1])
    finally:
        producer.join()
    assert produced.is_set()

    ids = event_ids(first) + event_ids(resumed)
    stored = queries.events_of(store, run_id)
    assert ids == [event.id for event in stored]  # strictly increasing, no gap, no duplicate across the reconnect
    assert hung_up_while_producing
    sent = [frame.json() for frame in first + resumed if frame.id is not None]
    assert sent == [event_json(event) for event in stored]  # the timeline's shape, byte for byte
    assert resumed[-1].event == "end"
    assert resumed[-1].json() == {"run_id": run_id, "last_event_id": stored[-1].id}


def test_a_finished_run_streams_its_events_then_ends_and_a_late_reconnect_ends_at_once(
    server: str, store: Store
) -> None:
    run_id = make_run(store)
    records.cancel(store, run_id, by="alice")
    stored = [event.id for event in queries.events_of(store, run_id)]

    everything = read(server, f"/runs/{run_id}/stream")
    assert event_ids(everything) == stored
    assert everything[-1].event == "end"
    late = read(server, f"/runs/{run_id}/stream", last_event_id=stored[-1])
    assert [frame.fields for frame in late] == [["retry"], ["event", "data"]]
    assert late[-1].event == "end"


def test_an_idle_stream_sends_heartbeats(server: str, store: Store) -> None:
    run_id = make_run(store)
    started = time.monotonic()
    with (
        httpx.Client(base_url=server, timeout=5) as http,
        http.stream("GET", f"/runs/{run_id}/stream", headers=AUTH) as response,
    ):
        beats = 0
        for frame in frames(response):
            if frame.comment == "keep-alive":
                beats += 1
            if beats == 2:
                break
    elapsed = time.monotonic() - started
    assert beats == 2
    assert elapsed >= 0.5  # two beats 0.3 s apart, not sooner (heartbeat_s is 15 s in production)


def test_the_all_runs_stream_starts_now_or_after_the_given_id(server: str, store: Store) -> None:
    before = make_run(store)
    last_before = queries.events_of(store, before)[-1].id
    assert last_before is not None

    opened = threading.Event()

    def later() -> None:  # once the stream has started "now", not before (a loaded machine connects late)
        if opened.wait(timeout=10):
            records.record_event(store, before, "test.later", {})
            make_run(store, number=3)

    thread = threading.Thread(target=later)
    thread.start()
    try:
        fresh = read(server, "/events/stream", stop_after=2, opened=opened)
    finally:
        opened.set()
        thread.join()
    assert [frame.json()["type"] for frame in fresh if frame.id] == ["test.later", "run.created"]

    replay = read(server, "/events/stream", last_event_id=0, stop_after=last_before)
    assert event_ids(replay) == list(range(1, last_before + 1))


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "99999999999999999999"])
def test_a_malformed_last_event_id_is_400(client: TestClient, store: Store, value: str) -> None:
    run_id = make_run(store)
    for path in (f"/runs/{run_id}/stream", "/events/stream"):
        response = client.get(path, headers={**AUTH, "Last-Event-ID": value})
        assert response.status_code == 400
        assert response.json()["error"].startswith("Last-Event-ID must be a whole number")


def test_events_behind_an_uncommitted_id_wait_until_it_commits_or_settles(store: Store) -> None:
    """PostgreSQL can make id 11 visible before 10: the reader must not step over 10 while it may still come."""
    run_id = make_run(store)
    # Long enough that a busy machine's pause between a write and the next poll is no hole given up on.
    reader = EventReader(store, run_id, 0, StreamTiming(settle_s=1.5))
    reader.start()
    sent = [event.id for event in reader.poll()[0]]
    top = sent[-1]
    assert top is not None
    with store.session() as session:  # a hole at top+1, as an open (or rolled back) transaction leaves
        session.add(RunEvent(id=top + 2, run_id=run_id, type="test.after_hole", payload={}))

    assert reader.poll()[0] == []  # held back: top+1 may still commit
    with store.session() as session:
        session.add(RunEvent(id=top + 1, run_id=run_id, type="test.late_commit", payload={}))
    assert [event.type for event in reader.poll()[0]] == ["test.late_commit", "test.after_hole"]

    with store.session() as session:  # a hole that never fills (a rollback) is given up after settle_s
        session.add(RunEvent(id=top + 4, run_id=run_id, type="test.after_rollback", payload={}))
    assert reader.poll()[0] == []
    time.sleep(1.55)
    assert [event.type for event in reader.poll()[0]] == ["test.after_rollback"]
