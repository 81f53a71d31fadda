"""Property tests of the runs API against its own OpenAPI description (schemathesis on the real ASGI app).

Generated requests (valid and invalid) must never get a 5xx, and every answer must match the
document: status codes, content types and response schemas. Path parameters are mixed with the ids
of real runs, steps and artifacts seeded below, so the 200/202/409 answers are exercised too, not
only 404s. The SSE streams are left out (an open stream never ends); `tests/test_sse.py` covers them.
Each operation gets a bounded number of examples, so the whole file runs in seconds.
"""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from starlette.applications import Starlette

from bot import runs
from bot.api_schema import openapi
from bot.artifacts import Artifacts
from bot.settings import Settings
from bot.store import Store
from tests.support.runs_api import AUTH, TOKEN, make_run, step_id

EXAMPLES = 40
ARTIFACTS = ("output.log", "edits.json")
STEPS = [
    {"name": "generate", "tool": "codegen", "inputs": {}},
    {"name": "check", "tool": "gate:test", "inputs": {}, "depends_on": ["generate"]},
]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, api_token=TOKEN)


def _seed(store: Store, settings: Settings) -> list[dict[str, str]]:
    """A running run, a failed one (retryable once), a finished one with good and tampered artifacts.

    Returns path parameters that name real things, for the strategy to use half the time.
    """
    running = make_run(store, steps=STEPS, number=1)
    failed = make_run(store, steps=STEPS, number=2)
    generate = step_id(store, failed, "generate")
    runs.claim_step(store, generate, "job")
    runs.fail_step(store, generate, "boom")
    done = make_run(store, steps=STEPS, number=3)
    artifacts = Artifacts(settings.data_dir, store)
    for name in ("generate", "check"):
        current = step_id(store, done, name)
        runs.claim_step(store, current, "job")
        for artifact in ARTIFACTS:
            artifacts.put(done, current, artifact, b"[]")
        runs.succeed_step(store, current, {"output_tail": "ok"})
    artifacts.path(done, step_id(store, done, "check"), "edits.json").write_bytes(b"tampered")
    real = [{"run_id": done, "step": step, "name": name} for step in ("generate", "check") for name in ARTIFACTS]
    return [*real, {"run_id": running, "step": "check"}, {"run_id": failed, "step": "generate"}]


OPERATIONS = [
    ("/runs", "GET"),
    ("/runs/{run_id}", "GET"),
    ("/runs/{run_id}/timeline", "GET"),
    ("/runs/{run_id}/artifacts/{step}/{name}", "GET"),
    ("/runs/{run_id}/steps/{step}/retry", "POST"),
    ("/runs/{run_id}/cancel", "POST"),
]
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
EXPECTED = {  # answers the seeded data must produce, beyond the generated 400s and 404s
    "/runs": {200},
    "/runs/{run_id}": {200},
    "/runs/{run_id}/timeline": {200},
    "/runs/{run_id}/artifacts/{step}/{name}": {200, 409},
    "/runs/{run_id}/steps/{step}/retry": {202, 409},
    "/runs/{run_id}/cancel": {202, 409},
}


def test_every_operation_but_the_streams_is_fuzzed() -> None:
    described = {(path, method.upper()) for path, item in openapi()["paths"].items() for method in item}
    assert described - set(OPERATIONS) == {("/runs/{run_id}/stream", "GET"), ("/events/stream", "GET")}


@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_the_api_keeps_its_description(
    app: Starlette, store: Store, settings: Settings, path: str, method: str
) -> None:
    known = _seed(store, settings)
    answers: set[int] = set()
    operation = schemathesis.openapi.from_asgi("/openapi.json", app)[path][method]
    # First every real thing once, so each answer the document promises (200, 202, 409) is checked for sure.
    needed = set(re.findall(r"{(\w+)}", path))
    for real in (real for real in known if needed <= set(real)):
        case = operation.Case(path_parameters={key: real[key] for key in needed}, headers=AUTH)
        response = case.call()
        assert response.status_code < 500, response.text
        case.validate_response(response)
        answers.add(response.status_code)
    assert answers >= EXPECTED[path], answers

    # The token is fixed, not generated: negative cases then break the other parts of the request.
    strategies = {mode: operation.as_strategy(generation_mode=mode, headers=AUTH) for mode in MODES}

    # schemathesis' own pytest loader (`from_fixture`) does not run on pytest 9, so hypothesis drives it here.
    @given(data=st.data())
    @hypothesis_settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def check(data: st.DataObject) -> None:
        mode = data.draw(st.sampled_from(MODES))
        case = data.draw(strategies[mode])
        if mode == GenerationMode.POSITIVE and data.draw(st.booleans()):
            real = data.draw(st.sampled_from(known))  # half the time: so 200, 202 and 409 answers get checked too
            case.path_parameters = {key: real.get(key, value) for key, value in (case.path_parameters or {}).items()}
        response = case.call()
        assert response.status_code < 500, (case.method, case.formatted_path, response.text)
        case.validate_response(response)

    check()
