"""Per-installation git mirrors and per-run worktrees: clone once, fetch before each run, token only in git's env.

Layout under `<data>/workspaces` (the `root`):

    <installation>/<owner>/<repo>/mirror.git   bare mirror; upstream branches live in refs/remotes/origin/*
    <installation>/<owner>/<repo>/mirror.lock  flock held around everything that writes the mirror's refs or admin dir
    <installation>/<owner>/<repo>/last-used    mtime = when a run last prepared from it (LRU eviction)
    ../worktrees/<run_id>                      one run's checkout on `nofx/<issue>-<slug>`
    ../base-checkouts/<run_id>                 the run's base commit, detached, while its `setup` runs

Why a bare repository with `+refs/heads/*:refs/remotes/origin/*` and not `git clone --mirror`: a mirror maps
upstream branches onto its own `refs/heads/*`, so a fetch would try to move (or, with --prune, delete) the branch a
run has checked out, and `remote.origin.mirror=true` turns every push into "push all refs". Keeping upstream in
`refs/remotes/origin/*` leaves `refs/heads/*` to the runs' own branches.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from bot.workspace.git import GitError, git, git_or_none, http_origin
from bot.workspace.limits import disk_usage
from bot.workspace.worktrees import (
    BASE_CHECKOUTS,
    Checkout,
    Worktree,
    add_base_checkout,
    create_worktree,
    drop_worktree,
    find_worktree,
    list_worktrees,
    remove_path,
    resolve_ref,
)

log = logging.getLogger(__name__)

GC_AUTO_THRESHOLD = 6700  # git's own default for `gc.auto`, applied only where we run gc
UPSTREAM_REFSPECS = ("+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*")

_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")
_RUN_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")


class Workspaces:
    """Mirrors per installation and repository, worktrees per run, and their upkeep (reap, evict)."""

    def __init__(
        self,
        root: Path,
        *,
        disk_budget_bytes: int = 20 * 2**30,
        clock: Callable[[], float] = time.time,
        worktrees: Path | None = None,
    ) -> None:
        # Resolved, because git reports worktree paths with symlinks resolved and we compare against them.
        self.root = Path(root).resolve()
        self.worktrees = Path(worktrees).resolve() if worktrees else self.root.parent / "worktrees"
        self.base_checkouts = self.worktrees.with_name(BASE_CHECKOUTS)
        self.disk_budget_bytes = disk_budget_bytes
        self.clock = clock

    def mirror_path(self, installation_id: int, owner: str, repo: str) -> Path:
        """Where the mirror lives; GitHub names are case-insensitive, so the path is lower case."""
        for name in (owner, repo):
            if not _NAME.fullmatch(name) or name in (".", ".."):
                raise ValueError(f"not a GitHub owner or repository name: {name!r}")
        return self.root / str(int(installation_id)) / owner.lower() / repo.lower() / "mirror.git"

    async def prepare(self, checkout: Checkout) -> Worktree:
        """The run's worktree on its branch, from a freshly fetched base (or the branch's remote tip when reusing).

        Idempotent per run: when the run already has its worktree (a later step, a redelivered job) it is returned
        as it is, without fetching. The mirror is cloned only when missing.
        """
        run_id, branch, base_ref, clone_url = checkout.run_id, checkout.branch, checkout.base_ref, checkout.clone_url
        mirror = self.mirror_path(checkout.installation_id, checkout.owner, checkout.repo)
        http_origin(clone_url)
        if checkout.token is None:
            raise ValueError("a mirror is fetched with a token; the checkout has no token provider")
        if not _RUN_ID.fullmatch(run_id):
            raise ValueError(f"run id must be a plain file name: {run_id!r}")
        if base_ref.startswith("-") or await git_or_none("check-ref-format", "--branch", branch) != branch:
            raise ValueError(f"not a usable branch or base: {branch!r}, {base_ref!r}")
        path = self.worktrees / run_id
        async with _locked(mirror.parent):
            self._touch(mirror.parent)
            existing = await find_worktree(mirror, path)
            if existing is not None:
                if (existing.branch, existing.clone_url) != (branch, clone_url):
                    raise ValueError(
                        f"run {run_id} already has a worktree on {existing.branch} of {existing.clone_url}"
                    )
                return existing
            await self._refresh(mirror, clone_url, await checkout.token())
            if checkout.base_sha:  # made before, maybe elsewhere: the same commits, even if the base moved since
                known_base, known_start = checkout.base_sha, checkout.start_sha or checkout.base_sha
                for sha in {known_base, known_start}:
                    if await resolve_ref(mirror, sha) is None:
                        summary = f"{checkout.owner}/{checkout.repo} no longer has the run's start commit {sha[:12]}"
                        raise GitError(["rev-parse", sha], None, "", summary=summary)
                return await create_worktree(
                    checkout, git_dir=mirror, path=path, base_sha=known_base, start_sha=known_start, clone_url=clone_url
                )
            base_sha = await resolve_ref(mirror, base_ref)
            if base_sha is None:
                summary = f"{checkout.owner}/{checkout.repo} has no {base_ref!r} to start from"
                raise GitError(["rev-parse", base_ref], None, "", summary=summary)
            start_sha = base_sha
            if checkout.reuse_remote_branch:
                start_sha = await resolve_ref(mirror, f"refs/remotes/origin/{branch}") or base_sha
            return await create_worktree(
                checkout, git_dir=mirror, path=path, base_sha=base_sha, start_sha=start_sha, clone_url=clone_url
            )

    async def fetched_mirror(
        self, installation_id: int, owner: str, repo: str, clone_url: str, commit: str, token: str
    ) -> Path:
        """The repository's mirror holding `commit`: as it is when it does, else fetched (or cloned) first."""
        mirror = self.mirror_path(installation_id, owner, repo)
        http_origin(clone_url)
        async with _locked(mirror.parent):
            self._touch(mirror.parent)
            if not mirror.exists() or await resolve_ref(mirror, commit) is None:
                await self._refresh(mirror, clone_url, token)
        return mirror

    async def remove(self, worktree: Worktree) -> None:
        """Delete the run's checkout, its registration and its local branch; safe to call twice."""
        async with _locked(worktree.mirror.parent):
            await drop_worktree(worktree.mirror, worktree.path, worktree.branch)

    @asynccontextmanager
    async def base_checkout(self, worktree: Worktree) -> AsyncIterator[Worktree]:
        """The run's base commit, detached, from its mirror (`add_base_checkout`); removed on exit."""
        path = self.base_checkouts / worktree.run_id
        async with _locked(worktree.mirror.parent):
            base = await add_base_checkout(worktree, path)
        try:
            yield base
        finally:
            async with _locked(worktree.mirror.parent):
                await drop_worktree(worktree.mirror, path, None)

    async def reap(self, active_run_ids: set[str]) -> list[Path]:
        """Remove every worktree (and base checkout) whose run is not active (include runs being prepared!), and
        interrupted clones."""
        removed: list[Path] = []
        for repo_dir in self._repo_dirs():
            mirror = repo_dir / "mirror.git"
            async with _locked(repo_dir):
                for leftover in repo_dir.glob("mirror.git.*"):
                    await asyncio.to_thread(shutil.rmtree, leftover, ignore_errors=True)
                if not mirror.exists():
                    continue
                await git("worktree", "prune", cwd=mirror)
                for path, branch in await list_worktrees(mirror):
                    if path.parent in (self.worktrees, self.base_checkouts) and path.name in active_run_ids:
                        continue
                    await drop_worktree(mirror, path, branch)
                    removed.append(path)
        for directory in (self.worktrees, self.base_checkouts):
            for path in directory.iterdir() if directory.is_dir() else ():
                if path.name not in active_run_ids and path not in removed:
                    await asyncio.to_thread(remove_path, path)
                    removed.append(path)
        return removed

    async def evict(self) -> list[Path]:
        """Delete least-recently-used mirrors without worktrees until the total fits the disk budget."""
        mirrors = [d / "mirror.git" for d in self._repo_dirs() if (d / "mirror.git").is_dir()]
        sizes = {m: await asyncio.to_thread(disk_usage, m) for m in mirrors}
        total = sum(sizes.values())
        evicted: list[Path] = []
        for mirror in sorted(mirrors, key=lambda m: _last_used(m.parent)):
            if total <= self.disk_budget_bytes:
                break
            async with _locked(mirror.parent, wait=False) as held:
                if not held or not mirror.exists():
                    continue  # busy: someone is fetching or preparing, so it is in use
                await git("worktree", "prune", cwd=mirror)
                if await list_worktrees(mirror):
                    continue
                doomed = mirror.with_name(f"mirror.git.evicting-{uuid.uuid4().hex[:8]}")
                mirror.rename(doomed)  # atomic: no half-deleted mirror is ever seen at the real path
                await asyncio.to_thread(shutil.rmtree, doomed, ignore_errors=True)
            total -= sizes[mirror]
            evicted.append(mirror)
            log.info("evicted %s (%d bytes)", mirror, sizes[mirror])
        return evicted

    # ------------------------------------------------------------ helpers (callers hold the repo's lock)

    async def _clone(self, mirror: Path, clone_url: str, token: str) -> None:
        """Init + fetch into a temporary name, then rename: a crash never leaves a half clone at `mirror`."""
        partial = mirror.with_name(f"mirror.git.tmp-{uuid.uuid4().hex[:8]}")
        try:
            await git("init", "--quiet", "--bare", str(partial))
            await git("config", "remote.origin.url", clone_url, cwd=partial)
            for refspec in UPSTREAM_REFSPECS:
                await git("config", "--add", "remote.origin.fetch", refspec, cwd=partial)
            await self._fetch(partial, clone_url, token)
            partial.rename(mirror)
        finally:
            if partial.exists():
                await asyncio.to_thread(shutil.rmtree, partial, ignore_errors=True)

    async def _fetch(self, mirror: Path, clone_url: str, token: str) -> None:
        # The explicit URL, not "origin": config in the mirror is writable by the checkout's code.
        await git(
            "fetch",
            "--quiet",
            "--prune",
            "--no-tags",
            clone_url,
            *UPSTREAM_REFSPECS,
            token=token,
            url=clone_url,
            cwd=mirror,
        )

    async def _refresh(self, mirror: Path, clone_url: str, token: str) -> None:
        """Fetch into the mirror, or clone it when it is missing (first run, or evicted)."""
        started = time.monotonic()
        if mirror.exists():  # noqa: ASYNC240 - a stat, cheaper than a thread hop
            await git("config", "remote.origin.url", clone_url, cwd=mirror)
            await self._fetch(mirror, clone_url, token)
            await git("-c", f"gc.auto={GC_AUTO_THRESHOLD}", "gc", "--auto", "--quiet", cwd=mirror)
            verb = "fetched"
        else:
            await self._clone(mirror, clone_url, token)
            verb = "cloned"
        log.info("%s %s in %.2fs", verb, clone_url, time.monotonic() - started)

    def _touch(self, repo_dir: Path) -> None:
        stamp = repo_dir / "last-used"
        stamp.touch()
        now = self.clock()
        os.utime(stamp, (now, now))

    def _repo_dirs(self) -> list[Path]:
        return sorted(p.parent for p in self.root.glob("*/*/*/mirror.lock"))


def _last_used(repo_dir: Path) -> float:
    for candidate in (repo_dir / "last-used", repo_dir / "mirror.git"):
        with contextlib.suppress(OSError):
            return candidate.stat().st_mtime
    return 0.0


@contextlib.asynccontextmanager
async def _locked(repo_dir: Path, *, wait: bool = True) -> AsyncIterator[bool]:
    """An exclusive flock on `<repo_dir>/mirror.lock`, polled so the event loop keeps running.

    flock locks belong to an open file description, and every acquisition opens the file anew, so the lock excludes
    other processes, other threads and other tasks of this event loop alike. Closing the descriptor releases it,
    also when the holder is cancelled or dies.
    """
    repo_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - a stat, cheaper than a thread hop
    fd = os.open(repo_dir / "mirror.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        delay = 0.002
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait:
                    yield False
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)
        yield True
    finally:
        os.close(fd)
