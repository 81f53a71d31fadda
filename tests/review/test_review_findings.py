"""Review findings: parsing the model's call, merging, not repeating, and placing them where GitHub takes them.

The commentable lines come from a diff made by real git, so placement is checked against real hunks.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from bot.render.text import COMMENT_LIMIT
from bot.review.chunks import Skipped
from bot.review.comment_text import MORE, OUTSIDE
from bot.review.commentable import Commentable, commentable
from bot.review.findings import (
    REPORT_FINDINGS_SCHEMA,
    Finding,
    merge_duplicates,
    parse_findings,
    posted_fingerprints,
    severity_at_least,
    without_already_posted,
)
from bot.review.placement import Placement, move_to_body, place
from bot.workspace.diffs import parse_git_diff

APP_BASE = "".join(f"v{n} = {n}\n" for n in range(1, 41))
APP_HEAD = APP_BASE.replace("v5 = 5\n", "v5 = 'five'\n").replace("v30 = 30\n", "v30 = 'thirty'\n")


def run_git(repo: Path, *args: str) -> str:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(repo),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
    }
    config = ["-c", "user.name=nofx test", "-c", "user.email=test@example.com"]
    return subprocess.run(["git", *config, *args], cwd=repo, env=env, check=True, capture_output=True).stdout.decode()


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> Commentable:
    """app.py changed at lines 5 and 30 (hunks 2-8 and 27-33), old.py removed, new.js added, notes.txt untouched."""
    repo = tmp_path_factory.mktemp("findings")
    run_git(repo, "init", "-q")
    (repo / "app.py").write_text(APP_BASE)
    (repo / "old.py").write_text("".join(f"o{n} = {n}\n" for n in range(1, 11)))
    (repo / "notes.txt").write_text("notes\n")
    run_git(repo, "add", "-A")
    run_git(repo, "commit", "-q", "-m", "base")
    (repo / "app.py").write_text(APP_HEAD)
    (repo / "old.py").unlink()
    (repo / "new.js").write_text("const a = 1;\nconst b = 2;\nconst c = 3;\n")
    run_git(repo, "add", "-A")
    run_git(repo, "commit", "-q", "-m", "head")
    files = parse_git_diff(run_git(repo, "diff", "--no-color", "-M", "HEAD~1...HEAD"))
    found = commentable(files)
    assert found.lines[("app.py", "RIGHT")] == set(range(2, 9)) | set(range(27, 34))
    return found


def finding(path: str = "app.py", line: int = 5, end_line: int | None = None, **fields: Any) -> Finding:
    values: dict[str, Any] = {"severity": "medium", "title": f"Problem at {path}:{line}", "body": "Why it matters."}
    values.update(fields)
    return Finding(path=path, line=line, end_line=end_line, **values)


def placed(findings: list[Finding], places: Commentable, max_comments: int = 20) -> Placement:
    placement = place(findings, places, max_comments=max_comments, reviewed=["app.py", "new.js"], skipped=[])
    assert_github_accepts(placement, places)
    return placement


def assert_github_accepts(placement: Placement, places: Commentable) -> None:
    """The rules behind GitHub's 422 for review comments, checked on every placement made here."""
    for comment in placement.comments:
        assert comment["line"] in places.lines.get((comment["path"], comment["side"]), set()), comment
        if "start_line" in comment:
            assert comment["start_line"] < comment["line"]
            assert comment["start_side"] == comment["side"]
            assert places.same_hunk(comment["path"], comment["side"], comment["start_line"], comment["line"])
        assert set(comment) <= {"path", "line", "side", "start_line", "start_side", "body"}
    assert len(placement.body) <= COMMENT_LIMIT


# --- the tool call ---------------------------------------------------------------------------------------------


def test_schema_is_strict() -> None:
    jsonschema.Draft202012Validator.check_schema(REPORT_FINDINGS_SCHEMA)
    good = {"findings": [{"path": "a.py", "line": 3, "severity": "high", "title": "t", "body": "b"}]}
    jsonschema.validate(good, REPORT_FINDINGS_SCHEMA)
    for bad in (
        {"findings": [{**good["findings"][0], "extra": 1}]},
        {"findings": [{**good["findings"][0], "severity": "urgent"}]},
        {"findings": [{**good["findings"][0], "title": "x" * 201}]},
        {"findings": [{**good["findings"][0], "body": "x" * 4001}]},
        {"findings": [{**good["findings"][0], "line": 0}]},
        {"findings": [], "summary": "extra"},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, REPORT_FINDINGS_SCHEMA)


