"""What a 202 promises under load and crashes: recorded durably, once, and enqueued (group commit included)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import selectors
import signal
import socket
import sqlite3
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import func
from sqlalchemy.engine import make_url
from sqlmodel import select

from bot import deliveries
from bot.models import Delivery, DeliveryStatus, Installation, utcnow
from bot.queue import WorkQueue, dispatch_job_id
from bot.settings import Settings
from bot.store import Store
from bot.web.app import App, create_app
from bot.web.intake import MAX_BODY_BYTES
from bot.web.sqlite_intake import CHECKPOINT_EVERY_BYTES
from bot.worker.loop import LOST_JOB_AFTER, sweep
from bot.worker.runtime import Runtime
from tests.support.payloads import load_payload, webhook_headers
from tests.support.tcp_relay import tcp_relay
from tests.support.web_process import nofx_web, web_processes


async def test_a_burst_shares_transactions_and_each_delivery_is_recorded_and_enqueued_once(
    any_store: Store, settings: Settings, queue: WorkQueue, tmp_path: Path
) -> None:
    """On PostgreSQL several group commits are written at once: a redelivery may race its first copy there."""
    store = any_store
    app = create_app(settings, store=store, queue=queue, env_file=tmp_path / ".env")
    payload = load_payload("issue_comment.created")
    body = json.dumps(payload).encode()
    ids = [f"burst-{n}" for n in range(60)]
    sent = ids + ids[:20]  # a third of them redelivered while the first copies are still in flight

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://nofx") as http:
        answers = await asyncio.gather(
            *(
                http.post(
                    "/webhooks",
                    content=body,
                    headers=webhook_headers("issue_comment", body, settings.webhook_secret or "", delivery_id=d),
                )
                for d in sent
            )
        )

    assert [a.status_code for a in answers] == [202] * len(sent)
    statuses = [a.json()["status"] for a in answers]
    assert statuses.count("queued") == len(ids)
    assert statuses.count("duplicate") == 20
    with store.session() as session:
        assert session.exec(select(func.count()).select_from(Delivery)).one() == len(ids)
    await app.state.intake.enqueue.settled()  # the push follows the answers
    assert sorted(queue.intake_waiting()) == sorted(ids)
    batches = app.state.metrics.registry.get_sample_value("nofx_webhook_intake_batch_deliveries_count")
    assert batches is not None and batches < len(sent)  # requests in flight together shared a transaction


async def test_on_sqlite_the_intake_checkpoints_the_wal_into_the_database_as_deliveries_arrive(
    settings: Settings, queue: WorkQueue, tmp_path: Path
) -> None:
    """The web's commits never checkpoint (`auto_checkpoint=False`): its intake does, between batches."""
    database, store, app = _web_on_sqlite(settings, queue, tmp_path)
    body = json.dumps(load_payload("issue_comment.created")).encode()
    ids = [f"wal-{n}" for n in range(CHECKPOINT_EVERY_BYTES // len(body) + 20)]  # a checkpoint's worth and more
    secret = settings.webhook_secret or ""

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://nofx") as http:
        for chunk in range(0, len(ids), 16):
            answers = await asyncio.gather(
                *(
                    http.post(
                        "/webhooks", content=body, headers=webhook_headers("issue_comment", body, secret, delivery_id=d)
                    )
                    for d in ids[chunk : chunk + 16]
                )
            )
            assert {a.status_code for a in answers} == {202}
    await app.state.intake.close()  # its thread finishes the checkpoint it was given

    assert database.stat().st_size > CHECKPOINT_EVERY_BYTES  # the deliveries' pages were copied into the database
    assert sorted(queue.intake_waiting()) == sorted(ids)
    store.dispose()


async def test_on_sqlite_a_delivery_arriving_while_a_worker_writes_is_answered_once_the_write_is_done(
    settings: Settings, queue: WorkQueue, tmp_path: Path
) -> None:
    """The event loop writes a batch only when nobody else is writing; otherwise the intake's thread waits for it."""
    database, store, app = _web_on_sqlite(settings, queue, tmp_path)
    body = json.dumps(load_payload("issue_comment.created")).encode()
    headers = webhook_headers("issue_comment", body, settings.webhook_secret or "", delivery_id="behind-a-worker")
    worker = sqlite3.connect(database, isolation_level=None)
    worker.execute("BEGIN IMMEDIATE")  # a worker holds SQLite's write lock

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://nofx") as http:
        answer = asyncio.ensure_future(http.post("/webhooks", content=body, headers=headers))
        done, _ = await asyncio.wait([answer], timeout=0.5)
        assert not done
        assert (await http.get("/readyz")).status_code == 200  # the event loop is not the one waiting
        worker.execute("COMMIT")
        worker.close()
        response = await answer

    assert response.status_code == 202 and response.json()["status"] == "queued"
    assert deliveries.get(store, "behind-a-worker") is not None
    await app.state.intake.close()
    assert queue.intake_waiting() == ["behind-a-worker"]
    store.dispose()


async def test_a_batch_the_queue_refuses_is_answered_202_and_left_for_the_sweeper(
    settings: Settings, any_store: Store, queue: WorkQueue, tmp_path: Path
) -> None:
    """The deliveries are recorded, so they are accepted; the push after the answer fails and marks them received,
    which the sweeper enqueues once the queue is back. GitHub's redelivery meanwhile is enqueued (not taken for a
    duplicate)."""
    store = any_store
    payload = load_payload("issue_comment.created")
    body = json.dumps(payload).encode()
    down = WorkQueue.from_url("redis://127.0.0.1:1/0")  # nothing listens on port 1
    app = create_app(settings, store=store, queue=down, env_file=tmp_path / ".env")

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://nofx") as http:
        answers = await asyncio.gather(
            *(
                http.post(
                    "/webhooks",
                    content=body,
                    headers=webhook_headers("issue_comment", body, settings.webhook_secret or "", delivery_id=d),
                )
                for d in ("down-1", "down-2", "down-3")
            )
        )

    await app.state.intake.close()  # waits for the push after the answers
    assert [(a.status_code, a.json()["status"]) for a in answers] == [(202, "queued")] * 3
    for delivery_id in ("down-1", "down-2", "down-3"):
        row = deliveries.get(store, delivery_id)
        assert row is not None and row.status == DeliveryStatus.received  # the sweeper enqueues these

    app = create_app(settings, store=store, queue=queue, env_file=tmp_path / ".env")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://nofx") as http:
        again = await http.post(
            "/webhooks",
            content=body,
            headers=webhook_headers("issue_comment", body, settings.webhook_secret or "", delivery_id="down-1"),
        )
    await app.state.intake.close()
    assert again.status_code == 202 and again.json()["status"] == "queued"
    assert queue.intake_waiting() == ["down-1"]
    row = deliveries.get(store, "down-1")
    assert row is not None and row.status == DeliveryStatus.queued


@pytest.mark.parametrize("processes", [1, 2])
def test_a_202_survives_kill_9_of_the_web_processes_right_after_the_answer(
    tmp_path: Path, settings: Settings, redis_url: str, queue: WorkQueue, processes: int
) -> None:
    """With NOFX_WEB_PROCESSES=2 any of the processes may answer: all are killed at once after the 202."""
    database = tmp_path / "durable.db"
    store, payload = _store_knowing_the_installation(database)
    body = json.dumps(payload).encode()
    headers = webhook_headers("issue_comment", body, settings.webhook_secret or "", delivery_id="survivor")

    with _web(tmp_path, settings, redis_url, database, processes=processes) as (base, process):
        web = web_processes(process.pid)
        assert len(web) == processes
        answer = httpx.post(f"{base}/webhooks", content=body, headers=headers, timeout=10)
        for pid in web:
            os.kill(pid, signal.SIGKILL)
        assert answer.status_code == 202 and answer.json()["status"] == "queued"
    process.wait(timeout=10)

    row = deliveries.get(store, "survivor")
    assert row is not None and row.status == DeliveryStatus.queued and row.payload == payload

    with _web(tmp_path, settings, redis_url, database, processes=processes) as (base, _process):
        again = [httpx.post(f"{base}/webhooks", content=body, headers=headers, timeout=10) for _ in range(4)]
    assert [a.status_code for a in again] == [202] * 4
    assert {a.json()["status"] for a in again} == {"duplicate"}
    with store.session() as session:
        assert session.exec(select(func.count()).select_from(Delivery)).one() == 1
    store.dispose()


def test_a_delivery_answered_and_killed_before_its_push_is_routed_by_the_sweeper(
    tmp_path: Path, settings: Settings, redis_url: str, queue: WorkQueue, store: Store, runtime: Runtime
) -> None:
    """The push onto the intake list follows the 202: a web process killed in between leaves the delivery
    recorded as queued with no job, which the workers' sweeper enqueues (a relay in front of the queue server
    keeps the push from ever arriving)."""
    payload = load_payload("issue_comment.created")
    with store.session() as session:
        session.add(Installation(id=payload["installation"]["id"], account_login="Codertocat"))
    body = json.dumps(payload).encode()
    headers = webhook_headers("issue_comment", body, settings.webhook_secret or "", delivery_id="unpushed")
    server = urlsplit(redis_url)
    database = Path(make_url(store.url).database or "")

    with tcp_relay(server.hostname or "", server.port or 6379) as relay:
        relayed = server._replace(netloc=f"127.0.0.1:{relay.port}").geturl()
        with _web(tmp_path, settings, relayed, database) as (base, process):
            relay.hold()
            answer = httpx.post(f"{base}/webhooks", content=body, headers=headers, timeout=10)
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    assert answer.status_code == 202 and answer.json()["status"] == "queued"
    row = deliveries.get(store, "unpushed")
    assert row is not None and row.status == DeliveryStatus.queued
    assert queue.intake_waiting() == [] and not queue.job_exists(dispatch_job_id("unpushed"))
    assert sweep(runtime) == []  # not yet: its push may still be on the way
    with store.session() as session:  # as if a minute had passed
        row.updated_at = utcnow() - LOST_JOB_AFTER - timedelta(seconds=1)
        session.add(row)

    assert sweep(runtime) == ["unpushed"]
    assert queue.job_exists(dispatch_job_id("unpushed"))


def test_web_processes_record_each_delivery_once_whichever_answers(
    tmp_path: Path, settings: Settings, redis_url: str, queue: WorkQueue
) -> None:
    """Two web processes, each with its own group commit writer on one SQLite file: deliveries and their
    redeliveries sent at once on separate connections are each recorded and enqueued once."""
    database = tmp_path / "shared.db"
    store, payload = _store_knowing_the_installation(database)
    body = json.dumps(payload).encode()
    ids = [f"shared-{n}" for n in range(40)]
    sent = ids * 3  # every delivery three times, on different connections

    def post(delivery_id: str) -> httpx.Response:
        headers = webhook_headers("issue_comment", body, settings.webhook_secret or "", delivery_id=delivery_id)
        with httpx.Client(base_url=base) as client:  # a connection of its own: the kernel picks the process
            return client.post("/webhooks", content=body, headers=headers, timeout=30)

    with _web(tmp_path, settings, redis_url, database, processes=2) as (base, process):
        assert len(web_processes(process.pid)) == 2
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(post, sent))

    assert [a.status_code for a in answers] == [202] * len(sent)
    statuses = [a.json()["status"] for a in answers]
    assert statuses.count("queued") == len(ids) and statuses.count("duplicate") == 2 * len(ids)
    with store.session() as session:
        assert session.exec(select(func.count()).select_from(Delivery)).one() == len(ids)
    assert sorted(queue.intake_waiting()) == sorted(ids)
    store.dispose()


def test_the_web_stops_when_one_of_its_processes_dies(tmp_path: Path, settings: Settings, redis_url: str) -> None:
    """A process lost is a web serving with less than it was told: it stops, as one process would, for its
    supervisor to start it again."""
    database = tmp_path / "lost.db"
    Store(f"sqlite:///{database}").create_all()
    with _web(tmp_path, settings, redis_url, database, processes=2) as (_base, process):
        child = next(pid for pid in web_processes(process.pid) if pid != process.pid)
        os.kill(child, signal.SIGKILL)
        assert process.wait(timeout=30) == 1


def test_unsigned_bodies_in_flight_are_bounded_and_signed_deliveries_still_get_in(
    tmp_path: Path, settings: Settings, redis_url: str
) -> None:
    """Before its HMAC is checked, a body is anyone's: two unsigned 25 MB bodies at once exceed the budget of body
    bytes in flight, so the second is answered 503 with Retry-After before its body is read; a signed delivery
    of ordinary size still fits beside the first, and the budget is free again once the first is answered."""
    database = tmp_path / "budget.db"
    Store(f"sqlite:///{database}").create_all()
    unsigned = (
        b"POST /webhooks HTTP/1.1\r\nHost: nofx\r\nContent-Type: application/json\r\n"
        b"X-GitHub-Event: ping\r\nX-GitHub-Delivery: flood\r\nX-Hub-Signature-256: sha256=00\r\n"
        b"Content-Length: %d\r\n\r\n" % MAX_BODY_BYTES
    )
    first_part = b" " * (1024 * 1024)
    with _web(tmp_path, settings, redis_url, database) as (base, _process):
        port = int(base.rsplit(":", 1)[1])
        holders = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(2)]
        try:
            for holder in holders:
                holder.sendall(unsigned + first_part)
            # Whichever the web read second is over the budget: it is answered with 24 MB of its body unsent.
            with selectors.DefaultSelector() as selector:
                for holder in holders:
                    selector.register(holder, selectors.EVENT_READ)
                ready = [key.fileobj for key, _ in selector.select(timeout=30)]
            assert len(ready) == 1 and isinstance(ready[0], socket.socket)
            refused = ready[0].recv(65536)
            assert refused.startswith(b"HTTP/1.1 503 ")
            assert b"\r\nretry-after: " in refused.lower()
            reading = holders[1 - holders.index(ready[0])]

            ping = json.dumps(load_payload("ping")).encode()
            signed = httpx.post(
                f"{base}/webhooks",
                content=ping,
                headers=webhook_headers("ping", ping, settings.webhook_secret or ""),
                timeout=30,
            )
            assert signed.status_code == 202

            reading.sendall(b" " * (MAX_BODY_BYTES - len(first_part)))
            assert reading.recv(65536).startswith(b"HTTP/1.1 401 ")
        finally:
            for holder in holders:
                holder.close()
        whole = httpx.post(
            f"{base}/webhooks", content=b" " * MAX_BODY_BYTES, headers={"X-GitHub-Event": "ping"}, timeout=30
        )
        assert whole.status_code == 401  # the first body's share was given back


