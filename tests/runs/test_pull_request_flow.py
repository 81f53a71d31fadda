"""`/nofx add …` on an issue comes back as a tested pull request, through real parts end to end.

GitHub is the OpenAPI-checking double; the repository is a real bare repository served over git smart HTTP
that refuses requests without an installation token the double issued; the model is a local server speaking
Anthropic's wire format; the queue is a real Valkey/Redis and the worker a real RQ worker.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from bot.models import Run, RunStatus, StepStatus
from bot.queue import WorkQueue
from bot.runs import queries
from bot.settings import Settings
from bot.store import Store
from tests.conftest import BASE, CALC, OWNER, REPO, Deliverer, ask, expire_routing_caches, with_model
from tests.support.git_server import GitServer, run_git
from tests.support.github_double import GitHubDouble
from tests.support.llm_double import AnthropicDouble

CONFIG = ".github/nofx.yml"
MULTIPLY = "def add(a, b):\n    return a + b\n\n\ndef multiply(a, b):\n    return a * b\n"
TEST_MULTIPLY = (
    "import unittest\n\nfrom calc import multiply\n\n\n"
    "class MultiplyTest(unittest.TestCase):\n    def test_multiply(self):\n        self.assertEqual(multiply(2, 3), 6)\n"
)
NO_APPROVAL = "gates:\n  test: python3 -m unittest -q\n"  # the default policy: no approval before the PR
APPROVE_PR = NO_APPROVAL + "policy:\n  require_approval_before: [git_pr]\n"


@pytest.fixture
def settings(settings: Settings, llm: AnthropicDouble) -> Settings:
    return replace(with_model(settings, llm), memory_keys=(Fernet.generate_key().decode(),))


pytestmark = pytest.mark.usefixtures("example_installation")


def script_multiply(llm: AnthropicDouble) -> None:
    llm.tool_call("read_file", {"path": "calc.py"})
    llm.tool_calls(
        [
            ("replace_in_file", {"path": "calc.py", "old": CALC, "new": MULTIPLY}),
            ("write_file", {"path": "test_multiply.py", "content": TEST_MULTIPLY}),
            ("finish", {"summary": "Adds multiply() with a test."}),
        ]
    )


def the_run(store: Store) -> Run:
    from sqlmodel import select

    with store.session() as session:
        [run] = session.exec(select(Run)).all()
    return run


def test_comment_comes_back_as_a_tested_pull_request(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
    settings: Settings,
) -> None:
    github.files[(OWNER, REPO, CONFIG, None)] = NO_APPROVAL
    script_multiply(llm)

    deliver("issue_comment", ask(git, "/nofx add a multiply function"))
    work()

    run = the_run(store)
    assert run.status == RunStatus.succeeded, run.error
    steps = {s.name: s for s in queries.steps_of(store, run.id)}
    assert [s.status for s in steps.values()] == [StepStatus.succeeded] * 5  # the last: no CI to wait for
    # The branch holds exactly what the model wrote, pushed with the installation token.
    branch = steps["pull-request"].output["branch"]
    assert branch.startswith("nofx/1-add-a-multiply-function")
    assert git.show(OWNER, REPO, branch, "calc.py") == MULTIPLY
    assert git.show(OWNER, REPO, branch, "test_multiply.py") == TEST_MULTIPLY
    assert git.requests_for("git-receive-pack", authorized=False) == []
    changed = git.git(OWNER, REPO, "diff", "--name-only", f"{BASE}...{branch}").split()
    assert changed == ["calc.py", "test_multiply.py"]  # no gate by-products (__pycache__) committed
    author = git.git(OWNER, REPO, "log", "-1", "--format=%an <%ae>%n%b", branch)
    assert author.startswith(f"{github.bot_login} <")
    assert "Co-authored-by: Codertocat <" in author
    # The tests ran in the worktree.
    assert steps["test"].output["exit_code"] == 0
    assert "Ran 2 tests" in steps["test"].output["output_tail"]
    # The pull request links the issue, lists the steps and asks the requester to review.
    [created] = github.calls("POST", "/repos/{owner}/{repo}/pulls")
    assert created.json["head"] == branch and created.json["base"] == BASE
    assert created.json["body"].startswith("Closes #1")
    assert "**test** (`gate:test`)" in created.json["body"]
    [review] = github.calls("POST", "/repos/{owner}/{repo}/pulls/{pull_number}/requested_reviewers")
    assert review.json == {"reviewers": ["Codertocat"]}
    # The check run concluded, on the commit the run concerns.
    check = github.check_runs[run.check_run_id]
    assert (check["status"], check["conclusion"]) == ("completed", "success")
    assert check["head_sha"] == github.branches[(OWNER, REPO, BASE)]
    # One status comment, edited in place, showing the outcome.
    posted = github.calls("POST", "/repos/{owner}/{repo}/issues/{issue_number}/comments")
    assert len(posted) == 1
    final = github.issue_comments[(OWNER, REPO, 1)][-1]["body"]
    assert "pull request" in final.lower() and f"nofx:run:{run.id}" in final
    # Nothing secret reached the model; costs were recorded.
    prompts = "".join(r.text for r in llm.requests)
    assert settings.webhook_secret not in prompts and "ghs_" not in prompts
    assert run.cost_usd > 0


def test_a_failing_gate_without_repairs_fails_the_run_and_opens_no_pull_request(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    github.files[(OWNER, REPO, CONFIG, None)] = NO_APPROVAL + "repair:\n  max_attempts: 0\n"
    llm.tool_calls(
        [
            ("replace_in_file", {"path": "calc.py", "old": "a + b", "new": "a - b"}),
            ("finish", {"summary": "Breaks add."}),
        ]
    )

    deliver("issue_comment", ask(git, "/nofx subtract instead"))
    work()

    run = the_run(store)
    assert run.status == RunStatus.failed
    statuses = {s.name: s.status for s in queries.steps_of(store, run.id)}
    assert statuses == {
        "generate": StepStatus.succeeded,
        "apply": StepStatus.succeeded,
        "test": StepStatus.failed,
        "pull-request": StepStatus.skipped,
        "ci": StepStatus.skipped,
    }
    assert not github.calls("POST", "/repos/{owner}/{repo}/pulls")
    final = github.issue_comments[(OWNER, REPO, 1)][-1]["body"]
    assert "AssertionError" in final and "/nofx retry test" in final
    assert final.count("```") == 2  # the gate output is fenced once, by the comment
    check = github.check_runs[run.check_run_id]
    assert check["conclusion"] == "failure" and "AssertionError" in check["output"]["text"]


def test_the_pull_request_waits_for_approval_when_the_repository_asks_for_it(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    github.files[(OWNER, REPO, CONFIG, None)] = APPROVE_PR
    script_multiply(llm)

    deliver("issue_comment", ask(git, "/nofx add a multiply function"))
    work()
    run = the_run(store)
    assert run.status == RunStatus.waiting
    assert not github.calls("POST", "/repos/{owner}/{repo}/pulls")
    last_update = github.calls("PATCH", "/repos/{owner}/{repo}/check-runs/{check_run_id}")[-1].json
    assert [a["identifier"] for a in last_update["actions"]] == ["approve", "reject", "cancel"]

    deliver("issue_comment", ask(git, "/nofx approve"))
    work()
    assert the_run(store).status == RunStatus.succeeded
    assert len(github.calls("POST", "/repos/{owner}/{repo}/pulls")) == 1


def test_path_escape_through_a_symlink_is_refused(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
    tmp_path: Path,
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    _commit_symlink(git, "docs", str(outside))
    github.branches[(OWNER, REPO, BASE)] = git.git(OWNER, REPO, "rev-parse", BASE).strip()
    github.files[(OWNER, REPO, CONFIG, None)] = NO_APPROVAL
    llm.tool_call("write_file", {"path": "docs/evil.txt", "content": "x"})
    llm.tool_call("finish", {"summary": "s"})

    deliver("issue_comment", ask(git, "/nofx write docs"))
    work()

    run = the_run(store)
    generate = next(s for s in queries.steps_of(store, run.id) if s.name == "generate")
    assert generate.status == StepStatus.failed and "proposed no changes" in (generate.error or "")
    assert "docs/evil.txt: goes through a symbolic link" in llm.requests[1].text  # the model was told at once
    assert list(outside.iterdir()) == []


def test_an_ambiguous_replacement_fails_with_the_path_and_reason(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    github.files[(OWNER, REPO, CONFIG, None)] = NO_APPROVAL
    llm.tool_call("replace_in_file", {"path": "calc.py", "old": "a", "new": "x"})
    llm.tool_call("finish", {"summary": "s"})

    deliver("issue_comment", ask(git, "/nofx rename a"))
    work()

    generate = next(s for s in queries.steps_of(store, the_run(store).id) if s.name == "generate")
    assert generate.status == StepStatus.failed
    assert "calc.py: the text to replace occurs 3 times; it must be unique" in llm.requests[1].text


def test_the_budget_stops_the_run_with_a_clear_message(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    github.files[(OWNER, REPO, CONFIG, None)] = NO_APPROVAL + "policy:\n  max_cost_usd: 0.001\n"
    llm.tool_call("read_file", {"path": "calc.py"}, input_tokens=5000)

    deliver("issue_comment", ask(git, "/nofx add a multiply function"))
    work()

    run = the_run(store)
    generate = next(s for s in queries.steps_of(store, run.id) if s.name == "generate")
    assert run.status == RunStatus.failed
    assert "max_cost_usd" in (generate.error or "")
    assert len(llm.requests) == 1  # nothing more was sent once the budget was spent


def test_an_overloaded_model_is_retried_until_it_recovers(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    github.files[(OWNER, REPO, CONFIG, None)] = NO_APPROVAL
    llm.overloaded(2)
    script_multiply(llm)

    deliver("issue_comment", ask(git, "/nofx add a multiply function"))
    work(timeout_s=60)

    assert the_run(store).status == RunStatus.succeeded
    assert len(llm.requests) == 4  # two overloaded answers, then the two turns of the script


def test_two_runs_on_one_repository_at_once(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    from sqlmodel import select

    github.files[(OWNER, REPO, CONFIG, None)] = NO_APPROVAL
    script_multiply(llm)
    script_multiply(llm)

    deliver("issue_comment", ask(git, "/nofx add a multiply function", number=1))
    deliver("issue_comment", ask(git, "/nofx add a multiply function", number=2))
    work()

    with store.session() as session:
        finished = session.exec(select(Run)).all()
    assert [r.status for r in finished] == [RunStatus.succeeded, RunStatus.succeeded]
    branches = {r.branch for r in finished}
    assert branches == {"nofx/1-add-a-multiply-function", "nofx/2-add-a-multiply-function"}
    for branch in branches:
        assert git.show(OWNER, REPO, branch, "calc.py") == MULTIPLY
    mirror = next((Path(store.url.removeprefix("sqlite:///")).parent / "data" / "workspaces").rglob("mirror.git"))
    assert git_fsck(mirror) == ""


def git_fsck(mirror: Path) -> str:
    return subprocess.run(
        ["git", "fsck", "--no-progress", "--no-dangling"], cwd=mirror, capture_output=True, text=True, check=True
    ).stdout


def _commit_symlink(git: GitServer, name: str, target: str) -> None:
    """Commit a symbolic link (mode 120000) pointing outside the repository, as a hostile repo could."""
    repo = git.repo_path(OWNER, REPO)
    parent = run_git(repo, "rev-parse", BASE).strip()
    with tempfile.TemporaryDirectory() as tmp:
        index = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        run_git(repo, "read-tree", parent, env=index)
        blob = run_git(repo, "hash-object", "-w", "--stdin", input=target.encode()).strip()
        run_git(repo, "update-index", "--add", "--cacheinfo", f"120000,{blob},{name}", env=index)
        tree = run_git(repo, "write-tree", env=index).strip()
    sha = run_git(repo, "commit-tree", tree, "-p", parent, "-m", "Add a link").strip()
    run_git(repo, "update-ref", f"refs/heads/{BASE}", sha)


def test_a_comment_on_nofxs_pull_request_continues_on_the_same_branch(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    from sqlmodel import select

    github.files[(OWNER, REPO, CONFIG, None)] = NO_APPROVAL
    script_multiply(llm)
    deliver("issue_comment", ask(git, "/nofx add a multiply function"))
    work()
    [opened] = github.calls("POST", "/repos/{owner}/{repo}/pulls")
    pr_number = opened.response["number"]
    branch = opened.json["head"]

    divide = MULTIPLY + "\n\ndef divide(a, b):\n    return a / b\n"
    llm.tool_calls(
        [
            ("replace_in_file", {"path": "calc.py", "old": MULTIPLY, "new": divide}),
            ("finish", {"summary": "Adds divide()."}),
        ]
    )
    follow_up = ask(git, "/nofx also add divide", number=pr_number)
    follow_up["issue"]["pull_request"] = {"url": opened.response["url"], "html_url": opened.response["html_url"]}
    deliver("issue_comment", follow_up)
    work()

    with store.session() as session:
        first, second = session.exec(select(Run).order_by(Run.created_at)).all()  # type: ignore[arg-type]
    assert second.status == RunStatus.succeeded, second.error
    assert (second.branch, second.follows_run_id) == (branch, first.id)
    assert git.show(OWNER, REPO, branch, "calc.py") == divide
    assert git.git(OWNER, REPO, "rev-list", "--count", f"{BASE}..{branch}").strip() == "2"
    assert len(github.calls("POST", "/repos/{owner}/{repo}/pulls")) == 1  # the same PR, updated
    assert github.calls("PATCH", "/repos/{owner}/{repo}/pulls/{pull_number}")
    # The earlier run's plan and outcome reached the model as context.
    assert "add a multiply function" in llm.requests[-1].text and "succeeded" in llm.requests[-1].text


ADVANCED = NO_APPROVAL + "git_mode: advanced\n"


def test_git_operations_in_advanced_mode(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    github.files[(OWNER, REPO, CONFIG, None)] = ADVANCED
    script_multiply(llm)
    deliver("issue_comment", ask(git, "/nofx add a multiply function"))
    work()
    branch = the_runs(store)[0].branch
    assert branch is not None

    git.commit(OWNER, REPO, {"README.md": "upstream\n"}, branch=BASE)
    deliver("issue_comment", ask(git, "/nofx git rebase"))
    work()
    assert git.show(OWNER, REPO, branch, "README.md") == "upstream\n"
    assert git.show(OWNER, REPO, branch, "calc.py") == MULTIPLY

    deliver("issue_comment", ask(git, "/nofx git branch keep/multiply"))
    work()
    assert git.show(OWNER, REPO, "keep/multiply", "calc.py") == MULTIPLY

    deliver("issue_comment", ask(git, "/nofx git revert"))
    work()
    assert git.show(OWNER, REPO, branch, "calc.py") == CALC
    assert [r.status for r in the_runs(store)] == [RunStatus.succeeded] * 4


def test_git_operations_are_refused_politely_outside_advanced_mode(
    deliver: Deliverer, work: Callable[..., None], github: GitHubDouble, git: GitServer, store: Store
) -> None:
    github.files[(OWNER, REPO, CONFIG, None)] = NO_APPROVAL
    deliver("issue_comment", ask(git, "/nofx git revert"))
    work()
    assert "git_mode" in github.issue_comments[(OWNER, REPO, 1)][-1]["body"]
    assert the_runs(store) == []


def the_runs(store: Store) -> list[Run]:
    from sqlmodel import select

    with store.session() as session:
        return list(session.exec(select(Run).order_by(Run.created_at)))  # type: ignore[arg-type]


WORKFLOW = "name: ci\non: push\njobs: {}\n"


def test_changing_ci_workflows_needs_an_approval_step(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
    queue: WorkQueue,
) -> None:
    github.files[(OWNER, REPO, CONFIG, None)] = NO_APPROVAL
    edit = [("write_file", {"path": ".github/workflows/ci.yml", "content": WORKFLOW}), ("finish", {"summary": "CI"})]
    llm.tool_calls(edit)
    deliver("issue_comment", ask(git, "/nofx add a CI workflow"))
    work()
    apply = next(s for s in queries.steps_of(store, the_runs(store)[0].id) if s.name == "apply")
    assert apply.status == StepStatus.failed
    assert ".github/workflows/ci.yml" in (apply.error or "") and "require_approval_before" in (apply.error or "")

    approving = NO_APPROVAL + "policy:\n  require_approval_before: [workspace:write]\n"
    github.files[(OWNER, REPO, CONFIG, None)] = approving  # a config change is a commit: the cache is per commit
    github.branches[(OWNER, REPO, BASE)] = git.commit(OWNER, REPO, {CONFIG: approving}, branch=BASE)
    expire_routing_caches(queue)  # seen once the head nofx remembers expires (a minute later)
    llm.tool_calls(edit)
    deliver("issue_comment", ask(git, "/nofx add a CI workflow", number=2))
    work()
    second = the_runs(store)[1]
    assert second.status == RunStatus.waiting  # a person approves before CI changes are written
    deliver("issue_comment", ask(git, "/nofx approve", number=2))
    work()
    second = the_runs(store)[1]
    assert second.status == RunStatus.succeeded, second.error
    assert git.show(OWNER, REPO, second.branch or "", ".github/workflows/ci.yml") == WORKFLOW


def test_retry_from_a_checkpoint_branches_the_work_and_keeps_what_was_written(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    from bot.runs import checkpoints

    github.files[(OWNER, REPO, CONFIG, None)] = APPROVE_PR
    script_multiply(llm)
    deliver("issue_comment", ask(git, "/nofx add a multiply function"))
    work()
    deliver("issue_comment", ask(git, "/nofx reject not yet"))
    work()
    source = the_runs(store)[0]
    assert source.status == RunStatus.cancelled
    listed = {c.step_name: c.n for c in checkpoints.list_for_run(store, source.id)}
    assert set(listed) >= {"apply", "test"}

    deliver("issue_comment", ask(git, f"/nofx retry --from {listed['apply']}"))
    work()
    resumed = the_runs(store)[1]
    assert resumed.status == RunStatus.waiting  # the remaining plan: test, approval, pull request
    assert [s.name for s in queries.steps_of(store, resumed.id)] == [
        "test",
        "approve-pull-request",
        "pull-request",
        "ci",
    ]
    deliver("issue_comment", ask(git, "/nofx approve"))
    work()

    resumed = the_runs(store)[1]
    assert resumed.status == RunStatus.succeeded, resumed.error
    assert resumed.branch == f"{source.branch}-cp{listed['apply']}"
    assert git.show(OWNER, REPO, resumed.branch, "calc.py") == MULTIPLY
    assert git.show(OWNER, REPO, resumed.branch, "test_multiply.py") == TEST_MULTIPLY
    assert len(llm.requests) == 2  # nothing was generated again


def test_the_thread_remembers_earlier_requests_until_told_to_forget(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    from sqlalchemy import text

    github.files[(OWNER, REPO, CONFIG, None)] = NO_APPROVAL
    script_multiply(llm)
    deliver("issue_comment", ask(git, "/nofx add a multiply function"))
    work()
    with store.session() as session:
        stored = [row[0] for row in session.execute(text("SELECT ciphertext FROM threadmemory"))]
    assert len(stored) == 3 and not any("multiply" in row for row in stored)  # request, plan, outcome; encrypted

    llm.tool_calls([("write_file", {"path": "NOTES.md", "content": "notes"}), ("finish", {"summary": "s"})])
    deliver("issue_comment", ask(git, "/nofx write some notes"))
    work()
    prompt = llm.requests[-1].text
    assert "Remembered from this thread" in prompt and "add a multiply function" in prompt

    deliver("issue_comment", ask(git, "/nofx forget"))
    work()
    assert "forgot" in github.issue_comments[(OWNER, REPO, 1)][-1]["body"]
    with store.session() as session:
        assert session.execute(text("SELECT count(*) FROM threadmemory")).scalar() == 0


def test_metrics_cover_queue_waits_sandboxes_github_calls_and_workers(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    client: Any,
    queue: Any,
) -> None:
    from bot.metrics import workers as worker_metrics

    github.files[(OWNER, REPO, CONFIG, None)] = NO_APPROVAL
    script_multiply(llm)
    deliver("issue_comment", ask(git, "/nofx add a multiply function"))
    work()
    worker_metrics.report_usage(queue.shared, name="test-worker")

    text = client.get("/metrics").text
    assert 'nofx_step_queue_wait_seconds_count{tool="gate:test"} 1.0' in text
    assert 'nofx_sandbox_runs_total{isolation="' in text
    assert 'nofx_github_api_calls_total{method="POST",status="201"}' in text
    assert "nofx_github_rate_limit_remaining 4999.0" in text
    assert 'nofx_worker_cpu_seconds_total{worker="test-worker"}' in text
    assert 'nofx_llm_tokens_total{direction="input",model="claude-sonnet-4-6",provider="anthropic"}' in text
    assert 'nofx_runs{status="succeeded"} 1.0' in text
    # Every queue the run used reports how long its jobs waited, and the waiting now (none left).
    for name in ("nofx", "nofx-reports", "nofx-steps"):
        assert f'nofx_queue_wait_seconds_count{{queue="{name}"}}' in text
        assert f'nofx_queue_oldest_wait_seconds{{queue="{name}"}} 0.0' in text
    assert 'nofx_queue_depth{queue="nofx-reviews"} 0.0' in text
