"""The model works like an engineer: it searches and reads a large repository, repairs what a gate rejects, and may
end in plain text. End to end through real parts, as in test_pull_request_flow."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace

import pytest

from bot.models import Run, RunStatus, StepStatus
from bot.runs import checkpoints, queries
from bot.settings import Settings
from bot.store import Store
from tests.conftest import BASE, CALC, OWNER, REPO, Deliverer, ask, with_model
from tests.support.git_server import GitServer
from tests.support.github_double import GitHubDouble
from tests.support.llm_double import AnthropicDouble, Request

CONFIG = ".github/nofx.yml"
GATES = "gates:\n  test: python3 -m unittest -q\n"
BROKEN_MULTIPLY = "def multiply(a, b):\n    return a + b\n"
MULTIPLY = "def multiply(a, b):\n    return a * b\n"
TEST_MULTIPLY = (
    "import unittest\n\nfrom calc import multiply\n\n\n"
    "class MultiplyTest(unittest.TestCase):\n    def test_multiply(self):\n        self.assertEqual(multiply(2, 3), 6)\n"
)


@pytest.fixture
def settings(settings: Settings, llm: AnthropicDouble) -> Settings:
    return replace(with_model(settings, llm))


pytestmark = pytest.mark.usefixtures("example_installation")


def the_run(store: Store) -> Run:
    from sqlmodel import select

    with store.session() as session:
        [run] = session.exec(select(Run)).all()
    return run


def said(request: Request) -> str:
    """All text nofx sent the model in one request: its messages' text and tool results, unescaped."""
    texts: list[str] = []
    for message in request.json["messages"]:
        content = message["content"]
        for block in [{"type": "text", "text": content}] if isinstance(content, str) else content:
            if block["type"] == "text":
                texts.append(block["text"])
            elif block["type"] == "tool_result":
                inner = block["content"]
                texts += [inner] if isinstance(inner, str) else [b.get("text", "") for b in inner]
    return "\n".join(texts)


def final_comment(github: GitHubDouble) -> str:
    body: str = github.issue_comments[(OWNER, REPO, 1)][-1]["body"]
    return body


def test_a_failing_first_attempt_is_repaired_before_the_pull_request_opens(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
    settings: Settings,
) -> None:
    github.files[(OWNER, REPO, CONFIG, None)] = GATES
    llm.tool_calls(
        [
            ("replace_in_file", {"path": "calc.py", "old": CALC, "new": CALC + "\n\n" + BROKEN_MULTIPLY}),
            ("write_file", {"path": "test_multiply.py", "content": TEST_MULTIPLY}),
            ("finish", {"summary": "Adds multiply()."}),
        ]
    )
    llm.tool_call("read_file", {"path": "calc.py", "start_line": 5})  # the repair round looks first
    llm.tool_calls(
        [
            ("replace_in_file", {"path": "calc.py", "old": BROKEN_MULTIPLY, "new": MULTIPLY}),
            ("finish", {"summary": "*"}),
        ]
    )

    deliver("issue_comment", ask(git, "/nofx add a multiply function"))
    work()

    run = the_run(store)
    assert run.status == RunStatus.succeeded, run.error
    steps = {s.name: s for s in queries.steps_of(store, run.id)}
    assert [s.status for s in steps.values()] == [StepStatus.succeeded] * 5  # the last: no CI to wait for
    assert steps["test"].output["repairs"] == [
        {"attempt": 1, "files": ["calc.py"], "passed": True, "command": "python3 -m unittest -q"}
    ]
    branch = steps["pull-request"].output["branch"]
    assert git.show(OWNER, REPO, branch, "calc.py") == CALC + "\n\n" + MULTIPLY
    assert len(github.calls("POST", "/repos/{owner}/{repo}/pulls")) == 1
    # The repair round saw the failure, fenced as data with repository paths, and the diff so far.
    repair = said(llm.requests[1])
    assert "Repair attempt 1" in repair and '<untrusted_data source="output">' in repair
    assert (
        "AssertionError: 5 != 6" in repair and "+    return a + b" in repair and "new file test_multiply.py" in repair
    )
    assert str(settings.data_dir.resolve()) not in repair and 'File "test_multiply.py"' in repair
    assert "5\tdef multiply(a, b):" in said(llm.requests[2])  # the ranged read answered with numbered lines
    # The attempt is checkpointed and listed in the status comment.
    outcomes = [c.outcome for c in checkpoints.list_for_run(store, run.id) if c.step_name == "test"]
    assert outcomes == ["repair 1", "succeeded"]
    assert "repair 1: changed `calc.py` · checks passed" in final_comment(github)


