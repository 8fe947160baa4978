"""Raw RFC 5322 bytes -> a frozen :class:`InboundEmail`. Pure code.

The standard library's ``email`` parser (compat32) splits the message into
its MIME tree and records defects. The walk that picks the body and the
attachments, and all charset decoding, are ours, because real mail needs
more forgiveness than the libraries give it:

* charset labels are read as the WHATWG Encoding Standard reads them
  (``gb2312`` is GBK, ``iso-8859-1`` and ``us-ascii`` are windows-1252,
  ``ks_c_5601-1987`` is windows-949), so text outside the strict repertoire
  still decodes; ISO-2022-JP is decoded with the Windows repertoire
  (NEC/IBM rows); a 7-bit label on 8-bit data falls back to UTF-8 and then
  to the label's language family (Shift_JIS sent as ISO-2022-JP);
* raw 8-bit header text (RFC 6532 allows UTF-8 there) is read as UTF-8, then
  in the charsets the message itself declares;
* encoded-words (RFC 2047) are decoded even when broken across folds, when
  they hold spaces, or when adjacent words split one multi-byte character;
* attachment names follow RFC 2183/2231 and, as mail clients do, RFC 2047
  inside quoted parameters; a part without a name keeps an empty filename
  (the library's random or Content-ID names are not what the sender wrote);
* a message/rfc822 part is an attachment, never part of the body
  (RFC 2046 §5.2.1);
* a header block broken by unindented continuation lines, or preceded by a
  stray line, is repaired before parsing.

mail-parser (the design card's parser) builds the message tree and names
its defects. Its own body and attachment walk is not used: it gave random
names to unnamed attachments, merged attached messages into the body and
replaced undecodable text. Its header decoding is quadratic in a field's
length (a 28 kB Subject of unterminated encoded-words took 1.3 s, 60 kB
13 s), so every header field is cut to ``MAX_FIELD_FOR_PARSER`` bytes before
it is handed over; the stored raw mail is never changed.

Only :class:`BadMessageError` leaves this module, when not even the headers
can be read. Every loop is bounded, so hostile input costs linear time.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import hashlib
import logging
import quopri
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.header import Header, decode_header
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any

import mailparser

from helpdesk.errors import BadMessageError
from helpdesk.ingest.charsets import codec_for, decode_text, fallback_codecs
from helpdesk.ingest.html import html_to_text
from helpdesk.ingest.inbound import Address, Attachment, InboundEmail, MimePart

MAX_HEADERS = 500
MAX_HEADER_VALUE = 8_192
MAX_PART_TEXT = 65_536
MAX_BODY_TEXT = 1_000_000
MAX_IDS = 100
MAX_PARTS = 200
MAX_DEPTH = 20
MAX_HEADER_BLOCK = 262_144
MAX_RAW_HEADER = 65_536
MAX_FIELD_FOR_PARSER = 8_192

# RFC 5322 §3.6.4: msg-id is "<" id-left "@" id-right ">"; real mail also
# carries ids without "@", so accept anything bracketed without whitespace.
_MSGID_RE = re.compile(r"<([^<>\s]{1,998})>")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_NAME_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")

# mail-parser logs every part type it does not render at WARNING; for a
# helpdesk those are routine (PGP parts, DSN parts), not operator news.
logging.getLogger("mailparser").setLevel(logging.ERROR)


def parse_email(raw: bytes) -> InboundEmail:
    """Parse ``raw`` into an :class:`InboundEmail`; raise BadMessageError only
    when not even the headers can be read."""
    if not raw.strip():
        raise BadMessageError("empty message")
    digest = hashlib.sha256(raw).hexdigest()
    repaired = _repair_header_block(raw)
    bounded = _bound_fields(repaired)
    try:
        parsed = mailparser.parse_from_bytes(bounded)
        message = parsed.message
        defects = tuple(sorted(str(d) for d in parsed.defects_categories))
    except Exception:
        # A library exception is never our exception: the stdlib alone.
        try:
            # RecursionError (a hostile nesting depth) is an Exception too.
            message = email.message_from_bytes(bounded, policy=email.policy.compat32)
        except Exception as exc:
            raise BadMessageError(f"unparseable message: {exc!r}") from exc
        defects = (*_defects(message), "MailParserFailed")
    if message is None:
        raise BadMessageError("no message could be read")
    if repaired is not raw:
        defects += ("HeaderBlockRepaired",)
    if bounded is not repaired:
        defects += ("HeaderFieldTooLong",)
    return _build(message, raw, digest, defects)


def _bound_fields(raw: bytes) -> bytes:
    """``raw`` with every header field cut to MAX_FIELD_FOR_PARSER bytes.

    A field is a line plus its continuation lines (RFC 5322 §2.2.3); only the
    header block is touched, and only when some field is longer than that.
    """
    end = raw.find(b"\n\n")
    end_crlf = raw.find(b"\r\n\r\n")
    cut = min(e for e in (end, end_crlf, len(raw)) if e >= 0)
    head = raw[:cut]
    if len(head) <= MAX_FIELD_FOR_PARSER:
        return raw
    fields = re.split(rb"(\r?\n)(?![ \t])", head)
    if all(len(f) <= MAX_FIELD_FOR_PARSER for f in fields):
        return raw
    bounded = b"".join(f[:MAX_FIELD_FOR_PARSER] for f in fields)
    return bounded + raw[cut:]


def _defects(message: Message) -> tuple[str, ...]:
    """The kinds of defect the parser noted anywhere in the tree, sorted."""
    kinds: set[str] = set()
    try:
        for part in _bounded_walk(message):
            kinds.update(type(d).__name__ for d in getattr(part, "defects", ()))
    except Exception:
        kinds.add("WalkFailed")
    return tuple(sorted(kinds))


def _build(message: Message, raw: bytes, digest: str, defects: tuple[str, ...]) -> InboundEmail:
    fallbacks = _declared_charsets(message)
    body = _Body()
    try:
        _walk(message, body, fallbacks, 0)
    except Exception:  # a pathological tree: keep what was collected
        pass
    plain = _lines("\n".join(t for t in body.plain if t)).strip("\n")
    html = "\n".join(t for t in body.html if t)
    text = plain if plain.strip() else html_to_text(html) if html else ""
    return InboundEmail(
        message_id=_first_id(_header_raw(message, "message-id")),
        subject=_clean_line(_decoded(message, "subject", fallbacks)),
        from_=_sender(message, fallbacks),
        to=_addresses(message, "to", fallbacks),
        cc=_addresses(message, "cc", fallbacks),
        reply_to=_addresses(message, "reply-to", fallbacks),
        delivered_to=_addresses(message, "delivered-to", fallbacks),
        x_original_to=_addresses(message, "x-original-to", fallbacks),
        in_reply_to=tuple(_ids(_header_raw(message, "in-reply-to"))),
        references=tuple(_ids(_header_raw(message, "references"))),
        date=_date(_header_raw(message, "date")),
        return_path=_return_path(message),
        headers=_headers(message, fallbacks),
        text=text[:MAX_BODY_TEXT],
        html=html[:MAX_BODY_TEXT],
        content_type=_safe_content_type(message),
        parts=tuple(_parts(message)),
        attachments=tuple(body.attachments),
        size=len(raw),
        sha256=digest,
        defects=defects,
    )


# --- the header block -------------------------------------------------------

# RFC 5322 §2.2: field-name is printable US-ASCII except ":"; §4.5.3 (obs)
# allows whitespace before the colon. "From " is the mbox separator line.
_FIELD_LINE_RE = re.compile(rb"[!-9;-~]+[ \t]*:")
_BLANK_LINE_RE = re.compile(rb"\r?\n\r?\n")


def _is_field_line(line: bytes) -> bool:
    return bool(_FIELD_LINE_RE.match(line)) or line.startswith(b"From ")


def _repair_header_block(raw: bytes) -> bytes:
    """Undo two common breakages of the header block; otherwise return ``raw``.

    RFC 5322 §2.2.3 folds a long field by starting each continuation line
    with whitespace. Some relays (old Exchange, qmail scanners) drop that
    whitespace, and the stdlib then ends the header block at the first such
    line, losing From and Subject. A line that is neither a field nor a
    continuation is taken as a continuation of the field above it when more
    fields follow in the same block, or when that field is unfinished (ends
    in ";" or ","). A stray first line ("---- Original email message ----")
    directly followed by fields is dropped. Otherwise, and at a line that
    starts with "--" (a MIME boundary), the repair stops: that is a message
    whose blank separator line is missing, not a broken fold.
    """
    end = _BLANK_LINE_RE.search(raw, 0, MAX_HEADER_BLOCK)
    if end is None:
        return raw
    lines = raw[: end.start()].split(b"\n")
    start = 0
    for _ in range(2):
        if (
            start + 1 < len(lines)
            and not _is_field_line(lines[start])
            and _is_field_line(lines[start + 1])
        ):
            start += 1
    broken = [
        i
        for i in range(start + 1, len(lines))
        if not _is_field_line(lines[i]) and lines[i][:1] not in (b" ", b"\t")
    ]
    if start == 0 and not broken:
        return raw
    last_field = max((i for i in range(len(lines)) if _is_field_line(lines[i])), default=-1)
    fixed = list(lines[start:])
    for i in broken:
        # A continuation when more fields follow, or when the field above is
        # unfinished (a parameter or address list ending in ";" or ",").
        unfinished = fixed[i - 1 - start].rstrip().endswith((b";", b","))
        if lines[i].startswith(b"--") or not (i < last_field or unfinished):
            break
        fixed[i - start] = b" " + lines[i]
    return b"\n".join(fixed) + raw[end.start() :]


# --- charsets declared in the message ------------------------------------

def _declared_charsets(message: Message) -> tuple[str, ...]:
    """The charsets the message declares anywhere, multi-byte ones first: a
    clean multi-byte decode is evidence, a single-byte one always succeeds."""
    labels: list[str | None] = []
    try:
        parts = list(_bounded_walk(message))
    except Exception:
        parts = [message]
    for part in parts:
        try:
            labels.append(part.get_content_charset())
        except Exception:
            continue
    return fallback_codecs(labels)


def _bounded_walk(message: Message) -> Iterable[Message]:
    stack: list[tuple[Message, int]] = [(message, 0)]
    count = 0
    while stack and count < MAX_PARTS:
        part, depth = stack.pop()
        count += 1
        yield part
        payload = part.get_payload() if part.is_multipart() else None
        if isinstance(payload, list) and depth < MAX_DEPTH:
            stack.extend((p, depth + 1) for p in reversed(payload) if isinstance(p, Message))


# --- header values ----------------------------------------------------------

# RFC 2047 §2 encoded-word. Real mail puts spaces inside the encoded text
# (forbidden by §2, tolerated by every mail client), so those are allowed;
# the length bound (§2 allows 75 in all) keeps a search linear.
_ENCODED_WORD_RE = re.compile(r"=\?([^?\s]{1,75})\?([bBqQ])\?(.{0,500}?)\?=")
_FOLD_RE = re.compile(r"\r?\n(?=[ \t])")


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
    text = _FOLD_RE.sub("", text)
    out: list[str] = []
    pending: list[tuple[str | None, bytes]] = []  # adjacent encoded-words
    pos = 0
    for match in _ENCODED_WORD_RE.finditer(text):
        between = text[pos : match.start()]
        if between and not (pending and between.isspace()):
            # RFC 2047 §6.2: whitespace between two encoded-words is dropped.
            _flush_words(pending, out, fallbacks)
            out.append(_raw_text(between, fallbacks))
        charset, encoding, encoded = match.groups()
        data = _word_bytes(encoding, encoded)
        if data is None:
            _flush_words(pending, out, fallbacks)
            out.append(match.group(0))
        else:
            pending.append((charset, data))
        pos = match.end()
    _flush_words(pending, out, fallbacks)
    out.append(_raw_text(text[pos:], fallbacks))
    return "".join(out)


def _word_bytes(encoding: str, encoded: str) -> bytes | None:
    try:
        raw = encoded.encode("ascii", "surrogateescape")
    except UnicodeError:
        return None
    if encoding in "bB":
        return _b64decode(raw)
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


def _raw_text(text: str, fallbacks: Sequence[str]) -> str:
    """Header text outside encoded-words: raw 8-bit bytes arrive from the
    parser as surrogate escapes."""
    if text.isascii():
        return text
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return decode_text(data, None, fallbacks)


def _header_raw(message: Message, name: str) -> str:
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


def _header_raw_all(message: Message, name: str) -> list[str]:
    key = name.lower()
    try:
        return [
            v if isinstance(v, str) else str(v) for h, v in message.raw_items() if h.lower() == key
        ]
    except Exception:
        return []


def _decoded(message: Message, name: str, fallbacks: Sequence[str]) -> str:
    return decode_value(_header_raw(message, name), fallbacks)[:MAX_HEADER_VALUE]


def _clean_line(value: str) -> str:
    """One line of text: folded whitespace collapsed, control characters gone."""
    return " ".join(_CONTROL_RE.sub(" ", value).split())


def _lines(text: str) -> str:
    """RFC 5322 §2.3 lines end in CRLF on the wire; stored text uses "\\n"."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _headers(message: Message, fallbacks: Sequence[str]) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    try:
        items = message.raw_items()
    except Exception:
        return ()
    for count, (name, value) in enumerate(items):
        if count >= MAX_HEADERS:
            break
        out.append(
            (str(name).lower(), _clean_line(decode_value(value, fallbacks))[:MAX_HEADER_VALUE])
        )
    return tuple(out)


