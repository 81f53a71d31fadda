"""Helpers for the runs API tests: runs made through `bot.runs`, a real uvicorn server, an SSE reader."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette

from bot.plans import validate
from bot.runs import queries, records
from bot.store import Store

TOKEN = "nofx-api-token-for-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TOOLS = {"codegen", "gate:test", "manual:approval", "git_pr"}


def make_run(
    store: Store,
    *,
    steps: list[dict[str, Any]] | None = None,
    installation_id: int = 1,
    repository: str = "octo/repo",
    number: int = 1,
    request: str = "add a cart",
    start: bool = True,
) -> str:
    """A run created and started the way the event router does it (through `bot.runs`)."""
    plan = validate(
        {"goal": f"do: {request}", "steps": steps or [{"name": "check", "tool": "gate:test", "inputs": {}}]},
        available_tools=TOOLS,
    )
    run = records.create(
        store,
        records.RunRequest(
            installation_id=installation_id,
            repository=repository,
            thread_number=number,
            thread_kind="issue",
            request=request,
            requester="alice",
            trigger="comment",
            thread_url=f"https://github.com/{repository}/issues/{number}",
        ),
        plan,
        {},
    )
    if start:
        records.start(store, run.id)
    return run.id


def step_id(store: Store, run_id: str, name: str) -> str:
    return next(step.id for step in queries.steps_of(store, run_id) if step.name == name)


@contextmanager
def live_server(app: Starlette) -> Iterator[str]:
    """The real app on uvicorn at 127.0.0.1 on a free port, in a thread; yields its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="off", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@dataclass
class Frame:
    """One server-sent event, or a comment line (`comment` set, the rest empty)."""

    event: str = "message"
    data: str = ""
    id: str | None = None
    comment: str | None = None
    fields: list[str] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.data)


def frames(response: httpx.Response) -> Iterator[Frame]:
    """Parse an SSE body as a browser does (per the HTML standard's event-stream rules)."""
    current = Frame()
    for line in response.iter_lines():
        if line == "":
            if current.fields:
                yield current
            current = Frame()
        elif line.startswith(":"):
            yield Frame(comment=line[1:].strip())
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            current.fields.append(name)
            if name == "data":
                current.data = f"{current.data}\n{value}" if current.data else value
            elif name == "id":
                current.id = value
            elif name == "event":
                current.event = value
