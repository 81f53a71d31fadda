"""The runs API's JSON shapes, each defined once next to its JSON Schema, and the OpenAPI 3.1 document.

The same `event_json` feeds the timeline, the SSE streams and the run page, so a client parses one
event shape everywhere; tests validate every response against the schemas below.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bot.models import Artifact, Run, RunEvent, RunStatus, Step, StepStatus
from bot.runs.memory import KINDS as MEMORY_KINDS

RUN_ID_PATTERN = r"^[A-Za-z0-9_-]{1,32}$"
STEP_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
ARTIFACT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$"
REPO_PATTERN = r"^[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}$"
EVENT_TYPE_PATTERN = r"^[a-z0-9_.:-]{1,50}$"
CURSOR_PATTERN = r"^([0-9]{1,16})-([A-Za-z0-9_-]{1,32})$"  # 16 digits of µs reach the year 2286
_NAME = r"(?:[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}|\.[A-Za-z0-9_-][A-Za-z0-9._-]{0,98}|\.\.[A-Za-z0-9._-]{1,98})"
THREAD_PATTERN = rf"^{_NAME}[/:]{_NAME}[#:][0-9]{{1,10}}$"  # a GitHub name, but never `.` or `..`
MEMORY_ENTRY_PATTERN = r"^[0-9a-f]{32}$"
MAX_RESUMED_BY = 100
MAX_ID = 2**63 - 1
MAX_RUNS_PAGE = 100
MAX_EVENTS_PAGE = 500


def timestamp(value: datetime | None) -> str | None:
    """ISO 8601 in UTC (the database gives aware datetimes on every backend)."""
    return value.isoformat() if value is not None else None


def _seconds(started: datetime | None, finished: datetime | None) -> float | None:
    if started is None or finished is None:
        return None
    return round((finished - started).total_seconds(), 3)


def event_json(event: RunEvent) -> dict[str, Any]:
    """One run event as the timeline, the SSE streams and the run page all send it."""
    return {
        "id": event.id,
        "run_id": event.run_id,
        "step_id": event.step_id,
        "type": event.type,
        "payload": event.payload,
        "created_at": timestamp(event.created_at),
    }


def run_summary_json(run: Run) -> dict[str, Any]:
    """A run in a list: who asked for what, where, and how it stands."""
    return {
        "id": run.id,
        "installation_id": run.installation_id,
        "repository": run.repository,
        "thread_number": run.thread_number,
        "thread_kind": run.thread_kind,
        "thread_url": run.thread_url,
        "request": run.request,
        "requester": run.requester,
        "trigger": run.trigger,
        "goal": (run.plan or {}).get("goal"),
        "status": run.status.value,
        "error": run.error,
        "branch": run.branch,
        "cost_usd": run.cost_usd,
        "created_at": timestamp(run.created_at),
        "started_at": timestamp(run.started_at),
        "finished_at": timestamp(run.finished_at),
        "duration_s": _seconds(run.started_at, run.finished_at),
    }


def step_json(step: Step) -> dict[str, Any]:
    """A step with what the page shows of it: state, timing, cost, and its handler's output."""
    return {
        "id": step.id,
        "name": step.name,
        "position": step.position,
        "tool": step.tool,
        "status": step.status.value,
        "depends_on": list(step.depends_on),
        "attempts": step.attempts,
        "retries": step.retries,
        "timeout_s": step.timeout_s,
        "error": step.error,
        "output": step.output,
        "decided_by": step.decided_by,
        "input_tokens": step.input_tokens,
        "output_tokens": step.output_tokens,
        "cost_usd": step.cost_usd,
        "started_at": timestamp(step.started_at),
        "finished_at": timestamp(step.finished_at),
        "duration_s": _seconds(step.started_at, step.finished_at),
    }


def artifact_url(run_id: str, step_name: str, name: str) -> str:
    """Where an artifact is downloaded (and verified): by step name, as people read it."""
    return f"/runs/{run_id}/artifacts/{step_name}/{name}"


