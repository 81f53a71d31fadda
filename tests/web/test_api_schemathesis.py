"""Property tests of the runs API against its own OpenAPI description (schemathesis on the real ASGI app).

Generated requests (valid and invalid) must never get a 5xx, and every answer must match the
document: status codes, content types and response schemas. Path parameters are mixed with the ids
of real runs, steps, artifacts, checkpoints and memory entries seeded below, so the 200/201/202/409/410
answers are exercised too, not only 404s. Checkpoints are real commits in a real bare mirror, so diffs
are computed by git. The SSE streams are left out (an open stream never ends); `tests/web/test_sse.py`
covers them. Each operation gets a bounded number of examples, so the whole file runs in seconds.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance
from starlette.applications import Starlette

from bot.blobs import DatabaseBlobs
from bot.models import Checkpoint
from bot.runs import checkpoints, memory, queries, records
from bot.runs.artifacts import Artifacts
from bot.settings import Settings
from bot.store import Store
from bot.web.openapi import openapi
from tests.support.runs_api import AUTH, TOKEN, make_run, step_id

EXAMPLES = 40
MEMORY_KEY = "0" * 43 + "="  # a Fernet key: 32 bytes, urlsafe base64
THREAD = memory.ThreadKey("octo/shop", 12)
ARTIFACTS = ("output.log", "edits.json")
STEPS = [
    {"name": "generate", "tool": "codegen", "inputs": {}},
    {"name": "check", "tool": "gate:test", "inputs": {}, "depends_on": ["generate"]},
]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, api_token=TOKEN, memory_keys=(MEMORY_KEY,))


def _seed(store: Store, settings: Settings) -> list[dict[str, Any]]:
    """A running run, a failed one (retryable once), a finished one with good and tampered artifacts; a run
    with two checkpoints in a real mirror and one whose mirror is gone; a thread's memory, one entry redacted.

    Returns path parameters that name real things, for the strategy to use half the time.
    """
    running = make_run(store, steps=STEPS, number=1)
    failed = make_run(store, steps=STEPS, number=2)
    generate = step_id(store, failed, "generate")
    records.claim_step(store, generate, "job")
    records.fail_step(store, generate, "boom")
    done = make_run(store, steps=STEPS, number=3)
    artifacts = Artifacts(DatabaseBlobs(store), store)
    for name in ("generate", "check"):
        current = step_id(store, done, name)
        records.claim_step(store, current, "job")
        for artifact in ARTIFACTS:
            artifacts.put(done, current, artifact, b"[]")
        records.succeed_step(store, current, {"output_tail": "ok"})
    artifacts.blobs.put(artifacts.key(done, step_id(store, done, "check"), "edits.json"), b"tampered")
    real = [{"run_id": done, "step": step, "name": name} for step in ("generate", "check") for name in ARTIFACTS]
    checkpointed = make_run(store, steps=STEPS, number=4)
    _checkpoint(store, settings, checkpointed, {"generate": {"a.txt": "one\n"}, "check": {"a.txt": "two\n"}})
    evicted = make_run(store, steps=STEPS, number=5, repository="octo/evicted")
    _checkpoint(store, settings, evicted, {"generate": {"b.txt": "x\n"}})
    checkpoints.mirror_of(settings.data_dir / "workspaces", queries.get_run(store, evicted)).rename(  # type: ignore[arg-type]
        settings.data_dir / "evicted.git"
    )
    entries = [memory.remember(store, settings.memory_keys, THREAD, kind, f"{kind} text") for kind in memory.KINDS]
    assert all(entries)
    memory.redact(store, settings.memory_keys, THREAD, entries[0].id)  # type: ignore[union-attr]
    threads = [{"thread": name, "entry": entry.id} for name in ("octo:shop:12", "Octo/Shop#12") for entry in entries]  # type: ignore[union-attr]
    return [
        *real,
        {"run_id": running, "step": "check"},
        {"run_id": failed, "step": "generate"},
        *({"run_id": checkpointed, "n": n} for n in (1, 2)),  # 1: resumable; 2: after the last step (409)
        {"run_id": evicted, "n": 1},  # its mirror is gone: 410
        *threads,
    ]


def _checkpoint(store: Store, settings: Settings, run_id: str, states: dict[str, dict[str, str]]) -> None:
    """Commits in the run's bare mirror, one per step with the files it leaves, recorded as its checkpoints."""
    run = queries.get_run(store, run_id)
    assert run is not None
    mirror = checkpoints.mirror_of(settings.data_dir / "workspaces", run)
    mirror.mkdir(parents=True)
    _git(mirror, "init", "--quiet", "--bare")
    parent = _commit(mirror, {"README.md": "# shop\n"}, None)
    files: dict[str, str] = {"README.md": "# shop\n"}
    for n, (name, changed) in enumerate(states.items(), start=1):
        files = {**files, **changed}
        commit = _commit(mirror, files, parent)
        tree = _git(mirror, "rev-parse", f"{commit}^{{tree}}")
        ref = f"{checkpoints.REF_PREFIX}/{run_id}/{n}"
        _git(mirror, "update-ref", ref, commit)
        step = step_id(store, run_id, name)
        with store.session() as session:
            session.add(
                Checkpoint(
                    run_id=run_id,
                    n=n,
                    step_id=step,
                    step_name=name,
                    tool="gate:test",
                    outcome="failed",
                    ref=ref,
                    commit_sha=commit,
                    tree_sha=tree,
                    parent_sha=parent,
                    artifacts={f"{name}/output.log": "0" * 64},
                )
            )
        parent = commit


