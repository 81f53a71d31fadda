"""How each git mode speaks: the one table of wording that differs between `hidden`, `basic` and `advanced`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from bot.render.text import clean_text, code_span, escape_inline, shorten

GIT_MODES = ("hidden", "basic", "advanced")
MAX_NAME_CHARS = 100  # a step name longer than this is shortened where it is shown

_TOOL_WORDS = {
    "setup": "install the dependencies",
    "codegen": "write the code",
    "workspace:write": "write the files",
    "gate:test": "run the tests",
    "gate:lint": "check the style",
    "gate:typecheck": "check the types",
    "gate:llm_review": "review the changes",
    "manual:approval": "wait for approval",
    "gate:ci": "wait for CI",
}


@dataclass(frozen=True)
class Words:
    """How one git mode speaks; the only place where the wording of the modes differs."""

    tools: Mapping[str, str]  # what each tool does, in this mode's words
    ready: str  # success with a review link: {link} {where}
    saved: str  # success without one: {where}
    link_text: str  # the review link's text when no number may be shown
    review_help: str  # what `review` does, for the help list
    names_git: bool  # may say branch, pull request, #number, and show step names that use git words
    details: bool  # also head SHA, commit count, tool ids and the `git <op>` command


WORDS: Mapping[str, Words] = {
    "hidden": Words(
        tools={**_TOOL_WORDS, "git_ops": "save your changes", "git_pr": "get your changes ready for review"},
        ready="Your changes are ready for review: {link}.",
        saved="Your changes are saved.",
        link_text="take a look",
        review_help="review the proposed changes",
        names_git=False,
        details=False,
    ),
    "basic": Words(
        tools={**_TOOL_WORDS, "git_ops": "commit and push the changes", "git_pr": "open a pull request"},
        ready="Your changes are ready for review in pull request {link}{where}.",
        saved="Your changes are saved{where}.",
        link_text="open it",
        review_help="review this pull request",
        names_git=True,
        details=False,
    ),
    "advanced": Words(
        tools={**_TOOL_WORDS, "git_ops": "run git operations", "git_pr": "open a pull request"},
        ready="Pull request {link} is open{where}.",
        saved="Your changes are saved{where}.",
        link_text="open it",
        review_help="review this pull request",
        names_git=True,
        details=True,
    ),
}

# What hidden mode never says. Letter boundaries rather than \b, so `git_pr` and `open-pr` are caught too.
GIT_WORDS = re.compile(
    r"(?<![a-z])(?:git|branch(?:es)?|commit(?:s|ted|ting)?|push(?:es|ed|ing)?|pull[\s_-]*requests?|prs?"
    r"|merg(?:e|es|ed|ing)|rebas(?:e|es|ed|ing)|checkout|cherry[\s_-]*pick)(?![a-z])",
    re.IGNORECASE,
)


def words_for(git_mode: str) -> Words:
    """The wording of a git mode; an unknown mode is a bug in the caller, not something to guess around."""
    try:
        return WORDS[git_mode]
    except KeyError:
        raise ValueError(f"unknown git mode {git_mode!r}; expected one of {', '.join(GIT_MODES)}") from None


def step_ref(name: str, number: int, words: Words) -> str:
    if words.names_git or not GIT_WORDS.search(name):
        return code_span(shorten(clean_text(name), MAX_NAME_CHARS))
    return f"step {number}"


def tool_words(tool: str, words: Words, *, tool_id: bool = True) -> str:
    what = words.tools.get(tool) or escape_inline(shorten(clean_text(tool), MAX_NAME_CHARS))
    return f"{what} ({code_span(tool)})" if words.details and tool_id else what
