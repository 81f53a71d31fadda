"""Comments that answer a command without a run: the plan, the help list, refusals and config or plan errors."""

from __future__ import annotations

from collections.abc import Mapping

from bot.plans import Plan
from bot.render.run_view import APPROVAL_TOOL, request_section
from bot.render.text import (
    COMMENT_LIMIT,
    TextBudget,
    clean_text,
    code_span,
    escape_inline,
    escape_keeping_code,
    fit,
    join_words,
    mention,
    middle,
    paragraphs,
    shorten,
)
from bot.render.words import step_ref, tool_words, words_for

MAX_DEPENDENCIES_SHOWN = 5


def plan_comment(plan: Plan, *, request: str, git_mode: str, prefix: str = "/nofx") -> str:
    """The answer to `/nofx plan …`: what would run, in order, and where it would stop for approval."""
    words = words_for(git_mode)
    numbers = {step.name: index for index, step in enumerate(plan.steps, start=1)}
    lines = []
    for index, step in enumerate(plan.steps, start=1):
        line = f"{index}. {step_ref(step.name, index, words)} · {tool_words(step.tool, words)}"
        if step.depends_on:
            refs = [step_ref(name, numbers.get(name, 0), words) for name in step.depends_on[:MAX_DEPENDENCIES_SHOWN]]
            if len(step.depends_on) > MAX_DEPENDENCIES_SHOWN:
                refs.append(f"{len(step.depends_on) - MAX_DEPENDENCIES_SHOWN} more")
            line += " · after " + join_words(refs)
        if step.tool == APPROVAL_TOOL:
            line += " · ✋ needs approval"
        lines.append(line)
    approvals = [step_ref(s.name, i, words) for i, s in enumerate(plan.steps, start=1) if s.tool == APPROVAL_TOOL]
    if approvals:
        approval_note = (
            f"Needs approval: {join_words(approvals[:10])}. The run stops there until someone replies "
            f"{code_span(prefix + ' approve')}."
        )
    else:
        approval_note = "No step needs approval."
    one_line = " ".join(clean_text(request).split())
    command = f"{prefix} {one_line}" if one_line and len(one_line) <= 200 else f"{prefix} <request>"

    def render(budget: TextBudget) -> str:
        return paragraphs(
            "### 📋 nofx plan",
            request_section(request, budget),
            f"**Goal:** {escape_inline(middle(clean_text(plan.goal), budget.detail))}",
            "\n".join(lines),
            approval_note,
            f"Nothing has run. Reply {code_span(command)} to run it.",
        )

    return fit(render, COMMENT_LIMIT, TextBudget(request=4_000, detail=2_000))


def help_comment(
    prefix: str, *, git_mode: str, templates: Mapping[str, str] | None = None, run_label: str = "nofx"
) -> str:
    """The command list, in the repository's prefix; `git <op>` only where the mode allows git operations.

    `templates` (name → one-line description) are listed one line each, with the label that starts each.
    """
    words = words_for(git_mode)
    commands = [
        ("add a shopping cart", "ask for a change: nofx plans it, does it and reports here"),
        ("plan <request>", "show the plan for a request without running anything"),
        ("review", words.review_help),
        ("approve [step]", "let a run that waits for approval continue"),
        ("reject [reason]", "stop a run that waits for approval"),
        ("retry [step]", "run a failed step again, and the steps after it"),
        ("cancel", "stop the run in progress"),
        ("status", "show where the current run is"),
        ("help", "show this list"),
    ]
    if words.details:
        commands.append(("git <op> [args]", "run a git operation on the run's branch"))
    lines = [f"- {code_span(f'{prefix} {usage}')} — {what}" for usage, what in commands]
    listed = [
        f"- {code_span(f'{prefix} {name}: <request>')} or the label {code_span(f'{run_label}:{name}')} — "
        + escape_inline(shorten(clean_text(description), 200))
        for name, description in (templates or {}).items()
    ]
    templates_part = paragraphs("### Templates", "\n".join(listed)) if listed else ""
    return paragraphs("### nofx commands", "\n".join(lines), templates_part)


def permission_refused(user: str, minimum: str) -> str:
    """The reply to someone who may not trigger nofx; the mention is wanted, so they see the answer."""
    return (
        f"{mention(user)}, only people with *{escape_inline(minimum)}* access (or higher) to this repository "
        "can ask nofx to act. A maintainer can run the command instead."
    )


def not_allowed(user: str, action: str, *, minimum: str | None = None) -> str:
    """The reply to an approve, reject, retry or cancel from someone without the permission for it."""
    needed = f"*{escape_inline(minimum)}* access (or higher)" if minimum else "more access"
    return (
        f"{mention(user)}, you cannot {escape_inline(action)} this run: that needs {needed} to this repository. "
        "A maintainer can do it instead."
    )


def nothing_to_do(what: str) -> str:
    """A command that found nothing to act on, e.g. an approval with no run waiting."""
    return escape_keeping_code(what)


def config_error(error_text: str) -> str:
    """Why a run did not start: `.github/nofx.yml` is invalid. The git mode is unknown here, so no mode wording."""
    prefix = "`.github/nofx.yml`: "
    text = clean_text(error_text)
    if not text.startswith(prefix):  # a base it extends, or the organization's defaults, names its own file
        return (
            f"nofx could not use its configuration: {escape_keeping_code(shorten(text, 4_000))}\n\n"
            "Nothing was run. Fix that file on its repository's default branch and try again."
        )
    return (
        f"nofx could not read `.github/nofx.yml`: {escape_keeping_code(shorten(text[len(prefix) :], 4_000))}\n\n"
        "Nothing was run. Fix the file on the default branch and try again."
    )


def plan_refused(error_text: str, *, prefix: str = "/nofx") -> str:
    """Why a request did not run: its plan failed validation before anything ran."""
    return (
        f"nofx could not make a plan it can run safely: {escape_keeping_code(shorten(clean_text(error_text), 4_000))}"
        f"\n\nNothing was run. Rephrase the request and try again; {code_span(prefix + ' plan <request>')} "
        "shows the plan without running it."
    )
