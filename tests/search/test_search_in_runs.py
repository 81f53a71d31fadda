"""The search hooks through the real path: a run on a worker with the local model indexes the repository's code and
the run, and the next run's `search_code` answer carries a semantic hit that no regular expression finds."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from bot.models import Run, RunStatus
from bot.settings import Settings
from bot.store import Store
from bot.worker.runtime import Runtime
from tests.conftest import BASE, OWNER, REPO, Deliverer, ask, with_model
from tests.support.git_server import GitServer
from tests.support.github_double import GitHubDouble
from tests.support.llm_double import AnthropicDouble, Request
from tests.support.payloads import load_payload

GEO = (
    "import math\n\n\n"
    "def km_between(lat1: float, lon1: float, lat2: float, lon2: float) -> float:\n"
    "    p1, p2 = math.radians(lat1), math.radians(lat2)\n"
    "    dp, dl = p2 - p1, math.radians(lon2 - lon1)\n"
    "    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2\n"
    "    return 6371.0 * 2 * math.asin(math.sqrt(a))\n"
)
QUERY = "how far apart are two places on the globe"
SLUG = f"{OWNER}/{REPO}"


@pytest.fixture
def settings(settings: Settings, llm: AnthropicDouble) -> Settings:
    return replace(with_model(settings, llm), embeddings_model="local:all-minilm-l6-v2")


@pytest.fixture(autouse=True)
def _installed(installed: Callable[[dict[str, Any]], None]) -> None:
    installed(load_payload("issue_comment.created"))


@pytest.fixture
def repository(git: GitServer, github: GitHubDouble) -> Iterator[None]:
    git.commit_many(OWNER, REPO, {"geo/distance.py": GEO}, branch=BASE)
    github.branches[(OWNER, REPO, BASE)] = git.git(OWNER, REPO, "rev-parse", BASE).strip()
    github.files[(OWNER, REPO, ".github/nofx.yml", None)] = "gates: {}\n"
    yield


def _runs(store: Store) -> list[Run]:
    from sqlmodel import select

    with store.session() as session:
        return list(session.exec(select(Run).order_by(Run.created_at)).all())  # type: ignore[arg-type]


def _tool_results(request: Request) -> str:
    texts = []
    for message in request.json["messages"]:
        for block in message["content"] if isinstance(message["content"], list) else []:
            if block.get("type") == "tool_result":
                inner = block["content"]
                texts += [inner] if isinstance(inner, str) else [b.get("text", "") for b in inner]
    return "\n".join(texts)


def test_a_run_indexes_code_and_itself_and_the_next_search_code_finds_by_meaning(
    repository: None,
    deliver: Deliverer,
    work: Callable[..., None],
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
    runtime: Runtime,
) -> None:
    installation = load_payload("issue_comment.created")["installation"]["id"]
    llm.tool_call("write_file", {"path": "NOTES.md", "content": "notes\n"})
    llm.tool_call("finish", {"summary": "Notes."})
    deliver("issue_comment", ask(git, "/nofx add a notes file"))
    work(timeout_s=240)  # the run, then the index_code and index_run jobs it enqueued (the model loads once)

    [first] = _runs(store)
    assert first.status == RunStatus.succeeded, first.error
    index = runtime.search_index()
    assert index.search_files(installation, QUERY, repo=SLUG, limit=1)[0].path == "geo/distance.py"
    [run_hit] = index.search(installation, "add a notes file", kind="runs", repo=SLUG, limit=5)
    assert run_hit.run_id == first.id and "succeeded" in run_hit.text

    llm.tool_call("search_code", {"pattern": QUERY})
    llm.tool_call("write_file", {"path": "geo/README.md", "content": "distances\n"})
    llm.tool_call("finish", {"summary": "Documented."})
    deliver("issue_comment", ask(git, "/nofx document the distance helper"))
    work()

    second = _runs(store)[-1]
    assert second.status == RunStatus.succeeded, second.error
    answer = next(_tool_results(r) for r in llm.requests if "Closest in meaning" in _tool_results(r))
    assert f"no match for {QUERY!r}" in answer  # the regular expression finds nothing
    assert "geo/distance.py:1-" in answer and "may lag this worktree" in answer
