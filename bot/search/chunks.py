"""A repository's tracked text files at one commit, cut into line-numbered chunks the embeddings model reads whole.

Read straight from git objects (`ls-tree` and `cat-file --batch`), so a bare mirror works as well as a checkout
and nothing in a worktree (untracked or generated files) is indexed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.search.embeddings import Embedder
from bot.workspace.git import git_env, run_git

CHUNK_LINES = 40
CHUNKER = "lines-fit-1"  # recorded with each indexed repository: another way of cutting re-indexes it
MAX_FILE_BYTES = 512 * 1024
SKIPPED_NAMES = frozenset(
    {"package-lock.json", "yarn.lock", "pnpm-lock.yaml", "poetry.lock", "Cargo.lock", "go.sum", "uv.lock"}
)


@dataclass(frozen=True)
class Chunk:
    """Lines `start`..`end` (1-based, inclusive) of `path`; `text` starts with the path so it is searchable too."""

    path: str
    start: int
    end: int
    text: str

    @property
    def id(self) -> str:
        return f"{self.path}:{self.start}"


@dataclass(frozen=True)
class FileChange:
    path: str
    deleted: bool


async def tracked_blobs(repo: Path, commit: str) -> dict[str, str]:
    """Every regular file at `commit`: path -> blob sha."""
    listing = await run_git(["ls-tree", "-r", "-z", "--full-tree", commit], env=_env(repo), cwd=repo)
    blobs: dict[str, str] = {}
    for entry in listing.stdout.split("\0"):
        if not entry:
            continue
        meta, _, path = entry.partition("\t")
        mode, kind, sha = meta.split()
        if kind == "blob" and mode in ("100644", "100755"):
            blobs[path] = sha
    return blobs


async def changed_paths(repo: Path, old: str, new: str) -> list[FileChange] | None:
    """What changed between two commits, renames as a deletion and an addition; None when `old` is not in `repo`
    (its history was rewritten, or the name it was indexed under belonged to another repository then)."""
    diff = await run_git(["diff", "--name-status", "--no-renames", "-z", old, new], env=_env(repo), cwd=repo)
    if diff.returncode != 0:
        return None
    fields = [f for f in diff.stdout.split("\0") if f]
    return [FileChange(path, status == "D") for status, path in zip(fields[::2], fields[1::2], strict=True)]


def chunker_of(embedder: Embedder) -> str:
    """What made a repository's chunks: this chunker cutting for this window (the model is recorded apart)."""
    return f"{CHUNKER}:{embedder.window}"


async def read_chunks(repo: Path, blobs: dict[str, str], embedder: Embedder) -> list[Chunk]:
    """The chunks of the given files (binary, oversized and lock files are skipped)."""
    wanted = {path: sha for path, sha in blobs.items() if Path(path).name not in SKIPPED_NAMES}
    if not wanted:
        return []
    request = "".join(f"{sha}\n" for sha in wanted.values()).encode()
    batch = await run_git(["cat-file", "--batch"], env=_env(repo), cwd=repo, input=request)
    chunks: list[Chunk] = []
    for path, content in zip(wanted, _objects(batch.stdout_bytes), strict=True):
        if len(content) > MAX_FILE_BYTES or b"\0" in content[:8192]:
            continue
        chunks.extend(chunk_text(path, content.decode("utf-8", "replace"), embedder))
    return chunks


def chunk_text(path: str, text: str, embedder: Embedder) -> Iterator[Chunk]:
    """Whole lines, at most CHUNK_LINES, while the path and they fit the model's window (a model ignores what is
    past it). A line longer than the whole window is a chunk alone: the model reads its start."""
    lines = text.splitlines()
    if not lines:
        return
    header, *sizes = embedder.count_tokens([path, *lines])
    budget = embedder.window - header
    start = 0
    while start < len(lines):
        end, used = start + 1, sizes[start]
        while end < len(lines) and end - start < CHUNK_LINES and used + sizes[end] <= budget:
            used += sizes[end]
            end += 1
        window = lines[start:end]
        if any(line.strip() for line in window):
            body = "\n".join(window)
            yield Chunk(path, start + 1, end, f"{path}\n{body}")
        start = end


def _objects(raw: bytes) -> Iterable[bytes]:
    """Split `git cat-file --batch` output: `<sha> <type> <size>\\n<content>\\n` per object."""
    position = 0
    while position < len(raw):
        header_end = raw.index(b"\n", position)
        header = raw[position:header_end].split()
        size = int(header[2]) if len(header) == 3 else 0
        start = header_end + 1
        yield raw[start : start + size]
        position = start + size + 1


def _env(repo: Path) -> dict[str, str]:
    return git_env(None)


def paths_of(chunks: Sequence[Chunk]) -> set[str]:
    return {chunk.path for chunk in chunks}
