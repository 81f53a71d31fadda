"""The gate handler runs a real command in a real directory; the fake is only the workspace object around it."""

from __future__ import annotations

import logging
import types
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bot.models import Run, Step
from bot.repo_config import GatesConfig, PolicyConfig, RepoConfig
from bot.runs.contract import StepContext, StepFailed, discover_handlers
from bot.runs.repo_commands import StepCommands
from bot.workspace import isolation as layouts
from bot.workspace.sandbox import UNSAFE_NOTICE, Sandbox
from handlers import gates

# The handler behaves the same in both; the sandbox's own tests cover what bwrap adds.
ISOLATION = "bwrap" if layouts.probe().ok else "none"

OUTPUT_KEYS = {"command", "exit_code", "duration_s", "isolation", "output_tail", "truncated"}


class RecordingArtifacts:
    """Stands in for `bot.artifacts.StepArtifacts`: keeps what the handler stores."""

    def __init__(self) -> None:
        self.stored: dict[str, bytes] = {}

    def put(self, name: str, data: bytes) -> None:
        self.stored[name] = data


class Harness:
    """One gate step of one run, with what it emitted and stored."""

    def __init__(self, worktree: Path | None, isolation: str = ISOLATION) -> None:
        self.worktree = worktree
        self.sandbox = Sandbox(isolation=isolation)
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.artifacts = RecordingArtifacts()

    def context(
        self, command: str, *, tool: str = "gate:test", timeout_s: int = 30, config: RepoConfig | None = None
    ) -> StepContext:
        run = Run(
            id="run1",
            installation_id=1,
            repository="octo/shop",
            thread_number=7,
            thread_kind="issue",
            request="add a cart",
            requester="octocat",
            trigger="comment",
            plan={},
            config={},
        )
        step = Step(
            id="step1",
            run_id=run.id,
            position=2,
            name=tool.removeprefix("gate:"),
            tool=tool,
            inputs={},
            depends_on=[],
            policy={},
            timeout_s=timeout_s,
            idempotency_key=f"run1:{tool}:0",
        )
        context = StepContext(
            run=run,
            step=step,
            config=replace(config or RepoConfig(), gates=GatesConfig(**{tool.removeprefix("gate:"): command})),
            gh=None,
            earlier={},
            emit=lambda kind, payload: self.events.append((kind, payload)),
            log=logging.LoggerAdapter(logging.getLogger("test.gates"), {}),
            artifacts=self.artifacts,  # type: ignore[arg-type]
            workspace=types.SimpleNamespace(path=self.worktree, git_dir=None, mirror=None)  # type: ignore[arg-type]
            if self.worktree
            else None,
            sandbox=self.sandbox,
        )
        context.commands = StepCommands(context)
        return context


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def test_the_handler_claims_the_three_gate_tools() -> None:
    registry = discover_handlers()

    assert {tool: registry[tool] for tool in gates.TOOLS} == dict.fromkeys(gates.TOOLS, gates.run)


async def test_a_passing_gate_reports_what_ran_and_where(harness: Harness, tmp_path: Path) -> None:
    (tmp_path / "tests_ok").write_text("")

    result = await gates.run(harness.context("test -f tests_ok && echo '3 passed'"))

    isolation = ISOLATION
    assert set(result.output) == OUTPUT_KEYS
    assert result.output["exit_code"] == 0
    assert result.output["output_tail"] == "3 passed"
    assert result.output["isolation"] == isolation
    assert result.output["truncated"] is False
    assert result.summary.startswith("`test -f tests_ok && echo '3 passed'` passed in ")
    assert result.summary.endswith(" s (isolation: bwrap)" if isolation == "bwrap" else "NOFX_SANDBOX=none)")
    assert not result.wait
    assert harness.artifacts.stored == {gates.OUTPUT_ARTIFACT: b"3 passed\n"}
    [(kind, payload)] = harness.events
    assert kind == "gate.finished"
    assert payload["tool"] == "gate:test" and payload["exit_code"] == 0 and payload["timed_out"] is False


