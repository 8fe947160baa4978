"""Composing outbound mail from data. Pure code: no clock, no I/O.

Headers are built by the email library (``formataddr``, ``Header``) from
data, never pasted together. Every value first has its line breaks folded to
spaces, so a hostile subject or display name can never start a header of its
own (RFC 5322 §2.2); addresses are validated before use. The bytes are
written by ``helpdesk.wire``, not by ``email.generator``: flattening a message
tree cost most of composing a mail. Header values that need folding or RFC
2047 encoding are folded by the compat32 policy below; the modern header
registry re-parses each value and cost more than everything else.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.policy import Compat32
from email.utils import format_datetime, formataddr

from helpdesk import wire
from helpdesk.ingest.inbound import Address, Attachment

LOOP_HEADER = "X-Helpdesk-Loop"


# compat32 folding at 78 columns with CRLF line ends (RFC 5322 §2.1), for the
# header values ``wire.format_header`` cannot write as they are.
_WIRE = Compat32(linesep="\r\n")
# Line ends as str.splitlines() sees them (FS, GS and RS included: the email
# library folds there), and NUL: no value can end up on two lines.
_BREAKS = re.compile(r"[\r\n\x00\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]+")


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
    attachments: tuple[Attachment, ...] = ()
    # RFC 3834 §5: "auto-replied" answers a message to its sender;
    # "auto-generated" is anything else a program sends (notices, reminders).
    auto_submitted: str = "auto-replied"


def one_line(value: str) -> str:
    """Header-safe text: every line break becomes a space."""
    return " ".join(_BREAKS.sub(" ", value).split())


class UndeliverableAddressError(ValueError):
    """An address we cannot put in a header or an SMTP envelope."""


def is_deliverable(addr: Address) -> bool:
    """Whether ``addr`` can be put in a header and an envelope."""
    try:
        _header_address(addr)
    except UndeliverableAddressError:
        return False
    return True


def _header_address(addr: Address) -> str:
    """``Name <addr>`` with the name RFC 2047-encoded when it is not ASCII."""
    local, _, domain = addr.addr.rpartition("@")
    quoted = len(local) > 1 and local.startswith('"') and local.endswith('"')
    bare = local[1:-1] if quoted else local
    if (
        not bare
        or not domain
        or _BREAKS.search(addr.addr)
        # No control character belongs in an address (RFC 5321 §4.1.2), and
        # FS/GS/RS would end the line for the email library's folding.
        or any(c < " " or c == "\x7f" for c in addr.addr)
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


# RFC 5322 §3.6.4: an id is printable US-ASCII. RFC 6532 lets UTF-8 in only
# over SMTPUTF8, which is not assumed of the relay; and a client's 8-bit id
# copied out (U+2028 reads as a line break to some parsers) is not ours to send.
_WIRE_ID_RE = re.compile(r"[!-;=?-~]{1,995}")


def _bracket(ids: Sequence[str]) -> str:
    bare = (i.strip("<>") for i in ids)
    return " ".join(f"<{i}>" for i in bare if _WIRE_ID_RE.fullmatch(i))


def compose(draft: Draft) -> Outgoing:
    if not draft.to:
        raise ValueError("a mail needs at least one recipient")
    if draft.html:
        body = wire.encode_alternative(draft.text, draft.html)
    else:
        body = wire.encode_plain(draft.text)
    if draft.attachments:
        body = wire.encode_mixed(body, [(a.filename, a.content_type, a.payload)
                                        for a in draft.attachments])
    subject = one_line(draft.subject)
    return Outgoing(
        purpose=draft.purpose,
        automatic=draft.automatic,
        envelope_from=draft.envelope_from or draft.from_addr.addr,
        recipients=tuple(dict.fromkeys(a.addr for a in (*draft.to, *draft.cc))),
        message_id=one_line(draft.message_id).strip("<>"),
        subject=subject,
        text=draft.text,
        raw=wire.serialize(_headers(draft, subject), body, _WIRE),
    )


def _headers(draft: Draft, subject: str) -> list[tuple[str, wire.HeaderValue]]:
    """The header fields after the MIME ones, in the order they are written."""
    headers: list[tuple[str, wire.HeaderValue]] = [
        ("From", _header_address(draft.from_addr)),
        ("To", ", ".join(_header_address(a) for a in draft.to)),
    ]
    if draft.cc:
        headers.append(("Cc", ", ".join(_header_address(a) for a in draft.cc)))
    if draft.reply_to is not None:
        headers.append(("Reply-To", _header_address(draft.reply_to)))
    headers.append(("Subject", _text_header(subject)))
    headers.append(("Date", format_datetime(draft.date)))
    headers.append(("Message-ID", f"<{one_line(draft.message_id).strip('<>')}>"))
    if parent := _bracket([draft.in_reply_to]):
        headers.append(("In-Reply-To", parent))
    refs = list(draft.references)
    if draft.in_reply_to and draft.in_reply_to not in refs:
        refs.append(draft.in_reply_to)
    if chain := _bracket(refs[-20:]):
        # RFC 5322 §3.6.4: References is the parent's References plus the parent.
        headers.append(("References", chain))
    if draft.automatic:
        # RFC 3834 §5: mark automatic responses so well-behaved robots stay quiet;
        # X-Auto-Response-Suppress asks Exchange not to answer us with an OOF.
        headers.append(("Auto-Submitted", draft.auto_submitted))
        headers.append(("X-Auto-Response-Suppress", "All"))
        headers.append(("Precedence", "bulk"))
    headers.append((LOOP_HEADER, _text_header(draft.loop_value)))
    return headers
