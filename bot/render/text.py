"""Safe Markdown and GitHub's size limits: every renderer escapes and fits its text through these.

Text that comes from people or from an LLM (requests, errors, step names, usernames, config values) passes through
`escape_markdown`, `code_span` or `code_block` where it is inserted, so it cannot add HTML, mention anyone, fake the
status marker or break out of a code fence. Sizes are measured in UTF-16 code units, which is never less than the
character count GitHub checks, so every limit holds however GitHub counts.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

COMMENT_LIMIT = 65_535

# --- escaping --------------------------------------------------------------------------------------------------

# Control characters and bidi overrides: invisible, and able to make text read differently than it is.
_INVISIBLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u202a-\u202e\u2066-\u2069]")
_INLINE_PUNCTUATION = re.compile(r"([\\`*_\[\]|~$])")
_BLOCK_START = re.compile(r"^([ \t]*)([#+=-])", re.MULTILINE)
_ORDERED_START = re.compile(r"^([ \t]*\d+)([.)])", re.MULTILINE)
_BACKTICK_RUN = re.compile(r"`+")
_FENCE_RUN = re.compile(r"`{3,}")
_ZWJ = "\u200d"
_LOGIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,38}")
_URL_SAFE = ":/?#[]@!$&'*+,;=%~"


def clean_text(text: object) -> str:
    """Text with Markdown's line endings and without control characters or bidi overrides."""
    if text is None:
        return ""
    text = str(text).replace("\r\n", "\n").replace("\r", "\n")
    return _INVISIBLE.sub("", text)


def escape_markdown(text: object) -> str:
    """Text that renders exactly as written: no HTML, no Markdown syntax, no @mentions, no fake marker.

    HTML is entity-escaped (so `<!--` and `</details>` show as typed), Markdown punctuation is backslash-escaped
    (block markers only at a line start, where they act), and a zero-width joiner after every `@` keeps GitHub
    from notifying people or teams named in someone else's text. Line breaks are kept.
    """
    text = html.escape(clean_text(text), quote=False)
    text = _INLINE_PUNCTUATION.sub(r"\\\1", text)
    text = _BLOCK_START.sub(r"\1\\\2", text)
    text = _ORDERED_START.sub(r"\1\\\2", text)
    return text.replace("@", "@" + _ZWJ)


def escape_inline(text: object) -> str:
    """`escape_markdown` on one line: runs of whitespace, line breaks included, become one space."""
    return escape_markdown(" ".join(clean_text(text).split()))