# --- addresses --------------------------------------------------------------

# A comment (RFC 5322 §3.2.2) in a display name, as getaddresses leaves it.
_COMMENT_RE = re.compile(r"\([^()]*\)")


def _addresses(message: Message, name: str, fallbacks: Sequence[str]) -> tuple[Address, ...]:
    result: list[Address] = []
    seen: set[str] = set()
    for raw_value in _header_raw_all(message, name)[:20]:
        for addr, display in _address_pairs(raw_value, fallbacks):
            if not addr or addr in seen:
                continue
            seen.add(addr)
            result.append(Address(addr=addr, name=display))
    return tuple(result)


def _address_pairs(raw_value: str, fallbacks: Sequence[str]) -> list[tuple[str, str]]:
    unfolded = _ENCODED_WORD_RE.sub(_mend_word, _FOLD_RE.sub("", raw_value[:MAX_HEADER_VALUE]))
    try:
        pairs = getaddresses([unfolded])
    except Exception:
        return []
    out: list[tuple[str, str]] = []
    for display, addr in pairs:
        addr = _repair_address(_clean_line(_raw_text(addr, fallbacks)).strip("<>").lower())
        out.append((addr, _display_name(display, unfolded, fallbacks)))
    return out


_Q_SPECIALS = {c: f"={ord(c):02X}" for c in ' ,;:<>@"()[]\\'}
_Q_SPECIALS[" "] = "_"


