"""Diff parsing, commentable lines and the diff budget, on diffs made by real git in real repositories."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from bot.repo_config import ReviewConfig
from bot.review.chunks import Skipped, estimate_tokens, plan_chunks
from bot.review.commentable import commentable
from bot.workspace.diffs import FileDiff, Hunk, changed_lines, from_github_files, parse_git_diff

APP_BASE = "".join(f"value_{n} = {n}\n" for n in range(1, 41))
APP_HEAD = (
    APP_BASE.replace("value_5 = 5\n", "value_5 = 'five'\n")
    .replace("value_18 = 18\n", "")
    .replace("value_35 = 35\n", "value_35 = 'thirty-five'\n")
)
TRICKY_BASE = "start\n-- a dashed line\nkeep\n++ two pluses\n@@ -1 +1 @@ fake\nform\x0cfeed and\u2028separator\nend\n"
TRICKY_HEAD = TRICKY_BASE.replace("-- a dashed line\n", "").replace("++ two pluses\n", "diff --git a/x b/x\n--- a/x\n")
UNICODE_PATH = "ünï cödé/fïle 1.py"
QUOTED_PATH = 'we"ird\tname.py'

BASE: dict[str, str | bytes] = {
    "src/app.py": APP_BASE,
    "src/gone.py": "".join(f"gone_{n} = {n}\n" for n in range(1, 9)),
    "docs/old name.md": "".join(f"Paragraph {n} of the guide.\n" for n in range(1, 13)),
    "src/util.py": "".join(f"def util_{n}():\n    return {n}\n" for n in range(1, 11)),
    "crlf.txt": "one\r\ntwo\r\nthree\r\nfour\r\nfive\r\n",
    "nonl.txt": "a\nb\nc",
    "data.bin": bytes(range(256)),
    "tricky.txt": TRICKY_BASE,
    UNICODE_PATH: "".join(f"x{n} = {n}\n" for n in range(1, 7)),
    QUOTED_PATH: "q = 1\n",
    "tool.sh": "echo hi\n",
}
HEAD: dict[str, str | bytes | None] = {
    "src/app.py": APP_HEAD,
    "src/gone.py": None,
    "docs/old name.md": None,
    "docs/new name.md": BASE["docs/old name.md"],
    "src/util.py": None,
    "src/helpers.py": str(BASE["src/util.py"]).replace("return 10\n", "return 'ten'\n") + "# end\n",
    "crlf.txt": "one\r\ntwo\r\nTHREE\r\nfour\r\nfive\r\n",
    "nonl.txt": "a\nb\nC\nd",
    "data.bin": bytes(reversed(range(256))),
    "tricky.txt": TRICKY_HEAD,
    UNICODE_PATH: "".join(f"x{n} = {n * 10 if n == 2 else n}\n" for n in range(1, 7)),
    QUOTED_PATH: "q = 2\n",
    "src/new_module.py": "def hello():\n    return 'hi'\n",
    "empty.txt": "",
    "new empty.txt": "",
}


def run_git(repo: Path, *args: str) -> str:
    """git with no user or system config, so the machine's settings cannot change the diff."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(repo),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "LC_ALL": "C",
    }
    config = ["-c", "user.name=nofx test", "-c", "user.email=test@example.com", "-c", "core.autocrlf=false"]
    done = subprocess.run(["git", *config, *args], cwd=repo, env=env, check=True, capture_output=True)
    return done.stdout.decode("utf-8")


def write_tree(repo: Path, files: dict[str, str | bytes | None]) -> None:
    for name, content in files.items():
        path = repo / name
        if content is None:
            path.unlink()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))


def make_repo(root: Path, base: dict[str, str | bytes], head: dict[str, str | bytes | None]) -> Path:
    """A repository with a `base` commit and a `head` commit on top."""
    root.mkdir(parents=True, exist_ok=True)
    run_git(root, "init", "-q")
    write_tree(root, dict(base))
    run_git(root, "add", "-A")
    run_git(root, "commit", "-q", "-m", "base")
    run_git(root, "tag", "base")
    write_tree(root, head)
    if "tool.sh" in base:
        (root / "tool.sh").chmod(0o755)  # a mode change alone: headers, no hunks
    run_git(root, "add", "-A")
    run_git(root, "commit", "-q", "-m", "head")
    return root