def _commit(mirror: Path, files: dict[str, str], parent: str | None) -> str:
    entries = "".join(
        f"100644 blob {_git(mirror, 'hash-object', '-w', '--stdin', input=text)}\t{path}\n"
        for path, text in files.items()
    )
    tree = _git(mirror, "mktree", input=entries)
    return _git(mirror, "commit-tree", tree, *(["-p", parent] if parent else []), "-m", "state", input="")


def _git(mirror: Path, *args: str, input: str | None = None) -> str:
    env = {
        "PATH": os.environ["PATH"],
        "GIT_DIR": str(mirror),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        **{
            f"GIT_{who}_{what}": value
            for who in ("AUTHOR", "COMMITTER")
            for what, value in (("NAME", "t"), ("EMAIL", "t@t"))
        },
    }
    done = subprocess.run(["git", *args], input=input, capture_output=True, text=True, env=env, check=True)
    return done.stdout.strip()


OPERATIONS = [
    ("/runs", "GET"),
    ("/runs/{run_id}", "GET"),
    ("/runs/{run_id}/timeline", "GET"),
    ("/runs/{run_id}/artifacts/{step}/{name}", "GET"),
    ("/runs/{run_id}/steps/{step}/retry", "POST"),
    ("/runs/{run_id}/cancel", "POST"),
    ("/runs/{run_id}/checkpoints", "GET"),
    ("/runs/{run_id}/checkpoints/{n}/diff", "GET"),
    ("/runs/{run_id}/checkpoints/{n}/resume", "POST"),
    ("/runs/{run_id}/rca", "GET"),
    ("/threads/{thread}/memory", "GET"),
    ("/threads/{thread}/memory", "DELETE"),
    ("/threads/{thread}/memory/{entry}", "DELETE"),
    ("/search", "GET"),
]
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
EXPECTED = {  # answers the seeded data must produce, beyond the generated 400s and 404s
    "/runs": {200},
    "/runs/{run_id}": {200},
    "/runs/{run_id}/timeline": {200},
    "/runs/{run_id}/artifacts/{step}/{name}": {200, 409},
    "/runs/{run_id}/steps/{step}/retry": {202, 409},
    "/runs/{run_id}/cancel": {202, 409},
    "/runs/{run_id}/checkpoints": {200},
    "/runs/{run_id}/checkpoints/{n}/diff": {200, 410},
    "/runs/{run_id}/checkpoints/{n}/resume": {201, 409},
    "/runs/{run_id}/rca": {200},
    "/threads/{thread}/memory": {200},
    "/threads/{thread}/memory/{entry}": {200},
    "/search": set(),  # nothing seeded: its parameters are what is fuzzed here (tests/search checks results)
}
# Refusals that depend on what exists, not on the request's shape, so a schema-valid request may get them:
# a checkpoint whose mirror was evicted (410), a `base` that is no checkpoint of the run (400).
STATEFUL_REFUSALS = {"/runs/{run_id}/checkpoints/{n}/diff": {400, 410}, "/search": {404}}


def _quoted(value: Any) -> str:
    """As schemathesis sends the path parameters it generates: percent-encoded (`octo%2Fshop%2312`)."""
    return value if isinstance(value, str) and "%" in value else quote(str(value), safe="")


def _validate(case: Case, response: Any, path: str, mode: GenerationMode | None = None) -> None:
    """Every check, but only the one of the mode the case was drawn in: schemathesis' own label of a case
    (`case.meta`) can say negative for a positive draw once Hypothesis replays it."""
    excluded = [negative_data_rejection] if mode == GenerationMode.POSITIVE else []
    if mode == GenerationMode.NEGATIVE or response.status_code in STATEFUL_REFUSALS.get(path, set()):
        excluded.append(positive_data_acceptance)
    case.validate_response(response, excluded_checks=excluded)


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
        case = operation.Case(path_parameters={key: _quoted(real[key]) for key in needed}, headers=AUTH)
        response = case.call()
        assert response.status_code < 500, response.text
        _validate(case, response, path)
        answers.add(response.status_code)
    assert answers >= EXPECTED[path], answers
    fitting = [real for real in known if needed <= set(real)] or known

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
            real = data.draw(st.sampled_from(fitting))  # half the time: so 200, 201, 202, 409 answers get checked too
            case.path_parameters = {
                key: _quoted(real.get(key, value)) for key, value in (case.path_parameters or {}).items()
            }
        response = case.call()
        assert response.status_code < 500, (case.method, case.formatted_path, response.text)
        _validate(case, response, path, mode)

    check()