def test_a_repair_that_never_passes_fails_the_run_after_the_last_attempt(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    github.files[(OWNER, REPO, CONFIG, None)] = GATES
    llm.tool_calls(
        [("replace_in_file", {"path": "calc.py", "old": "a + b", "new": "a - b"}), ("finish", {"summary": "-"})]
    )
    for old, new in (("a - b", "a - b + 0"), ("a - b + 0", "b - a")):
        llm.tool_calls([("replace_in_file", {"path": "calc.py", "old": old, "new": new}), ("finish", {"summary": "?"})])

    deliver("issue_comment", ask(git, "/nofx subtract instead"))
    work()

    run = the_run(store)
    assert run.status == RunStatus.failed
    steps = {s.name: s for s in queries.steps_of(store, run.id)}
    assert (steps["test"].status, steps["pull-request"].status) == (StepStatus.failed, StepStatus.skipped)
    assert (steps["test"].error or "").startswith("still failing after 2 repair attempt(s): `python3 -m unittest -q`")
    assert "AssertionError: 1 != 5" in (steps["test"].error or "")  # the last attempt's output
    assert [r["passed"] for r in steps["test"].output["repairs"]] == [False, False]
    assert not github.calls("POST", "/repos/{owner}/{repo}/pulls")
    assert llm.pending == 0 and len(llm.requests) == 3  # exactly two repair rounds, then no more spending
    comment = final_comment(github)
    assert "repair 1: changed `calc.py` · still failing" in comment
    assert "repair 2: changed `calc.py` · still failing" in comment
    assert comment.count("```") == 2  # the gate output is fenced once


def test_a_model_that_ends_in_plain_text_after_its_edits_has_finished(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    github.files[(OWNER, REPO, CONFIG, None)] = GATES
    llm.tool_calls(
        [
            ("replace_in_file", {"path": "calc.py", "old": CALC, "new": CALC + "\n\n" + MULTIPLY}),
            ("write_file", {"path": "test_multiply.py", "content": TEST_MULTIPLY}),
        ]
    )
    llm.text("Done. I added multiply() and its test.")

    deliver("issue_comment", ask(git, "/nofx add a multiply function"))
    work()

    run = the_run(store)
    assert run.status == RunStatus.succeeded, run.error
    generate = next(s for s in queries.steps_of(store, run.id) if s.name == "generate")
    assert generate.output["change_summary"] == "Done. I added multiply() and its test."
    # Before any edit a tool call is required; after edits the model may answer in text.
    assert [r.json["tool_choice"]["type"] for r in llm.requests] == ["any", "auto"]
    assert len(llm.requests) == 2


def test_a_ten_thousand_file_repository_is_searched_and_a_large_file_edited_in_place(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    files = {f"pkg/m{n // 100:03d}/mod_{n:05d}.py": f"VALUE_{n} = {n}\n" for n in range(10_000)}
    lines = [f"def helper_{n}(x):\n    return x + {n}\n" for n in range(4000)]
    lines[2500] = "def discount(price):\n    return price\n"
    big = "".join(lines)
    assert len(big.encode()) > 128 * 1024
    files["pkg/pricing/rules.py"] = big
    git.commit_many(OWNER, REPO, files, branch=BASE)
    github.branches[(OWNER, REPO, BASE)] = git.git(OWNER, REPO, "rev-parse", BASE).strip()
    github.files[(OWNER, REPO, CONFIG, None)] = "gates: {}\n"
    llm.tool_call("search_code", {"pattern": r"def discount\("})
    llm.tool_call("read_file", {"path": "pkg/pricing/rules.py", "start_line": 5001, "end_line": 5002})
    llm.tool_call(
        "replace_in_file",
        {"path": "pkg/pricing/rules.py", "old": "    return price\n", "new": "    return price * 0.9\n"},
    )
    llm.tool_call("finish", {"summary": "Ten percent off."})

    deliver("issue_comment", ask(git, "/nofx give a ten percent discount"))
    work()

    run = the_run(store)
    assert run.status == RunStatus.succeeded, run.error
    assert len(said(llm.requests[0])) < 20_000  # the tree is summarised, not stuffed into the prompt
    assert "10003 tracked files" in said(llm.requests[0])
    assert "pkg/pricing/rules.py:5001: def discount(price):" in said(llm.requests[1])
    assert "5002\t    return price" in said(llm.requests[2]) and "lines 5001-5002 of 8000" in said(llm.requests[2])
    branch = next(s for s in queries.steps_of(store, run.id) if s.name == "pull-request").output["branch"]
    assert git.show(OWNER, REPO, branch, "pkg/pricing/rules.py") == big.replace(
        "def discount(price):\n    return price\n", "def discount(price):\n    return price * 0.9\n"
    )


def test_the_review_before_the_pull_request_sends_its_findings_to_a_repair_round(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    github.files[(OWNER, REPO, CONFIG, None)] = GATES + "review:\n  before_pr: true\n"
    llm.tool_calls(
        [
            ("replace_in_file", {"path": "calc.py", "old": CALC, "new": CALC + "\n\n" + MULTIPLY}),
            ("write_file", {"path": "test_multiply.py", "content": TEST_MULTIPLY}),
            ("finish", {"summary": "Adds multiply()."}),
        ]
    )
    finding = {"path": "calc.py", "line": 5, "severity": "high", "title": "No docstring", "body": "Say what it does."}
    llm.tool_call("report_findings", {"findings": [finding]})
    documented = MULTIPLY.replace("):\n", '):\n    """The product of a and b."""\n', 1)
    llm.tool_calls(
        [("replace_in_file", {"path": "calc.py", "old": MULTIPLY, "new": documented}), ("finish", {"summary": "Doc."})]
    )
    llm.tool_call("report_findings", {"findings": []})

    deliver("issue_comment", ask(git, "/nofx add a multiply function"))
    work()

    run = the_run(store)
    assert run.status == RunStatus.succeeded, run.error
    steps = {s.name: s for s in queries.steps_of(store, run.id)}
    assert list(steps) == ["generate", "apply", "review", "test", "pull-request", "ci"]
    assert steps["review"].output["repairs"] == [{"attempt": 1, "files": ["calc.py"], "passed": True}]
    assert "[high] No docstring: Say what it does." in said(llm.requests[2])  # the repair round got the finding
    branch = steps["pull-request"].output["branch"]
    assert git.show(OWNER, REPO, branch, "calc.py") == CALC + "\n\n" + documented
    assert "repair 1: changed `calc.py` · checks passed" in final_comment(github)


def test_run_gate_names_a_missing_program_as_the_gate_step_does(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    github.files[(OWNER, REPO, CONFIG, None)] = "gates:\n  test: nofx-no-such-runner -q\nrepair:\n  max_attempts: 0\n"
    llm.tool_call("run_gate", {"gate": "test"})
    llm.tool_calls([("write_file", {"path": "notes.txt", "content": "x\n"}), ("finish", {"summary": "Notes."})])

    deliver("issue_comment", ask(git, "/nofx add notes"))
    work()

    run = the_run(store)
    test = next(s for s in queries.steps_of(store, run.id) if s.name == "test")
    hint = "`nofx-no-such-runner` was not found in the sandbox (exit code 127)"
    answer = said(llm.requests[1])  # the model's run_gate answer
    assert "`nofx-no-such-runner -q` failed with exit code 127" in answer
    assert hint in answer and "NOFX_SANDBOX_PATHS" in answer and "`setup` in .github/nofx.yml" in answer
    assert hint in (test.error or "")  # the same words as the gate step's failure


def test_a_long_conversation_resends_only_the_last_turns_results_whole(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    notes = {f"notes/n{n}.txt": "".join(f"n{n}-{i:03d} {'x' * 50}\n" for i in range(100)) for n in range(10)}
    git.commit_many(OWNER, REPO, notes, branch=BASE)
    github.branches[(OWNER, REPO, BASE)] = git.git(OWNER, REPO, "rev-parse", BASE).strip()
    github.files[(OWNER, REPO, CONFIG, None)] = "gates: {}\n"
    llm.tool_call("write_file", {"path": "draft.txt", "content": "draft-line\n" * 500})  # 5,500 chars
    for n in range(10):
        llm.tool_call("read_file", {"path": f"notes/n{n}.txt", "start_line": 1})
    llm.tool_call("finish", {"summary": "Read."})

    deliver("issue_comment", ask(git, "/nofx summarise the notes"))
    work()

    assert the_run(store).status == RunStatus.succeeded
    sizes = [len(json.dumps(request.json["messages"])) for request in llm.requests]
    assert len(sizes) == 12 and sizes[3] > 5_500 + 2 * 5_500  # the file written and two read, each whole
    assert max(sizes) < sizes[4] + 3_000  # then it stops growing: a short line per older answer or argument
    last = said(llm.requests[-1])
    assert all(f"n{n}-099 " in last for n in (7, 8, 9))  # the last three turns' answers, intact
    assert not any(f"n{n}-000 " in last for n in range(7))
    assert "[trimmed: read_file notes/n0.txt lines 1-end, 6," in last and "call it again" in last
    assert "draft-line" not in json.dumps(llm.requests[-1].json) and "[trimmed: 5,500 chars]" in llm.requests[-1].text
    assert git.show(OWNER, REPO, the_run(store).branch or "", "draft.txt") == "draft-line\n" * 500  # as written