async def test_a_failing_gate_fails_the_step_with_the_last_lines(harness: Harness) -> None:
    command = "for n in $(seq 1 50); do echo line $n; done; echo 'E   assert 1 == 2' >&2; exit 2"

    with pytest.raises(StepFailed) as failed:
        await gates.run(harness.context(command, tool="gate:lint"))

    message = str(failed.value)
    assert message.startswith(f"`{command}` failed with exit code 2 (isolation: ")
    assert "E   assert 1 == 2" in message
    assert "line 50" in message and "line 22\n" in message
    assert "line 21\n" not in message
    assert set(failed.value.output) == OUTPUT_KEYS
    assert failed.value.output["exit_code"] == 2
    assert failed.value.output["output_tail"].splitlines()[-1] == "E   assert 1 == 2"
    assert harness.events[0][0] == "gate.finished"
    assert harness.events[0][1]["tool"] == "gate:lint"
    assert b"line 1\n" in harness.artifacts.stored[gates.OUTPUT_ARTIFACT]


async def test_a_gate_that_runs_too_long_is_killed_and_fails(harness: Harness) -> None:
    with pytest.raises(StepFailed) as failed:
        await gates.run(harness.context("echo starting; sleep 1000", timeout_s=1))

    assert "`echo starting; sleep 1000` timed out after 1 s" in str(failed.value)
    assert "starting" in str(failed.value)
    assert failed.value.output["exit_code"] is None
    assert harness.events[0][1]["timed_out"] is True


async def test_the_failure_is_plain_text_that_each_surface_fences_once(harness: Harness) -> None:
    with pytest.raises(StepFailed) as failed:
        await gates.run(harness.context("echo '```'; echo 'after'; exit 1"))

    assert str(failed.value).endswith("Last 30 lines of output:\n```\nafter")


async def test_only_the_allowed_environment_reaches_the_command(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATE_FLAVOUR", "mint")
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_must_not_leak")
    command = 'test "$GATE_FLAVOUR" = mint && test -z "$GITHUB_TOKEN"'
    allowed = RepoConfig(policy=PolicyConfig(env_allowed=("GATE_FLAVOUR",)))

    result = await gates.run(harness.context(command, config=allowed))
    assert result.output["exit_code"] == 0

    with pytest.raises(StepFailed, match="exit code 1"):
        await gates.run(harness.context(command))


async def test_a_gate_needs_a_workspace_and_a_command(tmp_path: Path) -> None:
    with pytest.raises(StepFailed, match="this step needs a workspace"):
        await gates.run(Harness(None).context("true"))
    with pytest.raises(StepFailed, match=r"set `gates\.typecheck`"):
        await gates.run(Harness(tmp_path).context("  ", tool="gate:typecheck"))


async def test_a_missing_worktree_fails_the_step(tmp_path: Path) -> None:
    with pytest.raises(StepFailed, match="could not be started"):
        await gates.run(Harness(tmp_path / "gone").context("true"))


async def test_without_a_sandbox_the_gate_fails_naming_the_cause_and_the_fix(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))
    harness.sandbox = Sandbox(isolation="bwrap")

    with pytest.raises(StepFailed) as failed:
        await gates.run(harness.context("touch ran"))

    assert not (tmp_path / "ran").exists()
    assert "no repository code ran: bubblewrap (`bwrap`) is not installed" in str(failed.value)
    assert "NOFX_SANDBOX=none" in str(failed.value)
    assert harness.events == []


async def test_a_gate_run_without_isolation_says_so_in_every_output(tmp_path: Path) -> None:
    harness = Harness(tmp_path, isolation="none")

    passed = await gates.run(harness.context("echo fine"))
    with pytest.raises(StepFailed) as failed:
        await gates.run(harness.context("echo broken; exit 1"))

    assert passed.output["output_tail"] == f"{UNSAFE_NOTICE}\nfine"
    assert "NOFX_SANDBOX=none" in passed.summary
    assert failed.value.output["output_tail"].startswith(UNSAFE_NOTICE)
    assert "the operator turned the sandbox off with NOFX_SANDBOX=none" in str(failed.value)


async def test_gate_output_names_paths_relative_to_the_worktree(harness: Harness, tmp_path: Path) -> None:
    command = 'echo "File \\"$PWD/tests/test_x.py\\", line 3"; echo "cwd: $PWD"; exit 1'

    with pytest.raises(StepFailed) as failed:
        await gates.run(harness.context(command))

    assert str(tmp_path) not in str(failed.value) and str(tmp_path) not in failed.value.output["output_tail"]
    assert 'File "tests/test_x.py", line 3' in failed.value.output["output_tail"]
    assert "cwd: ." in failed.value.output["output_tail"]
