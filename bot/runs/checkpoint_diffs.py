"""A structured diff between two checkpoint commits, read from the mirror for the API and the RCA bundle.

Each checkpoint's diff against the one before it is also stored beside its bundle when the checkpoint is shared
(`store`), so the API and RCA bundles show it from any process: the web has no worker's disk, and a mirror can be
evicted. Other pairs of checkpoints need a mirror that holds both.

The patch is parsed by the one diff parser (`bot.workspace.diffs`); `--name-status -z` gives each file's exact path
and status, whatever characters the path holds, and a patch longer than `max_bytes` lists its remaining files
without hunks.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.blobs import Blobs
from bot.models import Checkpoint
from bot.workspace.diffs import Hunk, parse_git_diff
from bot.workspace.git import GitError, git, git_env, git_or_none, run_git

GIT_TIMEOUT_S = 300.0
MAX_PATCH_BYTES = 2 * 2**20  # a diff larger than this lists its remaining files without hunks
_STATUS = {"A": "added", "M": "modified", "D": "deleted", "R": "renamed", "C": "copied", "T": "type_changed"}


class CheckpointGone(Exception):
    """The checkpoint's commit is no longer in the mirror (the mirror was evicted): its diff cannot be shown."""


@dataclass(frozen=True)
class StoredDiff:
    """A checkpoint's diff against the one before it, as stored: the API's structure and the plain patch."""

    structured: dict[str, Any]
    patch: str


async def store(blobs: Blobs, mirror: Path, checkpoint: Checkpoint) -> None:
    """Compute the checkpoint's diff against its parent in the mirror and store both forms beside its bundle."""
    structured = await diff(mirror, checkpoint.parent_sha, checkpoint.commit_sha)
    patch = await patch_text(mirror, checkpoint.parent_sha, checkpoint.commit_sha)
    await asyncio.to_thread(blobs.put, _key(checkpoint, "diff.json"), json.dumps(structured).encode())
    await asyncio.to_thread(blobs.put, _key(checkpoint, "patch"), patch.encode())


def stored(blobs: Blobs, checkpoint: Checkpoint) -> StoredDiff | None:
    """The checkpoint's stored diff, or None when it was never stored (made before diffs were, or not shared)."""
    structured, patch = blobs.get(_key(checkpoint, "diff.json")), blobs.get(_key(checkpoint, "patch"))
    if structured is None or patch is None:
        return None
    return StoredDiff(json.loads(structured), patch.decode(errors="replace"))


def _key(checkpoint: Checkpoint, kind: str) -> str:
    return f"runs/{checkpoint.run_id}/checkpoints/{checkpoint.n}.{kind}"


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
    blocks = parse_git_diff(patch)
    files: list[dict[str, Any]] = []
    position = 0
    for entry in entries:
        # A type change (file <-> symlink) is one name-status entry but two patch blocks (a deletion, a creation).
        expected = 2 if entry.status == "T" else 1
        own = blocks[position : position + expected]
        position += expected
        shown = len(own) == expected  # otherwise the patch was cut before this file
        hunks = [_hunk(hunk) for block in (own if shown else []) for hunk in block.hunks]
        lines = [line["type"] for hunk in hunks for line in hunk["lines"]]
        files.append(
            {
                "path": entry.path,
                "old_path": entry.old_path or entry.path,
                "status": _STATUS.get(entry.status, "unknown"),
                "similarity": entry.similarity,
                "binary": shown and any(block.binary for block in own),
                "additions": lines.count("add") if shown else None,
                "deletions": lines.count("del") if shown else None,
                "truncated": not shown,
                "hunks": hunks,
            }
        )
    return files


def _hunk(hunk: Hunk) -> dict[str, Any]:
    """A parsed hunk as the API shows it: each line with its old and new line numbers."""
    lines: list[dict[str, Any]] = []
    old_no, new_no = hunk.old_start, hunk.new_start
    for text in hunk.lines:
        kind = text[:1]
        if kind == "\\":  # "\ No newline at end of file" belongs to the line before it
            if lines:
                lines[-1]["no_newline_at_end"] = True
        elif kind == "+":
            lines.append({"type": "add", "old": None, "new": new_no, "text": text[1:]})
            new_no += 1
        elif kind == "-":
            lines.append({"type": "del", "old": old_no, "new": None, "text": text[1:]})
            old_no += 1
        else:
            lines.append({"type": "context", "old": old_no, "new": new_no, "text": text[1:]})
            old_no, new_no = old_no + 1, new_no + 1
    return {
        "header": hunk.header,
        "section": hunk.section,
        "old_start": hunk.old_start,
        "old_lines": hunk.old_count,
        "new_start": hunk.new_start,
        "new_lines": hunk.new_count,
        "lines": lines,
    }


async def _git_at(mirror: Path, *args: str) -> str:
    return await git(*args, cwd=mirror, extra_env={"GIT_DIR": str(mirror)}, timeout_s=GIT_TIMEOUT_S)


async def _git_limited(mirror: Path, args: list[str], max_bytes: int) -> tuple[str, bool]:
    """stdout of a git command in the mirror, cut at the last file boundary before `max_bytes` when longer
    (the rest is not even read): every file block it returns is complete."""
    env = {**git_env(None), "GIT_DIR": str(mirror)}
    result = await run_git(args, env=env, cwd=mirror, timeout_s=GIT_TIMEOUT_S, max_bytes=max_bytes)
    if result.truncated:
        data = result.stdout.encode()
        return data[: data.rfind(b"\ndiff --git ", 0, max_bytes) + 1].decode(errors="replace"), True
    if result.returncode != 0:
        raise GitError(args, result.returncode, result.stderr)
    return result.stdout, False


async def _has_commit(mirror: Path, sha: str) -> bool:
    if not mirror.is_dir():  # noqa: ASYNC240 - a stat, cheaper than a thread hop
        return False
    found = await git_or_none("cat-file", "-e", f"{sha}^{{commit}}", cwd=mirror, extra_env={"GIT_DIR": str(mirror)})
    return found is not None