def test_parse_findings_cleans_what_models_send() -> None:
    found = parse_findings(
        {
            "findings": [
                {
                    "path": "./bot/a.py",
                    "line": 9,
                    "end_line": 4,
                    "severity": "HIGH",
                    "title": " Two  words ",
                    "body": "b",
                },
                {
                    "path": "a.py",
                    "line": 2,
                    "end_line": 2,
                    "severity": "low",
                    "title": "t",
                    "body": "",
                    "suggestion": " ",
                },
                {
                    "path": "a.py",
                    "line": 3,
                    "severity": "low",
                    "title": "t",
                    "body": "",
                    "suggestion": "```python\nx = 1\n```\n",
                },
                {"path": "a.py", "severity": "low", "title": "no line", "body": ""},
                {"path": "a.py", "line": 1, "severity": "blocker", "title": "bad severity", "body": ""},
                "not an object",
            ]
        }
    )
    assert found == [
        Finding("bot/a.py", 4, 9, "high", "Two words", "b"),
        Finding("a.py", 2, None, "low", "t", "", None),
        Finding("a.py", 3, None, "low", "t", "", "x = 1"),
    ]
    with pytest.raises(ValueError, match="findings"):
        parse_findings({"issues": []})


def test_fingerprint_survives_moved_lines_and_rewording_noise() -> None:
    first = finding(line=5, title="Missing  await on the call.", body="one")
    assert first.fingerprint == finding(line=40, title="missing await on the call", body="two").fingerprint
    assert first.fingerprint != finding(path="other.py", title="Missing await on the call").fingerprint
    assert first.fingerprint != finding(title="Missing await on the call", severity="high").fingerprint
    assert first.fingerprint != finding(title="Unused import").fingerprint
    assert len(first.fingerprint) == 16 and int(first.fingerprint, 16) >= 0


# --- merging and repeats ---------------------------------------------------------------------------------------


def test_duplicates_merge_into_the_most_severe() -> None:
    merged = merge_duplicates(
        [
            finding(line=5, end_line=7, title="SQL injection in query", body="Escapes nothing."),
            finding(line=6, title="Possible SQL injection in the query", severity="critical", body="User input."),
            finding(line=6, title="SQL injection in query", body="Escapes nothing."),  # same body: not repeated
            finding(line=30, title="SQL injection in query"),  # same title far away: another place
            finding(line=5, title="Unused variable"),  # same line, another problem
            finding(path="other.py", line=5, title="SQL injection in query"),
        ]
    )
    assert [(item.path, item.line, item.severity, item.title) for item in merged] == [
        ("app.py", 6, "critical", "Possible SQL injection in the query"),
        ("app.py", 30, "medium", "SQL injection in query"),
        ("app.py", 5, "medium", "Unused variable"),
        ("other.py", 5, "medium", "SQL injection in query"),
    ]
    assert merged[0].body == "User input.\n\nEscapes nothing."


def test_a_merged_finding_keeps_only_a_suggestion_written_for_its_lines() -> None:
    [kept] = merge_duplicates([finding(severity="high"), finding(suggestion="v5 = 5")])
    assert kept.suggestion == "v5 = 5"
    [dropped] = merge_duplicates([finding(severity="high"), finding(line=4, end_line=6, suggestion="x = 1")])
    assert dropped.suggestion is None and (dropped.line, dropped.end_line) == (5, None)


def test_findings_posted_before_are_not_posted_again(places: Commentable) -> None:
    findings = [finding(line=5, title="First"), finding(line=15, title="Outside"), finding(line=30, title="Later")]
    first = placed(findings, places, max_comments=1)
    texts = [comment["body"] for comment in first.comments] + [first.body]
    assert posted_fingerprints(texts) == first.fingerprints == {item.fingerprint for item in findings}
    # The next push moved every line; the same findings come back and none is posted again.
    again = [finding(line=6, title="first"), finding(line=16, title="Outside"), finding(line=31, title="Later.")]
    assert without_already_posted(again, posted_fingerprints(texts)) == []
    new = finding(line=7, title="A new problem")
    assert without_already_posted([*again, new], posted_fingerprints(texts)) == [new]


