"""The `/nofx` parser: what a reader sees as a command is one, and nothing else is, whatever the text."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.events.commands import MAX_ARGUMENT, Command, Verb, parse

RESERVED = [verb.value for verb in Verb if verb is not Verb.change]


def cmd(verb: Verb, argument: str = "", *, truncated: bool = False, retry_from: str | None = None) -> Command:
    return Command(verb, argument, truncated=truncated, retry_from=retry_from)


EXAMPLES: list[tuple[str, str | None, Command | None]] = [
    # each reserved word, with and without an argument
    ("help", "/nofx help", cmd(Verb.help)),
    ("bare prefix is help", "/nofx", cmd(Verb.help)),
    ("bare prefix with trailing spaces", "/nofx   \t", cmd(Verb.help)),
    ("bare prefix ignores the next line", "/nofx\nadd a cart", cmd(Verb.help)),
    ("plan", "/nofx plan", cmd(Verb.plan)),
    ("plan with request", "/nofx plan add a cart", cmd(Verb.plan, "add a cart")),
    ("plan request on next lines", "/nofx plan\nadd a cart\nwith tests", cmd(Verb.plan, "add a cart\nwith tests")),
    ("review", "/nofx review", cmd(Verb.review)),
    ("approve", "/nofx approve", cmd(Verb.approve)),
    ("approve step", "/nofx approve deploy", cmd(Verb.approve, "deploy")),
    ("reject", "/nofx reject", cmd(Verb.reject)),
    ("reject reason", "/nofx reject tests are thin\nadd more", cmd(Verb.reject, "tests are thin\nadd more")),
    ("retry", "/nofx retry", cmd(Verb.retry)),
    ("retry step", "/nofx retry gate_test", cmd(Verb.retry, "gate_test")),
    ("retry from", "/nofx retry --from generate", cmd(Verb.retry, retry_from="generate")),
    ("retry from equals", "/nofx retry --from=generate", cmd(Verb.retry, retry_from="generate")),
    ("retry from missing", "/nofx retry --from", cmd(Verb.retry, "--from")),
    ("retry from empty equals", "/nofx retry --from=", cmd(Verb.retry, "--from=")),
    ("cancel", "/nofx cancel", cmd(Verb.cancel)),
    ("status", "/nofx status", cmd(Verb.status)),
    ("forget", "/nofx forget", cmd(Verb.forget)),
    ("git op", "/nofx git rebase main", cmd(Verb.git, "rebase main")),
    ("git op lowercased", "/nofx git Revert abc123", cmd(Verb.git, "revert abc123")),
    ("git unknown op passes through", "/nofx git push", cmd(Verb.git, "push")),
    ("bare git", "/nofx git", cmd(Verb.git)),
    # change requests
    ("change request", "/nofx add a cart", cmd(Verb.change, "add a cart")),
    ("change is not reserved", "/nofx change the header", cmd(Verb.change, "change the header")),
    ("unicode request", "/nofx ajoute un panier 🛒", cmd(Verb.change, "ajoute un panier 🛒")),
    ("long s is not status", "/nofx \u017ftatus", cmd(Verb.change, "\u017ftatus")),
    (
        "multi-line request",
        "/nofx add a cart\n  with a total  \n\nunrelated",
        cmd(Verb.change, "add a cart\nwith a total"),
    ),
    ("request stops at next command", "/nofx add a cart\n/nofx status", cmd(Verb.change, "add a cart")),
    ("request stops at fence", "/nofx add a cart\n```\ncode\n```", cmd(Verb.change, "add a cart")),
    ("request stops at quote", "/nofx add a cart\n> quoted", cmd(Verb.change, "add a cart")),
    ("request takes indented lines", "/nofx add a cart\n      indented", cmd(Verb.change, "add a cart\nindented")),
    # case and punctuation of the verb
    ("capitalised verb", "/nofx Approve", cmd(Verb.approve)),
    ("upper-case verb", "/nofx STATUS", cmd(Verb.status)),
    ("verb with colon", "/nofx plan: add a cart", cmd(Verb.plan, "add a cart")),
    ("verb with bang", "/nofx approve!", cmd(Verb.approve)),
    # what is a command line
    ("prefix glued to a word", "/nofxy help", None),
    ("prefix glued to a slash", "/nofx/help", None),
    ("prefix is case-sensitive", "/NOFX help", None),
    ("no slash", "nofx help", None),
    ("prefix mid-line", "please /nofx help", None),
    ("command on the last line", "Thanks, looks good.\n/nofx approve", cmd(Verb.approve)),
    ("prefix at the very end", "Thanks\n/nofx", cmd(Verb.help)),
    ("three spaces of indent", "   /nofx status", cmd(Verb.status)),
    ("four spaces of indent", "    /nofx status", None),
    ("tab indent", "\t/nofx status", None),
    ("four spaces under a paragraph line", "Thanks\n    /nofx status", None),
    ("only the first command counts", "/nofx approve\n/nofx reject no", cmd(Verb.approve)),
    ("tab after prefix", "/nofx\tstatus", cmd(Verb.status)),
    # fenced code
    ("backtick fence", "```\n/nofx approve\n```", None),
    ("tilde fence with info", "~~~ python title=x\n/nofx approve\n~~~", None),
    ("fence with info string", "```python\n/nofx approve\n```", None),
    ("indented fence", "   ```\n/nofx approve\n   ```", None),
    ("unterminated fence", "```\n/nofx approve", None),
    ("shorter fence does not close", "````\n```\n/nofx approve\n````", None),
    ("other fence char does not close", "~~~\n```\n/nofx approve\n~~~", None),
    ("closing fence with text does not close", "```\n``` nope\n/nofx approve", None),
    ("command after a closed fence", "```\n/nofx reject\n```\n/nofx approve", cmd(Verb.approve)),
    ("nested fence then command", "~~~~\n~~~\n~~~~\n/nofx approve", cmd(Verb.approve)),
    ("backticks in info make no fence", "``` `x`\n/nofx approve", cmd(Verb.approve)),
    ("four-space fence is no fence", "text\n    ```\n/nofx approve", cmd(Verb.approve)),
    # quotes
    ("quoted", "> /nofx approve", None),
    ("nested quote", ">> /nofx approve", None),
    ("spaced nested quote", "> > /nofx approve", None),
    ("lazy quote continuation", "> you said\n/nofx approve", None),
    ("command after quote and blank", "> you said\n\n/nofx approve", cmd(Verb.approve)),
    ("quoted command then real one", "> /nofx approve\n\n/nofx reject no", cmd(Verb.reject, "no")),
    ("quoted fence does not leak", "> ```\n/nofx approve", cmd(Verb.approve)),
    # HTML comments
    ("one-line comment", "<!-- /nofx approve -->", None),
    ("multi-line comment", "<!--\n/nofx approve\n-->", None),
    ("unterminated comment", "<!--\n/nofx approve", None),
    ("inline comment spanning lines", "text <!--\n/nofx approve\n-->", None),
    ("command after a template comment", "<!-- describe the change -->\n/nofx approve", cmd(Verb.approve)),
    ("command after closed multi-line comment", "<!--\nx\n-->\n/nofx status", cmd(Verb.status)),
    ("comment removed from argument", "/nofx add a cart <!-- hidden --> now", cmd(Verb.change, "add a cart  now")),
    ("comment opened in the command line", "/nofx add a cart <!--\nmore\n-->", cmd(Verb.change, "add a cart")),
    ("comment-only argument is help", "/nofx <!-- nothing -->", cmd(Verb.help)),
    ("prefix after a comment on the line", "<!-- a --> /nofx approve", None),
    ("comment reopened on closing line", "<!--\n--> x <!--\n/nofx approve", None),
    ("comment inside a fence is code", "```\n<!--\n```\n/nofx approve", cmd(Verb.approve)),
    ("empty comment is closed", "<!-->\n/nofx approve", cmd(Verb.approve)),
    ("comment in a heading ends with it", "# Title <!--\n/nofx approve\n-->", cmd(Verb.approve)),
    ("comment left open in a paragraph is text", "text <!--\n/nofx approve", cmd(Verb.approve)),
    ("comment left open ends with its paragraph", "text <!--\n\n/nofx approve\n-->", cmd(Verb.approve)),
    ("comment left open on a raw HTML line", "<!-- a --> <!-- b\n/nofx approve\n-->", None),
    ("comment left open in a quote", "> <!--\n/nofx approve", None),
    ("comment in a list item", "- <!--\n   /nofx approve\n   -->", None),
    # code spans
    ("multi-line code span", "see `code\n/nofx approve\nmore` here", None),
    ("closed code span then command", "see `code` here\n/nofx approve", cmd(Verb.approve)),
    ("stray backtick is text", "the ` key\n/nofx approve", cmd(Verb.approve)),
    ("code span keeps its comment-like text", "`<!--`\n/nofx approve\n`-->`", cmd(Verb.approve)),
    ("code span in the request", "/nofx add a `Cart` class", cmd(Verb.change, "add a `Cart` class")),
    # indented code, lists, other HTML blocks
    ("indented code holds no comment", "    <!--\n/nofx approve\n-->", cmd(Verb.approve)),
    ("fence in a list item", "- ```\n  /nofx approve\n  ```", None),
    ("fence ends with its list item", "- ```\n  code\n/nofx approve", cmd(Verb.approve)),
    ("lazy quote ends at a heading", "> quote\n# Title\n/nofx approve", cmd(Verb.approve)),
    ("quoted heading has no lazy line", "> # Title\n/nofx approve", cmd(Verb.approve)),
    ("command inside details", "<details>\n/nofx approve\n</details>", cmd(Verb.approve)),
    ("no fence inside an HTML block", "<details>\n```\n\n```\n/nofx approve", None),
    ("HTML block interrupts a paragraph", "Logs:\n<details>\n```\n\n```\n/nofx approve", None),
    ("backticks in an HTML block are text", "<div>\n``\n/nofx approve\n``", cmd(Verb.approve)),
    ("pre block", "<pre>\n/nofx approve\n</pre>", None),
    ("after a pre block", "<pre>\ncode\n</pre>\n/nofx approve", cmd(Verb.approve)),
    # line endings and odd characters
    ("CRLF", "Hi\r\n/nofx approve\r\n", cmd(Verb.approve)),
    ("CRLF request", "/nofx add a cart\r\nwith tests\r\n", cmd(Verb.change, "add a cart\nwith tests")),
    ("lone CR", "Hi\r/nofx status", cmd(Verb.status)),
    ("CRLF fence", "```\r\n/nofx approve\r\n```", None),
    ("NUL", "/nofx add\x00cart", cmd(Verb.change, "add\ufffdcart")),
    ("line separator is not a line end", "Hi\u2028/nofx status", None),
    ("none", None, None),
    ("empty", "", None),
]


@pytest.mark.parametrize(("text", "expected"), [e[1:] for e in EXAMPLES], ids=[e[0] for e in EXAMPLES])
def test_examples(text: str | None, expected: Command | None) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "prefix", "expected"),
    [
        ("/bot help", "/bot", cmd(Verb.help)),
        ("/nofx help", "/bot", None),
        ("/nox help", "/n.x", None),
        ("/n.x help", "/n.x", cmd(Verb.help)),
        ("+bot? approve", "+bot?", cmd(Verb.approve)),
        ("[bot] status", "[bot]", cmd(Verb.status)),
        ("b status", "[bot]", None),
        ("/bot status", "  /bot  ", cmd(Verb.status)),
        ("/nofx help", "", None),
        ("/nofx help", "   ", None),
        ("/nofx\nhelp", "/nofx\nhelp", None),
    ],
)
def test_custom_prefix_is_matched_literally(text: str, prefix: str, expected: Command | None) -> None:
    assert parse(text, prefix=prefix) == expected


def test_a_long_request_is_truncated() -> None:
    command = parse("/nofx " + "a" * (MAX_ARGUMENT + 1000))

    assert command == cmd(Verb.change, "a" * MAX_ARGUMENT, truncated=True)


def test_a_request_at_the_cap_is_whole() -> None:
    assert parse("/nofx " + "a" * MAX_ARGUMENT) == cmd(Verb.change, "a" * MAX_ARGUMENT)


def test_a_long_multi_line_request_is_truncated() -> None:
    command = parse("/nofx add\n" + "line of text\n" * 1000)

    assert command is not None and command.truncated
    assert len(command.argument) <= MAX_ARGUMENT and command.argument.startswith("add\nline of text")


def test_a_huge_text_is_parsed_quickly() -> None:
    text = "> quoted\n```\ncode\n```\n<!-- x -->\nsome words\n" * 2_000 + "/nofx status"  # 90 kB, above GitHub's 65,536

    started = time.perf_counter()
    assert parse(text) == cmd(Verb.status)
    assert time.perf_counter() - started < 0.5


# Property-based tests: random text, biased towards the pieces the parser cares about.

TOKENS = ["/nofx", "/nofx ", "/nof", "```", "~~~", "> ", "<!--", "-->", "\n", "\r\n", "\r", " ", "    ", "\t"]
TOKENS += ["help", "retry --from", "git", "x", "\x00", "\u2028", "`"]
ANY_CHAR = st.characters(exclude_categories=())  # every code point, surrogates and controls included
MARKDOWNISH = st.lists(st.sampled_from(TOKENS) | st.text(ANY_CHAR, max_size=4), max_size=16).map("".join)
PROPERTY = settings(max_examples=150, deadline=None)  # enough to catch a regression, quick in CI

# A usable prefix: visible characters only, and not one Markdown would read as a quote, fence or HTML.
PREFIXES = st.text(
    st.characters(exclude_categories=("Z", "C"), exclude_characters="\ufffd"), min_size=1, max_size=8
).filter(lambda p: not p.startswith((">", "`", "~", "<")) and "<!--" not in p)


@PROPERTY
@given(
    text=st.text(ANY_CHAR, max_size=60) | MARKDOWNISH,
    prefix=st.sampled_from(["/nofx", "/n.x", ">", "```", "", " ", "\x00"]),
)
def test_parse_never_raises(text: str, prefix: str) -> None:
    command = parse(text, prefix=prefix)

    assert command is None or (isinstance(command.verb, Verb) and len(command.argument) <= MAX_ARGUMENT)


@PROPERTY
@given(
    before=MARKDOWNISH,
    after=MARKDOWNISH,
    char=st.sampled_from("`~"),
    info=st.sampled_from(["", "python", " sh {.x}", "  diff title=a.py"]),
    closed=st.booleans(),
)
def test_a_command_inside_a_fence_is_never_found(before: str, after: str, char: str, info: str, closed: bool) -> None:
    body = f"{before}\n/nofx approve\n{after}"
    longest = max((len(run) for run in re.findall(re.escape(char) + "+", body)), default=0)
    fence = char * max(3, longest + 1)  # longer than any run inside, so nothing in the body closes it
    text = f"{fence}{info}\n{body}\n{fence if closed else ''}"

    assert parse(text) is None


@PROPERTY
@given(word=st.sampled_from(RESERVED), prefix=PREFIXES, case=st.sampled_from([str.lower, str.upper, str.title]))
def test_a_reserved_word_round_trips(word: str, prefix: str, case: Callable[[str], str]) -> None:
    assert parse(f"{prefix} {case(word)}", prefix=prefix) == cmd(Verb(word))


@PROPERTY
@given(text=st.text(ANY_CHAR, max_size=60) | MARKDOWNISH, prefix=PREFIXES | st.just("/nofx"))
def test_text_without_the_prefix_has_no_command(text: str, prefix: str) -> None:
    while prefix in text:  # one pass could join two halves into a new prefix
        text = text.replace(prefix, "")

    assert parse(text, prefix=prefix) is None


# Cross-check with a reference CommonMark reader, on text built from the pieces that make blocks.
BLOCK_TOKENS = ["/nofx approve", "```", "~~~", "> ", "<!--", "-->", "<details>", "<pre>", "</pre>", "- ", "# "]
BLOCK_TOKENS += ["\n", "\n", " ", "    ", "\t", "x", "`"]


@PROPERTY
@given(tokens=st.lists(st.sampled_from(BLOCK_TOKENS), max_size=30))
def test_a_command_is_never_where_commonmark_sees_code_quote_or_comment(tokens: list[str]) -> None:
    markdown_it = pytest.importorskip("markdown_it")  # ships with rich; a reference CommonMark reader
    text = "".join(f"{token} n{i}n" if token == "/nofx approve" else token for i, token in enumerate(tokens))
    command = parse(text)
    if command is None:
        return
    marker = re.match(r"n\d+n", command.argument)
    assert command.verb is Verb.approve and marker is not None
    line = next(i for i, raw in enumerate(text.split("\n")) if f"/nofx approve {marker.group()}" in raw)

    for token in markdown_it.MarkdownIt("commonmark").parse(text):
        comment = token.type == "html_block" and token.content.lstrip().startswith("<!--")
        if token.map and (comment or token.type in ("fence", "code_block", "blockquote_open")):
            assert not token.map[0] <= line < token.map[1], (token.type, text)