def run_json(run: Run, steps: list[Step], artifacts: list[Artifact]) -> dict[str, Any]:
    """A run with its plan, steps, artifacts, costs and pull request: `GET /runs/{id}` and the run page."""
    names = {step.id: step.name for step in steps}
    pull_request_url = None
    for step in steps:  # later steps win, as in the status comment
        url = step.output.get("pull_request_url") if isinstance(step.output, dict) else None
        if isinstance(url, str) and url.startswith(("https://", "http://")):
            pull_request_url = url
    return {
        **run_summary_json(run),
        "plan": run.plan,
        "follows_run_id": run.follows_run_id,
        "behind_run_id": run.behind_run_id,
        "head_sha": run.head_sha,
        "pull_request_url": pull_request_url,
        "costs": {
            "cost_usd": run.cost_usd,
            "input_tokens": sum(step.input_tokens for step in steps),
            "output_tokens": sum(step.output_tokens for step in steps),
        },
        "steps": [step_json(step) for step in steps],
        "artifacts": [
            {
                "step_id": artifact.step_id,
                "step": names.get(artifact.step_id, artifact.step_id),
                "name": artifact.name,
                "sha256": artifact.sha256,
                "size": artifact.size,
                "created_at": timestamp(artifact.created_at),
                "url": artifact_url(run.id, names.get(artifact.step_id, artifact.step_id), artifact.name),
            }
            for artifact in artifacts
        ],
        "links": {"timeline": f"/runs/{run.id}/timeline", "stream": f"/runs/{run.id}/stream"},
    }


# --- JSON Schemas (OpenAPI 3.1 is JSON Schema 2020-12) -------------------------------------------------------

_STRING_OR_NULL = {"type": ["string", "null"]}
_TIME = {"type": "string", "format": "date-time"}
_TIME_OR_NULL = {"type": ["string", "null"], "format": "date-time"}
_SECONDS_OR_NULL = {"type": ["number", "null"], "minimum": 0}

EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "One entry of a run's audit trail; ids increase in the order events were recorded.",
    "required": ["id", "run_id", "step_id", "type", "payload", "created_at"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "integer", "minimum": 1},
        "run_id": {"type": "string"},
        "step_id": _STRING_OR_NULL,
        "type": {"type": "string", "examples": ["step.started", "run.succeeded", "llm.call"]},
        "payload": {"type": "object"},
        "created_at": _TIME,
    },
}

RUN_SUMMARY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": [
        "id",
        "installation_id",
        "repository",
        "thread_number",
        "thread_kind",
        "thread_url",
        "request",
        "requester",
        "trigger",
        "goal",
        "status",
        "error",
        "branch",
        "cost_usd",
        "created_at",
        "started_at",
        "finished_at",
        "duration_s",
    ],
    "properties": {
        "id": {"type": "string"},
        "installation_id": {"type": "integer"},
        "repository": {"type": "string"},
        "thread_number": {"type": "integer"},
        "thread_kind": {"type": "string"},
        "thread_url": _STRING_OR_NULL,
        "request": {"type": "string"},
        "requester": {"type": "string"},
        "trigger": {"type": "string"},
        "goal": _STRING_OR_NULL,
        "status": {"enum": [status.value for status in RunStatus]},
        "error": _STRING_OR_NULL,
        "branch": _STRING_OR_NULL,
        "cost_usd": {"type": "number"},
        "created_at": _TIME,
        "started_at": _TIME_OR_NULL,
        "finished_at": _TIME_OR_NULL,
        "duration_s": _SECONDS_OR_NULL,
    },
}

STEP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "name", "position", "tool", "status", "depends_on", "attempts", "output", "cost_usd"],
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "position": {"type": "integer"},
        "tool": {"type": "string"},
        "status": {"enum": [status.value for status in StepStatus]},
        "depends_on": {"type": "array", "items": {"type": "string"}},
        "attempts": {"type": "integer"},
        "retries": {"type": "integer"},
        "timeout_s": {"type": "integer"},
        "error": _STRING_OR_NULL,
        "output": {"type": "object", "description": "What the handler returned, e.g. `output_tail` of a gate."},
        "decided_by": _STRING_OR_NULL,
        "input_tokens": {"type": "integer"},
        "output_tokens": {"type": "integer"},
        "cost_usd": {"type": "number"},
        "started_at": _TIME_OR_NULL,
        "finished_at": _TIME_OR_NULL,
        "duration_s": _SECONDS_OR_NULL,
    },
}