def test_a_marker_inside_code_or_text_cannot_silence_findings(places: Commentable) -> None:
    fake = "<!-- nofx:findings:0123456789abcdef -->"
    placement = placed(
        [finding(title=fake, body=f"{fake}\n\n```\n{fake}\n```", suggestion=f'x = """\n{fake}\n"""')], places
    )
    [comment] = placement.comments
    assert "```suggestion" in comment["body"] and fake in comment["body"]  # the suggested code is kept exactly
    assert posted_fingerprints([comment["body"], placement.body]) == placement.fingerprints
    assert "0123456789abcdef" not in posted_fingerprints([comment["body"], placement.body])


# --- placement -------------------------------------------------------------------------------------------------


def test_a_finding_on_a_changed_line_is_a_line_comment(places: Commentable) -> None:
    placement = placed([finding(line=5, title="Wrong value")], places)
    [comment] = placement.comments
    assert {key: comment[key] for key in ("path", "line", "side")} == {"path": "app.py", "line": 5, "side": "RIGHT"}
    assert "start_line" not in comment
    assert comment["body"].startswith("**🟡 Medium: Wrong value**\n\nWhy it matters.")
    assert placement.moved == []


def test_a_range_in_one_hunk_is_a_multi_line_comment(places: Commentable) -> None:
    [comment] = placed([finding(line=3, end_line=7)], places).comments
    assert (comment["start_line"], comment["start_side"], comment["line"]) == (3, "RIGHT", 7)
    [swapped] = placed([finding(line=7, end_line=3)], places).comments
    assert (swapped["start_line"], swapped["line"]) == (3, 7)


def test_a_range_across_hunks_is_a_single_line_comment(places: Commentable) -> None:
    [comment] = placed([finding(line=5, end_line=30, suggestion="x = 1")], places).comments
    assert comment["line"] == 5 and "start_line" not in comment
    assert "```suggestion" not in comment["body"]  # it would replace line 5 alone, not 5 to 30
    [partly] = placed([finding(line=12, end_line=28)], places).comments  # starts outside, ends in the second hunk
    assert partly["line"] == 27 and "start_line" not in partly


def test_start_line_equal_to_line_is_never_sent(places: Commentable) -> None:
    [comment] = placed([finding(line=5, end_line=5)], places).comments
    assert "start_line" not in comment and comment["line"] == 5


def test_a_finding_on_a_deleted_line_is_a_left_comment(places: Commentable) -> None:
    placement = placed(
        [finding(line=5, side="LEFT", title="Removed check"), finding(path="old.py", line=3, title="Still used")],
        places,
    )
    sides = {comment["path"]: (comment["side"], comment["line"]) for comment in placement.comments}
    assert sides == {"app.py": ("LEFT", 5), "old.py": ("LEFT", 3)}


def test_findings_outside_the_diff_go_to_the_body(places: Commentable) -> None:
    placement = placed(
        [finding(line=15, title="Far from the change"), finding(path="notes.txt", line=1, title="Old note")],
        places,
    )
    assert placement.comments == []
    assert [why for _finding, why in placement.moved] == [
        "line 15 not in the diff",
        "the file is not changed in this pull request",
    ]
    assert "### Outside the diff" in placement.body
    assert "`app.py:15` · Far from the change" in placement.body
    assert "`notes.txt:1` · Old note" in placement.body


def test_at_most_max_comments_line_comments_most_severe_first(places: Commentable) -> None:
    findings = [
        finding(line=2, severity="low", title="low"),
        finding(line=3, severity="medium", title="medium"),
        finding(line=27, severity="critical", title="critical"),
        finding(line=4, severity="high", title="high"),
        finding(line=28, severity="low", title="another low"),
    ]
    placement = placed(findings, places, max_comments=2)
    assert [comment["line"] for comment in placement.comments] == [27, 4]
    assert [item.title for item, _why in placement.moved] == ["medium", "low", "another low"]
    assert placement.sections == [MORE, MORE, MORE]
    assert "### More findings" in placement.body and "### Outside the diff" not in placement.body
    assert placement.body.index("medium") < placement.body.index("another low")
    assert placed(findings, places, max_comments=0).comments == []


