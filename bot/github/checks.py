"""The repository's own CI on one commit, read from the checks and Actions APIs: what ran, how it ended, and why.

Everything read here is the repository's (or its CI's) text: untrusted, shown and passed on as data only.
nofx's own check runs (`nofx`, `nofx review`) are never CI.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gidgethub import BadRequest, GitHubBroken
from gidgethub.abc import GitHubAPI

OWN_CHECK_NAMES = frozenset({"nofx", "nofx review"})
PER_PAGE = 100
MAX_ANNOTATIONS = 50
MAX_OUTPUT_CHARS = 3000
MAX_EVIDENCE_CHARS = 12_000
MAX_LOG_CHARS = 5000
MAX_LOGS = 3
MAX_LOG_BYTES = 2_000_000  # the end of a job log is where it failed; more is never read
ACTIONS_SLUG = "github-actions"
PASSING = frozenset({"success", "neutral", "skipped"})
NEEDS_PERSON = frozenset({"action_required"})


class LogUnavailable(Exception):
    """GitHub did not hand out the log (no redirect, expired, or too old to keep)."""


@dataclass(frozen=True)
class Check:
    """One check run or workflow run on the commit."""

    kind: str  # check_run | workflow_run
    id: int
    name: str
    status: str  # queued, in_progress, completed, waiting, requested, pending, action_required
    conclusion: str | None
    url: str | None
    app: str | None = None  # the check run's App slug (github-actions for Actions jobs)
    output: str = ""  # the check run's own title, summary and text, trimmed

    @property
    def done(self) -> bool:
        return self.status == "completed"

    @property
    def passed(self) -> bool:
        return self.done and self.conclusion in PASSING

    @property
    def needs_person(self) -> bool:
        return self.conclusion in NEEDS_PERSON or self.status == "action_required"

    @property
    def failed(self) -> bool:
        return self.done and not self.passed and not self.needs_person


@dataclass(frozen=True)
class Snapshot:
    """CI on one commit as GitHub shows it now; `actions_readable` is False without the `actions: read` permission."""

    sha: str
    check_runs: tuple[Check, ...]
    workflow_runs: tuple[Check, ...]
    open_suites: int  # others' check suites still queued or running (their check runs may not exist yet)
    actions_readable: bool = True

    @property
    def names(self) -> list[str]:
        return sorted({check.name for check in self.check_runs})


@dataclass(frozen=True)
class Verdict:
    """How the required checks stand: `passed`, `pending`, `failed` (some failed) or `needs_person`."""

    state: str
    passed: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()
    failing: tuple[Check, ...] = ()
    needs_person: tuple[Check, ...] = ()


def judge(snapshot: Snapshot, required: Sequence[str]) -> Verdict:
    """The verdict on the required checks; with none named, on every check that showed up on the commit.

    A required name matches a check run, else a workflow run, of that name; one not there yet is pending. A failure
    is final at once (the repair starts without waiting for the rest); a workflow run awaiting a person's approval
    counts as `needs_person` while any required check is still missing.
    """
    names = list(required) or sorted({c.name for c in (*snapshot.check_runs, *snapshot.workflow_runs)})
    passed: list[str] = []
    pending: list[str] = []
    failing: list[Check] = []
    person: list[Check] = []
    for name in names:
        found = [c for c in snapshot.check_runs if c.name == name] or [
            w for w in snapshot.workflow_runs if w.name == name
        ]
        if any(c.failed for c in found):
            failing += [c for c in found if c.failed]
        elif any(c.needs_person for c in found):
            person += [c for c in found if c.needs_person]
        elif found and all(c.passed for c in found):
            passed.append(name)
        else:
            pending.append(name)
    if not required and (not names or snapshot.open_suites):
        pending.append("(checks not reported yet)")
    if pending and not person:
        person = [w for w in snapshot.workflow_runs if w.needs_person]
    state = "failed" if failing else "needs_person" if person else "pending" if pending else "passed"
    return Verdict(state, tuple(passed), tuple(pending), tuple(failing), tuple(person))


def is_own(item: dict[str, Any], own_slug: str | None) -> bool:
    """A check run or suite of nofx itself: by its App when nofx knows who it is, else by its check names."""
    slug = (item.get("app") or {}).get("slug")
    if own_slug and slug:
        return bool(slug == own_slug)
    return item.get("name") in OWN_CHECK_NAMES


async def read(gh: GitHubAPI, owner: str, repo: str, sha: str, *, own_slug: str | None) -> Snapshot:
    """The check runs, open check suites and Actions workflow runs of `sha`, nofx's own left out."""
    where: dict[str, str | int] = {"owner": owner, "repo": repo, "ref": sha, "per_page": PER_PAGE}
    data = await gh.getitem(
        "/repos/{owner}/{repo}/commits/{ref}/check-runs{?filter,per_page}", {**where, "filter": "latest"}
    )
    check_runs = tuple(_check_run(item) for item in data.get("check_runs", []) if not is_own(item, own_slug))
    suites = await gh.getitem("/repos/{owner}/{repo}/commits/{ref}/check-suites{?per_page}", where)
    open_suites = sum(
        1
        for suite in suites.get("check_suites", [])
        if not is_own(suite, own_slug) and suite.get("status") in ("queued", "in_progress")
    )
    workflow_runs: tuple[Check, ...] = ()
    readable = True
    try:
        runs = await gh.getitem(
            "/repos/{owner}/{repo}/actions/runs{?head_sha,per_page}",
            {"owner": owner, "repo": repo, "head_sha": sha, "per_page": PER_PAGE},
        )
        workflow_runs = tuple(_workflow_run(item) for item in runs.get("workflow_runs", []))
    except BadRequest as exc:  # 403: an App registered before nofx asked for `actions: read`
        if exc.status_code not in (403, 404):
            raise
        readable = False
    return Snapshot(sha, check_runs, workflow_runs, open_suites, readable)


