"""The step engine's own retries: a retryable error is retried with backoff up to the step's `retries`."""

from __future__ import annotations

from collections.abc import Callable

from bot.models import RunStatus, StepStatus
from bot.plans import validate
from bot.runs import queries, records
from bot.runs.contract import RetryableError, StepContext, StepResult
from bot.store import Store
from bot.worker.runtime import Runtime


def _run_with(runtime: Runtime, store: Store, retries: int) -> str:
    plan = validate(
        {"goal": "flaky", "steps": [{"name": "flaky", "tool": "manual:approval", "retries": retries}]},
        available_tools={"manual:approval"},
    )
    request = records.RunRequest(
        installation_id=1,
        repository="octo/repo",
        thread_number=3,
        thread_kind="issue",
        request="be flaky",
        requester="alice",
        trigger="api",
    )
    run = records.create(store, request, plan, {})
    runtime.engine.after(records.start(store, run.id), run.id)
    return run.id


def flaky_handler(failures: int) -> Callable[[StepContext], object]:
    """A handler (the engine's seam) that fails `failures` times with a transient error, then succeeds."""
    attempts: list[int] = []

    async def handler(ctx: StepContext) -> StepResult:
        attempts.append(ctx.step.attempts)
        if len(attempts) <= failures:
            raise RetryableError(f"overloaded (attempt {ctx.step.attempts})")
        return StepResult(output={"attempts": list(attempts)})

    return handler


def test_a_retryable_error_is_retried_with_backoff_until_it_succeeds(
    runtime: Runtime, store: Store, work: Callable[..., None]
) -> None:
    runtime.engine.handlers = {"manual:approval": flaky_handler(failures=2)}  # type: ignore[dict-item]
    run_id = _run_with(runtime, store, retries=2)
    work()

    run = queries.get_run(store, run_id)
    [step] = queries.steps_of(store, run_id)
    assert run is not None and run.status == RunStatus.succeeded
    assert (step.status, step.attempts, step.output["attempts"]) == (StepStatus.succeeded, 3, [1, 2, 3])
    assert [e.type for e in queries.events_of(store, run_id)].count("step.retrying") == 2


def test_retries_run_out_and_the_step_fails_with_the_last_error(
    runtime: Runtime, store: Store, work: Callable[..., None]
) -> None:
    runtime.engine.handlers = {"manual:approval": flaky_handler(failures=5)}  # type: ignore[dict-item]
    run_id = _run_with(runtime, store, retries=1)
    work()

    [step] = queries.steps_of(store, run_id)
    assert step.status == StepStatus.failed
    assert step.error == "overloaded (attempt 2) (gave up after 2 attempts)"
    run = queries.get_run(store, run_id)
    assert run is not None and run.status == RunStatus.failed