def _mend_word(match: re.Match[str]) -> str:
    """An encoded-word holding spaces or specials ("=?iso-8859-1?Q?B=FCrling,
    =20Andreas?=") is cut apart by the address parser. RFC 2047 §5(3) forbids
    them there; re-encode them so the word stays one atom (Q), or drop the
    stray whitespace (B, whose alphabet has neither)."""
    charset, encoding, encoded = match.groups()
    if encoding in "bB":
        encoded = "".join(encoded.split())
    else:
        encoded = "".join(_Q_SPECIALS.get(c, c) for c in encoded)
    return f"=?{charset}?{encoding}?{encoded}?="


def _display_name(display: str, raw_value: str, fallbacks: Sequence[str]) -> str:
    """The decoded display name. In ``Name (comment) <addr>`` the comment is
    not part of the phrase (RFC 5322 §3.2.2, §3.4); getaddresses keeps it,
    so drop it unless the name was quoted or the comment is all there is."""
    if "(" in display and f'"{display}"' not in raw_value:
        stripped = " ".join(_COMMENT_RE.sub(" ", display).split())
        if stripped:
            display = stripped
    return _clean_line(decode_value(display, fallbacks))


def _sender(message: Message, fallbacks: Sequence[str]) -> Address | None:
    """The From mailbox. When From holds no usable address (missing, "<>",
    a bare name), the author is reached through Reply-To (RFC 5322 §3.6.2),
    else Sender, else the envelope Return-Path (RFC 5321 §4.4); the From
    display name is kept when the stand-in has none."""
    from_name = ""
    for raw_value in _header_raw_all(message, "from")[:20]:
        for addr, display in _address_pairs(raw_value, fallbacks):
            if addr:
                return Address(addr=addr, name=display)
            from_name = from_name or display
    for name in ("reply-to", "sender", "return-path"):
        for addr, display in (
            pair
            for v in _header_raw_all(message, name)[:20]
            for pair in _address_pairs(v, fallbacks)
        ):
            if addr:
                return Address(addr=addr, name=display or from_name)
    return None


