"""A new run from a checkpoint of another: same thread and request, the plan's remaining steps, a branch of its own."""

from __future__ import annotations

import logging

from bot.models import Run, RunStart
from bot.plans import ALL_TOOLS, Plan, PlanError, StepSpec
from bot.queue import WorkQueue
from bot.repo_config import RepoConfig
from bot.repo_config import describe as describe_config
from bot.runs import policy, queries, records
from bot.runs.checkpoints import CheckpointError, get, written_files
from bot.runs.contract import written_by
from bot.runs.progress import enqueue_progress
from bot.store import Store

log = logging.getLogger(__name__)


class ResumeError(CheckpointError):
    """A run cannot be resumed from this checkpoint (unknown run or checkpoint, nothing left to run)."""


def resume(
    store: Store,
    queue: WorkQueue,
    run_id: str,
    n: int,
    by: str,
    *,
    trigger: str = "api",
    delivery_id: str | None = None,
    config: RepoConfig | None = None,
) -> Run:
    """Start a new run from checkpoint `n` of `run_id`: same thread and request, the plan's steps after the
    checkpoint's step, on a branch of its own; its worktree starts from the checkpoint (`start_point`).

    `config` is the repository's config as it is now (a `/nofx retry --from` read it): the new run runs under
    it and its plan passes the policy again. Without it (the runs API, which reads no repository) the source
    run's config is kept; the engine still checks each step against it.
    """
    source = queries.get_run(store, run_id)
    if source is None:
        raise ResumeError(f"run {run_id} does not exist")
    checkpoint = get(store, run_id, n)
    if checkpoint is None:
        raise ResumeError(f"run {run_id} has no checkpoint {n}")
    steps = queries.steps_of(store, run_id)
    at = next((s for s in steps if s.id == checkpoint.step_id), None)
    if at is None:
        raise ResumeError(f"the step of checkpoint {n} is not part of run {run_id}")
    plan = _remaining_plan(source, at.position)
    if not plan.steps:
        raise ResumeError(f"checkpoint {n} is after {at.name}, the last step: there is nothing left to run")
    if config is not None:
        try:
            plan = policy.enforce(plan.to_dict(), config, available_tools=ALL_TOOLS)
        except PlanError as exc:
            raise ResumeError(f"the rest of the plan breaks the repository's current policy: {exc}") from None
    request = records.RunRequest(
        installation_id=source.installation_id,
        repository=source.repository,
        repository_id=source.repository_id,
        thread_number=source.thread_number,
        thread_kind=source.thread_kind,
        request=source.request,
        requester=source.requester,
        requester_id=source.requester_id,
        trigger=trigger,
        delivery_id=delivery_id,
        clone_url=source.clone_url,
        thread_url=source.thread_url,
        default_branch=source.default_branch,
        head_sha=source.head_sha,
        branch=_branch_for(store, source, n),
    )
    run = records.create(store, request, plan, describe_config(config) if config is not None else source.config)
    files = set(written_files(store, run_id))
    files |= {path for s in steps if s.position <= at.position for path in written_by(s)}
    with store.session() as session:
        session.add(
            RunStart(
                run_id=run.id,
                checkpoint_sha=checkpoint.commit_sha,
                source_run_id=run_id,
                source_n=n,
                files=sorted(files),
                by=by[:100],
            )
        )
    detail = {"source_run_id": run_id, "n": n, "commit": checkpoint.commit_sha, "by": by}
    records.record_event(store, run.id, "run.resumed_from", detail)
    records.record_event(store, run_id, "run.branched", {"run_id": run.id, "n": n, "by": by})
    enqueue_progress(store, queue, records.start(store, run.id), run.id)
    log.info("run %s resumed from checkpoint %s of run %s by %s", run.id, n, run_id, by)
    return queries.get_run(store, run.id) or run


def _remaining_plan(source: Run, position: int) -> Plan:
    """The plan's steps after `position`; dependencies on steps that already ran are dropped (they are done)."""
    raw = source.plan.get("steps", [])[position + 1 :]
    names = {spec["name"] for spec in raw}
    specs = tuple(
        StepSpec(
            name=spec["name"],
            tool=spec["tool"],
            inputs=spec.get("inputs", {}),
            depends_on=tuple(d for d in spec.get("depends_on", []) if d in names),
            timeout_s=spec.get("timeout_s", 600),
            retries=spec.get("retries", 0),
            policy=spec.get("policy", {}),
        )
        for spec in raw
    )
    return Plan(goal=source.plan.get("goal") or source.request, steps=specs)


def _branch_for(store: Store, source: Run, n: int) -> str:
    """`<source branch>-cp<n>`, numbered on when taken: the source run's worktree may still hold its own branch."""
    stem = f"{source.branch or f'nofx/{source.thread_number}-change'}-cp{n}"
    candidate, suffix = stem, 1
    while queries.latest_run_on_branch(store, source.repository, candidate) is not None:
        suffix += 1
        candidate = f"{stem}-{suffix}"
    return candidate
