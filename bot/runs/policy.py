"""The one policy check every plan passes before anything runs, and the engine's check before each step.

A plan, whoever wrote it (the template, the LLM planner, a `/nofx git` command, a checkpoint resume), may only
choose among what the repository's config allows: gate commands come from `gates.*` (a plan names which gates run,
never their text), every tool in `policy.require_approval_before` gets a person's approval in front of it,
`git_ops` needs `git_mode: advanced` and is never the model's to plan, and each tool takes only the inputs it
knows. The engine checks the same rules again before it runs a step, so a stored plan cannot skip them either.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from bot.models import Step, StepStatus
from bot.plans import Plan, PlanError, StepSpec, validate
from bot.repo_config import RepoConfig

# The inputs each tool accepts; anything else in a plan is refused. Gates take none: their command is config.
INPUTS: Mapping[str, frozenset[str]] = {
    "codegen": frozenset({"request", "previous", "instructions"}),  # instructions: from a plan template
    "workspace:write": frozenset({"from_step", "paths"}),  # paths: the only files it may write (globs)
    "manual:approval": frozenset({"before"}),
    "git_ops": frozenset({"op", "args"}),
    "git_pr": frozenset(),
}
REVIEW_TOOL = "gate:llm_review"  # the review before the pull request (`review.before_pr`); not a command
CI_TOOL = "gate:ci"  # waits for the repository's CI; its settings are `ci:` in the config, not a gate command
MODEL_TOOLS_EXCLUDED = frozenset({"git_ops"})  # only a person's `/nofx git` command plans these


def enforce(
    data: Any,
    config: RepoConfig,
    *,
    available_tools: Collection[str],
    model_built: bool = False,
) -> Plan:
    """Validate a plan and apply the repository's policy to it; raises PlanError naming the rule it breaks.

    Approvals the policy requires and the plan lacks are added (named `approve-<step>`), not refused: the
    result is what runs, and the plan comment shows it.
    """
    plan = validate(data, available_tools=available_tools, tools_allowed=config.policy.tools_allowed)
    for spec in plan.steps:
        _check_step(spec, plan, config, model_built=model_built)
    return _with_approvals(plan, config)


def step_refusal(step: Step, steps: Collection[Step], config: RepoConfig) -> str | None:
    """Why the engine may not run `step` under `config` now (the same rules as `enforce`), or None."""
    if step.tool == "git_ops" and config.git_mode != "advanced":
        return "`git_ops` steps run only when the repository's `git_mode` is `advanced`"
    if (
        step.tool.startswith("gate:")
        and step.tool not in (CI_TOOL, REVIEW_TOOL)
        and config.gates.command_for(step.tool) is None
    ):
        return f"the repository's config has no `gates.{step.tool.removeprefix('gate:')}` command"
    if step.tool in config.policy.require_approval_before and not approved_before(step, steps):
        return f"the repository's policy requires a person's approval before `{step.tool}`, and none was given"
    return None


def approved_before(step: Step, steps: Collection[Step]) -> bool:
    """True if a direct dependency of `step` is a manual approval for it that a person granted."""
    by_name = {s.name: s for s in steps}
    return any(
        (dep := by_name.get(name)) is not None
        and dep.tool == "manual:approval"
        and dep.status == StepStatus.succeeded
        and dep.output.get("before") == step.name
        for name in step.depends_on
    )


def _check_step(spec: StepSpec, plan: Plan, config: RepoConfig, *, model_built: bool) -> None:
    where = f"step {spec.name!r}"
    if spec.tool == REVIEW_TOOL:  # the model reviews the run's own diff: no command, no inputs
        if spec.inputs:
            raise PlanError(f"{where}: `{REVIEW_TOOL}` takes no inputs")
        return
    if spec.tool == CI_TOOL:  # the repository's own CI, on what `git_pr` pushed: no command, no inputs
        earlier = [s.tool for s in plan.steps[: plan.steps.index(spec)]]
        if spec.inputs or "git_pr" not in earlier:
            raise PlanError(f"{where}: `{CI_TOOL}` takes no inputs and comes after a `git_pr` step")
        return
    if spec.tool.startswith("gate:"):
        if spec.inputs:
            raise PlanError(
                f"{where}: a gate takes no inputs; its command is `gates.{spec.tool.removeprefix('gate:')}` "
                "in .github/nofx.yml"
            )
        if config.gates.command_for(spec.tool) is None:
            raise PlanError(f"{where}: the repository's config has no `gates.{spec.tool.removeprefix('gate:')}`")
        return
    if spec.tool == "setup":  # like a gate: the commands are the repository's `setup`, never text from a plan
        if spec.inputs or not config.setup:
            raise PlanError(f"{where}: `setup` takes no inputs and needs `setup` commands in .github/nofx.yml")
        return
    unknown = set(spec.inputs) - INPUTS.get(spec.tool, frozenset())
    if unknown:
        raise PlanError(f"{where}: `{spec.tool}` takes no input {', '.join(sorted(unknown))}")
    if spec.tool == "git_ops":
        if model_built:
            raise PlanError(f"{where}: `git_ops` comes only from a `git` command, never from the LLM planner")
        if config.git_mode != "advanced":
            raise PlanError(f"{where}: `git_ops` needs `git_mode: advanced` in .github/nofx.yml")
    names = [s.name for s in plan.steps]
    if spec.tool == "workspace:write" and "from_step" in spec.inputs:
        source = spec.inputs["from_step"]
        if source not in names[: names.index(spec.name)] or _tool_of(plan, source) != "codegen":
            raise PlanError(f"{where}: `from_step` must name an earlier codegen step")
    if spec.tool == "manual:approval" and "before" in spec.inputs and spec.inputs["before"] not in names:
        raise PlanError(f"{where}: `before` must name a step of the plan")
    for key in ("request", "previous"):
        if key in spec.inputs and not isinstance(spec.inputs[key], str):
            raise PlanError(f"{where}: `{key}` must be text")


def _with_approvals(plan: Plan, config: RepoConfig) -> Plan:
    """Put a manual approval directly in front of every step whose tool the policy names, where the plan has none."""
    required = set(config.policy.require_approval_before)
    names = {s.name for s in plan.steps}
    steps: list[StepSpec] = []
    for spec in plan.steps:
        if spec.tool in required and not _has_approval(spec, plan):
            name = _free_name(f"approve-{spec.name}", names)
            names.add(name)
            steps.append(
                StepSpec(name=name, tool="manual:approval", inputs={"before": spec.name}, depends_on=spec.depends_on)
            )
            spec = StepSpec(**{**spec.__dict__, "depends_on": (name,)})
        steps.append(spec)
    return Plan(goal=plan.goal, steps=tuple(steps))


def _has_approval(spec: StepSpec, plan: Plan) -> bool:
    by_name = {s.name: s for s in plan.steps}
    return any(
        by_name[d].tool == "manual:approval" and by_name[d].inputs.get("before") == spec.name for d in spec.depends_on
    )


def _tool_of(plan: Plan, name: str) -> str | None:
    return next((s.tool for s in plan.steps if s.name == name), None)


def _free_name(wanted: str, taken: Collection[str]) -> str:
    name, n = wanted[:63], 2
    while name in taken:
        name, n = f"{wanted[:60]}-{n}", n + 1
    return name
