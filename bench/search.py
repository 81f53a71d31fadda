"""The semantic index with the local model on the CPU: a cold index of a generated repository (time, disk),
a warm re-index after a push that changes a few files, and query latency.

Generates a repository with `--files` files through `git fast-import` (Python, JavaScript and Markdown in a
realistic mix of sizes: most files short, a long tail of long ones), indexes it with `SearchIndex.index_code` as
a worker does (embedded Chroma, `local:all-minilm-l6-v2`), pushes a commit changing `--changed` files and
re-indexes, then times `--queries` plain-language searches (`search_files`, as `search_code` asks).
Usage: .venv/bin/python bench/search.py [--files 5000] [--changed 10] [--queries 50] [--threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NOUNS = [
    "cart", "order", "invoice", "payment", "refund", "shipment", "customer", "session", "token", "product",
    "coupon", "tax", "warehouse", "subscription", "report", "email", "webhook", "account", "address", "price",
]  # fmt: skip
VERBS = [
    "create", "update", "delete", "load", "save", "validate", "send", "compute", "render", "export",
    "import", "sync", "notify", "merge", "cancel", "retry", "format", "parse", "archive", "schedule",
]  # fmt: skip
ADJECTIVES = ["pending", "expired", "failed", "draft", "paid", "active", "archived", "partial", "local", "remote"]
QUERY_SHAPES = [
    "where do we {verb} the {noun} after the {other} is {adjective}",
    "how is a {adjective} {noun} turned into a {other}",
    "code that decides whether to {verb} a {noun}",
    "documentation about {noun} and {other} handling",
    "what happens to the {noun} when the {other} fails",
    "the screen that lets people {verb} their {noun}",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=5_000, help="files in the generated repository (default 5000)")
    parser.add_argument("--changed", type=int, default=10, help="files the push changes (default 10)")
    parser.add_argument("--queries", type=int, default=50, help="queries to time (default 50)")
    parser.add_argument("--threads", type=int, help="torch's CPU threads (default: torch's, one per core)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    asyncio.run(bench(args.files, args.changed, args.queries, args.threads))


async def bench(files: int, changed: int, queries: int, threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)

    from bot.search.embeddings import LocalEmbeddings
    from bot.search.index import SearchIndex
    from bot.settings import Settings

    rng = random.Random(16)
    rows: list[tuple[str, str, str]] = []
    print(f"load average at start: {_load()}; torch threads: {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory(prefix="nofx-bench-search-") as tmp:
        repo = Path(tmp) / "repo.git"
        contents = {path: _source(rng, path) for path in _paths(rng, files)}
        started = time.perf_counter()
        first = _commit(repo, contents, parent=None)
        lines = sum(text.count("\n") for text in contents.values())
        size = sum(len(text.encode()) for text in contents.values())
        kinds = {ext: sum(p.endswith(ext) for p in contents) for ext in (".py", ".js", ".md")}
        print(
            f"repository: {files} files ({', '.join(f'{n} {ext}' for ext, n in kinds.items())}), {lines:,} lines, "
            f"{size / 2**20:.1f} MiB (generated in {time.perf_counter() - started:.1f} s)"
        )

        embedder = _Timed(LocalEmbeddings())
        started = time.perf_counter()
        embedder.embed(["warm up"])
        rows.append(("model load", f"{time.perf_counter() - started:.1f} s", "all-MiniLM-L6-v2, CPU, once per process"))
        embedder.reset()

        settings = Settings(data_dir=Path(tmp) / "data", database_url="sqlite://", redis_url=None)
        index = SearchIndex.open(settings, embedder)
        started = time.perf_counter()
        report = await index.index_code(1, "bench/repo", repo, first)
        cold = time.perf_counter() - started
        rows.append(
            (
                "cold index",
                f"{cold:.1f} s",
                f"{report.files} files, {report.chunks:,} chunks; embedding {embedder.seconds:.1f} s "
                f"({report.chunks / embedder.seconds:.1f} chunks/s), git + Chroma {cold - embedder.seconds:.1f} s",
            )
        )
        rows.append(("disk", _mib(settings.data_dir / "chroma"), "the embedded Chroma under <data>/chroma"))

        pushed = {
            path: contents[path] + _source(rng, path, rng.randint(5, 30))
            for path in rng.sample(sorted(contents), changed)
        }
        second = _commit(repo, pushed, parent=first)
        embedder.reset()
        started = time.perf_counter()
        report = await index.index_code(1, "bench/repo", repo, second)
        warm = time.perf_counter() - started
        rows.append(
            (
                f"warm re-index ({changed} files changed)",
                f"{warm:.2f} s",
                f"{report.files} files, {report.chunks} chunks (embedding {embedder.seconds:.2f} s); "
                f"cold/warm {cold / warm:.0f}x",
            )
        )

        latencies = []
        for n in range(queries):
            query = _query(random.Random(n))
            started = time.perf_counter()
            index.search_files(1, query, repo="bench/repo", limit=10)
            latencies.append((time.perf_counter() - started) * 1000)
        p50, p95 = statistics.median(latencies), statistics.quantiles(latencies, n=20)[-1]
        rows.append((f"query ({queries}, top 10 files)", f"p50 {p50:.0f} ms", f"p95 {p95:.0f} ms"))
    _table(rows)
    print(f"load average at end: {_load()}")


class _Timed:
    """The embedder, with the seconds it spent and the texts it embedded counted (the rest is git and Chroma)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.name = inner, inner.name
        self.seconds, self.texts = 0.0, 0

    @property
    def window(self) -> int:
        return int(self.inner.window)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        counts: list[int] = self.inner.count_tokens(texts)
        return counts

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        started = time.perf_counter()
        vectors: list[list[float]] = self.inner.embed(texts)
        self.seconds += time.perf_counter() - started
        self.texts += len(texts)
        if len(texts) > 1:  # a batch of the index, not a query: a long cold index shows its rate as it goes
            print(f"  embedded {self.texts:,} chunks, {self.texts / self.seconds:.1f}/s", file=sys.stderr, flush=True)
        return vectors

    def reset(self) -> None:
        self.seconds, self.texts = 0.0, 0


