"""The MIME walk: which parts are the body and which are attachments.

RFC 2046 and RFC 2183 as mail clients read them: a message/rfc822 part is an
attachment, never body text (§5.2.1); the last plain and HTML alternatives
are the body; a part without a name keeps an empty filename (never the
library's invented one); names follow RFC 2231 and, as clients do, RFC 2047
inside quoted parameters. Pure code; every loop is bounded.
"""

from __future__ import annotations

import binascii
import email.utils
import hashlib
import io
import quopri
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

from helpdesk.ingest.charsets import codec_for, decode_text
from helpdesk.ingest.headers import (
    FOLD_RE,
    MAX_HEADER_VALUE,
    NAME_CONTROL_RE,
    clean_line,
    decode_value,
    header_raw,
    normalise_lines,
)
from helpdesk.ingest.inbound import Attachment

MAX_PARTS = 200
MAX_DEPTH = 20

# Token -> the body cut out of a large message's skeleton (helpdesk.ingest.skeleton),
# a view of the raw bytes, read in place of the token the tree holds.
Spans = Mapping[str, memoryview]


@dataclass
class Body:
    plain: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    leaves: int = 0


_BODY_TYPES = frozenset({"text/plain", "text/html"})


def walk_body(
    part: Message, body: Body, fallbacks: Sequence[str], depth: int, spans: Spans
) -> None:
    """Collect body text and attachments, the way mail clients show them.

    A text/plain or text/html leaf without a filename and not disposed as an
    attachment is body text (several of them, as Apple Mail sends around
    inline images, are joined in order). Of the alternatives of a
    multipart/alternative (RFC 2046 §5.1.4, "last is best") the last one
    offering plain text gives the text and the last one offering HTML gives
    the HTML. Every other leaf is an attachment, and so is a message/rfc822
    part, whose own text belongs to the attached message.
    """
    if body.leaves >= MAX_PARTS or depth > MAX_DEPTH:
        return
    ctype = _part_type(part)
    # The stored payload: get_payload() would decode a leaf, and can raise.
    payload = getattr(part, "_payload", None)
    if ctype == "multipart/alternative" and isinstance(payload, list):
        branches: list[Body] = []
        for child in payload[:MAX_PARTS]:
            if not isinstance(child, Message):
                continue
            branch = Body(leaves=body.leaves)
            walk_body(child, branch, fallbacks, depth + 1, spans)
            body.leaves = branch.leaves
            branches.append(branch)
        plain = [b for b in branches if any(t.strip() for t in b.plain)]
        html = [b for b in branches if any(t.strip() for t in b.html)]
        if plain:
            body.plain.extend(plain[-1].plain)
        if html:
            body.html.extend(html[-1].html)
        for branch in branches:
            body.attachments.extend(branch.attachments)
        return
    if ctype.startswith("multipart/") and isinstance(payload, list):
        for child in payload[:MAX_PARTS]:
            if isinstance(child, Message):
                walk_body(child, body, fallbacks, depth + 1, spans)
        return
    body.leaves += 1
    if ctype.startswith("multipart/"):
        # No boundary was found (RFC 2046 §5.1.1): the parts are one string,
        # still readable as text, so show them rather than hide them.
        body.plain.append(
            normalise_lines(_part_text_decoded(part, "text/plain", fallbacks, spans))
        )
        return
    filename = _filename(part, fallbacks)
    disposition = _disposition(part)
    if ctype in _BODY_TYPES and not filename and disposition != "attachment":
        text = normalise_lines(_part_text_decoded(part, ctype, fallbacks, spans))
        (body.html if ctype == "text/html" else body.plain).append(text)
        return
    body.attachments.append(
        _attachment(
            filename,
            ctype,
            _part_bytes(part, ctype, spans),
            header_raw(part, "content-id"),
            disposition == "inline",
        )
    )


def _part_type(part: Message) -> str:
    try:
        return part.get_content_type()
    except Exception:
        return "application/octet-stream"


def _disposition(part: Message) -> str | None:
    try:
        return part.get_content_disposition()
    except Exception:
        return None


