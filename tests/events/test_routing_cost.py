"""What one `/nofx add …` delivery costs on its way to 👀, counted on the real path: a signed delivery recorded by
the web app, routed by the worker's job on SQLite and PostgreSQL, GitHub the OpenAPI-checking double.

Budgets, not timings: a delivery routed after another one in the same repository reaches 👀 with two database
statements (the claim, which also reads the delivery, and the installation's state) and no GitHub call but the
reaction itself: the default branch's head and the sender's permission are remembered for a minute (in Redis, per
installation), the config text per commit. What that minute allows, and what it never does, is tested here too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import event

from bot import deliveries
from bot.github.permissions import PERMISSION_CACHE_TTL_S
from bot.github.repos import HEAD_CACHE_TTL_S
from bot.models import DeliveryStatus
from bot.queue import WorkQueue
from bot.store import Store
from bot.worker import jobs
from bot.worker.loop import run_worker
from bot.worker.runtime import Runtime
from tests.conftest import BASE, OWNER, REPO, Deliverer, ask, expire_routing_caches
from tests.support.git_server import GitServer
from tests.support.github_double import Call, GitHubDouble

pytestmark = pytest.mark.usefixtures("example_installation")
REACTIONS = "/repos/{owner}/{repo}/issues/comments/{comment_id}/reactions"
BRANCH, CONTENTS = "/repos/{owner}/{repo}/branches/{branch}", "/repos/{owner}/{repo}/contents/{path}"
READER = "Codertocat"  # the sender of the example payload
PERMISSION = "/repos/{owner}/{repo}/collaborators/{username}/permission"
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


def route(
    runtime: Runtime, deliver: Deliverer, git: GitServer, number: int, delivery_id: str, **payload_fields: Any
) -> None:
    payload = ask(git, "/nofx add a cart", number=number)
    payload["comment"]["id"] = 9000 + number
    payload.update(payload_fields)
    assert deliver("issue_comment", payload, delivery_id=delivery_id).status_code == 202
    assert runtime.run(jobs.route_delivery(runtime, delivery_id)) == DeliveryStatus.done


def asked(github: GitHubDouble, since: int = 0, until: int | None = None) -> list[str]:
    """What nofx asked GitHub about the config and the sender (and for which installation) between two calls (a run
    asks for the branch's head again once it starts: after 👀)."""
    wanted = (BRANCH, CONTENTS, PERMISSION)
    return [f"{c.template} #{c.installation_id}" for c in github.calls()[since:until] if c.template in wanted]


def test_a_second_command_in_the_repository_reaches_eyes_with_two_statements_and_no_github_call(
    runtime: Runtime, deliver: Deliverer, git: GitServer, github: GitHubDouble, counted: Counted
) -> None:
    route(runtime, deliver, git, 1, "cost-1")
    assert asked(github, 0, counted.at_eyes[0][1]) == [f"{template} #1" for template in (BRANCH, CONTENTS, PERMISSION)]
    start, calls = len(counted.statements), len(github.calls())
    route(runtime, deliver, git, 2, "cost-2")

    statements, calls_at_eyes = counted.at_eyes[1]
    assert statements - start == 2, counted.statements[start:statements]
    claim, installation = counted.statements[start : start + 2]
    assert claim.startswith("UPDATE delivery") and "RETURNING" in claim
    assert installation.startswith("SELECT installation.suspended")
    assert github.calls()[calls:calls_at_eyes] == []  # nothing but the reaction itself


def test_a_revoked_permission_is_seen_once_the_remembered_one_expires(
    runtime: Runtime, deliver: Deliverer, git: GitServer, github: GitHubDouble, queue: WorkQueue, counted: Counted
) -> None:
    route(runtime, deliver, git, 1, "revoked-1")
    [key] = queue.redis.keys("nofx:permission:*")
    assert 0 < queue.redis.ttl(key) <= PERMISSION_CACHE_TTL_S == 60
    github.permissions[(OWNER, REPO, READER)] = "read"
    route(runtime, deliver, git, 2, "revoked-2")
    assert len(counted.at_eyes) == 2  # within the minute: still a writer

    expire_routing_caches(queue)
    route(runtime, deliver, git, 3, "revoked-3")

    assert len(counted.at_eyes) == 2  # no 👀 for a reader
    assert github.issue_comments[(OWNER, REPO, 3)][-1]["body"].startswith(f"@{READER}, only people with *write*")
    assert asked(github).count(f"{PERMISSION} #1") == 2


def test_an_outsider_is_refused_without_a_reaction_when_the_answer_is_remembered(
    runtime: Runtime, deliver: Deliverer, git: GitServer, github: GitHubDouble, counted: Counted
) -> None:
    github.permissions[(OWNER, REPO, READER)] = "none"
    route(runtime, deliver, git, 1, "outsider-1")
    route(runtime, deliver, git, 1, "outsider-2")

    assert counted.at_eyes == []
    assert asked(github).count(f"{PERMISSION} #1") == 1
    assert len(github.issue_comments[(OWNER, REPO, 1)]) == 1  # one refusal a day


def test_a_config_pushed_to_the_default_branch_applies_once_the_remembered_head_expires(
    runtime: Runtime, deliver: Deliverer, git: GitServer, github: GitHubDouble, queue: WorkQueue, counted: Counted
) -> None:
    route(runtime, deliver, git, 1, "pushed-1")
    [key] = queue.redis.keys("nofx:head:*")
    assert 0 < queue.redis.ttl(key) <= HEAD_CACHE_TTL_S == 60
    admins_only = CONFIG + "trigger:\n  min_permission: admin\n"
    github.files[(OWNER, REPO, ".github/nofx.yml", None)] = admins_only
    github.branches[(OWNER, REPO, BASE)] = git.commit(OWNER, REPO, {".github/nofx.yml": admins_only}, branch=BASE)

    expire_routing_caches(queue)
    route(runtime, deliver, git, 2, "pushed-2")

    assert len(counted.at_eyes) == 1  # a writer is refused under the new config
    assert github.issue_comments[(OWNER, REPO, 2)][-1]["body"].startswith(f"@{READER}, only people with *admin*")


def test_one_installations_remembered_answers_never_serve_another(
    runtime: Runtime,
    deliver: Deliverer,
    git: GitServer,
    github: GitHubDouble,
    installed: Callable[[dict[str, Any]], None],
    counted: Counted,
) -> None:
    route(runtime, deliver, git, 1, "first-installation")
    other = {"id": 2}
    installed({**ask(git, ""), "installation": other})
    calls = len(github.calls())

    route(runtime, deliver, git, 2, "second-installation", installation=other)

    assert len(counted.at_eyes) == 2
    before_eyes = asked(github, calls, counted.at_eyes[1][1])
    assert before_eyes == [f"{template} #2" for template in (BRANCH, PERMISSION)]  # the text is kept by commit


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