def git_diff(repo: Path, *config: str) -> str:
    return run_git(repo, *config, "diff", "--no-color", "--no-ext-diff", "-M", "base...HEAD")


def show(repo: Path, ref: str, path: str) -> list[str]:
    """A file's lines at a commit, split on \\n only (a CRLF line keeps its \\r), as the diff numbers them."""
    text = subprocess.run(["git", "show", f"{ref}:{path}"], cwd=repo, check=True, capture_output=True).stdout
    return text.decode("utf-8").split("\n")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repo(tmp_path_factory.mktemp("diffs") / "repo", BASE, HEAD)


@pytest.fixture(scope="module")
def files(repo: Path) -> dict[str, FileDiff]:
    return {diff.path: diff for diff in parse_git_diff(git_diff(repo))}


def numstat(repo: Path) -> dict[str, tuple[str | None, int | None, int | None]]:
    """git's own count of each file's changes: path → (old path, additions, deletions); None for binary."""
    raw = run_git(repo, "diff", "--numstat", "-z", "-M", "base...HEAD").split("\0")
    out, index = {}, 0
    while index < len(raw) and raw[index]:
        added, deleted, path = raw[index].split("\t", 2)
        old = None
        if not path:  # a rename: old and new path follow as their own fields
            old, path = raw[index + 1], raw[index + 2]
            index += 2
        index += 1
        out[path] = (old, None if added == "-" else int(added), None if deleted == "-" else int(deleted))
    return out


# --- parsing ---------------------------------------------------------------------------------------------------


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
    assert changed_lines([app]) == {"src/app.py": {5, 34}}
    assert places.can_comment("src/app.py", "RIGHT", 34)
    assert not places.can_comment("src/app.py", "RIGHT", 12)
    assert places.can_comment("src/app.py", "LEFT", 18)  # the deleted line
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


def test_crlf_and_missing_newline_lines_keep_their_form(files: dict[str, FileDiff]) -> None:
    assert "+THREE\r" in files["crlf.txt"].hunks[0].lines
    nonl = files["nonl.txt"].hunks[0].lines
    assert nonl.count("\\ No newline at end of file") == 2
    assert changed_lines([files["nonl.txt"]]) == {"nonl.txt": {3, 4}}


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


def test_github_file_without_patch_but_with_changes_is_not_silently_empty() -> None:
    [huge] = from_github_files([{"filename": "big.py", "status": "modified", "additions": 9000, "deletions": 1}])
    assert huge.no_patch and not huge.binary
    _chunks, skipped = plan_chunks([huge], skip=lambda path: False, max_tokens_per_chunk=10_000)
    assert skipped == [Skipped("big.py", "GitHub sent no diff for it (too large)")]


def test_hunk_counts_default_to_one() -> None:
    [diff] = from_github_files([{"filename": "a.py", "status": "modified", "patch": "@@ -3 +3 @@\n-x\n+y"}])
    assert diff.hunks[0] == Hunk(3, 1, 3, 1, "@@ -3 +3 @@", ("-x", "+y"))


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
        for path, lines in changed_lines(chunk.files).items():
            for line in lines:
                seen[(path, line)] = seen.get((path, line), 0) + 1
    assert set(seen.values()) == {1}
    assert {key for key in seen} == {(path, n) for path, lines in changed_lines(files).items() for n in lines}
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
    assert changed_lines([piece for chunk in chunks for piece in chunk.files]) == {"min.py": {1, 2, 3}}


def test_a_budget_too_small_for_any_diff_is_refused() -> None:
    with pytest.raises(ValueError, match="max_tokens_per_chunk"):
        plan_chunks([], skip=lambda path: False, max_tokens_per_chunk=10)
