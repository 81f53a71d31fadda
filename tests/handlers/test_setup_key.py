"""The key a `setup` result is kept under: code the commands run but no key file shows must not be able to put a
result where runs from the base would reuse it. Real git (a served repository, the worker's mirror and worktrees),
the real handler, its real result store and sandbox."""

from __future__ import annotations

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
    return await setup.run(context(worktree, results, run_id))


def context(worktree: Worktree, results: Path, run_id: str) -> StepContext:
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
    ctx.commands = StepCommands(ctx)
    return ctx


async def test_a_follow_up_runs_setup_on_its_branch_is_never_reused_by_a_run_from_the_base(
    server: GitServer, tmp_path: Path
) -> None:
    workspaces, results = Workspaces(tmp_path / "workspaces"), tmp_path / "setup"
    pull_request = await workspaces.prepare(checkout(server, "run-1", "nofx/7-cart"))
    (pull_request.path / INSTALL).write_text('echo planted > "$1/made"\n')  # the model's edit, say
    await pull_request.commit_all("install", author_name="n", author_email="n@example.test")
    await pull_request.push(TOKEN)
    await workspaces.remove(pull_request)

    follow_up = await run_setup(workspaces, server, results, "run-2", "nofx/7-cart")
    later = await run_setup(workspaces, server, results, "run-3", "nofx/8-other")

    assert follow_up.output["key"] != later.output["key"]
    assert later.output["cached"] is False
    kept = setup_cache.repository_dir(results, Run(installation_id=1, repository_id=5))
    assert (kept / str(later.output["key"]) / "made").read_text() == "base\n"
    again = await run_setup(workspaces, server, results, "run-4", "nofx/9-again")
    assert (again.output["key"], again.output["cached"]) == (later.output["key"], True)  # the base still shares
