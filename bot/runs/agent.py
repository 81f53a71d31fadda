"""The codegen agent: the model explores the worktree, edits it, runs the configured gates, and says when it is done.

One loop serves code generation and every repair round (a failing gate, review findings before the pull request,
failing CI), so they all get the same tools, caps and budget. Edits are applied to the worktree as they come, so the
model's later reads and `run_gate` see them; the caller decides whether they stay (`keep_edits`).

A model may end with plain text once it has edited (OpenAI-compatible servers that ignore `tool_choice` do): that
is its finish. Before any edit, a tool call is required, and the router asks for a correction otherwise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from bot.llm import prompts
from bot.llm.router import (
    BudgetExceeded,
    LLMError,
    LLMUnavailable,
    Message,
    ToolCall,
    ToolSpec,
    tool_result,
    untrusted,
    user_message,
)
from bot.plans import glob_regex
from bot.runs.contract import (
    GATE_TIMEOUT_S,
    MARGIN_S,
    MAX_EVIDENCE_LINES,
    AgentResult,
    NoChange,
    RetryableError,
    StepContext,
    StepFailed,
)
from bot.runs.repo_commands import run_gate_command
from bot.workspace import explore
from bot.workspace.edits import Edit, EditError, apply, safe_target

GATES = ("test", "lint", "typecheck")
TREE_IN_PROMPT = 200
GATE_OUTPUT_LINES = 60
MAX_DIFF_CHARS = 60_000
SEMANTIC_HITS = 8  # files the semantic index adds to a search_code answer
# A conversation of 30 turns would resend every file it read or wrote in every request: the model's last
# KEEP_RESULT_TURNS turns stay whole; older answers and arguments longer than TRIM_OVER_CHARS become one line.
KEEP_RESULT_TURNS = 3
TRIM_OVER_CHARS = 400
_PATH = {"type": "string", "minLength": 1, "maxLength": 500}
_EXPLORE = [
    ToolSpec(
        "list_files",
        "List the repository's tracked files matching a glob (`*` stays in a directory, `**` spans them).",
        {
            "type": "object",
            "properties": {"pattern": {"type": "string", "maxLength": 500}},
            "required": ["pattern"],
            "additionalProperties": False,
        },
    ),
    ToolSpec(
        "search_code",
        "Search the tracked text files for a Python regular expression; answers `path:line: text` lines. "
        "Where the repository has a semantic index, the chunks closest in meaning to the pattern read as words "
        "follow as `path:start-end` ranges (read them with read_file).",
        {
            "type": "object",
            "properties": {
                "pattern": {"type": "string", "minLength": 1, "maxLength": 500},
                "glob": {"type": "string", "maxLength": 500},
            },
            "required": ["pattern"],
            "additionalProperties": False,
        },
    ),
    ToolSpec(
        "read_file",
        "Read lines of a file (1-based, inclusive; any file size, large ones in parts), numbered.",
        {
            "type": "object",
            "properties": {
                "path": _PATH,
                "start_line": {"type": "integer", "minimum": 1},
                "end_line": {"type": "integer", "minimum": 1},
            },
            "required": ["path"],
            "additionalProperties": False,
        },
    ),
]
_EDIT = [
    ToolSpec(
        "write_file",
        "Create or overwrite a file with its complete new content.",
        {
            "type": "object",
            "properties": {"path": _PATH, "content": {"type": "string", "maxLength": 1_000_000}},
            "required": ["path", "content"],
            "additionalProperties": False,
        },
    ),
    ToolSpec(
        "replace_in_file",
        "Replace one exact, unique occurrence of `old` with `new` in an existing file.",
        {
            "type": "object",
            "properties": {"path": _PATH, "old": {"type": "string", "minLength": 1}, "new": {"type": "string"}},
            "required": ["path", "old", "new"],
            "additionalProperties": False,
        },
    ),
]
_FINISH = ToolSpec(
    "finish",
    "Call once all edits are made, with a one-paragraph summary for the pull request.",
    {
        "type": "object",
        "properties": {"summary": {"type": "string", "maxLength": 4000}},
        "required": ["summary"],
        "additionalProperties": False,
    },
)


@dataclass(frozen=True)
class StepModel:
    """`StepContext.model` for one step: the loop below, on the step's worktree, model and budget."""

    ctx: StepContext

    async def generate(self, request: str) -> AgentResult:
        return await generate(self.ctx, request)

    async def repair(self, *, evidence: str, source: str, attempt: int, deadline: float | None = None) -> AgentResult:
        return await repair(self.ctx, evidence=evidence, source=source, attempt=attempt, deadline=deadline)


