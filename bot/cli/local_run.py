"""`nofx run --repo PATH "request"`: the same engine on a repository on this machine, no GitHub.

A run is planned from the repository's own `.github/nofx.yml` (without the pull request and CI steps),
executed by a real RQ worker in this process on an embedded queue, shown in the terminal as it
goes, and its result is left committed on a `nofx/local-…` branch of the repository.
"""

from __future__ import annotations

import asyncio
import dataclasses
import getpass
import tempfile
import time
from pathlib import Path

from rich.console import Console, RenderableType
from rich.live import Live
from rich.text import Text
from sqlalchemy.exc import SQLAlchemyError

from bot.cli.terminal import steps_table, summary_panel
from bot.models import RunStatus
from bot.plans import Plan, PlanError
from bot.queue import start_embedded_valkey
from bot.repo_config import CONFIG_PATH, ConfigError, RepoConfig, describe, parse_config
from bot.runs import planner, queries, records
from bot.runs.contract import written_by
from bot.settings import Settings
from bot.worker.loop import run_worker
from bot.worker.runtime import Runtime
from bot.workspace.git import GitError, git
from bot.workspace.local import LocalWorkspaces, local_repository
from bot.workspace.worktrees import Checkout, branch_name


class LocalRunError(Exception):
    """The local run cannot start (not a git repository, invalid config, invalid plan)."""


def run_locally(repo: Path, request: str, settings: Settings, console: Console) -> int:
    """Plan, run and commit; returns the process exit code (0 when the run succeeded)."""
    repo = repo.resolve()
    head = asyncio.run(_git(repo, "rev-parse", "--verify", "HEAD^{commit}"))
    config = asyncio.run(_config(repo))
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    queue_dir = Path(tempfile.mkdtemp(prefix="nofx-q-"))  # short: the queue's unix socket path is limited
    valkey = start_embedded_valkey(queue_dir)
    local = dataclasses.replace(
        settings,
        data_dir=data_dir,
        database_url=settings.database_url,
        redis_url=valkey.url,
        app_id=None,
        private_key=None,
    )
    workspaces = LocalWorkspaces(repo, data_dir / "worktrees")
    runtime = Runtime(local, workspaces=workspaces)
    try:
        runtime.store.create_all()
        plan = asyncio.run(_plan(runtime, request, config))
        spec = records.RunRequest(
            installation_id=0,
            repository=local_repository(repo),
            thread_number=0,
            thread_kind="local",
            request=request,
            requester=getpass.getuser(),
            trigger="cli",
            clone_url=str(repo),
            default_branch=head,
            head_sha=head,
            branch=branch_name(0, request).replace("nofx/0-", "nofx/local-", 1),
        )
        run = records.create(runtime.store, spec, plan, describe(config))
        console.print(f"[bold]nofx[/] run [cyan]{run.id}[/] on {repo}: {plan.goal}", highlight=False)
        runtime.engine.after(records.start(runtime.store, run.id), run.id)
        return _follow(runtime, workspaces, run.id, repo, console)
    finally:
        runtime.close()
        valkey.stop()


async def _plan(runtime: Runtime, request: str, config: RepoConfig) -> Plan:
    """The repository's plan without approvals or a pull request: the person at the terminal decides."""
    local_config = dataclasses.replace(config, policy=dataclasses.replace(config.policy, require_approval_before=()))
    tools = {
        tool for tool in runtime.engine.handlers if tool not in ("git_pr", "gate:ci", "git_ops", "manual:approval")
    }
    try:
        plan = await planner.build(request, local_config, available_tools=set(runtime.engine.handlers))
    except PlanError as exc:
        raise LocalRunError(f"the plan was refused: {exc}") from None
    steps = tuple(step for step in plan.steps if step.tool in tools)
    kept = {step.name for step in steps}
    steps = tuple(dataclasses.replace(s, depends_on=tuple(d for d in s.depends_on if d in kept)) for s in steps)
    return Plan(goal=plan.goal, steps=steps)


