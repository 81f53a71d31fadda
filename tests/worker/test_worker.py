"""Deliveries routed by a real RQ worker: installation tables, failures, replay, the sweeper, identity."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from bot import deliveries
from bot.cli import main as cli
from bot.github import identity
from bot.models import DeliveryStatus, Installation, Repository, utcnow
from bot.queue import WorkQueue
from bot.settings import Settings
from bot.store import Store
from bot.worker.loop import sweep
from bot.worker.runtime import Runtime
from tests.conftest import Deliverer
from tests.support.github_double import GitHubDouble
from tests.support.payloads import load_payload


def test_installation_created_is_routed_into_the_tables(
    deliver: Deliverer, work: Callable[[], None], store: Store
) -> None:
    payload = load_payload("installation.created")
    deliver("installation", payload, delivery_id="inst-1")

    work()

    row = deliveries.get(store, "inst-1")
    assert row is not None and row.status == DeliveryStatus.done and row.attempts == 1
    with store.session() as session:
        installation = session.get(Installation, payload["installation"]["id"])
        repos = session.exec(select(Repository)).all()
    assert installation is not None and not installation.removed
    assert {r.full_name for r in repos} == {r["full_name"] for r in payload["repositories"]}


def test_after_installation_its_deliveries_are_no_longer_ignored(
    deliver: Deliverer, work: Callable[[], None], store: Store
) -> None:
    created = load_payload("installation.created")
    suspend = load_payload("installation.suspend")
    suspend["installation"]["id"] = created["installation"]["id"]
    deliver("installation", created)
    work()

    response = deliver("installation", {**suspend, "action": "suspend"}, delivery_id="s-1")
    assert response.json()["status"] == "queued"
    work()
    with store.session() as session:
        installation = session.get(Installation, created["installation"]["id"])
    assert installation is not None and installation.suspended


def test_a_delivery_that_fails_is_marked_failed_and_can_be_replayed(
    deliver: Deliverer, work: Callable[[], None], store: Store, queue: WorkQueue
) -> None:
    broken = load_payload("installation.created")
    broken["installation"] = {"account": {"login": "x"}}  # no id: the router cannot record it
    deliver("installation", broken, delivery_id="bad-1")

    work()

    failed = deliveries.get(store, "bad-1")
    assert failed is not None and failed.status == DeliveryStatus.failed
    assert failed.reason == "KeyError: 'id'"

    assert cli.main(["replay", "--delivery", "bad-1"]) == 0
    assert queue.queue.count == 1
    work()
    again = deliveries.get(store, "bad-1")
    assert again is not None and again.status == DeliveryStatus.failed and again.attempts == 2


def test_a_second_delivery_of_the_same_job_does_nothing(
    deliver: Deliverer, work: Callable[[], None], store: Store, queue: WorkQueue
) -> None:
    deliver("installation", load_payload("installation.created"), delivery_id="twice")
    queue.enqueue_dispatch("twice")  # the queue delivered the job twice
    work()
    row = deliveries.get(store, "twice")
    assert row is not None and row.status == DeliveryStatus.done and row.attempts == 1


def test_replay_of_a_saved_file_routes_it(
    tmp_path: Path, work: Callable[[], None], store: Store, settings: Settings
) -> None:
    payload = load_payload("installation.created")
    saved = tmp_path / "delivery.json"
    saved.write_text(json.dumps({"event": "installation", "payload": payload}))

    assert cli.main(["replay", str(saved)]) == 0
    work()

    with store.session() as session:
        assert session.get(Installation, payload["installation"]["id"]) is not None


def test_replay_refuses_a_file_that_is_not_a_delivery(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    saved = tmp_path / "nonsense.json"
    saved.write_text("[1, 2]")
    assert cli.main(["replay", str(saved)]) == 1
    assert "must hold a JSON object" in capsys.readouterr().err


def test_sweeper_enqueues_deliveries_the_queue_never_got(runtime: Runtime, store: Store, queue: WorkQueue) -> None:
    lost = deliveries.describe("lost", "installation", load_payload("installation.created"))
    lost.received_at = utcnow() - timedelta(minutes=2)
    deliveries.record(store, lost)

    assert sweep(runtime) == ["lost"]
    assert queue.queue.job_ids == ["dispatch-lost"]
    assert sweep(runtime) == []


def _pushed_by_the_web(queue: WorkQueue, delivery_ids: list[str]) -> None:
    """What the web's intake does for a group commit, on its event loop."""

    async def push() -> None:
        pusher = queue.intake_pusher()
        try:
            await pusher.push(delivery_ids)
        finally:
            await pusher.close()

    asyncio.run(push())


