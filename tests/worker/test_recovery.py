"""Nothing lost while down: a restarted worker, and `nofx recover`, have GitHub redeliver what nofx never recorded.

The GitHub double keeps the App's delivery log (`GET /app/hook/deliveries`) and takes redelivery requests
(`POST /app/hook/deliveries/{id}/attempts`), both checked against GitHub's OpenAPI description.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

import pytest

from bot import deliveries
from bot.cli.main import main
from bot.models import DeliveryStatus, utcnow
from bot.settings import Settings
from bot.store import Store
from bot.worker import startup
from bot.worker.runtime import Runtime
from tests.conftest import Deliverer
from tests.support.github_double import GitHubDouble
from tests.support.payloads import load_payload


def seen_before_the_outage(store: Store, minutes_ago: float) -> None:
    delivery = deliveries.describe("seen-1", "installation", load_payload("installation.created"))
    delivery.received_at = utcnow() - timedelta(minutes=minutes_ago)
    deliveries.record(store, delivery)


def test_a_restarted_worker_has_github_redeliver_what_it_missed(
    runtime: Runtime, store: Store, github: GitHubDouble, deliver: Deliverer, work: Callable[[], None]
) -> None:
    now = time.time()
    seen_before_the_outage(store, minutes_ago=30)
    github.add_hook_delivery("ancient", "issues", action="opened", installation_id=1, at=now - 9 * 3600)
    github.add_hook_delivery("seen-1", "installation", action="created", installation_id=1, at=now - 1800)
    missed = [
        github.add_hook_delivery("missed-1", "installation", action="created", installation_id=1, at=now - 1200),
        github.add_hook_delivery("missed-2", "ping", installation_id=1, at=now - 600),
    ]
    github.add_hook_delivery("seen-1", "installation", action="created", installation_id=1, at=now - 300)

    startup.run(runtime)  # what a worker does when it starts

    assert github.redelivered == [item["id"] for item in missed]  # oldest first; nothing seen, nothing too old
    # GitHub sends them again with their original GUIDs; they are recorded and routed like any delivery.
    deliver("installation", load_payload("installation.created"), delivery_id="missed-1")
    deliver("ping", load_payload("ping"), delivery_id="missed-2")
    work()
    first = deliveries.get(store, "missed-1")
    assert first is not None and first.status == DeliveryStatus.done

    startup.run(runtime)  # a second worker starting right after does not ask again
    assert len(github.redelivered) == 2


def test_nofx_recover_redelivers_what_was_missed_within_the_window(
    settings: Settings,
    store: Store,
    github: GitHubDouble,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in {
        "DATABASE_URL": settings.database_url,
        "NOFX_DATA_DIR": str(settings.data_dir),
        "GITHUB_APP_ID": settings.app_id or "",
        "GITHUB_PRIVATE_KEY": settings.private_key or "",
        "GITHUB_API_URL": settings.github_api_url,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(settings.data_dir.parent)
    now = time.time()
    seen_before_the_outage(store, minutes_ago=200)
    github.add_hook_delivery("seen-1", "installation", action="created", at=now - 3000)
    lost = github.add_hook_delivery("lost-1", "issue_comment", action="created", installation_id=1, at=now - 3600)
    github.add_hook_delivery("too-old", "issue_comment", action="created", installation_id=1, at=now - 3 * 3600)

    assert main(["recover", "--since", "2h"]) == 0

    assert github.redelivered == [lost["id"]]
    out = capsys.readouterr().out
    assert "2 deliveries in the last 2h; 1 never recorded" in out and "lost-1" in out
    assert main(["recover", "--since", "4d"]) == 2  # GitHub keeps its log for 3 days
