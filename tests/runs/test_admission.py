"""Fair admission of runs on SQLite and PostgreSQL: per-installation and global limits, round robin."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from bot.models import RunStatus
from bot.runs import queries, records
from bot.settings import RunLimits
from bot.store import Store
from tests.support.runs_api import make_run


def statuses(store: Store, run_ids: list[str]) -> list[RunStatus]:
    return [run.status for run in (queries.get_run(store, run_id) for run_id in run_ids) if run is not None]


def test_a_busy_installation_gets_two_active_runs_and_the_next_starts_when_one_ends(any_store: Store) -> None:
    busy = [make_run(any_store, installation_id=1, repository="org1/repo", number=n) for n in range(1, 5)]
    other = make_run(any_store, installation_id=2, repository="org2/repo", number=1)

    assert statuses(any_store, busy) == [RunStatus.running] * 2 + [RunStatus.queued] * 2
    assert statuses(any_store, [other]) == [RunStatus.running]  # another installation is not held up
    assert [e.type for e in queries.events_of(any_store, busy[2])][-1] == "run.queued_for_capacity"

    progress = records.cancel(any_store, busy[0], by="alice")

    assert progress.started_runs == [busy[2]]
    assert statuses(any_store, busy) == [RunStatus.cancelled, RunStatus.running, RunStatus.running, RunStatus.queued]
    assert progress.enqueue  # the admitted run's first step is ready


def test_the_global_limit_is_shared_round_robin_across_installations(any_store: Store) -> None:
    any_store.run_limits = RunLimits(per_installation=2, total=3)
    first = [
        make_run(any_store, installation_id=1, repository="org1/repo", number=n) for n in range(1, 4)
    ]  # 2 run, 1 waits
    second = [
        make_run(any_store, installation_id=2, repository="org2/repo", number=n) for n in range(1, 3)
    ]  # 1 runs (total 3), 1 waits
    third = make_run(any_store, installation_id=3, repository="org3/repo", number=1)  # waits: the server is full

    assert statuses(any_store, [*first, *second, third]) == [RunStatus.running] * 2 + [RunStatus.queued] + [
        RunStatus.running,
        RunStatus.queued,
        RunStatus.queued,
    ]

    # A slot frees: installation 3 has no active run, so it goes first although installation 1 waited longer.
    assert records.cancel(any_store, first[0], by="alice").started_runs == [third]
    # Next: installation 1 has none active any more, installation 2 still one.
    assert records.cancel(any_store, first[1], by="alice").started_runs == [first[2]]
    assert statuses(any_store, [second[1]]) == [RunStatus.queued]


def test_concurrent_starts_never_exceed_the_limit(any_store: Store) -> None:
    pending = [
        make_run(any_store, installation_id=7, repository="org7/repo", number=n, start=False) for n in range(1, 9)
    ]

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda run_id: records.start(any_store, run_id), pending))

    assert statuses(any_store, pending).count(RunStatus.running) == 2
