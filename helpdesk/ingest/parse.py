"""Raw RFC 5322 bytes -> a frozen :class:`InboundEmail`. Pure code.

mail-parser does the MIME walk, charset decoding and attachment extraction.
A library exception is never our exception: when mail-parser raises, the
message is parsed again with the standard library alone, and only when that
also fails does the caller see :class:`BadMessageError`.
"""

from __future__ import annotations

import base64
import email
import email.policy
import hashlib
import logging
import re
from datetime import UTC, datetime
from email.header import decode_header
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any

import mailparser

from helpdesk.errors import BadMessageError
from helpdesk.ingest.html import html_to_text
from helpdesk.ingest.inbound import Address, Attachment, InboundEmail, MimePart

# mail-parser logs every part type it does not render at WARNING; for a
# helpdesk those are routine (PGP parts, DSN parts), not operator news.
logging.getLogger("mailparser").setLevel(logging.ERROR)

MAX_HEADERS = 500
MAX_HEADER_VALUE = 8_192
MAX_PART_TEXT = 65_536
MAX_BODY_TEXT = 1_000_000
MAX_IDS = 100

# RFC 5322 §3.6.4: msg-id is "<" id-left "@" id-right ">"; real mail also
# carries ids without "@", so accept anything bracketed without whitespace.
_MSGID_RE = re.compile(r"<([^<>\s]{1,998})>")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def parse_email(raw: bytes) -> InboundEmail:
    """Parse ``raw`` into an :class:`InboundEmail`; raise BadMessageError only
    when not even the headers can be read."""
    if not raw.strip():
        raise BadMessageError("empty message")
    digest = hashlib.sha256(raw).hexdigest()
    try:
        mp = mailparser.parse_from_bytes(raw)
        message = mp.message
        text_plain = list(mp.text_plain)
        text_html = list(mp.text_html)
        attachments = tuple(_mailparser_attachments(mp.attachments))
        defects = tuple(str(d) for d in mp.defects_categories)
    except Exception as exc:  # third-party parser failure: fall back, never crash
        try:
            message = email.message_from_bytes(raw, policy=email.policy.compat32)
        except Exception as exc2:
            raise BadMessageError(f"unparseable message: {exc2!r}") from exc2
        text_plain, text_html, attachments = _stdlib_bodies(message)
        defects = (f"mailparser failed: {type(exc).__name__}",)
    if message is None:
        raise BadMessageError("no message could be read")
    return _build(message, raw, digest, text_plain, text_html, attachments, defects)


def _build(
    message: Message,
    raw: bytes,
    digest: str,
    text_plain: list[str],
    text_html: list[str],
    attachments: tuple[Attachment, ...],
    defects: tuple[str, ...],
) -> InboundEmail:
    headers = _headers(message)
    plain = "\n".join(t for t in text_plain if t).strip("\r\n")
    html = "\n".join(t for t in text_html if t)
    text = plain if plain.strip() else html_to_text(html) if html else ""
    return InboundEmail(
        message_id=_first_id(_header_raw(message, "message-id")),
        subject=_clean_line(_decoded(message, "subject")),
        from_=next(iter(_addresses(message, "from")), None),
        to=_addresses(message, "to"),
        cc=_addresses(message, "cc"),
        reply_to=_addresses(message, "reply-to"),
        delivered_to=_addresses(message, "delivered-to"),
        x_original_to=_addresses(message, "x-original-to"),
        in_reply_to=tuple(_ids(_header_raw(message, "in-reply-to"))),
        references=tuple(_ids(_header_raw(message, "references"))),
        date=_date(_header_raw(message, "date")),
        return_path=_return_path(message),
        headers=headers,
        text=text[:MAX_BODY_TEXT],
        html=html[:MAX_BODY_TEXT],
        content_type=_safe_content_type(message),
        parts=tuple(_parts(message)),
        attachments=attachments,
        size=len(raw),
        sha256=digest,
        defects=defects,
    )


