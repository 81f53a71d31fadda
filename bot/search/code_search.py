"""Code search as code generation and `nofx search` use it: regular-expression matches and semantic hits, merged.

Exact matches come first (the model asked for them by name); semantic hits follow for files and lines the
matches did not already show, each as `path:start-end (similarity)` so the model can read the lines next.
"""

from __future__ import annotations

import re
from pathlib import Path

from bot.search.index import Hit, SearchIndex
from bot.workspace.git import GitError, git_env, run_git

MAX_MATCHES = 50


async def search_repository(
    index: SearchIndex | None, installation_id: int, repo: Path, query: str, *, limit: int = 10
) -> list[str]:
    """Bring the index to HEAD (only changed paths after the first time), then search both ways."""
    head = (await run_git(["rev-parse", "--verify", "HEAD^{commit}"], env=git_env(None), cwd=repo)).stdout.strip()
    if not head:
        raise GitError(["rev-parse", "HEAD"], 128, f"{repo} has no commit")
    name = str(repo)
    hits: list[Hit] = []
    if index is not None:
        await index.index_code(installation_id, name, repo, head)
        hits = index.search_files(installation_id, query, repo=name, limit=limit)
    return merged(await regex_matches(repo, head, query), hits)


async def regex_matches(repo: Path, commit: str, pattern: str) -> list[str]:
    """`path:line: text` for tracked text files at `commit` (git grep, extended regex); none if not a regex."""
    try:
        re.compile(pattern)
    except re.error:
        return []
    found = await run_git(
        ["grep", "-n", "-I", "-E", "--max-count=5", "-e", pattern, commit, "--"], env=git_env(None), cwd=repo
    )
    lines = [line.removeprefix(f"{commit}:") for line in found.stdout.splitlines()]
    return [line[:300] for line in lines[:MAX_MATCHES]]


def merged(matches: list[str], hits: list[Hit]) -> list[str]:
    """Matches first, then semantic hits whose lines no match already shows."""
    shown: dict[str, set[int]] = {}
    for line in matches:
        path, _, rest = line.partition(":")
        number = rest.partition(":")[0]
        if number.isdigit():
            shown.setdefault(path, set()).add(int(number))
    out = list(matches)
    for hit in hits:
        lines = shown.get(hit.path or "", set())
        if hit.start is not None and hit.end is not None and any(hit.start <= n <= hit.end for n in lines):
            continue
        out += semantic_lines([hit])
    return out


def semantic_lines(hits: list[Hit]) -> list[str]:
    """`path:start-end (semantic, similarity 0.53)`: where to read next, as code generation and `nofx search` show it."""
    return [f"{hit.path}:{hit.start}-{hit.end} (semantic, similarity {hit.score:.2f})" for hit in hits if hit.path]
