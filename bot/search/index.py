"""The semantic index: Chroma collections per installation for code, artifacts and runs.

Embedded (`PersistentClient` under `<data>/chroma`) unless `CHROMA_URL` names a Chroma server. Each collection
records the embeddings model that made its vectors; opening it with another model empties it, so vectors of two
models are never compared. A repository's code is indexed at one commit, recorded in the collection's metadata
(`commit:<owner/repo>`) with the chunker that cut it for the model's window (`chunker:<owner/repo>`); the next
index reads only the paths that changed since, or all of them again when the chunker differs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from bot.search import chunks
from bot.search.embeddings import Embedder
from bot.settings import Settings

Kind = Literal["code", "artifacts", "runs"]
KINDS: tuple[Kind, ...] = ("code", "artifacts", "runs")
ADD_BATCH = 256
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hit:
    """One search result: where it is and how close (cosine similarity, 1 is identical)."""

    kind: str
    repo: str
    score: float
    text: str
    path: str | None = None
    start: int | None = None
    end: int | None = None
    run_id: str | None = None
    artifact: str | None = None  # artifacts: `<step>/<file>` under the run

    @property
    def location(self) -> str:
        if self.path:
            return f"{self.path}:{self.start}"
        return f"run {self.run_id}" + (f" {self.artifact}" if self.artifact else "")


@dataclass(frozen=True)
class IndexReport:
    commit: str
    files: int
    chunks: int
    full: bool


class SearchIndex:
    """Index and query one Chroma (embedded or server) with one embedder."""

    def __init__(self, client: Any, embedder: Embedder) -> None:
        self.client = client
        self.embedder = embedder

    @classmethod
    def open(cls, settings: Settings, embedder: Embedder) -> SearchIndex:
        import chromadb  # heavy: only processes that search load it
        from chromadb.config import Settings as ChromaSettings

        chroma = ChromaSettings(anonymized_telemetry=False)
        if settings.chroma_url:
            url = urlsplit(settings.chroma_url)
            client = chromadb.HttpClient(
                host=url.hostname or "127.0.0.1",
                port=url.port or (443 if url.scheme == "https" else 8000),
                ssl=url.scheme == "https",
                settings=chroma,
            )
        else:
            path = settings.data_dir / "chroma"
            path.mkdir(parents=True, exist_ok=True)
            client = chromadb.PersistentClient(path=str(path), settings=chroma)
        return cls(client, embedder)

    # ---------------------------------------------------------------- code

    async def index_code(self, installation_id: int, repo: str, git_dir: Path, commit: str) -> IndexReport:
        """Bring the repository's code chunks to `commit`: only changed paths when an earlier commit is indexed."""
        collection = self._collection(installation_id, "code")
        key, chunker_key = f"commit:{repo}", f"chunker:{repo}"
        recorded = collection.metadata or {}
        chunker = chunks.chunker_of(self.embedder)
        previous = recorded.get(key) if recorded.get(chunker_key) == chunker else None
        if previous == commit:
            return IndexReport(commit, 0, 0, full=False)
        blobs = await chunks.tracked_blobs(git_dir, commit)
        changes = await chunks.changed_paths(git_dir, previous, commit) if previous else None
        if changes is None:
            collection.delete(where={"repo": repo})
            wanted = blobs
        else:
            gone = [change.path for change in changes]
            for start in range(0, len(gone), ADD_BATCH):
                collection.delete(where={"$and": [{"repo": repo}, {"path": {"$in": gone[start : start + ADD_BATCH]}}]})
            wanted = {c.path: blobs[c.path] for c in changes if not c.deleted and c.path in blobs}
        found = await chunks.read_chunks(git_dir, wanted, self.embedder)
        self._add(
            collection,
            ids=[f"{repo}:{chunk.id}" for chunk in found],
            texts=[chunk.text for chunk in found],
            metadatas=[{"repo": repo, "path": c.path, "start": c.start, "end": c.end} for c in found],
        )
        collection.modify(metadata={**_user_metadata(collection), key: commit, chunker_key: chunker})
        log.info("indexed %s at %s: %d files, %d chunks", repo, commit[:12], len(wanted), len(found))
        return IndexReport(commit, len(wanted), len(found), full=changes is None)

    # ---------------------------------------------------------------- runs and artifacts

    def add_run(
        self,
        installation_id: int,
        repo: str,
        run_id: str,
        request: str,
        plan: str,
        outcome: str,
        *,
        repository_id: int | None,
    ) -> None:
        """Remember a finished run (request, plan, outcome) so later requests can find similar ones."""
        text = f"request: {request}\nplan: {plan}\noutcome: {outcome}"
        meta = {"repo": repo, "run_id": run_id, "outcome": outcome, **_repository_id(repository_id)}
        self._add(self._collection(installation_id, "runs"), ids=[run_id], texts=[text], metadatas=[meta])

    def add_artifact(
        self, installation_id: int, repo: str, run_id: str, name: str, text: str, *, repository_id: int | None
    ) -> None:
        """A run's generated edits or its pull request (`name`: the artifact, `<step>/<file>`), for `kind=artifacts`."""
        meta = {"repo": repo, "run_id": run_id, "name": name, **_repository_id(repository_id)}
        self._add(self._collection(installation_id, "artifacts"), [f"{run_id}:{name}"], [text], [meta])

    # ---------------------------------------------------------------- queries

    def search(
        self,
        installation_id: int,
        query: str,
        *,
        kind: Kind = "code",
        repo: str | None,
        limit: int = 10,
        repository_id: int | None = None,
    ) -> list[Hit]:
        """The chunks (or runs, or artifacts) closest in meaning to `query`, best first. With `repository_id`,
        only what that repository made, whatever its name then: a name can have belonged to another repository
        (renamed, transferred, deleted and made again), say a private one."""
        collection = self._collection(installation_id, kind)
        if collection.count() == 0:
            return []
        [vector] = self.embedder.embed([query])
        found = collection.query(
            query_embeddings=[vector],
            n_results=min(limit, collection.count()),
            where={"repository_id": repository_id} if repository_id is not None else {"repo": repo} if repo else None,
            include=["documents", "metadatas", "distances"],
        )
        hits = []
        for text, meta, distance in zip(
            found["documents"][0], found["metadatas"][0], found["distances"][0], strict=True
        ):
            hits.append(
                Hit(
                    kind=kind,
                    repo=str(meta.get("repo")),
                    score=round(1.0 - float(distance), 4),
                    text=text,
                    path=_str_or_none(meta.get("path")),
                    start=_int_or_none(meta.get("start")),
                    end=_int_or_none(meta.get("end")),
                    run_id=_str_or_none(meta.get("run_id")),
                    artifact=_str_or_none(meta.get("name")),
                )
            )
        return hits

    def search_files(self, installation_id: int, query: str, *, repo: str, limit: int = 10) -> list[Hit]:
        """The best chunk of each file, files best first: what a person means by 'which file is about this'."""
        best: dict[str, Hit] = {}
        for hit in self.search(installation_id, query, kind="code", repo=repo, limit=limit * 4):
            if hit.path and hit.path not in best:
                best[hit.path] = hit
        return list(best.values())[:limit]

    def indexed_commit(self, installation_id: int, repo: str) -> str | None:
        value = (self._collection(installation_id, "code").metadata or {}).get(f"commit:{repo}")
        return str(value) if value else None

    # ---------------------------------------------------------------- internals

    def _collection(self, installation_id: int, kind: Kind) -> Any:
        name = collection_name(installation_id, kind)
        collection = self.client.get_or_create_collection(
            name, metadata={"embedding_model": self.embedder.name, "hnsw:space": "cosine"}, embedding_function=None
        )
        if (collection.metadata or {}).get("embedding_model") != self.embedder.name:
            log.info("collection %s was made with another embeddings model: rebuilding it", name)
            self.client.delete_collection(name)
            collection = self.client.create_collection(
                name, metadata={"embedding_model": self.embedder.name, "hnsw:space": "cosine"}, embedding_function=None
            )
        return collection

    def _add(
        self, collection: Any, ids: Sequence[str], texts: Sequence[str], metadatas: Sequence[dict[str, Any]]
    ) -> None:
        for start in range(0, len(ids), ADD_BATCH):
            batch = slice(start, start + ADD_BATCH)
            collection.upsert(
                ids=list(ids[batch]),
                embeddings=self.embedder.embed(texts[batch]),
                documents=list(texts[batch]),
                metadatas=list(metadatas[batch]),
            )


def collection_name(installation_id: int, kind: Kind) -> str:
    """`i<installation>-<kind>`; 0 is the local repository of `nofx search` / `nofx run`."""
    name = f"i{int(installation_id)}-{kind}"
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]{1,60}[a-z0-9]", name)
    return name


def _user_metadata(collection: Any) -> dict[str, Any]:
    # Chroma refuses to change the distance function of a collection: leave hnsw:* keys out of modify().
    return {k: v for k, v in (collection.metadata or {}).items() if not k.startswith("hnsw:")}


def _str_or_none(value: object) -> str | None:
    return str(value) if value is not None else None


def _int_or_none(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) else None


def _repository_id(repository_id: int | None) -> dict[str, int]:
    """The metadata naming GitHub's id of the repository (Chroma keeps no None), when nofx knows it."""
    return {} if repository_id is None else {"repository_id": repository_id}
