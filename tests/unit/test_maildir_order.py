"""Maildir mail is taken in arrival order, which its file names give only when
their numbers are compared as numbers."""

from __future__ import annotations

import asyncio
from pathlib import Path

from helpdesk.ingest.maildir import MaildirSource, arrival_key

# As Python's mailbox module and MTAs name them: seconds, then microseconds
# and a counter, neither zero-padded.
ARRIVED = [
    "1733569000.M98765P4242Q9.mx",
    "1733569000.M123456P4242Q10.mx",
    "1733569000.M123456P4242Q11.mx",
    "1733569001.M5P4242Q12.mx",
    "1733569001.M5P4242Q12.mx:2,S",
]


def test_names_sort_in_arrival_order() -> None:
    assert sorted(reversed(ARRIVED), key=arrival_key) == ARRIVED
    assert sorted(ARRIVED) != ARRIVED  # as text they do not


def test_the_source_takes_mail_in_arrival_order(tmp_path: Path) -> None:
    for sub in ("new", "cur", "tmp"):
        (tmp_path / sub).mkdir()
    for i, name in enumerate(ARRIVED):
        folder = "cur" if ":2," in name else "new"
        (tmp_path / folder / name).write_bytes(f"Subject: {i}\r\n\r\nbody\r\n".encode())
    fetched = asyncio.run(MaildirSource(str(tmp_path), 1 << 20).fetch(10))
    assert [f.raw.split(b"\r\n")[0] for f in fetched] == [
        f"Subject: {i}".encode() for i in range(len(ARRIVED))]
