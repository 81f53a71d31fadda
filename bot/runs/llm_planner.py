"""The LLM planner: the model refines the template plan through one `submit_plan` tool call.

The system prompt holds only nofx's own text and the repository's config; the request, the thread's
context and the repository's similar earlier runs (request, plan, outcome: examples from the semantic index)
go into the user message inside untrusted fences. Whatever the model submits then passes
`bot.runs.policy.enforce`, like any plan.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from bot.llm import prompts
from bot.llm.router import LLM, ToolSpec, untrusted, user_message
from bot.plans import ALL_TOOLS
from bot.repo_config import RepoConfig
from bot.runs.planner import LLMPlanner
from bot.runs.policy import MODEL_TOOLS_EXCLUDED

_UNTRUSTED_INPUTS = ("request", "previous")
SIMILAR_RUNS = 3  # earlier runs shown to the planner as examples
# `(request, limit)` -> earlier runs of the repository (request, plan, outcome), closest in meaning first. Built by
# the worker from its semantic index, bound to one installation and repository: no other's run can reach the prompt.
SimilarRuns = Callable[[str, int], Awaitable[list[str]]]
log = logging.getLogger(__name__)

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


def planner_for(
    llm: LLM, config: RepoConfig, tools: Collection[str], similar_runs: SimilarRuns | None = None
) -> LLMPlanner:
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
        examples = await _similar(similar_runs, request)
        if examples:
            fenced = [untrusted(f"earlier run {n}", text) for n, text in enumerate(examples, 1)]
            parts.append(
                "Earlier runs of this repository like this request, with how they ended:\n" + "\n".join(fenced)
            )
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


async def _similar(similar_runs: SimilarRuns | None, request: str) -> list[str]:
    if similar_runs is None:
        return []
    try:
        return await similar_runs(request, SIMILAR_RUNS)
    except Exception as exc:  # the examples are an aid: the plan is made without them
        log.warning("similar runs unavailable: %s", exc)
        return []


def _without_untrusted(template: dict[str, Any]) -> dict[str, Any]:
    """The template plan with the request and thread context left out: those are in the user message."""
    steps = [
        {**step, "inputs": {k: v for k, v in step.get("inputs", {}).items() if k not in _UNTRUSTED_INPUTS}}
        for step in template["steps"]
    ]
    return {"goal": "(from the request)", "steps": steps}