def decode_value(value: Any) -> str:
    """Decode an RFC 2047 header value to text; never raises.

    Raw 8-bit header bytes (no encoded-words) are read as UTF-8 (RFC 6532),
    falling back to Latin-1, instead of becoming replacement characters.
    """
    if value is None:
        return ""
    try:
        chunks = decode_header(value)
    except Exception:
        chunks = [(str(value), None)]
    out: list[str] = []
    for chunk, charset in chunks:
        if isinstance(chunk, str):
            out.append(chunk.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
            continue
        out.append(_decode_bytes(chunk, charset))
    return "".join(out)


def _decode_bytes(data: bytes, charset: str | None) -> str:
    if charset and charset.lower() not in ("unknown-8bit", "x-unknown"):
        try:
            return data.decode(charset, "replace")
        except LookupError:
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _header_raw(message: Message, name: str) -> str:
    try:
        value = message.get(name)
    except Exception:
        return ""
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _decoded(message: Message, name: str) -> str:
    return decode_value(_header_raw(message, name))[:MAX_HEADER_VALUE]


def _clean_line(value: str) -> str:
    """One line of text: folded whitespace collapsed, control characters gone."""
    return " ".join(_CONTROL_RE.sub(" ", value).split())


def _headers(message: Message) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    try:
        items = message.items()
    except Exception:
        return ()
    for name, value in items[:MAX_HEADERS]:
        out.append((str(name).lower(), _clean_line(decode_value(value))[:MAX_HEADER_VALUE]))
    return tuple(out)


def _addresses(message: Message, name: str) -> tuple[Address, ...]:
    try:
        values = message.get_all(name) or []
    except Exception:
        return ()
    result: list[Address] = []
    seen: set[str] = set()
    for value in values[:20]:
        raw_value = value if isinstance(value, str) else str(value)
        try:
            pairs = getaddresses([raw_value[:MAX_HEADER_VALUE]])
        except Exception:
            continue
        for display, addr in pairs:
            addr = _repair_address(_clean_line(addr).strip("<>").lower())
            if not addr or addr in seen:
                continue
            seen.add(addr)
            result.append(Address(addr=addr, name=_clean_line(decode_value(display))))
    return tuple(result)


def _repair_address(addr: str) -> str:
    """A usable addr-spec, or "". Broken clients write "test test@example.com"
    or list two addresses without a comma; keep the token that is an address.
    A quoted local part (RFC 5322 §3.4.1) may legally hold spaces."""
    if addr.startswith('"') and '"@' in addr:
        return addr
    if " " in addr:
        tokens = [t for t in addr.split() if "@" in t]
        addr = tokens[0] if tokens else ""
    local, at, domain = addr.rpartition("@")
    if not at or not local or "." not in domain.strip(".") or any(c in addr for c in "<>,;()"):
        return ""
    return addr


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
        parsed = parsedate_to_datetime(value)
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


def _parts(message: Message) -> list[MimePart]:
    """A bounded summary of the MIME tree for the classifiers (RFC 3464 DSNs
    live in ``message/delivery-status`` and ``text/rfc822-headers`` parts)."""
    out: list[MimePart] = []
    try:
        walker = list(message.walk())
    except Exception:
        return out
    for part in walker[:200]:
        try:
            ctype = part.get_content_type()
        except Exception:
            continue
        filename = ""
        try:
            filename = decode_value(part.get_filename() or "")
        except Exception:
            pass
        out.append(MimePart(content_type=ctype, text=_part_text(part, ctype), filename=filename))
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
    except (LookupError, UnicodeError):
        return data.decode("utf-8", "replace")


def _mailparser_attachments(items: list[dict[str, Any]]) -> list[Attachment]:
    out: list[Attachment] = []
    for item in items:
        payload_text = item.get("payload") or ""
        if item.get("binary"):
            try:
                payload = base64.b64decode(payload_text)
            except Exception:
                payload = payload_text.encode("utf-8", "replace")
        else:
            payload = str(payload_text).encode("utf-8", "replace")
        disposition = str(item.get("content-disposition") or "").lower()
        out.append(
            _attachment(
                filename=str(item.get("filename") or ""),
                content_type=str(item.get("mail_content_type") or "application/octet-stream"),
                payload=payload,
                content_id=str(item.get("content-id") or ""),
                inline=disposition.startswith("inline"),
            )
        )
    return out


def _attachment(
    filename: str, content_type: str, payload: bytes, content_id: str, inline: bool
) -> Attachment:
    return Attachment(
        filename=_clean_line(decode_value(filename))[:255],
        content_type=content_type.lower()[:255],
        payload=payload,
        sha256=hashlib.sha256(payload).hexdigest(),
        content_id=content_id.strip().strip("<>")[:255],
        inline=inline,
    )


def _stdlib_bodies(message: Message) -> tuple[list[str], list[str], tuple[Attachment, ...]]:
    """The fallback walk used when mail-parser raised."""
    plain: list[str] = []
    html: list[str] = []
    attachments: list[Attachment] = []
    try:
        parts = list(message.walk())
    except Exception:
        parts = [message]
    for part in parts:
        if part.is_multipart():
            continue
        try:
            ctype = part.get_content_type()
            filename = part.get_filename()
            disposition = part.get_content_disposition()
        except Exception:
            continue
        if filename or disposition == "attachment" or not ctype.startswith("text/"):
            data = part.get_payload(decode=True)
            if isinstance(data, bytes):
                attachments.append(
                    _attachment(
                        filename or "",
                        ctype,
                        data,
                        str(part.get("content-id") or ""),
                        disposition == "inline",
                    )
                )
        elif ctype == "text/html":
            html.append(_decode_payload(part))
        else:
            plain.append(_decode_payload(part))
    return plain, html, tuple(attachments)
