"""Composing outbound mail from data. Pure code: no clock, no I/O.

Headers are set through ``email.message.EmailMessage`` with the SMTP policy,
which encodes non-ASCII per RFC 2047 and refuses CR/LF inside a value; we
also fold any CR/LF in data to spaces first, so a hostile subject or display
name can never start a header of its own (RFC 5322 §2.2).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

from helpdesk.ingest.inbound import Address

LOOP_HEADER = "X-Helpdesk-Loop"
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


def _header_address(addr: Address) -> HeaderAddress:
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
    return HeaderAddress(display_name=one_line(addr.name), username=bare, domain=domain)


def _bracket(ids: Sequence[str]) -> str:
    return " ".join(f"<{one_line(i).strip('<>')}>" for i in ids if one_line(i).strip("<>"))


def compose(draft: Draft) -> Outgoing:
    if not draft.to:
        raise ValueError("a mail needs at least one recipient")
    msg = EmailMessage(policy=SMTP)
    msg["From"] = _header_address(draft.from_addr)
    msg["To"] = [_header_address(a) for a in draft.to]
    if draft.cc:
        msg["Cc"] = [_header_address(a) for a in draft.cc]
    if draft.reply_to is not None:
        msg["Reply-To"] = _header_address(draft.reply_to)
    subject = one_line(draft.subject)
    msg["Subject"] = subject
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
    msg[LOOP_HEADER] = one_line(draft.loop_value)
    msg.set_content(draft.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    if draft.html:
        msg.add_alternative(draft.html, subtype="html", charset="utf-8", cte="quoted-printable")
    recipients = tuple(dict.fromkeys(a.addr for a in (*draft.to, *draft.cc)))
    return Outgoing(
        purpose=draft.purpose,
        automatic=draft.automatic,
        envelope_from=draft.envelope_from or draft.from_addr.addr,
        recipients=recipients,
        message_id=one_line(draft.message_id).strip("<>"),
        subject=subject,
        text=draft.text,
        raw=msg.as_bytes(),
    )
