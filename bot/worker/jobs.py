"""RQ job entry points. Jobs take ids and rebuild everything else from the database."""

from __future__ import annotations

import logging
from datetime import timedelta

from rq import get_current_job

from bot import deliveries, logs
from bot.events import router as events
from bot.events.context import EventContext
from bot.models import DeliveryStatus, ReviewPass
from bot.review import passes
from bot.runs import queries, report, search_texts
from bot.runs.artifacts import ArtifactError
from bot.runs.memory import ThreadKey
from bot.settings import Settings
from bot.worker.runtime import Runtime

log = logging.getLogger(__name__)
RETRY_WINDOW = timedelta(hours=24)  # a failed run keeps its worktree this long, for `/nofx retry`
_runtime: Runtime | None = None


def use_runtime(runtime: Runtime) -> None:
    """Called by the worker entry point so jobs share its dependencies and warm caches."""
    global _runtime
    _runtime = runtime


def current_runtime() -> Runtime:
    """The process's runtime; built from the environment if a foreign worker runs our jobs."""
    if _runtime is None:
        use_runtime(Runtime(Settings.from_env()))
    assert _runtime is not None
    return _runtime


def dispatch(delivery_id: str) -> None:
    """Route one recorded delivery through the event routers; a second run of the job does nothing."""
    runtime = current_runtime()
    runtime.run(route_delivery(runtime, delivery_id))


def run_step(step_id: str) -> None:
    """Run one attempt of a step; a duplicate of the job finds the step claimed and does nothing."""
    runtime = current_runtime()
    job = get_current_job()
    runtime.run(runtime.engine.run_step(step_id, job.id if job else None))


def run_review(pass_id: str) -> None:
    """Run one review pass of a pull request; a duplicate of the job finds the pass claimed and does nothing."""
    runtime = current_runtime()
    memory = runtime.engine.memory

    def remember(review: ReviewPass, feedback: str) -> None:
        thread = ThreadKey(review.repository, review.pull_number, review.repository_id)
        memory.remember_thread(runtime.store, thread, "review_feedback", feedback)

    deps = passes.ReviewDeps(runtime.store, runtime.github, runtime.llm, runtime.redactor.redact, remember)
    runtime.run(passes.run_pass(deps, pass_id))


def publish_run(run_id: str) -> None:
    """Show a run's current state on GitHub (status comment and check run)."""
    runtime = current_runtime()
    run = queries.get_run(runtime.store, run_id)
    if run is None or runtime.github is None:
        return
    with logs.bound(run_id=run_id, repo=run.repository, installation=run.installation_id):
        gh = runtime.github.installation_client(run.installation_id)
        runtime.run(report.publish(runtime.store, runtime.queue, runtime.settings, gh, run_id))


def index_code(installation_id: int, repo: str, clone_url: str, commit: str) -> None:
    """Bring the repository's semantic index to `commit`; a worker without the mirror fetches it first."""
    runtime = current_runtime()
    workspaces, github = runtime.engine.workspaces, runtime.github
    if github is None or workspaces is None:
        return
    owner, _, name = repo.partition("/")

    async def index() -> None:
        token = await github.installation_token(installation_id)
        mirror = await workspaces.fetched_mirror(installation_id, owner, name, clone_url, commit, token)
        if mirror is not None:
            await runtime.search_index().index_code(installation_id, repo, mirror, commit)

    runtime.run(index())


def index_run(run_id: str) -> None:
    """Add a finished run to the runs collection, so later requests on the repository can find similar ones."""
    runtime = current_runtime()
    run = queries.get_run(runtime.store, run_id)
    if run is None:
        return
    plan, outcome = search_texts.run_summary(runtime.store, run)
    runtime.search_index().add_run(
        run.installation_id, run.repository, run.id, run.request, plan, outcome, repository_id=run.repository_id
    )


def index_artifacts(step_id: str) -> None:
    """Add a succeeded step's generated edits or pull request to the artifacts collection, secrets redacted."""
    runtime = current_runtime()
    step = queries.get_step(runtime.store, step_id)
    run = queries.get_run(runtime.store, step.run_id) if step else None
    artifacts = runtime.engine.artifacts
    if step is None or run is None or artifacts is None:
        return
    try:
        found = search_texts.step_artifacts(artifacts, run, step)
    except (ArtifactError, ValueError) as exc:  # gone from the store, or not what the step writes: nothing to add
        log.warning("artifacts of step %s not indexed: %s", step.id, exc)
        return
    index = runtime.search_index()
    for name, text in found:
        text = runtime.redactor.redact(text)
        index.add_artifact(run.installation_id, run.repository, run.id, name, text, repository_id=run.repository_id)


def clean_up_workspaces() -> None:
    """Remove the worktrees of runs that are over, then evict mirrors past the disk budget."""
    runtime = current_runtime()
    workspaces = runtime.engine.workspaces
    if workspaces is None:
        return
    active = queries.runs_keeping_worktrees(runtime.store, RETRY_WINDOW)
    removed = runtime.run(workspaces.reap(active))
    evicted = runtime.run(workspaces.evict())
    log.info("workspaces cleaned", extra=logs.fields(removed=len(removed), evicted=len(evicted)))


async def acknowledge_delivery(runtime: Runtime, delivery_id: str, ctx: EventContext) -> None:
    """👀 on the command a delivery carries, before it is routed (`events.acknowledge`); a delivery already taken
    for routing is left alone."""
    delivery = deliveries.unclaimed(runtime.store, delivery_id)
    if delivery is None:
        return
    with logs.bound(delivery_id=delivery.id, event=delivery.event, installation=delivery.installation_id):
        await events.acknowledge(delivery, ctx)


async def route_delivery(runtime: Runtime, delivery_id: str, ctx: EventContext | None = None) -> DeliveryStatus | None:
    """Claim, dispatch and record the outcome; failures are recorded on the delivery for replay. `ctx`: the
    routers' dependencies for the running loop (a dispatch lane's routing thread), else the runtime's."""
    delivery = deliveries.claim(runtime.store, delivery_id)
    if delivery is None:
        log.info("delivery not claimable (unknown, taken or finished)", extra=logs.fields(delivery_id=delivery_id))
        return None
    with logs.bound(
        delivery_id=delivery.id,
        event=delivery.event,
        installation=delivery.installation_id,
        repo=delivery.repository,
    ):
        try:
            ignored = await events.dispatch(delivery, ctx or runtime.context())
        except Exception as exc:
            reason = runtime.redactor.redact(f"{type(exc).__name__}: {exc}")
            log.exception("delivery failed; `nofx replay %s` routes it again", delivery.id)
            deliveries.finish(runtime.store, delivery.id, DeliveryStatus.failed, reason)
            return DeliveryStatus.failed
        if ignored is not None:
            log.info("delivery ignored: %s", ignored)
            deliveries.finish(runtime.store, delivery.id, DeliveryStatus.ignored, ignored)
            return DeliveryStatus.ignored
        deliveries.finish(runtime.store, delivery.id, DeliveryStatus.done)
        log.info("delivery routed")
        return DeliveryStatus.done
