"""A local OpenAI-compatible model (README "Local models"): a run and a review against a server that ignores
`tool_choice`, answers with text where a tool call was required, and sends tool calls in the plain OpenAI format."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.cli import main as cli
from tests.conftest import CALC, TEST_CALC
from tests.support.llm_double import LocalServerDouble

MODEL = "qwen2.5-coder:7b"
MULTIPLY = CALC + "\n\ndef multiply(a, b):\n    return a * b\n"


def git(repo: Path, *args: str) -> str:
    identity = ["-c", "user.name=Dev", "-c", "user.email=dev@example.com"]
    return subprocess.run(["git", *identity, "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def local() -> Iterator[LocalServerDouble]:
    with LocalServerDouble() as double:
        yield double


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local: LocalServerDouble) -> Path:
    """A repository, and the environment README's "Local models" section gives (no other model key)."""
    for name in ("REDIS_URL", "DATABASE_URL", "GITHUB_APP_ID", "GITHUB_PRIVATE_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NOFX_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("OPENAI_BASE_URL", local.base_url)  # e.g. http://localhost:11434/v1 for Ollama
    monkeypatch.setenv("OPENAI_API_KEY", "ollama")
    monkeypatch.setenv("NOFX_MODEL", f"openai:{MODEL}")
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "project"
    path.mkdir()
    git(path, "init", "--quiet", "--initial-branch=main")
    (path / "calc.py").write_text(CALC)
    (path / "test_calc.py").write_text(TEST_CALC)
    (path / ".github").mkdir()
    (path / ".github" / "nofx.yml").write_text("gates:\n  test: python3 -m unittest -q\n")
    git(path, "add", "-A")
    git(path, "commit", "--quiet", "-m", "initial")
    return path


def test_a_run_works_with_a_model_that_ignores_tool_choice(repo: Path, local: LocalServerDouble) -> None:
    local.text("Sure! I will add a multiply function to calc.py.")  # tool_choice was "required"; it chats anyway
    local.tool_calls([("replace_in_file", {"path": "calc.py", "old": CALC, "new": MULTIPLY})])
    local.tool_calls([("finish", {"summary": "added multiply"})])

    assert cli.main(["run", "--repo", str(repo), "add multiply"]) == 0

    assert git(repo, "show", "nofx/local-add-multiply:calc.py") == MULTIPLY
    assert {r.model for r in local.requests} == {MODEL}
    assert "required" in local.tool_choices  # asked for, ignored, and the run still came through
    assert "plain text is not accepted" in local.requests[1].text  # nofx asked again for a tool call
    assert local.pending == 0


def test_a_review_works_with_a_model_that_ignores_tool_choice(repo: Path, local: LocalServerDouble) -> None:
    git(repo, "checkout", "--quiet", "-b", "feature")
    (repo / "calc.py").write_text(MULTIPLY)
    git(repo, "commit", "--quiet", "-am", "multiply")
    local.text("The change looks fine to me.")
    local.tool_calls(
        [
            (
                "report_findings",
                {
                    "findings": [
                        {"path": "calc.py", "line": 6, "severity": "low", "title": "no test", "body": "Test it."}
                    ]
                },
            )
        ]
    )

    assert cli.main(["review", "--repo", str(repo), "--base", "main"]) == 0  # low is below review.fail_on

    assert local.pending == 0 and {r.model for r in local.requests} == {MODEL}
