"""Raw RFC 5322 bytes -> a frozen :class:`InboundEmail`. Pure code.

The steps, each in a module named for it:

* the header block is repaired (unindented continuation lines, a stray
  first line) and each field bounded, here;
* mail-parser (the design card's parser) builds the MIME tree and names its
  defects; its header decoding is quadratic in a field's length (a 28 kB
  Subject of unterminated encoded-words took 1.3 s, 60 kB 13 s), so every
  field is cut to ``MAX_FIELD_FOR_PARSER`` bytes first; the stored raw mail
  is never changed. Its own body and attachment walk is not used: it invents
  names for unnamed attachments and folds attached messages into the body;
* header values are decoded in :mod:`helpdesk.ingest.headers`, charsets in
  :mod:`helpdesk.ingest.charsets`, and the body and attachments are picked by
  :mod:`helpdesk.ingest.mime`;
* addresses, Message-IDs, dates and a bounded MIME summary for the
  classifiers (RFC 3464 parts) are read here;
* a message above ``LAZY_ABOVE`` bytes is parsed as a skeleton
  (:mod:`helpdesk.ingest.skeleton`): its big leaf bodies are cut out before
  the parser sees it and read later from the raw bytes in place, so a 25 MB
  attachment costs its decoded size, not eight times the message.

Only :class:`BadMessageError` leaves this module, when not even the headers
can be read. Every loop is bounded, so hostile input costs linear time.
"""

from __future__ import annotations

import codecs
import email
import email.policy
import hashlib
import logging
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any

import mailparser

from helpdesk.errors import BadMessageError
from helpdesk.ingest.charsets import fallback_codecs
from helpdesk.ingest.headers import (
    ENCODED_WORD_RE,
    FOLD_RE,
    MAX_HEADER_VALUE,
    all_headers,
    clean_line,
    decode_value,
    decoded_header,
    header_raw,
    header_raw_all,
    normalise_lines,
    raw_text,
)
from helpdesk.ingest.html import html_to_text
from helpdesk.ingest.inbound import Address, InboundEmail, MimePart
from helpdesk.ingest.mime import MAX_DEPTH, MAX_PARTS, Body, Spans, walk_body
from helpdesk.ingest.skeleton import CUT_ABOVE, LAZY_ABOVE, cut_spans, make_skeleton

MAX_PART_TEXT = 65_536
MAX_BODY_TEXT = 1_000_000
MAX_IDS = 100
MAX_HEADER_BLOCK = 262_144
MAX_FIELD_FOR_PARSER = 8_192

# RFC 5322 §3.6.4: msg-id is "<" id-left "@" id-right ">"; real mail also
# carries ids without "@", so accept anything bracketed without whitespace.
_MSGID_RE = re.compile(r"<([^<>\s]{1,998})>")

# mail-parser logs every part type it does not render at WARNING; for a
# helpdesk those are routine (PGP parts, DSN parts), not operator news.
logging.getLogger("mailparser").setLevel(logging.ERROR)


def parse_email(
    raw: bytes, *, lazy_above: int = LAZY_ABOVE, cut_above: int = CUT_ABOVE
) -> InboundEmail:
    """Parse ``raw`` into an :class:`InboundEmail`; raise BadMessageError only
    when not even the headers can be read.

    A message larger than ``lazy_above`` bytes is parsed as a skeleton whose
    leaf bodies larger than ``cut_above`` are read from ``raw`` in place
    (:mod:`helpdesk.ingest.skeleton`); the result is the one the full parse
    gives, but for mail-parser's charset defects in the bodies it never saw.
    """
    # isspace, not strip(): no copy of a large message just to test it.
    if not raw or raw.isspace():
        raise BadMessageError("empty message")
    digest = hashlib.sha256(raw).hexdigest()
    if len(raw) > lazy_above:
        lazy = _parse_lazily(raw, digest, cut_above)
        if lazy is not None:
            return lazy
    repaired = _repair_header_block(raw)
    bounded = _bound_fields(repaired)
    message, defects = _parse_tree(bounded)
    if repaired is not raw:
        defects += ("HeaderBlockRepaired",)
    if bounded is not repaired:
        defects += ("HeaderFieldTooLong",)
    return _build(message, raw, digest, defects, {})


