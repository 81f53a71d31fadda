"""Comment text line by line as a reader sees it rendered on GitHub: visible text, or code, quote, hidden comment.

CommonMark's block structure, as far as a command needs it (`bot.events.commands` describes the rules and their
known approximations): fenced and indented code, quotes with their lazy continuation, HTML comments and raw HTML
blocks, code spans that run over lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from enum import Enum
from typing import NamedTuple

_FENCE_OPEN = re.compile(r" {0,3}(`{3,}|~{3,})(.*)")
_FENCE_CLOSE = re.compile(r" {0,3}(`{3,}|~{3,})[ \t]*")
_LIST_MARKERS = re.compile(r"[ \t]*(?:(?:[-+*]|\d{1,9}[.)])[ \t]+)+")
_QUOTE_MARKERS = re.compile(r"(?: {0,3}> ?)+")
_COMMENT_START = re.compile(r" {0,3}<!--")
_HEADING = re.compile(r" {0,3}#{1,6}(?:[ \t]|$)")
_THEMATIC_BREAK = re.compile(r" {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_LIST_ITEM = re.compile(r" {0,3}(?:[-+*]|1[.)])[ \t]+\S")
_BLOCK_TAGS = (
    "address|article|aside|base|basefont|blockquote|body|caption|center|col|colgroup|dd|details|dialog|dir|div|dl"
    "|dt|fieldset|figcaption|figure|footer|form|frame|frameset|h[1-6]|head|header|hr|html|iframe|legend|li|link"
    "|main|menu|menuitem|nav|noframes|ol|optgroup|option|p|param|search|section|summary|table|tbody|td|tfoot|th"
    "|thead|title|tr|track|ul"
)
_HTML_BLOCK_TAG = re.compile(rf" {{0,3}}</?(?:{_BLOCK_TAGS})(?:[ \t>]|/>|$)", re.IGNORECASE)
_HTML_TAG_LINE = re.compile(
    r" {0,3}(?:<[A-Za-z][A-Za-z0-9-]*"
    r"(?:[ \t]+[A-Za-z_:][\w.:-]*(?:[ \t]*=[ \t]*(?:[^ \t\"'=<>`]+|'[^']*'|\"[^\"]*\"))?)*[ \t]*/?>"
    r"|</[A-Za-z][A-Za-z0-9-]*[ \t]*>)[ \t]*"
)
_RAW_HTML_START = re.compile(r" {0,3}<(?:pre|script|style|textarea)(?:[ \t>]|$)", re.IGNORECASE)
_RAW_HTML_END = re.compile(r"</(?:pre|script|style|textarea)>", re.IGNORECASE)
_INLINE_OPENER = re.compile(r"`+|<!--")
_COMMENT_OPENER = re.compile(r"<!--")
_BACKTICKS = re.compile(r"`+")


class _Block(Enum):
    text = "text"  # paragraph text
    html = "html"  # a line of block-level HTML, which a reader sees as text too
    blank = "blank"
    code = "code"
    quote = "quote"
    hidden = "hidden"


TEXT = frozenset({_Block.text, _Block.html})  # what a reader sees as text, so may hold a command


class _Fence(NamedTuple):
    char: str
    length: int
    indent: int  # columns of a list item's content, for a fence opened inside one; 0 at the top level


class Line(NamedTuple):
    block: _Block
    raw: str
    visible: str  # the raw line without HTML comments; "" unless block is text


class _Span(NamedTuple):
    start: int
    end: int
    block: _Block  # hidden for an HTML comment, code for a code span


def lines_as_read(text: str) -> Iterator[Line]:
    """Each line of `text` with the block it is in and the text a reader sees on it."""
    return _classify(_split_lines(text))


def _split_lines(text: str) -> list[str]:
    """Split on the line endings Markdown knows (not on the other characters `str.splitlines` splits on)."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\0", "\ufffd").split("\n")


def _classify(lines: list[str]) -> Iterator[Line]:
    """Tell what a reader sees each line as: blocks first, then each paragraph's spans, as CommonMark reads.

    Lazy, paragraph by paragraph, since only the first command matters.
    """
    scanner = _BlockScanner()
    paragraph: list[str] = []
    for raw in lines:
        block, starts_paragraph = scanner.classify(raw)
        if paragraph and (block is not _Block.text or starts_paragraph):
            yield from _paragraph_lines(paragraph)
            paragraph = []
        if block is _Block.text:
            paragraph.append(raw)
        elif block is _Block.html:  # raw HTML: comments hide, backticks do not
            yield Line(block, raw, _without_comments(raw, 0, _spans(raw, _COMMENT_OPENER)))
        else:
            yield Line(block, raw, "")
    yield from _paragraph_lines(paragraph)


