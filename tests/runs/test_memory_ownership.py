"""Thread memory belongs to a repository id, not a name (issue 10, finding 8), through the real path.

A repository deleted and re-created under the same name (or a name freed by a rename or transfer and taken by
another repository) is a different repository on GitHub, with a different id: it must not be told what was said
on the old one's threads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from cryptography.fernet import Fernet

from bot.settings import Settings
from tests.conftest import OWNER, REPO, Deliverer, ask, with_model
from tests.support.git_server import GitServer
from tests.support.github_double import GitHubDouble
from tests.support.llm_double import AnthropicDouble
from tests.support.payloads import load_payload

CONFIG = ".github/nofx.yml"
MARKER = "the-old-repositorys-secret-plan"


@pytest.fixture
def settings(settings: Settings, llm: AnthropicDouble) -> Settings:
    return replace(with_model(settings, llm), memory_keys=(Fernet.generate_key().decode(),))


pytestmark = pytest.mark.usefixtures("example_installation")


def ask_in(git: GitServer, body: str, repository_id: int) -> dict[str, Any]:
    payload = ask(git, body)
    payload["repository"]["id"] = repository_id
    return payload


def test_a_repository_re_created_under_the_same_name_inherits_no_memory(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    settings: Settings,
) -> None:
    github.files[(OWNER, REPO, CONFIG, None)] = "gates: {}\npolicy:\n  require_approval_before: []\n"
    old_id = load_payload("issue_comment.created")["repository"]["id"]
    github.repository_ids[old_id + 1000] = f"{OWNER}/{REPO}"  # the new repository that took the name
    llm.tool_calls([("finish", {"summary": "nothing"})])  # no edits: the run fails, the thread remembers it
    deliver("issue_comment", ask_in(git, f"/nofx {MARKER}", old_id))
    work()

    llm.tool_calls([("finish", {"summary": "nothing"})])
    deliver("issue_comment", ask_in(git, "/nofx what did we say?", old_id + 1000))  # same name, another repository
    work()
    assert "what did we say?" in llm.requests[-1].text
    assert MARKER not in llm.requests[-1].text

    llm.tool_calls([("finish", {"summary": "nothing"})])
    deliver("issue_comment", ask_in(git, "/nofx and now?", old_id))  # the original repository remembers
    work()
    assert MARKER in llm.requests[-1].text