def _parse_tree(data: bytes) -> tuple[Message, tuple[str, ...]]:
    """The MIME tree of ``data`` and the kinds of defect found in it.

    Only the tree is kept: mail-parser's own result holds a copy of every
    attachment, which must not live on beside ours.
    """
    try:
        parsed = mailparser.parse_from_bytes(data)
        message = parsed.message
        defects = tuple(sorted(str(d) for d in parsed.defects_categories))
        del parsed
    except Exception:
        # A library exception is never our exception: the stdlib alone.
        try:
            # RecursionError (a hostile nesting depth) is an Exception too.
            message = email.message_from_bytes(data, policy=email.policy.compat32)
        except Exception as exc:
            raise BadMessageError(f"unparseable message: {exc!r}") from exc
        defects = (*_defects(message), "MailParserFailed")
    if message is None:
        raise BadMessageError("no message could be read")
    return message, defects


def _parse_lazily(raw: bytes, digest: str, cut_above: int) -> InboundEmail | None:
    """Parse the skeleton of a large message, or None to parse it in full.

    The header block is repaired and bounded on its own (both only ever
    touch the bytes before the first blank line), so the skeleton's header
    is the one the full parse would read.
    """
    blank = _BLANK_LINE_RE.search(raw, 0, MAX_HEADER_BLOCK)
    if blank is None:
        return None
    head = raw[: blank.end()]
    repaired = _repair_header_block(head)
    bounded = _bound_fields(repaired)
    if _header_end(repaired) == len(repaired):
        # _bound_fields on the whole message would look past this block.
        return None
    skeleton = make_skeleton(raw, bounded, blank.end(), digest[:16], cut_above)
    if skeleton is None:
        return None
    message, defects = _parse_tree(skeleton.data)
    spans = cut_spans(message, skeleton, raw)
    if spans is None:
        return None
    if repaired is not head:
        defects += ("HeaderBlockRepaired",)
    if bounded is not repaired:
        defects += ("HeaderFieldTooLong",)
    return _build(message, raw, digest, defects, spans)


def _header_end(raw: bytes) -> int:
    """Where :func:`_bound_fields` takes the header block to end."""
    end = raw.find(b"\n\n")
    end_crlf = raw.find(b"\r\n\r\n")
    return min(e for e in (end, end_crlf, len(raw)) if e >= 0)


def _bound_fields(raw: bytes) -> bytes:
    """``raw`` with every header field cut to MAX_FIELD_FOR_PARSER bytes.

    A field is a line plus its continuation lines (RFC 5322 §2.2.3); only the
    header block is touched, and only when some field is longer than that.
    """
    cut = _header_end(raw)
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


