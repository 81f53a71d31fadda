"""Checkpoints in shared storage, so a run's next step can run on any worker, with no shared disk.

After each checkpoint its commits go into the blob store as a git bundle (`runs/<run>/checkpoints/<n>.bundle`:
the checkpoint's ref, everything since the worktree's start). A worker preparing a step finds the run's worktree
behind the latest recorded checkpoint (its own is older, or it made the worktree just now from the run's base):
it fetches the bundle into its mirror, puts HEAD and branch where the checkpoint found them (commits `git_pr` and
`git_ops` made) and makes the worktree's files the checkpoint's, as `checkpoints.restore` does for a resumed run. Which checkpoint a worktree holds is kept in its admin dir, out of the checkout's reach.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from pathlib import Path

from sqlmodel import col, select

from bot.blobs import BlobError, Blobs
from bot.models import Checkpoint, Run, RunStart, RunWorkspace
from bot.runs import checkpoint_diffs
from bot.store import Store, upsert
from bot.workspace.git import GitError, git, git_or_none
from bot.workspace.worktrees import Worktree

log = logging.getLogger(__name__)
AT_MARKER = "nofx-checkpoint"  # in the worktree's admin dir: the number of the checkpoint its files are
GIT_TIMEOUT_S = 300.0


def bundle_key(run_id: str, n: int) -> str:
    return f"runs/{run_id}/checkpoints/{n}.bundle"


def remember_start(store: Store, worktree: Worktree) -> tuple[str, str]:
    """Record where the run's worktree started (first worker wins); returns the recorded (base, start) commits.

    Every later worktree of the run, on any worker, starts from these, even after the base branch moved.
    """
    values = {"run_id": worktree.run_id, "base_sha": worktree.base_sha, "start_sha": worktree.start_sha}
    with store.session() as session:
        upsert(session, RunWorkspace, values, keys=["run_id"], insert_only=("base_sha", "start_sha"))
    with store.session() as session:
        row = session.get(RunWorkspace, worktree.run_id)
        assert row is not None
        return row.base_sha, row.start_sha


def recorded_start(store: Store, run_id: str) -> tuple[str, str] | None:
    """The (base, start) commits the run's first worktree was made from, if one was made."""
    with store.session() as session:
        row = session.get(RunWorkspace, run_id)
        return (row.base_sha, row.start_sha) if row else None


async def share(blobs: Blobs, worktree: Worktree, checkpoint: Checkpoint) -> None:
    """Put the checkpoint's commits, and those of the worktree's HEAD (what `git_pr` or `git_ops` committed), in
    the blob store, and note that the worktree holds this checkpoint."""
    refs = [checkpoint.ref]
    if checkpoint.head_sha:  # a ref of its own, so the bundle carries HEAD's commits (git leaves out any it excludes)
        refs.append(head_ref(checkpoint))
        await git("update-ref", head_ref(checkpoint), checkpoint.head_sha, cwd=worktree.mirror, timeout_s=GIT_TIMEOUT_S)
    with tempfile.TemporaryDirectory(prefix="nofx-bundle-") as tmp:
        bundle = Path(tmp) / "checkpoint.bundle"
        await git(
            "bundle", "create", "--quiet", str(bundle), *refs, f"^{worktree.start_sha}",
            cwd=worktree.mirror, timeout_s=GIT_TIMEOUT_S,
        )  # fmt: skip
        data = await asyncio.to_thread(bundle.read_bytes)
    await asyncio.to_thread(blobs.put, bundle_key(checkpoint.run_id, checkpoint.n), data)
    await _mark(worktree, checkpoint.n)
    try:
        await checkpoint_diffs.store(blobs, worktree.mirror, checkpoint)
    except (GitError, BlobError, OSError) as exc:  # the API and RCA bundles then say the diff is missing
        log.warning("the diff of checkpoint %s was not stored: %s", checkpoint.n, exc)


