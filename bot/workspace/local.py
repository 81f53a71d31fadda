"""Worktrees of a repository on this machine (`nofx run --repo`): no mirror, no token, nothing pushed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from bot.workspace.git import GitError, git
from bot.workspace.worktrees import (
    BASE_CHECKOUTS,
    Checkout,
    Worktree,
    add_base_checkout,
    create_worktree,
    find_worktree,
    resolve_ref,
)


def local_repository(repo: Path) -> str:
    """The repository name a local repository's runs are recorded (and indexed) under."""
    return f"local/{repo.name}"


class LocalWorkspaces:
    """Run worktrees on new branches of a local repository; a run's branch is its result and stays."""

    def __init__(self, repo: Path, worktrees: Path) -> None:
        self.repo = Path(repo).resolve()
        self.worktrees = Path(worktrees).resolve()

    async def prepare(self, checkout: Checkout) -> Worktree:
        """The run's worktree on a new branch of the local repository, from its base; the remote fields are unused."""
        git_dir = Path((await git("rev-parse", "--absolute-git-dir", cwd=self.repo)).strip())
        path = self.worktrees / checkout.run_id
        existing = await find_worktree(git_dir, path)
        if existing is not None:
            return existing
        base_sha = await resolve_ref(git_dir, checkout.base_ref)
        if base_sha is None:
            summary = f"{self.repo} has no {checkout.base_ref!r} to start from"
            raise GitError(["rev-parse", checkout.base_ref], None, "", summary=summary)
        return await create_worktree(checkout, git_dir=git_dir, path=path, base_sha=base_sha, start_sha=base_sha)

    async def fetched_mirror(
        self, installation_id: int, owner: str, repo: str, clone_url: str, commit: str, token: str
    ) -> Path | None:
        """The local repository's git directory when it holds `commit`; nothing is fetched (no remote, no token)."""
        git_dir = Path((await git("rev-parse", "--absolute-git-dir", cwd=self.repo)).strip())
        return git_dir if await resolve_ref(git_dir, commit) is not None else None

    async def remove(self, worktree: Worktree) -> None:
        """Delete the checkout but keep its branch: the branch is the local run's result."""
        await git("worktree", "remove", "--force", str(worktree.path), cwd=self.repo)

    @asynccontextmanager
    async def base_checkout(self, worktree: Worktree) -> AsyncIterator[Worktree]:
        """The run's base commit, detached (`add_base_checkout`); removed on exit."""
        path = self.worktrees.with_name(BASE_CHECKOUTS) / worktree.run_id
        base = await add_base_checkout(worktree, path)
        try:
            yield base
        finally:
            await git("worktree", "remove", "--force", "--force", str(path), cwd=self.repo, check=False)

    async def discard(self, run_id: str, branch: str) -> None:
        """A failed local run leaves nothing behind: no checkout, no branch."""
        path = self.worktrees / run_id
        if path.exists():
            await git("worktree", "remove", "--force", str(path), cwd=self.repo)
        await git("branch", "-D", branch, cwd=self.repo, check=False)

    async def reap(self, active_run_ids: set[str]) -> list[Path]:
        """Nothing to reap: a local run removes its own worktree when it has committed."""
        return []

    async def evict(self) -> list[Path]:
        return []
