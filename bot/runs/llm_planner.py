"""The LLM planner: the model refines the template plan through one `submit_plan` tool call."""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from bot.llm import prompts
from bot.llm.router import LLM, ToolSpec, untrusted, user_message
from bot.plans import ALL_TOOLS
from bot.repo_config import RepoConfig

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
    """An `LLMPlanner` for `bot.planner.build`: its output is validated there like any template's."""

    async def plan(request: str, template: dict[str, Any]) -> Any:
        system = prompts.load("planner").format(
            tools=", ".join(sorted(tools)),
            approval=", ".join(config.policy.require_approval_before) or "none",
            template=json.dumps(template, indent=1),
        )
        response = await llm.call(
            purpose="planner",
            system=system,
            messages=[user_message(untrusted("request", request))],
            tools=[SUBMIT_PLAN],
            model=config.model,
            max_tokens=4096,
        )
        return response.tool_calls[0].input

    return plan