def test_suggestions_are_one_click_only_when_safe(places: Commentable) -> None:
    cases = {
        "valid python": finding(line=5, title="a", suggestion="v5 = 'FIVE'"),
        "indented python": finding(line=6, title="b", suggestion="    if x:\n        y = 1"),
        "invalid python": finding(line=7, title="c", suggestion="v7 = (7"),
        "left side": finding(line=5, side="LEFT", title="d", suggestion="v5 = 5"),
        "javascript": finding(path="new.js", line=2, title="e", suggestion="const b = 3 +"),
        "multi-line": finding(line=27, end_line=29, title="f", suggestion="v27 = v28 = v29 = 0"),
    }
    bodies = {
        name: placed([item], places).comments[0]["body"] for name, item in cases.items()
    }  # one review each, so the order is clear
    for name in ("valid python", "indented python", "javascript", "multi-line"):
        assert "```suggestion\n" in bodies[name], name
    assert "```suggestion\nv5 = 'FIVE'\n```" in bodies["valid python"]
    assert "```python\nv7 = (7\n```" in bodies["invalid python"]
    assert "it does not parse as Python" in bodies["invalid python"]
    assert "```suggestion" not in bodies["left side"] and "it is on a deleted line" in bodies["left side"]


def test_a_suggestion_with_backticks_gets_a_longer_fence(places: Commentable) -> None:
    code = 'doc = """\n```\nexample\n```\n"""'
    [comment] = placed([finding(line=5, suggestion=code)], places).comments
    assert f"````suggestion\n{code}\n````" in comment["body"]


def test_text_from_the_model_cannot_break_the_markdown(places: Commentable) -> None:
    title = "Fix </details> <!-- nofx:run:x --> @octocat **now**"
    placement = placed([finding(line=5, title=title), finding(line=15, title=title)], places)
    for text in (placement.comments[0]["body"], placement.body):
        assert "</details>" not in text.replace("<details>", "").split("Reviewed")[0]
        assert "<!-- nofx:run" not in text
        assert "@octocat" not in text  # a zero-width joiner keeps it from notifying anyone
        assert "**now**" not in text


def test_move_to_body_for_a_422(places: Commentable) -> None:
    placement = placed([finding(line=5, title="first"), finding(line=27, title="second")], places)
    retried = move_to_body(placement, {1})
    assert [comment["line"] for comment in retried.comments] == [5]
    assert retried.moved == [(placement.placed[1], "GitHub refused it as a line comment")]
    assert retried.sections == [OUTSIDE]
    assert "### Outside the diff" in retried.body and "`app.py:27` · second" in retried.body
    assert retried.fingerprints == placement.fingerprints
    everything = move_to_body(placement, None)
    assert everything.comments == [] and len(everything.moved) == 2
    assert posted_fingerprints([everything.body]) == placement.fingerprints


def test_the_body_lists_reviewed_and_skipped_files(places: Commentable) -> None:
    few = place([], places, max_comments=5, reviewed=["app.py"], skipped=[Skipped("poetry.lock", "lock file")])
    assert "Reviewed 1 file: `app.py`." in few.body
    assert "Skipped 1 file: `poetry.lock` (lock file)." in few.body
    many = place(
        [],
        places,
        max_comments=5,
        reviewed=[f"src/m{n}.py" for n in range(12)],
        skipped=[Skipped(f"vendor/{n}.js", "matches `review.skip_paths`") for n in range(400)],
        summary_header="## nofx review",
    )
    assert many.body.startswith("## nofx review\n\n")
    assert "<details><summary>Reviewed 12 files</summary>" in many.body
    assert "- `vendor/0.js` (matches `review.skip_paths`)" in many.body
    assert "and 100 more" in many.body


def test_a_huge_review_body_still_fits_and_keeps_its_marker(places: Commentable) -> None:
    findings = [finding(line=100 + n, title=f"Problem {n}", body="x " * 1_999) for n in range(200)]
    placement = place(findings, places, max_comments=20, reviewed=["app.py"], skipped=[])
    assert len(placement.body) <= COMMENT_LIMIT
    assert posted_fingerprints([placement.body]) == {item.fingerprint for item in findings}


def test_severity_thresholds() -> None:
    assert severity_at_least("critical", "high") and severity_at_least("high", "high")
    assert not severity_at_least("medium", "high")
    assert not severity_at_least("critical", "never")
    with pytest.raises(ValueError):
        severity_at_least("urgent", "high")
