"""Outsiders cannot make nofx spend the installation's rate limit (issue 10, finding 5): their commands get no 👀
and at most one refusal per thread per day; through the signed webhook and a real worker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import OWNER, REPO, Deliverer, ask
from tests.support.git_server import GitServer
from tests.support.github_double import GitHubDouble

REACTIONS = "/repos/{owner}/{repo}/issues/comments/{comment_id}/reactions"
COMMENTS = "/repos/{owner}/{repo}/issues/{issue_number}/comments"


pytestmark = pytest.mark.usefixtures("example_installation")


def from_outsider(git: GitServer, body: str, number: int = 1) -> dict[str, Any]:
    payload = ask(git, body, number)
    payload["sender"] = {**payload["sender"], "login": "mallory", "id": 666}
    payload["comment"]["user"] = {**payload["comment"]["user"], "login": "mallory", "id": 666}
    return payload


def test_an_outsiders_commands_get_no_eyes_and_one_refusal_per_thread_per_day(
    deliver: Deliverer, work: Callable[..., None], github: GitHubDouble, git: GitServer
) -> None:
    github.permissions[(OWNER, REPO, "mallory")] = "read"
    for n in range(3):
        deliver("issue_comment", from_outsider(git, f"/nofx add a cart, take {n}"))
    deliver("issue_comment", from_outsider(git, "/nofx approve"))
    deliver("issue_comment", from_outsider(git, "/nofx add a cart", number=2))  # another thread: its own refusal
    work()

    assert github.calls("POST", REACTIONS) == []
    refusals = github.calls("POST", COMMENTS)
    assert sorted(call.path_params["issue_number"] for call in refusals) == [1, 2]
    assert all("mallory" in call.json["body"] for call in refusals)
