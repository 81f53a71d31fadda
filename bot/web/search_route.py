"""`GET /search`: the semantic index over a repository's code, its runs and their artifacts, behind the API token.

The index and the embeddings model load on the first search, in a thread, so the web process pays nothing for
them at start-up or while it only takes webhooks.
"""

from __future__ import annotations

import re
from typing import Any

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.runs import queries
from bot.search.embeddings import EmbeddingsUnavailable, embedder_for
from bot.search.index import KINDS, Hit, SearchIndex
from bot.settings import Settings
from bot.web.auth import require_token
from bot.web.openapi import REPO_PATTERN

MAX_QUERY = 500
MAX_LIMIT = 50
_REPO = re.compile(REPO_PATTERN)


def routes() -> list[Route]:
    return [Route("/search", require_token(search))]


async def search(request: Request) -> Response:
    params = request.query_params
    query, repo, kind = params.get("q", ""), params.get("repo", ""), params.get("kind", "code")
    limit_text = params.get("limit", "10")
    if not query or len(query) > MAX_QUERY:
        return _error(400, f"q is required, at most {MAX_QUERY} characters")
    if not _REPO.fullmatch(repo):
        return _error(400, "repo must be owner/name")
    if kind not in KINDS:
        return _error(400, f"kind must be one of {', '.join(KINDS)}")
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_LIMIT:
        return _error(400, f"limit must be 1..{MAX_LIMIT}")
    try:
        hits = await to_thread.run_sync(_search, request.app.state, query, repo, kind, int(limit_text))
    except EmbeddingsUnavailable as exc:
        return _error(503, str(exc))
    if hits is None:
        return _error(404, f"nofx does not serve {repo}")
    return JSONResponse({"query": query, "repo": repo, "kind": kind, "results": [hit_json(h) for h in hits]})


def hit_json(hit: Hit) -> dict[str, Any]:
    return {
        "kind": hit.kind,
        "repo": hit.repo,
        "score": hit.score,
        "path": hit.path,
        "start_line": hit.start,
        "end_line": hit.end,
        "run_id": hit.run_id,
        "artifact": hit.artifact,
        "text": hit.text,
    }


def _search(state: Any, query: str, repo: str, kind: str, limit: int) -> list[Hit] | None:
    served = queries.served_repository(state.store, repo)
    if served is None:
        return None
    index = getattr(state, "search_index", None)
    if index is None:
        settings: Settings = state.settings
        index = state.search_index = SearchIndex.open(settings, embedder_for(settings))
    # GitHub's spelling of the name, as the index recorded it; runs and artifacts by GitHub's id of the repository
    # (a name may have been another repository's).
    installation_id, name, repository_id = served.installation_id, served.full_name, served.repository_id
    if kind == "code":
        return index.search_files(installation_id, query, repo=name, limit=limit)
    return index.search(
        installation_id,
        query,
        kind=kind,  # type: ignore[arg-type]
        repo=name,
        limit=limit,
        repository_id=repository_id,
    )


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)
