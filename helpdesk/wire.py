"""Outbound mail as wire bytes, written directly for the shapes we compose.

We compose two shapes only: one text/plain part, or multipart/alternative
holding text/plain then text/html, every body UTF-8 in quoted-printable;
either may be wrapped in multipart/mixed with files after it. For
those, building an ``email.message`` tree and flattening it with
``email.generator`` cost most of composing a mail (it even compiles a regular
expression per boundary), so this module writes the same bytes itself:
header lines, part headers, boundary lines and CRLF line ends (RFC 5322
§2.1). A header that needs folding or RFC 2047 encoding is still folded by
the email library, one header at a time. The output is byte for byte what
compat32's ``BytesGenerator`` writes for the tree we used to build;
tests/unit/test_compose_wire.py holds it to that.
"""

from __future__ import annotations

import random
import re
import sys
from base64 import encodebytes
from binascii import b2a_qp
from collections.abc import Iterable, Sequence
from email.header import Header
from email.policy import Compat32
from typing import NamedTuple
from urllib.parse import quote

HeaderValue = str | Header

_CRLF = b"\r\n"
_LINE_END = re.compile(rb"\r\n|\r|\n")
# The ASCII part of compose's _BREAKS: a value holding one of these has always
# been left to the library to fold.
_ASCII_BREAKS = re.compile(r"[\r\n\x00\x0b\x0c]")
_MAX_LINE = 78  # RFC 5322 §2.1.1: SHOULD be no more than 78 characters
_MIME_VERSION = b"MIME-Version: 1.0\r\n"  # RFC 2045 §4
_PART_ENCODING = b"Content-Transfer-Encoding: quoted-printable\r\n"
_PLAIN_TYPE = b'Content-Type: text/plain; charset="utf-8"\r\n'
_HTML_TYPE = b'Content-Type: text/html; charset="utf-8"\r\n'
# The generator's boundary shape: 15 '=', a zero-padded random number, '=='.
_TOKEN_WIDTH = len(str(sys.maxsize - 1))


class Body(NamedTuple):
    """The MIME headers that open the mail, and everything after the blank line."""

    head: bytes
    data: bytes


def encode_plain(text: str) -> Body:
    """One text/plain part, which is the whole mail."""
    return Body(_PLAIN_TYPE + _PART_ENCODING + _MIME_VERSION, _encode_qp(text))


def encode_alternative(text: str, html: str) -> Body:
    """multipart/alternative: text/plain first, html last, as RFC 2046 §5.1.4
    orders them from plainest to richest."""
    parts = (
        _PLAIN_TYPE + _PART_ENCODING + _CRLF + _encode_qp(text),
        _HTML_TYPE + _PART_ENCODING + _CRLF + _encode_qp(html),
    )
    mark = choose_boundary(_CRLF.join(parts)).encode("ascii")
    # The generator folds this 84-column Content-Type before the parameter;
    # a boundary never passes 78 columns on its continuation line.
    head = b'Content-Type: multipart/alternative;\r\n boundary="' + mark + b'"\r\n'
    # RFC 2046 §5.1.1: each part after a delimiter line, then the close
    # delimiter; the CRLF before each delimiter belongs to the delimiter.
    delimiter = b"--" + mark
    data = (delimiter + _CRLF + parts[0] + _CRLF + delimiter + _CRLF + parts[1]
            + _CRLF + delimiter + b"--" + _CRLF)
    return Body(head + _MIME_VERSION, data)


# RFC 2045 §5.1: type "/" subtype, each a token; anything else is sent as
# what it is to us, bytes.
_TOKEN = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}"
_TYPE_RE = re.compile(f"{_TOKEN}/{_TOKEN}")
# What may stand in a quoted filename as it is: printable ASCII but the
# quote and the backslash (RFC 2045 §5.1 quoted-string, RFC 2183 §2.3).
_PLAIN_NAME_RE = re.compile(r'[ !#-\[\]-~]{1,200}')
MAX_NAME = 200
_NAME_PIECE = 54  # with " filename*99*=utf-8''" within 78 columns


def encode_mixed(body: Body, files: Sequence[tuple[str, str, bytes]]) -> Body:
    """multipart/mixed (RFC 2046 §5.1.3): ``body`` first, then each file as
    (name, content type, bytes) in base64 (RFC 2045 §6.8), named with
    RFC 2183 and, when not plain ASCII, RFC 2231."""
    inner = body.head.removesuffix(_MIME_VERSION) + _CRLF + body.data
    parts = [inner, *(_file_part(*file) for file in files)]
    mark = choose_boundary(_CRLF.join(parts)).encode("ascii")
    head = b'Content-Type: multipart/mixed;\r\n boundary="' + mark + b'"\r\n'
    delimiter = b"--" + mark
    data = b"".join(delimiter + _CRLF + part + _CRLF for part in parts)
    return Body(head + _MIME_VERSION, data + delimiter + b"--" + _CRLF)


