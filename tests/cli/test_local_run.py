"""`nofx run --repo PATH "…"`: the engine on a local repository, the result left on a branch."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bot.cli import main as cli
from tests.conftest import CALC, TEST_CALC
from tests.support.llm_double import AnthropicDouble

MULTIPLY = CALC + "\n\ndef multiply(a, b):\n    return a * b\n"


def git(repo: Path, *args: str) -> str:
    identity = ["-c", "user.name=Dev", "-c", "user.email=dev@example.com"]
    return subprocess.run(["git", *identity, "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "project"
    path.mkdir()
    git(path, "init", "--quiet", "--initial-branch=main")
    git(path, "config", "user.name", "Dev")
    (path / "calc.py").write_text(CALC)
    (path / "test_calc.py").write_text(TEST_CALC)
    (path / ".github").mkdir()
    (path / ".github" / "nofx.yml").write_text("gates:\n  test: python3 -m unittest -q\n")
    git(path, "add", "-A")
    git(path, "commit", "--quiet", "-m", "initial")
    return path


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, llm: AnthropicDouble) -> None:
    for name in ("REDIS_URL", "DATABASE_URL", "GITHUB_APP_ID", "GITHUB_PRIVATE_KEY", "OPENAI_API_KEY", "NOFX_MODEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NOFX_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ANTHROPIC_API_KEY", llm.api_key)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", llm.base_url)
    monkeypatch.chdir(tmp_path)


def test_the_result_is_left_on_a_branch_of_the_repository(
    repo: Path, llm: AnthropicDouble, environment: None, capsys: pytest.CaptureFixture[str]
) -> None:
    llm.tool_calls(
        [("replace_in_file", {"path": "calc.py", "old": CALC, "new": MULTIPLY}), ("finish", {"summary": "s"})]
    )

    assert cli.main(["run", "--repo", str(repo), "add multiply"]) == 0

    branch = "nofx/local-add-multiply"
    assert git(repo, "show", f"{branch}:calc.py") == MULTIPLY
    assert git(repo, "log", "-1", "--format=%an", branch).strip() == "Dev"  # the repository's own git identity
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD").strip() == "main"  # the checkout is untouched
    assert (repo / "calc.py").read_text() == CALC
    assert "worktree" not in git(repo, "worktree", "list").split("\n", 1)[-1]
    err = capsys.readouterr().err
    assert "succeeded" in err and branch in err  # the final frame of the steps table, and the summary


def test_a_failing_gate_leaves_no_branch_and_says_why(
    repo: Path, llm: AnthropicDouble, environment: None, capsys: pytest.CaptureFixture[str]
) -> None:
    llm.tool_calls(
        [("replace_in_file", {"path": "calc.py", "old": "a + b", "new": "a - b"}), ("finish", {"summary": "s"})]
    )
    for old, new in (("a - b", "a - b + 0"), ("a - b + 0", "b - a")):  # two repair rounds that do not help
        llm.tool_calls([("replace_in_file", {"path": "calc.py", "old": old, "new": new}), ("finish", {"summary": "?"})])

    assert cli.main(["run", "--repo", str(repo), "break it"]) == 1

    assert "nofx/local-break-it" not in git(repo, "branch", "--list")
    assert "failed" in capsys.readouterr().err


def test_not_a_repository_is_a_clear_error(
    tmp_path: Path, environment: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["run", "--repo", str(tmp_path), "anything"]) == 2
    assert "not a git repository" in capsys.readouterr().err
