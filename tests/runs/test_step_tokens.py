"""Each step's installation token reaches only the run's repository, with only what the step needs, and is
revoked when the step ends (issue 10, finding 7); through the signed webhook, a real worker and git server."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from bot.models import RunStatus
from bot.runs import queries
from bot.settings import Settings
from bot.store import Store
from tests.conftest import OWNER, REPO, Deliverer, ask, with_model
from tests.support.git_server import GitServer
from tests.support.github_double import GitHubDouble
from tests.support.llm_double import AnthropicDouble
from tests.support.payloads import load_payload

TOKENS = "/app/installations/{installation_id}/access_tokens"


@pytest.fixture
def settings(settings: Settings, llm: AnthropicDouble) -> Settings:
    return with_model(settings, llm)


pytestmark = pytest.mark.usefixtures("example_installation")


def test_step_tokens_cover_one_repository_and_only_what_the_step_needs_and_are_revoked(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    github.files[(OWNER, REPO, ".github/nofx.yml", None)] = (
        "gates:\n  test: python3 -m unittest -q\npolicy:\n  require_approval_before: []\n"
    )
    llm.tool_calls([("write_file", {"path": "notes.txt", "content": "hi\n"}), ("finish", {"summary": "Notes."})])
    repository_id = load_payload("issue_comment.created")["repository"]["id"]

    deliver("issue_comment", ask(git, "/nofx add notes"))
    work()

    run = queries.latest_run_on_thread(store, f"{OWNER}/{REPO}", 1)
    assert run is not None and run.status == RunStatus.succeeded, run and run.error
    scoped = [call for call in github.calls("POST", TOKENS) if "repository_ids" in (call.json or {})]
    assert scoped, "no step asked for a repository token"
    assert all(call.json["repository_ids"] == [repository_id] for call in scoped)
    granted = {json.dumps(call.json["permissions"], sort_keys=True) for call in scoped}
    assert granted == {
        '{"contents": "read"}',  # codegen, apply, the test gate
        '{"contents": "write", "pull_requests": "write"}',  # git_pr
        '{"actions": "read", "checks": "read", "contents": "read"}',  # gate:ci reads the repository's CI
    }
    writers = [call for call in scoped if call.json["permissions"].get("contents") == "write"]
    assert len(writers) == 1  # git_pr alone may push
    # Every step token was revoked when its step ended: GitHub and the git server refuse them now.
    assert len(github.calls("DELETE", "/installation/token")) == len(scoped)
    assert not any(github.accepts_token(call.response["token"]) for call in scoped)
    assert git.requests_for("git-receive-pack", authorized=True)  # the push itself went through
