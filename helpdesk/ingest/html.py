"""HTML-only mail rendered as readable plain text. Pure code.

html2text runs on the standard library's ``html.parser``, and both have
inputs on which their work grows with the square of the markup (measured on
Python 3.11: 40 KB of newlines took 26 s, 40 KB of ``"<a "`` 14 s, 40 KB of
nested ``<ol><li>`` 2.6 s and 30 MB of text). A sender chooses the markup, so
``html_to_text`` first rewrites what would trigger that, in a way that leaves
the rendering of well-formed markup as it was:

* a ``<`` that opens no complete tag, comment or declaration is written as
  ``&lt;`` (``_neutralise_brackets``); html.parser would otherwise search to
  the end of the markup from it and then move on by one token;
* whitespace runs that span lines are cut to one newline before html2text
  escapes Markdown in them, outside ``<pre>`` (html2text makes each run one
  space there anyway);
* lists and block quotes deeper than ``MAX_NESTING`` are read as one level,
  as every level indents every line below it;
* decimal character references too long to name a character read as U+FFFD
  (what html2text gives for any out-of-range number).
"""

from __future__ import annotations

import html as html_lib
import re

import html2text

_TAG_RE = re.compile(r"<[^>]{0,2000}>")
# Even linear, html.parser costs up to ~7 us a byte (a run of "<" or "&":
# one callback each), 14 s for 2 MB; the largest HTML part in the test
# corpora is 408 KB. Only the text is cut; the HTML is kept whole.
MAX_HTML = 524_288
MAX_NESTING = 32

# Mail HTML lays pages out with tables; as Markdown pipe tables they turn
# every line of a newsletter or of an Outlook reply header ("Von: | ...")
# into "| a | b |" noise. Tables are flattened to one line per row, and a
# space is put at the end of each cell so that cells do not run together.
_CELL_END_RE = re.compile(r"</(t[dh])\s*>", re.I)
# html2text escapes what Markdown would read as markup (escape_md_section):
# "1\." and "\-" / "\+" at the start of a text run, and doubled backslashes.
# This text is shown as text, and quote detection looks for "-- " lines. A
# sender's own backslash was doubled, so undoing both steps restores it.
_ESCAPED_MARK_RE = re.compile(r"(\d)\\(\.)(?=\s)|\\([-+])(?=[\s-])")
_DOUBLED_BACKSLASH_RE = re.compile(r"\\(\\)(?=\S)")
# A link whose only content was an image, which is not rendered: "[](url)".
_EMPTY_LINK_RE = re.compile(r"\[\]\((?:[^()\s]|\([^()\s]*\))*\)")
_BLANK_LINES_RE = re.compile(r"\n{3,}")

# A start tag as html.parser's locatestarttagend_tolerant reads it, but
# possessive (it cannot backtrack), with no "<" outside quoted values, so
# that a failed attempt stops at the next "<", and failing where a value
# after "=" opens a quote it does not close (html.parser would then read on
# to a quote further on, past the ">"). On what this accepts,
# html.parser ends the tag at the same ">" (tests/unit/test_html_hostile.py
# checks that on generated tags); what it rejects is broken markup.
_START_TAG_RE = re.compile(
    r"""
    <(?P<name>[a-zA-Z][^\t\n\r\f />\x00<]*+)
    (?:
      [\s/]*+
      (?<=['"\s/])[^\s/><][^\s/=><]*+
      (?:\s*+=++\s*+(?:'[^']*+'|"[^"]*+"|(?!['"])[^>\s<]*+)|(?!\s*=))
    )*+
    (?P<tail>[\s/]*+)>
    """,
    re.VERBOSE,
)
# Where html.parser ends each construct (html.parser, _markupbase).
_COMMENT_CLOSE_RE = re.compile(r"--\s*>")
_SECTION_CLOSE_RE = re.compile(r"]\s*]\s*>")
_MS_SECTION_CLOSE_RE = re.compile(r"]\s*>")
_SECTION_NAME_RE = re.compile(r"[a-zA-Z][-_.a-zA-Z0-9]*\s*")
_SECTIONS = frozenset({"temp", "cdata", "ignore", "include", "rcdata"})
_MS_SECTIONS = frozenset({"if", "else", "endif"})
# The content of these is not markup to html.parser, up to its end tag.
_RAW_TEXT = {
    "script": re.compile(r"</\s*script\s*>", re.I),
    "style": re.compile(r"</\s*style\s*>", re.I),
}
_MARKUP_OPEN_RE = re.compile(r"<[a-zA-Z/!?]")
# escape_md_section's line-start patterns ("^(\s*\d+)(\.)" and the like)
# scan a whitespace run again from every newline in it. From its first
# newline on, a run is cut to that newline; possessive, so that a long run
# with no second newline is not scanned again from each of its characters.
_LINES_OF_SPACE_RE = re.compile(r"\n[^\S\n]*+\n\s*+")
# Longer than any character's number: int() of 4,300 digits or more raises.
_MAX_CHARREF_DIGITS = 8
# html2text keeps one stack for both kinds of list.
_NESTED = {"ul": "list", "ol": "list", "blockquote": "blockquote"}


