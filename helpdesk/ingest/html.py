"""HTML-only mail rendered as readable plain text. Pure code."""

from __future__ import annotations

import html as html_lib
import re

import html2text

_TAG_RE = re.compile(r"<[^>]{0,2000}>")
MAX_HTML = 2_000_000


def html_to_text(markup: str) -> str:
    """Readable text from an HTML body; never raises.

    html2text keeps paragraphs, lists and links readable; when it fails on
    broken markup we fall back to dropping the tags.
    """
    markup = markup[:MAX_HTML]
    converter = html2text.HTML2Text()
    converter.body_width = 0  # do not re-wrap: quote detection works on lines
    converter.ignore_images = True
    converter.ignore_emphasis = True
    converter.unicode_snob = True
    try:
        text = converter.handle(markup)
    except Exception:
        text = html_lib.unescape(_TAG_RE.sub(" ", markup))
    lines = [line.rstrip() for line in text.splitlines()]
    return "\n".join(lines).strip()
