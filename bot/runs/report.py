"""What people see on GitHub: one status comment per run and one check run, coalesced to ≤ 1 edit/s.

Publishing always renders the run's current state from the database, so coalescing loses nothing:
a burst of transitions becomes one edit that shows the latest of them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from gidgethub import BadRequest
from gidgethub.abc import GitHubAPI

from bot.models import Run, Step
from bot.queue import WorkQueue
from bot.render.check_run import check_run
from bot.render.status_comment import status_comment, status_marker
from bot.runs import queries, records
from bot.settings import Settings
from bot.store import Store

log = logging.getLogger(__name__)
CHECK_NAME = "nofx"


def request_publish(queue: WorkQueue, run_id: str) -> None:
    """Ask for the run to be shown on GitHub; at most one publish job waits per run."""
    if not queue.hold_report(run_id):
        return  # a publish is already waiting and will render the newest state
    queue.enqueue_report(run_id, delay_s=_wait_before_next(queue, run_id))


async def publish(store: Store, queue: WorkQueue, settings: Settings, gh: GitHubAPI, run_id: str) -> None:
    """Create or update the run's status comment and check run (found again by marker / external_id)."""
    queue.release_report(run_id)  # transitions from now on ask for another publish
    wait = _wait_before_next(queue, run_id)
    if wait > 0:
        await asyncio.sleep(wait)
    run = queries.get_run(store, run_id)
    if run is None:
        return
    steps = queries.steps_of(store, run_id)
    behind = queries.get_run(store, run.behind_run_id) if run.behind_run_id else None
    run_url = settings.run_url(run.id)
    await _publish_comment(store, gh, run, steps, behind, run_url)
    if run.head_sha:
        await _publish_check_run(store, gh, run, steps, run_url or run.thread_url)
    queue.report_sent(run_id, time.time() + settings.report_interval_s)


async def _publish_comment(
    store: Store, gh: GitHubAPI, run: Run, steps: list[Step], behind: Run | None, run_url: str | None
) -> None:
    body = status_comment(run, steps, git_mode=_git_mode(run), run_url=run_url, behind=behind, prefix=_prefix(run))
    owner, repo = run.repository.split("/", 1)
    comment_id = run.status_comment_id or await _find_status_comment(gh, owner, repo, run)
    if comment_id is not None:
        await gh.patch(
            "/repos/{owner}/{repo}/issues/comments/{comment_id}",
            url_vars={"owner": owner, "repo": repo, "comment_id": comment_id},
            data={"body": body},
        )
    else:
        created = await gh.post(
            "/repos/{owner}/{repo}/issues/{issue_number}/comments",
            url_vars={"owner": owner, "repo": repo, "issue_number": run.thread_number},
            data={"body": body},
        )
        comment_id = created["id"]
    if run.status_comment_id != comment_id:
        records.set_run_fields(store, run.id, status_comment_id=comment_id)


async def _find_status_comment(gh: GitHubAPI, owner: str, repo: str, run: Run) -> int | None:
    """After a restart between posting and recording the id, find the comment by its hidden marker."""
    marker = status_marker(run.id)
    async for comment in gh.getiter(
        "/repos/{owner}/{repo}/issues/{issue_number}/comments{?per_page}",
        url_vars={"owner": owner, "repo": repo, "issue_number": run.thread_number, "per_page": 100},
    ):
        if marker in (comment.get("body") or ""):
            return int(comment["id"])
    return None


async def _publish_check_run(store: Store, gh: GitHubAPI, run: Run, steps: list[Step], details_url: str | None) -> None:
    body = check_run(run, steps, git_mode=_git_mode(run), run_url=details_url)
    owner, repo = run.repository.split("/", 1)
    check_run_id = run.check_run_id or await _find_check_run(gh, owner, repo, run)
    if check_run_id is not None:
        update = {k: v for k, v in body.items() if k not in ("external_id", "head_sha")}
        try:
            await gh.patch(
                "/repos/{owner}/{repo}/check-runs/{check_run_id}",
                url_vars={"owner": owner, "repo": repo, "check_run_id": check_run_id},
                data=update,
            )
        except BadRequest as exc:
            # A completed check run (action_required while waiting) may not go back to in_progress on
            # every GitHub version: the resumed run gets a new check run instead.
            if exc.status_code != 422:
                raise
            log.info("check run %s cannot be reopened; creating a new one", check_run_id)
            check_run_id = None
    if check_run_id is None:
        created = await gh.post(
            "/repos/{owner}/{repo}/check-runs",
            url_vars={"owner": owner, "repo": repo},
            data={**body, "head_sha": run.head_sha},
        )
        check_run_id = created["id"]
    if run.check_run_id != check_run_id:
        records.set_run_fields(store, run.id, check_run_id=check_run_id)


async def _find_check_run(gh: GitHubAPI, owner: str, repo: str, run: Run) -> int | None:
    data = await gh.getitem(
        "/repos/{owner}/{repo}/commits/{ref}/check-runs{?check_name,filter,per_page}",
        url_vars={
            "owner": owner,
            "repo": repo,
            "ref": run.head_sha or "",
            "check_name": CHECK_NAME,
            "filter": "all",
            "per_page": 100,
        },
    )
    for check in data.get("check_runs", []):
        if check.get("external_id") == run.id:
            return int(check["id"])
    return None


def _git_mode(run: Run) -> str:
    return str(run.config.get("git_mode", "basic"))


def _prefix(run: Run) -> str:
    trigger: dict[str, Any] = run.config.get("trigger") or {}
    return str(trigger.get("command", "/nofx"))


def _wait_before_next(queue: WorkQueue, run_id: str) -> float:
    next_at = queue.next_report_at(run_id)
    return 0.0 if next_at is None else max(0.0, next_at - time.time())