def test_intake_ids_become_one_dispatch_job_per_delivery_taken_once(queue: WorkQueue) -> None:
    _pushed_by_the_web(queue, ["fan-1", "fan-2"])
    _pushed_by_the_web(queue, ["fan-3"])

    assert queue.fan_out_intake(wait_s=1) == 3  # what a worker's intake thread does
    assert queue.fan_out_intake() == 0  # taken once: a second worker finds nothing

    assert queue.intake_waiting() == []
    assert queue.queue.job_ids == ["dispatch-fan-1", "dispatch-fan-2", "dispatch-fan-3"]


def test_acknowledged_ids_a_stopped_dispatch_lane_left_become_dispatch_jobs_first(queue: WorkQueue) -> None:
    _pushed_by_the_web(queue, ["acked-1", "acked-2", "waiting-1"])
    for _ in range(2):  # a dispatch lane's 👀 pass took two and passed them on, then every dispatch lane stopped
        taken = queue.take_delivery("stopped-lane", 1)
        assert taken is not None
        queue.pass_acknowledged("stopped-lane", taken)
    assert queue.intake_taken() == [] and queue.intake_waiting() == ["acked-1", "acked-2", "waiting-1"]

    assert queue.fan_out_intake() == 3  # what the work lanes do while no dispatch lane is up

    assert queue.intake_waiting() == []
    assert queue.queue.job_ids == ["dispatch-acked-1", "dispatch-acked-2", "dispatch-waiting-1"]


def test_sweeper_leaves_deliveries_still_on_the_intake_list(runtime: Runtime, store: Store, queue: WorkQueue) -> None:
    waiting = deliveries.describe("held", "installation", load_payload("installation.created"))
    waiting.status = DeliveryStatus.queued
    waiting.updated_at = utcnow() - timedelta(minutes=5)
    deliveries.record(store, waiting)
    _pushed_by_the_web(queue, ["held"])  # no worker has taken it yet (they are busy or down): not lost

    assert sweep(runtime) == []
    assert queue.intake_waiting() == ["held"] and queue.queue.count == 0


def test_worker_learns_the_apps_identity_and_the_status_page_shows_it(
    work: Callable[[], None], github: GitHubDouble, client: TestClient, store: Store
) -> None:
    work()

    app = identity.current(store)
    assert app is not None and app.slug
    call = github.calls("GET", "/app")[0]
    assert call.headers["authorization"].lower().startswith("bearer ")
    page = client.get("/")
    assert page.status_code == 200
    assert app.name in page.text
    assert "healthy: 0 job(s) waiting" in page.text


@pytest.fixture(autouse=True)
def _cli_environment(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    """`nofx replay` reads its configuration from the environment, like every entry point."""
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("REDIS_URL", settings.redis_url or "")
    monkeypatch.setenv("NOFX_DATA_DIR", str(settings.data_dir))
    monkeypatch.chdir(settings.data_dir.parent)


def test_sweeper_enqueues_a_queued_delivery_whose_job_the_queue_lost(
    runtime: Runtime, store: Store, queue: WorkQueue
) -> None:
    lost = deliveries.describe("gone", "installation", load_payload("installation.created"))
    lost.status = DeliveryStatus.queued
    lost.updated_at = utcnow() - timedelta(minutes=5)
    deliveries.record(store, lost)  # recorded as queued, but Redis restarted without the job

    assert sweep(runtime) == ["gone"]
    assert queue.queue.job_ids == ["dispatch-gone"]
    assert sweep(runtime) == []  # the job exists now