class _BlockScanner:
    """The block state Markdown carries from line to line: an open fence, HTML comment, paragraph or quote."""

    def __init__(self) -> None:
        self.fence: _Fence | None = None
        self.in_html_comment = False
        self.in_raw_html = False  # <pre>, <script>, <style>, <textarea>: up to the closing tag
        self.in_html_block = False  # any other block-level HTML: up to a blank line
        self.in_paragraph = False
        self.in_quote_paragraph = False

    def classify(self, raw: str) -> tuple[_Block, bool]:
        """The line's block, and for text whether it starts a new paragraph."""
        block = self._block(raw)
        starts_paragraph = block is _Block.text and (not self.in_paragraph or _interrupts_paragraph(raw))
        self.in_paragraph = block is _Block.text and not (_HEADING.match(raw) or _THEMATIC_BREAK.match(raw))
        return block, starts_paragraph

    def _block(self, raw: str) -> _Block:
        if self.fence is not None and not _leaves_list_item(raw, self.fence.indent):
            if _closes_fence(raw, self.fence):
                self.fence = None
            return _Block.code
        self.fence = None  # closed, or its list item ended
        if self.in_html_comment:
            end = raw.find("-->")
            if end >= 0:
                self.in_html_comment = _comment_left_open(raw[end + 3 :])
            return _Block.hidden
        if self.in_raw_html:
            self.in_raw_html = not _RAW_HTML_END.search(raw)
            return _Block.code
        if self.in_html_block and not _is_blank(raw):
            return self._html(raw)
        self.in_html_block = False
        return self._new_block(raw)

    def _html(self, raw: str) -> _Block:
        """A line of an HTML block: text a reader sees, with no Markdown block inside; comments still hide."""
        self.in_html_block = True
        self.in_html_comment = _comment_left_open(raw)
        return _Block.html

    def _new_block(self, raw: str) -> _Block:
        fence = _opens_fence(raw)
        if fence is not None:
            self.fence, self.in_quote_paragraph = fence, False
            return _Block.code
        quoted = _quote_content(raw)
        if quoted is not None:
            self.in_quote_paragraph = _opens_paragraph(quoted)
            # a comment left open in quoted raw HTML still hides the rest, once the page is read as HTML
            self.in_html_comment = _opens_comment_block(quoted) and _comment_left_open(quoted)
            return _Block.quote
        if self.in_quote_paragraph and not _ends_paragraph(raw):
            return _Block.quote
        self.in_quote_paragraph = False
        if _is_blank(raw):
            return _Block.blank
        if not self.in_paragraph and _indent(raw) >= 4:  # indented code, which cannot interrupt a paragraph
            return _Block.code
        if _opens_comment_block(raw):  # an HTML block: the whole line is raw HTML, even after the comment
            self.in_html_comment = _comment_left_open(raw)
            return _Block.hidden
        if _RAW_HTML_START.match(raw):
            self.in_raw_html = not _RAW_HTML_END.search(raw)
            return _Block.code
        if _HTML_BLOCK_TAG.match(raw) or (not self.in_paragraph and _HTML_TAG_LINE.fullmatch(raw)):
            return self._html(raw)
        return _Block.text


def _opens_fence(line: str) -> _Fence | None:
    """The fence a line opens, also on a list item's first line (`- ```sh`); None if it opens none.

    A backtick fence's info string may not hold a backtick.
    """
    match, indent = _FENCE_OPEN.fullmatch(line), 0
    if match is None:
        content = _without_list_markers(line)
        match, indent = _FENCE_OPEN.fullmatch(content), len(line[: len(line) - len(content)].expandtabs(4))
    if match is None:
        return None
    run, info = match.groups()
    if run[0] == "`" and "`" in info:
        return None
    return _Fence(run[0], len(run), indent)


def _closes_fence(line: str, fence: _Fence) -> bool:
    match = _FENCE_CLOSE.fullmatch(line[: fence.indent].lstrip(" ") + line[fence.indent :])
    if match is None:
        return False
    run = match.group(1)
    return run[0] == fence.char and len(run) >= fence.length


def _leaves_list_item(line: str, indent: int) -> bool:
    """Whether a line ends the list item whose content is indented `indent` columns (a fence inside ends too)."""
    return indent > 0 and not _is_blank(line) and _indent(line) < indent


def _indent(line: str) -> int:
    """Columns of leading whitespace, tabs stopping every 4 columns."""
    return len(line[: len(line) - len(line.lstrip(" \t"))].expandtabs(4))


def _opens_comment_block(line: str) -> bool:
    """Whether the line starts with an HTML comment (also right after a list marker): an HTML block."""
    return any(_COMMENT_START.match(candidate) for candidate in (line, _without_list_markers(line)))


