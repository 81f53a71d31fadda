"""The search hooks through the real path: runs on a worker with the local model index the repository's code, the
run itself and its artifacts (generated edits, the pull request) in background jobs; the next run's planner is
shown the earlier run of that repository only, and its `search_code` answer carries a semantic hit that no
regular expression finds; `GET /search` and `nofx search` find the artifacts.

Two runs prove all of it: each run costs seconds and the model loads once per test session (see conftest.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from starlette.testclient import TestClient

from bot.cli import main as cli
from bot.models import Repository, Run, RunStatus
from bot.runs import queries
from bot.settings import Settings
from bot.store import Store
from bot.worker.runtime import Runtime
from tests.conftest import BASE, OWNER, REPO, Deliverer, ask, with_model
from tests.support.git_server import GitServer
from tests.support.github_double import GitHubDouble
from tests.support.llm_double import AnthropicDouble, Request
from tests.support.payloads import load_payload
from tests.support.runs_api import AUTH, TOKEN

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
PAYLOAD = load_payload("issue_comment.created")
INSTALLATION = PAYLOAD["installation"]["id"]
PLAN = {
    "goal": "Make the change",
    "steps": [
        {"name": "generate", "tool": "codegen"},
        {"name": "apply", "tool": "workspace:write", "inputs": {"from_step": "generate"}, "depends_on": ["generate"]},
        {"name": "pr", "tool": "git_pr", "depends_on": ["apply"]},
    ],
}
FIRST = "/nofx write down where the release notes live"


@pytest.fixture
def settings(settings: Settings, llm: AnthropicDouble) -> Settings:
    return replace(with_model(settings, llm), embeddings_model="local:all-minilm-l6-v2", api_token=TOKEN)


@pytest.fixture(autouse=True)
def _installed(installed: Callable[[dict[str, Any]], None], store: Store) -> None:
    installed(PAYLOAD)
    with store.session() as session:  # as installation.created records its repositories
        session.add(Repository(id=PAYLOAD["repository"]["id"], installation_id=INSTALLATION, full_name=SLUG))


@pytest.fixture
def repository(git: GitServer, github: GitHubDouble) -> Iterator[None]:
    git.commit_many(OWNER, REPO, {"geo/distance.py": GEO}, branch=BASE)
    github.branches[(OWNER, REPO, BASE)] = git.git(OWNER, REPO, "rev-parse", BASE).strip()
    github.files[(OWNER, REPO, ".github/nofx.yml", None)] = "planner: llm\ngates: {}\n"
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


def _planner_requests(llm: AnthropicDouble) -> list[Request]:
    return [r for r in llm.requests if [t["name"] for t in r.json.get("tools", [])] == ["submit_plan"]]


def _user_text(request: Request) -> str:
    [message] = request.json["messages"]
    content = message["content"]
    return content if isinstance(content, str) else "\n".join(b.get("text", "") for b in content)


def test_runs_index_code_runs_and_artifacts_and_the_next_run_plans_and_searches_with_them(
    repository: None,
    deliver: Deliverer,
    work: Callable[..., None],
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
    runtime: Runtime,
    client: TestClient,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    llm.tool_call("submit_plan", PLAN)
    llm.tool_call("write_file", {"path": "docs/RELEASING.md", "content": "Release notes go in CHANGES.md.\n"})
    llm.tool_call("finish", {"summary": "Documented where the release notes are kept."})
    deliver("issue_comment", ask(git, FIRST))
    work(timeout_s=240)  # the run, then the index_code, index_artifacts and index_run jobs it enqueued

    [first] = _runs(store)
    assert first.status == RunStatus.succeeded, first.error
    assert "Earlier runs" not in _user_text(_planner_requests(llm)[0])  # nothing indexed yet
    index = runtime.search_index()
    assert index.search_files(INSTALLATION, QUERY, repo=SLUG, limit=1)[0].path == "geo/distance.py"
    [run_hit] = index.search(INSTALLATION, "where release notes live", kind="runs", repo=SLUG, limit=5)
    assert run_hit.run_id == first.id and "succeeded" in run_hit.text

    # The artifacts: the generated edits and the pull request, through the API and the command line; not those of
    # the repository that had this name before (another GitHub id).
    earlier_id = PAYLOAD["repository"]["id"] + 1
    index.add_artifact(INSTALLATION, SLUG, "same-name", "generate/edits.json", FIRST, repository_id=earlier_id)
    found = client.get(
        "/search", params={"q": "changelog documentation", "repo": SLUG, "kind": "artifacts"}, headers=AUTH
    )
    assert found.status_code == 200, found.text
    by_name = {hit["artifact"]: hit for hit in found.json()["results"]}
    assert set(by_name) == {"generate/edits.json", "pr/pull_request.md"}
    assert {hit["run_id"] for hit in by_name.values()} == {first.id}
    assert "+Release notes go in CHANGES.md." in by_name["generate/edits.json"]["text"]
    assert "docs/RELEASING.md" in by_name["generate/edits.json"]["text"]
    pull_request = by_name["pr/pull_request.md"]["text"]
    assert pull_request.startswith("# ") and "Documented where the release notes are kept." in pull_request
    monkeypatch.setenv("NOFX_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("DATABASE_URL", store.url)
    monkeypatch.setenv("NOFX_EMBEDDINGS_MODEL", "local:all-minilm-l6-v2")
    capsys.readouterr()
    assert cli.main(["search", "--repo", SLUG, "--kind", "artifacts", "release notes"]) == 0
    shown = [line.partition(" (similarity ")[0] for line in capsys.readouterr().out.splitlines() if line[:1] != " "]
    assert sorted(shown) == [f"run {first.id} generate/edits.json", f"run {first.id} pr/pull_request.md"]

    # Runs of another installation, of another repository, and of the repository that had this one's name before
    # (a private one, renamed; this one made under the name since), as close to the request as can be: never shown.
    ours, plan = PAYLOAD["repository"]["id"], "generate (codegen)"
    index.add_run(INSTALLATION + 1, SLUG, "other-installation", FIRST, plan, "failed: other", repository_id=ours)
    index.add_run(INSTALLATION, f"{OWNER}/elsewhere", "other-repository", FIRST, plan, "failed: else", repository_id=7)
    index.add_run(INSTALLATION, SLUG, "same-name", FIRST, plan, "failed: private", repository_id=ours + 1)
    llm.tool_call("submit_plan", PLAN)
    llm.tool_call("search_code", {"pattern": QUERY})
    llm.tool_call("write_file", {"path": "geo/README.md", "content": "distances\n"})
    llm.tool_call("finish", {"summary": "Documented."})
    deliver("issue_comment", ask(git, "/nofx document where the release notes and the distance helper live", 2))
    work()

    second = _runs(store)[-1]
    assert second.status == RunStatus.succeeded, second.error
    planner = _planner_requests(llm)[1]
    fenced = re.findall(
        r'<untrusted_data source="earlier run \d+">\n(.*?)\n</untrusted_data>', _user_text(planner), re.S
    )
    assert fenced == [f"request: {first.request}\nplan: {_plan(store, first)}\noutcome: succeeded"]
    assert "failed" not in _user_text(planner) and first.request not in planner.json["system"]
    answer = next(_tool_results(r) for r in llm.requests if "Closest in meaning" in _tool_results(r))
    assert f"no match for {QUERY!r}" in answer  # the regular expression finds nothing
    assert "geo/distance.py:1-" in answer and "may lag this worktree" in answer


def _plan(store: Store, run: Run) -> str:
    return ", ".join(f"{s.name} ({s.tool})" for s in queries.steps_of(store, run.id))
