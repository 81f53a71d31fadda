"""The step engine: claim a step, check it may run, run its handler under a timeout, record, move on.

Everything here is safe to run twice: the claim is atomic, and every transition goes through
`bot.runs`, which refuses what the state machine forbids.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from bot import logs
from bot.blobs import BlobError, Blobs
from bot.github import identity
from bot.github.client import GitHubApp
from bot.llm.router import LLM, Budget
from bot.models import Run, Step, StepStatus
from bot.queue import WorkQueue
from bot.repo_config import RepoConfig, from_dict
from bot.runs import (
    agent,
    checkpoints,
    ci_gate,
    policy,
    queries,
    records,
    report,
    search_texts,
    setup_cache,
    shared_checkpoints,
    step_logs,
)
from bot.runs.artifacts import Artifacts
from bot.runs.contract import (
    Handler,
    RetryableError,
    ReviewFinding,
    SemanticSearch,
    StepContext,
    StepFailed,
    StepResult,
)
from bot.runs.memory import ThreadMemoryConfig
from bot.runs.progress import enqueue_progress
from bot.runs.repo_commands import StepCommands
from bot.runs.step_access import StepAccess
from bot.runs.step_llm import StepLLM
from bot.runs.transitions import TransitionError
from bot.settings import SetupCacheLimits
from bot.store import Store
from bot.workspace.git import GitError
from bot.workspace.sandbox import Sandbox
from bot.workspace.worktrees import Checkout, RunWorkspaces, TokenProvider, Worktree

log = logging.getLogger(__name__)
HEARTBEAT_S = 5.0
RETRY_BASE_S = 2.0
RETRY_CAP_S = 60.0
MAX_ERROR_CHARS = 8000
# `(the step's model, the run's worktree, the repository's config)` -> the findings at or above `review.fail_on`;
# the worker wires `bot.review.analysis.failing_in_worktree` (a layer this one does not import).
ReviewOwnChange = Callable[[StepLLM, Worktree, RepoConfig], Awaitable[Sequence[ReviewFinding]]]

WORKSPACE_TOOLS = frozenset(
    {
        "setup",
        "codegen",
        "workspace:write",
        "gate:llm_review",
        "gate:test",
        "gate:lint",
        "gate:typecheck",
        "gate:ci",
        "git_ops",
        "git_pr",
    }
)


class Engine:
    """Runs steps with the dependencies a worker built (passed in, never read from globals)."""

    def __init__(
        self,
        store: Store,
        queue: WorkQueue,
        handlers: dict[str, Handler],
        *,
        github: GitHubApp | None = None,
        workspaces: RunWorkspaces | None = None,
        artifacts: Artifacts | None = None,
        llm: LLM | None = None,
        redact: Callable[[str], str] = str,
        memory: ThreadMemoryConfig | None = None,
        sandbox: Sandbox | None = None,
        setup_cache: Path | None = None,
        setup_limits: SetupCacheLimits | None = None,
        index_searches: bool = False,
        semantic: Callable[[Run], SemanticSearch] | None = None,
        review: ReviewOwnChange | None = None,
        run_logs: Path | None = None,
    ) -> None:
        self.store = store
        self.queue = queue
        self.handlers = handlers
        self.github = github
        self.workspaces = workspaces
        self.artifacts = artifacts
        self.llm = llm
        self.memory = memory or ThreadMemoryConfig()
        self.redact = redact
        self.sandbox = sandbox or Sandbox()
        self.setup_cache = setup_cache
        self.setup_limits = setup_limits or SetupCacheLimits()
        self.index_searches = index_searches  # keep the semantic index current (after fetches, finished runs)
        self.semantic = semantic  # a run's search over its repository's semantic index, for code generation
        self.review = review  # the model's review of a run's own change (`gate:llm_review`)
        self.run_logs = run_logs  # the data dir `logs.RunLogHandler` writes this process's per-run lines under

    def after(self, progress: records.Progress, run_id: str) -> None:
        """Enqueue the steps that became ready, show the run on GitHub, remember how a finished run ended."""
        enqueue_progress(self.store, self.queue, progress, run_id)
        if progress.run_status in records.TERMINAL_RUN:
            self.remember_outcome(run_id)
            if self.index_searches:
                self.queue.enqueue_index_run(run_id)

    def remember_outcome(self, run_id: str) -> None:
        """The thread's memory keeps how each run ended, for the next request on the thread."""
        run = queries.get_run(self.store, run_id)
        if run is None or not self.memory.keys:
            return
        outcome = f"Run {run.id} ({run.request[:200]!r}) {run.status.value}" + (f": {run.error}" if run.error else "")
        self.memory.remember(self.store, run, "outcome", outcome)

    def enqueue(self, step_id: str, delay_s: float = 0) -> None:
        step = queries.get_step(self.store, step_id)
        if step is not None:
            self.queue.enqueue_step(step.id, step.attempts + 1, step.timeout_s, delay_s)

    async def run_step(self, step_id: str, job_id: str | None) -> StepStatus | None:
        """The RQ job body: returns the status the step ended in, or None if this job had nothing to do."""
        step = records.claim_step(self.store, step_id, job_id)
        if step is None:
            log.info("step not claimable (taken, cancelled or finished)", extra=logs.fields(step_id=step_id))
            return None
        run = queries.get_run(self.store, step.run_id)
        assert run is not None
        with logs.bound(
            delivery_id=run.delivery_id,
            run_id=run.id,
            step_id=step.id,
            step=step.name,
            tool=step.tool,
            repo=run.repository,
        ):
            report.request_publish(self.queue, run.id)
            since = step_logs.size_now(self.run_logs, run.id) if self.run_logs else 0
            try:
                status = await self._execute(run, step)
            finally:
                if self.run_logs and self.artifacts:
                    await asyncio.to_thread(step_logs.keep, self.artifacts, self.run_logs, step, since)
        return status

    async def _execute(self, run: Run, step: Step) -> StepStatus | None:
        config = from_dict(run.config)
        problem = self._refusal(run, step, config)
        if problem is not None:
            return self._record(run, step, lambda: records.fail_step(self.store, step.id, problem))
        access = StepAccess(self.github, run, step.tool) if self.github else None
        try:
            return await self._run_handler(run, step, config, access)
        finally:
            if access is not None:
                await access.revoke()

    async def _run_handler(
        self, run: Run, step: Step, config: RepoConfig, access: StepAccess | None
    ) -> StepStatus | None:
        try:
            context = await self._context(run, step, config, access)
        except (GitError, ValueError, BlobError) as exc:
            message = self._describe(exc)
            return self._retry_or_fail(run, step, f"preparing the workspace failed: {message}")
        try:
            blobs = self.artifacts.blobs if self.artifacts else None
            handler = self.handlers[step.tool](context)
            if step.tool == "setup" and self.setup_cache is not None:
                handler = self._setup_kept(run, handler, blobs)
            work = checkpoints.checkpointed(self.store, context, handler, blobs)
            result = await self._with_heartbeat(step, work)
        except _Cancelled:
            log.info("step cancelled while running")
            report.request_publish(self.queue, run.id)
            return StepStatus.cancelled
        except TimeoutError:
            message = f"timed out after {step.timeout_s} s"
            return self._record(run, step, lambda: records.fail_step(self.store, step.id, message))
        except RetryableError as exc:
            return self._retry_or_fail(run, step, self._describe(exc))
        except StepFailed as exc:
            message, output = self._describe(exc), exc.output
            return self._record(run, step, lambda: records.fail_step(self.store, step.id, message, output))
        except Exception as exc:
            log.exception("handler raised")
            message = self._describe(exc, with_type=True)
            return self._record(run, step, lambda: records.fail_step(self.store, step.id, message))
        status = self._record(run, step, lambda: _finish(self.store, step, result))
        if status == StepStatus.succeeded and self.index_searches and step.tool in search_texts.INDEXED_TOOLS:
            self.queue.enqueue_index_artifacts(step.id)
        return status

    def _refusal(self, run: Run, step: Step, config: RepoConfig) -> str | None:
        """Why the step may not run now, or None: missing handler, unmet dependencies, policy."""
        if step.tool not in self.handlers:
            return f"no handler for the tool {step.tool!r} on this server"
        steps = queries.steps_of(self.store, run.id)
        by_name = {s.name: s for s in steps}
        unmet = [d for d in step.depends_on if by_name.get(d) is None or by_name[d].status != StepStatus.succeeded]
        if unmet:
            return f"dependencies not finished: {', '.join(unmet)}"
        allowed = set(config.policy.tools_allowed) & set(
            step.policy.get("tools_allowed") or config.policy.tools_allowed
        )
        if config.policy.tools_allowed and step.tool not in allowed:
            return f"the repository's policy does not allow the tool {step.tool!r}"
        return policy.step_refusal(step, steps, config)

    async def _context(self, run: Run, step: Step, config: RepoConfig, access: StepAccess | None) -> StepContext:
        earlier = {s.name: s for s in queries.steps_of(self.store, run.id) if s.status == StepStatus.succeeded}

        def emit(type_: str, payload: dict[str, object]) -> None:
            records.record_event(self.store, run.id, type_, {"step": step.name, **payload}, step.id)

        github = self.github
        token = access.token if access else None
        workspace = None
        if step.tool in WORKSPACE_TOOLS and self.workspaces is not None:
            # Any worker may run any step: the worktree starts where the run's first one did, then catches up
            # with the run's latest checkpoint from shared storage when this worker's copy is behind or new.
            pinned = shared_checkpoints.recorded_start(self.store, run.id)
            workspace = await self.workspaces.prepare(checkout_of(run, token or _no_token, pinned))
            shared_checkpoints.remember_start(self.store, workspace)
            blobs = self.artifacts.blobs if self.artifacts else None
            if self.index_searches and run.clone_url:
                self.queue.enqueue_index_code(run.installation_id, run.repository, run.clone_url, workspace.base_sha)
            start = checkpoints.start_point(self.store, run.id)
            if start is not None:  # a run resumed from a checkpoint starts with that checkpoint's files
                if blobs is not None:
                    await shared_checkpoints.fetch_start_point(self.store, blobs, workspace.mirror, run.id)
                await checkpoints.restore(workspace, start)
            if blobs is not None:
                await shared_checkpoints.catch_up(self.store, blobs, workspace, run)
        budget = Budget(limit_usd=config.policy.max_cost_usd, spent_usd=run.cost_usd)
        context = StepContext(
            run=run,
            step=step,
            config=config,
            gh=access.client() if access else None,
            earlier=earlier,
            emit=emit,
            log=logging.LoggerAdapter(logging.getLogger(f"handlers.{step.tool}"), {}),
            artifacts=self.artifacts.for_step(run.id, step.id) if self.artifacts else None,
            workspace=workspace,
            llm=StepLLM(self.llm, self.store, step) if self.llm else None,
            budget=budget,
            git_token=token,
            inherited_files=checkpoints.written_files(self.store, run.id),
            sandbox=self.sandbox,
            author=(lambda: identity.bot_author(access.client(), self.store)) if access else None,
            ci=ci_gate.look if github and step.tool == "gate:ci" else None,
            semantic_search=self.semantic(run) if self.semantic is not None and workspace is not None else None,
        )
        if self.setup_cache is not None:
            blobs = self.artifacts.blobs if self.artifacts else None
            results = setup_cache.RepositorySetups(
                setup_cache.repository_dir(self.setup_cache, run), run, blobs, self.setup_limits
            )
            context.setup_results = results
            key = setup_cache.run_setup_key(earlier)
            if workspace is not None and key is not None:  # made on another worker, maybe
                await results.ensure(key)
        context.checkpoint = lambda outcome: checkpoints.record(self.store, context, outcome=outcome)
        base_checkout = None
        if workspace is not None and self.workspaces is not None:
            base_checkout = functools.partial(self.workspaces.base_checkout, workspace)
        context.commands = StepCommands(context, base_checkout)
        if context.llm is not None:
            context.model = agent.StepModel(context)
            if self.review is not None and workspace is not None:
                context.review = functools.partial(self.review, context.llm, workspace, config)
        return context

    def trim_setups(self) -> list[str]:
        """Evict old setup results on this worker's disk and in the shared store, but not those unfinished runs use
        (the sweeper's timer: without a new setup, nothing else would)."""
        if self.setup_cache is None:
            return []
        used = setup_cache.in_use(self.setup_cache, queries.setup_steps_in_use(self.store))
        blobs = self.artifacts.blobs if self.artifacts else None
        return setup_cache.trim(blobs, self.setup_cache, self.setup_limits, used)

    async def _setup_kept(self, run: Run, handler: Awaitable[StepResult], blobs: Blobs | None) -> StepResult:
        """The setup step, then its result shared with the other workers and the oldest results evicted (not those
        unfinished runs use: their later steps may run on any worker)."""
        assert self.setup_cache is not None
        result = await handler
        used = setup_cache.in_use(self.setup_cache, queries.setup_steps_in_use(self.store))
        await setup_cache.keep(blobs, self.setup_cache, run, result.output, self.setup_limits, used)
        return result

    async def _with_heartbeat(self, step: Step, work: Awaitable[StepResult]) -> StepResult:
        """Run the handler under its timeout; a heartbeat proves we live and notices a cancel."""
        task = asyncio.ensure_future(asyncio.wait_for(work, timeout=step.timeout_s))
        cancelled = False
        while not task.done():
            done, _ = await asyncio.wait({task}, timeout=HEARTBEAT_S)
            if done:
                break
            if not await asyncio.to_thread(records.heartbeat, self.store, step.id):
                cancelled = True
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                break
        if cancelled:
            raise _Cancelled
        return task.result()

    def _retry_or_fail(self, run: Run, step: Step, message: str) -> StepStatus | None:
        if step.attempts <= step.retries:
            delay = min(RETRY_CAP_S, RETRY_BASE_S * 2 ** (step.attempts - 1)) * random.uniform(0.75, 1.25)
            try:
                records.requeue_step(self.store, step.id, message)
            except TransitionError:
                return None
            log.warning(
                "retryable error, attempt %s of %s in %.1f s: %s", step.attempts, step.retries + 1, delay, message
            )
            self.enqueue(step.id, delay_s=delay)
            report.request_publish(self.queue, run.id)
            return StepStatus.queued
        final = f"{message} (gave up after {step.attempts} attempts)"
        return self._record(run, step, lambda: records.fail_step(self.store, step.id, final))

    def _record(self, run: Run, step: Step, transition: Callable[[], records.Progress]) -> StepStatus | None:
        try:
            progress = transition()
        except TransitionError as exc:  # cancelled meanwhile: the cancel already recorded the outcome
            log.info("step result not recorded: %s", exc)
            report.request_publish(self.queue, run.id)
            return None
        self.after(progress, run.id)
        latest = queries.get_step(self.store, step.id)
        return latest.status if latest else None

    def _describe(self, exc: BaseException, *, with_type: bool = False) -> str:
        text = f"{type(exc).__name__}: {exc}" if with_type else str(exc) or type(exc).__name__
        return self.redact(text)[-MAX_ERROR_CHARS:]


async def _no_token() -> str:
    raise StepFailed("this step needs the GitHub App to reach the repository, and none is configured")


class _Cancelled(Exception):
    """The step stopped being `running` under us: somebody cancelled the run."""


def _finish(store: Store, step: Step, result: StepResult) -> records.Progress:
    output = {**result.output, **({"summary": result.summary} if result.summary else {})}
    if result.wait:
        return records.wait_step(store, step.id, output)
    return records.succeed_step(store, step.id, output)


def checkout_of(run: Run, token: TokenProvider, pinned: tuple[str, str] | None = None) -> Checkout:
    """What a run's worktree is made from: its branch from its base, in its repository; `pinned` (base, start)
    commits when an earlier step already made one, so every worker starts from the same commit."""
    owner, _, repo = run.repository.partition("/")
    return Checkout(
        run_id=run.id,
        branch=run.branch or f"nofx/run-{run.id[:8]}",
        base_ref=run.default_branch or "main",
        installation_id=run.installation_id,
        owner=owner,
        repo=repo,
        clone_url=run.clone_url or "",
        token=token,
        reuse_remote_branch=run.follows_run_id is not None,
        base_sha=pinned[0] if pinned else None,
        start_sha=pinned[1] if pinned else None,
    )
