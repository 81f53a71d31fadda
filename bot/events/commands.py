"""Finding the one `/nofx` command in comment or issue text, as a reader sees it rendered on GitHub.

Pure functions, no I/O: `bot.events` hands the text of a comment or issue body to `parse` and gets a `Command`
back, or None when the text holds no command. Strict about what is a command, generous about whitespace:

- Line endings are normalised (CRLF and lone CR become LF); NUL becomes U+FFFD, as CommonMark does.
- A command is a line that starts with the prefix (default `/nofx`, matched literally and case-sensitively),
  after at most 3 spaces, followed by whitespace or the end of the line: `/nofxy` is not a command, and a line
  indented by 4 spaces or a tab is an indented code block.
- Not commands, because a reader does not see them as one (the text is read the way CommonMark reads it):
  - lines in a fenced code block: ``` or ~~~ (3 or more, any info string, up to 3 spaces of indent, also right
    after a list marker), closed by a run of the same character at least as long with nothing after it; an
    unterminated fence runs to the end of the text (or of its list item);
  - quoted lines (`>`, `>>`, `> >`, `- >`), and unquoted lines that continue a quoted paragraph because no blank
    line or other block came between (Markdown's "lazy continuation");
  - lines inside an HTML comment. A line starting with `<!--` is raw HTML as a whole (even what follows the
    comment on it), and the comment runs to its `-->`, or to the end of the text if there is none. A comment
    opened inside a paragraph hides up to its `-->` in that paragraph; without one it is plain text;
  - lines that start inside a code span (backticks) opened on an earlier line of the same paragraph;
  - lines of a `<pre>`, `<script>`, `<style>` or `<textarea>` block, up to its closing tag. Other block-level
    HTML (`<details>`, `<div>`, ...) runs to the next blank line: its lines are visible text and may hold a
    command, but no fence or quote starts inside it.
- Only the FIRST command in the text counts; later ones are ignored.
- The first word picks the verb, case-insensitively, ignoring trailing `.,:;!?` (`/nofx Approve`, `/nofx plan:`):
  help, plan, review, approve, reject, retry, cancel, status, forget, git. Any other first word makes the whole
  rest of the line a change request (`/nofx add a cart`). A bare prefix is `help`, whatever follows on later lines.
- For change, plan and reject the argument goes on over the following lines until a blank line, another command
  line, a line that is not plain text (fence, quote, HTML comment, code) or the end of the text. Other verbs take
  the rest of their own line only. HTML comments are dropped from the argument; whitespace is trimmed.
- `retry --from <checkpoint>` (or `--from=<checkpoint>`) fills `retry_from`; `retry --from` with no checkpoint
  keeps `--from` as the argument, for the caller to refuse. `git <op> [args]` keeps the op, lowercased, and its
  args; which ops are allowed, and for whom, is decided elsewhere.
- An argument is capped at MAX_ARGUMENT characters; a longer one is cut and the command says `truncated`.

Known approximations, all erring towards "not a command": list items are only seen through the markers on their
first line; a fence opened inside a quote does not end the quote's lazy continuation; a tab after `>` never
counts as indentation; backslash escapes are ignored; a comment left open at the end of a raw HTML line hides
everything up to the next `-->` in the text, even one a browser would not read as closing it.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass, replace
from enum import Enum

from bot.events.markdown_lines import TEXT, Line, lines_as_read

MAX_ARGUMENT = 4000


class Verb(str, Enum):
    """What a command asks nofx to do; `change` is any request that is not a reserved word."""

    help = "help"
    plan = "plan"
    review = "review"
    approve = "approve"
    reject = "reject"
    retry = "retry"
    cancel = "cancel"
    status = "status"
    forget = "forget"
    git = "git"
    change = "change"


@dataclass(frozen=True)
class Command:
    """One parsed command: the verb and its argument text ("" when none)."""

    verb: Verb
    argument: str
    truncated: bool = False
    retry_from: str | None = None
    template: str | None = None  # a named plan, from `/nofx <template>: request` or the label `nofx:<template>`


_RESERVED = {verb.value: verb for verb in Verb if verb is not Verb.change}
_TEMPLATE_PREFIX = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9-]{0,30}):(?:\s+|$)(.*)", re.DOTALL)


def with_template(command: Command, templates: Collection[str]) -> Command:
    """`docs: fix the typo` names the template `docs` when the repository has one; otherwise all is request."""
    if command.template is not None or command.verb not in (Verb.change, Verb.plan):
        return command
    match = _TEMPLATE_PREFIX.fullmatch(command.argument)
    if match is None or match.group(1).lower() not in templates:
        return command
    return replace(command, template=match.group(1).lower(), argument=match.group(2).strip())


_PARAGRAPH_VERBS = frozenset({Verb.change, Verb.plan, Verb.reject})
_WORD_PUNCTUATION = ".,:;!?"


def parse(text: str | None, *, prefix: str = "/nofx") -> Command | None:
    """Return the first command in `text`, or None; never raises, whatever the text."""
    prefix = prefix.strip() if isinstance(prefix, str) else ""
    if not isinstance(text, str) or not prefix or "\n" in prefix or "\r" in prefix:
        return None
    lines = lines_as_read(text)
    for line in lines:
        rest = _command_rest(line, prefix)
        if rest is not None:
            return _command(rest, lines, prefix)
    return None


def _command_rest(line: Line, prefix: str) -> str | None:
    """What follows the prefix on a command line, trimmed; None when the line is not a command."""
    if line.block not in TEXT or _after_prefix(line.raw, prefix) is None:
        return None
    rest = _after_prefix(line.visible, prefix)
    return None if rest is None else rest.strip()


def _after_prefix(line: str, prefix: str) -> str | None:
    stripped = line.lstrip(" ")
    if len(line) - len(stripped) > 3 or not stripped.startswith(prefix):
        return None
    rest = stripped[len(prefix) :]
    if rest and not rest[0].isspace():
        return None
    return rest


def _command(rest: str, lines: Iterator[Line], prefix: str) -> Command:
    """Build the command from the rest of its line and, for free-text verbs, the rest of its paragraph."""
    if not rest:
        return Command(Verb.help, "")
    word, tail = _split_word(rest)
    verb = _verb(word)
    if verb in _PARAGRAPH_VERBS:
        first = rest if verb is Verb.change else tail
        tail = "\n".join([first, *_paragraph(lines, prefix)]).strip()
    argument, truncated = _cap(tail)
    if verb is Verb.retry:
        return _retry(argument, truncated)
    if verb is Verb.git:
        op, args = _split_word(argument)
        argument = f"{op.lower()} {args}".strip()
    return Command(verb, argument, truncated)


def _verb(word: str) -> Verb:
    key = word.rstrip(_WORD_PUNCTUATION)
    if not key.isascii():  # so that no Unicode case folding turns a stranger word into a reserved one
        return Verb.change
    return _RESERVED.get(key.lower(), Verb.change)


def _paragraph(lines: Iterator[Line], prefix: str) -> list[str]:
    """The visible text of the lines that continue the command's paragraph."""
    found: list[str] = []
    for line in lines:
        if line.block not in TEXT or _after_prefix(line.raw, prefix) is not None:
            break
        found.append(line.visible.strip())
    return found


def _retry(argument: str, truncated: bool) -> Command:
    """`retry [step]`, or `retry --from <checkpoint>` / `--from=<checkpoint>`."""
    word, remainder = _split_word(argument)
    option, equals, checkpoint = word.partition("=")
    if option.lower() != "--from":
        return Command(Verb.retry, argument, truncated)
    if not equals:
        checkpoint, remainder = _split_word(remainder)
    if not checkpoint:
        return Command(Verb.retry, argument, truncated)
    return Command(Verb.retry, remainder, truncated, retry_from=checkpoint)


def _split_word(text: str) -> tuple[str, str]:
    """The first whitespace-separated word and the trimmed rest."""
    parts = text.split(maxsplit=1)
    if not parts:
        return "", ""
    return parts[0], parts[1].strip() if len(parts) > 1 else ""


def _cap(argument: str) -> tuple[str, bool]:
    if len(argument) <= MAX_ARGUMENT:
        return argument, False
    return argument[:MAX_ARGUMENT].rstrip(), True
