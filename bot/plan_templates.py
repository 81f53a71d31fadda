"""Named plans (`templates:` in the repo config, plus a few built in): what they may say, checked when the config is read.

A template is an ordered list of steps, run one after another. It chooses tools, never commands: a gate step
names the gate and the planner takes its command from the config's `gates:` (and leaves out a gate the
repository has not configured), so a template cannot run anything a plan from the model could not.
`bot.runs.planner` turns a template and a request into a plan, which is validated like every plan.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.plans import ALL_TOOLS, MAX_RETRIES, MAX_STEPS, MAX_TIMEOUT_S, path_problem

DEFAULT_TEMPLATE = "change"
NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,30}")
# First words of a command that mean something else, so no template may take them.
RESERVED_NAMES = frozenset(
    {"help", "plan", "review", "approve", "reject", "retry", "cancel", "status", "forget", "git"}
)
MAX_TEMPLATES = 20
MAX_INSTRUCTIONS = 2000
STEP_KEYS = ("name", "tool", "inputs", "timeout_s", "retries")
# What each tool's step may set in `inputs` (the planner adds the request, gate commands and what to apply).
INPUT_KEYS: Mapping[str, tuple[str, ...]] = {"codegen": ("instructions",), "workspace:write": ("paths",)}


@dataclass(frozen=True)
class PlanTemplate:
    """A named plan: one line of description (for `/nofx help`) and its steps in order."""

    description: str
    steps: tuple[dict[str, Any], ...] = field(default=())


_DOCS_PATHS = ["**/*.md", "**/*.rst", "**/*.txt", "**/*.adoc", "docs/**", "doc/**"]

BUILTIN: Mapping[str, PlanTemplate] = {
    DEFAULT_TEMPLATE: PlanTemplate(
        "the default: generate the change, write it, run the configured gates, open a pull request, wait for CI",
        (
            {"tool": "codegen"},
            {"tool": "workspace:write"},
            {"tool": "gate:test"},
            {"tool": "gate:lint"},
            {"tool": "gate:typecheck"},
            {"tool": "git_pr"},
            {"tool": "gate:ci"},
        ),
    ),
    "fix-tests": PlanTemplate(
        "reproduce a failing test from the request and fix the code until the test gate passes",
        (
            {
                "tool": "codegen",
                "inputs": {
                    "instructions": "Fix a failing test. Read the failing test and the code it exercises, find the "
                    "cause, and fix the code; change the test only if the test itself is wrong, and say so. "
                    "The repository's test command runs after your edits and must pass."
                },
            },
            {"tool": "workspace:write"},
            {"tool": "gate:test"},
            {"tool": "gate:lint"},
            {"tool": "gate:typecheck"},
            {"tool": "git_pr"},
            {"tool": "gate:ci"},
        ),
    ),
    "docs": PlanTemplate(
        "documentation only (Markdown, reStructuredText, text, docs/): no code gates",
        (
            {
                "tool": "codegen",
                "inputs": {"instructions": "Change documentation only: do not edit source code, tests or config."},
            },
            {"tool": "workspace:write", "inputs": {"paths": _DOCS_PATHS}},
            {"tool": "git_pr"},
        ),
    ),
}


class TemplateError(ValueError):
    """A template the config cannot hold; `key` is where (below `templates`), `allowed` what would do."""

    def __init__(self, key: str, problem: str, allowed: str) -> None:
        super().__init__(f"{key} {problem}")
        self.key, self.problem, self.allowed = key, problem, allowed


def parse_templates(value: object) -> dict[str, PlanTemplate]:
    """The `templates:` mapping of a config file. Raises TemplateError naming the template and step."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TemplateError("", f"is {_kind(value)}", "a mapping of template names to {description, steps}")
    if len(value) > MAX_TEMPLATES:
        raise TemplateError("", f"has {len(value)} templates", f"at most {MAX_TEMPLATES}")
    return {_name(name): _template(name, spec) for name, spec in value.items()}


def _name(name: object) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name) or name in RESERVED_NAMES:
        raise TemplateError(
            f"{name}",
            "is not a usable template name",
            "1 to 31 lowercase letters, digits and '-', not a command word (" + ", ".join(sorted(RESERVED_NAMES)) + ")",
        )
    return name


def _template(name: str, spec: object) -> PlanTemplate:
    if not isinstance(spec, dict) or set(spec) - {"description", "steps"}:
        raise TemplateError(name, f"is {_kind(spec)}", "a mapping with the keys description, steps")
    description = spec.get("description", "")
    if not isinstance(description, str) or len(description) > 200 or "\n" in description:
        raise TemplateError(f"{name}.description", f"is {_kind(description)}", "one line of at most 200 characters")
    steps = spec.get("steps")
    if not isinstance(steps, list) or not 1 <= len(steps) <= MAX_STEPS:
        raise TemplateError(f"{name}.steps", f"is {_kind(steps)}", f"a list of 1 to {MAX_STEPS} steps")
    return PlanTemplate(
        description or f"the `{name}` template", tuple(_step(name, n, s) for n, s in enumerate(steps, 1))
    )


def _step(template: str, index: int, step: object) -> dict[str, Any]:
    key = f"{template}.steps"
    where = f"(step {index})"
    if not isinstance(step, dict) or set(step) - set(STEP_KEYS):
        raise TemplateError(key, f"has {_kind(step)} {where}", "steps with the keys " + ", ".join(STEP_KEYS))
    tool = step.get("tool")
    if tool not in ALL_TOOLS:
        raise TemplateError(key, f"has the tool {tool!r} {where}", "one of " + ", ".join(ALL_TOOLS))
    inputs = step.get("inputs", {})
    allowed = INPUT_KEYS.get(str(tool), ())
    if not isinstance(inputs, dict) or set(inputs) - set(allowed):
        what = ", ".join(allowed) if allowed else "nothing (gate commands come from `gates:`)"
        raise TemplateError(key, f"sets inputs {_kind(inputs)} for {tool} {where}", f"inputs: {what}")
    checks: dict[str, Callable[[Any], bool]] = {
        "instructions": lambda v: isinstance(v, str) and 0 < len(v) <= MAX_INSTRUCTIONS,
        "paths": lambda v: isinstance(v, list) and 0 < len(v) <= 50 and all(_glob_ok(p) for p in v),
        "name": lambda v: isinstance(v, str) and re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,62}", v) is not None,
        "timeout_s": lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_TIMEOUT_S,
        "retries": lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_RETRIES,
    }
    for name, value in [*inputs.items(), *((k, step[k]) for k in ("name", "timeout_s", "retries") if k in step)]:
        if not checks[name](value):
            raise TemplateError(key, f"has a bad `{name}` {where}", _ALLOWED[name])
    return dict(step)


_ALLOWED = {
    "instructions": f"text of at most {MAX_INSTRUCTIONS} characters",
    "paths": "a list of repository-relative path globs, e.g. ['docs/**', '**/*.md']",
    "name": "a step name: lowercase letters, digits, '_', '.', '-'",
    "timeout_s": f"a whole number of seconds from 1 to {MAX_TIMEOUT_S}",
    "retries": f"a whole number from 0 to {MAX_RETRIES}",
}


def _glob_ok(pattern: object) -> bool:
    return isinstance(pattern, str) and 0 < len(pattern) <= 200 and path_problem(pattern.replace("*", "x")) is None


def _kind(value: object) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)[:60]