# An RFC 5322 §3.4.1 domain: dot-atom labels, or a bracketed literal.
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_DOMAIN_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?|\[[^\[\]\s]+\]")


def _repair_address(addr: str) -> str:
    """A usable addr-spec, or "". Broken clients write "test test@example.com"
    or list two addresses without a comma; keep the token that is an address.
    A quoted local part (RFC 5322 §3.4.1) may legally hold spaces, and a
    domain need not hold a dot ("user@localhost")."""
    if addr.startswith('"') and '"@' in addr:
        return addr
    if " " in addr:
        tokens = [t for t in addr.split() if "@" in t]
        addr = tokens[0] if tokens else ""
    local, at, domain = addr.rpartition("@")
    if not at or not local or any(c in addr for c in "<>,;()"):
        return ""
    if not _DOMAIN_RE.fullmatch(domain) and not _is_idn(domain):
        return ""
    return addr


def _is_idn(domain: str) -> bool:
    """An internationalised domain (RFC 6531) written in Unicode."""
    return not domain.isascii() and "." in domain and not any(c.isspace() for c in domain)


def _ids(value: str) -> list[str]:
    found = _MSGID_RE.findall(value)
    if not found and value.strip():
        # Some clients drop the angle brackets (RFC 5322 §3.6.4 obs-id-left).
        found = [tok for tok in value.split() if "@" in tok]
    return [f.strip("<>") for f in found[-MAX_IDS:]]


