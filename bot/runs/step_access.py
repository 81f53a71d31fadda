"""Each step's GitHub access: a token for the run's one repository with only the permissions its tool needs,
asked for when the step first needs it and revoked when the step ends, so no token outlives its run.

An installation token for the whole installation would let code that leaks it (a gate, a prompt-injected
model) reach every repository of the installation with write access; this one reaches one repository, with
`contents: read` for every step that only reads the code.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from gidgethub.abc import GitHubAPI

from bot.github.client import GitHubApp
from bot.models import Run

log = logging.getLogger(__name__)

READ_CODE = {"contents": "read"}
STEP_PERMISSIONS: Mapping[str, Mapping[str, str]] = {
    "codegen": READ_CODE,
    "workspace:write": READ_CODE,
    "gate:test": READ_CODE,
    "gate:lint": READ_CODE,
    "gate:typecheck": READ_CODE,
    "gate:ci": {"contents": "read", "checks": "read", "actions": "read"},
    "git_pr": {"contents": "write", "pull_requests": "write"},
    "git_ops": {"contents": "write"},
}
REFRESH_MARGIN_S = 300.0


def permissions_for(tool: str) -> Mapping[str, str]:
    """What a step of `tool` may do on GitHub; a tool not listed only reads the code."""
    return STEP_PERMISSIONS.get(tool, READ_CODE)


class StepAccess:
    """The token and client of one step; `revoke` when the step is over."""

    def __init__(self, github: GitHubApp, run: Run, tool: str) -> None:
        self._github = github
        self._run = run
        self.permissions = dict(permissions_for(tool))
        self._token: tuple[str, float] | None = None
        self._issued: list[str] = []
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        """The step's token, asked for once (again only when it nears its expiry, for a step near an hour)."""
        async with self._lock:
            if self._token is None or time.time() >= self._token[1] - REFRESH_MARGIN_S:
                value, expires_at = await self._github.repository_token(
                    self._run.installation_id, self._run.repository, self._run.repository_id, self.permissions
                )
                self._token = (value, expires_at)
                self._issued.append(value)
            return self._token[0]

    def client(self) -> GitHubAPI:
        """A GitHub client acting with the step's token."""
        return self._github.token_client(self.token)

    async def revoke(self) -> None:
        """Revoke every token this step was given; a failure is logged (the token expires within the hour)."""
        issued, self._issued, self._token = self._issued, [], None
        for value in issued:
            try:
                await self._github.revoke_token(value)
            except Exception as exc:  # revoking is best effort: the step's outcome must not depend on it
                log.warning("revoking a step's installation token failed: %s", type(exc).__name__)
