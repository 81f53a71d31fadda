"""How CI shows on GitHub: the `**CI:**` line, the waiting headline and check run, and hidden mode's wording."""

from __future__ import annotations

from typing import Any

from bot.models import RunStatus, StepStatus
from bot.render.check_run import check_run
from bot.render.ci import ci_note
from bot.render.status_comment import status_comment
from bot.render.words import GIT_WORDS
from tests.render.test_render import PR_OUTPUT, make_run, make_step

HEAD = "0123456789abcdef0123456789abcdef01234567"


def ci(status: StepStatus, **output: Any) -> list[Any]:
    return [
        make_step(0, "pull-request", "git_pr", StepStatus.succeeded, output=PR_OUTPUT),
        make_step(1, "ci", "gate:ci", status, output={"head_sha": HEAD, "repairs": [], **output}),
    ]


def test_a_run_waiting_for_ci_says_so_and_keeps_its_check_run_running() -> None:
    run = make_run(RunStatus.waiting, head_sha=HEAD)
    steps = ci(StepStatus.waiting, ci="waiting", passed=["lint"], pending=["test", "build"])

    comment = status_comment(run, steps, git_mode="basic", run_url="https://nofx.example/runs/r")
    assert "nofx is waiting for CI" in comment and "Approval needed" not in comment
    assert "**CI:** waiting on `0123456`: 1 of 3 checks passed. Waiting for `test`, `build`." in comment
    assert "`ci` · wait for CI · waiting for CI" in comment
    body = check_run(run, steps, git_mode="basic", run_url="https://nofx.example/runs/r")
    assert (body["status"], body.get("conclusion")) == ("in_progress", None)
    assert body["output"]["title"] == "Waiting for CI: 1 of 2 steps done"
    assert [a["identifier"] for a in body["actions"]] == ["cancel"]


def test_failing_checks_are_named_escaped_and_linked_only_over_https() -> None:
    failing = [
        {"name": "test @everyone <b>", "url": "https://github.com/o/r/actions/runs/1/job/2", "conclusion": "failure"},
        {"name": "lint", "url": "javascript:alert(1)", "conclusion": "timed_out"},
    ]
    note = ci_note(ci(StepStatus.failed, ci="failed", failing=failing), names_git=True)
    assert note.startswith(
        "**CI:** failed on `0123456`: [`test @everyone <b>`](https://github.com/o/r/actions/runs/1/job/2)"
    )
    assert "[`lint`](" not in note and "`lint` (javascript:alert(1)) (timed\\_out)" in note


def test_repairs_are_counted_and_hidden_mode_talks_of_no_pushes_or_branches() -> None:
    repairs = [{"attempt": 1, "files": ["calc.py"], "passed": None, "head_sha": HEAD}]
    steps = ci(StepStatus.waiting, ci="waiting", passed=[], pending=["test"], repairs=repairs)
    run = make_run(RunStatus.waiting, head_sha=HEAD)

    basic = status_comment(run, steps, git_mode="basic", run_url=None)
    assert "repair 1: changed `calc.py` · pushed `0123456`, waiting for CI" in basic
    assert "nofx repaired it 1 time." in basic
    hidden = status_comment(run, steps, git_mode="hidden", run_url=None)
    assert "repair 1: changed `calc.py` · waiting for CI" in hidden
    handed = ci_note(ci(StepStatus.succeeded, ci="handed_over", foreign_sha=HEAD), names_git=False)
    assert handed and not GIT_WORDS.search(handed)


def test_no_ci_passed_and_timed_out() -> None:
    assert ci_note(ci(StepStatus.succeeded, ci="none"), names_git=True).startswith("**CI:** none ran")
    assert ci_note(ci(StepStatus.succeeded, ci="passed"), names_git=False) == "**CI:** passed."
    timed_out = ci_note(ci(StepStatus.failed, ci="timed_out", pending=["test"]), names_git=True)
    assert timed_out == "**CI:** did not finish in time on `0123456`; still waiting for `test`."