ARTIFACT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["step_id", "step", "name", "sha256", "size", "url"],
    "properties": {
        "step_id": {"type": "string"},
        "step": {"type": "string", "description": "the step's name, as used in the artifact's URL"},
        "name": {"type": "string"},
        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "size": {"type": "integer", "minimum": 0},
        "created_at": _TIME,
        "url": {"type": "string"},
    },
}

RUN_SCHEMA: dict[str, Any] = {
    "allOf": [{"$ref": "#/components/schemas/RunSummary"}],
    "type": "object",
    "required": ["plan", "pull_request_url", "costs", "steps", "artifacts", "links"],
    "properties": {
        "plan": {"type": "object"},
        "follows_run_id": _STRING_OR_NULL,
        "behind_run_id": _STRING_OR_NULL,
        "head_sha": _STRING_OR_NULL,
        "pull_request_url": _STRING_OR_NULL,
        "costs": {
            "type": "object",
            "required": ["cost_usd", "input_tokens", "output_tokens"],
            "properties": {
                "cost_usd": {"type": "number"},
                "input_tokens": {"type": "integer"},
                "output_tokens": {"type": "integer"},
            },
        },
        "steps": {"type": "array", "items": {"$ref": "#/components/schemas/Step"}},
        "artifacts": {"type": "array", "items": {"$ref": "#/components/schemas/Artifact"}},
        "links": {
            "type": "object",
            "required": ["timeline", "stream"],
            "properties": {"timeline": {"type": "string"}, "stream": {"type": "string"}},
        },
    },
}

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string", "description": "what went wrong, for a person to act on"}},
}

_PAGE_LINKS = {
    "next_cursor": {"type": ["string", "null"], "description": "pass as `cursor` for the next page; null on the last"},
    "next": {"type": ["string", "null"], "description": "path and query of the next page; null on the last"},
}

RUN_PAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["runs", "next_cursor", "next"],
    "properties": {"runs": {"type": "array", "items": {"$ref": "#/components/schemas/RunSummary"}}, **_PAGE_LINKS},
}

TIMELINE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["run_id", "events", "next_cursor", "next"],
    "properties": {
        "run_id": {"type": "string"},
        "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
        **_PAGE_LINKS,
    },
}

_SHA = {"type": "string", "pattern": "^[0-9a-f]{40}([0-9a-f]{24})?$"}
_COUNT = {"type": "integer", "minimum": 0}
_COUNT_OR_NULL = {"type": ["integer", "null"], "minimum": 0}

CHECKPOINT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "The worktree's full state after a step that changed it, as a commit on a hidden ref.",
    "required": [
        "n",
        "step_id",
        "step",
        "tool",
        "outcome",
        "ref",
        "commit",
        "tree",
        "parent",
        "artifacts",
        "created_at",
        "links",
    ],
    "additionalProperties": False,
    "properties": {
        "n": {"type": "integer", "minimum": 1, "description": "1, 2, … in the order the steps finished"},
        "step_id": {"type": "string"},
        "step": {"type": "string", "description": "the step's name in the plan"},
        "tool": {"type": "string"},
        "outcome": {"enum": ["succeeded", "waiting", "failed"], "description": "how the step ended"},
        "ref": {"type": "string", "examples": ["refs/nofx/runs/3f2a/1"]},
        "commit": _SHA,
        "tree": _SHA,
        "parent": {**_SHA, "description": "the previous checkpoint, or where the run's worktree started"},
        "artifacts": {
            "type": "object",
            "description": "`<step>/<artifact>` → sha256 of every artifact of the run when it was taken",
            "additionalProperties": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        },
        "created_at": _TIME,
        "links": {
            "type": "object",
            "required": ["diff", "resume"],
            "properties": {"diff": {"type": "string"}, "resume": {"type": "string"}},
        },
    },
}

CHECKPOINT_LIST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["run_id", "checkpoints"],
    "properties": {
        "run_id": {"type": "string"},
        "checkpoints": {"type": "array", "items": {"$ref": "#/components/schemas/Checkpoint"}},
    },
}

