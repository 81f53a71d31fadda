"""Two-commit git repositories whose diff holds every kind of change, for the diff parser's and the review's tests."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from pathlib import Path

from bot.workspace.diffs import FileDiff

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


def added_lines(files: Iterable[FileDiff]) -> dict[str, set[int]]:
    """New-file numbers of the '+' lines per path as the parser numbers them (`Hunk.numbered`, which the review's
    prompt shows); files without added lines are left out."""
    out: dict[str, set[int]] = {}
    for diff in files:
        added = {n for hunk in diff.hunks for op, n in hunk.numbered() if op == "+" and n is not None}
        if added:
            out.setdefault(diff.path, set()).update(added)
    return out
