"""Turn a change request into a validated plan: from a template (built in or the config's), or the LLM's `submit_plan`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Any

from bot.llm.router import LLMError
from bot.plan_templates import BUILTIN, DEFAULT_TEMPLATE, PlanTemplate
from bot.plans import Plan, PlanError
from bot.repo_config import RepoConfig
from bot.runs.policy import enforce

# An LLM planner: given the request, the thread's context and the template plan, returns the plan it submitted
# (unchecked; `build` passes it through the policy).
LLMPlanner = Callable[[str, str | None, dict[str, Any]], Awaitable[Any]]
GATE_TIMEOUT_S = 900
CI_TOOL = "gate:ci"
CI_STEP_TIMEOUT_S = 300  # one look at CI, when no repair round may follow it
SETUP_TIMEOUT_S = 1800  # `setup`'s own time limit: installing dependencies, with network
CODEGEN_TIMEOUT_S = 1800  # up to `codegen.max_turns` model calls, with gate runs between them
REPAIR_TIMEOUT_S = 3600  # a gate that may repair: the check, model rounds and the re-checks


_STEP_NAMES = {
    "codegen": "generate",
    "workspace:write": "apply",
    "git_pr": "pull-request",
    "manual:approval": "approval",
}
_DEFAULT_RETRIES = {"codegen": 2, "git_pr": 2}


class UnknownTemplate(PlanError):
    """A template name that neither the config nor nofx defines."""


def templates_of(config: RepoConfig) -> dict[str, PlanTemplate]:
    """The templates a repository can use: the built-in ones, then its config's (which may replace them)."""
    return {**BUILTIN, **config.templates}


def template(
    request: str, config: RepoConfig, *, previous: str | None = None, name: str = DEFAULT_TEMPLATE
) -> dict[str, Any]:
    """The plan data of a template for a request; `policy.enforce` adds the approvals, the engine the gate commands."""
    chosen = templates_of(config).get(name)
    if chosen is None:
        raise UnknownTemplate(f"there is no template named {name!r}; `help` lists them")
    steps: list[dict[str, Any]] = []
    last_codegen = None
    for spec in chosen.steps:
        tool = spec["tool"]
        inputs = dict(spec.get("inputs") or {})
        if (
            tool.startswith("gate:")
            and tool not in ("gate:llm_review", CI_TOOL)
            and config.gates.command_for(tool) is None
        ):
            continue  # a gate this repository does not configure is left out, as in the default plan
        if tool == CI_TOOL and config.ci.wait is False:
            continue  # `ci.wait: false`: the repository's CI is not waited for
        if tool == "codegen":
            inputs = {"request": request, **({"previous": previous} if previous else {}), **inputs}
        step_name = _unique(spec.get("name") or _default_name(tool), steps)
        if tool == "workspace:write" and last_codegen:
            inputs["from_step"] = last_codegen
        if tool == "codegen":
            last_codegen = step_name
        step: dict[str, Any] = {"name": step_name, "tool": tool, "inputs": inputs}
        if tool == CI_TOOL:
            step["timeout_s"] = REPAIR_TIMEOUT_S if config.ci.max_repairs else CI_STEP_TIMEOUT_S
        elif tool.startswith("gate:"):
            step["timeout_s"] = REPAIR_TIMEOUT_S if config.repair.max_attempts else GATE_TIMEOUT_S
        if tool == "codegen":
            step["timeout_s"] = CODEGEN_TIMEOUT_S
        if tool in _DEFAULT_RETRIES:
            step["retries"] = _DEFAULT_RETRIES[tool]
        step.update({k: spec[k] for k in ("timeout_s", "retries") if k in spec})
        steps.append(step)
    if config.review.before_pr and not any(step["tool"] == "gate:llm_review" for step in steps):
        after = max((i for i, step in enumerate(steps) if step["tool"] == "workspace:write"), default=None)
        if after is not None:  # the review reads the written change; the gates after it judge the repaired code
            review = {"name": _unique("review", steps), "tool": "gate:llm_review", "inputs": {}}
            steps.insert(after + 1, review | {"timeout_s": CODEGEN_TIMEOUT_S})
    if config.setup:  # before anything the model does, so a failing setup costs no model call
        steps.insert(0, {"name": _unique("setup", steps), "tool": "setup", "inputs": {}, "timeout_s": SETUP_TIMEOUT_S})
    return {"goal": request.splitlines()[0][:200] if request.strip() else name, "steps": _chain(steps)}


def _default_name(tool: str) -> str:
    return _STEP_NAMES.get(tool) or tool.removeprefix("gate:").replace("_", "-")


def _unique(name: str, steps: list[dict[str, Any]]) -> str:
    taken = {step["name"] for step in steps}
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}-{n}"
    return candidate


async def build(
    request: str,
    config: RepoConfig,
    *,
    available_tools: Collection[str],
    llm_planner: LLMPlanner | None = None,
    previous: str | None = None,
    template_name: str = DEFAULT_TEMPLATE,
) -> Plan:
    """The plan for a request, through the one policy check whoever wrote it. Raises PlanError."""
    data: Any = template(request, config, previous=previous, name=template_name)
    if config.planner == "llm":
        if llm_planner is None:
            raise PlanError("the repository asks for the LLM planner, but no model is configured on this server")
        try:
            data = _with_context(await llm_planner(request, previous, data), previous)
        except LLMError as exc:
            raise PlanError(f"the LLM planner could not make a plan: {exc}") from None
        return enforce(data, config, available_tools=available_tools, model_built=True)
    return enforce(data, config, available_tools=available_tools)


def _with_context(data: Any, previous: str | None) -> Any:
    """The thread's context reaches codegen from nofx, never from what the model wrote into the plan."""
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
        return data
    for step in data["steps"]:
        if isinstance(step, dict) and step.get("tool") == "codegen" and isinstance(step.get("inputs", {}), dict):
            inputs = {k: v for k, v in (step.get("inputs") or {}).items() if k != "previous"}
            step["inputs"] = {**inputs, **({"previous": previous} if previous else {})}
    return data


def _chain(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run the steps one after another."""
    chained: list[dict[str, Any]] = []
    for step in steps:
        chained.append(_after(step, chained))
    return chained


def _after(step: dict[str, Any], earlier: list[dict[str, Any]]) -> dict[str, Any]:
    return {**step, "depends_on": [earlier[-1]["name"]] if earlier else []}