def html_to_text(markup: str) -> str:
    """Readable text from an HTML body; never raises.

    html2text keeps paragraphs, lists and links readable; when it fails on
    broken markup we fall back to dropping the tags. No-break spaces become
    spaces, and runs of blank lines one blank line.
    """
    markup = _neutralise_brackets(_CELL_END_RE.sub(r" </\1>", markup[:MAX_HTML]))
    converter = _Converter()
    converter.body_width = 0  # do not re-wrap: quote detection works on lines
    converter.ignore_images = True
    converter.ignore_emphasis = True
    converter.ignore_tables = True
    converter.unicode_snob = True
    try:
        text = converter.handle(markup)
    except Exception:
        text = _strip_tags(markup)
    else:
        text = _ESCAPED_MARK_RE.sub(_unescape_mark, text)
        text = _DOUBLED_BACKSLASH_RE.sub(r"\1", text)
        text = _EMPTY_LINK_RE.sub("", text)
    text = text.replace("\xa0", " ")
    lines = [line.rstrip() for line in text.splitlines()]
    return _BLANK_LINES_RE.sub("\n\n", "\n".join(lines)).strip()


class _Converter(html2text.HTML2Text):
    """html2text with its work bounded on hostile markup (see the module)."""

    def __init__(self) -> None:
        super().__init__()
        self._nesting: dict[str, int] = {}
        self._flattened: dict[str, int] = {}

    def handle_data(self, data: str, entity_char: bool = False) -> None:
        if not (self.pre or self.code):
            data = _LINES_OF_SPACE_RE.sub("\n", data)
        super().handle_data(data, entity_char)

    def handle_tag(self, tag: str, attrs: dict[str, str | None], start: bool) -> None:
        kind = _NESTED.get(tag)
        if kind is not None:
            depth = self._nesting.get(kind, 0)
            if start and depth >= MAX_NESTING:
                self._flattened[kind] = self._flattened.get(kind, 0) + 1
                return
            if not start and self._flattened.get(kind, 0):
                self._flattened[kind] -= 1
                return
            self._nesting[kind] = depth + 1 if start else max(depth - 1, 0)
        super().handle_tag(tag, attrs, start)

    def charref(self, name: str) -> str:
        if name[:1] not in "xX" and len(name.lstrip("0")) > _MAX_CHARREF_DIGITS:
            return "\ufffd"
        return super().charref(name)


def _neutralise_brackets(markup: str) -> str:
    """``markup`` with each ``<`` that opens nothing complete as ``&lt;``.

    Linear: every search either consumes what it scanned or is remembered.
    """
    out: list[str] = []
    closes = _NextMatch(markup)
    done = 0
    for opener in _MARKUP_OPEN_RE.finditer(markup):
        i = opener.start()
        if i < done:
            continue
        end, raw_text = _construct_end(markup, i, closes)
        if end < 0:
            out.append(markup[done:i])
            out.append("&lt;")
            done = i + 1
            continue
        if raw_text is not None:
            close = closes.search(raw_text, end)
            end = len(markup) if close is None else close.end()
        out.append(markup[done:end])
        done = end
    out.append(markup[done:])
    return "".join(out)


def _construct_end(markup: str, i: int, closes: _NextMatch) -> tuple[int, re.Pattern[str] | None]:
    """Where html.parser ends the construct opened at ``i`` (-1: nowhere),
    and the end tag of a raw-text element (script, style) it opens."""
    second = markup[i + 1]
    if second.isascii() and second.isalpha():
        tag = _START_TAG_RE.match(markup, i)
        if tag is None:
            return -1, None
        name = tag.group("name").lower()
        self_closing = tag.group("tail").endswith("/")
        return tag.end(), None if self_closing else _RAW_TEXT.get(name)
    if markup.startswith("<!--", i):
        close = closes.search(_COMMENT_CLOSE_RE, i + 4)
        return (-1 if close is None else close.end()), None
    if not markup.startswith("<![", i):
        # "</", "<?", "<!doctype" and bogus comments all end at the next ">".
        close = closes.search(_GT_RE, i + 2)
        return (-1 if close is None else close.end()), None
    # "<![": a marked section; html.parser fails on an unknown keyword, and
    # html_to_text then drops the tags, so that is left to it.
    name = _SECTION_NAME_RE.match(markup, i + 3)
    if name is None or name.end() == len(markup):
        return (i + 3 if name is None else -1), None
    keyword = name.group().strip().lower()
    if keyword in _SECTIONS:
        close = closes.search(_SECTION_CLOSE_RE, i + 3)
    elif keyword in _MS_SECTIONS:
        close = closes.search(_MS_SECTION_CLOSE_RE, i + 3)
    else:
        return i + 3, None
    return (-1 if close is None else close.end()), None


_GT_RE = re.compile(">")


class _NextMatch:
    """The first match of a pattern at or after a position, where positions
    only grow: a search is run again only past the last match, and a search
    that found nothing is final."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._found: dict[re.Pattern[str], re.Match[str] | None] = {}

    def search(self, pattern: re.Pattern[str], pos: int) -> re.Match[str] | None:
        if pattern in self._found:
            found = self._found[pattern]
            if found is None or found.start() >= pos:
                return found
        found = pattern.search(self._text, pos)
        self._found[pattern] = found
        return found


def _strip_tags(markup: str) -> str:
    text = _TAG_RE.sub(" ", markup)
    try:
        return html_lib.unescape(text)
    except ValueError:  # a decimal reference of over 4,300 digits
        return text


def _unescape_mark(match: re.Match[str]) -> str:
    if match.group(1) is not None:
        return match.group(1) + match.group(2)
    return match.group(3)
