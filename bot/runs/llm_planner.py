"""The LLM planner: the model refines the template plan through one `submit_plan` tool call.

The system prompt holds only nofx's own text and the repository's config; the request and the thread's
context go into the user message inside untrusted fences. Whatever the model submits then passes
`bot.runs.policy.enforce`, like any plan.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from bot.llm import prompts
from bot.llm.router import LLM, ToolSpec, untrusted, user_message
from bot.plans import ALL_TOOLS
from bot.repo_config import RepoConfig
from bot.runs.policy import MODEL_TOOLS_EXCLUDED

_UNTRUSTED_INPUTS = ("request", "previous")

_STEP = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "tool": {"type": "string", "enum": list(ALL_TOOLS)},
        "inputs": {"type": "object"},
        "depends_on": {"type": "array", "items": {"type": "string"}},
        "timeout_s": {"type": "integer"},
        "retries": {"type": "integer"},
    },
    "required": ["name", "tool"],
    "additionalProperties": False,
}
SUBMIT_PLAN = ToolSpec(
    "submit_plan",
    "Submit the plan: a goal and the ordered steps.",
    {
        "type": "object",
        "properties": {"goal": {"type": "string"}, "steps": {"type": "array", "items": _STEP, "minItems": 1}},
        "required": ["goal", "steps"],
        "additionalProperties": False,
    },
)


def planner_for(llm: LLM, config: RepoConfig, tools: Collection[str]) -> Any:
    """An `LLMPlanner` for `bot.runs.planner.build`: its output is validated there like any template's."""

    async def plan(request: str, previous: str | None, template: dict[str, Any]) -> Any:
        system = prompts.load("planner").format(
            tools=", ".join(sorted(set(tools) - MODEL_TOOLS_EXCLUDED)),
            approval=", ".join(config.policy.require_approval_before) or "none",
            template=json.dumps(_without_untrusted(template), indent=1),
        )
        parts = [untrusted("request", request)]
        if previous:
            parts.append("What nofx knows of this thread:\n" + untrusted("thread context", previous))
        response = await llm.call(
            purpose="planner",
            system=system,
            messages=[user_message("\n\n".join(parts))],
            tools=[SUBMIT_PLAN],
            model=config.model,
            max_tokens=4096,
        )
        return response.tool_calls[0].input

    return plan


def _without_untrusted(template: dict[str, Any]) -> dict[str, Any]:
    """The template plan with the request and thread context left out: those are in the user message."""
    steps = [
        {**step, "inputs": {k: v for k, v in step.get("inputs", {}).items() if k not in _UNTRUSTED_INPUTS}}
        for step in template["steps"]
    ]
    return {"goal": "(from the request)", "steps": steps}