def _web_on_sqlite(settings: Settings, queue: WorkQueue, tmp_path: Path) -> tuple[Path, Store, App]:
    """The web's app on a SQLite file of its own, with the web's store (no automatic checkpoints)."""
    database = tmp_path / "web.db"
    store = Store(f"sqlite:///{database}", auto_checkpoint=False)
    store.create_all()
    return database, store, create_app(settings, store=store, queue=queue, env_file=tmp_path / ".env")


def _store_knowing_the_installation(database: Path) -> tuple[Store, dict[str, Any]]:
    """A SQLite store that knows the installation of the `issue_comment` example payload; and that payload."""
    store = Store(f"sqlite:///{database}")
    store.create_all()
    payload = load_payload("issue_comment.created")
    with store.session() as session:
        session.add(Installation(id=payload["installation"]["id"], account_login="Codertocat"))
    return store, payload


@contextlib.contextmanager
def _web(
    tmp_path: Path, settings: Settings, redis_url: str, database: Path, *, processes: int = 1
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`nofx web` as a real process (and its `processes - 1` forked ones) on SQLite and the test's queue server."""
    env = {
        "DATABASE_URL": f"sqlite:///{database}",
        "REDIS_URL": redis_url,
        "GITHUB_WEBHOOK_SECRET": settings.webhook_secret or "",
        "GITHUB_APP_ID": settings.app_id or "",
        "GITHUB_PRIVATE_KEY": settings.private_key or "",
    }
    with nofx_web(tmp_path, env, processes=processes) as started:
        yield started