def _quote_content(line: str) -> str | None:
    """What a quoted line (`> x`, `>> x`, `- > x`) quotes; None when the line is not quoted."""
    for candidate in (line, _without_list_markers(line)):
        markers = _QUOTE_MARKERS.match(candidate)
        if markers is not None:
            return candidate[markers.end() :]
    return None


def _without_list_markers(line: str) -> str:
    """The line without leading list item markers, so blocks opened inside a list item are seen too."""
    markers = _LIST_MARKERS.match(line)
    return line if markers is None else line[markers.end() :]


def _opens_paragraph(content: str) -> bool:
    """Whether a quoted line's content is paragraph text, which the next unquoted lines may lazily continue."""
    item = _without_list_markers(content)
    return not (
        _is_blank(item)
        or _opens_fence(content) is not None
        or _opens_comment_block(content)
        or content.startswith("    ")  # indented code; a tab here may or may not be, so it counts as text
        or _HEADING.match(item)
        or _THEMATIC_BREAK.match(content)
    )


def _ends_paragraph(line: str) -> bool:
    """Whether a line ends the paragraph above it (a quoted one too): a blank line or another block's start."""
    if _is_blank(line) or _opens_fence(line) is not None or _quote_content(line) is not None:
        return True
    return _opens_comment_block(line) or _interrupts_paragraph(line)


def _interrupts_paragraph(line: str) -> bool:
    """Whether a text line starts a block of its own: a heading, a thematic break, a list item, block HTML."""
    patterns = (_HEADING, _THEMATIC_BREAK, _LIST_ITEM, _HTML_BLOCK_TAG, _RAW_HTML_START)
    return any(pattern.match(line) for pattern in patterns)


def _comment_left_open(html: str) -> bool:
    """Whether raw HTML ends inside a comment: its last `<!--` has no `-->` after it."""
    start = html.rfind("<!--")
    return start >= 0 and html.find("-->", start + 2) < 0


def _paragraph_lines(paragraph: list[str]) -> Iterator[Line]:
    """A paragraph's lines: text, unless the line starts inside a span opened on an earlier line."""
    spans = _spans("\n".join(paragraph))
    start = first = 0  # the line's offset in the paragraph; the first span that does not end before it
    for raw in paragraph:
        end = start + len(raw)
        while first < len(spans) and spans[first].end <= start:
            first += 1
        last = first
        while last < len(spans) and spans[last].start < end:
            last += 1
        on_line = spans[first:last]
        if on_line and on_line[0].start < start:  # spans do not overlap: only the first can come from above
            yield Line(on_line[0].block, raw, "")
        else:
            yield Line(_Block.text, raw, _without_comments(raw, start, on_line))
        start = end + 1


def _spans(text: str, openers: re.Pattern[str] = _INLINE_OPENER) -> list[_Span]:
    """A paragraph's code spans and HTML comments, read left to right as CommonMark does.

    A run of n backticks opens a code span closed by the next run of exactly n; `<!--` opens a comment closed
    by the next `-->` (`<!-->` and `<!--->` are whole comments, as in CommonMark 0.31). Whichever opens first
    wins; an opener without its closer is plain text. Raw HTML passes `_COMMENT_OPENER`: no code spans there.
    """
    closing_run = _closing_runs(text)
    spans: list[_Span] = []
    position = 0
    comment_ends_left = True  # once no `-->` follows a position, none follows any later one
    while (opener := openers.search(text, position)) is not None:
        position = opener.end()
        if opener.group() != "<!--":
            end = closing_run.get(opener.start(), -1)
            block = _Block.code
        elif comment_ends_left:
            found = text.find("-->", opener.start() + 2)
            comment_ends_left = found >= 0
            end, block = (found + 3 if found >= 0 else -1), _Block.hidden
        else:
            continue
        if end >= 0:
            spans.append(_Span(opener.start(), end, block))
            position = end
    return spans


def _closing_runs(text: str) -> dict[int, int]:
    """For each backtick run, by its start, where the next run of the same length ends."""
    closing: dict[int, int] = {}
    later: dict[int, int] = {}  # run length -> end of the nearest run of that length seen so far, from the end
    for run in reversed(list(_BACKTICKS.finditer(text))):
        length = run.end() - run.start()
        if length in later:
            closing[run.start()] = later[length]
        later[length] = run.end()
    return closing


def _without_comments(raw: str, start: int, spans: list[_Span]) -> str:
    """The line's text with the HTML comments on it cut out; `start` is the line's offset in its paragraph."""
    kept: list[str] = []
    position = 0
    for span in spans:
        if span.block is _Block.hidden:
            kept.append(raw[position : max(position, span.start - start)])
            position = max(position, span.end - start)
    kept.append(raw[position:])
    return "".join(kept)


def _is_blank(line: str) -> bool:
    return not line.strip(" \t")
