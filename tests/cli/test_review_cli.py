"""`nofx review` as a process: a real temporary repository, the Anthropic double, and in "Actions" the GitHub double.

The command runs as a subprocess with only the environment GitHub Actions would give it, so what it reads
(`ANTHROPIC_*`, `GITHUB_TOKEN`, `GITHUB_EVENT_PATH`, `GITHUB_API_URL`) is exactly what the workflow sets.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from bot.cli import main as cli
from bot.cli import review as review_cli
from bot.logs import Redactor
from bot.settings import Settings
from tests.support.github_double import GitHubDouble
from tests.support.llm_double import AnthropicDouble
from tests.support.payloads import load_payload

ROOT = Path(__file__).resolve().parents[2]
REVIEWS = "/repos/{owner}/{repo}/pulls/{pull_number}/reviews"
OWNER, REPO = "Codertocat", "Hello-World"
APP = "".join(f"VALUE_{i} = {i}\n" for i in range(1, 41))


def git(repo: Path, *args: str) -> str:
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(repo),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_AUTHOR_NAME": "Test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "Test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
    }
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, check=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """main holds app.py; `feature` changes line 30 and adds a file."""
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "--quiet", "--initial-branch=main")
    (path / "app.py").write_text(APP)
    git(path, "add", ".")
    git(path, "commit", "--quiet", "-m", "base")
    git(path, "checkout", "--quiet", "-b", "feature")
    (path / "app.py").write_text(APP.replace("VALUE_30 = 30", "VALUE_30 = compute()"))
    (path / "extra.py").write_text("def extra():\n    return 1\n")
    git(path, "add", ".")
    git(path, "commit", "--quiet", "-m", "change")
    return path


def environment(repo: Path, llm: AnthropicDouble, env: dict[str, str] | None) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(repo.parent),
        "ANTHROPIC_API_KEY": llm.api_key,
        "ANTHROPIC_BASE_URL": llm.base_url,
        "NOFX_DATA_DIR": str(repo.parent / "data"),
        "COLUMNS": "200",
        "PYTHONPATH": str(ROOT),
        **(env or {}),
    }


def nofx_review_process(
    repo: Path, llm: AnthropicDouble, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`nofx review ...` as its own process, as the workflow runs it."""
    command = [sys.executable, "-m", "bot.cli", "review", "--repo", str(repo), *args]
    environ = environment(repo, llm, env)
    return subprocess.run(
        command, capture_output=True, text=True, env=environ, cwd=repo.parent, timeout=60, check=False
    )


def nofx_review(repo: Path, llm: AnthropicDouble, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """The same command in this process (starting Python and the SDKs takes seconds): exit code and output."""
    environ = environment(repo, llm, env)
    settings = Settings.from_env(environ, env_file=repo.parent / "no.env")
    parsed = cli._parser().parse_args(["review", "--repo", str(repo), *args])
    output = io.StringIO()
    code = review_cli.run(
        parsed, settings, Redactor(settings.secrets), environ=environ, console=Console(file=output, width=200)
    )
    return code, output.getvalue()


def findings(llm: AnthropicDouble, *items: dict[str, Any]) -> None:
    llm.tool_call("report_findings", {"findings": list(items)})


HIGH = {"path": "app.py", "line": 30, "severity": "high", "title": "Unchecked compute", "body": "It may raise."}
OUTSIDE = {"path": "app.py", "line": 3, "severity": "low", "title": "Old constant", "body": "Rename it."}


def test_prints_the_findings_of_a_local_diff(repo: Path, llm: AnthropicDouble) -> None:
    findings(llm, HIGH, OUTSIDE)

    code, output = nofx_review(repo, llm, "--base", "main", "--head", "feature")

    assert code == 1, output  # a high finding reaches the default fail_on
    assert "Unchecked compute" in output and "app.py:30" in output
    assert "Old constant" in output and "app.py:3" in output
    assert "Reviewed 2 file(s) in 1 model call(s)" in output
    [request] = llm.requests
    assert "VALUE_30 = compute()" in request.text and "def extra" in request.text


def actions_env(tmp_path: Path, github: GitHubDouble, repo: Path, **extra: str) -> dict[str, str]:
    """What GitHub Actions sets for a `pull_request` workflow run, pointed at the double."""
    head = git(repo, "rev-parse", "feature").strip()
    pull = github.add_pull(OWNER, REPO, head="feature", base="main", user="Codertocat")
    pull["head"]["sha"] = head
    event = load_payload("pull_request.opened")
    event["number"] = event["pull_request"]["number"] = pull["number"]
    event["pull_request"]["head"]["sha"] = head
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event))
    diff = git(repo, "diff", "--no-color", "main...feature")
    github.pull_files[(OWNER, REPO, pull["number"])] = [
        {"filename": block.split("\n+++ b/", 1)[1].split("\n", 1)[0], "patch": "@@" + block.split("\n@@", 1)[1]}
        for block in diff.split("diff --git ")[1:]
    ]
    return {
        "GITHUB_TOKEN": github.issue_token(1),
        "GITHUB_EVENT_PATH": str(path),
        "GITHUB_API_URL": github.base_url,
        "GITHUB_ACTIONS": "true",
        **extra,
    }


def test_in_github_actions_posts_the_review(
    tmp_path: Path, repo: Path, llm: AnthropicDouble, github: GitHubDouble
) -> None:
    env = actions_env(tmp_path, github, repo)
    findings(llm, HIGH, OUTSIDE)

    result = nofx_review_process(repo, llm, "--base", "main", env=env)

    assert result.returncode == 1, result.stdout + result.stderr
    [posted] = github.calls("POST", REVIEWS)
    assert posted.status == 200
    assert (posted.json["event"], posted.json["commit_id"]) == ("COMMENT", git(repo, "rev-parse", "feature").strip())
    [comment] = posted.json["comments"]
    assert (comment["path"], comment["line"]) == ("app.py", 30)
    assert "Old constant" in posted.json["body"] and "Outside the diff" in posted.json["body"]
    assert env["GITHUB_TOKEN"] not in result.stdout + result.stderr


def test_dry_run_posts_nothing(tmp_path: Path, repo: Path, llm: AnthropicDouble, github: GitHubDouble) -> None:
    env = actions_env(tmp_path, github, repo, NOFX_REVIEW_DRY_RUN="1")
    findings(llm, OUTSIDE)

    code, output = nofx_review(repo, llm, "--base", "main", env=env)

    assert code == 0, output
    assert github.calls("POST", REVIEWS) == []
    assert "would post this review" in output and "Old constant" in output


def test_a_finding_posted_earlier_is_not_posted_again(
    tmp_path: Path, repo: Path, llm: AnthropicDouble, github: GitHubDouble
) -> None:
    env = actions_env(tmp_path, github, repo)
    findings(llm, HIGH)
    assert nofx_review(repo, llm, "--base", "main", env=env)[0] == 1
    findings(llm, HIGH)

    code, _output = nofx_review(repo, llm, "--base", "main", env=env)

    first, second = github.calls("POST", REVIEWS)
    assert len(first.json["comments"]) == 1 and "comments" not in second.json
    assert "reported earlier and still open" in second.json["body"]
    assert code == 1  # still open, still failing the gate


def test_a_bad_ref_is_a_clear_error(repo: Path, llm: AnthropicDouble) -> None:
    code, output = nofx_review(repo, llm, "--base", "no-such-branch", "--head", "feature")

    assert code == 2
    assert "nofx review:" in output and "no-such-branch" in output
    assert llm.requests == []