async def check_annotations(gh: GitHubAPI, owner: str, repo: str, check_run_id: int) -> list[dict[str, Any]]:
    """The first annotations of a check run (file, line, level, message): where the CI says it failed."""
    found = await gh.getitem(
        "/repos/{owner}/{repo}/check-runs/{check_run_id}/annotations{?per_page}",
        {"owner": owner, "repo": repo, "check_run_id": check_run_id, "per_page": MAX_ANNOTATIONS},
    )
    return list(found)[:MAX_ANNOTATIONS]


async def failed_jobs(gh: GitHubAPI, owner: str, repo: str, run_id: int) -> list[dict[str, Any]]:
    """The jobs of a workflow run that failed, with the step that failed in each."""
    data = await gh.getitem(
        "/repos/{owner}/{repo}/actions/runs/{run_id}/jobs{?filter,per_page}",
        {"owner": owner, "repo": repo, "run_id": run_id, "filter": "latest", "per_page": PER_PAGE},
    )
    return [job for job in data.get("jobs", []) if job.get("conclusion") in ("failure", "timed_out")]


async def job_log(gh: GitHubAPI, owner: str, repo: str, job_id: int) -> str:
    """A job's log: GitHub answers with a redirect to short-lived storage, fetched without nofx's token."""
    download = getattr(gh, "download_redirected", None)
    if download is None:
        raise LogUnavailable("this GitHub client cannot follow log redirects")
    url_vars = {"owner": owner, "repo": repo, "job_id": job_id}
    raw: bytes = await download("/repos/{owner}/{repo}/actions/jobs/{job_id}/logs", url_vars, max_bytes=MAX_LOG_BYTES)
    return raw.decode("utf-8", errors="replace")


_TIMESTAMP = re.compile(r"^\ufeff?\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z ", re.MULTILINE)
_FAILURE_LINE = re.compile(
    r"##\[error\]|\berror\b|\bfailed\b|\bfailure\b|\bFAIL(?:ED)?\b|Traceback|Exception|exit code [1-9]",
    re.IGNORECASE,
)


