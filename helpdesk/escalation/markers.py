"""Escalation markers in a subject line.

A client escalates a ticket by replying with a marker such as ``[ESCALATE]``
in the subject. Mail clients stack ``Re:``/``Fwd:`` prefixes and our own
``[HD-000123]`` tag in front of whatever the client typed, so the marker is
usually somewhere after those rather than at the very start.

Two kinds of marker are treated differently, to keep false alarms down:

* markers ending in a colon (``ESCALATION:``) are labels, like ``Re:``, and
  only mean something at the head of the subject, among the prefixes and
  tags; "question about escalation: who to call" is not an escalation;
* every other marker (``[ESCALATE]``, ``URGENT ESCALATION``) counts wherever
  it stands, because clients also append them ("printer on fire [ESCALATE]").

Either way a marker must stand as a whole word: "Escalated:" and
"de-escalation:" are not markers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

DEFAULT_MARKERS: tuple[str, ...] = (
    "[ESCALATE]",
    "[ESCALATION]",
    "ESCALATION:",
    "Escalate:",
    "URGENT ESCALATION",
)

# Reply and forward prefixes, including the common localised ones (German
# AW/WG, Nordic SV, Finnish VS, Dutch Antw, French TR, Italian RIF) and the
# counted form "Re[2]:" some clients write.
_PREFIX = re.compile(r"(?:re|fwd?|aw|wg|sv|vs|antw|tr|rif)\s*(?:\[\d+\])?\s*:", re.IGNORECASE)
# Any bracketed tag: our ticket reference, and the "[External]" tags that
# corporate gateways prepend.
_TAG = re.compile(r"\[[^\[\]]*\]")
_SPACE = re.compile(r"\s*")
# A separator the client put between the marker and the rest ("URGENT
# ESCALATION - printer"); left behind it would dangle.
_SEPARATOR_AFTER = re.compile(r"\s*[-–—|:]+(?=\s|$)")
_SEPARATOR_BEFORE = re.compile(r"(?:^|(?<=\s))[-–—|]+\s*$")
_WORD_CHAR = re.compile(r"\w")


@dataclass(frozen=True)
class _MarkerPatterns:
    head_only: tuple[re.Pattern[str], ...]
    anywhere: tuple[re.Pattern[str], ...]

    @property
    def all(self) -> tuple[re.Pattern[str], ...]:
        return self.head_only + self.anywhere


def find_marker(subject: str, markers: Sequence[str] = DEFAULT_MARKERS) -> tuple[bool, str]:
    """Whether ``subject`` carries an escalation marker, and the subject without it.

    Matching ignores case, and a space inside a marker matches any run of
    whitespace (folded headers). Every occurrence is removed and the
    whitespace tidied; without a marker the subject comes back untouched.
    """
    patterns = _compile(tuple(markers))
    spans, head_end = _head_spans(subject, patterns)
    for pattern in patterns.anywhere:
        spans.extend(match.span() for match in pattern.finditer(subject, head_end))
    if not spans:
        return False, subject
    pieces: list[str] = []
    kept_from = 0
    for start, end in _merge([_with_separators(subject, span) for span in spans]):
        pieces.append(subject[kept_from:start])
        kept_from = end
    pieces.append(subject[kept_from:])
    # Joining with a space keeps "[HD-1][ESCALATE]printer" from gluing shut.
    return True, " ".join(" ".join(pieces).split())


def _head_spans(subject: str, patterns: _MarkerPatterns) -> tuple[list[tuple[int, int]], int]:
    """Markers among the leading prefixes and tags, and where that head ends."""
    spans: list[tuple[int, int]] = []
    pos = 0
    while True:
        pos = _skip_space(subject, pos)
        marker = _match_first(patterns.all, subject, pos)
        if marker is not None:
            spans.append(marker.span())
            pos = marker.end()
            continue
        token = _PREFIX.match(subject, pos) or _TAG.match(subject, pos)
        if token is None:
            return spans, pos
        pos = token.end()


def _skip_space(subject: str, pos: int) -> int:
    space = _SPACE.match(subject, pos)
    return pos if space is None else space.end()


def _match_first(
    patterns: Sequence[re.Pattern[str]], subject: str, pos: int
) -> re.Match[str] | None:
    for pattern in patterns:
        match = pattern.match(subject, pos)
        if match is not None:
            return match
    return None


def _with_separators(subject: str, span: tuple[int, int]) -> tuple[int, int]:
    start, end = span
    after = _SEPARATOR_AFTER.match(subject, end)
    if after is not None:
        return start, after.end()
    if not subject[end:].strip():
        before = _SEPARATOR_BEFORE.search(subject[:start])
        if before is not None:
            return before.start(), end
    return start, end


def _merge(spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def check_marker(marker: str) -> None:
    """Raise ValueError when ``marker`` could match nothing (it is blank)."""
    _pattern(marker)


@lru_cache(maxsize=32)
def _compile(markers: tuple[str, ...]) -> _MarkerPatterns:
    # Longest first, so that of two markers where one begins the other
    # ("ESCALATION" and "ESCALATION: now") the whole of the longer goes.
    ordered = sorted(markers, key=lambda marker: len(marker.strip()), reverse=True)
    head_only = tuple(_pattern(m) for m in ordered if m.strip().endswith(":"))
    anywhere = tuple(_pattern(m) for m in ordered if not m.strip().endswith(":"))
    return _MarkerPatterns(head_only=head_only, anywhere=anywhere)


def _pattern(marker: str) -> re.Pattern[str]:
    words = marker.split()
    if not words:
        raise ValueError(f"escalation marker {marker!r} is blank")
    body = r"\s+".join(re.escape(word) for word in words)
    # A hyphen counts as part of the word so that "de-escalation:" is not
    # "escalation:"; the check only applies at a marker's alphanumeric ends,
    # since "[ESCALATE]" already delimits itself.
    lead = r"(?<![\w-])" if _WORD_CHAR.match(words[0][0]) else ""
    trail = r"(?![\w-])" if _WORD_CHAR.match(words[-1][-1]) else ""
    return re.compile(lead + body + trail, re.IGNORECASE)
