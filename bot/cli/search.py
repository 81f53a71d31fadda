"""`nofx search --repo PATH|OWNER/NAME [--kind code|runs|artifacts] "query"`.

A local repository (a directory) is searched as code generation searches it, semantic and regex merged, or, for
runs and artifacts, in what `nofx run` indexed. A repository this server serves (`owner/name`) is searched in the
server's index (its data dir or CHROMA_URL, its database), as `GET /search` does.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from pathlib import Path

from bot.runs import queries
from bot.search.code_search import search_repository, semantic_lines
from bot.search.embeddings import EmbeddingsUnavailable, embedder_for
from bot.search.index import Hit, SearchIndex
from bot.settings import Settings
from bot.store import Store
from bot.web.openapi import REPO_PATTERN
from bot.workspace.git import GitError
from bot.workspace.local import local_repository

LOCAL_INSTALLATION = 0
SHOWN_LINES = 6  # of a run's or an artifact's text


def run(args: argparse.Namespace, settings: Settings) -> int:
    local = Path(args.repo)
    if local.is_dir() and args.kind == "code":
        return _local_code(local.resolve(), args, settings)
    repository_id: int | None = None  # runs and artifacts of a served repository: by GitHub's id of it
    if local.is_dir():
        installation_id, repo = LOCAL_INSTALLATION, local_repository(local.resolve())
    elif re.fullmatch(REPO_PATTERN, args.repo):
        store = Store(settings.database_url)
        try:
            served = queries.served_repository(store, args.repo)
        finally:
            store.dispose()
        if served is None:
            print(f"nofx: this server does not serve {args.repo}", file=sys.stderr)
            return 2
        installation_id, repo, repository_id = served.installation_id, served.full_name, served.repository_id
    else:
        print(f"nofx: --repo {args.repo}: neither a directory nor owner/name", file=sys.stderr)
        return 2
    try:
        index = SearchIndex.open(settings, embedder_for(settings))
    except EmbeddingsUnavailable as exc:
        print(f"nofx: semantic search is off: {exc}", file=sys.stderr)
        return 2
    if args.kind == "code":
        lines = semantic_lines(index.search_files(installation_id, args.query, repo=repo, limit=args.limit))
    else:
        hits = index.search(
            installation_id, args.query, kind=args.kind, repo=repo, limit=args.limit, repository_id=repository_id
        )
        lines = _described(hits)
    print("\n".join(lines) if lines else f"nothing found for {args.query!r}")
    return 0


def _local_code(repo: Path, args: argparse.Namespace, settings: Settings) -> int:
    try:
        index = SearchIndex.open(settings, embedder_for(settings))
    except EmbeddingsUnavailable as exc:
        print(f"nofx: semantic search is off ({exc}); regular-expression matches only", file=sys.stderr)
        index = None
    try:
        lines = asyncio.run(search_repository(index, LOCAL_INSTALLATION, repo, args.query, limit=args.limit))
    except GitError as exc:
        print(f"nofx: {repo} is not a git repository with a commit: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines) if lines else f"nothing found for {args.query!r}")
    return 0


def _described(hits: list[Hit]) -> list[str]:
    """`run <id> [artifact] (similarity …)` and the first lines of the text, indented."""
    lines = []
    for hit in hits:
        lines.append(f"{hit.location} (similarity {hit.score:.2f})")
        lines += [f"    {line}" for line in hit.text.splitlines()[:SHOWN_LINES]]
    return lines
