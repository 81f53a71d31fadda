"""`nofx run --repo PATH "request"`: the same engine on a repository on this machine, no GitHub.

A run is planned from the repository's own `.github/nofx.yml` (without the pull request and CI steps),
executed by a real RQ worker in this process on an embedded queue, shown in the terminal as it
goes, and its result is left committed on a `nofx/local-…` branch of the repository.
"""

from __future__ import annotations

import asyncio
import dataclasses
import getpass
import subprocess
import tempfile
import time
from pathlib import Path

from rich.console import Console

from bot.models import RunStatus
from bot.plans import Plan, PlanError
from bot.queue import start_embedded_valkey
from bot.repo_config import CONFIG_PATH, ConfigError, RepoConfig, describe, parse_config
from bot.runs import planner
from bot.runs import records as runs
from bot.settings import Settings
from bot.worker.loop import run_worker
from bot.worker.runtime import Runtime
from bot.workspace.local import LocalWorkspaces
from bot.workspace.worktrees import Checkout, branch_name

STATUS_STYLE = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "waiting": "magenta"}


class LocalRunError(Exception):
    """The local run cannot start (not a git repository, invalid config, invalid plan)."""


def run_locally(repo: Path, request: str, settings: Settings, console: Console) -> int:
    """Plan, run and commit; returns the process exit code (0 when the run succeeded)."""
    repo = repo.resolve()
    head = _git(repo, "rev-parse", "--verify", "HEAD^{commit}")
    config = _config(repo)
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
        spec = runs.RunRequest(
            installation_id=0,
            repository=f"local/{repo.name}",
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
        run = runs.create(runtime.store, spec, plan, describe(config))
        console.print(f"[bold]nofx[/] run [cyan]{run.id}[/] on {repo}: {plan.goal}")
        runtime.engine.after(runs.start(runtime.store, run.id), run.id)
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
    """Work the queue in this process, printing every event, until the run is over."""
    seen = 0
    while True:
        run_worker(runtime, burst=True)
        if not runtime.queue.enqueue_due():
            time.sleep(0.1)  # only delayed jobs (retry backoff) are left: wait for them to come due
        for event in runs.events_of(runtime.store, run_id, after_id=seen):
            seen = event.id or seen
            name = event.payload.get("name", "")
            state = event.type.split(".", 1)[1]
            style = STATUS_STYLE.get(state, "white")
            console.print(f"  [{style}]{event.type:<16}[/] {name} {event.payload.get('error', '')}".rstrip())
        run = runs.get_run(runtime.store, run_id)
        assert run is not None
        if run.status in runs.TERMINAL_RUN and sum(runtime.queue.depths().values()) == 0:
            break
        if run.status == RunStatus.waiting:
            console.print("[magenta]the run waits for an approval, which local runs do not have[/]")
            return 1
    if run.status != RunStatus.succeeded:
        console.print(f"[red]run {run.status.value}[/]: {run.error or ''}")
        asyncio.run(workspaces.discard(run.id, run.branch or ""))
        return 1
    return asyncio.run(_commit(runtime, workspaces, run_id, repo, console))


async def _commit(runtime: Runtime, workspaces: LocalWorkspaces, run_id: str, repo: Path, console: Console) -> int:
    """Commit what the run wrote on its branch, then remove the worktree: the branch stays in the repository."""
    run = runs.get_run(runtime.store, run_id)
    assert run is not None
    worktree = await workspaces.prepare(Checkout(run_id=run.id, branch=run.branch or "", base_ref=run.head_sha or ""))
    written = sorted(
        {
            path
            for s in runs.steps_of(runtime.store, run.id)
            if s.tool == "workspace:write"
            for path in s.output.get("files", [])
        }
    )
    name = _git(repo, "config", "user.name", check=False) or "nofx"
    email = _git(repo, "config", "user.email", check=False) or "nofx@localhost"
    sha = await worktree.commit_all(
        f"{run.request.splitlines()[0][:72]}\n\nnofx run {run.id}\n",
        author_name=name,
        author_email=email,
        paths=written,
    )
    await workspaces.remove(worktree)
    if sha is None:
        console.print("[yellow]the run changed no file[/]")
        return 1
    console.print(f"[green]done[/]: {len(written)} file(s) committed on branch [bold]{worktree.branch}[/] ({sha[:12]})")
    return 0


def _config(repo: Path) -> RepoConfig:
    text = _git(repo, "show", f"HEAD:{CONFIG_PATH}", check=False) or None
    try:
        return parse_config(text)
    except ConfigError as exc:
        raise LocalRunError(str(exc)) from None


def _git(repo: Path, *args: str, check: bool = True) -> str:
    result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        if check:
            raise LocalRunError(f"{repo} is not a git repository with a commit: {result.stderr.strip()}")
        return ""
    return result.stdout.strip()