DIFF_LINE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "old", "new", "text"],
    "additionalProperties": False,
    "properties": {
        "type": {"enum": ["add", "del", "context"]},
        "old": {"type": ["integer", "null"], "minimum": 0, "description": "line number before; null when added"},
        "new": {"type": ["integer", "null"], "minimum": 0, "description": "line number after; null when deleted"},
        "text": {"type": "string", "description": "the line without its `+`/`-`/` ` marker"},
        "no_newline_at_end": {"const": True, "description": "present when the file ends on this line unterminated"},
    },
}

DIFF_HUNK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["header", "section", "old_start", "old_lines", "new_start", "new_lines", "lines"],
    "additionalProperties": False,
    "properties": {
        "header": {"type": "string", "examples": ["@@ -1,7 +1,8 @@ def total():"]},
        "section": {"type": "string", "description": "what git shows after the `@@`: the enclosing function"},
        "old_start": _COUNT,
        "old_lines": _COUNT,
        "new_start": _COUNT,
        "new_lines": _COUNT,
        "lines": {"type": "array", "items": {"$ref": "#/components/schemas/DiffLine"}},
    },
}

DIFF_FILE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": [
        "path",
        "old_path",
        "status",
        "similarity",
        "binary",
        "additions",
        "deletions",
        "truncated",
        "hunks",
    ],
    "additionalProperties": False,
    "properties": {
        "path": {"type": "string"},
        "old_path": {"type": "string", "description": "the path before a rename or copy; else `path`"},
        "status": {"enum": ["added", "modified", "deleted", "renamed", "copied", "type_changed", "unknown"]},
        "similarity": {"type": ["integer", "null"], "minimum": 0, "maximum": 100, "description": "renames, copies"},
        "binary": {"type": "boolean"},
        "additions": {**_COUNT_OR_NULL, "description": "null when the patch was cut before this file"},
        "deletions": _COUNT_OR_NULL,
        "truncated": {"type": "boolean", "description": "the patch was cut before this file: no hunks"},
        "hunks": {"type": "array", "items": {"$ref": "#/components/schemas/DiffHunk"}},
    },
}

CHECKPOINT_DIFF_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["run_id", "checkpoint", "base_checkpoint", "base", "head", "stats", "truncated", "files"],
    "additionalProperties": False,
    "properties": {
        "run_id": {"type": "string"},
        "checkpoint": {"type": "integer", "minimum": 1},
        "base_checkpoint": {"type": "integer", "minimum": 0, "description": "0: the run's start"},
        "base": _SHA,
        "head": _SHA,
        "stats": {
            "type": "object",
            "required": ["files", "additions", "deletions"],
            "additionalProperties": False,
            "properties": {"files": _COUNT, "additions": _COUNT, "deletions": _COUNT},
        },
        "truncated": {"type": "boolean", "description": "the patch exceeded its size cap; later files lack hunks"},
        "files": {"type": "array", "items": {"$ref": "#/components/schemas/DiffFile"}},
    },
}

RESUME_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "by": {
            "type": "string",
            "maxLength": MAX_RESUMED_BY,
            "pattern": "^[^\\x00-\\x1f\\x7f]*$",
            "description": "who asked, recorded on the events (default `api`); no control characters",
        }
    },
}

RESUMED_RUN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["run_id", "status", "branch", "steps", "from"],
    "additionalProperties": False,
    "properties": {
        "run_id": {"type": "string", "description": "the new run's id"},
        "status": {"enum": [status.value for status in RunStatus]},
        "branch": _STRING_OR_NULL,
        "steps": {"type": "array", "items": {"type": "string"}, "description": "the plan's steps after the checkpoint"},
        "from": {
            "type": "object",
            "required": ["run_id", "checkpoint", "commit"],
            "additionalProperties": False,
            "properties": {
                "run_id": {"type": "string"},
                "checkpoint": {"type": "integer", "minimum": 1},
                "commit": {**_SHA, "type": ["string", "null"]},
            },
        },
    },
}