def attachment_name(name: str) -> str:
    """The sender's name for a file, fit to be a header parameter: the last
    path segment, control characters and line breaks gone, at most MAX_NAME
    characters; "attachment" when nothing is left."""
    base = re.split(r"[/\\]", name)[-1]
    base = "".join(c if c.isprintable() else "_" for c in base).strip(" .")
    return base[:MAX_NAME] or "attachment"


def _file_part(name: str, content_type: str, data: bytes) -> bytes:
    ctype = content_type.lower() if _TYPE_RE.fullmatch(content_type) else (
        "application/octet-stream")
    if ctype.startswith(("message/", "multipart/")):
        # RFC 2046 §5.2.1 and §5.1: these may not be base64-encoded; sent as
        # the bytes they are (the receiver's "save" still gets them whole).
        ctype = "application/octet-stream"
    name = attachment_name(name)
    head = (f"Content-Type: {ctype};{_name_param('name', name)}\r\n"
            f"Content-Disposition: attachment;{_name_param('filename', name)}\r\n"
            "Content-Transfer-Encoding: base64\r\n").encode("ascii")
    return head + _CRLF + encodebytes(data).replace(b"\n", _CRLF)


def _name_param(key: str, name: str) -> str:
    """``key`` set to ``name``, each piece on a folded line of its own: quoted
    when plain ASCII, else RFC 2231 §4 ``utf-8''`` percent-encoding, in
    numbered pieces (§3) so that no line passes 78 columns."""
    if _PLAIN_NAME_RE.fullmatch(name) and len(name) <= _MAX_LINE - len(key) - 5:
        return f'\r\n {key}="{name}"'
    pieces: list[str] = []
    for unit in re.findall(r"%[0-9A-F]{2}|[^%]", quote(name, safe="")):
        # Cut between %XX escapes, never inside one.
        if pieces and len(pieces[-1]) + len(unit) <= _NAME_PIECE:
            pieces[-1] += unit
        else:
            pieces.append(unit)
    if len(pieces) == 1:
        return f"\r\n {key}*=utf-8''{pieces[0]}"
    charset = ["utf-8''"] + [""] * (len(pieces) - 1)  # §4.1: named in the first only
    return ";".join(f"\r\n {key}*{i}*={charset[i]}{piece}" for i, piece in enumerate(pieces))


def choose_boundary(avoid: bytes) -> str:
    """A random boundary that does not occur in ``avoid`` (RFC 2046 §5.1.1).

    Drawn as ``email.generator`` draws it, from the same random stream, so a
    seeded ``random`` gives the boundary it gave before. It contains '==',
    which quoted-printable never writes ('=' there always starts '=XX' or a
    soft line break, RFC 2045 §6.7), so the check below never fails for our
    parts; it is kept in case a part ever is not QP. It looks anywhere in the
    text, where the generator looks only at line starts: stricter, no regex.
    """
    token = f"{'=' * 15}{random.randrange(sys.maxsize):0{_TOKEN_WIDTH}d}=="
    mark, counter = token, 0
    while b"--" + mark.encode("ascii") in avoid:
        mark = f"{token}.{counter}"
        counter += 1
    return mark


def serialize(headers: Iterable[tuple[str, HeaderValue]], body: Body, policy: Compat32) -> bytes:
    """The whole mail: MIME headers, ``headers`` in order, a blank line, the body."""
    lines = [body.head]
    lines.extend(format_header(name, value, policy) for name, value in headers)
    lines.append(_CRLF)
    lines.append(body.data)
    return b"".join(lines)


def format_header(name: str, value: HeaderValue, policy: Compat32) -> bytes:
    """One header field with its CRLF.

    A one-line ASCII value that fits in 78 columns is written as it is: that
    is what compat32 folding returns for it, at a fraction of the cost (bar
    FS, GS and RS, where the library would break the line: written as they
    are, they keep the field on one line, as they always have here). The
    rest (non-ASCII, long, doubled spaces, RFC 2047 ``Header`` values) is
    folded by ``policy``, which must be compat32 with CRLF line ends.
    """
    if (
        isinstance(value, str)
        and value.isascii()
        and len(name) + 2 + len(value) <= _MAX_LINE
        and (value.isprintable() or not _ASCII_BREAKS.search(value))
        and "  " not in value
    ):
        return f"{name}: {value}\r\n".encode("ascii")
    # compat32 folds Header objects as well as str; typeshed only admits str.
    return policy.fold_binary(name, value)  # type: ignore[arg-type]


def _encode_qp(text: str) -> bytes:
    """RFC 2045 §6.7 quoted-printable of UTF-8 text, with CRLF line ends.

    ``binascii.b2a_qp`` is what ``quopri.encodestring`` calls. CRLF is made
    LF first, so it sees one kind of line end; then CRLF, CR and LF each
    become one CRLF, as the generator's ``_write_lines`` made them.
    """
    encoded = b2a_qp(text.replace("\r\n", "\n").encode("utf-8"), quotetabs=False, header=False)
    if b"\r" not in encoded:
        return encoded.replace(b"\n", _CRLF)
    return _LINE_END.sub(_CRLF, encoded)