# --- the generated repository ---------------------------------------------------------------------------------


def _paths(rng: random.Random, files: int) -> list[str]:
    """55% Python, 25% JavaScript, 20% Markdown, in packages of a few dozen files."""
    paths = []
    for n in range(files):
        roll, area = rng.random(), rng.choice(NOUNS)
        if roll < 0.55:
            paths.append(f"src/{area}/{rng.choice(VERBS)}_{n}.py")
        elif roll < 0.80:
            paths.append(f"web/{area}/{rng.choice(VERBS)}{rng.choice(NOUNS).title()}{n}.js")
        else:
            paths.append(f"docs/{area}/{rng.choice(NOUNS)}-{n}.md")
    return paths


def _length(rng: random.Random, median: int) -> int:
    """Lines of a file: log-normal around `median`, so most are short and a few run to hundreds of lines."""
    return max(8, min(1200, int(rng.lognormvariate(0, 0.9) * median)))


def _source(rng: random.Random, path: str, lines: int | None = None) -> str:
    if path.endswith(".md"):
        return _markdown(rng, lines or _length(rng, 45))
    if path.endswith(".js"):
        return _javascript(rng, lines or _length(rng, 70))
    return _python(rng, lines or _length(rng, 90))


def _python(rng: random.Random, lines: int) -> str:
    noun, out = rng.choice(NOUNS), [f'"""{_sentence(rng)}"""', "", "from __future__ import annotations", ""]
    while len(out) < lines:
        verb, other, adjective = rng.choice(VERBS), rng.choice(NOUNS), rng.choice(ADJECTIVES)
        out += [
            "",
            f"def {verb}_{noun}({noun}: dict, {other}_id: int, *, {adjective}: bool = False) -> dict:",
            f'    """{_sentence(rng)}"""',
            f"    if {adjective} and not {noun}.get('{other}'):",
            f"        raise ValueError('{noun} without {other} is {adjective}')",
            f"    total = sum(item['{rng.choice(NOUNS)}'] * item.get('qty', 1) for item in {noun}['items'])",
            f"    {noun}['{other}_id'] = {other}_id",
            f"    {noun}['total'] = round(total * {rng.uniform(0.5, 1.5):.2f}, 2)",
            f"    return {noun}",
        ]
    return "\n".join(out[:lines]) + "\n"