def trim_log(text: str, *, before: int = 60, after: int = 15, max_chars: int = 6000) -> str:
    """The lines around the first error of a log's last failing stretch, without Actions' timestamps.

    Actions ends a failed step with `##[error]Process completed with exit code N`; the real failure is above it, so
    the window reaches back from the first error line of the last cluster of error lines.
    """
    lines = _TIMESTAMP.sub("", text).splitlines()
    hits = [index for index, line in enumerate(lines) if _FAILURE_LINE.search(line)]
    if not hits:
        window = lines[-(before + after) :]
    else:
        first = hits[-1]
        for index in reversed(hits[:-1]):  # walk back through the cluster the last error belongs to
            if first - index > before:
                break
            first = index
        window = lines[max(0, first - before // 3) : hits[-1] + after + 1]
        if len(window) > before + after:
            window = window[-(before + after) :]
    trimmed = "\n".join(window)
    return trimmed[-max_chars:]


def _check_run(item: dict[str, Any]) -> Check:
    return Check(
        kind="check_run",
        id=int(item["id"]),
        name=str(item.get("name") or ""),
        status=str(item.get("status") or "queued"),
        conclusion=item.get("conclusion"),
        url=item.get("html_url") or item.get("details_url"),
        app=(item.get("app") or {}).get("slug"),
        output=_check_output(item.get("output") or {}),
    )


def _check_output(output: dict[str, Any]) -> str:
    parts = [str(output.get(key) or "").strip() for key in ("title", "summary", "text")]
    return "\n".join(part[-MAX_OUTPUT_CHARS:] for part in parts if part)


def _workflow_run(item: dict[str, Any]) -> Check:
    return Check(
        kind="workflow_run",
        id=int(item["id"]),
        name=str(item.get("name") or item.get("display_title") or ""),
        status=str(item.get("status") or "queued"),
        conclusion=item.get("conclusion"),
        url=item.get("html_url"),
        app=ACTIONS_SLUG,
    )


async def evidence(gh: GitHubAPI, owner: str, repo: str, snapshot: Snapshot, failing: Sequence[Check]) -> str:
    """What the failing checks say: the failed Actions jobs' log excerpts, then each check's output and annotations.

    Untrusted text from the repository's CI, capped at MAX_EVIDENCE_CHARS. The precise parts (annotations name the
    file and line) come last, where a reader of the tail (the repair round keeps the last lines) finds them. A part
    GitHub will not give is named as missing rather than failing the gathering.
    """
    parts = await _job_logs(gh, owner, repo, [w for w in snapshot.workflow_runs if w.failed])
    for check in failing[:MAX_LOGS]:
        link = f" ({check.url})" if check.url else ""
        lines = [f"## {check.kind.replace('_', ' ')} `{check.name}`: {check.conclusion}{link}"]
        if check.output:
            lines.append(check.output)
        if check.kind == "check_run":
            try:
                lines += [_annotation(note) for note in await check_annotations(gh, owner, repo, check.id)]
            except (BadRequest, GitHubBroken) as exc:
                lines.append(f"(annotations not available: {exc.status_code})")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)[-MAX_EVIDENCE_CHARS:]


async def _job_logs(gh: GitHubAPI, owner: str, repo: str, failed_runs: Sequence[Check]) -> list[str]:
    """For each failed workflow run, its failed jobs' logs trimmed around the failure (at most MAX_LOGS logs)."""
    parts: list[str] = []
    for workflow in failed_runs[:MAX_LOGS]:
        try:
            jobs = await failed_jobs(gh, owner, repo, workflow.id)
        except (BadRequest, GitHubBroken) as exc:
            parts.append(f"## workflow `{workflow.name}`: jobs not available ({exc.status_code})")
            continue
        for job in jobs[: max(0, MAX_LOGS - len(parts))]:
            steps = [s.get("name") for s in job.get("steps") or [] if s.get("conclusion") == "failure"]
            at_step = f" at step `{steps[0]}`" if steps else ""
            try:
                log_text = trim_log(await job_log(gh, owner, repo, int(job["id"])), max_chars=MAX_LOG_CHARS)
            except (BadRequest, GitHubBroken, LogUnavailable) as exc:
                log_text = f"(log not available: {exc})"
            parts.append(f"## job `{job.get('name')}` of workflow `{workflow.name}` failed{at_step}\n{log_text}")
    return parts


def _annotation(note: dict[str, Any]) -> str:
    where = f"{note.get('path')}:{note.get('start_line')}"
    return f"{where}: {note.get('annotation_level')}: {str(note.get('message') or '')[:500]}"
