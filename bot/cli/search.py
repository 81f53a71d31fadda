"""`nofx search --repo PATH "query"`: the repository as code generation searches it, semantic and regex merged."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from bot.search.code_search import search_repository
from bot.search.embeddings import EmbeddingsUnavailable, embedder_for
from bot.search.index import SearchIndex
from bot.settings import Settings
from bot.workspace.git import GitError

LOCAL_INSTALLATION = 0


def run(args: argparse.Namespace, settings: Settings) -> int:
    repo: Path = args.repo.resolve()
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
