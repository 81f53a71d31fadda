"""Structured output as tool calls: each tool's JSON schema, and what goes back to the model when a call is invalid."""

from __future__ import annotations

import re
from typing import Any

import jsonschema

from bot.llm.providers import Completion, Message, RawToolCall, ToolCall, ToolSpec, tool_result, user_message

_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PROBLEM_LIMIT = 300


def validators_for(tools: list[ToolSpec]) -> dict[str, Any]:
    validators: dict[str, Any] = {}
    for tool in tools:
        if tool.name in validators or not _TOOL_NAME.fullmatch(tool.name):
            raise ValueError(f"tool name {tool.name!r} is repeated or not [A-Za-z0-9_-]{{1,64}}")
        cls = jsonschema.validators.validator_for(tool.input_schema)
        cls.check_schema(tool.input_schema)
        validators[tool.name] = cls(tool.input_schema)
    return validators


def review_calls(
    completion: Completion, validators: dict[str, Any], require_tool: bool
) -> tuple[list[ToolCall], list[str], list[Message]]:
    """Valid calls, the problems found, and the messages that explain them to the model for another try."""
    problems: dict[str, str] = {}
    for raw in completion.tool_calls:
        problem = raw.problem or _schema_problem(raw, validators)
        if problem:
            problems[raw.id] = f"{raw.name or '(no name)'}: {problem}"
    missing = require_tool and not completion.tool_calls
    if not problems and not missing:
        return [ToolCall(c.id, c.name, c.input) for c in completion.tool_calls], [], []
    names = ", ".join(validators)
    feedback: list[Message] = []
    if completion.text or completion.tool_calls:
        turn: Message = {"role": "assistant", "content": completion.text}
        if completion.tool_calls:
            # Replayed as sent, except a name no provider would accept back (`functions.x`, empty).
            turn["tool_calls"] = [
                {"id": c.id, "name": c.name if _TOOL_NAME.fullmatch(c.name) else "invalid_tool_name", "input": c.input}
                for c in completion.tool_calls
            ]
        feedback.append(turn)
    for raw in completion.tool_calls:
        error = problems.get(raw.id, "not applied, because another call in the same response was invalid")
        feedback.append(tool_result(raw.id, error, is_error=True))
    if missing:
        feedback.append(user_message(f"Answer by calling one of the tools ({names}); plain text is not accepted."))
        return [], ["no tool call in the answer"], feedback
    feedback.append(
        user_message(
            f"None of those tool calls were applied. Send all of them again, corrected. The tools are: {names}."
        )
    )
    return [], list(problems.values()), feedback


def _schema_problem(raw: RawToolCall, validators: dict[str, Any]) -> str | None:
    validator = validators.get(raw.name)
    if validator is None:
        return f"unknown tool {raw.name!r}; the tools are: {', '.join(validators) or 'none'}"
    errors = sorted(validator.iter_errors(raw.input), key=lambda e: list(e.absolute_path))[:5]
    if not errors:
        return None
    found = [f"{'/'.join(map(str, e.absolute_path)) or '(input)'}: {e.message[:_PROBLEM_LIMIT]}" for e in errors]
    return "the input does not match the tool's schema: " + "; ".join(found)
