"""LLM reviews of pull requests end to end: signed deliveries in, a review and a check run out.

The pull request's diff is a real `git diff` of commits in the git fixture's repository, served to the app as
GitHub's pull-files and compare answers; the GitHub double refuses line comments off that diff and reviews
that approve or request changes on the App's own pull request. The model is the Anthropic double answering
`report_findings`; the queue and the worker are real.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlmodel import select

from bot.models import FindingStatus, ReviewFinding, ReviewKind, ReviewPass, ReviewStatus, new_id
from bot.settings import Settings
from bot.store import Store
from bot.worker.runtime import Runtime
from tests.conftest import BASE, OWNER, REPO, Deliverer, ask, with_model
from tests.support.git_server import GitServer
from tests.support.github_double import GitHubDouble, Reply
from tests.support.github_resources import Call
from tests.support.llm_double import AnthropicDouble
from tests.support.payloads import load_payload

CONFIG = ".github/nofx.yml"
REVIEWS = "/repos/{owner}/{repo}/pulls/{pull_number}/reviews"
REPLIES = "/repos/{owner}/{repo}/pulls/{pull_number}/comments/{comment_id}/replies"
CHECK_UPDATE = "/repos/{owner}/{repo}/check-runs/{check_run_id}"
APP = "".join(f"VALUE_{i} = {i}\n" for i in range(1, 41))


@pytest.fixture
def settings(settings: Settings, llm: AnthropicDouble) -> Settings:
    return with_model(settings, llm)


@pytest.fixture(autouse=True)
def _installed(installed: Callable[[dict[str, Any]], None]) -> None:
    installed(load_payload("pull_request.opened"))


class PullRequest:
    """A pull request of `feature` into the base branch of the git fixture's repository, mirrored in the double."""

    def __init__(
        self, github: GitHubDouble, git: GitServer, *, user: str | None = "Codertocat", draft: bool = False
    ) -> None:
        self.github, self.git = github, git
        self.base_sha = git.commit(OWNER, REPO, {"app.py": APP}, branch=BASE, message="Add app")
        github.branches[(OWNER, REPO, BASE)] = self.base_sha
        git.git(OWNER, REPO, "branch", "feature", BASE)
        self.head = self.base_sha
        github.branches[(OWNER, REPO, "feature")] = self.head
        self.data = github.add_pull(OWNER, REPO, head="feature", base=BASE, user=user, draft=draft)
        self.number: int = self.data["number"]
        self.head_repo = f"{OWNER}/{REPO}"

    def push(self, files: dict[str, str | None], *, force: bool = False) -> str:
        """Commit on `feature` (on a fresh branch from the base with `force`) and update the PR's diff."""
        if force:
            self.git.git(OWNER, REPO, "branch", "--force", "feature", BASE)
        self.head = self.git.commit(OWNER, REPO, files, branch="feature", message="Change")
        self.github.branches[(OWNER, REPO, "feature")] = self.head
        self.data["head"]["sha"] = self.head
        self.github.pull_files[(OWNER, REPO, self.number)] = files_between(self.git, self.base_sha, self.head)
        return self.head

    def event(self, action: str, **extra: Any) -> dict[str, Any]:
        """A `pull_request.<action>` delivery for this pull request as it is now."""
        payload = load_payload(f"pull_request.{action}")
        pull = payload["pull_request"]
        pull.update(number=self.number, draft=self.data["draft"], state="open", user=self.data["user"])
        head_repo = {**pull["head"]["repo"], "full_name": self.head_repo, "name": REPO}
        pull["head"] = {**pull["head"], "sha": self.head, "ref": "feature", "repo": head_repo}
        pull["base"] = {**pull["base"], "sha": self.base_sha, "ref": BASE}
        payload["number"] = self.number
        payload["repository"]["clone_url"] = self.git.url_for(OWNER, REPO)
        payload.update(extra)
        return payload

    def comment(self, body: str) -> dict[str, Any]:
        payload = ask(self.git, body, number=self.number)
        payload["issue"]["pull_request"] = {"url": self.data["url"], "html_url": self.data["html_url"]}
        return payload


