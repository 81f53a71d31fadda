"""The contract between the step engine and the handlers: context in, result out, errors that say what to do."""

from __future__ import annotations

import importlib
import logging
import pkgutil
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from gidgethub.abc import GitHubAPI

from bot.models import Run, Step
from bot.repo_config import RepoConfig
from bot.runs.artifacts import ArtifactError
from bot.workspace.command_result import CommandResult
from bot.workspace.edits import Edit
from bot.workspace.git import GitError
from bot.workspace.sandbox import Sandbox

if TYPE_CHECKING:
    from bot.llm.router import Budget
    from bot.runs.artifacts import StepArtifacts
    from bot.runs.step_llm import StepLLM
    from bot.workspace.worktrees import Worktree

# What a handler may name: its context and result, the errors it raises or catches (a git command's, an artifact's),
# a sandboxed command's result, a model round's result and a step row. Nothing else of bot/ (the import-linter
# contract in pyproject): what handlers do beyond that, they do through the context's `commands`, `model`, `review`.
__all__ = [
    "EDITS_ARTIFACT",
    "GATE_TIMEOUT_S",
    "MARGIN_S",
    "MAX_EVIDENCE_LINES",
    "PULL_REQUEST_ARTIFACT",
    "SETUP_DIR_VARIABLE",
    "AgentResult",
    "ArtifactError",
    "CommandResult",
    "GateRun",
    "GitError",
    "Handler",
    "ModelLoop",
    "NoChange",
    "RepoCommands",
    "RetryableError",
    "ReviewChange",
    "ReviewFinding",
    "SetupResults",
    "Step",
    "StepContext",
    "StepFailed",
    "StepResult",
    "discover_handlers",
    "gate_timeout",
    "written_by",
]

GATE_TIMEOUT_S = 900.0  # one run of a repository check at most (a gate step's, the model's `run_gate`)
MARGIN_S = 30.0  # kept back from the step's timeout for recording the result
MAX_EVIDENCE_LINES = 80  # of a failure's output, given to a repair round
SETUP_DIR_VARIABLE = "NOFX_SETUP_DIR"  # where the run's `setup` result is, for the commands that use it

Handler = Callable[["StepContext"], Awaitable["StepResult"]]
# Artifacts the engine reads too (`workspace:write` applies the edits; the semantic index keeps both).
EDITS_ARTIFACT = "edits.json"  # codegen's edits, as `Edit.to_dict()` objects
PULL_REQUEST_ARTIFACT = "pull_request.md"  # git_pr: the title and body of the pull request it opened or updated
# `(query, limit)` -> `path:start-end (semantic, similarity …)` lines from the repository's semantic index, best first.
SemanticSearch = Callable[[str, int], Awaitable[list[str]]]


def gate_timeout(deadline: float) -> float:
    """A gate run after a repair gets what is left of the step's time (`deadline`, time.monotonic()) less MARGIN_S,
    at most GATE_TIMEOUT_S; whole seconds read better."""
    return float(max(1, int(min(GATE_TIMEOUT_S, deadline - time.monotonic() - MARGIN_S))))


@dataclass(frozen=True)
class GateRun:
    """A gate's (or setup command's) result with the time limit it ran under, for the failure message."""

    command: str
    result: CommandResult
    timeout_s: float

    @property
    def ok(self) -> bool:
        return self.result.ok

    def describe_failure(self, *, lines: int) -> str:
        return self.result.describe_failure(self.command, self.timeout_s, lines=lines)


class RepoCommands(Protocol):
    """The repository's own commands, run for the step in its worktree and the sandbox (`bot.runs.repo_commands`).

    A sandbox that cannot run a command, or a worktree that is gone, fails the step (StepFailed).
    """

    async def gate(self, command: str, *, timeout_s: float) -> CommandResult:
        """A configured check, without network; the run's setup directory read-only, its `bin/` first on PATH."""
        ...

    async def recheck(self, deadline: float) -> GateRun | None:
        """After a repair changed the code: the gates the run passed before this step, again, in plan order, each
        with `gate_timeout(deadline)`; the first failure, or None."""
        ...

    async def setup(self, commands: Sequence[str], directory: Path, *, deadline: float) -> GateRun | None:
        """The `setup` commands in order, with network, writing their result into `directory` (`$NOFX_SETUP_DIR`),
        each with what is left until `deadline` (time.monotonic()); the first failure, or None.

        They run in a checkout of the run's base commit, never in the run's worktree: code the model wrote (a
        follow-up run's branch, a resumed run's checkpoint) must not run with network."""
        ...


class SetupResults(Protocol):
    """One repository's `setup` results kept on this worker, by key (`bot.runs.setup_cache`)."""

    def path(self, key: str) -> Path:
        """Where the result under `key` is on this worker's disk (commands see it at `Sandbox.setup_path`)."""
        ...

    async def reuse_or_make(
        self, key: str, make: Callable[[Path], Awaitable[dict[str, object]]]
    ) -> tuple[dict[str, object], bool]:
        """Under the key's lock: the record of the finished result (reused: True), or `make(directory)` into a fresh
        directory and its record kept (False). When `make` raises, nothing of it stays."""
        ...


@dataclass
class AgentResult:
    """What a model round did: the edits in order (replayable on the starting tree), the files, its summary."""

    edits: list[Edit]
    summary: str
    turns: int

    @property
    def files(self) -> list[str]:
        return sorted({edit.path for edit in self.edits})


class ModelLoop(Protocol):
    """The model working on the run's worktree like an engineer: search, read, edit, run a gate (`bot.runs.agent`)."""

    async def generate(self, request: str) -> AgentResult:
        """Code generation for `request`; the worktree is left as it was (the result holds the edits)."""
        ...

    async def repair(self, *, evidence: str, source: str, attempt: int, deadline: float | None = None) -> AgentResult:
        """One repair round on a failure (`evidence`, `source` says what failed); its edits stay in the worktree.

        `deadline` (time.monotonic()) bounds the model's `run_gate` calls. Raises NoChange when nothing changed.
        """
        ...


class ReviewFinding(Protocol):
    """One problem the model's review found in the run's change."""

    @property
    def path(self) -> str: ...
    @property
    def line(self) -> int: ...
    @property
    def severity(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def body(self) -> str: ...


# The model's review of the run's change so far (against where its branch started): findings at or above
# `review.fail_on`, in the review's order.
ReviewChange = Callable[[], Awaitable[Sequence[ReviewFinding]]]


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
    # This repository's `setup` results kept across runs on this worker (None: no cache).
    setup_results: SetupResults | None = None
    # Checkpoint the worktree now, mid-step (each repair attempt); the argument names the outcome.
    checkpoint: Callable[[str], Awaitable[object]] | None = None
    # The repository's semantic index (indexed at the base branch, so it may lag the worktree); None: not configured.
    semantic_search: SemanticSearch | None = None
    commands: RepoCommands | None = None  # the repository's own commands (gates, setup)
    model: ModelLoop | None = None  # code generation and repair rounds; None: no model is configured
    review: ReviewChange | None = None  # `gate:llm_review`: the model's review of the change so far

    @property
    def inputs(self) -> dict[str, Any]:
        return self.step.inputs

    def repairs_so_far(self) -> int:
        """Repair rounds the run's earlier steps used: `repair.max_attempts` bounds the run, not each step."""
        outputs = [step.output for step in self.earlier.values() if isinstance(step.output, dict)]
        return sum(len(output["repairs"]) for output in outputs if isinstance(output.get("repairs"), list))


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


class NoChange(StepFailed):
    """The model finished (or ran out of turns) without a single edit."""


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