@dataclass
class _Session:
    ctx: StepContext
    root: Path
    paths: list[str]
    deadline: float
    edits: list[Edit] = field(default_factory=list)
    originals: dict[Path, bytes | None] = field(default_factory=dict)


async def generate(ctx: StepContext, request: str) -> AgentResult:
    """Code generation for a request; the worktree is left as it was."""
    parts = [
        f"Repository: {ctx.run.repository}. The request comes from @{ctx.run.requester} on #{ctx.run.thread_number}.",
        untrusted("request", request),
    ]
    instructions = ctx.inputs.get("instructions")
    if instructions:  # from the plan template the run was started with (repo config or built in)
        parts.append("The kind of change asked for:\n" + untrusted("template instructions", str(instructions)))
    previous = ctx.inputs.get("previous")
    if previous:
        parts.append(
            "An earlier run on this thread, which this request continues:\n" + untrusted("earlier run", str(previous))
        )
    return await work(ctx, system=prompts.load("codegen"), parts=parts, purpose="codegen", keep_edits=False)


async def repair(
    ctx: StepContext, *, evidence: str, source: str, attempt: int, deadline: float | None = None
) -> AgentResult:
    """One repair round: the model gets the failure (`evidence`, e.g. a gate's output) and the current diff.

    `source` says what failed, in words (``"the test gate `pytest -q`"``, ``"CI check `build`"``). The edits stay
    in the worktree; the caller checkpoints them and runs its checks again. `deadline` (time.monotonic()) bounds
    the model's `run_gate` calls; default: the step's timeout from now. Raises NoChange when the model changes
    nothing, StepFailed when the budget is spent or its answers are unusable, RetryableError when it is unreachable.
    """
    lines = evidence.rstrip("\n").split("\n")[-MAX_EVIDENCE_LINES:]
    parts = [
        f"Repository: {ctx.run.repository}. Repair attempt {attempt}.",
        untrusted("request", str(ctx.inputs.get("request") or ctx.run.request)),
        f"What failed: {source}. Its output (the last {len(lines)} lines):\n" + untrusted("output", "\n".join(lines)),
        "The current change (git diff against the starting point):\n" + untrusted("diff", await current_diff(ctx)),
    ]
    return await work(
        ctx, system=prompts.load("repair"), parts=parts, purpose="repair", keep_edits=True, deadline=deadline
    )


async def work(
    ctx: StepContext,
    *,
    system: str,
    parts: list[str],
    purpose: str,
    keep_edits: bool,
    deadline: float | None = None,
) -> AgentResult:
    """The loop: up to `codegen.max_turns` model turns within the run's budget; StepFailed if nothing changed."""
    if ctx.workspace is None or ctx.llm is None:
        raise StepFailed("this step needs a workspace and a configured model (ANTHROPIC_API_KEY or OPENAI_API_KEY)")
    listing = (await ctx.workspace.git("ls-files", "-z")).split("\0")
    deadline = deadline if deadline is not None else time.monotonic() + ctx.step.timeout_s
    session = _Session(ctx, ctx.workspace.path, [p for p in listing if p], deadline - MARGIN_S)
    gates = [kind for kind in GATES if getattr(ctx.config.gates, kind)]
    tools = [*_EXPLORE, *_EDIT, *([_run_gate_spec(gates)] if gates else []), _FINISH]
    messages: list[Message] = [user_message("\n\n".join([*parts, _tree(session.paths)]))]
    summary, turns = "", 0
    try:
        while turns < ctx.config.codegen.max_turns:
            turns += 1
            _trim_old_results(messages)
            response = await ctx.llm.call(
                purpose=purpose,
                system=system,
                messages=messages,
                tools=tools,
                model=ctx.config.model,
                max_tokens=16_000,
                budget=ctx.budget,
                require_tool=not session.edits,  # plain text after edits is a finish
            )
            messages.append(response.to_message())
            if not response.tool_calls:
                summary = response.text
                break
            done = False
            for call in response.tool_calls:
                answer, is_error = await _answer(session, call)
                if call.name == "finish":
                    summary, done = str(call.input.get("summary", "")), True
                messages.append(tool_result(call.id, answer, is_error=is_error))
            if done:
                break
    except BudgetExceeded as exc:
        raise StepFailed(str(exc)) from None
    except LLMUnavailable as exc:
        raise RetryableError(str(exc)) from None
    except LLMError as exc:
        raise StepFailed(f"the model's answer could not be used: {exc}") from None
    finally:
        if not keep_edits:
            _restore(session)
    if not session.edits:
        raise NoChange(f"the model proposed no changes ({turns} turn(s))")
    ctx.emit(f"{purpose}.generated", {"files": sorted({e.path for e in session.edits}), "turns": turns})
    return AgentResult(session.edits, summary.strip()[:4000], turns)


