"""The review's view of a diff: commentable lines, what is skipped and in what order files are read, the diff budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.repo_config import ReviewConfig
from bot.review.chunks import Skipped, estimate_tokens, plan_chunks
from bot.review.commentable import commentable
from bot.workspace.diffs import FileDiff, from_github_files, parse_git_diff
from tests.support.diff_repos import BASE, HEAD, UNICODE_PATH, added_lines, git_diff, make_repo, show


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repo(tmp_path_factory.mktemp("diffs") / "repo", BASE, HEAD)


@pytest.fixture(scope="module")
def files(repo: Path) -> dict[str, FileDiff]:
    return {diff.path: diff for diff in parse_git_diff(git_diff(repo))}


def test_commentable_lines_of_a_file_with_three_hunks(files: dict[str, FileDiff]) -> None:
    # Edits: old line 5 changed, old line 18 deleted, old line 35 changed (new line 34); three lines of context.
    app = files["src/app.py"]
    assert [(h.old_start, h.old_count, h.new_start, h.new_count) for h in app.hunks] == [
        (2, 7, 2, 7),
        (15, 7, 15, 6),
        (32, 7, 31, 7),
    ]
    places = commentable(files.values())
    assert places.lines[("src/app.py", "RIGHT")] == set(range(2, 9)) | set(range(15, 21)) | set(range(31, 38))
    assert places.lines[("src/app.py", "LEFT")] == set(range(2, 9)) | set(range(15, 22)) | set(range(32, 39))
    assert added_lines([app]) == {"src/app.py": {5, 34}}
    assert 34 in places.lines[("src/app.py", "RIGHT")]
    assert 12 not in places.lines[("src/app.py", "RIGHT")]
    assert 18 in places.lines[("src/app.py", "LEFT")]  # the deleted line
    assert places.same_hunk("src/app.py", "RIGHT", 31, 37)
    assert not places.same_hunk("src/app.py", "RIGHT", 5, 34)


def test_commentable_lines_of_the_other_kinds(files: dict[str, FileDiff]) -> None:
    places = commentable(files.values())
    assert places.lines[("src/gone.py", "LEFT")] == set(range(1, 9))
    assert ("src/gone.py", "RIGHT") not in places.lines
    assert places.lines[("src/new_module.py", "RIGHT")] == {1, 2}
    assert ("src/new_module.py", "LEFT") not in places.lines
    assert places.lines[("src/helpers.py", "RIGHT")] == set(range(17, 22))  # `return 10` is line 20, `# end` 21
    assert places.lines[("crlf.txt", "RIGHT")] == {1, 2, 3, 4, 5}
    assert places.lines[("nonl.txt", "RIGHT")] == {1, 2, 3, 4}
    assert places.lines[("nonl.txt", "LEFT")] == {1, 2, 3}
    assert places.lines[(UNICODE_PATH, "RIGHT")] == set(range(1, 6))
    for path in ("docs/new name.md", "data.bin", "empty.txt", "new empty.txt", "tool.sh", "docs/old name.md"):
        assert (path, "RIGHT") not in places.lines and (path, "LEFT") not in places.lines


def test_github_file_without_patch_but_with_changes_is_not_silently_empty() -> None:
    [huge] = from_github_files([{"filename": "big.py", "status": "modified", "additions": 9000, "deletions": 1}])
    assert huge.no_patch and not huge.binary
    _chunks, skipped = plan_chunks([huge], skip=lambda path: False, max_tokens_per_chunk=10_000)
    assert skipped == [Skipped("big.py", "GitHub sent no diff for it (too large)")]


# --- skipping and ordering -------------------------------------------------------------------------------------


def test_skipped_files_say_why(files: dict[str, FileDiff]) -> None:
    generated = from_github_files(
        [
            {"filename": "api/models_pb2.py", "status": "added", "patch": "@@ -0,0 +1,2 @@\n+# @generated\n+x = 1"},
            {"filename": "poetry.lock", "status": "modified", "patch": "@@ -1 +1 @@\n-a\n+b"},
            {
                "filename": "gen.go",
                "status": "modified",
                "patch": "@@ -1,2 +1,2 @@\n // Code generated. DO NOT EDIT.\n-a\n+b",
            },
            {"filename": "late.py", "status": "modified", "patch": "@@ -40,2 +40,2 @@\n # DO NOT EDIT\n-a\n+b"},
        ]
    )
    chunks, skipped = plan_chunks([*files.values(), *generated], skip=ReviewConfig().skips, max_tokens_per_chunk=20_000)
    assert {item.path: item.reason for item in skipped} == {
        "src/gone.py": "removed file",
        "docs/new name.md": "renamed without changes",
        "data.bin": "binary file",
        "empty.txt": "no changed lines",
        "new empty.txt": "no changed lines",
        "tool.sh": "no changed lines",
        "api/models_pb2.py": "generated (header says @generated)",
        "poetry.lock": "matches `review.skip_paths`",
        "gen.go": "generated (header says DO NOT EDIT)",
    }
    reviewed = [path for chunk in chunks for path in chunk.paths]
    assert "late.py" in reviewed  # a marker far down a file is not a generated header
    assert sorted(reviewed) == sorted((set(files) | {"late.py"}) - {item.path for item in skipped})


def test_files_are_ordered_by_importance() -> None:
    def entry(name: str, lines: int) -> dict[str, object]:
        body = "\n".join(f"+line {n}" for n in range(lines))
        return {"filename": name, "status": "added", "patch": f"@@ -0,0 +1,{lines} @@\n{body}"}

    names = [("README.md", 50), ("tests/test_a.py", 9), ("src/small.py", 2), ("pyproject.toml", 1)]
    names += [("src/big.py", 30), ("assets/logo.svg", 3), ("src/a_test.go", 4)]
    chunks, _ = plan_chunks(
        from_github_files([entry(*item) for item in names]), skip=lambda path: False, max_tokens_per_chunk=50_000
    )
    assert chunks[0].paths == (
        "pyproject.toml",
        "src/big.py",
        "src/small.py",
        "tests/test_a.py",
        "src/a_test.go",
        "assets/logo.svg",
        "README.md",
    )


# --- the diff budget -------------------------------------------------------------------------------------------


def test_chunk_text_numbers_lines_for_the_model(files: dict[str, FileDiff]) -> None:
    chunks, _ = plan_chunks([files["src/app.py"]], skip=lambda path: False, max_tokens_per_chunk=20_000)
    [chunk] = chunks
    assert chunk.text.startswith("## src/app.py [modified, +2 -3]\n@@ -2,7 +2,7 @@ value_1 = 1\n     2   value_2 = 2\n")
    assert "     5 + value_5 = 'five'" in chunk.text
    assert "     4   value_4 = 4" in chunk.text
    assert "       - value_18 = 18" in chunk.text
    assert chunk.tokens == estimate_tokens(chunk.text)


def _big_pull_request(root: Path) -> tuple[Path, list[FileDiff]]:
    base: dict[str, str | bytes] = {"pyproject.toml": "[project]\nname = 'x'\n", "src/huge.py": "# start\n"}
    head: dict[str, str | bytes | None] = {"pyproject.toml": "[project]\nname = 'y'\n"}
    # One file with a single 3,000-line hunk (bigger than any chunk), with deletions in between.
    base["src/huge.py"] += "".join(f"old_{n} = {n}\n" for n in range(300))
    head["src/huge.py"] = "# start\n" + "".join(
        f"new_{n} = {n}  # {'ü' * (n % 7)}\n" + (f"old_{n // 10} = {n // 10}\n" if n % 10 == 0 else "")
        for n in range(3_000)
    )
    # Forty files with three hunks of fifteen changed lines each, and tests and docs.
    for index in range(40):
        lines = [f"line_{n} = {n}\n" for n in range(200)]
        base[f"src/mod_{index}.py"] = "".join(lines)
        for start in (10, 90, 170):
            for n in range(start, start + 15):
                lines[n] = f"line_{n} = {n} * {index}\n"
        head[f"src/mod_{index}.py"] = "".join(lines)
    head["tests/test_huge.py"] = "".join(f"def test_{n}():\n    assert True\n" for n in range(100))
    head["docs/guide.md"] = "".join(f"Step {n}.\n" for n in range(100))
    repo = make_repo(root, base, head)
    return repo, parse_git_diff(git_diff(repo))


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[FileDiff]]:
    return _big_pull_request(tmp_path_factory.mktemp("big") / "repo")


def test_a_5000_line_pull_request_is_reviewed_whole_in_several_chunks(big: tuple[Path, list[FileDiff]]) -> None:
    repo, files = big
    total = sum(diff.additions + diff.deletions for diff in files)
    assert total >= 5_000
    budget = 8_000
    chunks, skipped = plan_chunks(files, skip=lambda path: False, max_tokens_per_chunk=budget)
    assert skipped == []
    assert len(chunks) > 3
    for chunk in chunks:
        assert chunk.tokens <= budget
        assert estimate_tokens(chunk.text) == chunk.tokens

    # Every added line is in exactly one chunk, and so is every commentable line on both sides.
    seen: dict[tuple[str, int], int] = {}
    for chunk in chunks:
        for path, lines in added_lines(chunk.files).items():
            for line in lines:
                seen[(path, line)] = seen.get((path, line), 0) + 1
    assert set(seen.values()) == {1}
    assert {key for key in seen} == {(path, n) for path, lines in added_lines(files).items() for n in lines}
    pieces = [piece for chunk in chunks for piece in chunk.files]
    assert commentable(pieces).lines == commentable(files).lines

    # Split hunks keep their numbers: each numbered line in the prompt is that line of the file.
    head = {diff.path: show(repo, "HEAD", diff.path) for diff in files}
    for chunk in chunks:
        for piece in chunk.files:
            for hunk in piece.hunks:
                assert len(hunk.right_lines()) == hunk.new_count and len(hunk.left_lines()) == hunk.old_count
                for (op, number), line in zip(hunk.numbered(), hunk.lines, strict=True):
                    if op == "+":
                        assert head[piece.path][number - 1] == line[1:]
                        assert f"{number:>6} + {line[1:]}" in chunk.text

    huge_parts = [chunk for chunk in chunks if "src/huge.py" in chunk.paths]
    assert len(huge_parts) > 1
    assert f"## src/huge.py (part {len(huge_parts)} of {len(huge_parts)})" in huge_parts[-1].text
    assert chunks[0].paths[0] == "pyproject.toml"
    order = [path for chunk in chunks for path in chunk.paths]
    assert order.index("src/mod_0.py") < order.index("tests/test_huge.py") < order.index("docs/guide.md")


def test_small_files_share_chunks_and_are_never_split_needlessly(big: tuple[Path, list[FileDiff]]) -> None:
    _repo, files = big
    chunks, _ = plan_chunks(files, skip=lambda path: False, max_tokens_per_chunk=8_000)
    for path in {diff.path for diff in files} - {"src/huge.py"}:
        assert sum(path in chunk.paths for chunk in chunks) == 1, path
    assert max(len(chunk.paths) for chunk in chunks) > 5


def test_a_line_longer_than_a_chunk_is_shown_cut_not_dropped() -> None:
    patch = "@@ -0,0 +1,3 @@\n+short = 1\n+" + "x" * 100_000 + "\n+last = 3"
    [diff] = from_github_files([{"filename": "min.py", "status": "added", "patch": patch}])
    chunks, skipped = plan_chunks([diff], skip=lambda path: False, max_tokens_per_chunk=2_000)
    assert skipped == []
    assert all(chunk.tokens <= 2_000 for chunk in chunks)
    text = "\n".join(chunk.text for chunk in chunks)
    assert "[line cut: 100,000 characters]" in text and "     3 + last = 3" in text
    assert added_lines([piece for chunk in chunks for piece in chunk.files]) == {"min.py": {1, 2, 3}}


def test_a_budget_too_small_for_any_diff_is_refused() -> None:
    with pytest.raises(ValueError, match="max_tokens_per_chunk"):
        plan_chunks([], skip=lambda path: False, max_tokens_per_chunk=10)
