"""Checkpoints: after each step that changes the worktree, its full state as a commit on a hidden ref in the mirror.

Why: a failed gate leaves a worktree that the reaper deletes soon after; a checkpoint keeps exactly what the step
left (tracked and untracked files; ignored ones excluded), so people can diff one step against another, bundle them
for a root-cause analysis, and branch a new run from any of them (`resume`).

The commit is built through a temporary index (`GIT_INDEX_FILE`): `add -A`, `write-tree`, `commit-tree` with the
previous checkpoint as parent, `update-ref`. The worktree's own index, HEAD and branch never move, so what `git_pr`
later commits is unaffected. Refs live under `refs/nofx/runs/<run>/<n>`: outside `refs/heads` and
`refs/remotes/origin`, so fetches (`--prune`) and pushes never touch them, and they keep the commits from gc.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shutil
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import col, select

from bot.blobs import BlobError, Blobs
from bot.models import Artifact, Checkpoint, Run, RunStart, Step
from bot.runs import records, shared_checkpoints
from bot.runs.contract import StepContext, StepResult
from bot.store import Store
from bot.workspace.git import GitError
from bot.workspace.mirrors import Workspaces
from bot.workspace.worktrees import Worktree

log = logging.getLogger(__name__)

CHECKPOINT_TOOLS = frozenset(
    {"workspace:write", "git_ops", "git_pr", "gate:test", "gate:lint", "gate:typecheck", "gate:llm_review"}
)
REF_PREFIX = "refs/nofx/runs"
GIT_TIMEOUT_S = 300.0
RESTORED_MARKER = "nofx-restored"  # in the worktree's admin dir, out of reach of the checkout's code
_REF_SAFE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_IDENTITY = {
    "GIT_AUTHOR_NAME": "nofx",
    "GIT_AUTHOR_EMAIL": "nofx@localhost",
    "GIT_COMMITTER_NAME": "nofx",
    "GIT_COMMITTER_EMAIL": "nofx@localhost",
}


class CheckpointError(Exception):
    """A checkpoint cannot be shown or used; the message says why, for an API answer or a comment."""


# ---------------------------------------------------------------- recording


async def checkpointed(
    store: Store, ctx: StepContext, work: Awaitable[StepResult], blobs: Blobs | None = None
) -> StepResult:
    """Await a step's handler, then checkpoint the worktree it leaves, whether it succeeded or failed.

    The engine wraps each handler call in this; steps whose tool does not change the worktree pass straight
    through. A timed-out or cancelled step is not checkpointed (its task is being torn down). With `blobs`, each
    checkpoint also goes to shared storage, for a next step on another worker (`bot.runs.shared_checkpoints`).
    """
    try:
        result = await work
    except Exception:
        await record(store, ctx, outcome="failed", blobs=blobs)
        raise
    await record(store, ctx, outcome="waiting" if result.wait else "succeeded", blobs=blobs)
    return result


async def record(store: Store, ctx: StepContext, *, outcome: str, blobs: Blobs | None = None) -> Checkpoint | None:
    """Checkpoint the step's worktree; None when the tool leaves no trace or git fails (logged, never raised:
    a checkpoint must not fail the step it records)."""
    if ctx.step.tool not in CHECKPOINT_TOOLS or ctx.workspace is None:
        return None
    try:
        checkpoint = await create(store, ctx.workspace, ctx.run, ctx.step, outcome=outcome)
    except (GitError, OSError, SQLAlchemyError, ValueError) as exc:
        log.warning("checkpoint after step %s not recorded: %s", ctx.step.name, exc)
        return None
    if blobs is not None:
        try:
            await shared_checkpoints.share(blobs, ctx.workspace, checkpoint)
        except (GitError, OSError, SQLAlchemyError, BlobError) as exc:  # a step elsewhere then fails, saying so
            log.warning("checkpoint %s not stored for other workers: %s", checkpoint.n, exc)
    return checkpoint


async def create(store: Store, worktree: Worktree, run: Run, step: Step, *, outcome: str) -> Checkpoint:
    """Commit the worktree's full state on the next `refs/nofx/runs/<run>/<n>` and record it.

    The ref is created with "must not exist yet" (`update-ref <ref> <new> ''`), so two steps checkpointing at
    once get different numbers: the loser sees the ref taken and tries the next number on top of the winner.
    """
    if not _REF_SAFE.fullmatch(run.id):
        raise ValueError(f"run id cannot name a ref: {run.id!r}")
    tree = await _snapshot_tree(worktree)
    head = (await _git_in(worktree, "rev-parse", "HEAD")).strip()
    branch = (await _git_in(worktree, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)).strip() or None
    message = f"nofx checkpoint after {step.name} ({step.tool}, {outcome})\n\nRun {run.id}, step {step.id}.\n"
    for _attempt in range(20):
        # Numbers also continue after recorded ones: a mirror cloned anew (evicted meanwhile) has lost the refs.
        # The records are read first: a ref is made before its record, so the mirror read next is never behind
        # them (read after, a record made meanwhile gave a number whose parent the older listing did not have).
        recorded = _highest_recorded(store, run.id)
        in_mirror, parent = await _latest(worktree, run.id)
        n = max(in_mirror, recorded) + 1
        parent = parent or start_point(store, run.id) or worktree.start_sha
        commit = (
            await _git_in(worktree, "commit-tree", tree, "-p", parent, "-F", "-", env=_IDENTITY, input=message)
        ).strip()
        ref = f"{REF_PREFIX}/{run.id}/{n}"
        try:
            await _git_in(worktree, "update-ref", "--no-deref", ref, commit, "")
        except GitError:
            if await _git_in(worktree, "rev-parse", "--verify", "--quiet", ref, check=False):
                continue  # another step took this number meanwhile
            raise
        checkpoint = Checkpoint(
            run_id=run.id,
            n=n,
            step_id=step.id,
            step_name=step.name,
            tool=step.tool,
            outcome=outcome,
            ref=ref,
            commit_sha=commit,
            tree_sha=tree,
            parent_sha=parent,
            artifacts=_artifact_digests(store, run.id),
            head_sha=head,
            head_branch=branch,
        )
        try:
            with store.session() as session:
                session.add(checkpoint)
        except IntegrityError:
            continue  # recorded by another process between our look and our insert: take the next number
        break
    else:
        raise GitError(["update-ref", ref], None, "", summary="no free checkpoint number after 20 attempts")
    records.record_event(
        store,
        run.id,
        "checkpoint.created",
        {"n": n, "step": step.name, "outcome": outcome, "commit": commit, "ref": ref},
        step.id,
    )
    log.info("checkpoint %s after %s: %s", n, step.name, commit[:12])
    return checkpoint


async def _snapshot_tree(worktree: Worktree) -> str:
    """`git add -A` into a copy of the worktree's index, then `write-tree`: the tree of every non-ignored file.

    The copy sits in the worktree's admin dir, inside the mirror and out of reach of the checkout's code.
    """
    admin = await _admin_dir(worktree)
    index = admin / f"nofx-checkpoint-{uuid.uuid4().hex}.index"
    try:
        # Starting from the real index reuses its stat cache: only files that changed are hashed again.
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(shutil.copyfile, admin / "index", index)
        env = {"GIT_INDEX_FILE": str(index)}
        await _git_in(worktree, "add", "--all", env=env)
        return (await _git_in(worktree, "write-tree", env=env)).strip()
    finally:
        index.unlink(missing_ok=True)


async def _admin_dir(worktree: Worktree) -> Path:
    return worktree.git_dir or Path((await _git_in(worktree, "rev-parse", "--absolute-git-dir")).strip())


def _highest_recorded(store: Store, run_id: str) -> int:
    with store.session() as session:
        statement = select(Checkpoint.n).where(Checkpoint.run_id == run_id).order_by(col(Checkpoint.n).desc())
        return session.exec(statement).first() or 0


async def _latest(worktree: Worktree, run_id: str) -> tuple[int, str | None]:
    """The highest checkpoint number of the run in the mirror, and its commit."""
    listing = await _git_in(worktree, "for-each-ref", "--format=%(refname) %(objectname)", f"{REF_PREFIX}/{run_id}/")
    best: tuple[int, str | None] = (0, None)
    for line in listing.splitlines():
        name, _, sha = line.partition(" ")
        tail = name.rsplit("/", 1)[-1]
        if tail.isdigit() and int(tail) > best[0]:
            best = (int(tail), sha)
    return best


def _artifact_digests(store: Store, run_id: str) -> dict[str, str]:
    """`<step>/<artifact>` → sha256 of every artifact of the run so far: the inputs and outputs the state came from."""
    with store.session() as session:
        rows = session.exec(
            select(Step.name, Artifact.name, Artifact.sha256)
            .select_from(Artifact)
            .join(Step, col(Step.id) == col(Artifact.step_id))
            .where(Artifact.run_id == run_id)
            .order_by(col(Artifact.id))
        ).all()
    return {f"{step}/{name}": digest for step, name, digest in rows}


# ---------------------------------------------------------------- reading


def list_for_run(store: Store, run_id: str) -> list[Checkpoint]:
    with store.session() as session:
        statement = select(Checkpoint).where(Checkpoint.run_id == run_id).order_by(col(Checkpoint.n))
        return list(session.exec(statement))


def get(store: Store, run_id: str, n: int) -> Checkpoint | None:
    with store.session() as session:
        return session.exec(select(Checkpoint).where(Checkpoint.run_id == run_id, Checkpoint.n == n)).first()


def describe(checkpoint: Checkpoint) -> dict[str, Any]:
    """A checkpoint as the API shows it."""
    return {
        "n": checkpoint.n,
        "step_id": checkpoint.step_id,
        "step": checkpoint.step_name,
        "tool": checkpoint.tool,
        "outcome": checkpoint.outcome,
        "ref": checkpoint.ref,
        "commit": checkpoint.commit_sha,
        "tree": checkpoint.tree_sha,
        "parent": checkpoint.parent_sha,
        "artifacts": checkpoint.artifacts,
        "created_at": checkpoint.created_at.isoformat(),
    }


def mirror_of(workspaces_root: Path, run: Run) -> Path:
    """The mirror holding a run's checkpoint refs (the web process finds it from the data dir, as workers do)."""
    owner, repo = run.repository.split("/", 1)
    return Workspaces(workspaces_root).mirror_path(run.installation_id, owner, repo)


