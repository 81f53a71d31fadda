"""What the model sees of a repository: its file tree and the files most relevant to the request, within a budget."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

CHARS_PER_TOKEN = 4
MAX_TREE_ENTRIES = 1500
MAX_FILE_BYTES = 64 * 1024
ALWAYS_USEFUL = (
    "README.md",
    "README.rst",
    "README",
    "pyproject.toml",
    "package.json",
    "setup.py",
    "Cargo.toml",
    "go.mod",
)
_WORD = re.compile(r"[a-z][a-z0-9]{2,}")
_STOP = frozenset(
    [
        "the",
        "and",
        "for",
        "with",
        "that",
        "this",
        "from",
        "into",
        "add",
        "make",
        "please",
        "should",
        "would",
        "could",
        "can",
        "use",
        "using",
        "when",
        "then",
        "have",
        "has",
        "not",
        "are",
        "was",
        "were",
        "will",
        "all",
        "any",
        "our",
        "you",
        "your",
        "new",
        "nofx",
        "file",
        "files",
        "code",
        "change",
    ]
)


@dataclass(frozen=True)
class RepoContext:
    tree: list[str]
    files: dict[str, str]  # path -> content, most relevant first
    omitted: int  # tree entries left out


def build(root: Path, paths: list[str], request: str, *, token_budget: int = 24_000) -> RepoContext:
    """The tree (capped) and the most relevant small text files, until the token budget is spent."""
    words = Counter(w for w in _WORD.findall(request.lower()) if w not in _STOP)
    scores = {path: _score(root, path, words) for path in paths}
    ranked = sorted(paths, key=lambda p: (-scores[p], len(p), p))
    budget = token_budget * CHARS_PER_TOKEN - sum(len(p) + 1 for p in paths[:MAX_TREE_ENTRIES])
    files: dict[str, str] = {}
    for path in ranked:
        if budget <= 0:
            break
        if scores[path] <= 0:
            continue
        text = _text(root / path)
        if text is None or len(text) > budget:
            continue
        files[path] = text
        budget -= len(text) + len(path) + 40
    return RepoContext(tree=paths[:MAX_TREE_ENTRIES], files=files, omitted=max(0, len(paths) - MAX_TREE_ENTRIES))


def _score(root: Path, path: str, words: Counter[str]) -> float:
    parts = set(_WORD.findall(path.lower()))
    score = 3.0 * sum(count for word, count in words.items() if word in parts or any(word in p for p in parts))
    if path in ALWAYS_USEFUL:
        score += 1.0
    if score == 0 and words:
        text = _text(root / path)
        if text:
            lowered = text.lower()
            score = sum(min(lowered.count(word), 5) for word in words) / 5
    return score


def _text(path: Path) -> str | None:
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_FILE_BYTES:
            return None
        data = path.read_bytes()
    except OSError:
        return None
    if b"\x00" in data[:4096]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None
