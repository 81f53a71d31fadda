"""Turn a change request into a validated plan: from the template, or from an LLM's `submit_plan` call."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Any

from bot.llm.router import LLMError
from bot.plans import Plan, PlanError, validate
from bot.repo_config import RepoConfig

# An LLM planner: given the request and the template plan, returns the plan it submitted (unvalidated).
LLMPlanner = Callable[[str, dict[str, Any]], Awaitable[Any]]
GATE_TIMEOUT_S = 900


def template(request: str, config: RepoConfig, *, previous: str | None = None) -> dict[str, Any]:
    """codegen → workspace:write → the configured gates → git_pr, with approvals where policy wants them."""
    generate: dict[str, Any] = {"request": request, **({"previous": previous} if previous else {})}
    steps: list[dict[str, Any]] = [
        {"name": "generate", "tool": "codegen", "inputs": generate, "retries": 2},
        {"name": "apply", "tool": "workspace:write", "inputs": {"from_step": "generate"}},
    ]
    for kind in ("test", "lint", "typecheck"):
        command = getattr(config.gates, kind)
        if command:
            steps.append(
                {"name": kind, "tool": f"gate:{kind}", "inputs": {"command": command}, "timeout_s": GATE_TIMEOUT_S}
            )
    steps.append({"name": "pull-request", "tool": "git_pr", "inputs": {}, "retries": 2})
    return {"goal": request.splitlines()[0][:200] if request.strip() else "change", "steps": _chain(steps, config)}


async def build(
    request: str,
    config: RepoConfig,
    *,
    available_tools: Collection[str],
    llm_planner: LLMPlanner | None = None,
    previous: str | None = None,
) -> Plan:
    """The plan for a request, validated exactly the same way whoever wrote it. Raises PlanError."""
    data: Any = template(request, config, previous=previous)
    if config.planner == "llm":
        if llm_planner is None:
            raise PlanError("the repository asks for the LLM planner, but no model is configured on this server")
        try:
            data = await llm_planner(request, data)
        except LLMError as exc:
            raise PlanError(f"the LLM planner could not make a plan: {exc}") from None
    return validate(data, available_tools=available_tools, tools_allowed=config.policy.tools_allowed)


def _chain(steps: list[dict[str, Any]], config: RepoConfig) -> list[dict[str, Any]]:
    """Run the steps one after another, with a manual approval in front of every step policy names."""
    chained: list[dict[str, Any]] = []
    for step in steps:
        if step["tool"] in config.policy.require_approval_before:
            approval = {
                "name": f"approve-{step['name']}",
                "tool": "manual:approval",
                "inputs": {"before": step["name"]},
            }
            chained.append(_after(approval, chained))
        chained.append(_after(step, chained))
    return chained


def _after(step: dict[str, Any], earlier: list[dict[str, Any]]) -> dict[str, Any]:
    return {**step, "depends_on": [earlier[-1]["name"]] if earlier else []}
