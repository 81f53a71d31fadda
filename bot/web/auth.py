"""Bearer-token authentication of the REST API and SSE streams (NOFX_API_TOKEN), compared in constant time."""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

Endpoint = Callable[[Request], Awaitable[Response]]


def authorized(request: Request) -> bool:
    """True if the request carries `Authorization: Bearer <NOFX_API_TOKEN>`; always False without a token."""
    expected = request.app.state.settings.api_token
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    if not expected or scheme.lower() != "bearer" or not presented:
        return False
    return hmac.compare_digest(presented.strip().encode(), expected.encode())


def require_token(endpoint: Endpoint) -> Endpoint:
    """Wrap an endpoint: 401 with a `WWW-Authenticate` challenge unless the bearer token matches."""

    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        if not authorized(request):
            return JSONResponse(
                {"error": "a valid bearer token (NOFX_API_TOKEN) is required"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="nofx"'},
            )
        return await endpoint(request)

    return guarded