def _follow(runtime: Runtime, workspaces: LocalWorkspaces, run_id: str, repo: Path, console: Console) -> int:
    """Work the queue in this process under a live table of the steps, until the run is over."""
    view = _LiveSteps(runtime, run_id)
    with Live(get_renderable=view.render, console=console, refresh_per_second=4, transient=False):
        while True:
            run_worker(runtime, burst=True)
            if not runtime.queue.enqueue_due():
                time.sleep(0.1)  # only delayed jobs (retry backoff) are left: wait for them to come due
            run = queries.get_run(runtime.store, run_id)
            assert run is not None
            if run.status in records.TERMINAL_RUN and sum(runtime.queue.depths().values()) == 0:
                break
            if run.status == RunStatus.waiting:
                break
    if run.status == RunStatus.waiting:
        console.print(summary_panel(["The run waits for an approval, which local runs do not have."], ok=False))
        return 1
    if run.status != RunStatus.succeeded:
        console.print(summary_panel([f"run {run.status.value}: {(run.error or '').splitlines()[0][:300]}"], ok=False))
        asyncio.run(workspaces.discard(run.id, run.branch or ""))
        return 1
    return asyncio.run(_commit(runtime, workspaces, run_id, repo, console))


class _LiveSteps:
    """The live view's renderable, read from the database on each refresh (the worker runs in this thread's
    place, so steps that run long still tick)."""

    def __init__(self, runtime: Runtime, run_id: str) -> None:
        self.runtime, self.run_id = runtime, run_id
        self.last: RenderableType = Text("starting…")

    def render(self) -> RenderableType:
        try:
            run = queries.get_run(self.runtime.store, self.run_id)
            if run is not None:
                self.last = steps_table(run, queries.steps_of(self.runtime.store, self.run_id))
        except SQLAlchemyError:  # a refresh that races a write shows the previous frame
            pass
        return self.last


async def _commit(runtime: Runtime, workspaces: LocalWorkspaces, run_id: str, repo: Path, console: Console) -> int:
    """Commit what the run wrote on its branch, then remove the worktree: the branch stays in the repository."""
    run = queries.get_run(runtime.store, run_id)
    assert run is not None
    worktree = await workspaces.prepare(Checkout(run_id=run.id, branch=run.branch or "", base_ref=run.head_sha or ""))
    written = sorted({path for s in queries.steps_of(runtime.store, run.id) for path in written_by(s)})
    # The person's own identity (their global git config too): the branch is their work, made on their machine.
    name = await _git(repo, "config", "user.name", check=False, user_config=True) or "nofx"
    email = await _git(repo, "config", "user.email", check=False, user_config=True) or "nofx@localhost"
    sha = await worktree.commit_all(
        f"{run.request.splitlines()[0][:72]}\n\nnofx run {run.id}\n",
        author_name=name,
        author_email=email,
        paths=written,
    )
    await workspaces.remove(worktree)
    if sha is None:
        console.print(summary_panel(["The run changed no file."], ok=False))
        return 1
    branch = worktree.branch
    commits = await _git(repo, "log", "--oneline", "--no-decorate", f"{run.head_sha}..{branch}", check=False)
    lines = [
        f"branch  {branch}  ({len(written)} file(s) changed, cost ${run.cost_usd:.4f})",
        *(f"commit  {line}" for line in commits.splitlines()),
        "",
        f"in {repo}:",
        f"  look:       git diff {(run.head_sha or '')[:12]}...{branch}",
        f"  push it:    git push -u origin {branch}",
        f"  open a PR:  gh pr create --head {branch} --fill",
    ]
    console.print(summary_panel(lines, ok=True))
    return 0


async def _config(repo: Path) -> RepoConfig:
    text = await _git(repo, "show", f"HEAD:{CONFIG_PATH}", check=False) or None
    try:
        return parse_config(text)
    except ConfigError as exc:
        raise LocalRunError(str(exc)) from None


async def _git(repo: Path, *args: str, check: bool = True, user_config: bool = False) -> str:
    """stdout of git in the person's repository, stripped; "" when it fails and `check` is off."""
    try:
        return (await git(*args, cwd=repo, user_config=user_config)).strip()
    except GitError as exc:
        if check:
            raise LocalRunError(f"{repo} is not a git repository with a commit: {exc.stderr.strip()}") from None
        return ""
