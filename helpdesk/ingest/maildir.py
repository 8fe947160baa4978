"""A local Maildir inbox: the embedded default source (I/O shell).

New mail is read from ``new/`` and ``cur/``; handled mail is moved into the
``.Processed`` or ``.Quarantine`` sub-folder (Maildir++ layout), never
deleted. Moves are ``rename(2)`` within one filesystem, so they are atomic.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

from helpdesk.ingest.source import Acknowledgement, Fetched

SUBDIRS = ("tmp", "new", "cur")


def ensure_maildir(path: Path) -> None:
    for sub in SUBDIRS:
        (path / sub).mkdir(parents=True, exist_ok=True)


_DIGITS = re.compile(r"(\d+)")


def arrival_key(name: str) -> tuple[str | int, ...]:
    """Sort key for Maildir file names in arrival order.

    Names start with the delivery time and carry counters ("1733569.M98765P12Q9.host"), but
    not zero-padded: compared as text, M123456 sorts before M98765 and Q10 before Q9 within a
    second, and a reply could be taken before the mail it answers. Runs of digits compare as
    numbers ("natural" order); the split alternates text and digits, so keys compare type for
    type."""
    return tuple(int(part) if i % 2 else part for i, part in enumerate(_DIGITS.split(name)))


class MaildirSource:
    def __init__(self, path: str, max_bytes: int, poll_interval: float = 1.0) -> None:
        self.path = Path(path)
        self.key = f"maildir:{self.path.resolve()}"
        self.max_bytes = max_bytes
        self.poll_interval = poll_interval
        # Maildir mail has no UID, so none is ever left to the daemon that
        # stored it (helpdesk.ingest.pipeline): this value is never consulted.
        self.is_processed_ack_repeatable = False

    async def open(self) -> None:
        ensure_maildir(self.path)
        for folder in (".Processed", ".Quarantine"):
            ensure_maildir(self.path / folder)

    async def close(self) -> None:
        return None

    async def fetch(self, limit: int, skip: frozenset[str] = frozenset()) -> list[Fetched]:
        return await asyncio.to_thread(self._fetch, limit, skip)

    def _waiting(self) -> list[Path]:
        files: list[Path] = []
        for sub in ("new", "cur"):
            with os.scandir(self.path / sub) as it:
                files.extend(Path(e.path) for e in it if e.is_file() and not e.name.startswith("."))
        return sorted(files, key=lambda p: arrival_key(p.name))

    def _fetch(self, limit: int, skip: frozenset[str]) -> list[Fetched]:
        out: list[Fetched] = []
        waiting = [p for p in self._waiting() if str(p.relative_to(self.path)) not in skip]
        for path in waiting[:limit]:
            try:
                size = path.stat().st_size
                with open(path, "rb") as fh:
                    raw = fh.read(self.max_bytes if size > self.max_bytes else -1)
            except FileNotFoundError:
                continue  # taken by another process meanwhile
            handle = str(path.relative_to(self.path))
            out.append(Fetched(self.key, handle, raw, too_large=size > self.max_bytes))
        return out

    async def acknowledge(self, ack: Acknowledgement) -> None:
        await asyncio.to_thread(self._acknowledge, ack)

    def _acknowledge(self, ack: Acknowledgement) -> None:
        for items, folder in ((ack.processed, ".Processed"), (ack.quarantined, ".Quarantine")):
            for item in items:
                src = self.path / item.handle
                name = src.name.split(":")[0]
                try:
                    os.replace(src, self.path / folder / "cur" / f"{name}:2,S")
                except FileNotFoundError:
                    continue

    async def wait(self, timeout: float) -> None:
        await asyncio.sleep(min(timeout, self.poll_interval))
