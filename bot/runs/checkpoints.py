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
import os
import re
import shlex
import shutil
import signal
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import col, select

from bot.models import Artifact, Checkpoint, Run, RunStart, Step
from bot.plans import ALL_TOOLS, Plan, PlanError, StepSpec
from bot.queue import WorkQueue
from bot.repo_config import RepoConfig
from bot.repo_config import describe as describe_config
from bot.runs import policy
from bot.runs import records as runs
from bot.runs.contract import StepContext, StepResult
from bot.runs.progress import enqueue_progress
from bot.store import Store
from bot.workspace.git import GitError, git_env
from bot.workspace.mirrors import Workspaces
from bot.workspace.worktrees import Worktree

log = logging.getLogger(__name__)

CHECKPOINT_TOOLS = frozenset({"workspace:write", "git_ops", "git_pr", "gate:test", "gate:lint", "gate:typecheck"})
REF_PREFIX = "refs/nofx/runs"
GIT_TIMEOUT_S = 300.0
MAX_PATCH_BYTES = 2 * 2**20  # a diff larger than this lists its remaining files without hunks
RESTORED_MARKER = "nofx-restored"  # in the worktree's admin dir, out of reach of the checkout's code
_REF_SAFE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@ ?(.*)$")
_IDENTITY = {
    "GIT_AUTHOR_NAME": "nofx",
    "GIT_AUTHOR_EMAIL": "nofx@localhost",
    "GIT_COMMITTER_NAME": "nofx",
    "GIT_COMMITTER_EMAIL": "nofx@localhost",
}
_STATUS = {"A": "added", "M": "modified", "D": "deleted", "R": "renamed", "C": "copied", "T": "type_changed"}


class CheckpointError(Exception):
    """A checkpoint cannot be shown or used; the message says why, for an API answer or a comment."""


class CheckpointGone(CheckpointError):
    """The checkpoint's commit is no longer in the mirror (the mirror was evicted): its diff cannot be shown."""


class ResumeError(CheckpointError):
    """A run cannot be resumed from this checkpoint (unknown run or checkpoint, nothing left to run)."""


# ---------------------------------------------------------------- recording


async def checkpointed(store: Store, ctx: StepContext, work: Awaitable[StepResult]) -> StepResult:
    """Await a step's handler, then checkpoint the worktree it leaves, whether it succeeded or failed.

    The engine wraps each handler call in this; steps whose tool does not change the worktree pass straight
    through. A timed-out or cancelled step is not checkpointed (its task is being torn down).
    """
    try:
        result = await work
    except Exception:
        await record(store, ctx, outcome="failed")
        raise
    await record(store, ctx, outcome="waiting" if result.wait else "succeeded")
    return result


async def record(store: Store, ctx: StepContext, *, outcome: str) -> Checkpoint | None:
    """Checkpoint the step's worktree; None when the tool leaves no trace or git fails (logged, never raised:
    a checkpoint must not fail the step it records)."""
    if ctx.step.tool not in CHECKPOINT_TOOLS or ctx.workspace is None:
        return None
    try:
        return await create(store, ctx.workspace, ctx.run, ctx.step, outcome=outcome)
    except (GitError, OSError, SQLAlchemyError, ValueError) as exc:
        log.warning("checkpoint after step %s not recorded: %s", ctx.step.name, exc)
        return None


