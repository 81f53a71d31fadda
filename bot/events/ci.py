"""CI webhooks (`check_suite`, `check_run`, `workflow_run` completed) wake the run waiting on that commit or branch.

The payload only says *when* to look: the woken step reads CI's whole state through the API, so a lost, late or
reordered delivery cannot make it judge wrongly. nofx's own check runs never wake anything.
"""

from __future__ import annotations

from gidgethub import routing, sansio

from bot.events.context import EventContext
from bot.github import identity
from bot.github.checks import is_own
from bot.runs.ci_wait import wake_for

router = routing.Router()


@router.register("check_suite", action="completed")
@router.register("check_run", action="completed")
@router.register("workflow_run", action="completed")
async def ci_reported(event: sansio.Event, ctx: EventContext) -> None:
    item = event.data.get(event.event) or {}
    me = identity.current(ctx.store)
    if event.event != "workflow_run" and is_own(item, me.slug if me else None):
        return
    suite = item.get("check_suite") or {}
    branch = item.get("head_branch") or suite.get("head_branch")
    head_sha = item.get("head_sha") or suite.get("head_sha")
    report = {
        "event": event.event,
        "name": str(item.get("name") or "")[:200],
        "conclusion": item.get("conclusion"),
        "head_sha": head_sha,
    }
    repository = (event.data.get("repository") or {}).get("full_name") or ""
    wake_for(ctx.store, ctx.queue, repository, head_sha=head_sha, branch=branch, report=report)
