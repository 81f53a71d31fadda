"""What one `/nofx add …` delivery costs on its way to 👀, counted on the real path: a signed delivery recorded by
the web app, routed by the worker's job on SQLite and PostgreSQL, GitHub the OpenAPI-checking double.

Budgets, not timings: a delivery routed after another one in the same repository reaches 👀 with two database
statements (the claim, which also reads the delivery, and the installation's state) and no GitHub call but the
reaction itself.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event

from bot import deliveries
from bot.models import DeliveryStatus
from bot.store import Store
from bot.worker import jobs
from bot.worker.loop import run_worker
from bot.worker.runtime import Runtime
from tests.conftest import OWNER, REPO, Deliverer, ask
from tests.support.git_server import GitServer
from tests.support.github_double import Call, GitHubDouble

pytestmark = pytest.mark.usefixtures("example_installation")
REACTIONS = "/repos/{owner}/{repo}/issues/comments/{comment_id}/reactions"
CONFIG = "gates:\n  test: 'true'\n"


@pytest.fixture
def store(any_store: Store) -> Store:
    """Every test here on SQLite and on PostgreSQL (the settings, web app and worker runtime use this store)."""
    return any_store


class Counted:
    """SQL statements the worker's store sends, and what had been sent (statements, GitHub calls) at each 👀."""

    def __init__(self, runtime: Runtime, github: GitHubDouble) -> None:
        self.statements: list[str] = []
        self.at_eyes: list[tuple[int, int]] = []
        self.github = github
        event.listen(runtime.store.engine, "before_cursor_execute", self._statement)
        github.handler("POST", REACTIONS, self._eyes)  # answers None: the double then answers as GitHub does

    def _statement(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        self.statements.append(statement)

    def _eyes(self, _call: Call) -> None:
        # The worker waits for this answer: what it sent so far is what 👀 cost.
        self.at_eyes.append((len(self.statements), len(self.github.calls()) - 1))


@pytest.fixture
def counted(runtime: Runtime, github: GitHubDouble) -> Counted:
    github.files[(OWNER, REPO, ".github/nofx.yml", None)] = CONFIG
    run_worker(runtime, burst=True, max_jobs=0)  # the worker's start: the App's identity, the tables
    return Counted(runtime, github)


def route(runtime: Runtime, deliver: Deliverer, git: GitServer, number: int, delivery_id: str) -> None:
    payload = ask(git, "/nofx add a cart", number=number)
    payload["comment"]["id"] = 9000 + number
    assert deliver("issue_comment", payload, delivery_id=delivery_id).status_code == 202
    assert runtime.run(jobs.route_delivery(runtime, delivery_id)) == DeliveryStatus.done


def test_a_delivery_reaches_eyes_with_two_statements(
    runtime: Runtime, deliver: Deliverer, git: GitServer, counted: Counted
) -> None:
    route(runtime, deliver, git, 1, "cost-1")
    start = len(counted.statements)
    route(runtime, deliver, git, 2, "cost-2")

    statements = counted.at_eyes[1][0] - start
    assert statements == 2, counted.statements[start : counted.at_eyes[1][0]]
    claim, installation = counted.statements[start : start + 2]
    assert claim.startswith("UPDATE delivery") and "RETURNING" in claim
    assert installation.startswith("SELECT installation.suspended")


def test_the_claim_reads_the_delivery_it_took(
    store: Store, runtime: Runtime, deliver: Deliverer, git: GitServer
) -> None:
    payload = ask(git, "/nofx add a cart")
    assert deliver("issue_comment", payload, delivery_id="claimed-1").status_code == 202

    taken = deliveries.claim(store, "claimed-1")

    assert taken is not None
    assert (taken.status, taken.attempts, taken.payload) == (DeliveryStatus.processing, 1, payload)
    assert taken.received_at.tzinfo is not None
    assert deliveries.claim(store, "claimed-1") is None  # taken: a second job gets nothing
