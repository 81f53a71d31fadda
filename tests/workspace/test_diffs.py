"""THE diff parser (bot/workspace/diffs.py) on diffs made by real git in real repositories, and GitHub's `patch` fields."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.review.commentable import commentable
from bot.workspace.diffs import FileDiff, Hunk, from_github_files, parse_git_diff
from tests.support.diff_repos import (
    BASE,
    HEAD,
    QUOTED_PATH,
    UNICODE_PATH,
    added_lines,
    git_diff,
    make_repo,
    numstat,
    run_git,
    show,
)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repo(tmp_path_factory.mktemp("diffs") / "repo", BASE, HEAD)


@pytest.fixture(scope="module")
def files(repo: Path) -> dict[str, FileDiff]:
    return {diff.path: diff for diff in parse_git_diff(git_diff(repo))}


def test_every_kind_of_change_is_read_with_its_status(files: dict[str, FileDiff]) -> None:
    statuses = {path: (diff.status, diff.old_path, diff.binary) for path, diff in files.items()}
    assert statuses == {
        "src/app.py": ("modified", None, False),
        "src/gone.py": ("removed", None, False),
        "docs/new name.md": ("renamed", "docs/old name.md", False),
        "src/helpers.py": ("renamed", "src/util.py", False),
        "crlf.txt": ("modified", None, False),
        "nonl.txt": ("modified", None, False),
        "data.bin": ("modified", None, True),
        "tricky.txt": ("modified", None, False),
        UNICODE_PATH: ("modified", None, False),
        QUOTED_PATH: ("modified", None, False),
        "src/new_module.py": ("added", None, False),
        "empty.txt": ("added", None, False),
        "new empty.txt": ("added", None, False),
        "tool.sh": ("modified", None, False),
    }


def test_counts_match_git_numstat(repo: Path, files: dict[str, FileDiff]) -> None:
    expected = numstat(repo)
    assert set(expected) == set(files)
    for path, (old, added, deleted) in expected.items():
        diff = files[path]
        assert diff.old_path == old, path
        if added is None:
            assert diff.binary and not diff.hunks, path
        else:
            assert (diff.additions, diff.deletions) == (added, deleted), path


def test_quoted_and_unquoted_paths_read_the_same(repo: Path) -> None:
    quoted = [diff.path for diff in parse_git_diff(git_diff(repo))]
    raw = [diff.path for diff in parse_git_diff(git_diff(repo, "-c", "core.quotepath=false"))]
    assert quoted == raw
    assert UNICODE_PATH in quoted and QUOTED_PATH in quoted and "docs/new name.md" in quoted


def test_every_numbered_line_is_the_line_in_the_file(repo: Path, files: dict[str, FileDiff]) -> None:
    """The strongest check on numbering: each hunk line is exactly the file's line at that number, both sides."""
    checked = 0
    for diff in files.values():
        if diff.binary:
            continue
        new = show(repo, "HEAD", diff.path) if diff.status != "removed" else []
        old = show(repo, "base", diff.old_path or diff.path) if diff.status != "added" else []
        for hunk in diff.hunks:
            old_number, new_number = hunk.old_start, hunk.new_start
            for line in hunk.lines:
                op, content = line[:1], line[1:]
                if op in (" ", "-"):
                    assert old[old_number - 1] == content, (diff.path, "old", old_number)
                    old_number += 1
                if op in (" ", "+"):
                    assert new[new_number - 1] == content, (diff.path, "new", new_number)
                    new_number += 1
                checked += 1
    assert checked > 60


def test_crlf_and_missing_newline_lines_keep_their_form(files: dict[str, FileDiff]) -> None:
    assert "+THREE\r" in files["crlf.txt"].hunks[0].lines
    nonl = files["nonl.txt"].hunks[0].lines
    assert nonl.count("\\ No newline at end of file") == 2
    assert added_lines([files["nonl.txt"]]) == {"nonl.txt": {3, 4}}


def test_content_that_looks_like_headers_is_content(files: dict[str, FileDiff]) -> None:
    tricky = files["tricky.txt"]
    lines = [line for hunk in tricky.hunks for line in hunk.lines]
    assert "--- a dashed line" in lines and "+diff --git a/x b/x" in lines and "+--- a/x" in lines
    assert " form\x0cfeed and\u2028separator" in lines
    assert (tricky.additions, tricky.deletions) == (2, 2)


def test_patch_round_trips(repo: Path, files: dict[str, FileDiff]) -> None:
    raw = git_diff(repo)
    for diff in files.values():
        if diff.hunks:
            assert diff.patch() in raw
            assert from_github_files([{"filename": diff.path, "patch": diff.patch()}])[0].hunks == diff.hunks


def test_binary_patch_and_plain_unified_diffs(repo: Path) -> None:
    with_binary = run_git(repo, "diff", "--no-color", "--binary", "-M", "base...HEAD")
    parsed = {diff.path: diff for diff in parse_git_diff(with_binary)}
    assert parsed["data.bin"].binary and parsed["data.bin"].hunks == ()
    without = {diff.path: diff for diff in parse_git_diff(git_diff(repo))}
    assert {path: diff.hunks for path, diff in parsed.items()} == {path: diff.hunks for path, diff in without.items()}
    plain = "--- a/x.py\t2024-01-01\n+++ b/x.py\t2024-01-02\n@@ -1 +1 @@\n-a\n+b\n"
    [diff] = parse_git_diff(plain)
    assert (diff.path, diff.status, diff.hunks[0].right_lines(), diff.hunks[0].left_lines()) == (
        "x.py",
        "modified",
        {1},
        {1},
    )


def test_github_files_read_like_the_git_diff(repo: Path, files: dict[str, FileDiff]) -> None:
    """Entries shaped like GET /pulls/{n}/files, with the patch text cut straight out of git's output."""
    raw = git_diff(repo)
    blocks = [block for block in re.split(r"^(?=diff --git )", raw, flags=re.MULTILINE) if block]
    entries = []
    for block, diff in zip(blocks, parse_git_diff(raw), strict=True):
        entry: dict[str, object] = {
            "filename": diff.path,
            "status": diff.status,
            "additions": diff.additions,
            "deletions": diff.deletions,
        }
        if diff.old_path:
            entry["previous_filename"] = diff.old_path
        at = block.find("\n@@ ")
        if at != -1:
            entry["patch"] = block[at + 1 :].rstrip("\n")  # GitHub's patch: the hunks, no final newline
        entries.append(entry)
    from_github = {diff.path: diff for diff in from_github_files(entries)}
    assert commentable(from_github.values()) == commentable(files.values())
    for path, diff in files.items():
        other = from_github[path]
        assert (other.status, other.old_path, other.hunks, other.additions, other.deletions) == (
            diff.status,
            diff.old_path,
            diff.hunks,
            diff.additions,
            diff.deletions,
        ), path
    assert from_github["data.bin"].binary
    assert not from_github["docs/new name.md"].binary  # a rename without changes has no patch either


def test_hunk_counts_default_to_one() -> None:
    [diff] = from_github_files([{"filename": "a.py", "status": "modified", "patch": "@@ -3 +3 @@\n-x\n+y"}])
    assert diff.hunks[0] == Hunk(3, 1, 3, 1, "@@ -3 +3 @@", ("-x", "+y"))
