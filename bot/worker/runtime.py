"""A worker process's dependencies, built once by its entry point and reused by every job."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from bot import blobs
from bot.events.context import EventContext
from bot.github.client import GitHubApp
from bot.llm.router import LLM, FileCache
from bot.logs import Redactor
from bot.metrics.workers import GitHubCallRecorder
from bot.models import Run
from bot.queue import WorkQueue
from bot.review.analysis import failing_in_worktree
from bot.runs.artifacts import Artifacts
from bot.runs.contract import SemanticSearch, discover_handlers
from bot.runs.engine import Engine
from bot.runs.llm_planner import SimilarRuns
from bot.runs.memory import ThreadMemoryConfig
from bot.search import code_search
from bot.search.embeddings import embedder_for, search_configured
from bot.search.index import SearchIndex
from bot.settings import ENV_FILE, Settings
from bot.store import Store
from bot.workspace import toolchains
from bot.workspace.egress import EgressPolicy
from bot.workspace.mirrors import Workspaces
from bot.workspace.sandbox import Sandbox
from bot.workspace.worktrees import RunWorkspaces

T = TypeVar("T")


class Runtime:
    """Settings, store, queue, GitHub App client and one event loop, so caches (tokens) stay warm."""

    def __init__(
        self, settings: Settings, *, redactor: Redactor | None = None, workspaces: RunWorkspaces | None = None
    ) -> None:
        if not settings.redis_url:
            raise RuntimeError("REDIS_URL is required by a worker (`nofx serve` sets it for its workers)")
        self.settings = settings
        self.redactor = redactor or Redactor(settings.secrets)
        self.store = Store(settings.database_url, run_limits=settings.run_limits)
        self.queue = WorkQueue.from_url(settings.redis_url)
        self.github, self.llm = self._github_client(), self._llm_client()
        self.engine = Engine(
            self.store,
            self.queue,
            discover_handlers(),
            github=self.github,
            workspaces=workspaces or Workspaces(settings.data_dir / "workspaces"),
            artifacts=Artifacts(blobs.from_settings(settings, self.store), self.store),
            llm=self.llm,
            redact=self._public_error,
            memory=ThreadMemoryConfig(settings.memory_keys, settings.memory_ttl_days),
            sandbox=Sandbox(
                isolation=settings.sandbox,
                hidden=_own_paths(settings),
                toolchains=toolchains.find(os.environ.get("PATH", ""), settings.sandbox_paths),
                egress=EgressPolicy.from_settings(settings.setup_egress, settings.setup_egress_allow),
            ),
            setup_cache=settings.data_dir / "setup",
            setup_limits=settings.setup_cache,
            index_searches=search_configured(settings),
            semantic=self.semantic_search_of if search_configured(settings) else None,
            review=failing_in_worktree,
            run_logs=settings.data_dir,
        )
        self._runner = asyncio.Runner()
        self._search_index: SearchIndex | None = None
        self._opening_index = threading.Lock()  # the dispatch lane's routing threads plan at once

    def loop_clients(self) -> tuple[GitHubApp | None, LLM | None]:
        """A GitHub App client and a model client for another event loop (a dispatch lane's routing thread): their
        connection pools belong to the loop that first uses them; the installation tokens are the runtime's."""
        github = self.github.for_another_loop() if self.github is not None else None
        return github, self._llm_client()

    def _github_client(self) -> GitHubApp | None:
        if not self.settings.app_configured:
            return None
        recorder = GitHubCallRecorder(self.queue.shared)
        return GitHubApp.from_settings(self.settings, on_secret=self.redactor.add, on_response=recorder)

    def _llm_client(self) -> LLM | None:
        settings = self.settings
        return LLM.from_settings(settings, cache=FileCache.in_data_dir(settings.data_dir), redact=self.redactor.redact)

    def search_index(self) -> SearchIndex:
        """The semantic index, opened (and its model loaded) by the first job that needs it."""
        with self._opening_index:
            if self._search_index is None:
                self._search_index = SearchIndex.open(self.settings, embedder_for(self.settings))
            return self._search_index

    def semantic_search_of(self, run: Run) -> SemanticSearch:
        """Code generation's view of the semantic index: the run's repository only, as `path:start-end` lines."""

        async def search(query: str, limit: int) -> list[str]:
            index = self.search_index()
            hits = await asyncio.to_thread(
                index.search_files, run.installation_id, query, repo=run.repository, limit=limit
            )
            return code_search.semantic_lines(hits)

        return search

    def similar_runs_of(self, installation_id: int, repository: str, repository_id: int | None) -> SimilarRuns:
        """The planner's view of the runs collection: one installation's repository, by GitHub's id when known (a
        name may have been another repository's), never another's runs."""

        async def similar(request: str, limit: int) -> list[str]:
            index = self.search_index()
            hits = await asyncio.to_thread(
                index.search,
                installation_id,
                request,
                kind="runs",
                repo=repository,
                limit=limit,
                repository_id=repository_id,
            )
            return [hit.text for hit in hits]

        return similar

    def _public_error(self, text: str) -> str:
        """A step's error as GitHub shows it: no secret, and the server's own directories not named."""
        return self.redactor.redact(text).replace(str(self.settings.data_dir.resolve()), "<data dir>")

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a job's coroutine on this process's loop (HTTP clients are bound to one loop)."""
        return self._runner.run(coro)

    def context(self) -> EventContext:
        engine = self.engine
        return EventContext(
            settings=self.settings,
            store=self.store,
            queue=self.queue,
            github=self.github,
            after=engine.after,
            tools=frozenset(engine.handlers),
            llm=engine.llm,
            memory=engine.memory,
            similar_runs=self.similar_runs_of if engine.semantic is not None else None,
        )

    def close(self) -> None:
        if self.github is not None:
            self._runner.run(self.github.aclose())
        if self.llm is not None:
            self._runner.run(self.llm.aclose())
        self._runner.close()
        self.store.dispose()


def _own_paths(settings: Settings) -> tuple[Path, ...]:
    """nofx's own files, which no sandboxed command may see even under a directory the sandbox shows (/etc, /opt)."""
    return tuple(path for path in (settings.data_dir, Path(ENV_FILE), settings.private_key_path) if path is not None)
