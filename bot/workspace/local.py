"""Worktrees of a repository on this machine (`nofx run --repo`): no mirror, no token, nothing pushed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bot.workspace.git import GitError, git
from bot.workspace.worktrees import Worktree, add_worktree, find_worktree, resolve_ref


class LocalWorkspaces:
    """Run worktrees on new branches of a local repository; a run's branch is its result and stays."""

    def __init__(self, repo: Path, worktrees: Path) -> None:
        self.repo = Path(repo).resolve()
        self.worktrees = Path(worktrees).resolve()

    async def prepare(self, *, run_id: str, branch: str, base_ref: str, **_remote: Any) -> Worktree:
        """The run's worktree on a new `branch` of the local repository, from `base_ref`."""
        git_dir = Path((await git("rev-parse", "--absolute-git-dir", cwd=self.repo)).strip())
        path = self.worktrees / run_id
        existing = await find_worktree(git_dir, path)
        if existing is not None:
            return existing
        base_sha = await resolve_ref(git_dir, base_ref)
        if base_sha is None:
            raise GitError(["rev-parse", base_ref], None, "", summary=f"{self.repo} has no {base_ref!r} to start from")
        worktree = Worktree(
            path=path,
            branch=branch,
            base_ref=base_ref,
            base_sha=base_sha,
            mirror=git_dir,
            run_id=run_id,
            start_sha=base_sha,
        )
        await add_worktree(worktree)
        return worktree

    async def remove(self, worktree: Worktree) -> None:
        """Delete the checkout but keep its branch: the branch is the local run's result."""
        await git("worktree", "remove", "--force", str(worktree.path), cwd=self.repo)

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