def code_span(text: object) -> str:
    """Inline code that cannot be closed early: the fence is longer than any run of backticks inside."""
    text = " ".join(clean_text(text).split()).replace("<!--", "<" + _ZWJ + "!--")
    if not text:
        return "` `"
    longest = max((len(run) for run in _BACKTICK_RUN.findall(text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text[0] in "` " or text[-1] in "` " else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def code_block(text: object, info: str = "text") -> str:
    """A fenced block whose content cannot end it: runs of 3+ backticks inside are split by zero-width joiners."""
    body = clean_text(text).replace("<!--", "<" + _ZWJ + "!--")
    body = _FENCE_RUN.sub(lambda found: _ZWJ.join(found.group()), body)
    return f"```{info}\n{body}\n```"


def blockquote(text: object) -> str:
    """A quote of someone's words, escaped; leading indentation is dropped so no line turns into a code block."""
    lines = escape_markdown(clean_text(text).strip("\n")).split("\n")
    return "\n".join(f"> {line.strip()}" if line.strip() else ">" for line in lines)


def mention(user: object) -> str:
    """`@login` for a real GitHub login (a wanted notification); anything else is escaped and notifies nobody."""
    login = clean_text(user)
    return f"@{login}" if _LOGIN.fullmatch(login) else escape_inline(login)


def link(text: str, url: object) -> str:
    """A Markdown link to an http(s) URL; `text` must already be safe. Other URLs are shown, not linked."""
    raw = clean_text(url).strip()
    if urlsplit(raw).scheme not in ("http", "https") or not urlsplit(raw).netloc:
        return f"{text} ({escape_inline(raw)})"
    # Percent-encode what could end the destination early: spaces, parentheses, angle brackets, quotes.
    return f"[{text}]({quote(raw, safe=_URL_SAFE)})"


# --- the status marker -----------------------------------------------------------------------------------------


def format_duration(seconds: float) -> str:
    """`12.3 s`, `2 min 5 s`, `1 h 4 min`: precise while short, rounded once precision stops mattering."""
    seconds = max(seconds, 0.0)
    if round(seconds, 1) < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        minutes, rest = divmod(whole, 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, rest = divmod(whole, 3600)
    minutes = rest // 60
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes in some paths; they are UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return (aware(end) - aware(start)).total_seconds()


def iso_time(moment: datetime) -> str:
    """The `YYYY-MM-DDTHH:MM:SSZ` form the checks API documents."""
    return aware(moment).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- sizes -----------------------------------------------------------------------------------------------------


def text_size(text: str) -> int:
    """Length in UTF-16 code units: at least the character count, however GitHub counts characters."""
    return len(text.encode("utf-16-le", errors="surrogatepass")) // 2


def middle(text: str, limit: int) -> str:
    """`text` with its middle replaced by a note when longer than `limit` characters: both ends tell the most."""
    if len(text) <= limit:
        return text
    cut_note = f"[… {len(text):,} characters, middle cut …]"
    keep = max(limit - len(cut_note) - 2, 0)
    head, tail = keep // 2, keep - keep // 2
    return f"{text[:head]}\n{cut_note}\n{text[len(text) - tail :] if tail else ''}".rstrip("\n")


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cap(text: str, limit: int, keep_end: str = "") -> str:
    """The last resort after `fit`: cut the end off, but keep `keep_end` (the marker) as the last line."""
    if text_size(text) <= limit:
        return text
    note = "\n\n[… cut to fit GitHub's size limit …]"
    tail = note + ("\n\n" + keep_end if keep_end else "")
    body = text[: len(text) - len(keep_end)] if keep_end and text.endswith(keep_end) else text
    excess = text_size(body) + text_size(tail) - limit
    return body[: max(len(body) - excess, 0)] + tail


@dataclass(frozen=True)
class TextBudget:
    """Characters allowed for the two parts that can be long: someone's request and error or log text."""

    request: int = 4_000
    detail: int = 6_000

    def shrunk(self) -> TextBudget:
        """Error text gives way first, then the request; each halves and then disappears."""
        if self.detail:
            return TextBudget(self.request, self.detail // 2 if self.detail >= 200 else 0)
        return TextBudget(self.request // 2 if self.request >= 200 else 0, 0)

    @property
    def exhausted(self) -> bool:
        return not self.request and not self.detail


def fit(render: Callable[[TextBudget], str], limit: int, budget: TextBudget, keep_end: str = "") -> str:
    """Render with smaller and smaller budgets until the text fits GitHub's limit."""
    text = render(budget)
    while text_size(text) > limit and not budget.exhausted:
        budget = budget.shrunk()
        text = render(budget)
    return _cap(text, limit, keep_end)


# --- steps as people read them ---------------------------------------------------------------------------------
def capital(text: str) -> str:
    """`step 3` starts a sentence as `Step 3`; a code span is left as it is."""
    return text[:1].upper() + text[1:]


def join_words(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def paragraphs(*parts: str) -> str:
    return "\n\n".join(part for part in parts if part)


# --- the surfaces ----------------------------------------------------------------------------------------------


_CODE_IN_MESSAGE = re.compile(r"`([^`\n]+)`")


def escape_keeping_code(text: object) -> str:
    """Escape a message of ours that quotes values in backticks: each `quoted` part stays inline code.

    Config and plan errors quote keys and values the person wrote; the backticks are ours, the contents are not,
    so each part goes through `code_span` or `escape_markdown`. A value with its own backticks can only make the
    formatting odd, never inject anything.
    """
    text = " ".join(clean_text(text).split())
    parts, last = [], 0
    for found in _CODE_IN_MESSAGE.finditer(text):
        parts.append(escape_markdown(text[last : found.start()]))
        parts.append(code_span(found.group(1)))
        last = found.end()
    parts.append(escape_markdown(text[last:]))
    return "".join(parts)