def _filename(part: Message, fallbacks: Sequence[str]) -> str:
    """The name the sender gave the part, or "".

    RFC 2183 §2.3 ``filename`` first, then the older Content-Type ``name``
    (RFC 2046 §4.5.1). RFC 2231 values carry their own charset; plain values
    may hold RFC 2047 encoded-words (forbidden in quoted strings by RFC 2047
    §5, but what most clients send) or raw 8-bit text.
    """
    try:
        charset = part.get_content_charset()
    except Exception:
        charset = None
    local = [c for c in (codec_for(charset),) if c] + list(fallbacks)
    for param, header in (("filename", "content-disposition"), ("name", "content-type")):
        value = _param(header_raw(part, header), param)
        if not value:
            continue
        if isinstance(value, tuple):
            value_charset, _language, text = value
            # decode_params gives the %-decoded bytes as Latin-1 characters.
            try:
                data = text.encode("latin-1", "surrogateescape")
            except UnicodeError:
                data = text.encode("latin-1", "replace")
            name = decode_text(data, value_charset, local)
            if "=?" in name:
                name = decode_value(name, local)
        else:
            name = decode_value(value, local)
        name = NAME_CONTROL_RE.sub(" ", name).strip()
        if name:
            return name[:255]
    return ""


def _param(header_value: str, wanted: str) -> str | tuple[str, str, str] | None:
    """Parameter ``wanted`` of a raw MIME header (RFC 2045 §5.1, with RFC 2231
    continuations and charsets), 8-bit bytes still surrogate-escaped.

    Message.get_param would do this too, but only after replacing raw 8-bit
    bytes with U+FFFD, and raw 8-bit names are common (Outlook, webmail).
    """
    params: list[tuple[str, str]] = [("", "")]
    for piece in _split_params(FOLD_RE.sub("", header_value[:MAX_HEADER_VALUE])):
        name, eq, value = piece.partition("=")
        if eq and name.strip():
            params.append((name.strip().lower(), value.strip()))
    try:
        decoded = email.utils.decode_params(params)
    except Exception:
        return None
    plain: str | None = None
    for key, decoded_value in decoded[1:]:
        if key != wanted:
            continue
        if isinstance(decoded_value, tuple):
            # RFC 2231 §4: the extended form is the one meant to be read.
            charset, language, text = decoded_value
            return (str(charset or ""), str(language or ""), email.utils.unquote(str(text)))
        if plain is None:
            plain = email.utils.unquote(str(decoded_value))
    return plain


def _split_params(value: str) -> list[str]:
    """The ";"-separated pieces after the first, quotes respected."""
    pieces: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ";" and not quoted:
            pieces.append("".join(current))
            current = []
            continue
        current.append(char)
    pieces.append("".join(current))
    return pieces[1:]


_HTML_META_CHARSET_RE = re.compile(
    rb"<meta[^>]{0,200}?charset\s*=\s*[\"']?\s*([a-z0-9_.:-]{1,40})", re.I
)


def _part_text_decoded(
    part: Message, ctype: str, fallbacks: Sequence[str], spans: Spans
) -> str:
    data = _part_bytes(part, ctype, spans)
    try:
        label = part.get_content_charset()
    except Exception:
        label = None
    if label is None and ctype == "text/html":
        # HTML §13.2.3.2 prescan: an undeclared part may name its charset in
        # a <meta> element near the start.
        meta = _HTML_META_CHARSET_RE.search(data[:2048])
        if meta:
            label = meta.group(1).decode("ascii")
    return decode_text(data, label, fallbacks)


def _part_bytes(part: Message, ctype: str, spans: Spans) -> bytes:
    """The decoded bytes of a leaf; never raises.

    Applies the Content-Transfer-Encoding (RFC 2045 §6) ourselves, reading
    its value case- and whitespace-insensitively, decoding base64 leniently
    and x-uuencode too; an unknown encoding leaves the bytes as they came.
    A body cut out of a large message is read from its view of the raw
    bytes: the same bytes the parser would have held, never copied whole
    before decoding.
    """
    # The stored payload, not get_payload(): that re-decodes 8-bit bytes
    # with replacement characters before we could choose their charset.
    payload = getattr(part, "_payload", None)
    if isinstance(payload, list):
        return _embedded_bytes(payload, ctype, spans)
    raw: bytes | memoryview
    if isinstance(payload, bytes):
        raw = payload
    elif isinstance(payload, str):
        cut = spans.get(payload) if spans else None
        if cut is not None:
            raw = cut
        else:
            try:
                raw = payload.encode("ascii", "surrogateescape")
            except UnicodeError:
                raw = payload.encode("utf-8", "surrogateescape")
    else:
        return b""
    cte = header_raw(part, "content-transfer-encoding").strip().lower()
    try:
        if cte == "base64":
            decoded = b64decode_lenient(raw)
            return bytes(raw) if decoded is None else decoded
        if cte == "quoted-printable":
            return quopri.decodestring(bytes(raw))
        if cte in ("x-uuencode", "uuencode", "x-uue", "uue"):
            return _uudecode(bytes(raw))
    except (binascii.Error, ValueError):
        pass
    # bytes() of a bytes object is the object itself: only a view is copied.
    return bytes(raw)


