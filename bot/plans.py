"""The plan schema of DESIGN.md and its validation: a plan that would fail is refused before anything runs."""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

ALL_TOOLS = (
    "codegen",
    "workspace:write",
    "gate:test",
    "gate:lint",
    "gate:typecheck",
    "gate:llm_review",
    "gate:ci",
    "manual:approval",
    "git_ops",
    "git_pr",
    "setup",
)
MAX_STEPS = 50
MAX_TIMEOUT_S = 3600
MAX_RETRIES = 5
_STEP_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_STEP_KEYS = {"name", "tool", "inputs", "depends_on", "timeout_s", "retries", "policy"}
_POLICY_KEYS = {"tools_allowed", "env_allowed", "secrets_scope"}
_PATH_KEYS = ("path", "paths", "files", "cwd")


class PlanError(ValueError):
    """The plan cannot run; the message says which step and why, for the status comment."""


@dataclass(frozen=True)
class StepSpec:
    name: str
    tool: str
    inputs: dict[str, Any] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    timeout_s: int = 600
    retries: int = 0
    policy: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    goal: str
    steps: tuple[StepSpec, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "goal": self.goal,
            "steps": [{**asdict(step), "depends_on": list(step.depends_on)} for step in self.steps],
        }


def validate(
    data: Any,
    *,
    available_tools: Collection[str],
    tools_allowed: Collection[str] = (),
) -> Plan:
    """Check a plan from a template or an LLM: known tools, unique names, no cycles, safe paths, policy."""
    if not isinstance(data, dict):
        raise PlanError("a plan must be an object with `goal` and `steps`")
    unknown = set(data) - {"goal", "steps"}
    if unknown:
        raise PlanError(f"unknown plan keys: {', '.join(sorted(unknown))}")
    goal = data.get("goal")
    if not isinstance(goal, str) or not goal.strip():
        raise PlanError("the plan needs a non-empty `goal`")
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise PlanError("the plan needs a non-empty list of `steps`")
    if len(raw_steps) > MAX_STEPS:
        raise PlanError(f"the plan has {len(raw_steps)} steps; at most {MAX_STEPS} are allowed")
    steps: list[StepSpec] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_steps, start=1):
        step = _step(raw, index, seen, available_tools, tools_allowed)
        seen.add(step.name)
        steps.append(step)
    return Plan(goal=goal.strip(), steps=tuple(steps))


def _step(raw: Any, index: int, earlier: set[str], available: Collection[str], allowed: Collection[str]) -> StepSpec:
    if not isinstance(raw, dict):
        raise PlanError(f"step {index} must be an object")
    name = raw.get("name")
    where = f"step {index} ({name!r})" if isinstance(name, str) else f"step {index}"
    unknown = set(raw) - _STEP_KEYS
    if unknown:
        raise PlanError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
    if not isinstance(name, str) or not _STEP_NAME.match(name):
        raise PlanError(f"{where}: `name` must be 1-63 lowercase letters, digits, '_', '.' or '-'")
    if name in earlier:
        raise PlanError(f"{where}: the step name {name!r} is used twice")
    tool = raw.get("tool")
    if tool not in ALL_TOOLS:
        raise PlanError(f"{where}: unknown tool {tool!r}; tools are {', '.join(ALL_TOOLS)}")
    if tool not in available:
        raise PlanError(f"{where}: the tool {tool!r} is not available on this nofx server yet")
    if allowed and tool not in allowed:
        raise PlanError(f"{where}: the repository's policy does not allow the tool {tool!r}")
    depends_on = raw.get("depends_on", [])
    if not isinstance(depends_on, list) or not all(isinstance(d, str) for d in depends_on):
        raise PlanError(f"{where}: `depends_on` must be a list of step names")
    for dependency in depends_on:
        if dependency == name:
            raise PlanError(f"{where}: a step cannot depend on itself (a cycle)")
        if dependency not in earlier:
            raise PlanError(
                f"{where}: depends on {dependency!r}, which is not an earlier step (unknown name or a cycle)"
            )
    inputs = raw.get("inputs", {})
    if not isinstance(inputs, dict):
        raise PlanError(f"{where}: `inputs` must be an object")
    for path in _paths(inputs):
        problem = path_problem(path)
        if problem:
            raise PlanError(f"{where}: path {path!r} {problem}")
    policy = raw.get("policy", {}) or {}
    if not isinstance(policy, dict) or set(policy) - _POLICY_KEYS:
        raise PlanError(f"{where}: `policy` may only hold {', '.join(sorted(_POLICY_KEYS))}")
    step_tools = policy.get("tools_allowed") or []
    if step_tools and tool not in step_tools:
        raise PlanError(f"{where}: its own policy does not allow the tool {tool!r}")
    return StepSpec(
        name=name,
        tool=tool,
        inputs=inputs,
        depends_on=tuple(dict.fromkeys(depends_on)),
        timeout_s=_bounded_int(raw.get("timeout_s", 600), 1, MAX_TIMEOUT_S, f"{where}: `timeout_s`"),
        retries=_bounded_int(raw.get("retries", 0), 0, MAX_RETRIES, f"{where}: `retries`"),
        policy=policy,
    )


def normalise_path(path: str) -> str:
    """One spelling per file: `\\` as `/`, no empty or `.` components (`.github/./workflows//x` is
    `.github/workflows/x`). Every check on a path runs on this form, and edits are written under it."""
    return "/".join(part for part in path.replace("\\", "/").split("/") if part not in ("", "."))


def path_problem(path: str) -> str | None:
    """Why a path may not be touched (it leaves the workspace or targets .git), or None if it is fine."""
    if not path or "\x00" in path:
        return "is empty or contains a NUL byte"
    if path.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", path):
        return "is absolute; paths must be relative to the repository"
    parts = normalise_path(path).split("/")
    if ".." in parts:
        return "leaves the workspace ('..')"
    if parts == [""]:
        return "names the repository root, not a file"
    if any(part.lower() == ".git" for part in parts):
        return "is inside .git/ (git's own files are never edited)"
    return None


@functools.lru_cache(maxsize=256)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """`**/` spans any number of directories (none included), `**` anything, `*` and `?` stay inside one."""
    parts = re.split(r"(\*\*/|\*\*|\*|\?)", pattern)
    tokens = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(tokens.get(part, re.escape(part)) for part in parts))


def _paths(inputs: dict[str, Any]) -> Iterable[str]:
    for key in _PATH_KEYS:
        value = inputs.get(key)
        if isinstance(value, str):
            yield value
        elif isinstance(value, list):
            yield from (item for item in value if isinstance(item, str))


def _bounded_int(value: Any, low: int, high: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise PlanError(f"{what} must be a whole number from {low} to {high}")
    return value