def files_between(git: GitServer, base: str, head: str) -> list[dict[str, Any]]:
    """GitHub's pull-files answer for base...head, cut from real `git diff` output."""
    text = git.git(OWNER, REPO, "diff", "--no-color", f"{base}...{head}")
    files = []
    for block in text.split("diff --git ")[1:]:
        lines = block.split("\n")
        start = next(i for i, line in enumerate(lines) if line.startswith("@@"))
        name = next(line[6:] for line in lines[:start] if line.startswith("+++ b/"))
        status = "added" if any(line.startswith("new file") for line in lines[:start]) else "modified"
        files.append({"filename": name, "status": status, "patch": "\n".join(lines[start:]).rstrip("\n")})
    return files


def finding(line: int, severity: str = "medium", title: str = "Possible bug", path: str = "app.py") -> dict[str, Any]:
    return {"path": path, "line": line, "severity": severity, "title": title, "body": f"Look at line {line}."}


def answer(llm: AnthropicDouble, *findings: dict[str, Any]) -> None:
    llm.tool_call("report_findings", {"findings": list(findings)})


def changed_app(line: int = 30, text: str = "compute()") -> str:
    return APP.replace(f"VALUE_{line} = {line}\n", f"VALUE_{line} = {text}\n")


def passes(store: Store) -> list[ReviewPass]:
    with store.session() as session:
        return list(session.exec(select(ReviewPass).order_by(ReviewPass.created_at)).all())  # type: ignore[arg-type]


def stored_findings(store: Store) -> dict[str, ReviewFinding]:
    with store.session() as session:
        return {row.title: row for row in session.exec(select(ReviewFinding)).all()}


def reviews_posted(github: GitHubDouble) -> list[Call]:
    return github.calls("POST", REVIEWS)


def review_checks(github: GitHubDouble) -> list[dict[str, Any]]:
    return [check for check in github.check_runs.values() if check["name"] == "nofx review"]


def all_sent(github: GitHubDouble) -> str:
    return "\n".join(str(call.json) for call in github.calls() if call.json is not None)


# --- triggers --------------------------------------------------------------------------------------------------


