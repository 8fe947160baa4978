"""HTML-only mail rendered as readable plain text. Pure code."""

from __future__ import annotations

import html as html_lib
import re

import html2text

_TAG_RE = re.compile(r"<[^>]{0,2000}>")
MAX_HTML = 2_000_000

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


def html_to_text(markup: str) -> str:
    """Readable text from an HTML body; never raises.

    html2text keeps paragraphs, lists and links readable; when it fails on
    broken markup we fall back to dropping the tags. No-break spaces become
    spaces, and runs of blank lines one blank line.
    """
    markup = _CELL_END_RE.sub(r" </\1>", markup[:MAX_HTML])
    converter = html2text.HTML2Text()
    converter.body_width = 0  # do not re-wrap: quote detection works on lines
    converter.ignore_images = True
    converter.ignore_emphasis = True
    converter.ignore_tables = True
    converter.unicode_snob = True
    try:
        text = converter.handle(markup)
    except Exception:
        text = html_lib.unescape(_TAG_RE.sub(" ", markup))
    else:
        text = _ESCAPED_MARK_RE.sub(_unescape_mark, text)
        text = _DOUBLED_BACKSLASH_RE.sub(r"\1", text)
        text = _EMPTY_LINK_RE.sub("", text)
    text = text.replace("\xa0", " ")
    lines = [line.rstrip() for line in text.splitlines()]
    return _BLANK_LINES_RE.sub("\n\n", "\n".join(lines)).strip()


def _unescape_mark(match: re.Match[str]) -> str:
    if match.group(1) is not None:
        return match.group(1) + match.group(2)
    return match.group(3)
