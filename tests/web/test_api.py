"""The runs API through the real ASGI app, database and queue: auth, filters, pages, artifacts, retry, cancel."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from rq.registry import ScheduledJobRegistry
from starlette.testclient import TestClient

from bot.blobs import DatabaseBlobs
from bot.models import RunStatus, StepStatus
from bot.queue import CLEANUP_JOB, REPORT_JOB, STEP_JOB, WorkQueue, step_job_id
from bot.runs import queries, records
from bot.runs.artifacts import Artifacts
from bot.settings import Settings
from bot.store import Store
from bot.web.openapi import openapi
from tests.support.runs_api import AUTH, TOKEN, make_run, step_id

TWO_STEPS = [
    {"name": "generate", "tool": "codegen", "inputs": {}},
    {"name": "check", "tool": "gate:test", "inputs": {}, "depends_on": ["generate"]},
]
READS = ["/runs", "/runs/{id}", "/runs/{id}/timeline", "/runs/{id}/stream", "/events/stream"]
ACTIONS = ["/runs/{id}/cancel", "/runs/{id}/steps/check/retry"]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, api_token=TOKEN)


def conforms(body: Any, schema_name: str) -> None:
    """Validate against the schema of that name in the served OpenAPI document (refs resolve inside it)."""
    document = openapi()
    validator = Draft202012Validator({**document, "$ref": f"#/components/schemas/{schema_name}"})
    errors = sorted(validator.iter_errors(body), key=str)
    assert not errors, [error.message for error in errors]


def jobs(queue: WorkQueue) -> list[tuple[str, tuple[Any, ...]]]:
    """Every job on the queue, waiting or scheduled, as (function, args)."""
    ids = [i for q in queue.all for i in q.job_ids + ScheduledJobRegistry(queue=q).get_job_ids()]
    return [(job.func_name, job.args) for job in queue.queue.job_class.fetch_many(ids, connection=queue.redis) if job]


def failed_run(store: Store) -> str:
    """A run whose only step failed, as the runner leaves it."""
    run_id = make_run(store)
    check = step_id(store, run_id, "check")
    records.claim_step(store, check, "job-1")
    records.fail_step(store, check, "`pytest -q` failed with exit code 1", {"output_tail": "1 failed"})
    return run_id


# --- auth -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", READS + ACTIONS)
@pytest.mark.parametrize("header", [None, "Bearer wrong-token", f"Basic {TOKEN}", "Bearer"])
def test_every_route_refuses_a_missing_or_wrong_token(
    client: TestClient, store: Store, path: str, header: str | None
) -> None:
    run_id = make_run(store)
    method = "POST" if path in ACTIONS else "GET"
    headers = {"Authorization": header} if header else {}
    response = client.request(method, path.format(id=run_id), headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": "a valid bearer token (NOFX_API_TOKEN) is required"}
    assert response.headers["www-authenticate"] == 'Bearer realm="nofx"'
    assert queries.get_run(store, run_id).status == RunStatus.running  # type: ignore[union-attr]


@pytest.mark.parametrize("path", READS + ACTIONS)
def test_without_a_configured_token_nothing_is_served(
    client: TestClient, settings: Settings, store: Store, path: str
) -> None:
    client.app.state.settings = replace(settings, api_token=None)  # type: ignore[attr-defined]
    run_id = make_run(store)
    method = "POST" if path in ACTIONS else "GET"
    for header in ({}, AUTH, {"Authorization": "Bearer "}, {"Authorization": "Bearer None"}):
        assert client.request(method, path.format(id=run_id), headers=header).status_code == 401


def test_the_api_description_is_public(client: TestClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.json()["openapi"] == "3.1.0"


# --- listing --------------------------------------------------------------------------------------------------


def test_runs_are_listed_newest_first_and_paged_without_gaps_or_repeats(client: TestClient, store: Store) -> None:
    made = [make_run(store, number=n, start=False) for n in range(7)]
    seen: list[str] = []
    url: str | None = "/runs?limit=3"
    pages = 0
    while url:
        response = client.get(url, headers=AUTH)
        assert response.status_code == 200
        body = response.json()
        conforms(body, "RunPage")
        seen += [run["id"] for run in body["runs"]]
        url = body["next"]
        pages += 1
    assert pages == 3
    assert seen == list(reversed(made))


def test_runs_are_filtered_by_installation_repo_and_status(client: TestClient, store: Store) -> None:
    a = make_run(store, installation_id=1, repository="octo/one", number=1)
    b = make_run(store, installation_id=2, repository="octo/two", number=1, start=False)
    c = make_run(store, installation_id=2, repository="octo/two", number=2)
    records.cancel(store, c, by="alice")

    def ids(query: str) -> list[str]:
        response = client.get(f"/runs?{query}", headers=AUTH)
        assert response.status_code == 200, response.text
        return [run["id"] for run in response.json()["runs"]]

    assert ids("installation=1") == [a]
    assert ids("installation=2") == [c, b]
    assert ids("repo=octo/two&status=queued") == [b]
    assert ids("status=cancelled") == [c]
    assert ids("status=running&installation=2") == []
    # The filters travel with the cursor.
    page = client.get("/runs?installation=2&limit=1", headers=AUTH).json()
    assert page["next"].startswith("/runs?installation=2&limit=1&cursor=")
    assert [run["id"] for run in client.get(page["next"], headers=AUTH).json()["runs"]] == [b]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("installation=abc", "installation must be a whole number"),
        ("installation=0", "installation must be a whole number"),
        ("installation=99999999999999999999", "installation must be a whole number"),
        ("repo=noslash", "repo must look like owner/name"),
        ("repo=a/b%00", "repo must look like owner/name"),
        ("status=done", "status must be one of queued, running"),
        ("limit=0", "limit must be a whole number from 1 to 100"),
        ("limit=101", "limit must be a whole number from 1 to 100"),
        ("limit=-1", "limit must be a whole number"),
        ("cursor=garbage", "cursor must be a next_cursor"),
        ("cursor=12345678901234567-abc", "cursor must be a next_cursor"),
        ("cursor=1-a%2Fb", "cursor must be a next_cursor"),
    ],
)
def test_bad_filters_are_400_with_a_message(client: TestClient, query: str, message: str) -> None:
    response = client.get(f"/runs?{query}", headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"].startswith(message)


# --- one run --------------------------------------------------------------------------------------------------


def test_a_run_has_its_plan_steps_artifacts_costs_and_pull_request(
    client: TestClient, store: Store, settings: Settings
) -> None:
    run_id = make_run(store, steps=[*TWO_STEPS, {"name": "pr", "tool": "git_pr", "depends_on": ["check"]}])
    generate = step_id(store, run_id, "generate")
    step = records.claim_step(store, generate, "job-1")
    assert step is not None
    records.add_usage(store, step, input_tokens=1200, output_tokens=300, cost_usd=0.0123, detail={"model": "m"})
    Artifacts(DatabaseBlobs(store), store).put(run_id, generate, "edits.json", b"[]")
    records.succeed_step(store, generate, {"files": ["calc.py"]})
    check = step_id(store, run_id, "check")
    records.claim_step(store, check, "job-2")
    records.succeed_step(store, check, {"output_tail": "3 passed", "exit_code": 0})
    pr = step_id(store, run_id, "pr")
    records.claim_step(store, pr, "job-3")
    records.succeed_step(store, pr, {"pull_request_url": "https://github.com/octo/repo/pull/9"})

    response = client.get(f"/runs/{run_id}", headers=AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    conforms(body, "Run")
    assert body["status"] == "succeeded"
    assert body["plan"]["goal"] == "do: add a cart"
    assert [(s["name"], s["status"]) for s in body["steps"]] == [
        ("generate", "succeeded"),
        ("check", "succeeded"),
        ("pr", "succeeded"),
    ]
    assert body["steps"][1]["output"]["output_tail"] == "3 passed"
    assert body["steps"][0]["duration_s"] >= 0
    assert body["costs"] == {"cost_usd": 0.0123, "input_tokens": 1200, "output_tokens": 300}
    assert body["pull_request_url"] == "https://github.com/octo/repo/pull/9"
    [artifact] = body["artifacts"]
    assert artifact["url"] == f"/runs/{run_id}/artifacts/generate/edits.json"
    assert artifact["size"] == 2


@pytest.mark.parametrize("run_id", ["0" * 32, "nope", "a" * 33, "x%00y", "x%2Fy", "..%2F..%2Fetc"])
def test_unknown_or_impossible_run_ids_are_404(client: TestClient, run_id: str) -> None:
    for path in ("/runs/{id}", "/runs/{id}/timeline", "/runs/{id}/stream", "/runs/{id}/artifacts/check/output.log"):
        response = client.get(path.format(id=run_id), headers=AUTH)
        assert response.status_code == 404, (path, response.text)
        if "%2F" not in run_id:  # an id with a slash matches no route: the router's own 404
            assert "no run" in response.json()["error"] or "no artifact" in response.json()["error"]
    for path in ("/runs/{id}/cancel", "/runs/{id}/steps/check/retry"):
        assert client.post(path.format(id=run_id), headers=AUTH).status_code == 404


# --- timeline -------------------------------------------------------------------------------------------------


def test_the_timeline_is_paged_in_order_and_searchable_by_type_prefix(client: TestClient, store: Store) -> None:
    run_id = make_run(store, steps=TWO_STEPS)
    generate = step_id(store, run_id, "generate")
    records.claim_step(store, generate, "job")
    records.record_event(store, run_id, "codegen.progress", {"files": 1}, generate)
    records.succeed_step(store, generate, {})
    stored = [event.id for event in queries.events_of(store, run_id)]

    seen: list[int] = []
    url: str | None = f"/runs/{run_id}/timeline?limit=2"
    while url:
        body = client.get(url, headers=AUTH).json()
        conforms(body, "Timeline")
        seen += [event["id"] for event in body["events"]]
        url = body["next"]
    assert seen == stored

    def types(query: str) -> list[str]:
        response = client.get(f"/runs/{run_id}/timeline?{query}", headers=AUTH)
        assert response.status_code == 200, response.text
        return [event["type"] for event in response.json()["events"]]

    assert types("type=step.") == ["step.enqueued", "step.started", "step.finished", "step.enqueued"]
    assert types("type=run.&type=codegen.") == ["run.created", "run.running", "codegen.progress"]
    assert types("type=step.finished") == ["step.finished"]
    assert types("type=run_") == []  # `_` is a LIKE wildcard: escaped, it matches only itself


@pytest.mark.parametrize("query", ["type=%25", "type=STEP", "type=", "limit=501", "limit=x", "cursor=-1"])
def test_bad_timeline_queries_are_400(client: TestClient, store: Store, query: str) -> None:
    run_id = make_run(store)
    response = client.get(f"/runs/{run_id}/timeline?{query}", headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"]


# --- artifacts ------------------------------------------------------------------------------------------------


def test_an_artifact_is_served_only_while_it_matches_its_digest(
    client: TestClient, store: Store, settings: Settings
) -> None:
    run_id = make_run(store)
    check = step_id(store, run_id, "check")
    artifacts = Artifacts(DatabaseBlobs(store), store)
    row = artifacts.put(run_id, check, "output.log", b"3 passed in 0.1s\n")
    url = f"/runs/{run_id}/artifacts/check/output.log"

    response = client.get(url, headers=AUTH)
    assert response.status_code == 200
    assert response.content == b"3 passed in 0.1s\n"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["etag"] == f'"{row.sha256}"'
    assert "sandbox" in response.headers["content-security-policy"]

    artifacts.blobs.put(artifacts.key(run_id, check, "output.log"), b"3 passed in 0.1s\nrm -rf /\n")
    tampered = client.get(url, headers=AUTH)
    assert tampered.status_code == 409
    assert tampered.json() == {
        "error": "artifact 'output.log' does not match its recorded sha256; refusing to use it",
    }

    artifacts.blobs.delete(artifacts.key(run_id, check, "output.log"))
    missing = client.get(url, headers=AUTH)
    assert missing.status_code == 409
    assert "missing from the artifact store" in missing.json()["error"]

    for unknown in ("check/other.log", "nostep/output.log", "check/..output.log", "Check/output.log"):
        assert client.get(f"/runs/{run_id}/artifacts/{unknown}", headers=AUTH).status_code == 404


# --- retry and cancel -----------------------------------------------------------------------------------------


def test_retry_resets_the_failed_step_and_enqueues_it_and_a_publish(
    client: TestClient, store: Store, queue: WorkQueue
) -> None:
    run_id = failed_run(store)
    check = step_id(store, run_id, "check")
    queue.redis.flushdb()

    response = client.post(f"/runs/{run_id}/steps/check/retry", headers=AUTH)

    assert response.status_code == 202
    body = response.json()
    conforms(body, "Run")
    assert body["status"] == "running"
    assert body["steps"][0]["status"] == "queued"
    assert (STEP_JOB, (check,)) in jobs(queue)
    assert queue.job_exists(step_job_id(check, 2))
    assert (REPORT_JOB, (run_id,)) in jobs(queue)
    types = [event.type for event in queries.events_of(store, run_id)][-3:]
    assert types == ["step.reset", "run.running", "step.enqueued"]

    again = client.post(f"/runs/{run_id}/steps/check/retry", headers=AUTH)
    assert again.status_code == 409
    assert again.json() == {"error": f"run {run_id} is running; only a failed run can be retried"}


def test_retry_of_an_unknown_step_is_404_and_of_a_step_that_did_not_fail_409(client: TestClient, store: Store) -> None:
    run_id = make_run(store, steps=TWO_STEPS)
    generate = step_id(store, run_id, "generate")
    records.claim_step(store, generate, "job")
    records.fail_step(store, generate, "boom")
    assert queries.get_run(store, run_id).status == RunStatus.failed  # type: ignore[union-attr]

    unknown = client.post(f"/runs/{run_id}/steps/deploy/retry", headers=AUTH)
    assert unknown.status_code == 404
    assert unknown.json() == {"error": f"no step 'deploy' in run {run_id}"}
    skipped = client.post(f"/runs/{run_id}/steps/check/retry", headers=AUTH)
    assert skipped.status_code == 409
    assert skipped.json() == {"error": f"run {run_id}: only failed steps can be retried"}


def test_cancel_stops_the_run_and_starts_the_one_queued_behind_it(
    client: TestClient, store: Store, queue: WorkQueue
) -> None:
    first = make_run(store, number=5)
    second = make_run(store, number=5)  # same thread: waits behind the first
    assert queries.get_run(store, second).status == RunStatus.queued  # type: ignore[union-attr]
    queue.redis.flushdb()

    response = client.post(f"/runs/{first}/cancel", headers=AUTH)

    assert response.status_code == 202
    body = response.json()
    conforms(body, "Run")
    assert body["status"] == "cancelled"
    assert body["error"] == "cancelled through the API"
    assert [s["status"] for s in body["steps"]] == ["cancelled"]
    queued = jobs(queue)
    assert (STEP_JOB, (step_id(store, second, "check"),)) in queued
    assert (REPORT_JOB, (first,)) in queued
    assert (REPORT_JOB, (second,)) in queued
    assert (CLEANUP_JOB, ()) in queued
    assert queries.get_run(store, second).status == RunStatus.running  # type: ignore[union-attr]

    again = client.post(f"/runs/{first}/cancel", headers=AUTH)
    assert again.status_code == 409
    assert again.json() == {"error": f"run {first}: cancelled → cancelled is not allowed"}
    assert [s.status for s in queries.steps_of(store, first)] == [StepStatus.cancelled]
