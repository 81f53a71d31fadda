"""`setup` runs on the run's base commit, never on its worktree: a follow-up run's branch (written by the model)
neither runs with network nor gets its result kept where runs from the base reuse it. Real git (a served
repository, the worker's mirror and worktrees), the real handler, its real result store and sandbox."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.models import Run, Step
from bot.repo_config import RepoConfig
from bot.runs import setup_cache
from bot.runs.contract import StepContext, StepResult
from bot.runs.repo_commands import StepCommands
from bot.workspace import isolation as layouts
from bot.workspace.mirrors import Workspaces
from bot.workspace.sandbox import Sandbox
from bot.workspace.worktrees import Checkout, Worktree
from handlers import setup
from tests.support.git_server import GitServer

OWNER, REPO, TOKEN = "octo", "shop", "t0ken"
INSTALL = "scripts/install.sh"  # what setup runs; not a key file (setup_cache_key names the manifests)


class Tokens:
    async def __call__(self) -> str:
        return TOKEN


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GitServer]:
    with GitServer(tmp_path / "served") as git_server:
        git_server.add_token(TOKEN)
        git_server.create_repo(OWNER, REPO, {"requirements.txt": "greeting\n", INSTALL: 'echo base > "$1/made"\n'})
        yield git_server


def checkout(server: GitServer, run_id: str, branch: str) -> Checkout:
    return Checkout(
        run_id=run_id,
        branch=branch,
        base_ref="main",
        installation_id=1,
        owner=OWNER,
        repo=REPO,
        clone_url=server.url_for(OWNER, REPO),
        token=Tokens(),
        reuse_remote_branch=True,  # a follow-up run's: the pull request's branch when it exists
    )


async def run_setup(workspaces: Workspaces, server: GitServer, results: Path, run_id: str, branch: str) -> StepResult:
    worktree = await workspaces.prepare(checkout(server, run_id, branch))
    return await setup.run(context(workspaces, worktree, results, run_id))


def context(workspaces: Workspaces, worktree: Worktree, results: Path, run_id: str) -> StepContext:
    run = Run(id=run_id, installation_id=1, repository=f"{OWNER}/{REPO}", repository_id=5)
    step = Step(id=f"{run_id}-s", run_id=run_id, name="setup", tool="setup", timeout_s=60, idempotency_key=run_id)
    ctx = StepContext(
        run=run,
        step=step,
        config=RepoConfig(setup=(f'sh {INSTALL} "$NOFX_SETUP_DIR"',)),
        gh=None,
        earlier={},
        emit=lambda kind, payload: None,
        log=logging.LoggerAdapter(logging.getLogger("test.setup"), {}),
        workspace=worktree,
        sandbox=Sandbox(isolation="bwrap" if layouts.probe().ok else "none"),
        setup_results=setup_cache.RepositorySetups(setup_cache.repository_dir(results, run), run),
    )
    ctx.commands = StepCommands(ctx, functools.partial(workspaces.base_checkout, worktree))
    return ctx


async def test_a_follow_up_runs_setup_on_the_base_commit_not_on_the_files_its_branch_changed(
    server: GitServer, tmp_path: Path
) -> None:
    workspaces, results = Workspaces(tmp_path / "workspaces"), tmp_path / "setup"
    pull_request = await workspaces.prepare(checkout(server, "run-1", "nofx/7-cart"))
    (pull_request.path / INSTALL).write_text('echo planted > "$1/made"\n')  # the model's edit, say
    (pull_request.path / "requirements.txt").write_text("greeting\nrequests\n")
    await pull_request.commit_all("install", author_name="n", author_email="n@example.test")
    await pull_request.push(TOKEN)
    await workspaces.remove(pull_request)

    follow_up = await run_setup(workspaces, server, results, "run-2", "nofx/7-cart")
    later = await run_setup(workspaces, server, results, "run-3", "nofx/8-other")

    kept = setup_cache.repository_dir(results, Run(installation_id=1, repository_id=5))
    assert (kept / str(follow_up.output["key"]) / "made").read_text() == "base\n"
    assert follow_up.output["changed_key_files"] == ["requirements.txt"]
    assert (later.output["key"], later.output["cached"]) == (follow_up.output["key"], True)
    assert "changed_key_files" not in later.output
    assert not any(workspaces.base_checkouts.iterdir())  # the base's checkout went with the step
    run_2 = await workspaces.prepare(checkout(server, "run-2", "nofx/7-cart"))
    assert (run_2.path / INSTALL).read_text() == 'echo planted > "$1/made"\n'  # the run's own files, as they were


async def test_a_base_checkout_of_an_active_run_survives_the_reaper(server: GitServer, tmp_path: Path) -> None:
    workspaces = Workspaces(tmp_path / "workspaces")
    worktree = await workspaces.prepare(checkout(server, "run-1", "nofx/7-cart"))
    async with workspaces.base_checkout(worktree) as base:
        assert await workspaces.reap({"run-1"}) == []
        assert (base.path / INSTALL).is_file() and await base.head_sha() == worktree.base_sha
        assert set(await workspaces.reap(set())) == {worktree.path, base.path}