def start_point(store: Store, run_id: str) -> str | None:
    """The checkpoint commit a resumed run starts from, or None for a run that starts from its base."""
    with store.session() as session:
        start = session.get(RunStart, run_id)
        return start.checkpoint_sha if start else None


def written_files(store: Store, run_id: str) -> list[str]:
    """Paths the run inherited as written from the run it was resumed from (for `git_pr` to commit with its own)."""
    with store.session() as session:
        start = session.get(RunStart, run_id)
        return list(start.files) if start else []


async def restore(worktree: Worktree, sha: str) -> bool:
    """Make a fresh worktree's files those of a checkpoint; HEAD and the branch stay at their start.

    The restored changes show as uncommitted, exactly as they were in the run they come from. Idempotent per
    worktree (a marker in its admin dir): a later step preparing the same worktree must not undo its predecessors.
    Returns False when the worktree was restored already.
    """
    marker = await _admin_dir(worktree) / RESTORED_MARKER
    if marker.exists():
        return False
    # index and files := the checkpoint (files tracked at the start but absent there are removed) ...
    await _git_in(worktree, "read-tree", "--reset", "-u", sha)
    # ... then the index back to HEAD, so the difference is the run's own work, as before.
    await _git_in(worktree, "reset", "--quiet")
    marker.write_text(sha + "\n")
    return True


async def _git_in(
    worktree: Worktree, *args: str, env: dict[str, str] | None = None, input: str | None = None, check: bool = True
) -> str:
    """git in the worktree under the checkpoints' own time limit."""
    encoded = input.encode() if input is not None else None
    return await worktree.git(*args, env=env, input=encoded, check=check, timeout_s=GIT_TIMEOUT_S)
