"""`nofx run` and `nofx review` in a terminal: driven in a pseudo-terminal, the screen read back through pyte."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pyte
import pytest

from tests.conftest import CALC, TEST_CALC
from tests.support.llm_double import AnthropicDouble

ROOT = Path(__file__).resolve().parents[2]
MULTIPLY = CALC + "\n\ndef multiply(a, b):\n    return a * b\n"
COLUMNS, LINES = 110, 60


def run_in_terminal(
    args: list[str], env: dict[str, str], cwd: Path, timeout_s: float = 120
) -> tuple[int, list[str], str]:
    """Run `nofx ARGS` with a pseudo-terminal as its stdin, stdout and stderr; return its exit code, its final
    screen and everything it wrote (what scrolled off the screen included)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", LINES, COLUMNS, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", *args],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        cwd=cwd,
        env=env,
        start_new_session=True,
    )
    os.close(follower)
    screen = pyte.Screen(COLUMNS, LINES)
    stream = pyte.ByteStream(screen)
    written = bytearray()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # the terminal closed: the process is gone
                    break
                if not chunk:
                    break
                stream.feed(chunk)
                written += chunk
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=10)
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
    return code, [line.rstrip() for line in screen.display], written.decode("utf-8", "replace")


def _environment(tmp_path: Path, llm: AnthropicDouble) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(tmp_path),
        "TERM": "xterm-256color",
        "ANTHROPIC_API_KEY": llm.api_key,
        "ANTHROPIC_BASE_URL": llm.base_url,
        "NOFX_DATA_DIR": str(tmp_path / "data"),
        "PYTHONPATH": str(ROOT),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
    }


def _git(repo: Path, *args: str) -> str:
    identity = ["-c", "user.name=Dev", "-c", "user.email=dev@example.com"]
    return subprocess.run(["git", *identity, "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "project"
    path.mkdir()
    _git(path, "init", "--quiet", "--initial-branch=main")
    _git(path, "config", "user.name", "Dev")
    _git(path, "config", "user.email", "dev@example.com")
    (path / "calc.py").write_text(CALC)
    (path / "test_calc.py").write_text(TEST_CALC)
    (path / ".github").mkdir()
    (path / ".github" / "nofx.yml").write_text("gates:\n  test: python3 -m unittest -q\n")
    _git(path, "add", "-A")
    _git(path, "commit", "--quiet", "-m", "initial")
    return path


def _text(screen: list[str]) -> str:
    return "\n".join(line for line in screen if line)


def test_run_shows_its_steps_live_and_a_summary_and_logs_go_to_a_file(
    repo: Path, tmp_path: Path, llm: AnthropicDouble
) -> None:
    llm.tool_calls(
        [("replace_in_file", {"path": "calc.py", "old": CALC, "new": MULTIPLY}), ("finish", {"summary": "s"})]
    )
    code, screen, written = run_in_terminal(
        ["run", "--repo", str(repo), "add multiply"], _environment(tmp_path, llm), tmp_path
    )
    text = _text(screen)
    assert code == 0, text
    rows = {line.split("│")[1].strip(): line for line in screen if line.count("│") >= 6}
    assert {"generate", "apply", "test"} <= set(rows), text
    assert all("succeeded" in rows[name] for name in ("generate", "apply", "test"))
    assert " s " in rows["test"] or rows["test"].rstrip("│ ").endswith("s")  # a duration
    assert "$0." in rows["generate"]  # the model call's cost
    branch = "nofx/local-add-multiply"
    commit = _git(repo, "log", "-1", "--format=%h %s", branch).strip()
    assert f"branch  {branch}" in text and f"commit  {commit}" in text
    assert f"git push -u origin {branch}" in text and f"gh pr create --head {branch} --fill" in text
    assert '{"ts"' not in written  # no log line reached the terminal
    log_file = tmp_path / "data" / "logs" / "run.log"
    assert '"msg": "workspaces cleaned"' in log_file.read_text()


def test_a_failing_gate_shows_the_tail_of_its_output(repo: Path, tmp_path: Path, llm: AnthropicDouble) -> None:
    (repo / ".github" / "nofx.yml").write_text("gates:\n  test: python3 -m unittest -q\nrepair: {max_attempts: 0}\n")
    _git(repo, "commit", "--quiet", "-am", "no repairs: the gate's failure is the end of the run")
    llm.tool_calls(
        [("replace_in_file", {"path": "calc.py", "old": "a + b", "new": "a - b"}), ("finish", {"summary": "s"})]
    )
    code, screen, _ = run_in_terminal(["run", "--repo", str(repo), "break it"], _environment(tmp_path, llm), tmp_path)
    text = _text(screen)
    assert code == 1
    assert "test failed" in text and "FAILED (failures=1)" in text and "AssertionError" in text
    assert "not done" in text and "run failed" in text


def test_review_shows_its_progress_cost_and_findings(repo: Path, tmp_path: Path, llm: AnthropicDouble) -> None:
    _git(repo, "checkout", "--quiet", "-b", "feature")
    (repo / "calc.py").write_text(MULTIPLY)
    _git(repo, "commit", "--quiet", "-am", "multiply")
    finding = {"path": "calc.py", "line": 6, "severity": "high", "title": "multiply has no test", "body": "Add one."}
    llm.tool_call("report_findings", {"findings": [finding]})
    code, screen, written = run_in_terminal(
        ["review", "--repo", str(repo), "--base", "main"], _environment(tmp_path, llm), tmp_path
    )
    text = _text(screen)
    assert code == 1, text  # the finding reaches review.fail_on (high)
    review_row = next(line for line in screen if "│ review" in line)
    assert "succeeded" in review_row and "$0." in review_row and "1 finding(s) in 1 model call(s)" in review_row
    assert "multiply has no test" in text and "calc.py:6" in text
    assert '{"ts"' not in written
    assert '"msg": "llm call"' in (tmp_path / "data" / "logs" / "review.log").read_text()


def test_verbose_shows_the_logs_too(repo: Path, tmp_path: Path, llm: AnthropicDouble) -> None:
    _git(repo, "checkout", "--quiet", "-b", "feature")
    (repo / "calc.py").write_text(MULTIPLY)
    _git(repo, "commit", "--quiet", "-am", "multiply")
    llm.tool_call("report_findings", {"findings": []})
    args = ["review", "-v", "--repo", str(repo), "--base", "main"]
    code, _, written = run_in_terminal(args, _environment(tmp_path, llm), tmp_path)
    assert code == 0
    assert '"msg": "llm call"' in written
