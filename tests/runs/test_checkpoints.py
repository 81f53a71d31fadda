"""Checkpoints through real git: a worktree prepared from a git smart HTTP server, commits on hidden refs in its
mirror, diffs over the real app, resume as a new run, and the engine recording them for a real failing gate."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from bot.blobs import DatabaseBlobs
from bot.models import Run, RunStatus, Step, StepStatus
from bot.plans import Plan, StepSpec
from bot.queue import WorkQueue, step_job_id
from bot.repo_config import RepoConfig
from bot.runs import checkpoint_diffs, checkpoints, queries, records, shared_checkpoints
from bot.runs.artifacts import Artifacts
from bot.runs.contract import StepContext, StepFailed, StepResult
from bot.settings import Settings
from bot.store import Store
from bot.workspace.mirrors import Workspaces
from bot.workspace.worktrees import Checkout, Worktree
from tests.conftest import OWNER, REPO, Deliverer, ask, with_model
from tests.support.git_server import GitServer
from tests.support.github_double import GitHubDouble
from tests.support.llm_double import AnthropicDouble
from tests.support.payloads import load_payload

TOKEN = "ghs_" + "CheckpointTok3n" * 3
API_TOKEN = "api-" + "t" * 30
FILES = {
    ".gitignore": "*.log\n",
    "README.md": "# shop\n",
    "src/cart.py": "ITEMS = []\n\n\ndef total():\n    return 0\n",
    "src/old.py": "gone = True\n",
    "docs/guide.txt": "one\ntwo\nthree\nfour\nfive\nsix\nseven\n",
}
PLAN = Plan(
    goal="Add a cart total",
    steps=(
        StepSpec("generate", "codegen"),
        StepSpec("apply", "workspace:write", depends_on=("generate",)),
        StepSpec("test", "gate:test", depends_on=("apply",)),
        StepSpec("approve", "manual:approval", depends_on=("test",)),
        StepSpec("pull-request", "git_pr", depends_on=("approve",)),
    ),
)


@pytest.fixture
def settings(settings: Settings, llm: AnthropicDouble) -> Settings:
    return dataclasses.replace(with_model(settings, llm), api_token=API_TOKEN)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GitServer]:
    with GitServer(tmp_path / "upstream") as git_server:
        git_server.add_token(TOKEN)
        git_server.create_repo("octo", "shop", FILES)
        yield git_server


@pytest.fixture
def workspaces(settings: Settings) -> Workspaces:
    return Workspaces(settings.data_dir / "workspaces")  # where the web process looks for mirrors


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_TOKEN}"}


def new_run(store: Store, server: GitServer, branch: str = "nofx/7-add-a-cart-total") -> Run:
    request = records.RunRequest(
        installation_id=99,
        repository="octo/shop",
        thread_number=7,
        thread_kind="issue",
        request="add a cart total",
        requester="alice",
        trigger="comment",
        clone_url=server.url_for("octo", "shop"),
        default_branch="main",
        branch=branch,
    )
    return records.create(store, request, PLAN, {})


def step_named(store: Store, run: Run, name: str) -> Step:
    return next(s for s in queries.steps_of(store, run.id) if s.name == name)


async def prepare(workspaces: Workspaces, server: GitServer, run: Run) -> Worktree:
    async def token() -> str:
        return TOKEN

    return await workspaces.prepare(
        Checkout(
            installation_id=99,
            owner="octo",
            repo="shop",
            clone_url=server.url_for("octo", "shop"),
            token=token,
            run_id=run.id,
            branch=run.branch or "",
            base_ref="main",
        )
    )


def git(cwd: Path, *args: str) -> str:
    env = {"PATH": os.environ["PATH"], "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "LC_ALL": "C"}
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=env, check=True).stdout


def tree_of(mirror: Path, sha: str) -> dict[str, str]:
    """path → content of every file in a commit of the mirror."""
    names = git(mirror, "ls-tree", "-r", "--name-only", "-z", sha).split("\0")
    return {name: git(mirror, "show", f"{sha}:{name}") for name in names if name}


def edit_like_a_run(path: Path) -> None:
    """Modify, add (untracked), delete, rename-ish, and leave an ignored by-product, as steps do."""
    (path / "src" / "cart.py").write_text("ITEMS = []\n\n\ndef total():\n    return sum(ITEMS)\n")
    (path / "src" / "total_test.py").write_text("from cart import total\n")
    (path / "src" / "old.py").unlink()
    (path / "gate-output.log").write_text("ignored by .gitignore\n")


# ---------------------------------------------------------------- recording


async def test_a_checkpoint_commits_the_whole_worktree_without_moving_its_index_or_head(
    store: Store, server: GitServer, workspaces: Workspaces, settings: Settings
) -> None:
    run = new_run(store, server)
    worktree = await prepare(workspaces, server, run)
    edit_like_a_run(worktree.path)
    git(worktree.path, "add", "src/cart.py")  # something staged in the real index stays staged
    status_before = git(worktree.path, "status", "--porcelain", "--untracked-files=all")
    apply = step_named(store, run, "apply")
    Artifacts(DatabaseBlobs(store), store).put(run.id, step_named(store, run, "generate").id, "edits.json", b"[]")

    cp = await checkpoints.create(store, worktree, run, apply, outcome="succeeded")

    assert (cp.n, cp.step_name, cp.tool, cp.outcome) == (1, "apply", "workspace:write", "succeeded")
    assert cp.ref == f"refs/nofx/runs/{run.id}/1"
    assert git(worktree.mirror, "rev-parse", cp.ref).strip() == cp.commit_sha
    assert git(worktree.mirror, "rev-parse", f"{cp.commit_sha}^").strip() == cp.parent_sha == worktree.base_sha
    assert git(worktree.mirror, "rev-parse", f"{cp.commit_sha}^{{tree}}").strip() == cp.tree_sha
    files = tree_of(worktree.mirror, cp.commit_sha)
    assert files["src/cart.py"].endswith("return sum(ITEMS)\n")
    assert "src/total_test.py" in files  # untracked, included
    assert "src/old.py" not in files  # deleted
    assert "gate-output.log" not in files  # ignored, excluded
    # The run's own git state is exactly as it was: same HEAD, same staged/unstaged/untracked split.
    assert await worktree.head_sha() == worktree.base_sha
    assert git(worktree.path, "status", "--porcelain", "--untracked-files=all") == status_before
    assert git(worktree.path, "symbolic-ref", "--short", "HEAD").strip() == run.branch
    assert worktree.git_dir is not None and not list(worktree.git_dir.glob("nofx-checkpoint-*"))  # temp index gone
    assert cp.artifacts == {"generate/edits.json": hashlib.sha256(b"[]").hexdigest()}
    [event] = [e for e in queries.events_of(store, run.id) if e.type == "checkpoint.created"]
    assert event.payload["n"] == 1 and event.step_id == apply.id
    # A fetch (with --prune) for the next run leaves the hidden ref alone; it never reaches the server.
    await prepare(workspaces, server, new_run(store, server, branch="nofx/8-other"))
    assert git(worktree.mirror, "rev-parse", cp.ref).strip() == cp.commit_sha
    assert "refs/nofx" not in server.git("octo", "shop", "for-each-ref")


async def test_a_worktree_rebuilt_on_another_worker_has_the_commits_and_branch_git_made(
    store: Store, server: GitServer, workspaces: Workspaces, tmp_path: Path
) -> None:
    run = new_run(store, server)
    worktree = await prepare(workspaces, server, run)
    shared_checkpoints.remember_start(store, worktree)
    (worktree.path / "src" / "cart.py").write_text("ITEMS = [1]\n")
    git(worktree.path, "-c", "user.name=nofx", "-c", "user.email=n@x", "commit", "-qam", "what git_ops committed")
    git(worktree.path, "checkout", "-q", "-b", "nofx/split")  # and a branch it moved to
    (worktree.path / "README.md").write_text("# shop, not committed\n")
    blobs = DatabaseBlobs(store)
    checkpoint = await checkpoints.create(store, worktree, run, step_named(store, run, "apply"), outcome="succeeded")
    await shared_checkpoints.share(blobs, worktree, checkpoint)

    elsewhere = await prepare(Workspaces(tmp_path / "worker-b" / "workspaces"), server, run)  # no shared disk
    assert await shared_checkpoints.catch_up(store, blobs, elsewhere, run) == checkpoint.n

    assert git(elsewhere.path, "rev-parse", "HEAD") == git(worktree.path, "rev-parse", "HEAD")
    assert git(elsewhere.path, "symbolic-ref", "--short", "HEAD").strip() == "nofx/split"
    assert git(elsewhere.path, "log", "-1", "--format=%s").strip() == "what git_ops committed"
    assert git(elsewhere.path, "status", "--porcelain").strip() == "M README.md"  # still uncommitted, as there


async def test_checkpoints_chain_and_concurrent_ones_get_distinct_numbers(
    any_store: Store, server: GitServer, workspaces: Workspaces, tmp_path: Path
) -> None:
    store = any_store
    run = new_run(store, server)
    worktree = await prepare(workspaces, server, run)
    apply, test = step_named(store, run, "apply"), step_named(store, run, "test")
    Artifacts(DatabaseBlobs(store), store).put(run.id, test.id, "output.log", b"F\n")
    first = await checkpoints.create(store, worktree, run, apply, outcome="succeeded")
    (worktree.path / "README.md").write_text("# shop, changed\n")

    made = await asyncio.gather(*(checkpoints.create(store, worktree, run, test, outcome="failed") for _ in range(3)))

    assert sorted(cp.n for cp in made) == [2, 3, 4]
    listed = checkpoints.list_for_run(store, run.id)
    assert [cp.n for cp in listed] == [1, 2, 3, 4]
    # One line of history: each checkpoint's parent is the one numbered before it.
    chain = {cp.n: cp for cp in listed}
    assert chain[1].parent_sha == worktree.base_sha
    for n in (2, 3, 4):
        assert chain[n].parent_sha == chain[n - 1].commit_sha
        assert git(worktree.mirror, "rev-parse", f"refs/nofx/runs/{run.id}/{n}").strip() == chain[n].commit_sha
    assert chain[2].tree_sha != first.tree_sha and chain[3].tree_sha == chain[2].tree_sha
    assert chain[4].artifacts == {"test/output.log": hashlib.sha256(b"F\n").hexdigest()}


async def test_the_engine_hook_records_failed_steps_and_skips_tools_that_leave_no_trace(
    store: Store, server: GitServer, workspaces: Workspaces
) -> None:
    run = new_run(store, server)
    worktree = await prepare(workspaces, server, run)

    def context(name: str) -> StepContext:
        step = step_named(store, run, name)
        return StepContext(
            run=run,
            step=step,
            config=RepoConfig(),
            gh=None,
            earlier={},
            emit=lambda *_: None,
            log=logging.LoggerAdapter(logging.getLogger("test"), {}),
            workspace=worktree,
        )

    async def failing_gate() -> StepResult:
        (worktree.path / "half-written.txt").write_text("the gate left this\n")
        raise StepFailed("`pytest` failed with exit code 1")

    async def approval() -> StepResult:
        return StepResult(wait=True)

    with pytest.raises(StepFailed, match="exit code 1"):
        await checkpoints.checkpointed(store, context("test"), failing_gate())
    result = await checkpoints.checkpointed(store, context("approve"), approval())

    assert result.wait
    [cp] = checkpoints.list_for_run(store, run.id)
    assert (cp.step_name, cp.outcome) == ("test", "failed")
    assert "half-written.txt" in tree_of(worktree.mirror, cp.commit_sha)


# ---------------------------------------------------------------- diff


async def test_the_diff_is_structured_with_statuses_counts_hunks_and_line_numbers(
    store: Store, server: GitServer, workspaces: Workspaces
) -> None:
    run = new_run(store, server)
    worktree = await prepare(workspaces, server, run)
    apply, test = step_named(store, run, "apply"), step_named(store, run, "test")
    edit_like_a_run(worktree.path)
    first = await checkpoints.create(store, worktree, run, apply, outcome="succeeded")
    guide = worktree.path / "docs" / "guide.txt"
    guide.write_text("one\ntwo\nTHREE\nfour\nfive\nsix\nseven\neight")  # no newline at the end now
    (worktree.path / "src" / "total_test.py").rename(worktree.path / "src" / "test_total.py")
    (worktree.path / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary")
    second = await checkpoints.create(store, worktree, run, test, outcome="failed")

    diff = await checkpoint_diffs.diff(worktree.mirror, second.parent_sha, second.commit_sha)

    files = {f["path"]: f for f in diff["files"]}
    assert set(files) == {"docs/guide.txt", "logo.png", "src/test_total.py"}
    renamed = files["src/test_total.py"]
    assert (renamed["status"], renamed["old_path"], renamed["similarity"]) == ("renamed", "src/total_test.py", 100)
    assert files["logo.png"]["status"] == "added" and files["logo.png"]["binary"] is True
    text = files["docs/guide.txt"]
    assert (text["status"], text["additions"], text["deletions"]) == ("modified", 2, 1)
    [hunk] = text["hunks"]
    assert (hunk["old_start"], hunk["old_lines"], hunk["new_start"], hunk["new_lines"]) == (1, 7, 1, 8)
    changed = [(ln["type"], ln["old"], ln["new"], ln["text"]) for ln in hunk["lines"] if ln["type"] != "context"]
    assert changed == [
        ("del", 3, None, "three"),
        ("add", None, 3, "THREE"),
        ("add", None, 8, "eight"),
    ]
    assert [ln["new"] for ln in hunk["lines"] if ln["type"] == "context"] == [1, 2, 4, 5, 6, 7]
    assert hunk["lines"][-1].get("no_newline_at_end") is True
    assert diff["stats"] == {"files": 3, "additions": 2, "deletions": 1}
    # Against the run's start instead: everything since the base.
    whole = await checkpoint_diffs.diff(worktree.mirror, first.parent_sha, second.commit_sha)
    statuses = {f["path"]: f["status"] for f in whole["files"]}
    assert statuses["src/old.py"] == "deleted" and statuses["src/cart.py"] == "modified"
    assert statuses["src/test_total.py"] == "added"
    # A cap cuts at a file boundary and says which files it could not show.
    capped = await checkpoint_diffs.diff(worktree.mirror, first.parent_sha, second.commit_sha, max_bytes=300)
    assert capped["truncated"] is True
    assert any(f["truncated"] and f["hunks"] == [] and f["additions"] is None for f in capped["files"])
    assert all(f["hunks"] or f["binary"] or f["truncated"] for f in capped["files"])


async def test_checkpoint_api_lists_diffs_and_refuses_what_it_cannot_show(
    store: Store, server: GitServer, workspaces: Workspaces, client: TestClient
) -> None:
    run = new_run(store, server)
    worktree = await prepare(workspaces, server, run)
    edit_like_a_run(worktree.path)
    blobs = DatabaseBlobs(store)
    first = await checkpoints.create(store, worktree, run, step_named(store, run, "apply"), outcome="succeeded")
    await shared_checkpoints.share(blobs, worktree, first)  # as the engine does: the diff is stored too
    (worktree.path / "README.md").write_text("# shop\n\nWith a total.\n")
    second = await checkpoints.create(store, worktree, run, step_named(store, run, "test"), outcome="failed")
    await shared_checkpoints.share(blobs, worktree, second)

    assert client.get(f"/runs/{run.id}/checkpoints").status_code == 401
    listed = client.get(f"/runs/{run.id}/checkpoints", headers=auth()).json()["checkpoints"]
    assert [(c["n"], c["step"], c["outcome"]) for c in listed] == [(1, "apply", "succeeded"), (2, "test", "failed")]
    assert listed[1]["links"]["diff"].endswith(f"/runs/{run.id}/checkpoints/2/diff")

    previous = client.get(f"/runs/{run.id}/checkpoints/2/diff", headers=auth()).json()
    assert previous["base_checkpoint"] == 1 and previous["base"] == listed[0]["commit"]
    assert [f["path"] for f in previous["files"]] == ["README.md"]
    from_start = client.get(f"/runs/{run.id}/checkpoints/2/diff?base=0", headers=auth()).json()
    assert from_start["base_checkpoint"] == 0 and from_start["stats"]["files"] == 4

    assert client.get(f"/runs/{run.id}/checkpoints/9/diff", headers=auth()).status_code == 404
    assert client.get(f"/runs/{run.id}/checkpoints/2/diff?base=7", headers=auth()).status_code == 400
    assert client.get("/runs/nope/checkpoints", headers=auth()).status_code == 404
    shutil.rmtree(worktree.mirror)  # evicted, or on another machine: the stored diff is still shown
    assert client.get(f"/runs/{run.id}/checkpoints/2/diff", headers=auth()).json() == previous
    gone = client.get(f"/runs/{run.id}/checkpoints/2/diff?base=0", headers=auth())  # other bases need the mirror
    assert gone.status_code == 410 and "no longer in the mirror" in gone.json()["error"]


# ---------------------------------------------------------------- resume


async def test_resume_starts_a_new_run_on_its_own_branch_from_the_checkpoint(
    store: Store, server: GitServer, workspaces: Workspaces, client: TestClient, queue: WorkQueue
) -> None:
    run = new_run(store, server)
    worktree = await prepare(workspaces, server, run)
    edit_like_a_run(worktree.path)
    apply = step_named(store, run, "apply")
    with store.session() as session:  # what workspace:write reported writing
        row = session.get(Step, apply.id)
        assert row is not None
        row.output = {"files": ["src/cart.py", "src/old.py", "src/total_test.py"]}
        session.add(row)
    cp = await checkpoints.create(store, worktree, run, apply, outcome="succeeded")
    last = await checkpoints.create(store, worktree, run, step_named(store, run, "pull-request"), outcome="failed")

    answer = client.post(f"/runs/{run.id}/checkpoints/1/resume", headers=auth(), json={"by": "octocat"})

    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["steps"] == ["test", "approve", "pull-request"]
    assert body["branch"] == f"{run.branch}-cp1" and body["from"]["commit"] == cp.commit_sha
    resumed = queries.get_run(store, body["run_id"])
    assert resumed is not None and resumed.status == RunStatus.running
    assert (resumed.repository, resumed.thread_number, resumed.request) == (run.repository, 7, run.request)
    steps = queries.steps_of(store, resumed.id)
    assert [(s.name, s.depends_on, s.status) for s in steps] == [
        ("test", [], StepStatus.queued),  # its dependency already ran in the source run
        ("approve", ["test"], StepStatus.pending),
        ("pull-request", ["approve"], StepStatus.pending),
    ]
    assert step_job_id(steps[0].id, 1) in queue.steps.job_ids  # the first step was enqueued
    assert checkpoints.start_point(store, resumed.id) == cp.commit_sha
    assert checkpoints.start_point(store, run.id) is None
    assert checkpoints.written_files(store, resumed.id) == ["src/cart.py", "src/old.py", "src/total_test.py"]
    assert any(e.type == "run.branched" for e in queries.events_of(store, run.id))
    # A second branch from the same checkpoint gets a branch of its own; nothing is left after the last step.
    again = client.post(f"/runs/{run.id}/checkpoints/1/resume", headers=auth())
    assert again.json()["branch"] == f"{run.branch}-cp1-2"
    nothing = client.post(f"/runs/{run.id}/checkpoints/{last.n}/resume", headers=auth())
    assert nothing.status_code == 409 and "nothing left to run" in nothing.json()["error"]
    assert client.post(f"/runs/{run.id}/checkpoints/9/resume", headers=auth()).status_code == 404

    # The engine starts the new worktree at the base, then restores the checkpoint's files as uncommitted work.
    new_tree = await prepare(workspaces, server, resumed)
    assert await checkpoints.restore(new_tree, cp.commit_sha) is True
    assert await new_tree.head_sha() == new_tree.base_sha
    assert (new_tree.path / "src" / "cart.py").read_text().endswith("return sum(ITEMS)\n")
    assert (new_tree.path / "src" / "total_test.py").exists() and not (new_tree.path / "src" / "old.py").exists()
    uncommitted = git(new_tree.path, "status", "--porcelain", "--untracked-files=all", "--no-renames").splitlines()
    assert sorted(line[3:] for line in uncommitted) == ["src/cart.py", "src/old.py", "src/total_test.py"]
    (new_tree.path / "README.md").write_text("a later step's work\n")
    assert await checkpoints.restore(new_tree, cp.commit_sha) is False  # idempotent: later steps keep their work
    assert (new_tree.path / "README.md").read_text() == "a later step's work\n"
    # Its first checkpoint continues the line of the one it branched from.
    first = await checkpoints.create(store, new_tree, resumed, steps[0], outcome="succeeded")
    assert first.parent_sha == cp.commit_sha


# ---------------------------------------------------------------- through the engine


@pytest.fixture
def _installed(installed: Callable[[dict[str, Any]], None]) -> None:
    installed(load_payload("issue_comment.created"))


@pytest.mark.usefixtures("_installed")
def test_the_engine_checkpoints_each_step_that_changes_the_worktree(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
    client: TestClient,
) -> None:
    github.files[(OWNER, REPO, ".github/nofx.yml", None)] = (
        "gates:\n  test: python3 -m unittest -q\nrepair:\n  max_attempts: 0\n"
    )
    llm.tool_calls(
        [
            ("replace_in_file", {"path": "calc.py", "old": "a + b", "new": "a - b"}),
            ("finish", {"summary": "Breaks add."}),
        ]
    )
    deliver("issue_comment", ask(git, "/nofx subtract instead"))
    work()

    [run] = [r for r in (queries.latest_run_on_thread(store, f"{OWNER}/{REPO}", 1),) if r]
    assert run.status == RunStatus.failed
    listed = client.get(f"/runs/{run.id}/checkpoints", headers=auth()).json()["checkpoints"]
    # codegen only produces edits; apply changes the worktree; the failing gate is recorded after it failed.
    assert [(c["step"], c["outcome"]) for c in listed] == [("apply", "succeeded"), ("test", "failed")]
    assert set(listed[0]["artifacts"]) == {"generate/edits.json"}
    assert "test/output.log" in listed[1]["artifacts"]
    diff = client.get(f"/runs/{run.id}/checkpoints/1/diff", headers=auth()).json()
    [calc] = [f for f in diff["files"] if f["path"] == "calc.py"]
    assert [(ln["type"], ln["text"]) for h in calc["hunks"] for ln in h["lines"] if ln["type"] != "context"] == [
        ("del", "    return a + b"),
        ("add", "    return a - b"),
    ]