async def catch_up(store: Store, blobs: Blobs, worktree: Worktree, run: Run) -> int | None:
    """Bring the worktree to the run's latest checkpoint when it is behind; the checkpoint number, or None.

    Raises GitError when the checkpoint's bundle is missing: running the step on stale files would be wrong.
    """
    latest = _latest(store, run.id)
    if latest is None or await _at(worktree) >= latest.n:
        return None
    await _fetch(blobs, worktree.mirror, latest.run_id, latest.n, latest.ref, latest.commit_sha)
    await _move_head(worktree, latest)
    await worktree.git("read-tree", "--reset", "-u", latest.commit_sha, timeout_s=GIT_TIMEOUT_S)
    await worktree.git("reset", "--quiet", timeout_s=GIT_TIMEOUT_S)  # the run's work shows as uncommitted
    await _mark(worktree, latest.n)
    log.info("worktree rebuilt at checkpoint %s of run %s", latest.n, run.id)
    return latest.n


async def _move_head(worktree: Worktree, checkpoint: Checkpoint) -> None:
    """HEAD and branch where they were at the checkpoint: commits `git_pr` or `git_ops` made are part of the state."""
    if not checkpoint.head_sha:  # recorded before checkpoints kept HEAD
        return
    if not await _has_commit(worktree.mirror, checkpoint.head_sha):
        summary = (
            f"HEAD {checkpoint.head_sha[:12]} of checkpoint {checkpoint.n} is in neither the mirror nor its bundle"
        )
        raise GitError(["checkout", checkpoint.head_sha], None, "", summary=summary)
    where = ["-B", checkpoint.head_branch] if checkpoint.head_branch else ["--detach"]
    await worktree.git("checkout", "--quiet", "--force", *where, checkpoint.head_sha, timeout_s=GIT_TIMEOUT_S)


def head_ref(checkpoint: Checkpoint) -> str:
    """Where the mirror keeps the HEAD a checkpoint recorded (beside the checkpoint's own ref)."""
    return f"{checkpoint.ref}-head"


async def fetch_start_point(store: Store, blobs: Blobs, mirror: Path, run_id: str) -> None:
    """A resumed run starts from a checkpoint of another run: fetch that one's bundle if the mirror lacks it."""
    with store.session() as session:
        start = session.get(RunStart, run_id)
        source = (
            session.exec(
                select(Checkpoint).where(Checkpoint.run_id == start.source_run_id, Checkpoint.n == start.source_n)
            ).first()
            if start
            else None
        )
    if source is not None:
        await _fetch(blobs, mirror, source.run_id, source.n, source.ref, source.commit_sha)


async def _fetch(blobs: Blobs, mirror: Path, run_id: str, n: int, ref: str, commit: str) -> None:
    if await _has_commit(mirror, commit):
        return
    data = await asyncio.to_thread(blobs.get, bundle_key(run_id, n))
    if data is None:
        summary = f"checkpoint {n} of run {run_id} is not in the artifact store; the step cannot rebuild the worktree"
        raise GitError(["fetch", bundle_key(run_id, n)], None, "", summary=summary)
    with tempfile.TemporaryDirectory(prefix="nofx-bundle-") as tmp:
        bundle = Path(tmp) / "checkpoint.bundle"
        await asyncio.to_thread(bundle.write_bytes, data)
        # unbundle, not fetch: git's environment here allows no local transports, only the origin's
        await git("bundle", "unbundle", str(bundle), cwd=mirror, timeout_s=GIT_TIMEOUT_S)
    await git("update-ref", ref, commit, cwd=mirror, timeout_s=GIT_TIMEOUT_S)


async def _has_commit(mirror: Path, sha: str) -> bool:
    return await git_or_none("cat-file", "-e", f"{sha}^{{commit}}", cwd=mirror) is not None


def _latest(store: Store, run_id: str) -> Checkpoint | None:
    with store.session() as session:
        return session.exec(
            select(Checkpoint).where(Checkpoint.run_id == run_id).order_by(col(Checkpoint.n).desc())
        ).first()


async def _at(worktree: Worktree) -> int:
    marker = await _marker(worktree)
    try:
        return int((await asyncio.to_thread(marker.read_text)).strip())
    except (OSError, ValueError):
        return 0


async def _mark(worktree: Worktree, n: int) -> None:
    marker = await _marker(worktree)
    if await _at(worktree) < n:
        await asyncio.to_thread(marker.write_text, f"{n}\n")


async def _marker(worktree: Worktree) -> Path:
    admin = worktree.git_dir or Path((await worktree.git("rev-parse", "--absolute-git-dir")).strip())
    return admin / AT_MARKER