async def current_diff(ctx: StepContext) -> str:
    """The run's change so far: tracked files against where the branch started, and new files in full."""
    assert ctx.workspace is not None
    tree = ctx.workspace
    diff = await tree.git("diff", "--no-color", "--no-ext-diff", tree.start_sha, "--", check=False)
    new = [p for p in (await tree.git("ls-files", "-z", "--others", "--exclude-standard")).split("\0") if p]
    for path in new:
        if len(diff) > MAX_DIFF_CHARS:
            break
        try:
            text = explore.read_lines(tree.path, path, 1, None)
        except explore.ExploreError:
            continue  # binary by-products of a gate (`__pycache__`), or gone meanwhile
        diff += f"\nnew file {path}:\n{text}\n"
    if len(diff) > MAX_DIFF_CHARS:
        diff = diff[:MAX_DIFF_CHARS] + "\n… the diff is longer; read the files you need"
    return diff or "(no change yet)"


async def _answer(session: _Session, call: ToolCall) -> tuple[str, bool]:
    """One tool call's answer for the model, and whether it is an error."""
    data = call.input
    try:
        if call.name == "finish":
            return "ok", False
        if call.name == "list_files":
            return untrusted("file list", explore.list_files(session.paths, str(data.get("pattern", "**")))), False
        if call.name == "search_code":
            pattern, glob = str(data["pattern"]), str(data.get("glob") or "**")
            found = explore.search_code(session.root, session.paths, pattern, glob)
            found += await _semantic(session, pattern, glob, found)
            return untrusted("search results", found), False
        if call.name == "read_file":
            path = str(data["path"])
            end = data.get("end_line")
            text = explore.read_lines(session.root, path, int(data.get("start_line") or 1), int(end) if end else None)
            return untrusted(f"file {path}", text), False
        if call.name == "run_gate":
            return await _run_gate(session, str(data["gate"])), False
        return _edit(session, Edit.from_dict({"op": call.name, **data})), False
    except (explore.ExploreError, EditError) as exc:
        return str(exc), True


async def _semantic(session: _Session, query: str, glob: str, found: str) -> str:
    """Semantic hits after the regex matches: tracked files in `glob` whose ranges no match already shows."""
    search = session.ctx.semantic_search
    if search is None:
        return ""
    try:
        hits = await search(query, SEMANTIC_HITS)
    except Exception as exc:  # the index is an aid: the regex answer stands without it
        session.ctx.log.warning("semantic search failed: %s", exc)
        return ""
    shown: dict[str, set[int]] = {}
    for line in found.splitlines():
        path, _, rest = line.partition(":")
        number = rest.partition(":")[0]
        if number.isdigit():
            shown.setdefault(path, set()).add(int(number))
    only, tracked, edited = (
        glob_regex(glob.strip() or "**"),
        set(session.paths),
        {e.path for e in session.edits},
    )
    kept = []
    for hit in hits:
        where, _, note = hit.partition(" ")
        path, _, span = where.rpartition(":")
        first, _, last = span.partition("-")
        if path not in tracked or not only.fullmatch(path) or not (first.isdigit() and last.isdigit()):
            continue
        if any(int(first) <= n <= int(last) for n in shown.get(path, ())):
            continue
        kept.append(f"{where} {note}" + (" (edited in this run since)" if path in edited else ""))
    if not kept:
        return ""
    return (
        "\n\nClosest in meaning (semantic index of the base branch, which may lag this worktree: "
        "read the lines before relying on them):\n" + "\n".join(kept)
    )


def _edit(session: _Session, edit: Edit) -> str:
    """Apply one edit now (the model's next read sees it); remember what the file was, for `_restore`."""
    target = safe_target(session.root, edit.path)
    if target not in session.originals:
        session.originals[target] = target.read_bytes() if target.is_file() else None
    apply(session.root, [edit])
    session.edits.append(edit)
    if edit.path not in session.paths:
        session.paths.append(edit.path)
    return "applied"


