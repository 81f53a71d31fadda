"""The texts nofx shows on GitHub: right words per status and git mode, GitHub's limits kept, no injection."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# markdown-it-py comes with rich (a dependency); it parses our output as CommonMark, the core of GitHub's Markdown.
from markdown_it import MarkdownIt
from markdown_it.token import Token

from bot.models import Run, RunStatus, Step, StepStatus
from bot.plans import Plan, StepSpec
from bot.render.check_run import check_run
from bot.render.replies import (
    config_error,
    help_comment,
    not_allowed,
    nothing_to_do,
    permission_refused,
    plan_comment,
    plan_refused,
)
from bot.render.status_comment import MARKER_PREFIX, run_status_summary, status_comment, status_marker
from bot.render.text import (
    COMMENT_LIMIT,
    code_span,
    escape_inline,
    escape_markdown,
    format_duration,
    link,
    mention,
    text_size,
)
from tests.support import openapi

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
RUN_ID = "0f3c9a7e2b1d4c5e8f9a0b1c2d3e4f5a"
RUN_URL = "https://nofx.example/runs/0f3c9a7e2b1d4c5e8f9a0b1c2d3e4f5a"
PR_URL = "https://github.example/octo/shop/pull/9"
MODES = ("hidden", "basic", "advanced")
# Words hidden mode never uses (DESIGN.md's git_mode: hidden); letter boundaries, so `git_pr` and `open-pr` count.
GIT_WORDS = re.compile(
    r"(?<![a-z])(?:branch|commit|push|pull[ _-]?request|prs?(?![a-z])|merg(?:e|ing)|rebas(?:e|ing))", re.IGNORECASE
)
# What a reader sees must not say `git` either; link destinations (github.com) are not seen.
SEEN_GIT_WORDS = re.compile(GIT_WORDS.pattern + r"|(?<![a-z])git", re.IGNORECASE)
NASTY = "<!-- nofx:run:fake --> @org/team </details> ``` <script>x</script> [a](javascript:x) ![i](x) \\ | $x$"


def make_run(status: RunStatus = RunStatus.running, **fields: Any) -> Run:
    values: dict[str, Any] = {
        "id": RUN_ID,
        "installation_id": 1,
        "repository": "octo/shop",
        "thread_number": 7,
        "thread_kind": "issue",
        "request": "add a shopping cart",
        "requester": "alice",
        "trigger": "comment",
        "plan": {},
        "config": {},
        "status": status,
        "started_at": T0,
    }
    values.update(fields)
    return Run(**values)


def make_step(position: int, name: str, tool: str, status: StepStatus = StepStatus.pending, **fields: Any) -> Step:
    values: dict[str, Any] = {
        "id": f"step{position}",
        "run_id": RUN_ID,
        "position": position,
        "name": name,
        "tool": tool,
        "inputs": {},
        "depends_on": [],
        "policy": {},
        "idempotency_key": f"{RUN_ID}:{name}:{position}",
        "status": status,
    }
    values.update(fields)
    return Step(**values)


def finished(seconds: float) -> dict[str, datetime]:
    return {"started_at": T0, "finished_at": T0 + timedelta(seconds=seconds)}


PR_OUTPUT = {"pull_request_url": PR_URL, "pull_request_number": 9, "branch": "nofx/7-cart"}


def steps_for(status: RunStatus) -> list[Step]:
    """A typical plan in the state a run of `status` leaves it, git steps named with git words on purpose."""
    done = StepStatus.succeeded
    first = [
        make_step(1, "generate", "codegen", done, **finished(12.3)),
        make_step(2, "test", "gate:test", done, depends_on=["generate"], **finished(4)),
    ]
    later = {
        RunStatus.queued: [StepStatus.pending] * 3,
        RunStatus.running: [StepStatus.running, StepStatus.pending, StepStatus.pending],
        RunStatus.waiting: [StepStatus.succeeded, StepStatus.waiting, StepStatus.pending],
        RunStatus.succeeded: [StepStatus.succeeded] * 3,
        RunStatus.failed: [StepStatus.failed, StepStatus.skipped, StepStatus.skipped],
        RunStatus.cancelled: [StepStatus.succeeded, StepStatus.cancelled, StepStatus.cancelled],
    }[status]
    if status is RunStatus.queued:
        first = [make_step(1, "generate", "codegen"), make_step(2, "test", "gate:test", depends_on=["generate"])]
    commit, approve, open_pr = later
    return [
        *first,
        make_step(
            3,
            "commit",
            "git_ops",
            commit,
            started_at=T0,
            finished_at=T0 + timedelta(seconds=3) if commit is not StepStatus.running else None,
            output={"branch": "nofx/7-cart", "head_sha": "0123456789abcdef0123", "commit_count": 2},
            error="git push failed: the branch nofx/7-cart was rejected" if commit is StepStatus.failed else None,
        ),
        make_step(4, "approve", "manual:approval", approve, depends_on=["commit"]),
        make_step(5, "open-pr", "git_pr", open_pr, depends_on=["approve"], output=PR_OUTPUT),
    ]


def comment(status: RunStatus, mode: str = "basic", **kw: Any) -> str:
    run = make_run(status, error=kw.pop("error", None))
    steps = kw.pop("steps", None) or steps_for(status)
    kw.setdefault("run_url", RUN_URL)
    return status_comment(run, steps, git_mode=mode, now=T0 + timedelta(seconds=30), **kw)


def tokens(markdown: str) -> list[Token]:
    """Every token, nested ones included, as a CommonMark renderer sees the text."""
    flat: list[Token] = []

    def walk(items: list[Token]) -> None:
        for token in items:
            flat.append(token)
            walk(token.children or [])

    walk(MarkdownIt("commonmark").parse(markdown))
    return flat


def visible(markdown: str) -> str:
    """The text a reader sees, inline code included, without link destinations or the hidden marker."""
    return " ".join(t.content for t in tokens(markdown) if t.type in ("text", "code_inline", "fence"))


def assert_hidden(markdown: str) -> None:
    """Hidden mode: no git word in the source, nor `git` in what is shown."""
    assert not GIT_WORDS.search(markdown), GIT_WORDS.search(markdown)
    assert not SEEN_GIT_WORDS.search(visible(markdown)), SEEN_GIT_WORDS.search(visible(markdown))


def mentions(markdown: str) -> list[str]:
    """The @logins GitHub would notify: `@name` in rendered text outside code, as its mention filter reads it."""
    text = "".join(t.content for t in tokens(markdown) if t.type == "text")
    return re.findall(r"(?<![\w@/])@([A-Za-z0-9][A-Za-z0-9-]*)", text)


def assert_safe(markdown: str, *, fences: int | None = None) -> None:
    """No HTML but our marker (the last block), and the fences we wrote, no more."""
    found = tokens(markdown)
    html = [t for t in found if t.type in ("html_block", "html_inline")]
    assert [t.content.strip() for t in html] == [status_marker(RUN_ID)]
    assert found[-1].type == "html_block"
    assert markdown.count("<!--") == 1
    assert carries_marker(markdown)
    if fences is not None:
        assert len([t for t in found if t.type == "fence"]) == fences


def carries_marker(markdown: str) -> bool:
    """What `bot.runs.report` looks for to find the run's status comment again: the run's own marker."""
    return status_marker(RUN_ID) in markdown


# --- the status comment --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "headline"),
    [
        (RunStatus.queued, "### ⏳ nofx has queued this request"),
        (RunStatus.running, "### 🔄 nofx is working on this"),
        (RunStatus.waiting, "### ✋ nofx is waiting for approval"),
        (RunStatus.succeeded, "### ✅ nofx is done"),
        (RunStatus.failed, "### ❌ nofx could not finish"),
        (RunStatus.cancelled, "### 🚫 nofx stopped"),
    ],
)
def test_each_status_has_its_headline_and_ends_with_the_marker(status: RunStatus, headline: str) -> None:
    text = comment(status)
    assert text.startswith(headline + "\n")
    assert text.endswith(f"\n<!-- nofx:run:{RUN_ID} -->")
    assert "> add a shopping cart" in text
    assert "Asked by @alice." in text
    assert f"[Details]({RUN_URL})" in text
    assert_safe(text)


def test_the_plan_is_a_checklist_with_states_and_durations() -> None:
    text = comment(RunStatus.running)
    assert "**Plan** (2 of 5 steps done)" in text
    assert "- [x] `generate` · write the code · done in 12.3 s" in text
    assert "- [x] `test` · run the tests · done in 4.0 s" in text
    assert "- [ ] `commit` · commit and push the changes · running for 30.0 s" in text
    assert "- [ ] `approve` · wait for approval · not started" in text


def test_skipped_steps_are_ticked_and_failed_ones_are_not() -> None:
    text = comment(RunStatus.failed)
    assert "- [ ] `commit` · commit and push the changes · failed after 3.0 s" in text
    assert "- [x] `approve` · wait for approval · skipped" in text


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "0.0 s"),
        (0.04, "0.0 s"),
        (12.34, "12.3 s"),
        (59.94, "59.9 s"),
        (59.96, "1 min"),
        (60, "1 min"),
        (125, "2 min 5 s"),
        (3599.4, "59 min 59 s"),
        (3600, "1 h"),
        (3725, "1 h 2 min"),
        (-5, "0.0 s"),
    ],
)
def test_durations(seconds: float, shown: str) -> None:
    assert format_duration(seconds) == shown


def test_a_running_step_counts_from_its_start_to_now() -> None:
    step = make_step(1, "generate", "codegen", StepStatus.running, started_at=T0)
    text = status_comment(make_run(), [step], git_mode="basic", run_url=None, now=T0 + timedelta(minutes=2, seconds=5))
    assert "running for 2 min 5 s" in text


def test_naive_timestamps_are_read_as_utc() -> None:
    step = make_step(1, "generate", "codegen", StepStatus.running, started_at=T0.replace(tzinfo=None))
    text = status_comment(make_run(), [step], git_mode="basic", run_url=None, now=T0 + timedelta(seconds=7))
    assert "running for 7.0 s" in text


def test_queued_behind_another_run_says_so() -> None:
    behind = make_run(id="aaaa1111", status=RunStatus.running)
    text = status_comment(make_run(RunStatus.queued), [], git_mode="basic", run_url=None, behind=behind)
    assert "Queued behind run `aaaa1111` — it starts when that run finishes." in text
    from_field = status_comment(
        make_run(RunStatus.queued, behind_run_id="bbbb2222"), [], git_mode="basic", run_url=None
    )
    assert "Queued behind run `bbbb2222`" in from_field


def test_waiting_tells_how_to_approve_or_reject_with_the_configured_prefix() -> None:
    text = comment(RunStatus.waiting, prefix="/bot")
    assert "Reply `/bot approve` to continue or `/bot reject [reason]` to stop" in text
    assert "buttons of the nofx check run" in text
    assert "`/nofx" not in text
    assert "before nofx goes on to open a pull request" in text


def test_several_waiting_approvals_ask_to_name_one() -> None:
    steps = [
        make_step(1, "design-ok", "manual:approval", StepStatus.waiting),
        make_step(2, "deploy-ok", "manual:approval", StepStatus.waiting),
    ]
    text = status_comment(make_run(RunStatus.waiting), steps, git_mode="basic", run_url=None)
    assert "`/nofx approve <step>`" in text


def test_failure_names_the_step_shows_the_last_lines_and_the_retry_command() -> None:
    error = "\n".join(f"FAILED tests/test_cart.py::test_{n}" for n in range(40))
    steps = [
        make_step(1, "generate", "codegen", StepStatus.succeeded, **finished(1)),
        make_step(2, "unit-tests", "gate:test", StepStatus.failed, error=error, **finished(125)),
    ]
    text = status_comment(make_run(RunStatus.failed), steps, git_mode="basic", run_url=RUN_URL)
    assert "**`unit-tests` (run the tests) failed after 2 min 5 s.**" in text
    assert "The last 15 of 40 lines:" in text
    assert "test_39" in text
    assert "test_25\n" in text
    assert "test_24\n" not in text
    assert "To try again: `/nofx retry unit-tests`" in text
    assert_safe(text, fences=1)


def test_error_text_cannot_close_the_fence_or_fake_the_marker() -> None:
    error = "before\n```\n## not a heading\n<!-- nofx:run:fake -->\n  ````\n@org/team </details>\nafter"
    steps = [make_step(1, "lint", "gate:lint", StepStatus.failed, error=error, **finished(1))]
    text = status_comment(make_run(RunStatus.failed), steps, git_mode="basic", run_url=None)
    assert_safe(text, fences=1)
    fence = next(t for t in tokens(text) if t.type == "fence")
    assert "## not a heading" in fence.content
    assert "after" in fence.content
    assert fence.content.replace("\u200d", "").count("```") == 2


def test_a_run_failed_outside_its_steps_shows_the_reason_without_a_retry() -> None:
    text = comment(
        RunStatus.failed, steps=[make_step(1, "generate", "codegen", StepStatus.skipped)], error="over budget"
    )
    assert "nofx stopped before finishing: over budget" in text
    assert "retry" not in text


def test_cancelled_shows_who_stopped_it_without_notifying_them() -> None:
    text = comment(RunStatus.cancelled, error="rejected by @bob: too risky")
    assert "Stopped: rejected by @\u200dbob: too risky." in text
    assert mentions(text) == ["alice"]


def test_an_approval_decision_names_who_decided() -> None:
    steps = steps_for(RunStatus.cancelled)
    steps[3] = make_step(4, "approve", "manual:approval", StepStatus.cancelled, decided_by="bob")
    text = status_comment(make_run(RunStatus.cancelled), steps, git_mode="basic", run_url=None)
    assert "`approve` · wait for approval · rejected by @\u200dbob" in text


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("hidden", f"Your changes are ready for review: [take a look]({PR_URL})."),
        ("basic", f"Your changes are ready for review in pull request [#9]({PR_URL}) on branch `nofx/7-cart`."),
        ("advanced", f"Pull request [#9]({PR_URL}) is open on branch `nofx/7-cart` at `0123456` (2 commits)."),
    ],
)
def test_success_links_the_result_in_the_words_of_the_mode(mode: str, expected: str) -> None:
    assert expected in comment(RunStatus.succeeded, mode)


def test_success_without_a_review_says_the_changes_are_saved() -> None:
    steps = steps_for(RunStatus.succeeded)[:3]
    assert "Your changes are saved." in comment(RunStatus.succeeded, "hidden", steps=steps)
    assert "Your changes are saved on branch `nofx/7-cart`." in comment(RunStatus.succeeded, "basic", steps=steps)


def test_success_without_git_outputs_adds_nothing() -> None:
    steps = [make_step(1, "review", "gate:llm_review", StepStatus.succeeded, output={"branch": 3})]
    text = status_comment(make_run(RunStatus.succeeded), steps, git_mode="basic", run_url=None)
    assert "saved" not in text
    assert "ready for review" not in text


def test_a_link_that_is_not_http_is_shown_not_linked() -> None:
    steps = [make_step(1, "pr", "git_pr", StepStatus.succeeded, output={"pull_request_url": "javascript:alert(1)"})]
    text = status_comment(make_run(RunStatus.succeeded), steps, git_mode="basic", run_url=None)
    assert "](javascript" not in text
    assert not [t for t in tokens(text) if t.type == "link_open"]


@pytest.mark.parametrize("status", list(RunStatus))
def test_hidden_mode_never_uses_git_words(status: RunStatus) -> None:
    run = make_run(status, error="cancelled by @bob" if status is RunStatus.cancelled else None)
    steps = steps_for(status)
    outputs = [
        status_comment(run, steps, git_mode="hidden", run_url=RUN_URL, now=T0),
        status_comment(run, steps, git_mode="hidden", run_url=None, now=T0),
        run_status_summary(run, steps, "hidden", RUN_URL, now=T0),
    ]
    for text in outputs:
        assert_hidden(text)
    for url in (RUN_URL, None):
        body = check_run(run, steps, git_mode="hidden", run_url=url)
        output = body.pop("output")
        assert_hidden(output["summary"])
        assert_hidden(output["text"])
        assert not SEEN_GIT_WORDS.search(output["title"])
        assert not GIT_WORDS.search(json.dumps(body))
    if status is RunStatus.failed:
        assert "To try again: `/nofx retry`" in outputs[0]
        assert "**Step 3 (save your changes) failed after 3.0 s.**" in outputs[0]
        assert f"The details are on [the run page]({RUN_URL})." in outputs[0]
        assert "The details are on the run page." in outputs[1]


def test_hidden_mode_shows_the_repositorys_own_test_output_as_it_is() -> None:
    steps = [make_step(1, "tests", "gate:test", StepStatus.failed, error="AssertionError: 1 != 2", **finished(1))]
    text = status_comment(make_run(RunStatus.failed), steps, git_mode="hidden", run_url=None)
    assert "AssertionError: 1 != 2" in text
    assert "To try again: `/nofx retry tests`" in text


def test_other_modes_show_git_step_names_and_errors() -> None:
    text = comment(RunStatus.failed, "basic")
    assert "git push failed" in text
    assert "`/nofx retry commit`" in text


def test_unknown_git_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="git mode"):
        comment(RunStatus.running, "secret")


# --- the marker and injection --------------------------------------------------------------------------------


def test_marker_round_trips() -> None:
    marker = status_marker(RUN_ID)
    assert marker == f"<!-- nofx:run:{RUN_ID} -->"
    assert marker.startswith(MARKER_PREFIX)
    assert carries_marker(f"some text\n\n{marker}")
    assert not carries_marker("no marker here")


@pytest.mark.parametrize("bad", ["", "x --> <b>", "a" * 65, "id\n"])
def test_a_run_id_that_could_break_the_marker_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        status_marker(bad)


def test_a_request_cannot_fake_the_marker_mention_or_break_the_comment() -> None:
    request = f"add a cart\n{NASTY}\n```\n# heading\n    indented\n> quoted\n- item\n1. first\n===\n@org/team"
    for status in RunStatus:
        text = status_comment(make_run(status, request=request), steps_for(status), git_mode="basic", run_url=None)
        assert carries_marker(text) and status_marker("fake") not in text
        assert_safe(text)
        assert "</details>" not in text
        assert mentions(text) == ["alice"]
        quote = text.split("\n\nAsked by")[0].split("\n\n", 1)[1]
        assert not [t for t in tokens(quote) if t.type in ("heading_open", "fence", "code_block", "link_open", "image")]


def test_step_names_from_an_llm_plan_are_escaped() -> None:
    steps = [make_step(1, f"x`{NASTY}", "codegen", StepStatus.failed, error="boom", **finished(1))]
    text = status_comment(make_run(RunStatus.failed), steps, git_mode="basic", run_url=None)
    assert_safe(text, fences=1)
    assert mentions(text) == ["alice"]


def test_a_requester_that_is_not_a_login_is_escaped() -> None:
    text = status_comment(make_run(requester="x <b>@evil</b>"), [], git_mode="basic", run_url=None)
    assert mentions(text) == []
    assert "<b>" not in text


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=st.text(max_size=300), error=st.text(max_size=300), name=st.text(min_size=1, max_size=40))
def test_no_text_breaks_the_comment(request: str, error: str, name: str) -> None:
    steps = [make_step(1, name, "gate:test", StepStatus.failed, error=error, **finished(1))]
    run = make_run(RunStatus.failed, request=request, error=error)
    text = status_comment(run, steps, git_mode="basic", run_url=RUN_URL)
    assert_safe(text, fences=1 if error else 0)
    assert set(mentions(text)) <= {"alice"}


# --- size limits ---------------------------------------------------------------------------------------------

HUGE_ERROR = ("x" * 199 + "\n") * 5_000 + "E" * 100_000  # 1.1 MB, ending in one very long line


def fifty_steps(status: RunStatus) -> list[Step]:
    steps = [
        make_step(n, f"step-{n:02d}-" + "n" * 80, "gate:test", StepStatus.succeeded, **finished(n))
        for n in range(1, 51)
    ]
    if status is RunStatus.failed:
        for n in range(40, 51):
            steps[n - 1] = make_step(n, f"broken-{n}", "gate:test", StepStatus.failed, error=HUGE_ERROR, **finished(1))
    if status is RunStatus.waiting:
        steps[-1] = make_step(50, "approve", "manual:approval", StepStatus.waiting)
    return steps


@pytest.mark.parametrize("status", list(RunStatus))
def test_the_comment_fits_githubs_limit(status: RunStatus) -> None:
    run = make_run(status, request="please " + "<&>`@" * 30_000, error=HUGE_ERROR)
    text = status_comment(run, fifty_steps(status), git_mode="advanced", run_url=RUN_URL)
    assert text_size(text) <= COMMENT_LIMIT
    assert len(text) <= 65_535
    assert text.endswith(status_marker(RUN_ID))
    assert carries_marker(text)
    assert "characters, middle cut" in text
    assert_safe(text)
    if status is RunStatus.failed:
        assert "Also failed: `broken-41`, `broken-42`, `broken-43`, `broken-44`, `broken-45` and 5 more." in text


def test_a_huge_error_keeps_its_start_and_end() -> None:
    steps = [make_step(1, "tests", "gate:test", StepStatus.failed, error="START " + "y" * 1_000_000 + " END")]
    text = status_comment(make_run(RunStatus.failed), steps, git_mode="basic", run_url=None)
    assert "START" in text
    assert "END" in text
    assert len(text) < 10_000


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("status", list(RunStatus))
@pytest.mark.parametrize("run_url", [RUN_URL, None])
def test_check_run_keeps_every_github_limit(status: RunStatus, mode: str, run_url: str | None) -> None:
    run = make_run(status, request="r" * 200_000, error=HUGE_ERROR, finished_at=T0 + timedelta(minutes=3))
    body = check_run(run, fifty_steps(status), git_mode=mode, run_url=run_url)
    output = body["output"]
    assert len(output["title"]) <= 255
    assert text_size(output["summary"]) <= 65_535
    assert text_size(output["text"]) <= 65_535
    assert len(body["actions"]) <= 3
    for action in body["actions"]:
        assert len(action["label"]) <= 20
        assert len(action["description"]) <= 40
        assert len(action["identifier"]) <= 20
    spec = openapi.load()
    assert spec.operation("PATCH", "/repos/{owner}/{repo}/check-runs/{check_run_id}").validate_body(body) == []
    created = {**body, "head_sha": "0123456789abcdef0123456789abcdef01234567"}
    assert spec.operation("POST", "/repos/{owner}/{repo}/check-runs").validate_body(created) == []


# --- the check run -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "state", "conclusion", "actions"),
    [
        (RunStatus.queued, "queued", None, ["cancel"]),
        (RunStatus.running, "in_progress", None, ["cancel"]),
        (RunStatus.waiting, "completed", "action_required", ["approve", "reject", "cancel"]),
        (RunStatus.succeeded, "completed", "success", []),
        (RunStatus.failed, "completed", "failure", []),
        (RunStatus.cancelled, "completed", "cancelled", []),
    ],
)
def test_check_run_state_and_buttons(status: RunStatus, state: str, conclusion: str | None, actions: list[str]) -> None:
    body = check_run(make_run(status), steps_for(status), git_mode="basic", run_url=RUN_URL)
    assert body["name"] == "nofx"
    assert body["external_id"] == RUN_ID
    assert body["details_url"] == RUN_URL
    assert body["status"] == state
    assert body.get("conclusion") == conclusion
    assert [action["identifier"] for action in body["actions"]] == actions


def test_waiting_without_a_run_page_stays_in_progress_with_its_buttons() -> None:
    body = check_run(make_run(RunStatus.waiting), steps_for(RunStatus.waiting), git_mode="basic", run_url=None)
    assert body["status"] == "in_progress"
    assert "conclusion" not in body
    assert "details_url" not in body
    assert [action["label"] for action in body["actions"]] == ["Approve", "Reject", "Cancel"]
    assert body["output"]["title"].startswith("Waiting for approval")


def test_check_run_times_are_iso_8601() -> None:
    run = make_run(RunStatus.succeeded, finished_at=T0 + timedelta(minutes=2))
    body = check_run(run, steps_for(RunStatus.succeeded), git_mode="basic", run_url=None)
    assert body["started_at"] == "2024-05-01T12:00:00Z"
    assert body["completed_at"] == "2024-05-01T12:02:00Z"
    running = check_run(make_run(started_at=None), [], git_mode="basic", run_url=None)
    assert "started_at" not in running
    assert "completed_at" not in running


def test_check_run_summary_has_the_plan_and_text_has_the_failed_output() -> None:
    steps = [
        make_step(1, "generate", "codegen", StepStatus.succeeded, **finished(1)),
        make_step(2, "tests", "gate:test", StepStatus.failed, error="E assert 1 == 2\n```\nbye", **finished(1)),
    ]
    body = check_run(make_run(RunStatus.failed), steps, git_mode="basic", run_url=RUN_URL, prefix="/bot")
    output = body["output"]
    assert output["title"] == "Failed at step tests (run the tests)"
    assert "- [x] `generate` · write the code · done in 1.0 s" in output["summary"]
    assert "- [ ] `tests` · run the tests · failed after 1.0 s" in output["summary"]
    assert "`/bot retry tests`" in output["summary"]
    assert "E assert 1 == 2" not in output["summary"]
    assert "E assert 1 == 2" in output["text"]
    assert len([t for t in tokens(output["text"]) if t.type == "fence"]) == 1


def test_check_run_text_is_replaced_once_nothing_fails() -> None:
    body = check_run(make_run(), steps_for(RunStatus.running), git_mode="basic", run_url=None)
    assert body["output"]["text"] == "No step has failed."


# --- the other replies -----------------------------------------------------------------------------------------


def plan() -> Plan:
    return Plan(
        goal="Add a shopping cart with tests",
        steps=(
            StepSpec("generate", "codegen"),
            StepSpec("test", "gate:test", depends_on=("generate",)),
            StepSpec("approve", "manual:approval", depends_on=("test",)),
            StepSpec("open-pr", "git_pr", depends_on=("approve", "test")),
        ),
    )


def test_plan_comment_lists_the_steps_and_runs_nothing() -> None:
    text = plan_comment(plan(), request="add a cart", git_mode="basic", prefix="/bot")
    assert "**Goal:** Add a shopping cart with tests" in text
    assert "1. `generate` · write the code\n" in text
    assert "2. `test` · run the tests · after `generate`" in text
    assert "3. `approve` · wait for approval · after `test` · ✋ needs approval" in text
    assert "4. `open-pr` · open a pull request · after `approve` and `test`" in text
    assert "Needs approval: `approve`. The run stops there until someone replies `/bot approve`." in text
    assert text.endswith("Nothing has run. Reply `/bot add a cart` to run it.")


def test_plan_comment_in_hidden_mode() -> None:
    text = plan_comment(plan(), request="add a cart", git_mode="hidden", prefix="/nofx")
    assert "4. step 4 · get your changes ready for review · after `approve` and `test`" in text
    assert_hidden(text)


def test_plan_comment_with_a_long_request_shows_a_placeholder() -> None:
    text = plan_comment(plan(), request="a\n" * 500, git_mode="advanced", prefix="/nofx")
    assert "1. `generate` · write the code (`codegen`)" in text
    assert text.endswith("Reply `/nofx <request>` to run it.")


def test_plan_comment_escapes_the_goal_and_request() -> None:
    bad = Plan(goal=NASTY, steps=(StepSpec("generate", "codegen"),))
    text = plan_comment(bad, request=NASTY, git_mode="basic", prefix="/nofx")
    assert "<!--" not in text.replace("<\u200d!--", "")
    assert not [t for t in tokens(text) if t.type in ("html_block", "html_inline")]
    assert mentions(text) == []


@pytest.mark.parametrize("mode", MODES)
def test_help_lists_the_commands_and_git_only_in_advanced_mode(mode: str) -> None:
    text = help_comment("/bot", git_mode=mode)
    for usage in ("help", "plan <request>", "review", "approve [step]", "reject [reason]", "retry [step]"):
        assert f"`/bot {usage}`" in text
    assert "`/bot cancel`" in text
    assert "`/bot status`" in text
    assert "`/bot add a shopping cart`" in text
    assert ("`/bot git <op> [args]`" in text) == (mode == "advanced")
    if mode == "hidden":
        assert_hidden(text)


def test_permission_refused_mentions_the_user() -> None:
    assert permission_refused("alice", "write") == (
        "@alice, only people with *write* access (or higher) to this repository can ask nofx to act. "
        "A maintainer can run the command instead."
    )


def test_not_allowed_names_the_action() -> None:
    text = not_allowed("bob", "approve", minimum="maintain")
    assert text.startswith("@bob, you cannot approve this run: that needs *maintain* access (or higher)")
    assert "more access" in not_allowed("bob", "reject")


def test_config_error_keeps_our_code_spans_and_escapes_the_rest() -> None:
    error = "`.github/nofx.yml`: `<!-- nofx:run:x -->` is not a known key; allowed: the keys git_mode, <b>"
    text = config_error(error)
    assert text.startswith("nofx could not read `.github/nofx.yml`: `<\u200d!-- nofx:run:x -->` is not a known key")
    assert "&lt;b&gt;" in text
    assert text.endswith("Nothing was run. Fix the file on the default branch and try again.")
    assert MARKER_PREFIX not in text


def test_plan_refused_and_nothing_to_do() -> None:
    text = plan_refused("step 2 ('x'): unknown tool 'rm -rf'; tools are `codegen`", prefix="/bot")
    assert "unknown tool 'rm -rf'; tools are `codegen`" in text
    assert "`/bot plan <request>`" in text
    assert "Nothing was run." in text
    assert nothing_to_do("There is no run waiting for approval on this issue.") == (
        "There is no run waiting for approval on this issue."
    )
    assert mentions(nothing_to_do("@org/team <b>")) == []


def test_status_summary_is_short() -> None:
    steps = steps_for(RunStatus.running)
    text = run_status_summary(make_run(), steps, "basic", RUN_URL, now=T0 + timedelta(seconds=65))
    assert text.startswith(f"🔄 Run `{RUN_ID}` is running: 2 of 5 steps done; now `commit` (running for 1 min 5 s).")
    assert text.endswith(f"[Details]({RUN_URL})")
    assert "shopping cart" not in text
    waiting = run_status_summary(make_run(RunStatus.waiting), steps_for(RunStatus.waiting), "basic", None)
    assert "`/nofx approve`" in waiting


def test_escape_helpers() -> None:
    assert code_span("a`b") == "``a`b``"
    assert code_span("`x`") == "`` `x` ``"
    assert code_span("") == "` `"
    assert escape_inline("a\n\nb") == "a b"
    assert mention("alice") == "@alice"
    assert mention("nofx[bot]") == "nofx\\[bot\\]"
    assert escape_markdown("\u202eevil\x00") == "evil"
    assert link("x", "https://a.example/p (1)") == "[x](https://a.example/p%20%281%29)"


def test_plain_string_statuses_render_like_the_enums() -> None:
    """Rows read back without enum conversion must not change the text."""
    steps = [make_step(1, "tests", "gate:test", "failed", error="boom", **finished(1))]  # type: ignore[arg-type]
    text = status_comment(make_run("failed"), steps, git_mode="basic", run_url=None)  # type: ignore[arg-type]
    expected = status_comment(
        make_run(RunStatus.failed),
        [make_step(1, "tests", "gate:test", StepStatus.failed, error="boom", **finished(1))],
        git_mode="basic",
        run_url=None,
    )
    assert text == expected
    assert check_run(make_run("running"), [], git_mode="basic", run_url=None)["status"] == "in_progress"  # type: ignore[arg-type]