def _javascript(rng: random.Random, lines: int) -> str:
    noun, out = rng.choice(NOUNS), [f"// {_sentence(rng)}", "import { api } from '../api.js';", ""]
    while len(out) < lines:
        verb, other = rng.choice(VERBS), rng.choice(NOUNS)
        name = f"{verb}{noun.title()}{other.title()}"
        out += [
            "",
            f"export async function {name}({noun}Id, options = {{}}) {{",
            f"  const {noun} = await api.get(`/{noun}s/${{{noun}Id}}`);",
            f"  if (!{noun}.{other}) {{",
            f"    throw new Error('{_sentence(rng)}');",
            "  }",
            f"  return api.post(`/{other}s`, {{ ...options, {noun}Id, state: '{rng.choice(ADJECTIVES)}' }});",
            "}",
        ]
    return "\n".join(out[:lines]) + "\n"


def _markdown(rng: random.Random, lines: int) -> str:
    out = [f"# {rng.choice(NOUNS).title()} {rng.choice(VERBS)}s", ""]
    while len(out) < lines:
        out += [f"## {_sentence(rng)}", "", _sentence(rng) + " " + _sentence(rng), "", f"- {_sentence(rng)}", ""]
    return "\n".join(out[:lines]) + "\n"


def _sentence(rng: random.Random) -> str:
    noun, other = rng.choice(NOUNS), rng.choice(NOUNS)
    return (
        f"{rng.choice(VERBS).title()} the {rng.choice(ADJECTIVES)} {noun} "
        f"before the {other} is ready to {rng.choice(VERBS)} the {rng.choice(NOUNS)}."
    )


def _query(rng: random.Random) -> str:
    return rng.choice(QUERY_SHAPES).format(
        verb=rng.choice(VERBS), noun=rng.choice(NOUNS), other=rng.choice(NOUNS), adjective=rng.choice(ADJECTIVES)
    )


def _commit(repo: Path, files: dict[str, str], *, parent: str | None) -> str:
    """A commit on main writing `files` (a bare repository made on the first call); returns its sha."""
    if parent is None:
        repo.parent.mkdir(parents=True, exist_ok=True)
        _git(None, "init", "--quiet", "--bare", "--initial-branch=main", str(repo))
    stream = io.BytesIO()
    message = b"bench\n"
    stream.write(b"commit refs/heads/main\ncommitter Bench <bench@example.test> 1700000000 +0000\n")
    stream.write(b"data %d\n%s" % (len(message), message))
    if parent is not None:
        stream.write(f"from {parent}\n".encode())
    for path, text in files.items():
        data = text.encode()
        stream.write(b"M 100644 inline %s\ndata %d\n%s\n" % (path.encode(), len(data), data))
    stream.write(b"\n")
    _git(repo, "fast-import", "--quiet", input=stream.getvalue())
    return _git(repo, "rev-parse", "main").strip()


def _git(repo: Path | None, *args: str, input: bytes | None = None) -> str:
    env = {"PATH": os.environ.get("PATH", os.defpath), "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
    command = ["git", *(["--git-dir", str(repo)] if repo else []), *args]
    return subprocess.run(command, input=input, capture_output=True, env=env, check=True).stdout.decode()


# --- output ---------------------------------------------------------------------------------------------------


def _mib(path: Path) -> str:
    """Disk usage, as `du` counts it."""
    used = sum(os.lstat(os.path.join(d, f)).st_blocks * 512 for d, _, names in os.walk(path) for f in names)
    return f"{used / 2**20:.1f} MiB"


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _table(rows: list[tuple[str, str, str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    for name, value, detail in rows:
        print(f"{name:<{widths[0]}}  {value:>{widths[1]}}  {detail}")


if __name__ == "__main__":
    main()