def _first_id(value: str) -> str:
    ids = _ids(value)
    return ids[0] if ids else ""


def _date(value: str) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(_FOLD_RE.sub("", value))
    except Exception:
        return None
    if parsed.tzinfo is None:
        # RFC 5322 §3.3: "-0000" means the zone is unknown; treat it as UTC.
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        return None


def _return_path(message: Message) -> str | None:
    value = _header_raw(message, "return-path")
    if not value:
        return None
    # RFC 5321 §4.4: "<>" is the null reverse-path used by bounces.
    inner = value.strip().strip("<>").strip().lower()
    return inner


def _safe_content_type(message: Message) -> str:
    try:
        return message.get_content_type()
    except Exception:
        return "text/plain"


# --- the MIME walk: body and attachments ------------------------------------


@dataclass
class _Body:
    plain: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    leaves: int = 0


_BODY_TYPES = frozenset({"text/plain", "text/html"})


def _walk(part: Message, body: _Body, fallbacks: Sequence[str], depth: int) -> None:
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
        branches: list[_Body] = []
        for child in payload[:MAX_PARTS]:
            if not isinstance(child, Message):
                continue
            branch = _Body(leaves=body.leaves)
            _walk(child, branch, fallbacks, depth + 1)
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
                _walk(child, body, fallbacks, depth + 1)
        return
    body.leaves += 1
    if ctype.startswith("multipart/"):
        # No boundary was found (RFC 2046 §5.1.1): the parts are one string,
        # still readable as text, so show them rather than hide them.
        body.plain.append(_lines(_part_text_decoded(part, "text/plain", fallbacks)))
        return
    filename = _filename(part, fallbacks)
    disposition = _disposition(part)
    if ctype in _BODY_TYPES and not filename and disposition != "attachment":
        text = _lines(_part_text_decoded(part, ctype, fallbacks))
        (body.html if ctype == "text/html" else body.plain).append(text)
        return
    body.attachments.append(
        _attachment(
            filename,
            ctype,
            _part_bytes(part, ctype),
            _header_raw(part, "content-id"),
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
        value = _param(_header_raw(part, header), param)
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
        name = _NAME_CONTROL_RE.sub(" ", name).strip()
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
    for piece in _split_params(_FOLD_RE.sub("", header_value[:MAX_HEADER_VALUE])):
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


def _part_text_decoded(part: Message, ctype: str, fallbacks: Sequence[str]) -> str:
    data = _part_bytes(part, ctype)
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


def _part_bytes(part: Message, ctype: str = "") -> bytes:
    """The decoded bytes of a leaf; never raises.

    Applies the Content-Transfer-Encoding (RFC 2045 §6) ourselves, reading
    its value case- and whitespace-insensitively, decoding base64 leniently
    and x-uuencode too; an unknown encoding leaves the bytes as they came.
    """
    # The stored payload, not get_payload(): that re-decodes 8-bit bytes
    # with replacement characters before we could choose their charset.
    payload = getattr(part, "_payload", None)
    if isinstance(payload, list):
        return _embedded_bytes(payload, ctype)
    if isinstance(payload, bytes):
        raw = payload
    elif isinstance(payload, str):
        try:
            raw = payload.encode("ascii", "surrogateescape")
        except UnicodeError:
            raw = payload.encode("utf-8", "surrogateescape")
    else:
        return b""
    cte = _header_raw(part, "content-transfer-encoding").strip().lower()
    try:
        if cte == "base64":
            decoded = _b64decode(raw)
            return raw if decoded is None else decoded
        if cte == "quoted-printable":
            return quopri.decodestring(raw)
        if cte in ("x-uuencode", "uuencode", "x-uue", "uue"):
            return _uudecode(raw)
    except (binascii.Error, ValueError):
        return raw
    return raw


_NOT_BASE64_RE = re.compile(rb"[^A-Za-z0-9+/]")


def _b64decode(raw: bytes) -> bytes | None:
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


def _embedded_bytes(payload: list[Any], ctype: str) -> bytes:
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
    return b"\n".join(blocks)


def _attachment(
    filename: str, content_type: str, payload: bytes, content_id: str, inline: bool
) -> Attachment:
    return Attachment(
        filename=filename[:255],
        content_type=content_type.lower()[:255],
        payload=payload,
        sha256=hashlib.sha256(payload).hexdigest(),
        content_id=_clean_line(content_id).strip("<>")[:255],
        inline=inline,
    )


# --- the MIME summary for classifiers ---------------------------------------


def _parts(message: Message) -> list[MimePart]:
    """A bounded summary of the MIME tree for the classifiers (RFC 3464 DSNs
    live in ``message/delivery-status`` and ``text/rfc822-headers`` parts)."""
    out: list[MimePart] = []
    try:
        walker = list(message.walk())
    except Exception:
        return out
    for part in walker[:MAX_PARTS]:
        try:
            ctype = part.get_content_type()
        except Exception:
            continue
        filename = ""
        try:
            filename = decode_value(part.get_filename() or "")
        except Exception:
            pass
        try:
            text = _part_text(part, ctype)
        except Exception:  # the stdlib's get_payload raises on some labels
            text = ""
        out.append(MimePart(content_type=ctype, text=text, filename=filename))
    return out


def _part_text(part: Message, ctype: str) -> str:
    if part.is_multipart():
        if ctype == "message/rfc822":
            inner = part.get_payload()
            if isinstance(inner, list) and inner:
                return _headers_text(inner[0])
        if ctype == "message/delivery-status":
            blocks = part.get_payload()
            if isinstance(blocks, list):
                return "\n\n".join(_headers_text(b) for b in blocks)[:MAX_PART_TEXT]
        return ""
    if ctype.startswith("multipart/") and isinstance(part.get_payload(), str):
        # No boundary was found: the whole body is one string; keep it for
        # the classifiers (a DSN with a broken boundary is still a DSN).
        return _decode_payload(part)[:MAX_PART_TEXT]
    if not (ctype.startswith("text/") or ctype.startswith("message/")):
        return ""
    return _decode_payload(part)[:MAX_PART_TEXT]


def _headers_text(msg: Any) -> str:
    try:
        return "\n".join(f"{k}: {v}" for k, v in msg.items())[:MAX_PART_TEXT]
    except Exception:
        return ""


def _decode_payload(part: Message) -> str:
    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    if not isinstance(data, bytes):
        payload = part.get_payload()
        return payload if isinstance(payload, str) else ""
    charset = "utf-8"
    try:
        charset = part.get_content_charset() or "utf-8"
    except Exception:
        pass
    try:
        return data.decode(charset, "replace")
    except (LookupError, UnicodeError, ValueError):  # ValueError: a NUL in the label
        return data.decode("utf-8", "replace")
