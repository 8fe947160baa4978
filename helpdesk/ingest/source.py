"""What every inbound source hands the pipeline, and what it is told back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Fetched:
    """One message as fetched, before anything is parsed.

    ``handle`` is the source's own name for it (an IMAP UID, a Maildir key),
    used to acknowledge it after the commit.
    """

    source: str
    handle: str
    raw: bytes
    uidvalidity: int | None = None
    uid: int | None = None
    too_large: bool = False  # only the headers were fetched


@dataclass(frozen=True)
class Acknowledgement:
    processed: tuple[Fetched, ...]
    quarantined: tuple[Fetched, ...]


class Source(Protocol):
    key: str
    # Whether acknowledging processed mail a second time, from another
    # daemon, changes nothing: true where it is only flagged where it lies.
    # (A second MOVE of one message from two sessions can leave two copies.)
    is_processed_ack_repeatable: bool

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def fetch(self, limit: int, skip: frozenset[str] = frozenset()) -> list[Fetched]:
        """Up to ``limit`` messages waiting to be processed (not yet
        acknowledged), leaving out the handles in ``skip`` (a batch still in
        hand, fetched again only if it is never acknowledged)."""
        ...

    async def acknowledge(self, ack: Acknowledgement) -> None:
        """Move handled messages out of the inbox; only called after the commit."""
        ...

    async def wait(self, timeout: float) -> None:
        """Return when new mail may be waiting, or after ``timeout`` seconds."""
        ...