MEMORY_ENTRY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "thread", "kind", "text", "redacted", "created_at", "expires_at"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string", "pattern": MEMORY_ENTRY_PATTERN},
        "thread": {"type": "string", "examples": ["octo/shop#12"]},
        "kind": {"enum": list(MEMORY_KINDS)},
        "text": {
            "type": ["string", "null"],
            "description": "decrypted; null when redacted or when no configured key can decrypt it",
        },
        "redacted": {"type": "boolean"},
        "created_at": _TIME,
        "expires_at": _TIME,
    },
}

THREAD_MEMORY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["thread", "enabled", "entries"],
    "additionalProperties": False,
    "properties": {
        "thread": {"type": "string", "description": "the thread as memory names it: `owner/repo#12`, lower case"},
        "enabled": {"type": "boolean", "description": "false when NOFX_MEMORY_KEYS is empty: nothing is remembered"},
        "entries": {
            "type": "array",
            "items": {"$ref": "#/components/schemas/MemoryEntry"},
            "description": "unexpired entries, oldest first (the latest 200)",
        },
    },
}

THREAD_FORGOTTEN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["thread", "deleted"],
    "additionalProperties": False,
    "properties": {"thread": {"type": "string"}, "deleted": {**_COUNT, "description": "entries deleted"}},
}

MEMORY_REDACTED_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["thread", "redacted"],
    "additionalProperties": False,
    "properties": {"thread": {"type": "string"}, "redacted": {"type": "string", "description": "the entry's id"}},
}

SEARCH_HIT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["kind", "repo", "score", "path", "start_line", "end_line", "run_id", "artifact", "text"],
    "additionalProperties": False,
    "properties": {
        "kind": {"enum": ["code", "artifacts", "runs"]},
        "repo": {"type": "string"},
        "score": {"type": "number", "description": "cosine similarity to the query (1: identical)"},
        "path": {**_STRING_OR_NULL, "description": "code: the file"},
        "start_line": {"type": ["integer", "null"], "minimum": 1},
        "end_line": {"type": ["integer", "null"], "minimum": 1},
        "run_id": {**_STRING_OR_NULL, "description": "runs and artifacts: the run"},
        "artifact": {
            **_STRING_OR_NULL,
            "description": "artifacts: `<step>/<name>`, as GET /runs/{run_id}/artifacts/{step}/{name} serves it",
        },
        "text": {"type": "string", "description": "the chunk, run summary or artifact text that matched"},
    },
}

SEARCH_RESULTS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["query", "repo", "kind", "results"],
    "additionalProperties": False,
    "properties": {
        "query": {"type": "string"},
        "repo": {"type": "string"},
        "kind": {"enum": ["code", "artifacts", "runs"]},
        "results": {"type": "array", "items": {"$ref": "#/components/schemas/SearchHit"}},
    },
}

SCHEMAS: dict[str, dict[str, Any]] = {
    "SearchHit": SEARCH_HIT_SCHEMA,
    "SearchResults": SEARCH_RESULTS_SCHEMA,
    "Event": EVENT_SCHEMA,
    "RunSummary": RUN_SUMMARY_SCHEMA,
    "Run": RUN_SCHEMA,
    "Step": STEP_SCHEMA,
    "Artifact": ARTIFACT_SCHEMA,
    "RunPage": RUN_PAGE_SCHEMA,
    "Timeline": TIMELINE_SCHEMA,
    "Checkpoint": CHECKPOINT_SCHEMA,
    "CheckpointList": CHECKPOINT_LIST_SCHEMA,
    "CheckpointDiff": CHECKPOINT_DIFF_SCHEMA,
    "DiffFile": DIFF_FILE_SCHEMA,
    "DiffHunk": DIFF_HUNK_SCHEMA,
    "DiffLine": DIFF_LINE_SCHEMA,
    "ResumeRequest": RESUME_REQUEST_SCHEMA,
    "ResumedRun": RESUMED_RUN_SCHEMA,
    "ThreadMemory": THREAD_MEMORY_SCHEMA,
    "MemoryEntry": MEMORY_ENTRY_SCHEMA,
    "ThreadForgotten": THREAD_FORGOTTEN_SCHEMA,
    "MemoryEntryRedacted": MEMORY_REDACTED_SCHEMA,
    "Error": ERROR_SCHEMA,
}


# --- the OpenAPI document -------------------------------------------------------------------------------------