async def create(store: Store, worktree: Worktree, run: Run, step: Step, *, outcome: str) -> Checkpoint:
    """Commit the worktree's full state on the next `refs/nofx/runs/<run>/<n>` and record it.

    The ref is created with "must not exist yet" (`update-ref <ref> <new> ''`), so two steps checkpointing at
    once get different numbers: the loser sees the ref taken and tries the next number on top of the winner.
    """
    if not _REF_SAFE.fullmatch(run.id):
        raise ValueError(f"run id cannot name a ref: {run.id!r}")
    tree = await _snapshot_tree(worktree)
    message = f"nofx checkpoint after {step.name} ({step.tool}, {outcome})\n\nRun {run.id}, step {step.id}.\n"
    for _attempt in range(20):
        in_mirror, parent = await _latest(worktree, run.id)
        # Numbers also continue after recorded ones: a mirror cloned anew (evicted meanwhile) has lost the refs.
        n = max(in_mirror, _highest_recorded(store, run.id)) + 1
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
        )
        try:
            with store.session() as session:
                session.add(checkpoint)
        except IntegrityError:
            continue  # recorded by another process between our look and our insert: take the next number
        break
    else:
        raise GitError(["update-ref", ref], None, "", summary="no free checkpoint number after 20 attempts")
    runs.record_event(
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


async def diff(mirror: Path, base_sha: str, head_sha: str, *, max_bytes: int = MAX_PATCH_BYTES) -> dict[str, Any]:
    """A structured diff between two commits of the mirror: files with status, counts and hunks; overall stats."""
    for sha in (base_sha, head_sha):
        if not await _has_commit(mirror, sha):
            raise CheckpointGone(f"commit {sha[:12]} is no longer in the mirror (evicted); its diff cannot be shown")
    options = ("--no-color", "--no-ext-diff", "--no-textconv", "--no-relative", "-M")
    names = await _git_at(mirror, "diff", *options, "--name-status", "-z", base_sha, head_sha)
    patch, truncated = await _git_limited(
        mirror,
        ["diff", *options, "--src-prefix=a/", "--dst-prefix=b/", base_sha, head_sha],
        max_bytes,
    )
    files = _parse(_entries(names), patch)
    return {
        "base": base_sha,
        "head": head_sha,
        "stats": {
            "files": len(files),
            "additions": sum(f["additions"] or 0 for f in files),
            "deletions": sum(f["deletions"] or 0 for f in files),
        },
        "truncated": truncated,
        "files": files,
    }


async def patch_text(mirror: Path, base_sha: str, head_sha: str, *, max_bytes: int = MAX_PATCH_BYTES) -> str:
    """The plain unified diff, for people and for the RCA bundle."""
    text, truncated = await _git_limited(
        mirror,
        [
            "diff",
            "--no-color",
            "--no-ext-diff",
            "--no-textconv",
            "--no-relative",
            "-M",
            "--stat",
            "-p",
            base_sha,
            head_sha,
        ],
        max_bytes,
    )
    return text + ("\n[diff truncated]\n" if truncated else "")


@dataclass
class _Entry:
    status: str
    path: str
    old_path: str | None = None
    similarity: int | None = None


def _entries(name_status: str) -> list[_Entry]:
    """`--name-status -z`: exact paths, whatever characters they hold (the patch headers quote them)."""
    fields = name_status.split("\0")
    entries: list[_Entry] = []
    i = 0
    while i < len(fields) and fields[i]:
        code = fields[i]
        if code[0] in "RC":
            entries.append(_Entry(code[0], fields[i + 2], fields[i + 1], int(code[1:] or 0)))
            i += 3
        else:
            entries.append(_Entry(code[0], fields[i + 1]))
            i += 2
    return entries


def _parse(entries: list[_Entry], patch: str) -> list[dict[str, Any]]:
    blocks: list[list[str]] = []
    for line in patch.split("\n"):
        if line.startswith("diff --git "):
            blocks.append([])
        elif blocks:
            blocks[-1].append(line)
    files: list[dict[str, Any]] = []
    position = 0
    for entry in entries:
        # A type change (file <-> symlink) is one name-status entry but two patch blocks (a deletion, a creation).
        expected = 2 if entry.status == "T" else 1
        own = blocks[position : position + expected]
        position += expected
        shown = len(own) == expected  # otherwise the patch was cut before this file
        hunks: list[dict[str, Any]] = []
        binary = False
        for block in own if shown else []:
            block_hunks, block_binary = _hunks(block)
            hunks += block_hunks
            binary = binary or block_binary
        lines = [line["type"] for hunk in hunks for line in hunk["lines"]]
        files.append(
            {
                "path": entry.path,
                "old_path": entry.old_path or entry.path,
                "status": _STATUS.get(entry.status, "unknown"),
                "similarity": entry.similarity,
                "binary": binary,
                "additions": lines.count("add") if shown else None,
                "deletions": lines.count("del") if shown else None,
                "truncated": not shown,
                "hunks": hunks,
            }
        )
    return files


def _hunks(block: list[str]) -> tuple[list[dict[str, Any]], bool]:
    """Hunks of one file's patch, each line with its old and new line numbers; counts decide where a hunk ends,
    so a removed line that reads `-- x` is never taken for a header."""
    hunks: list[dict[str, Any]] = []
    binary = False
    i = 0
    while i < len(block):
        line = block[i]
        i += 1
        if line.startswith("Binary files ") or line == "GIT binary patch":
            binary = True
            continue
        match = _HUNK.match(line)
        if match is None:
            continue
        old_start, old_count = int(match[1]), int(match[2] if match[2] is not None else 1)
        new_start, new_count = int(match[3]), int(match[4] if match[4] is not None else 1)
        hunk: dict[str, Any] = {
            "header": line,
            "section": match[5],
            "old_start": old_start,
            "old_lines": old_count,
            "new_start": new_start,
            "new_lines": new_count,
            "lines": [],
        }
        old_no, new_no = old_start, new_start
        old_left, new_left = old_count, new_count
        while i < len(block) and (old_left > 0 or new_left > 0 or block[i].startswith("\\")):
            text = block[i]
            i += 1
            kind = text[:1]
            if kind == "\\":  # "\ No newline at end of file" belongs to the line before it
                if hunk["lines"]:
                    hunk["lines"][-1]["no_newline_at_end"] = True
                continue
            if kind == "+":
                hunk["lines"].append({"type": "add", "old": None, "new": new_no, "text": text[1:]})
                new_no, new_left = new_no + 1, new_left - 1
            elif kind == "-":
                hunk["lines"].append({"type": "del", "old": old_no, "new": None, "text": text[1:]})
                old_no, old_left = old_no + 1, old_left - 1
            else:  # context (" "), or an empty line where a tool stripped the space
                hunk["lines"].append({"type": "context", "old": old_no, "new": new_no, "text": text[1:]})
                old_no, new_no = old_no + 1, new_no + 1
                old_left, new_left = old_left - 1, new_left - 1
        hunks.append(hunk)
    return hunks, binary


# ---------------------------------------------------------------- resuming


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


def resume(
    store: Store,
    queue: WorkQueue,
    run_id: str,
    n: int,
    by: str,
    *,
    trigger: str = "api",
    delivery_id: str | None = None,
    config: RepoConfig | None = None,
) -> Run:
    """Start a new run from checkpoint `n` of `run_id`: same thread and request, the plan's steps after the
    checkpoint's step, on a branch of its own; its worktree starts from the checkpoint (`start_point`).

    `config` is the repository's config as it is now (a `/nofx retry --from` read it): the new run runs under
    it and its plan passes the policy again. Without it (the runs API, which reads no repository) the source
    run's config is kept; the engine still checks each step against it.
    """
    source = runs.get_run(store, run_id)
    if source is None:
        raise ResumeError(f"run {run_id} does not exist")
    checkpoint = get(store, run_id, n)
    if checkpoint is None:
        raise ResumeError(f"run {run_id} has no checkpoint {n}")
    steps = runs.steps_of(store, run_id)
    at = next((s for s in steps if s.id == checkpoint.step_id), None)
    if at is None:
        raise ResumeError(f"the step of checkpoint {n} is not part of run {run_id}")
    plan = _remaining_plan(source, at.position)
    if not plan.steps:
        raise ResumeError(f"checkpoint {n} is after {at.name}, the last step: there is nothing left to run")
    if config is not None:
        try:
            plan = policy.enforce(plan.to_dict(), config, available_tools=ALL_TOOLS)
        except PlanError as exc:
            raise ResumeError(f"the rest of the plan breaks the repository's current policy: {exc}") from None
    request = runs.RunRequest(
        installation_id=source.installation_id,
        repository=source.repository,
        thread_number=source.thread_number,
        thread_kind=source.thread_kind,
        request=source.request,
        requester=source.requester,
        requester_id=source.requester_id,
        trigger=trigger,
        delivery_id=delivery_id,
        clone_url=source.clone_url,
        thread_url=source.thread_url,
        default_branch=source.default_branch,
        head_sha=source.head_sha,
        branch=_branch_for(store, source, n),
    )
    run = runs.create(store, request, plan, describe_config(config) if config is not None else source.config)
    files = set(written_files(store, run_id))
    files |= {
        path
        for s in steps
        if s.tool == "workspace:write" and s.position <= at.position
        for path in s.output.get("files", [])
    }
    with store.session() as session:
        session.add(
            RunStart(
                run_id=run.id,
                checkpoint_sha=checkpoint.commit_sha,
                source_run_id=run_id,
                source_n=n,
                files=sorted(files),
                by=by[:100],
            )
        )
    detail = {"source_run_id": run_id, "n": n, "commit": checkpoint.commit_sha, "by": by}
    runs.record_event(store, run.id, "run.resumed_from", detail)
    runs.record_event(store, run_id, "run.branched", {"run_id": run.id, "n": n, "by": by})
    enqueue_progress(store, queue, runs.start(store, run.id), run.id)
    log.info("run %s resumed from checkpoint %s of run %s by %s", run.id, n, run_id, by)
    return runs.get_run(store, run.id) or run


def _remaining_plan(source: Run, position: int) -> Plan:
    """The plan's steps after `position`; dependencies on steps that already ran are dropped (they are done)."""
    raw = source.plan.get("steps", [])[position + 1 :]
    names = {spec["name"] for spec in raw}
    specs = tuple(
        StepSpec(
            name=spec["name"],
            tool=spec["tool"],
            inputs=spec.get("inputs", {}),
            depends_on=tuple(d for d in spec.get("depends_on", []) if d in names),
            timeout_s=spec.get("timeout_s", 600),
            retries=spec.get("retries", 0),
            policy=spec.get("policy", {}),
        )
        for spec in raw
    )
    return Plan(goal=source.plan.get("goal") or source.request, steps=specs)


def _branch_for(store: Store, source: Run, n: int) -> str:
    """`<source branch>-cp<n>`, numbered on when taken: the source run's worktree may still hold its own branch."""
    stem = f"{source.branch or f'nofx/{source.thread_number}-change'}-cp{n}"
    candidate, suffix = stem, 1
    while runs.latest_run_on_branch(store, source.repository, candidate) is not None:
        suffix += 1
        candidate = f"{stem}-{suffix}"
    return candidate


# ---------------------------------------------------------------- git


async def _git_in(
    worktree: Worktree,
    *args: str,
    env: dict[str, str] | None = None,
    input: str | None = None,
    check: bool = True,
) -> str:
    """git in the worktree with GIT_DIR pinned to its admin dir, like `Worktree.git`, plus our own environment."""
    pinned = {"GIT_DIR": str(worktree.git_dir), "GIT_WORK_TREE": str(worktree.path)} if worktree.git_dir else {}
    code, out, err = await _run(list(args), cwd=worktree.path, env={**pinned, **(env or {})}, input=input)
    if check and code != 0:
        raise GitError(args, code, err)
    return out if code == 0 else ""


async def _git_at(mirror: Path, *args: str, check: bool = True) -> str:
    code, out, err = await _run(list(args), cwd=mirror, env={"GIT_DIR": str(mirror)})
    if check and code != 0:
        raise GitError(args, code, err)
    return out if code == 0 else ""


async def _run(args: list[str], *, cwd: Path, env: dict[str, str], input: str | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        "git",
        *args,
        cwd=cwd,
        env={**git_env(None), **env},
        stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(
            process.communicate(input.encode() if input is not None else None), GIT_TIMEOUT_S
        )
    except BaseException as exc:
        _kill(process)
        await process.wait()
        if isinstance(exc, TimeoutError):
            raise GitError(args, None, "", summary=f"`{shlex.join(['git', *args])}` timed out") from None
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")


async def _git_limited(mirror: Path, args: Sequence[str], max_bytes: int) -> tuple[str, bool]:
    """stdout of a git command in the mirror, cut at the last file boundary before `max_bytes` when longer
    (the rest is not even read): every file block it returns is complete."""
    process = await asyncio.create_subprocess_exec(
        "git",
        *args,
        cwd=mirror,
        env={**git_env(None), "GIT_DIR": str(mirror)},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    assert process.stdout is not None and process.stderr is not None
    chunks: list[bytes] = []
    size, truncated = 0, False
    errors = asyncio.ensure_future(process.stderr.read())  # drained alongside, so a full pipe cannot stall git
    try:
        async with asyncio.timeout(GIT_TIMEOUT_S):
            while chunk := await process.stdout.read(65536):
                chunks.append(chunk)
                size += len(chunk)
                if size > max_bytes:
                    truncated = True
                    break
            if not truncated:
                await process.wait()
    except BaseException as exc:
        _kill(process)
        await process.wait()
        errors.cancel()
        if isinstance(exc, TimeoutError):
            raise GitError(list(args), None, "", summary=f"`{shlex.join(['git', *args])}` timed out") from None
        raise
    if truncated:
        _kill(process)
        await process.wait()
    err = await errors
    data = b"".join(chunks)
    if truncated:
        data = data[: data.rfind(b"\ndiff --git ", 0, max_bytes) + 1]
    elif process.returncode != 0:
        raise GitError(list(args), process.returncode, err.decode(errors="replace"))
    return data.decode(errors="replace"), truncated


async def _has_commit(mirror: Path, sha: str) -> bool:
    if not mirror.is_dir():  # noqa: ASYNC240 - a stat, cheaper than a thread hop
        return False
    code, _, _ = await _run(["cat-file", "-e", f"{sha}^{{commit}}"], cwd=mirror, env={"GIT_DIR": str(mirror)})
    return code == 0


def _kill(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