def _build(message: Message, raw: bytes, digest: str, defects: tuple[str, ...],
           spans: Spans) -> InboundEmail:
    fallbacks = _declared_charsets(message)
    body = Body()
    try:
        walk_body(message, body, fallbacks, 0, spans)
    except Exception:  # a pathological tree: keep what was collected
        pass
    plain = normalise_lines("\n".join(t for t in body.plain if t)).strip("\n")
    html = "\n".join(t for t in body.html if t)
    text = plain if plain.strip() else html_to_text(html) if html else ""
    return InboundEmail(
        message_id=_first_id(header_raw(message, "message-id")),
        subject=clean_line(decoded_header(message, "subject", fallbacks)),
        from_=_sender(message, fallbacks),
        to=_addresses(message, "to", fallbacks),
        cc=_addresses(message, "cc", fallbacks),
        reply_to=_addresses(message, "reply-to", fallbacks),
        delivered_to=_addresses(message, "delivered-to", fallbacks),
        x_original_to=_addresses(message, "x-original-to", fallbacks),
        in_reply_to=tuple(_ids(header_raw(message, "in-reply-to"))),
        references=tuple(_ids(header_raw(message, "references"))),
        date=_date(header_raw(message, "date")),
        return_path=_return_path(message),
        headers=all_headers(message, fallbacks),
        text=text[:MAX_BODY_TEXT],
        html=html[:MAX_BODY_TEXT],
        content_type=_safe_content_type(message),
        parts=tuple(_parts(message, spans)),
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


# --- addresses --------------------------------------------------------------

# A comment (RFC 5322 §3.2.2) in a display name, as getaddresses leaves it.
_COMMENT_RE = re.compile(r"\([^()]*\)")


def _addresses(message: Message, name: str, fallbacks: Sequence[str]) -> tuple[Address, ...]:
    result: list[Address] = []
    seen: set[str] = set()
    for raw_value in header_raw_all(message, name)[:20]:
        for addr, display in _address_pairs(raw_value, fallbacks):
            if not addr or addr in seen:
                continue
            seen.add(addr)
            result.append(Address(addr=addr, name=display))
    return tuple(result)


def _address_pairs(raw_value: str, fallbacks: Sequence[str]) -> list[tuple[str, str]]:
    unfolded = ENCODED_WORD_RE.sub(_mend_word, FOLD_RE.sub("", raw_value[:MAX_HEADER_VALUE]))
    try:
        pairs = getaddresses([unfolded])
    except Exception:
        return []
    out: list[tuple[str, str]] = []
    for display, addr in pairs:
        addr = _repair_address(clean_line(raw_text(addr, fallbacks)).strip("<>").lower())
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
    return clean_line(decode_value(display, fallbacks))


def _sender(message: Message, fallbacks: Sequence[str]) -> Address | None:
    """The From mailbox. When From holds no usable address (missing, "<>",
    a bare name), the author is reached through Reply-To (RFC 5322 §3.6.2),
    else Sender, else the envelope Return-Path (RFC 5321 §4.4); the From
    display name is kept when the stand-in has none."""
    from_name = ""
    for raw_value in header_raw_all(message, "from")[:20]:
        for addr, display in _address_pairs(raw_value, fallbacks):
            if addr:
                return Address(addr=addr, name=display)
            from_name = from_name or display
    for name in ("reply-to", "sender", "return-path"):
        for addr, display in (
            pair
            for v in header_raw_all(message, name)[:20]
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
    # 8-bit bytes arrive as surrogate escapes (header_raw), which no codec
    # will write (the dedup key, the database); RFC 6532 §3.2 lets ids carry
    # UTF-8.
    value = raw_text(value, ())
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
        parsed = parsedate_to_datetime(FOLD_RE.sub("", value))
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
    value = raw_text(header_raw(message, "return-path"), ())
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


# --- the MIME summary for classifiers ---------------------------------------


def _parts(message: Message, spans: Spans) -> list[MimePart]:
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
            text = _part_text(part, ctype, spans)
        except Exception:  # the stdlib's get_payload raises on some labels
            text = ""
        out.append(MimePart(content_type=ctype, text=text, filename=filename))
    return out


def _part_text(part: Message, ctype: str, spans: Spans) -> str:
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
    token = getattr(part, "_payload", None)
    cut = spans.get(token) if spans and isinstance(token, str) else None
    if cut is None:
        return _decode_payload(part)[:MAX_PART_TEXT]
    # A text body cut out of a large message. Unless a transfer encoding
    # must be undone, get_payload(decode=True) would give its bytes as they
    # are, and only the start of their text is kept: decode just that much.
    cte = str(part.get("content-transfer-encoding", "")).lower()
    if cte not in _STDLIB_DECODED:
        start = _text_start(cut, _charset_or_utf8(part), MAX_PART_TEXT)
        if start is not None:
            return start
    # Else hand the part its text for the one decode the stdlib makes (it
    # undoes base64 and quoted-printable its own way), as the full parse
    # held it, then take it back.
    stored = vars(part)  # _payload is the stdlib's private slot, not typed
    stored["_payload"] = bytes(cut).decode("ascii", "surrogateescape")
    try:
        return _decode_payload(part)[:MAX_PART_TEXT]
    finally:
        stored["_payload"] = token


# The transfer encodings Message.get_payload(decode=True) undoes, compared
# as it compares them (lower-cased, not stripped).
_STDLIB_DECODED = frozenset({"quoted-printable", "base64", "x-uuencode", "uuencode", "uue",
                             "x-uue"})
_TEXT_CHUNK = 1 << 16


def _text_start(data: memoryview, charset: str, limit: int) -> str | None:
    """``bytes(data).decode(charset, "replace")[:limit]``, falling back to
    UTF-8 as _decode_payload does, decoding only as far as ``limit``
    characters need; None for a codec without an incremental decoder.

    An incremental decoder emits only characters no later byte can change,
    so the text it has given when it stops is the start of the whole text.
    """
    for codec in (charset, "utf-8"):
        try:
            info = codecs.lookup(codec)
            # bytes.decode refuses bytes-to-bytes codecs ("hex") the same way.
            if not getattr(info, "_is_text_encoding", True):
                raise LookupError(f"{codec!r} is not a text encoding")
            if info.incrementaldecoder is None:
                return None
            decoder = info.incrementaldecoder("replace")
            out: list[str] = []
            size = 0
            for start in range(0, len(data), _TEXT_CHUNK):
                stop = start + _TEXT_CHUNK
                text = decoder.decode(bytes(data[start:stop]), final=stop >= len(data))
                out.append(text)
                size += len(text)
                if size >= limit:
                    break
            return "".join(out)[:limit]
        except (LookupError, UnicodeError, ValueError):  # as in _decode_payload
            continue
    return ""


def _charset_or_utf8(part: Message) -> str:
    try:
        return part.get_content_charset() or "utf-8"
    except Exception:
        return "utf-8"


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
