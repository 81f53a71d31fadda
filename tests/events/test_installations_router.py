"""The installation router alone: a signed `installation` event from GitHub's example payload, dispatched to
`bot.events.installations.router` with the worker's real context, read back from the database."""

from __future__ import annotations

from sqlmodel import select

from bot.events import installations
from bot.models import Installation, Repository
from bot.store import Store
from bot.worker.runtime import Runtime
from tests.support.github_double import GitHubDouble
from tests.support.payloads import load_payload, signed_event


def test_installation_created_records_the_account_and_its_repositories(
    runtime: Runtime, github: GitHubDouble, store: Store
) -> None:
    payload = load_payload("installation.created")
    runtime.run(installations.router.dispatch(signed_event("installation", payload), runtime.context()))

    with store.session() as session:
        installation = session.get(Installation, payload["installation"]["id"])
        repositories = session.exec(select(Repository)).all()
    assert installation is not None
    assert installation.account_login == payload["installation"]["account"]["login"]
    assert not installation.suspended and not installation.removed
    assert [(r.full_name, r.installation_id, r.removed) for r in repositories] == [
        (repo["full_name"], installation.id, False) for repo in payload["repositories"]
    ]
    assert github.calls() == []  # the payload says it all: nothing is asked of GitHub


def test_installation_deleted_marks_it_and_its_repositories_removed(
    runtime: Runtime, github: GitHubDouble, store: Store
) -> None:
    created = load_payload("installation.created")
    deleted = load_payload("installation.deleted", installation={"id": created["installation"]["id"]})
    for payload in (created, deleted):
        runtime.run(installations.router.dispatch(signed_event("installation", payload), runtime.context()))

    with store.session() as session:
        installation = session.get(Installation, created["installation"]["id"])
        repositories = session.exec(select(Repository)).all()
    assert installation is not None and installation.removed
    assert repositories and all(repo.removed for repo in repositories)
    assert github.calls() == []