def test_opened_pull_request_gets_line_comments_and_the_rest_in_the_body(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    pull = PullRequest(github, git)
    head = pull.push({"app.py": changed_app()})
    answer(llm, finding(30, "high", "Unchecked call"), finding(5, "low", "Old constant"))

    deliver("pull_request", pull.event("opened"))
    work()

    [review_pass] = passes(store)
    assert (review_pass.status, review_pass.kind, review_pass.fork) == (ReviewStatus.done, ReviewKind.full, False)
    assert "VALUE_30 = compute()" in llm.requests[0].text
    [posted] = reviews_posted(github)
    assert posted.status == 200  # no 422: the comment is on a line of the diff
    assert (posted.json["event"], posted.json["commit_id"]) == ("COMMENT", head)
    [comment] = posted.json["comments"]
    assert (comment["path"], comment["line"], comment["side"]) == ("app.py", 30, "RIGHT")
    assert "Unchecked call" in comment["body"]
    body = posted.json["body"]
    assert "Outside the diff" in body and "Old constant" in body and "app.py:5" in body
    assert "Reviewed 1 file" in body and "1 open" not in body and "**2 open**" in body
    # The check run on the head: failure, as a high finding reaches the default fail_on.
    [check] = review_checks(github)
    assert (check["head_sha"], check["external_id"], check["conclusion"]) == (head, review_pass.id, "failure")
    annotations = [a for c in github.calls("PATCH", CHECK_UPDATE) for a in c.json["output"].get("annotations", [])]
    assert {(a["start_line"], a["annotation_level"]) for a in annotations} == {(30, "failure"), (5, "notice")}
    rows = stored_findings(store)
    assert rows["Unchecked call"].comment_id == github.review_comments[(OWNER, REPO, pull.number)][0]["id"]
    assert rows["Old constant"].comment_id is None
    assert {row.status for row in rows.values()} == {FindingStatus.open}


@pytest.mark.parametrize("drafts", [False, True])
def test_drafts_are_reviewed_only_with_review_drafts(
    drafts: bool,
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    github.files[(OWNER, REPO, CONFIG, None)] = f"review: {{drafts: {str(drafts).lower()}}}\n"
    pull = PullRequest(github, git, draft=True)
    pull.push({"app.py": changed_app()})
    answer(llm)

    deliver("pull_request", pull.event("opened"))
    work()
    assert len(reviews_posted(github)) == (1 if drafts else 0)

    if not drafts:  # out of draft: now it is reviewed
        pull.data["draft"] = False
        deliver("pull_request", pull.event("ready_for_review"))
        work()
        assert len(reviews_posted(github)) == 1
        assert [p.trigger for p in passes(store)] == ["ready_for_review"]


def test_auto_review_off_reviews_nothing(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    github.files[(OWNER, REPO, CONFIG, None)] = "review:\n  auto: false\n"
    pull = PullRequest(github, git)
    pull.push({"app.py": changed_app()})

    deliver("pull_request", pull.event("opened"))
    deliver("pull_request", pull.event("synchronize"))
    work()

    assert passes(store) == [] and llm.requests == [] and reviews_posted(github) == []


def test_review_command_and_label_request_full_reviews(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    github.files[(OWNER, REPO, CONFIG, None)] = "review:\n  auto: false\n"
    pull = PullRequest(github, git)
    pull.push({"app.py": changed_app()})
    answer(llm, finding(30))

    deliver("issue_comment", pull.comment("/nofx review"))
    work()
    labeled = pull.event("labeled", label={"name": "nofx:review"})
    deliver("pull_request", labeled)
    work()

    assert [(p.trigger, p.kind, p.status) for p in passes(store)] == [
        ("comment", ReviewKind.full, ReviewStatus.done),
        ("label", ReviewKind.full, ReviewStatus.done),
    ]
    first, second = reviews_posted(github)
    assert len(first.json["comments"]) == 1
    # The second pass saw the same finding (the model's answer is cached) and did not post it again.
    assert "comments" not in second.json and "reported earlier and still open" in second.json["body"]
    assert github.reactions[(OWNER, REPO, "issue_comment", pull.comment("")["comment"]["id"])][0]["content"] == "eyes"


def test_rerun_on_the_review_check_starts_a_new_full_pass(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    pull = PullRequest(github, git)
    pull.push({"app.py": changed_app()})
    answer(llm)
    deliver("pull_request", pull.event("opened"))
    work()
    [check] = review_checks(github)

    rerun = load_payload("check_run.rerequested")
    rerun["check_run"] = {**rerun["check_run"], **check}
    rerun["repository"] = pull.event("opened")["repository"]
    rerun["installation"] = {"id": 1}
    rerun["sender"] = {**rerun["sender"], "login": "Codertocat", "type": "User"}
    deliver("check_run", rerun)
    work()

    assert [(p.trigger, p.status) for p in passes(store)] == [("opened", "done"), ("check_run", "done")]
    assert len(review_checks(github)) == 2 and len(reviews_posted(github)) == 2


# --- incremental reviews and superseded passes -------------------------------------------------------------------


def test_synchronize_reviews_only_what_changed_since_the_last_reviewed_head(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    pull = PullRequest(github, git)
    first = pull.push({"app.py": changed_app()})
    answer(llm)
    deliver("pull_request", pull.event("opened"))
    work()

    second = pull.push({"extra.py": "def extra():\n    return 1\n"})
    github.compares[(OWNER, REPO, f"{first}...{second}")] = {
        "status": "ahead",
        "files": files_between(git, first, second),
    }
    answer(llm, finding(2, path="extra.py"))
    deliver("pull_request", pull.event("synchronize", before=first, after=second))
    work()

    latest = passes(store)[-1]
    assert (latest.kind, latest.previous_head_sha, latest.files_reviewed) == (
        ReviewKind.incremental,
        first,
        ["extra.py"],
    )
    assert len(github.calls("GET", "/repos/{owner}/{repo}/compare/{basehead}")) == 1
    prompt = llm.requests[-1].text
    assert "def extra" in prompt and "VALUE_30" not in prompt
    body = reviews_posted(github)[-1].json["body"]
    assert f"changes since `{first[:12]}`" in body


def test_force_push_gets_a_full_review(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    pull = PullRequest(github, git)
    first = pull.push({"app.py": changed_app()})
    answer(llm)
    deliver("pull_request", pull.event("opened"))
    work()

    rewritten = pull.push({"app.py": changed_app(12, "rewritten()")}, force=True)
    github.compares[(OWNER, REPO, f"{first}...{rewritten}")] = {"status": "diverged", "files": []}
    answer(llm)
    deliver("pull_request", pull.event("synchronize", before=first, after=rewritten))
    work()

    latest = passes(store)[-1]
    assert (latest.kind, latest.status, latest.files_reviewed) == (ReviewKind.full, ReviewStatus.done, ["app.py"])
    assert "VALUE_12 = rewritten()" in llm.requests[-1].text


def test_a_newer_push_cancels_the_review_of_an_older_head(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    pull = PullRequest(github, git)
    first = pull.push({"app.py": changed_app()})
    deliver("pull_request", pull.event("opened"))
    second = pull.push({"extra.py": "X = 1\n"})
    deliver("pull_request", pull.event("synchronize", before=first, after=second))
    answer(llm)
    work()

    older, newer = passes(store)
    assert (older.head_sha, older.status) == (first, ReviewStatus.cancelled)
    assert "Superseded" in (older.error or "")
    assert (newer.head_sha, newer.status, newer.kind) == (second, ReviewStatus.done, ReviewKind.full)
    [posted] = reviews_posted(github)
    assert posted.json["commit_id"] == second
    assert len(llm.requests) == 1


def test_a_push_during_a_review_stops_it_before_the_model_is_asked(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
    runtime: Runtime,
) -> None:
    pull = PullRequest(github, git)
    first = pull.push({"app.py": changed_app()})

    def newer_push_arrives(call: Call) -> Reply | None:
        """While the first pass reads the diff, another worker routes a push and queues its pass."""
        if len(passes(store)) == 1:
            second = pull.push({"extra.py": "X = 1\n"})
            newer = make_pass(pull, head_sha=second, trigger="synchronize", kind=ReviewKind.incremental)
            with store.session() as session:
                session.add(newer)
            runtime.queue.enqueue_review(newer.id)
        return None  # then answer as GitHub would

    github.handler("GET", "/repos/{owner}/{repo}/pulls/{pull_number}/files", newer_push_arrives)
    answer(llm)
    deliver("pull_request", pull.event("opened"))
    work()

    older, newer = passes(store)
    assert (older.status, newer.status) == (ReviewStatus.cancelled, ReviewStatus.done)
    checks = {check["head_sha"]: check for check in review_checks(github)}
    assert checks[first]["conclusion"] == "cancelled"
    assert [c.json["commit_id"] for c in reviews_posted(github)] == [newer.head_sha]
    assert len(llm.requests) == 1


def test_a_newer_pass_stops_an_older_one_between_model_calls(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
    runtime: Runtime,
) -> None:
    pull = PullRequest(github, git)
    pull.push(
        {f"part_{n}.py": "".join(f"item_{n}_{i} = make({i}, 'padding text')\n" for i in range(800)) for n in (1, 2)}
    )
    answer_from_double = llm.answer

    def answer_and_request_again(request: Any) -> Any:
        """During the first model call, someone asks for a review again (a newer pass of the same head)."""
        if len(passes(store)) == 1:
            newer = make_pass(pull, head_sha=pull.head, trigger="comment")
            with store.session() as session:
                session.add(newer)
            runtime.queue.enqueue_review(newer.id)
        return answer_from_double(request)

    llm.answer = answer_and_request_again  # type: ignore[method-assign]
    for _ in range(4):
        answer(llm)
    deliver("pull_request", pull.event("opened"))
    work()

    older, newer = passes(store)
    assert (older.status, newer.status) == (ReviewStatus.cancelled, ReviewStatus.done)
    assert newer.llm_calls == 2
    # The older pass stopped after its first call; the newer one's first part was the same, so the response
    # cache answered it, and only its second part reached the model.
    assert len(llm.requests) == 2
    [posted] = reviews_posted(github)
    assert sorted(newer.files_reviewed) == ["part_1.py", "part_2.py"] and posted.status == 200


def make_pass(pull: PullRequest, *, head_sha: str, trigger: str, kind: ReviewKind = ReviewKind.full) -> ReviewPass:
    """A pass as a webhook's router function would record it."""
    return ReviewPass(
        id=new_id(),
        installation_id=1,
        repository=f"{OWNER}/{REPO}",
        pull_number=pull.number,
        base_sha=pull.base_sha,
        head_sha=head_sha,
        kind=kind,
        trigger=trigger,
        config={},
    )


# --- who and what is reviewed --------------------------------------------------------------------------------


def test_a_fork_pull_request_is_reviewed_from_the_diff_alone(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    pull = PullRequest(github, git, user="forker")
    pull.head_repo = f"forker/{REPO}"
    pull.push({"app.py": changed_app(30, "__import__('os').system('curl evil')")})
    answer(llm, finding(30, "critical", "Runs a shell command"))

    deliver("pull_request", pull.event("opened"))
    work()

    [review_pass] = passes(store)
    assert (review_pass.fork, review_pass.status) == (True, ReviewStatus.done)
    assert len(reviews_posted(github)[0].json["comments"]) == 1
    assert git.requests_for() == []  # nothing was cloned or fetched: no fork code on any worker
    assert "ghs_" not in llm.requests[0].text


def test_nofx_reviews_its_own_pull_request_with_comments_only(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    github.files[(OWNER, REPO, CONFIG, None)] = "review: {fail_on: low}\n"
    pull = PullRequest(github, git, user=None)  # opened by the App's bot
    pull.push({"app.py": changed_app()})
    answer(llm, finding(30, "high"))

    opened = pull.event("opened")
    opened["sender"] = {**opened["sender"], "login": github.bot_login, "type": "Bot"}
    deliver("pull_request", opened)
    work()

    [posted] = reviews_posted(github)
    assert (posted.json["event"], posted.status) == ("COMMENT", 200)
    assert review_checks(github)[0]["conclusion"] == "failure"  # the gate is the check run, not the review


def test_malformed_findings_are_sent_back_and_never_posted(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    pull = PullRequest(github, git)
    pull.push({"app.py": changed_app()})
    bad = {"path": "app.py", "line": "thirty", "severity": "urgent", "title": "MALFORMED-MARKER", "body": "x"}
    llm.tool_call("report_findings", {"findings": [bad]})
    answer(llm, finding(30, title="Well formed"))

    deliver("pull_request", pull.event("opened"))
    work()

    assert len(llm.requests) == 2
    assert '"is_error": true' in llm.requests[1].text
    assert "MALFORMED-MARKER" not in all_sent(github)
    assert "Well formed" in reviews_posted(github)[0].json["comments"][0]["body"]


def test_a_5000_line_pull_request_is_reviewed_in_several_calls(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    pull = PullRequest(github, git)
    files = {
        f"pkg/module_{n}.py": "".join(f"value_{n}_{i} = compute({i}, 'text for line {i}')\n" for i in range(500))
        for n in range(10)
    }
    pull.push(files)
    for _ in range(40):
        answer(llm)

    deliver("pull_request", pull.event("opened"))
    work()

    [review_pass] = passes(store)
    assert review_pass.status == ReviewStatus.done
    assert 2 <= len(llm.requests) == review_pass.llm_calls
    prompts = "".join(request.text for request in llm.requests)
    assert all(f"value_{n}_499 = " in prompts and f"value_{n}_0 = " in prompts for n in range(10))
    assert sorted(review_pass.files_reviewed) == sorted(files)
    assert "Reviewed 10 files" in reviews_posted(github)[0].json["body"]


def test_skipped_files_are_named_with_the_reason(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    pull = PullRequest(github, git)
    pull.push({"app.py": changed_app(), "vendor/lib.py": "X = 1\n", "poetry.lock": "lock\n"})
    answer(llm)

    deliver("pull_request", pull.event("opened"))
    work()

    body = reviews_posted(github)[0].json["body"]
    assert "Reviewed 1 file" in body and "Skipped 2 files" in body and "`review.skip_paths`" in body
    assert "vendor/lib.py" not in llm.requests[0].text


# --- publishing ---------------------------------------------------------------------------------------------------


def test_a_422_moves_the_line_comments_into_the_body(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    pull = PullRequest(github, git)
    pull.push({"app.py": changed_app()})
    answer(llm, finding(30, title="Refused here"))
    refusal = {"message": "Unprocessable Entity", "errors": ["Line could not be resolved"], "status": "422"}
    github.respond("POST", REVIEWS, 422, refusal)

    deliver("pull_request", pull.event("opened"))
    work()

    refused, accepted = reviews_posted(github)
    assert (refused.status, accepted.status) == (422, 200)
    assert len(refused.json["comments"]) == 1 and "comments" not in accepted.json
    assert "Refused here" in accepted.json["body"] and "GitHub refused it as a line comment" in accepted.json["body"]
    assert stored_findings(store)["Refused here"].comment_id is None
    assert passes(store)[0].status == ReviewStatus.done


@pytest.mark.parametrize(
    ("fail_on", "severities", "conclusion"),
    [
        ("high", ["critical", "low"], "failure"),
        ("high", ["medium"], "neutral"),
        ("never", ["critical"], "neutral"),
        ("low", [], "success"),
    ],
)
def test_the_check_conclusion_follows_fail_on(
    fail_on: str,
    severities: list[str],
    conclusion: str,
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
) -> None:
    github.files[(OWNER, REPO, CONFIG, None)] = f"review: {{fail_on: {fail_on}}}\n"
    pull = PullRequest(github, git)
    pull.push({"app.py": changed_app()})
    answer(llm, *(finding(29 + i, s, f"Finding {s}") for i, s in enumerate(severities)))

    deliver("pull_request", pull.event("opened"))
    work()

    [check] = review_checks(github)
    assert (check["status"], check["conclusion"]) == ("completed", conclusion)


def test_more_than_50_annotations_go_in_several_updates(
    deliver: Deliverer, work: Callable[..., None], github: GitHubDouble, git: GitServer, llm: AnthropicDouble
) -> None:
    pull = PullRequest(github, git)
    pull.push({"big.py": "".join(f"line_{i} = {i}\n" for i in range(1, 131))})
    answer(llm, *(finding(i, "low", f"Issue number {i}", path="big.py") for i in range(1, 121)))

    deliver("pull_request", pull.event("opened"))
    work()

    updates = github.calls("PATCH", CHECK_UPDATE)
    sizes = [len(update.json["output"].get("annotations", [])) for update in updates]
    assert sizes == [50, 50, 20]
    assert "conclusion" not in updates[0].json and updates[-1].json["conclusion"] == "neutral"
    [posted] = reviews_posted(github)
    assert len(posted.json["comments"]) == 20  # review.max_comments; the rest are in the body
    assert "More findings" in posted.json["body"]


def test_no_model_fails_the_pass_with_a_message_in_the_check_run(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    store: Store,
    settings: Settings,
    runtime: Runtime,
) -> None:
    runtime.llm = None
    pull = PullRequest(github, git)
    pull.push({"app.py": changed_app()})

    deliver("pull_request", pull.event("opened"))
    work()

    [review_pass] = passes(store)
    assert review_pass.status == ReviewStatus.failed and "No LLM is configured" in (review_pass.error or "")
    [check] = review_checks(github)
    assert check["conclusion"] == "failure" and "ANTHROPIC_API_KEY" in check["output"]["summary"]


# --- resolution ---------------------------------------------------------------------------------------------------


def test_a_finding_no_longer_reported_is_resolved_and_open_ones_are_not_repeated(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    pull = PullRequest(github, git)
    first = pull.push({"app.py": changed_app()})
    answer(llm, finding(30, "high", "Unchecked call"), finding(29, "medium", "Magic number"))
    deliver("pull_request", pull.event("opened"))
    work()
    unchecked = stored_findings(store)["Unchecked call"]

    second = pull.push({"app.py": changed_app(30, "checked(compute())")})
    github.compares[(OWNER, REPO, f"{first}...{second}")] = {
        "status": "ahead",
        "files": files_between(git, first, second),
    }
    answer(llm, finding(29, "medium", "Magic number"))
    deliver("pull_request", pull.event("synchronize", before=first, after=second))
    work()

    [reply] = github.calls("POST", REPLIES)
    assert reply.path_params["comment_id"] == unchecked.comment_id and "looks resolved" in reply.json["body"]
    rows = stored_findings(store)
    assert (rows["Unchecked call"].status, rows["Magic number"].status) == (FindingStatus.resolved, FindingStatus.open)
    assert rows["Magic number"].last_seen_sha == second
    second_review = reviews_posted(github)[-1].json
    assert "comments" not in second_review  # Magic number was posted before and is not repeated
    assert "**1 open**, **1 resolved**" in second_review["body"] and "Unchecked call" in second_review["body"]
    [_failing, passing] = [c for c in review_checks(github)]
    assert passing["conclusion"] == "neutral"  # the high finding is resolved; a medium one is still open

    answer(llm, finding(29, "medium", "Magic number"))
    deliver("issue_comment", pull.comment("/nofx review"))
    work()
    summary = reviews_posted(github)[-1].json
    assert "comments" not in summary and "**1 open**, **1 resolved**" in summary["body"]
    assert len(github.calls("POST", REPLIES)) == 1


def test_a_pass_job_delivered_twice_runs_once(
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
    runtime: Runtime,
) -> None:
    pull = PullRequest(github, git)
    pull.push({"app.py": changed_app()})
    review_pass = make_pass(pull, head_sha=pull.head, trigger="comment")
    with store.session() as session:
        session.add(review_pass)
    answer(llm)
    runtime.queue.enqueue_review(review_pass.id)
    runtime.queue.reviews.enqueue("bot.worker.jobs.run_review", review_pass.id)
    work()

    assert passes(store)[0].status == ReviewStatus.done
    assert len(reviews_posted(github)) == 1 and len(llm.requests) == 1


def test_an_incremental_pass_leaves_findings_it_did_not_read_open(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    pull = PullRequest(github, git)
    first = pull.push({"app.py": changed_app()})
    answer(llm, finding(30, "high", "Unchecked call"))
    deliver("pull_request", pull.event("opened"))
    work()

    second = pull.push({"app.py": changed_app().replace("VALUE_10 = 10", "VALUE_10 = 11")})
    github.compares[(OWNER, REPO, f"{first}...{second}")] = {
        "status": "ahead",
        "files": files_between(git, first, second),
    }
    answer(llm)  # the push's hunk (around line 10) is fine; line 30 was not shown to the model
    deliver("pull_request", pull.event("synchronize", before=first, after=second))
    work()

    assert "VALUE_30" not in llm.requests[-1].text
    assert stored_findings(store)["Unchecked call"].status == FindingStatus.open
    assert github.calls("POST", REPLIES) == []
    assert review_checks(github)[-1]["conclusion"] == "failure"  # still open, still failing the gate


def test_review_feedback_is_remembered_on_the_pull_requests_thread(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
    runtime: Any,
) -> None:
    from cryptography.fernet import Fernet

    from bot.runs import memory
    from bot.runs.memory import ThreadMemoryConfig

    keys = (Fernet.generate_key().decode(),)
    runtime.engine.memory = ThreadMemoryConfig(keys)
    pull = PullRequest(github, git)
    pull.push({"app.py": changed_app()})
    answer(llm, finding(30, "high", "Unchecked call"))

    deliver("pull_request", pull.event("opened"))
    work()

    repository_id = pull.event("opened")["repository"]["id"]  # memory belongs to the repository's id
    [entry] = memory.recall(store, keys, memory.ThreadKey(f"{OWNER}/{REPO}", pull.number, repository_id))
    assert entry.kind == "review_feedback" and "high: app.py: Unchecked call" in (entry.text or "")


def test_the_review_label_from_someone_without_permission_reviews_nothing(
    deliver: Deliverer, work: Callable[..., None], github: GitHubDouble, git: GitServer, store: Store
) -> None:
    github.files[(OWNER, REPO, CONFIG, None)] = "review:\n  auto: false\n"
    pull = PullRequest(github, git)
    pull.push({"app.py": changed_app()})
    github.permissions[(OWNER, REPO, "Codertocat")] = "read"

    deliver("pull_request", pull.event("labeled", label={"name": "nofx:review"}))
    work()

    assert passes(store) == []
    [reply] = [c.json["body"] for c in github.calls("POST", "/repos/{owner}/{repo}/issues/{issue_number}/comments")]
    assert "only people with *write* access" in reply


def test_a_pass_whose_worker_died_is_queued_again_once_then_failed(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
    queue: Any,
    runtime: Any,
) -> None:
    from datetime import timedelta

    from sqlalchemy import text

    from bot.review import pass_records
    from bot.worker.loop import run_worker

    pull = PullRequest(github, git)
    pull.push({"app.py": changed_app()})
    deliver("pull_request", pull.event("opened"))
    run_worker(runtime, burst=True, max_jobs=1)  # only the dispatch: the pass is recorded and queued
    [review_pass] = passes(store)
    pass_records.claim_pass(store, review_pass.id)  # a worker took it ... and died
    with store.session() as session:
        session.execute(
            text("UPDATE reviewpass SET started_at = '2000-01-01 00:00:00' WHERE id = :i"), {"i": review_pass.id}
        )

    assert pass_records.restart_abandoned(store, queue, timedelta(minutes=30)) == [review_pass.id]
    answer(llm, finding(30))
    work()
    [done] = passes(store)
    assert (done.status, done.restarts) == (ReviewStatus.done, 1)
    [check] = review_checks(github)
    assert (check["status"], check["conclusion"]) == ("completed", "neutral")

    with store.session() as session:  # dies again after the restart: failed, to be re-run by hand
        session.execute(
            text("UPDATE reviewpass SET status = 'running', started_at = '2000-01-01 00:00:00' WHERE id = :i"),
            {"i": review_pass.id},
        )
    assert pass_records.restart_abandoned(store, queue, timedelta(minutes=30)) == []
    failed = pass_records.get_pass(store, review_pass.id)
    assert failed is not None and failed.status == ReviewStatus.failed and "Re-run" in (failed.error or "")