_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_BASE64 = bytes(sorted(set(range(256)) - set(_BASE64_ALPHABET)))
_BASE64_CHUNK = 1 << 20


def b64decode_lenient(data: bytes | memoryview) -> bytes | None:
    """Base64 as RFC 2045 §6.8 asks decoders to read it: characters outside
    the alphabet are ignored and "=" ends the data; missing padding is
    supplied. None when the length cannot be base64 (the part was not
    encoded at all, whatever its header says).

    The same result as :func:`helpdesk.ingest.headers.lenient_b64decode`,
    a megabyte at a time: the encoded text is never copied whole, and the
    output grows in place (``BytesIO.getvalue`` hands over its buffer), so
    a large attachment costs its decoded size and little more.
    """
    view = memoryview(data)
    out = io.BytesIO()
    carry = b""
    for start in range(0, len(view), _BASE64_CHUNK):
        chunk = bytes(view[start:start + _BASE64_CHUNK])
        pad = chunk.find(b"=")
        clean = carry + chunk[: len(chunk) if pad < 0 else pad].translate(None, _NOT_BASE64)
        whole = len(clean) - len(clean) % 4
        out.write(binascii.a2b_base64(clean[:whole]))
        carry = clean[whole:]
        if pad >= 0:
            break
    if len(carry) == 1:
        return None
    if carry:
        out.write(binascii.a2b_base64(carry + b"=" * (-len(carry) % 4)))
    return out.getvalue()




def _uudecode(raw: bytes) -> bytes:
    """The x-uuencode transfer encoding (not in RFC 2045, but sent by old
    clients): the lines between "begin" and "end"."""
    out = bytearray()
    lines = iter(raw.splitlines())
    for line in lines:
        if line.startswith(b"begin "):
            break
    else:
        lines = iter(raw.splitlines())
    for line in lines:
        if line.strip() in (b"end", b"`", b""):
            if line.strip() == b"end":
                break
            continue
        try:
            out += binascii.a2b_uu(line)
        except binascii.Error:
            # Broken encoders pad short; decode what the length byte promises.
            length = (((line[0] - 32) & 63) * 4 + 5) // 3
            try:
                out += binascii.a2b_uu(line[:length])
            except binascii.Error:
                continue
    return bytes(out)


def _embedded_bytes(payload: list[Any], ctype: str, spans: Spans) -> bytes:
    """A message/rfc822 attachment as the attached message's bytes, and a
    message/delivery-status part (RFC 3464 §2.1) as its field blocks."""
    blocks: list[bytes] = []
    for item in payload[:MAX_PARTS]:
        if not isinstance(item, Message):
            continue
        try:
            blocks.append(item.as_bytes())
        except Exception:
            try:
                blocks.append(item.as_string().encode("utf-8", "surrogateescape"))
            except Exception:
                continue
        if ctype == "message/rfc822":
            break
    joined = b"\n".join(blocks)
    return _with_cut_bodies(joined, spans) if spans else joined


_CUT_CHUNK = 1 << 20


def _with_cut_bodies(data: bytes, spans: Spans) -> bytes:
    """``data``, an attached message re-serialised from a skeleton, with each
    token put back as the body it stands for, written as the generator
    writes a body: every line end (CRLF, CR or LF) as LF."""
    found = sorted(
        (at, token) for token in spans if (at := data.find(token.encode("ascii"))) >= 0
    )
    if not found:
        return data
    out = io.BytesIO()
    pos = 0
    for at, token in found:
        out.write(data[pos:at])
        view = spans[token]
        start = 0
        while start < len(view):
            stop = min(start + _CUT_CHUNK, len(view))
            while stop < len(view) and view[stop - 1] == 0x0D:
                stop += 1  # keep a CRLF in one piece
            piece = bytes(view[start:stop])
            out.write(piece.replace(b"\r\n", b"\n").replace(b"\r", b"\n"))
            start = stop
        pos = at + len(token)
    out.write(data[pos:])
    return out.getvalue()


def _attachment(
    filename: str, content_type: str, payload: bytes, content_id: str, inline: bool
) -> Attachment:
    return Attachment(
        filename=filename[:255],
        content_type=content_type.lower()[:255],
        payload=payload,
        sha256=hashlib.sha256(payload).hexdigest(),
        content_id=clean_line(content_id).strip("<>")[:255],
        inline=inline,
    )
