"""Turn a change request into a validated plan: from the template, or from an LLM's `submit_plan` call."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Any

from bot.llm.router import LLMError
from bot.plans import Plan, PlanError
from bot.repo_config import RepoConfig
from bot.runs.policy import enforce, gate_command

# An LLM planner: given the request, the thread's context and the template plan, returns the plan it submitted
# (unchecked; `build` passes it through the policy).
LLMPlanner = Callable[[str, str | None, dict[str, Any]], Awaitable[Any]]
GATE_TIMEOUT_S = 900


def template(request: str, config: RepoConfig, *, previous: str | None = None) -> dict[str, Any]:
    """codegen → workspace:write → the configured gates → git_pr; `policy.enforce` adds the approvals."""
    generate: dict[str, Any] = {"request": request, **({"previous": previous} if previous else {})}
    steps: list[dict[str, Any]] = [
        {"name": "generate", "tool": "codegen", "inputs": generate, "retries": 2},
        {"name": "apply", "tool": "workspace:write", "inputs": {"from_step": "generate"}},
    ]
    for kind in ("test", "lint", "typecheck"):
        if gate_command(f"gate:{kind}", config):
            steps.append({"name": kind, "tool": f"gate:{kind}", "timeout_s": GATE_TIMEOUT_S})
    steps.append({"name": "pull-request", "tool": "git_pr", "inputs": {}, "retries": 2})
    return {"goal": request.splitlines()[0][:200] if request.strip() else "change", "steps": _chain(steps)}


async def build(
    request: str,
    config: RepoConfig,
    *,
    available_tools: Collection[str],
    llm_planner: LLMPlanner | None = None,
    previous: str | None = None,
) -> Plan:
    """The plan for a request, through the one policy check whoever wrote it. Raises PlanError."""
    data: Any = template(request, config, previous=previous)
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