def _json(ref: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": ref}}}}


def _error(description: str) -> dict[str, Any]:
    return _json("#/components/schemas/Error", description)


_UNAUTHORIZED = {"$ref": "#/components/responses/Unauthorized"}
_NOT_FOUND = _error("no such run (or step, or artifact)")
_BAD_REQUEST = _error("a parameter is malformed; the message names it")


def _path_param(name: str, pattern: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "pattern": pattern},
    }


def _query(name: str, schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema, **extra}


_RUN_ID = _path_param("run_id", RUN_ID_PATTERN, "the run's id (`run` in the status comment)")
_CHECKPOINT_N = {
    "name": "n",
    "in": "path",
    "required": True,
    "description": "the checkpoint's number in the run (`n` in the list)",
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
}
_THREAD = _path_param(
    "thread",
    THREAD_PATTERN,
    "an issue or pull request thread: `owner:repo:12`, or `owner/repo#12` URL-encoded (`owner%2Frepo%2312`)",
)
_NO_RUN = _error("no such run")
_NO_CHECKPOINT = _error("no such run, or the run has no such checkpoint")
_BAD_THREAD = _error("`thread` is not `owner:repo:12` nor `owner/repo#12`")
_STEP = _path_param("step", STEP_NAME_PATTERN, "the step's name in the plan")
_LAST_EVENT_ID = {
    "name": "Last-Event-ID",
    "in": "header",
    "required": False,
    "description": "resume after this event id (browsers send it when they reconnect)",
    "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
}
_SSE = {
    "description": "text/event-stream: one `data:` frame per event (an `Event` object) with `id:` set to its id, "
    "`: keep-alive` comments while idle",
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 description of the runs API, served at `/openapi.json` and tested with schemathesis."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "nofx runs API",
            "version": "1",
            "description": "Runs, their steps, events, artifacts and checkpoints; root-cause bundles; thread "
            "memory. Every operation needs "
            "`Authorization: Bearer <NOFX_API_TOKEN>`; without a configured token every request is refused. "
            "The run page's login form also grants a session cookie that reads (GET) accept.",
        },
        "security": [{"bearer": []}],
        "paths": {
            "/runs": {
                "get": {
                    "operationId": "listRuns",
                    "summary": "Runs, newest first, filtered and paginated by cursor",
                    "parameters": [
                        _query("installation", {"type": "integer", "minimum": 1, "maximum": MAX_ID}, "installation id"),
                        _query("repo", {"type": "string", "pattern": REPO_PATTERN}, "`owner/name`"),
                        _query("status", {"enum": [s.value for s in RunStatus]}, "run status"),
                        _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_RUNS_PAGE}, "page size"),
                        _query(
                            "cursor",
                            {"type": "string", "pattern": CURSOR_PATTERN},
                            "`next_cursor` of the previous page: the last run's position",
                        ),
                    ],
                    "responses": {
                        "200": _json("#/components/schemas/RunPage", "a page of runs"),
                        "400": _BAD_REQUEST,
                        "401": _UNAUTHORIZED,
                    },
                }
            },
            "/runs/{run_id}": {
                "get": {
                    "operationId": "getRun",
                    "summary": "A run with its plan, steps, artifacts and costs (`Accept: text/html`: the run page)",
                    "parameters": [_RUN_ID],
                    "responses": {
                        "200": {
                            "description": "the run",
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/Run"}},
                                "text/html": {"schema": {"type": "string"}},
                            },
                        },
                        "401": _UNAUTHORIZED,
                        "404": _NOT_FOUND,
                    },
                }
            },
            "/runs/{run_id}/timeline": {
                "get": {
                    "operationId": "getTimeline",
                    "summary": "The run's events in order, paginated, optionally only types with given prefixes",
                    "parameters": [
                        _RUN_ID,
                        _query(
                            "type",
                            {"type": "array", "items": {"type": "string", "pattern": EVENT_TYPE_PATTERN}},
                            "keep events whose type starts with one of these (`step.`, `run.failed`)",
                            style="form",
                            explode=True,
                        ),
                        _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_EVENTS_PAGE}, "page size"),
                        _query("cursor", {"type": "string", "pattern": "^[0-9]{1,18}$"}, "events after this id"),
                    ],
                    "responses": {
                        "200": _json("#/components/schemas/Timeline", "a page of events"),
                        "400": _BAD_REQUEST,
                        "401": _UNAUTHORIZED,
                        "404": _NOT_FOUND,
                    },
                }
            },
            "/runs/{run_id}/stream": {
                "get": {
                    "operationId": "streamRun",
                    "summary": "Server-sent events of one run; ends with `event: end` once the run is finished",
                    "parameters": [_RUN_ID, _LAST_EVENT_ID],
                    "responses": {"200": _SSE, "400": _BAD_REQUEST, "401": _UNAUTHORIZED, "404": _NOT_FOUND},
                }
            },
            "/events/stream": {
                "get": {
                    "operationId": "streamEvents",
                    "summary": "Server-sent events of all runs, from now (or after `Last-Event-ID` / `after`)",
                    "parameters": [
                        _LAST_EVENT_ID,
                        _query("after", {"type": "string", "pattern": "^[0-9]{1,18}$"}, "start after this id"),
                    ],
                    "responses": {"200": _SSE, "400": _BAD_REQUEST, "401": _UNAUTHORIZED},
                }
            },
            "/runs/{run_id}/artifacts/{step}/{name}": {
                "get": {
                    "operationId": "getArtifact",
                    "summary": "An artifact's bytes, verified against the sha256 recorded when it was written",
                    "parameters": [
                        _RUN_ID,
                        _STEP,
                        _path_param("name", ARTIFACT_NAME_PATTERN, "the artifact's name"),
                    ],
                    "responses": {
                        "200": {
                            "description": "the bytes; `ETag` is the sha256",
                            "content": {
                                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                                "text/plain": {"schema": {"type": "string"}},
                                "application/json": {},
                            },
                        },
                        "401": _UNAUTHORIZED,
                        "404": _NOT_FOUND,
                        "409": _error("the bytes on disk no longer match the recorded sha256, or are gone"),
                    },
                }
            },
            "/runs/{run_id}/steps/{step}/retry": {
                "post": {
                    "operationId": "retryStep",
                    "summary": "Retry a failed step of a failed run (and what depends on it)",
                    "parameters": [_RUN_ID, _STEP],
                    "responses": {
                        "202": _json("#/components/schemas/Run", "retrying; the run's new state"),
                        "401": _UNAUTHORIZED,
                        "404": _NOT_FOUND,
                        "409": _error("the state machine forbids it; the message says why"),
                    },
                }
            },
            "/runs/{run_id}/checkpoints": {
                "get": {
                    "operationId": "listCheckpoints",
                    "summary": "The run's checkpoints, oldest first, with links to their diffs and to resume from them",
                    "parameters": [_RUN_ID],
                    "responses": {
                        "200": _json("#/components/schemas/CheckpointList", "the checkpoints (none: an empty list)"),
                        "401": _UNAUTHORIZED,
                        "404": _NO_RUN,
                    },
                }
            },
            "/runs/{run_id}/checkpoints/{n}/diff": {
                "get": {
                    "operationId": "diffCheckpoint",
                    "summary": "What changed up to checkpoint n: files with status, counts, hunks and line numbers",
                    "parameters": [
                        _RUN_ID,
                        _CHECKPOINT_N,
                        _query(
                            "base",
                            {"type": "integer", "minimum": 0, "maximum": MAX_ID},
                            "compare against this checkpoint of the run, or 0 for where the run started "
                            "(default: the checkpoint before n)",
                        ),
                    ],
                    "responses": {
                        "200": _json("#/components/schemas/CheckpointDiff", "the structured diff"),
                        "400": _error("`base` is not a checkpoint of this run nor 0"),
                        "401": _UNAUTHORIZED,
                        "404": _NO_CHECKPOINT,
                        "410": _error(
                            "another base than the checkpoint before n needs a mirror holding both commits; "
                            "this machine has none (evicted, or a web machine)"
                        ),
                        "500": _error("git could not compute the diff"),
                    },
                }
            },
            "/runs/{run_id}/checkpoints/{n}/resume": {
                "post": {
                    "operationId": "resumeFromCheckpoint",
                    "summary": "Start a new run from checkpoint n: the plan's later steps, on a branch of its own",
                    "parameters": [_RUN_ID, _CHECKPOINT_N],
                    "requestBody": {
                        "required": False,
                        "description": "optional; an empty body records `api` as who asked",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ResumeRequest"}}},
                    },
                    "responses": {
                        "201": _json("#/components/schemas/ResumedRun", "the new run, started"),
                        "400": _error("the body is not JSON, or `by` is not a short string"),
                        "401": _UNAUTHORIZED,
                        "404": _NO_CHECKPOINT,
                        "409": _error(
                            "the checkpoint cannot be resumed: it is after the last step, or its step is gone"
                        ),
                    },
                }
            },
            "/runs/{run_id}/rca": {
                "get": {
                    "operationId": "getRcaBundle",
                    "summary": "The run's root-cause bundle: run, steps, events, gate outputs, checkpoint diffs, "
                    "worker log and a summary, redacted, as tar.gz",
                    "parameters": [_RUN_ID],
                    "responses": {
                        "200": {
                            "description": "`nofx-rca-<run>.tar.gz` (`Content-Disposition: attachment`)",
                            "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}},
                        },
                        "401": _UNAUTHORIZED,
                        "404": _NO_RUN,
                    },
                }
            },
            "/threads/{thread}/memory": {
                "get": {
                    "operationId": "getThreadMemory",
                    "summary": "What nofx remembers of an issue or pull request thread, decrypted",
                    "parameters": [_THREAD],
                    "responses": {
                        "200": _json("#/components/schemas/ThreadMemory", "the thread's unexpired entries"),
                        "400": _BAD_THREAD,
                        "401": _UNAUTHORIZED,
                    },
                },
                "delete": {
                    "operationId": "forgetThread",
                    "summary": "Forget everything remembered of the thread",
                    "parameters": [_THREAD],
                    "responses": {
                        "200": _json("#/components/schemas/ThreadForgotten", "forgotten; how many entries went"),
                        "400": _BAD_THREAD,
                        "401": _UNAUTHORIZED,
                    },
                },
            },
            "/threads/{thread}/memory/{entry}": {
                "delete": {
                    "operationId": "redactMemoryEntry",
                    "summary": "Redact one entry: its text is blanked, the fact that it existed stays",
                    "parameters": [_THREAD, _path_param("entry", MEMORY_ENTRY_PATTERN, "the entry's `id`")],
                    "responses": {
                        "200": _json("#/components/schemas/MemoryEntryRedacted", "redacted"),
                        "400": _BAD_THREAD,
                        "401": _UNAUTHORIZED,
                        "404": _error("the thread has no such entry"),
                    },
                }
            },
            "/runs/{run_id}/cancel": {
                "post": {
                    "operationId": "cancelRun",
                    "summary": "Cancel a queued, running or waiting run",
                    "parameters": [_RUN_ID],
                    "responses": {
                        "202": _json("#/components/schemas/Run", "cancelled; the run's new state"),
                        "401": _UNAUTHORIZED,
                        "404": _NOT_FOUND,
                        "409": _error("the run is already finished"),
                    },
                }
            },
            "/search": {
                "get": {
                    "operationId": "search",
                    "summary": "The code chunks (best per file), runs or artifacts of a repository closest in meaning to q",
                    "parameters": [
                        _query(
                            "q", {"type": "string", "minLength": 1, "maxLength": 500}, "what to look for", required=True
                        ),
                        _query("repo", {"type": "string", "pattern": REPO_PATTERN}, "owner/name", required=True),
                        _query("kind", {"enum": ["code", "artifacts", "runs"]}, "what to search (default code)"),
                        _query("limit", {"type": "integer", "minimum": 1, "maximum": 50}, "results (default 10)"),
                    ],
                    "responses": {
                        "200": _json("#/components/schemas/SearchResults", "results, best first"),
                        "400": _BAD_REQUEST,
                        "401": _UNAUTHORIZED,
                        "404": _error("nofx does not serve that repository"),
                        "503": _error("no embeddings model is configured; the message says how to get one"),
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {"Unauthorized": _error("no valid bearer token (NOFX_API_TOKEN)")},
            "schemas": SCHEMAS,
        },
    }
