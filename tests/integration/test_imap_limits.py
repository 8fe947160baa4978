"""What an IMAP server may make the source hold: a bounded amount.

Dovecot never lies about a message's size, never leaves out RFC822.SIZE and
never sends an endless line, so these tests talk to a small IMAP server of
their own (RFC 3501, just enough of it: greeting, CAPABILITY, LOGIN, CREATE,
SELECT, NOOP, UID SEARCH, UID FETCH, UID MOVE, LOGOUT) on a real socket,
which can be told to misbehave.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from helpdesk.ingest.imap import MAX_LINE, ImapError, ImapSource, header_section
from helpdesk.ingest.pipeline import Pipeline
from helpdesk.settings import InboundSettings
from tests.support.config import imap_inbound, make_app, write_config
from tests.support.dovecot import ImapAccount
from tests.support.mail import make_mail

CAP = 20_000  # the source's fetch limit in these tests
_FETCH_RE = re.compile(r"UID FETCH (\S+) \((.*)\)$", re.IGNORECASE)
_PARTIAL_RE = re.compile(r"BODY\.PEEK\[\]<0\.(\d+)>", re.IGNORECASE)
_CHUNK = b"x" * (1 << 20)


class FakeImap:
    """One mailbox of ``messages`` by UID, served to any login.

    ``announce`` makes BODY[] of a UID a literal of that length: the
    message, then filler (a server that says one size and sends another).
    ``sizes=False`` leaves RFC822.SIZE out of the answers. ``endless_search``
    answers UID SEARCH with a line that never ends (up to ``endless_limit``
    bytes). ``junk_literal`` adds a literal of that length to the
    RFC822.SIZE answer. ``commands`` records what the client sent,
    ``body_bytes`` how many bytes of bodies (or the endless line) it was sent.
    """

    def __init__(self, messages: dict[int, bytes], *, announce: dict[int, int] | None = None,
                 sizes: bool = True, endless_search: bool = False,
                 junk_literal: int = 0) -> None:
        self.messages = messages
        self.announce = announce or {}
        self.sizes = sizes
        self.endless_search = endless_search
        self.endless_limit = 16 * MAX_LINE
        self.junk_literal = junk_literal
        self.commands: list[str] = []
        self.body_bytes = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def account(self) -> ImapAccount:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return ImapAccount(host, port, "support@example.test", "secret")

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            writer.write(b"* OK [CAPABILITY IMAP4rev1 MOVE] fake IMAP ready\r\n")
            while line := await reader.readline():
                tag, _, command = line.decode().rstrip("\r\n").partition(" ")
                self.commands.append(command)
                if not await self._answer(writer, tag, command):
                    break
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass  # the client dropped the connection, or the test is over
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()
            self._tasks.discard(task)

    async def _answer(self, writer: asyncio.StreamWriter, tag: str, command: str) -> bool:
        word = command.split(" ", 1)[0].upper()
        if word == "CAPABILITY":
            writer.write(b"* CAPABILITY IMAP4rev1 MOVE\r\n")
        elif word == "LOGOUT":
            writer.write(f"* BYE\r\n{tag} OK LOGOUT done\r\n".encode())
            return False
        elif word in ("SELECT", "EXAMINE"):
            writer.write(f"* {len(self.messages)} EXISTS\r\n"
                         "* OK [UIDVALIDITY 7] UIDs valid\r\n".encode())
        elif command.upper().startswith("UID SEARCH"):
            if self.endless_search:
                writer.write(b"* SEARCH")
                while self.body_bytes < self.endless_limit:
                    writer.write(b" 1" * (len(_CHUNK) // 2))
                    self.body_bytes += len(_CHUNK)
                    await writer.drain()
                return True  # nor ever a CRLF
            uids = " ".join(str(u) for u in self.messages)
            writer.write(f"* SEARCH {uids}\r\n".encode())
        elif command.upper().startswith("UID FETCH"):
            await self._fetch(writer, command)
        writer.write(f"{tag} OK {word} done\r\n".encode())
        return True

    async def _fetch(self, writer: asyncio.StreamWriter, command: str) -> None:
        match = _FETCH_RE.search(command)
        assert match, command
        wanted, items = _uids(match.group(1)), match.group(2).upper()
        for seq, (uid, raw) in enumerate(sorted(self.messages.items()), start=1):
            if uid not in wanted:
                continue
            if "RFC822.SIZE" in items:
                size = f" RFC822.SIZE {len(raw)}" if self.sizes else ""
                if self.junk_literal:
                    writer.write(f"* {seq} FETCH (UID {uid}{size} X-JUNK {{{self.junk_literal}}}"
                                 "\r\n".encode())
                    await self._send(writer, b"", self.junk_literal)
                    writer.write(b")\r\n")
                else:
                    writer.write(f"* {seq} FETCH (UID {uid}{size})\r\n".encode())
                continue
            partial = _PARTIAL_RE.search(items)
            if "BODY.PEEK[HEADER]" in items:
                name, data, length = "BODY[HEADER]", header_section(raw), 0
            elif partial:  # RFC 3501 §6.4.5: at most that many octets
                name, data = "BODY[]<0>", raw[:int(partial.group(1))]
                length = len(data)
            else:
                name, data = "BODY[]", raw
                length = self.announce.get(uid, len(raw))
            length = length or len(data)
            writer.write(f"* {seq} FETCH (UID {uid} {name} {{{length}}}\r\n".encode())
            await self._send(writer, data, length)
            writer.write(b")\r\n")

    async def _send(self, writer: asyncio.StreamWriter, data: bytes, length: int) -> None:
        """``length`` bytes: ``data``, then filler; a chunk at a time, as a
        server streams a large literal."""
        writer.write(data[:length])
        left = length - min(len(data), length)
        self.body_bytes += length - left
        while left:
            piece = _CHUNK if left >= len(_CHUNK) else _CHUNK[:left]
            writer.write(piece)
            left -= len(piece)
            self.body_bytes += len(piece)
            await writer.drain()


def _uids(spec: str) -> set[int]:
    out: set[int] = set()
    for part in spec.split(","):
        first, _, last = part.partition(":")
        out.update(range(int(first), int(last or first) + 1))
    return out


def _source(server: FakeImap) -> ImapSource:
    account = server.account
    cfg = InboundSettings(kind="imap", host=account.host, port=account.port, security="none",
                          username=account.user, password=account.password, timeout=5)
    return ImapSource(cfg, CAP)


def _mail(**fields: str) -> bytes:
    # An IMAP server hands out messages with CRLF line ends (RFC 3501 §4.3).
    return make_mail(**fields).replace(b"\n", b"\r\n")


def _big_mail(size: int) -> bytes:
    return _mail(message_id="<big@client.test>", subject="Huge attachment",
                 body="lorem ipsum dolor sit amet\n" * (size // 27))


@pytest.fixture
async def serve() -> AsyncIterator[list[FakeImap]]:
    servers: list[FakeImap] = []
    yield servers
    for server in servers:
        await server.stop()


async def _started(servers: list[FakeImap], server: FakeImap) -> FakeImap:
    await server.start()
    servers.append(server)
    return server


async def test_a_huge_literal_is_read_through_keeping_no_more_than_the_limit(
    serve: list[FakeImap], tmp_path: Path,
) -> None:
    """RFC822.SIZE says the mail is small, and BODY[] then announces 50 MB.
    The literal is read to its end, so the connection stays in step, but
    no more than the limit is held; the mail is quarantined as too large,
    with its headers."""
    raw = _mail(message_id="<liar@client.test>", subject="Small, it says")
    server = await _started(serve, FakeImap({5: raw}, announce={5: 50_000_000}))
    source = _source(server)
    await source.open()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        (fetched,) = await source.fetch(10)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    try:
        assert server.body_bytes == 50_000_000  # it all came down the wire
        assert peak < 8 * MAX_LINE, f"{peak} bytes held at the peak"
        assert fetched.too_large and fetched.uid == 5
        assert fetched.raw == header_section(raw)
        assert await source.waiting_uids() == [5]  # still in step with the server
    finally:
        await source.close()
    config = write_config(tmp_path, inbound=imap_inbound(server.account, max_fetch_bytes=CAP),
                          helpdesk={"max_message_size": CAP})
    app = make_app(config)
    pipeline = Pipeline(app)
    try:
        (outcome,) = pipeline.process([fetched])
        assert (outcome.status, outcome.detail) == ("quarantined", "too_large")
    finally:
        pipeline.close()
        app.dispose()


async def test_mail_without_rfc822_size_is_not_fetched_whole(serve: list[FakeImap]) -> None:
    """No RFC822.SIZE: a partial fetch of one byte beyond the limit tells a
    large mail from a small one without reading the large one whole."""
    big, small = _big_mail(3_000_000), _mail(message_id="<small@client.test>")
    server = await _started(serve, FakeImap({5: big, 6: small}, sizes=False))
    source = _source(server)
    await source.open()
    try:
        fetched = {f.uid: f for f in await source.fetch(10)}
    finally:
        await source.close()
    bodies = [c for c in server.commands if "BODY" in c.upper()]
    assert bodies == [f"UID FETCH 5:6 (UID BODY.PEEK[]<0.{CAP + 1}>)"]
    assert server.body_bytes <= CAP + 1 + len(small)
    assert fetched[5].too_large and fetched[5].raw == header_section(big)
    assert not fetched[6].too_large and fetched[6].raw == small


async def test_an_endless_line_drops_the_connection(serve: list[FakeImap]) -> None:
    server = await _started(serve, FakeImap({5: _mail()}, endless_search=True))
    source = _source(server)
    await source.open()
    try:
        with pytest.raises(ImapError, match="without a CRLF"):
            await asyncio.wait_for(source.fetch(10), 4)
        assert not source.is_open  # so the ingester reconnects
    finally:
        await source.close()
    assert server.body_bytes < server.endless_limit  # cut off before the server stopped


async def test_a_huge_literal_outside_a_body_fetch_drops_the_connection(
    serve: list[FakeImap],
) -> None:
    server = await _started(serve, FakeImap({5: _mail()}, junk_literal=50_000_000))
    source = _source(server)
    await source.open()
    try:
        with pytest.raises(ImapError, match="literal of 50000000 bytes"):
            await asyncio.wait_for(source.fetch(10), 4)
        assert not source.is_open
    finally:
        await source.close()
    assert server.body_bytes < 50_000_000
