"""The contract between the step engine and the handlers: context in, result out, errors that say what to do."""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gidgethub.abc import GitHubAPI

from bot.models import Run, Step
from bot.repo_config import RepoConfig
from bot.runs.artifacts import ArtifactError
from bot.workspace.git import GitError
from bot.workspace.sandbox import CommandResult, Sandbox

if TYPE_CHECKING:
    from bot.llm.router import Budget
    from bot.runs.artifacts import StepArtifacts
    from bot.runs.step_llm import StepLLM
    from bot.workspace.worktrees import Worktree

# What a handler may name: its context and result, the errors it raises or catches (a git command's, an artifact's),
# a sandboxed command's result and a step row. Nothing else of bot/ (the import-linter contract in pyproject).
__all__ = [
    "ArtifactError",
    "CommandResult",
    "GitError",
    "Handler",
    "RetryableError",
    "Step",
    "StepContext",
    "StepFailed",
    "StepResult",
    "discover_handlers",
    "written_by",
]

Handler = Callable[["StepContext"], Awaitable["StepResult"]]
# `(query, limit)` -> `path:start-end (semantic, similarity …)` lines from the repository's semantic index, best first.
SemanticSearch = Callable[[str, int], Awaitable[list[str]]]


@dataclass
class StepContext:
    """All a handler may touch. Handlers never set statuses; they return a result or raise."""

    run: Run
    step: Step
    config: RepoConfig
    gh: GitHubAPI | None
    earlier: dict[str, Step]  # the run's succeeded steps, by name (their outputs and artifacts)
    emit: Callable[[str, dict[str, Any]], None]
    log: logging.LoggerAdapter[logging.Logger]
    artifacts: StepArtifacts | None = None
    workspace: Worktree | None = None  # the run's git worktree, for steps that touch code
    llm: StepLLM | None = None
    budget: Budget | None = None  # the run's remaining `policy.max_cost_usd`
    git_token: Callable[[], Awaitable[str]] | None = None  # an installation token for git, through the env only
    author: Callable[[], Awaitable[tuple[str, str]]] | None = None  # the App's bot account, for commits
    inherited_files: list[str] = field(default_factory=list)  # written by the run this one resumes from
    sandbox: Sandbox = field(default_factory=Sandbox)  # where repository code runs (NOFX_SANDBOX)
    ci: Callable[[StepContext], Awaitable[StepResult]] | None = None  # `gate:ci`: one look at the repository's CI
    # Where this repository's `setup` results are kept across runs (the worker's data dir; None: no cache).
    setup_cache: Path | None = None
    # Checkpoint the worktree now, mid-step (each repair attempt); the argument names the outcome.
    checkpoint: Callable[[str], Awaitable[object]] | None = None
    # The repository's semantic index (indexed at the base branch, so it may lag the worktree); None: not configured.
    semantic_search: SemanticSearch | None = None

    @property
    def inputs(self) -> dict[str, Any]:
        return self.step.inputs


@dataclass
class StepResult:
    """What a handler did. `wait=True` parks the run until a person decides (approvals)."""

    output: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    wait: bool = False


def written_by(step: Step) -> list[str]:
    """The paths a step reports it wrote: a write step's `files`, and the files of each of its repair rounds.

    `git_pr` commits exactly these (never what the gates left behind), and a resumed run inherits them.
    """
    output = step.output if isinstance(step.output, dict) else {}
    paths = list(output.get("files") or []) if step.tool == "workspace:write" else []
    repairs = output.get("repairs")
    for repair in repairs if isinstance(repairs, list) else []:
        if isinstance(repair, dict):
            paths += [path for path in repair.get("files") or [] if isinstance(path, str)]
    return paths


class StepFailed(Exception):
    """The step failed for a reason a user can act on; the message goes into the status comment."""

    def __init__(self, message: str, output: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.output = output or {}


class RetryableError(Exception):
    """A transient failure (rate limit, network, overloaded model): the engine retries with backoff."""


def discover_handlers(package: str = "handlers") -> dict[str, Handler]:
    """Map tool names to handlers: every module of the package exports `TOOLS` and `run`."""
    registry: dict[str, Handler] = {}
    root = importlib.import_module(package)
    for module_info in pkgutil.iter_modules(root.__path__):
        module = importlib.import_module(f"{package}.{module_info.name}")
        for tool in getattr(module, "TOOLS", ()):
            if tool in registry:
                raise RuntimeError(f"two handlers claim the tool {tool!r}")
            registry[tool] = module.run
    return registry
