"""How the repository's CI shows in the status comment and the check run: waiting, failed, repaired, passed.

Pure, like every renderer. Reads the `gate:ci` step's output (its state, the commit watched, the failing checks);
check names and URLs come from the repository's CI, so they are escaped and linked only as http(s).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bot.models import Step, StepStatus
from bot.render.text import code_span, escape_inline, link

CI_TOOL = "gate:ci"
MAX_NAMES_SHOWN = 5


def ci_step(steps: Sequence[Step]) -> Step | None:
    """The run's CI step, when it has started looking (it has an output)."""
    return next((s for s in reversed(steps) if s.tool == CI_TOOL and isinstance(s.output, dict) and s.output), None)


def waiting_for_ci(steps: Sequence[Step]) -> bool:
    """True when every waiting step waits for CI (not for a person)."""
    waiting = [s for s in steps if s.status == StepStatus.waiting]
    return bool(waiting) and all(s.tool == CI_TOOL for s in waiting)


def ci_note(steps: Sequence[Step], *, names_git: bool) -> str:
    """One paragraph on CI's state, or "" when the run has no CI step that looked yet."""
    step = ci_step(steps)
    if step is None:
        return ""
    out: dict[str, Any] = step.output
    state = out.get("ci")
    sha = str(out.get("head_sha") or "")[:7]
    at = f" on {code_span(sha)}" if names_git and sha else ""
    repairs = _count(out.get("repairs"))
    repaired = f" nofx repaired it {repairs} time{'s' if repairs != 1 else ''}." if repairs else ""
    if state == "none":
        return "**CI:** none ran on the base commit, so nofx did not wait for it."
    if state == "waiting":
        passed, pending = list(out.get("passed") or []), list(out.get("pending") or [])
        waiting_on = f" Waiting for {_names(pending)}." if pending else ""
        return (
            f"**CI:** waiting{at}: {len(passed)} of {len(passed) + len(pending)} checks passed.{waiting_on}{repaired}"
        )
    if state == "passed":
        return f"**CI:** passed{at}.{repaired}"
    if state == "handed_over":
        if not names_git:  # hidden mode never talks about branches and pushes
            return "**CI:** someone else changed the proposed changes, so nofx stopped and leaves CI to them."
        return "**CI:** someone else pushed to the branch, so nofx stopped repairing and leaves CI to them."
    if state in ("failed", "needs_person"):
        failing = [f for f in out.get("failing") or [] if isinstance(f, dict)]
        shown = ", ".join(_check(f) for f in failing[:MAX_NAMES_SHOWN]) or "a check"
        verb = "needs a person" if state == "needs_person" else "failed"
        return f"**CI:** {verb}{at}: {shown}.{repaired}"
    if state == "timed_out":
        return f"**CI:** did not finish in time{at}; still waiting for {_names(list(out.get('pending') or []))}."
    return ""


def check_title(steps: Sequence[Step], done: int, total: int) -> str:
    """The check run's title while the run waits for CI (plain text)."""
    step = ci_step(steps)
    repairs = _count((step.output if step else {}).get("repairs"))
    after = f", repaired {repairs}x" if repairs else ""
    return f"Waiting for CI: {done} of {total} steps done{after}"


def _count(repairs: object) -> int:
    """Repair rounds that pushed a commit (rounds the run's own gates rejected pushed nothing)."""
    items = repairs if isinstance(repairs, list) else []
    return sum(1 for item in items if isinstance(item, dict) and item.get("head_sha"))


def _check(found: dict[str, Any]) -> str:
    name = code_span(str(found.get("name") or "?")[:200])
    url = found.get("url")
    conclusion = f" ({escape_inline(found['conclusion'])})" if found.get("conclusion") else ""
    return (link(name, url) if isinstance(url, str) and url else name) + conclusion


def _names(names: list[Any]) -> str:
    shown = [code_span(str(name)[:200]) for name in names[:MAX_NAMES_SHOWN]]
    more = len(names) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "") if shown else "the checks"
