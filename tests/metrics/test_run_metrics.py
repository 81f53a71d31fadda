"""`/metrics` reads run outcomes, approvals, LLM use and step durations from the database at scrape time."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update
from starlette.testclient import TestClient

from bot.metrics.runs import RunMetrics
from bot.models import Run, Step
from bot.runs import records
from bot.store import Store
from tests.support.runs_api import make_run, step_id

APPROVAL = [
    {"name": "ok", "tool": "manual:approval", "inputs": {}},
    {"name": "check", "tool": "gate:test", "inputs": {}, "depends_on": ["ok"]},
]


def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_metrics_count_outcomes_approvals_llm_use_and_step_durations(client: TestClient, store: Store) -> None:
    approved = make_run(store, steps=APPROVAL, number=1)
    ok = step_id(store, approved, "ok")
    records.claim_step(store, ok, "job")
    records.wait_step(store, ok, {})
    records.decide(store, ok, approved=True, by="alice")
    check = step_id(store, approved, "check")
    step = records.claim_step(store, check, "job")
    assert step is not None
    usage = {"provider": "anthropic", "model": "claude-sonnet-4-5"}
    records.add_usage(store, step, input_tokens=1000, output_tokens=200, cost_usd=0.01, detail=usage)
    records.add_usage(store, step, input_tokens=500, output_tokens=100, cost_usd=0.005, detail=usage)
    records.succeed_step(store, check, {})
    with store.session() as session:  # a gate that took 42 s
        step_row = session.get(Step, check)
        assert step_row is not None and step_row.started_at is not None
        session.exec(
            update(Step).where(Step.id == check).values(finished_at=step_row.started_at + timedelta(seconds=42))
        )  # type: ignore[call-overload]

    rejected = make_run(store, steps=APPROVAL, number=2)
    ok = step_id(store, rejected, "ok")
    records.claim_step(store, ok, "job")
    records.wait_step(store, ok, {})
    records.decide(store, ok, approved=False, by="bob")
    make_run(store, number=3)

    first = scrape(client)
    assert first[("nofx_runs", (("status", "succeeded"),))] == 1
    assert first[("nofx_runs", (("status", "cancelled"),))] == 1
    assert first[("nofx_runs", (("status", "running"),))] == 1
    assert first[("nofx_runs", (("status", "failed"),))] == 0
    assert first[("nofx_approvals_total", (("decision", "requested"),))] == 2
    assert first[("nofx_approvals_total", (("decision", "granted"),))] == 1
    assert first[("nofx_approvals_total", (("decision", "rejected"),))] == 1
    model = (("model", "claude-sonnet-4-5"), ("provider", "anthropic"))
    assert first[("nofx_llm_calls_total", model)] == 2
    assert first[("nofx_llm_tokens_total", (("direction", "input"), *model))] == 1500
    assert first[("nofx_llm_tokens_total", (("direction", "output"), *model))] == 300
    assert abs(first[("nofx_llm_cost_usd_total", model)] - 0.015) < 1e-9
    gate = (("tool", "gate:test"),)
    assert first[("nofx_step_duration_seconds_bucket", (("le", "30.0"), *gate))] == 0
    assert first[("nofx_step_duration_seconds_bucket", (("le", "60.0"), *gate))] == 1
    assert first[("nofx_step_duration_seconds_count", gate)] == 1
    assert first[("nofx_step_duration_seconds_sum", gate)] == 42

    # Usage is summed incrementally: the next scrape reads only the new calls, and counts each call once.
    records.add_usage(store, step, input_tokens=10, output_tokens=1, cost_usd=0.001, detail=usage)
    second = scrape(client)
    assert second[("nofx_llm_calls_total", model)] == 3
    assert second[("nofx_llm_tokens_total", (("direction", "input"), *model))] == 1510


def test_step_durations_cover_only_recent_runs(store: Store) -> None:
    run_id = make_run(store, number=1)
    check = step_id(store, run_id, "check")
    records.claim_step(store, check, "job")
    records.succeed_step(store, check, {})
    collector = RunMetrics(store, window=timedelta(hours=1))
    [durations] = [family for family in collector.collect() if family.name == "nofx_step_duration_seconds"]
    assert [s.value for s in durations.samples if s.name.endswith("_count")] == [1]

    with store.session() as session:
        old = session.get(Run, run_id)
        assert old is not None
        session.exec(update(Run).where(Run.id == run_id).values(created_at=old.created_at - timedelta(hours=2)))  # type: ignore[call-overload]
    [durations] = [family for family in collector.collect() if family.name == "nofx_step_duration_seconds"]
    assert durations.samples == []


def test_a_scrape_survives_a_database_outage(store: Store) -> None:
    collector = RunMetrics(Store("sqlite:////nonexistent-dir/x/nofx.db"))
    assert list(collector.collect()) == []
