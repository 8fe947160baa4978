"""Header values as text: RFC 2047 encoded-words decoded even when broken
(across folds, with spaces inside, one character split over two words), raw
8-bit bytes read as UTF-8 (RFC 6532) and then in the message's own charsets.
Pure code; every value is bounded.
"""

from __future__ import annotations

import base64
import binascii
import quopri
import re
from collections.abc import Sequence
from email.header import Header, decode_header
from email.message import Message
from typing import Any

from helpdesk.ingest.charsets import decode_text

MAX_HEADERS = 500
MAX_HEADER_VALUE = 8_192
MAX_RAW_HEADER = 65_536
CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
NAME_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")

# RFC 2047 §2 encoded-word. Real mail puts spaces inside the encoded text
# (forbidden by §2, tolerated by every mail client), so those are allowed;
# the length bound (§2 allows 75 in all) keeps a search linear.
ENCODED_WORD_RE = re.compile(r"=\?([^?\s]{1,75})\?([bBqQ])\?(.{0,500}?)\?=")
FOLD_RE = re.compile(r"\r?\n(?=[ \t])")


def decode_value(value: Any, fallbacks: Sequence[str] = ()) -> str:
    """Decode a header value (RFC 2047 encoded-words, raw 8-bit text) to
    text; never raises.

    Raw 8-bit header bytes (no encoded-words) are read as UTF-8 (RFC 6532),
    then in ``fallbacks`` (the charsets the message declares), then as
    windows-1252, instead of becoming replacement characters.
    """
    if value is None:
        return ""
    if isinstance(value, Header):
        try:
            return "".join(
                chunk if isinstance(chunk, str) else decode_text(chunk, charset, fallbacks)
                for chunk, charset in decode_header(value)
            )
        except Exception:
            return str(value)
    try:
        text = str(value)[:MAX_RAW_HEADER]
    except Exception:
        return ""
    # RFC 5322 §2.2.3: unfold first, so a word broken across a fold matches.
    text = FOLD_RE.sub("", text)
    out: list[str] = []
    pending: list[tuple[str | None, bytes]] = []  # adjacent encoded-words
    pos = 0
    for match in ENCODED_WORD_RE.finditer(text):
        between = text[pos : match.start()]
        if between and not (pending and between.isspace()):
            # RFC 2047 §6.2: whitespace between two encoded-words is dropped.
            _flush_words(pending, out, fallbacks)
            out.append(raw_text(between, fallbacks))
        charset, encoding, encoded = match.groups()
        data = _word_bytes(encoding, encoded)
        if data is None:
            _flush_words(pending, out, fallbacks)
            out.append(match.group(0))
        else:
            pending.append((charset, data))
        pos = match.end()
    _flush_words(pending, out, fallbacks)
    out.append(raw_text(text[pos:], fallbacks))
    return "".join(out)


def _word_bytes(encoding: str, encoded: str) -> bytes | None:
    try:
        raw = encoded.encode("ascii", "surrogateescape")
    except UnicodeError:
        return None
    if encoding in "bB":
        return lenient_b64decode(raw)
    # RFC 2047 §4.2: "_" stands for a space in the Q encoding.
    return quopri.decodestring(raw.replace(b"_", b" "))


def _flush_words(
    pending: list[tuple[str | None, bytes]], out: list[str], fallbacks: Sequence[str]
) -> None:
    """Decode a run of adjacent encoded-words, joining the bytes of words in
    one charset first: senders split a multi-byte character across two words
    (forbidden by RFC 2047 §5, common in GB2312 and UTF-8 subjects)."""
    i = 0
    while i < len(pending):
        charset, data = pending[i]
        j = i + 1
        while j < len(pending) and pending[j][0] == charset:
            data += pending[j][1]
            j += 1
        out.append(decode_text(data, charset, fallbacks))
        i = j
    pending.clear()


def raw_text(text: str, fallbacks: Sequence[str]) -> str:
    """Header text outside encoded-words: raw 8-bit bytes arrive from the
    parser as surrogate escapes."""
    if text.isascii():
        return text
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return decode_text(data, None, fallbacks)


def header_raw(message: Message, name: str) -> str:
    """The first ``name`` field as it was on the wire (8-bit bytes as
    surrogate escapes), without the policy's lossy re-decoding."""
    key = name.lower()
    try:
        for hname, value in message.raw_items():
            if hname.lower() == key:
                return value if isinstance(value, str) else str(value)
    except Exception:
        return ""
    return ""


def header_raw_all(message: Message, name: str) -> list[str]:
    key = name.lower()
    try:
        return [
            v if isinstance(v, str) else str(v) for h, v in message.raw_items() if h.lower() == key
        ]
    except Exception:
        return []


def decoded_header(message: Message, name: str, fallbacks: Sequence[str]) -> str:
    return decode_value(header_raw(message, name), fallbacks)[:MAX_HEADER_VALUE]


def clean_line(value: str) -> str:
    """One line of text: folded whitespace collapsed, control characters gone."""
    return " ".join(CONTROL_RE.sub(" ", value).split())


def normalise_lines(text: str) -> str:
    """RFC 5322 §2.3 lines end in CRLF on the wire; stored text uses "\\n"."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


# Structured fields that carry verdicts on the mail (RFC 8601, RFC 8617,
# RFC 7208 §9.1, RFC 6376 §3.5). RFC 2047 §5 allows no encoded-words in
# them, and decoding one would turn text our receiving server never read as
# a verdict ("=?us-ascii?q?mx.example?=; dkim=pass"), and so left in place
# (RFC 8601 §5 removes only forged copies it recognises), into one.
VERBATIM_FIELDS = frozenset({
    "authentication-results", "arc-authentication-results", "received-spf",
    "dkim-signature", "arc-seal", "arc-message-signature",
})


def all_headers(message: Message, fallbacks: Sequence[str]) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    try:
        items = message.raw_items()
    except Exception:
        return ()
    for count, (name, value) in enumerate(items):
        if count >= MAX_HEADERS:
            break
        key = str(name).lower()
        if key in VERBATIM_FIELDS:
            text = raw_text(FOLD_RE.sub("", str(value)[:MAX_RAW_HEADER]), fallbacks)
        else:
            text = decode_value(value, fallbacks)
        out.append((key, clean_line(text)[:MAX_HEADER_VALUE]))
    return tuple(out)


# RFC 2045 §6.8: characters outside the base64 alphabet are to be ignored.
_NOT_BASE64_RE = re.compile(rb"[^A-Za-z0-9+/]")


def lenient_b64decode(raw: bytes) -> bytes | None:
    """Base64 as RFC 2045 §6.8 asks decoders to read it: characters outside
    the alphabet are ignored and "=" ends the data; missing padding is
    supplied. None when the length cannot be base64 (the part was not
    encoded at all, whatever its header says)."""
    clean = _NOT_BASE64_RE.sub(b"", raw.split(b"=", 1)[0])
    if len(clean) % 4 == 1:
        return None
    try:
        return base64.b64decode(clean + b"=" * (-len(clean) % 4))
    except (binascii.Error, ValueError):
        return None
