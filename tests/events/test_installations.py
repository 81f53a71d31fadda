"""Installations are learned, not assumed: looked up when a delivery names an unknown one, synced at start."""

from __future__ import annotations

from collections.abc import Callable

from sqlmodel import select

from bot import deliveries
from bot.models import DeliveryStatus, Installation, Repository
from bot.store import Store
from bot.worker import startup
from bot.worker.runtime import Runtime
from tests.conftest import Deliverer
from tests.support.github_double import GitHubDouble
from tests.support.payloads import load_payload


def test_a_delivery_for_an_unknown_installation_is_routed_and_the_installation_learned(
    deliver: Deliverer, work: Callable[[], None], store: Store, github: GitHubDouble
) -> None:
    payload = load_payload("issue_comment.created", comment__body="thanks, looks good")
    installation_id = payload["installation"]["id"]
    github.add_installation(installation_id, account="Codertocat", account_type="User")

    response = deliver("issue_comment", payload, delivery_id="unknown-1")
    assert response.json()["status"] == "queued"  # the intake never drops it for an unknown installation
    work()

    looked_up = github.calls("GET", "/app/installations/{installation_id}")
    assert [call.path_params["installation_id"] for call in looked_up] == [installation_id]
    row = deliveries.get(store, "unknown-1")
    assert row is not None and row.status == DeliveryStatus.done
    with store.session() as session:
        installation = session.get(Installation, installation_id)
        repos = session.exec(select(Repository)).all()
    assert installation is not None and installation.account_login == "Codertocat" and not installation.suspended
    assert [r.full_name for r in repos] == ["Codertocat/Hello-World"]


def test_an_installation_github_does_not_know_is_ignored_with_the_reason(
    deliver: Deliverer, work: Callable[[], None], store: Store, github: GitHubDouble
) -> None:
    github.auto_installations = False
    payload = load_payload("issue_comment.created", comment__body="/nofx add a cart")

    deliver("issue_comment", payload, delivery_id="nobody-1")
    work()

    row = deliveries.get(store, "nobody-1")
    assert row is not None and row.status == DeliveryStatus.ignored
    assert row.reason == f"installation {payload['installation']['id']} does not exist on GitHub for this App"
    assert github.calls("POST", "/repos/{owner}/{repo}/issues/comments/{comment_id}/reactions") == []


def test_a_suspended_installation_is_learned_as_suspended_and_nothing_runs(
    deliver: Deliverer, work: Callable[[], None], store: Store, github: GitHubDouble
) -> None:
    payload = load_payload("issue_comment.created", comment__body="/nofx add a cart")
    github.add_installation(payload["installation"]["id"], account="Codertocat", suspended=True)

    deliver("issue_comment", payload, delivery_id="susp-1")
    work()

    row = deliveries.get(store, "susp-1")
    assert row is not None and row.status == DeliveryStatus.ignored and "is suspended" in (row.reason or "")
    # The intake reads no database per delivery (issue 14): the worker ignores it, knowing it is suspended.
    deliver("issue_comment", payload, delivery_id="susp-2")
    work()
    row = deliveries.get(store, "susp-2")
    assert row is not None and row.status == DeliveryStatus.ignored and "is suspended" in (row.reason or "")


def test_workers_sync_installations_and_repositories_at_start(
    runtime: Runtime, store: Store, github: GitHubDouble
) -> None:
    github.auto_installations = False
    github.add_installation(11, account="octo-org", repositories=["octo-org/shop", "octo-org/docs"])
    github.add_installation(12, account="octo-user", account_type="User", repositories=["octo-user/site"])
    github.add_installation(13, account="frozen-org", suspended=True)
    with store.session() as session:  # uninstalled while nofx was down
        session.add(Installation(id=99, account_login="gone-org"))

    startup.run(runtime)

    with store.session() as session:
        rows = {i.id: i for i in session.exec(select(Installation)).all()}
        repos = {r.full_name: r.installation_id for r in session.exec(select(Repository)).all()}
    assert sorted(rows) == [11, 12, 13, 99]
    assert rows[99].removed and rows[13].suspended and not rows[11].removed
    assert rows[12].account_login == "octo-user"
    assert repos == {"octo-org/shop": 11, "octo-org/docs": 11, "octo-user/site": 12}
