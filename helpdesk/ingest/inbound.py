"""The frozen value a parsed inbound mail becomes.

Everything downstream of parsing (classification, threading, SLA, storage)
works on these values only, never on ``email.message.Message`` objects, so
the pure core can be tested with plain data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Address:
    """One mailbox: ``addr`` is lower-cased for comparison, ``name`` decoded."""

    addr: str
    name: str = ""

    @property
    def domain(self) -> str:
        return self.addr.rpartition("@")[2]

    @property
    def local(self) -> str:
        return self.addr.rpartition("@")[0]


@dataclass(frozen=True, slots=True)
class Attachment:
    """An attachment's bytes and what the mail claimed about it.

    ``filename`` is whatever the sender wrote and is only ever displayed or
    stored as data; it never becomes a filesystem path.
    """

    filename: str
    content_type: str
    payload: bytes
    sha256: str
    content_id: str = ""
    inline: bool = False

    @property
    def size(self) -> int:
        return len(self.payload)


@dataclass(frozen=True, slots=True)
class MimePart:
    """A leaf (or embedded message) of the MIME tree, kept for classifiers.

    ``text`` holds the decoded text of ``text/*`` and ``message/*`` parts
    (for ``message/rfc822`` the embedded headers), truncated to a bounded
    size; binary parts leave it empty.
    """

    content_type: str
    text: str = ""
    filename: str = ""


@dataclass(frozen=True, slots=True)
class InboundEmail:
    """A parsed inbound mail.

    Message-IDs are stored without angle brackets. ``headers`` keeps every
    header in order with lower-cased names and decoded values, for the
    classifiers that look at RFC 3834 / RFC 2369 headers.
    """

    message_id: str
    subject: str
    from_: Address | None
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    reply_to: tuple[Address, ...] = ()
    delivered_to: tuple[Address, ...] = ()
    x_original_to: tuple[Address, ...] = ()
    in_reply_to: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    date: datetime | None = None
    return_path: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    text: str = ""
    html: str = ""
    content_type: str = "text/plain"
    parts: tuple[MimePart, ...] = ()
    attachments: tuple[Attachment, ...] = ()
    size: int = 0
    sha256: str = ""
    defects: tuple[str, ...] = field(default=())

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        key = name.lower()
        for hname, value in self.headers:
            if hname == key:
                return value
        return None

    def header_all(self, name: str) -> tuple[str, ...]:
        key = name.lower()
        return tuple(value for hname, value in self.headers if hname == key)

    @property
    def recipients(self) -> tuple[Address, ...]:
        """Every address the mail was delivered to, in header order."""
        return self.to + self.cc + self.delivered_to + self.x_original_to

    @property
    def sender_addr(self) -> str:
        return self.from_.addr if self.from_ else ""
