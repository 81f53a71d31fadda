"""Ask the model for the change as `write_file` / `replace_in_file` calls; store them as an artifact to apply later.

Generating and applying are two steps, so a retried apply never pays for generation again and a person
can read exactly what will be written.
"""

from __future__ import annotations

import json

from bot.llm import prompts
from bot.llm.router import BudgetExceeded, LLMError, LLMUnavailable, ToolSpec, tool_result, untrusted, user_message
from bot.plans import path_problem
from bot.runs.contract import RetryableError, StepContext, StepFailed, StepResult
from bot.workspace import repo_context
from bot.workspace.edits import Edit, EditError, read_text

TOOLS = ("codegen",)
EDITS_ARTIFACT = "edits.json"
MAX_TURNS = 8
MAX_READ_BYTES = 128 * 1024
_PATH = {"type": "string", "minLength": 1, "maxLength": 500}
SPECS = [
    ToolSpec(
        "read_file",
        "Read a file of the repository (UTF-8 text) before changing it.",
        {"type": "object", "properties": {"path": _PATH}, "required": ["path"], "additionalProperties": False},
    ),
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
    ToolSpec(
        "finish",
        "Call once all edits are made, with a one-paragraph summary for the pull request.",
        {
            "type": "object",
            "properties": {"summary": {"type": "string", "maxLength": 4000}},
            "required": ["summary"],
            "additionalProperties": False,
        },
    ),
]


async def run(ctx: StepContext) -> StepResult:
    if ctx.workspace is None or ctx.llm is None or ctx.artifacts is None:
        raise StepFailed(
            "code generation needs a workspace and a configured model (ANTHROPIC_API_KEY or OPENAI_API_KEY)"
        )
    request = str(ctx.inputs.get("request") or ctx.run.request)
    paths = (await ctx.workspace.git("ls-files", "-z")).split("\0")
    context = repo_context.build(ctx.workspace.path, [p for p in paths if p], request)
    messages = [user_message(_first_prompt(ctx, request, context))]
    edits: list[Edit] = []
    summary = ""
    try:
        for _turn in range(MAX_TURNS):
            response = await ctx.llm.call(
                purpose="codegen",
                system=prompts.load("codegen"),
                messages=messages,
                tools=SPECS,
                model=ctx.config.model,
                max_tokens=16_000,
                budget=ctx.budget,
            )
            messages.append(response.to_message())
            results, done = [], False
            for call in response.tool_calls:
                answer, is_error = _handle(ctx, call.name, call.input, edits)
                if call.name == "finish":
                    summary, done = str(call.input.get("summary", "")), True
                results.append(tool_result(call.id, answer, is_error=is_error))
            if done or not response.tool_calls:
                break
            messages.extend(results)
    except BudgetExceeded as exc:
        raise StepFailed(str(exc)) from None
    except LLMUnavailable as exc:
        raise RetryableError(str(exc)) from None
    except LLMError as exc:
        raise StepFailed(f"the model's answer could not be used: {exc}") from None
    if not edits:
        raise StepFailed("the model proposed no changes for this request")
    ctx.artifacts.put(EDITS_ARTIFACT, json.dumps([e.to_dict() for e in edits], indent=1).encode())
    files = sorted({e.path for e in edits})
    ctx.emit("codegen.generated", {"files": files, "edits": len(edits)})
    return StepResult(
        output={"files": files, "edits": len(edits), "change_summary": summary[:4000]},
        summary=f"{len(edits)} edit(s) to {len(files)} file(s)",
    )


def _handle(ctx: StepContext, name: str, data: dict[str, object], edits: list[Edit]) -> tuple[str, bool]:
    """Answer one tool call: file contents for reads, an acknowledgement (or the refusal) for edits."""
    assert ctx.workspace is not None
    path = str(data.get("path", ""))
    if name == "finish":
        return "ok", False
    problem = path_problem(path)
    if problem:
        return f"refused: {path} {problem}", True
    if name == "read_file":
        try:
            return untrusted(f"file {path}", read_text(ctx.workspace.path, path, limit=MAX_READ_BYTES)), False
        except EditError as exc:
            return str(exc), True
    try:
        edits.append(Edit.from_dict({"op": name, **data}))
    except EditError as exc:
        return str(exc), True
    return "recorded; it is applied after you finish", False


def _first_prompt(ctx: StepContext, request: str, context: repo_context.RepoContext) -> str:
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
    tree = "\n".join(context.tree) + (f"\n… and {context.omitted} more files" if context.omitted else "")
    parts.append("Files of the repository:\n" + untrusted("file list", tree))
    for path, text in context.files.items():
        parts.append(untrusted(f"file {path}", text))
    return "\n\n".join(parts)
