"""Composing outbound mail from data. Pure code: no clock, no I/O.

Headers are built by the email library (``formataddr``, ``Header``) from
data, never pasted together. Every value first has its line breaks folded to
spaces, so a hostile subject or display name can never start a header of its
own (RFC 5322 §2.2); addresses are validated before use. We use the compat32
message classes: the modern header registry re-parses each value and cost
more than everything else in composing a mail.
"""

from __future__ import annotations

import quopri
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.policy import Compat32
from email.utils import format_datetime, formataddr
from typing import Any

from helpdesk.ingest.inbound import Address

LOOP_HEADER = "X-Helpdesk-Loop"


class _Wire(Compat32):
    """compat32 generation with CRLF line ends (RFC 5322 §2.1) and 78-column
    folding. A one-line ASCII header that fits needs no folding: writing it
    as is skips the Header round trip, half the cost of composing a mail."""

    def _fold(self, name: str, value: Any, sanitize: bool) -> str:
        if (isinstance(value, str) and value.isascii() and len(name) + 2 + len(value) <= 78
                and not _BREAKS.search(value) and " " * 2 not in value):
            return f"{name}: {value}{self.linesep}"
        return str(super()._fold(name, value, sanitize))  # type: ignore[misc]


_WIRE = _Wire(linesep="\r\n")
_BREAKS = re.compile(r"[\r\n\x00\x0b\x0c\x85\u2028\u2029]+")


@dataclass(frozen=True)
class Outgoing:
    """A composed mail ready for the outbox."""

    purpose: str
    automatic: bool
    envelope_from: str
    recipients: tuple[str, ...]
    message_id: str
    subject: str
    text: str
    raw: bytes

    @property
    def rcpt(self) -> str:
        return self.recipients[0] if self.recipients else ""


@dataclass(frozen=True)
class Draft:
    """Everything a mail needs; the composer turns it into bytes."""

    purpose: str
    from_addr: Address
    to: tuple[Address, ...]
    subject: str
    text: str
    message_id: str
    date: datetime
    automatic: bool
    loop_value: str
    cc: tuple[Address, ...] = ()
    reply_to: Address | None = None
    html: str = ""
    in_reply_to: str = ""
    references: tuple[str, ...] = ()
    envelope_from: str = ""


def one_line(value: str) -> str:
    """Header-safe text: every line break becomes a space."""
    return " ".join(_BREAKS.sub(" ", value).split())


class UndeliverableAddressError(ValueError):
    """An address we cannot put in a header or an SMTP envelope."""


def _header_address(addr: Address) -> str:
    """``Name <addr>`` with the name RFC 2047-encoded when it is not ASCII."""
    local, _, domain = addr.addr.rpartition("@")
    quoted = len(local) > 1 and local.startswith('"') and local.endswith('"')
    bare = local[1:-1] if quoted else local
    if (
        not bare
        or not domain
        or _BREAKS.search(addr.addr)
        or any(c in domain for c in ' <>,"')
        or (not quoted and any(c in local for c in ' <>,"'))
        or not addr.addr.isascii()  # SMTPUTF8 (RFC 6531) is not assumed of the relay
    ):
        raise UndeliverableAddressError(f"not a deliverable address: {addr.addr!r}")
    return formataddr((one_line(addr.name), addr.addr), charset="utf-8")


def _text_header(value: str) -> str | Header:
    """A one-line header value; non-ASCII text as an RFC 2047 Header, which
    the generator folds between encoded-words (§2)."""
    value = one_line(value)
    return value if value.isascii() else Header(value, "utf-8")


def _bracket(ids: Sequence[str]) -> str:
    return " ".join(f"<{one_line(i).strip('<>')}>" for i in ids if one_line(i).strip("<>"))


def compose(draft: Draft) -> Outgoing:
    if not draft.to:
        raise ValueError("a mail needs at least one recipient")
    msg: Message[Any, Any] = _body(draft.text, draft.html)
    msg["From"] = _header_address(draft.from_addr)
    msg["To"] = ", ".join(_header_address(a) for a in draft.to)
    if draft.cc:
        msg["Cc"] = ", ".join(_header_address(a) for a in draft.cc)
    if draft.reply_to is not None:
        msg["Reply-To"] = _header_address(draft.reply_to)
    subject = one_line(draft.subject)
    msg["Subject"] = _text_header(subject)
    msg["Date"] = format_datetime(draft.date)
    msg["Message-ID"] = f"<{one_line(draft.message_id).strip('<>')}>"
    if draft.in_reply_to:
        msg["In-Reply-To"] = _bracket([draft.in_reply_to])
    refs = list(draft.references)
    if draft.in_reply_to and draft.in_reply_to not in refs:
        refs.append(draft.in_reply_to)
    if refs:
        # RFC 5322 §3.6.4: References is the parent's References plus the parent.
        msg["References"] = _bracket(refs[-20:])
    if draft.automatic:
        # RFC 3834 §5: mark automatic responses so well-behaved robots stay quiet;
        # X-Auto-Response-Suppress asks Exchange not to answer us with an OOF.
        msg["Auto-Submitted"] = "auto-replied"
        msg["X-Auto-Response-Suppress"] = "All"
        msg["Precedence"] = "bulk"
    msg[LOOP_HEADER] = _text_header(draft.loop_value)
    recipients = tuple(dict.fromkeys(a.addr for a in (*draft.to, *draft.cc)))
    return Outgoing(
        purpose=draft.purpose,
        automatic=draft.automatic,
        envelope_from=draft.envelope_from or draft.from_addr.addr,
        recipients=recipients,
        message_id=one_line(draft.message_id).strip("<>"),
        subject=subject,
        text=draft.text,
        raw=msg.as_bytes(policy=_WIRE),
    )


def _body(text: str, html: str) -> Message:
    plain = _text_part(text, "plain")
    if not html:
        plain["MIME-Version"] = "1.0"
        return plain
    return MIMEMultipart("alternative", _subparts=[plain, _text_part(html, "html")])


def _text_part(text: str, subtype: str) -> Message:
    part = Message()
    part["Content-Type"] = f'text/{subtype}; charset="utf-8"'
    part["Content-Transfer-Encoding"] = "quoted-printable"
    part.set_payload(_qp(text))
    return part


def _qp(text: str) -> str:
    # RFC 2045 §6.7 quoted-printable keeps mostly-ASCII text readable on the wire.
    return quopri.encodestring(text.replace("\r\n", "\n").encode("utf-8")).decode("ascii")