async def _run_gate(session: _Session, kind: str) -> str:
    ctx = session.ctx
    command = getattr(ctx.config.gates, kind, None) if kind in GATES else None
    if not command:
        raise EditError(f"no gate {kind!r} is configured")
    remaining = session.deadline - time.monotonic()
    if remaining < 10:
        raise EditError("no time is left in this step to run a gate; finish instead")
    timeout_s = min(GATE_TIMEOUT_S, remaining)
    result = await run_gate_command(ctx, command, timeout_s=timeout_s)
    ctx.emit("agent.gate", {"gate": kind, "ok": result.ok, "exit_code": result.exit_code})
    tail = result.tail(GATE_OUTPUT_LINES)
    return f"{result.verdict(command, timeout_s)}.\n" + untrusted(f"{kind} output", tail or "(no output)")


def _trim_old_results(messages: list[Message]) -> None:
    """Shrink the answers to tool calls older than the model's last KEEP_RESULT_TURNS turns to a marker line
    (`[trimmed: read_file a.py lines 1-200, 6,123 chars …]`), and long arguments of those turns' calls (a whole
    file written) to their length, so each request stays bounded however long the conversation; the model can
    call a tool again."""
    turns = [n for n, message in enumerate(messages) if message["role"] == "assistant"]
    if len(turns) <= KEEP_RESULT_TURNS:
        return
    older = turns[-KEEP_RESULT_TURNS]
    calls = {call["id"]: call for message in messages[:older] for call in message.get("tool_calls") or []}
    for n, message in enumerate(messages[:older]):
        content = message["content"]
        if message["role"] == "tool" and len(content) > TRIM_OVER_CHARS and not content.startswith(_TRIMMED):
            what = _described(calls.get(message["tool_call_id"]))
            marker = f"{_TRIMMED}{what}, {len(content):,} chars; call it again if you need it again]"
            messages[n] = {**message, "content": marker}
        elif message["role"] == "assistant" and message.get("tool_calls"):
            shrunk = [{**call, "input": _shrunk(call["input"])} for call in message["tool_calls"]]
            messages[n] = {**message, "tool_calls": shrunk}


def _shrunk(data: dict[str, object]) -> dict[str, object]:
    return {
        name: f"{_TRIMMED}{len(value):,} chars]"
        if isinstance(value, str) and len(value) > TRIM_OVER_CHARS and not value.startswith(_TRIMMED)
        else value
        for name, value in data.items()
    }


_TRIMMED = "[trimmed: "


def _described(call: dict[str, object] | None) -> str:
    """A tool call in a few words: its name and what it looked at."""
    if call is None:
        return "a tool's answer"
    name, data = str(call["name"]), call.get("input")
    data = data if isinstance(data, dict) else {}
    if name == "read_file":
        span = f" lines {data.get('start_line') or 1}-{data.get('end_line') or 'end'}"
        return f"read_file {str(data.get('path'))[:200]}{span}"
    if name in ("search_code", "list_files"):
        glob = f" in {str(data['glob'])[:100]}" if data.get("glob") else ""
        return f"{name} {str(data.get('pattern'))[:100]!r}{glob}"
    if name == "run_gate":
        return f"run_gate {str(data.get('gate'))[:20]}"
    return name


def _restore(session: _Session) -> None:
    """Put every file the round touched back as it was (codegen leaves applying to `workspace:write`)."""
    for target, original in session.originals.items():
        if original is None:
            target.unlink(missing_ok=True)
        else:
            target.write_bytes(original)


def _run_gate_spec(gates: list[str]) -> ToolSpec:
    return ToolSpec(
        "run_gate",
        "Run one of the repository's configured checks on the current files, in the sandbox; returns its output.",
        {
            "type": "object",
            "properties": {"gate": {"type": "string", "enum": gates}},
            "required": ["gate"],
            "additionalProperties": False,
        },
    )


def _tree(paths: list[str]) -> str:
    """The first files of the tree and how many there are: enough to start looking, never the whole repository."""
    shown = "\n".join(paths[:TREE_IN_PROMPT])
    more = (
        f"\n… and {len(paths) - TREE_IN_PROMPT} more (use list_files and search_code)"
        if len(paths) > TREE_IN_PROMPT
        else ""
    )
    return f"The repository has {len(paths)} tracked files:\n" + untrusted("file list", shown + more)
