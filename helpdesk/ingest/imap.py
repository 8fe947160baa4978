"""IMAP inbox through aioimaplib (I/O shell).

Messages are listed with UID SEARCH, fetched by UID set in batches with
BODY.PEEK[] (so fetching never marks them \\Seen, RFC 3501 §6.4.5), and only
after the pipeline has committed are they moved out: UID MOVE (RFC 6851),
or COPY + \\Deleted + UID EXPUNGE (RFC 4315) where MOVE is missing. New mail
is pushed with IDLE (RFC 2177) when the server offers it, else polled.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import ssl
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from aioimaplib import aioimaplib

from helpdesk.errors import SystemUnwellError
from helpdesk.hangup import hang_up
from helpdesk.ingest.source import Acknowledgement, Fetched
from helpdesk.settings import InboundSettings

log = logging.getLogger(__name__)

_FETCH_RE = re.compile(rb"^\d+ FETCH \((.*)$")
_UID_RE = re.compile(rb"UID (\d+)")
_SIZE_RE = re.compile(rb"RFC822\.SIZE (\d+)")
_LITERAL_RE = re.compile(rb"\{(\d+)\}$")
_UIDVALIDITY_RE = re.compile(rb"\[UIDVALIDITY (\d+)\]")
IDLE_RENEW = 25 * 60  # RFC 2177 §3: re-issue IDLE at least every 29 minutes
HEADER_ONLY = 64 * 1024
# The most the server may send in one piece outside a message fetched
# (BODY[], bounded by that fetch's own cap): a line not yet ended by CRLF,
# or a literal (RFC 3501 §4.3) in any other response. IMAP itself sets no
# limit. The longest line we ask for is the untagged SEARCH of the inbox,
# at most eight bytes a UID: 4 MiB holds some 500,000 waiting messages, a
# backlog beyond what a helpdesk's outage leaves, and is small beside the
# fetch limit (max_message_size, 25 MiB by default, plus headroom). Beyond
# it the server is broken or hostile, and the connection is dropped.
MAX_LINE = 4 * 1024 * 1024


class ImapError(SystemUnwellError):
    pass


@dataclass(frozen=True, slots=True)
class Literal:
    """A literal (RFC 3501 §4.3) of a FETCH response, among its lines:
    ``size`` is the length the server announced, ``data`` at most the
    command's cap of it."""

    data: bytes
    size: int

    @property
    def is_cut(self) -> bool:
        return self.size > len(self.data)


class LiteralFetch(aioimaplib.FetchCommand):  # type: ignore[misc]  # untyped library
    """FETCH whose literals are written straight into the bytes kept.

    aioimaplib collects a literal in a bytearray that grows as it arrives,
    and bytes() of it was a second whole copy: a 25 MB message was held
    twice, and freeing the first copy left the allocator serving later
    large buffers from the heap, where they stay resident. Here a literal
    is written into a BytesIO sized up front from its announced length
    (up to ``presize``: the length comes from the server), whose buffer
    ``getvalue`` hands over without a copy. It lands among the response
    lines as a :class:`Literal`, which, like aioimaplib's bytearray, is not
    ``bytes``: FetchCommand.wait_data counts parentheses only in the lines.

    No more than ``cap`` bytes of a literal are kept, whatever length the
    server announces: the rest is read, to stay in step with the stream,
    and dropped. The :class:`Literal` tells it was cut.
    """

    def __init__(self, tag: str, *args: str, cap: int, prefix: str = "",
                 loop: asyncio.AbstractEventLoop | None = None,
                 timeout: float | None = None) -> None:
        super().__init__(tag, *args, prefix=prefix, loop=loop, timeout=timeout)
        self._cap = cap
        self._literal: io.BytesIO | None = None
        self._wanted = 0
        self._got = 0

    def begin_literal_data(self, expected_size: int, literal_data: bytes = b"") -> bytes:
        buf = io.BytesIO()
        if 0 < expected_size <= self._cap:
            buf.seek(expected_size - 1)
            buf.write(b"\0")
            buf.seek(0)
        self._literal, self._wanted, self._got = buf, expected_size, 0
        return self.append_literal_data(literal_data)

    def wait_literal_data(self) -> bool:
        return self._literal is not None and self._got < self._wanted

    def append_literal_data(self, data: bytes) -> bytes:
        buf = self._literal
        if buf is None:
            return data
        take = min(self._wanted - self._got, len(data))
        keep = min(take, self._cap - self._got)
        if keep > 0:
            buf.write(memoryview(data)[:keep])
        self._got += take
        if self._got >= self._wanted:
            self._literal = None
            buf.truncate(min(self._got, self._cap))
            self.append_to_resp(Literal(buf.getvalue(), self._wanted))
        # As aioimaplib does for each chunk: a long literal is progress, not
        # a stalled command.
        self._reset_timer()
        return data[take:]


class _TooLong(Exception):
    """The server sent more in one piece than MAX_LINE allows."""


class _Protocol(aioimaplib.IMAP4ClientProtocol):  # type: ignore[misc]  # untyped library
    """aioimaplib's protocol without its debug line for each chunk received,
    which formats the whole chunk (``'Received : %s' % data``) before the
    logger is asked whether debug is on: 0.1 ms of the event loop's time
    for each message fetched, in the process that also stores them."""

    incomplete_line: bytes  # set by the library
    current_command: aioimaplib.Command | None
    pending_sync_command: aioimaplib.Command | None
    pending_async_commands: dict[str, aioimaplib.Command]
    transport: asyncio.Transport
    # Why we dropped the connection ourselves, told to the commands in flight.
    _failure: ImapError | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is None:
            exc = self._failure
        super().connection_lost(exc)
        # aioimaplib leaves the commands in flight to their timeout (30 s by
        # default) though no answer can come any more: fail them now, as
        # their timeout would, so the source reconnects at once. They stay
        # in the pending slots, as after a timeout: this client is dropped.
        for command in (self.pending_sync_command, *self.pending_async_commands.values()):
            if command is not None and not command._event.is_set():
                failure = ConnectionResetError(f"IMAP connection lost: {exc!r}")
                failure.__cause__ = exc
                command._exception = failure
                command.close(str(failure).encode(), "KO")
        # An IDLE sent but not yet answered with "+" waits for this event.
        self._idle_event.set()

    async def wait_async_pending_commands(self) -> None:
        # As the library's, but the waits' failures (a lost connection) are
        # collected here, not left for asyncio to log as never retrieved.
        await asyncio.gather(*(command.wait() for command in
                               self.pending_async_commands.values()), return_exceptions=True)

    def data_received(self, d: bytes) -> None:
        # The library's own body, less that line, and with bounds on what a
        # server may make us hold: see MAX_LINE.
        if self._failure is not None:
            return  # dropped: what was still buffered is not read
        try:
            self._handle_responses(self.incomplete_line + d, self._bounded_line,
                                   self.current_command)
            self.incomplete_line = b""
            self.current_command = None
        except aioimaplib.IncompleteRead as incomplete:
            self.current_command = incomplete.cmd
            self.incomplete_line = incomplete.data
            # Inside a literal the library keeps nothing here: only a line
            # still waiting for its CRLF grows (and is copied at each chunk).
            if len(incomplete.data) > MAX_LINE:
                self._fail(f"IMAP server sent over {MAX_LINE} bytes without a CRLF")
        except _TooLong as too_long:
            self._fail(str(too_long))

    def _bounded_line(self, line: bytes, current: aioimaplib.Command | None
                      ) -> aioimaplib.Command | None:
        """The library's line handler; and a literal the line announces
        (RFC 3501 §4.3) is refused above MAX_LINE unless the command it
        belongs to keeps only its own cap of it (a :class:`LiteralFetch`):
        the library would buffer any length."""
        command: aioimaplib.Command | None = self._handle_line(line, current)
        if line.endswith(b"}") and not isinstance(command, LiteralFetch):
            match = _LITERAL_RE.search(line)
            if match and int(match.group(1)) > MAX_LINE:
                raise _TooLong(f"IMAP server announced a literal of {int(match.group(1))} "
                               f"bytes outside a message fetch (at most {MAX_LINE})")
        return command

    def _fail(self, reason: str) -> None:
        log.warning("dropping the IMAP connection", extra={"reason": reason})
        self._failure = ImapError(reason)
        self.incomplete_line = b""
        self.transport.abort()  # connection_lost fails the commands in flight


class Client(aioimaplib.IMAP4):  # type: ignore[misc]  # untyped library
    """``aioimaplib.IMAP4`` on :class:`_Protocol`, for plain and TLS alike:
    TLS from the start when given an ``ssl_context``, as ``IMAP4_SSL``."""

    _idle_waiter: asyncio.TimerHandle | None  # set by the library

    def forget_idle(self) -> None:
        """Drop the IDLE renewal timer without sending DONE (the connection
        is gone); left running it would hold this client until it fired."""
        if self._idle_waiter is not None:
            self._idle_waiter.cancel()

    def create_client(self, host: str, port: int, loop: asyncio.AbstractEventLoop | None,
                      conn_lost_cb: Callable[[Exception | None], None] | None = None,
                      ssl_context: ssl.SSLContext | None = None) -> None:
        running = loop if loop is not None else asyncio.get_running_loop()
        self.protocol = _Protocol(running, conn_lost_cb)
        self._client_task = running.create_task(running.create_connection(
            lambda: self.protocol, host, port, ssl=ssl_context))


def uid_set(uids: Iterable[int]) -> str:
    """Compact a UID list into an IMAP sequence set (RFC 3501 §9: 1:3,7)."""
    ordered = sorted(set(uids))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}:{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def quote_mailbox(name: str) -> str:
    # RFC 3501 §4.3: quoted strings escape backslash and double quote.
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ImapSource:
    def __init__(self, cfg: InboundSettings, max_bytes: int) -> None:
        self.cfg = cfg
        self.key = cfg.source_key
        self.max_bytes = max_bytes
        self._client: Client | None = None
        self._lost = asyncio.Event()
        self.uidvalidity: int | None = None
        self.capabilities: frozenset[str] = frozenset()
        # "seen" marks processed mail \Seen (STORE is idempotent); quarantined
        # mail is moved in either mode.
        self.is_processed_ack_repeatable = cfg.acknowledge == "seen"

    # -- connection -------------------------------------------------------
    async def open(self) -> None:
        await self.close()
        self._lost = asyncio.Event()
        cfg = self.cfg
        context = (
            ssl.create_default_context(cafile=cfg.ca_file or None)
            if cfg.security in ("tls", "starttls")
            else None
        )
        lost = self._lost

        def on_lost(_exc: Exception | None) -> None:
            lost.set()

        client = Client(host=cfg.host, port=cfg.port, timeout=cfg.timeout, conn_lost_cb=on_lost,
                        ssl_context=context if cfg.security == "tls" else None)
        self._client = client
        try:
            await client.wait_hello_from_server()
            if cfg.security == "starttls":
                await self._starttls(client, context)
            response = await client.login(cfg.username, cfg.password)
            _check(response, "LOGIN")
            await client.protocol.capability()
            self.capabilities = frozenset(str(c).upper() for c in client.protocol.capabilities)
            for box in (cfg.processed_mailbox, cfg.quarantine_mailbox):
                if cfg.acknowledge == "move" or box == cfg.quarantine_mailbox:
                    # NO [ALREADYEXISTS] is the normal answer after the first run.
                    await client.create(quote_mailbox(box))
            await self._select()
        except (TimeoutError, OSError, aioimaplib.AioImapException) as exc:
            await self.close()
            raise ImapError(f"IMAP connect to {cfg.host}:{cfg.port} failed: {exc!r}") from exc

    async def _starttls(self, client: aioimaplib.IMAP4, context: ssl.SSLContext | None) -> None:
        # aioimaplib has no STARTTLS helper: send the command (RFC 3501 §6.2.1),
        # then upgrade the transport in place and ask for capabilities again,
        # since pre-TLS capabilities must be discarded.
        protocol = client.protocol
        command = aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)
        response = await asyncio.wait_for(protocol.execute(command), self.cfg.timeout)
        _check(response, "STARTTLS")
        loop = asyncio.get_running_loop()
        transport = await loop.start_tls(
            protocol.transport, protocol, context or ssl.create_default_context(
                cafile=self.cfg.ca_file or None),
            server_hostname=self.cfg.host,
        )
        protocol.transport = transport
        await protocol.capability()

    async def _select(self) -> None:
        client = self._require()
        response = await client.select(quote_mailbox(self.cfg.mailbox))
        _check(response, "SELECT")
        for line in response.lines:
            if isinstance(line, (bytes, bytearray)):
                match = _UIDVALIDITY_RE.search(bytes(line))
                if match:
                    new = int(match.group(1))
                    if self.uidvalidity is not None and new != self.uidvalidity:
                        # RFC 3501 §2.3.1.1: old UIDs are void. Nothing is lost:
                        # the pipeline's content key stops re-imports.
                        log.warning("uidvalidity changed", extra={"source": self.key,
                                    "old": self.uidvalidity, "new": new})
                    self.uidvalidity = new

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            if not self._lost.is_set():  # a lost connection has nobody to say goodbye to
                if client.has_pending_idle():
                    client.idle_done()
                await asyncio.wait_for(client.logout(), 2)
        except Exception:  # best effort: the connection may already be gone
            pass
        await hang_up(getattr(client.protocol, "transport", None))

    def _require(self) -> Client:
        if self._client is None or self._lost.is_set():
            raise ImapError("IMAP connection is not open")
        return self._client

    @property
    def is_open(self) -> bool:
        return self._client is not None and not self._lost.is_set()

    # -- fetching ---------------------------------------------------------
    async def waiting_uids(self) -> list[int]:
        client = self._require()
        # RFC 3501 §6.1.2: NOOP lets the server sync the selected mailbox.
        # Without it Dovecot can report mail that arrived a moment ago only
        # as an untagged EXISTS after the SEARCH, and that mail would wait
        # for the next IDLE push or poll.
        _check(await client.noop(), "NOOP")
        return await self._search("UNSEEN" if self.cfg.acknowledge == "seen" else "ALL")

    async def _search(self, criteria: str) -> list[int]:
        response = await self._require().uid_search(criteria, charset=None)
        _check(response, "UID SEARCH")
        uids: list[int] = []
        # aioimaplib hands back the untagged "* SEARCH 1 2 3" as b"1 2 3" and
        # the tagged status text last; only the untagged lines hold UIDs.
        for line in response.lines[:-1]:
            if isinstance(line, (bytes, bytearray)):
                uids.extend(int(tok) for tok in bytes(line).split() if tok.isdigit())
        return sorted(set(uids))

    async def fetch(self, limit: int, skip: frozenset[str] = frozenset()) -> list[Fetched]:
        try:
            uids = [u for u in await self.waiting_uids() if str(u) not in skip][:limit]
            if not uids:
                return []
            sizes = await self._sizes(uids)
            small = [u for u in uids if u in sizes and sizes[u] <= self.max_bytes]
            large = [u for u in uids if sizes.get(u, 0) > self.max_bytes]
            unknown = [u for u in uids if u not in sizes]
            fetched = await self._fetch_parts(small, "BODY.PEEK[]", too_large=False)
            if unknown:
                # No RFC822.SIZE given: ask for one byte more than the limit
                # (a partial fetch, RFC 3501 §6.4.5); a literal that long
                # tells a message over it, and is cut to its headers.
                fetched += await self._fetch_parts(
                    unknown, f"BODY.PEEK[]<0.{self.max_bytes + 1}>", too_large=False)
            if large:
                # Never read an oversized message into memory: its headers are
                # enough to quarantine it; the full mail stays on the server.
                fetched += await self._fetch_parts(large, "BODY.PEEK[HEADER]", too_large=True)
            return sorted(fetched, key=lambda f: f.uid or 0)
        except (TimeoutError, OSError, aioimaplib.AioImapException) as exc:
            raise ImapError(f"IMAP fetch failed: {exc!r}") from exc

    async def _sizes(self, uids: Sequence[int]) -> dict[int, int]:
        client = self._require()
        response = await client.uid("fetch", uid_set(uids), "(UID RFC822.SIZE)")
        _check(response, "UID FETCH SIZE")
        sizes: dict[int, int] = {}
        for line in response.lines:
            if not isinstance(line, (bytes, bytearray)):
                continue
            uid = _UID_RE.search(line)
            size = _SIZE_RE.search(line)
            if uid and size:
                sizes[int(uid.group(1))] = int(size.group(1))
        return sizes

    async def _fetch_parts(self, uids: Sequence[int], item: str, too_large: bool) -> list[Fetched]:
        if not uids:
            return []
        client = self._require()
        cap = HEADER_ONLY if too_large else self.max_bytes
        protocol = client.protocol
        # aioimaplib's own IMAP4.uid("fetch", ...) builds the same command;
        # ours only collects the literals differently.
        command = LiteralFetch(protocol.new_tag(), uid_set(uids), f"(UID {item})",
                               cap=cap, prefix="UID", loop=protocol.loop,
                               timeout=self.cfg.timeout)
        response = await protocol.execute(command)
        _check(response, "UID FETCH")
        out: list[Fetched] = []
        lines = response.lines
        for i, line in enumerate(lines):
            if not isinstance(line, bytes):
                continue
            if not _FETCH_RE.match(line) or not _LITERAL_RE.search(line):
                continue
            uid = _UID_RE.search(line)
            if uid is None and i + 2 < len(lines):
                tail = lines[i + 2]
                uid = _UID_RE.search(tail) if isinstance(tail, bytes) else None
            literal = lines[i + 1] if i + 1 < len(lines) else None
            if uid is None or not isinstance(literal, Literal):
                continue
            body = literal.data  # at most cap bytes: LiteralFetch kept no more
            over = literal.is_cut
            if over and not too_large:
                # Longer than its RFC822.SIZE said, or than the limit when
                # no size was given: held as the too large are, by headers.
                body = header_section(body)
            out.append(
                Fetched(self.key, uid.group(1).decode(), body, self.uidvalidity,
                        int(uid.group(1)), too_large or over)
            )
        return out

    # -- acknowledging ----------------------------------------------------
    async def acknowledge(self, ack: Acknowledgement) -> None:
        try:
            if ack.processed:
                await self._finish([f.uid for f in ack.processed if f.uid], done=True)
            if ack.quarantined:
                await self._finish([f.uid for f in ack.quarantined if f.uid], done=False)
        except (TimeoutError, OSError, aioimaplib.AioImapException) as exc:
            # Safe to fail: the results are committed, so a re-fetch of these
            # UIDs is recognised by the idempotency key and only acknowledged.
            raise ImapError(f"IMAP acknowledge failed: {exc!r}") from exc

    async def _finish(self, uids: list[int], done: bool) -> None:
        if not uids:
            return
        client = self._require()
        if done and self.cfg.acknowledge == "seen":
            await self._on_present(uids, "store", "+FLAGS.SILENT (\\Seen)")
            return
        target = quote_mailbox(self.cfg.processed_mailbox if done else self.cfg.quarantine_mailbox)
        if "MOVE" in self.capabilities:
            await self._on_present(uids, "move", target)
            return
        present = await self._on_present(uids, "copy", target)
        if not present:
            return
        await self._on_present(present, "store", "+FLAGS.SILENT (\\Deleted)")
        if "UIDPLUS" in self.capabilities:
            _check(await client.uid("expunge", uid_set(present)), "UID EXPUNGE")
        else:
            _check(await client.expunge(), "EXPUNGE")

    async def _on_present(self, uids: list[int], command: str, *args: str) -> list[int]:
        """UID ``command`` on ``uids``; returns those still in the mailbox.

        Another daemon on the same mailbox may have fetched the same mail,
        found it stored and moved it away first. The server then answers NO
        [EXPUNGEISSUED] (RFC 5530 §3); once NOOP has told us of the
        expunges, the command is repeated for the UIDs still here. Those
        that are gone were stored (ours is committed before we get here).
        """
        client = self._require()
        what = f"UID {command.upper()}"
        response = await client.uid(command, uid_set(uids), *args)
        if response.result == "OK":
            return uids
        if not _expunge_issued(response):
            _check(response, what)
        _check(await client.noop(), "NOOP")
        here = set(await self._search(f"UID {uid_set(uids)}"))
        present = [u for u in uids if u in here]
        log.info("messages already gone from the mailbox",
                 extra={"source": self.key, "command": what, "gone": len(uids) - len(present)})
        if present:
            _check(await client.uid(command, uid_set(present), *args), what)
        return present

    # -- waiting ----------------------------------------------------------
    async def wait(self, timeout: float) -> None:
        """IDLE until the server reports a change, or poll after ``timeout``."""
        client = self._require()
        if not (self.cfg.idle and "IDLE" in self.capabilities):
            await self._sleep_or_lost(min(timeout, self.cfg.poll_interval))
            return
        idle = await client.idle_start(timeout=min(timeout, IDLE_RENEW))
        try:
            while True:
                push_task = asyncio.ensure_future(client.wait_server_push())
                lost_task = asyncio.ensure_future(self._lost.wait())
                done, pending = await asyncio.wait(
                    {push_task, lost_task}, timeout=min(timeout, IDLE_RENEW) + 5,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                for task in pending:
                    task.cancel()
                if lost_task in done:
                    raise ImapError("IMAP connection lost during IDLE")
                if push_task not in done:
                    break
                push = push_task.result()
                if push == aioimaplib.STOP_WAIT_SERVER_PUSH:
                    break
                if any(b"EXISTS" in bytes(x) for x in push if isinstance(x, (bytes, bytearray))):
                    break
        finally:
            if self._lost.is_set():
                # Nothing will answer DONE on a dead connection: waiting for
                # the IDLE's end would hold off the reconnect by a timeout.
                client.forget_idle()
                if not idle.done():
                    idle.cancel()
                elif not idle.cancelled():
                    idle.exception()  # the loss, reported above; retrieved, not logged
            else:
                if client.has_pending_idle():
                    client.idle_done()
                try:
                    await asyncio.wait_for(idle, self.cfg.timeout)
                except (TimeoutError, OSError, aioimaplib.AioImapException,
                        asyncio.CancelledError):
                    pass  # lost while ending IDLE: the next command finds out

    async def _sleep_or_lost(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._lost.wait(), seconds)
        except TimeoutError:
            return
        raise ImapError("IMAP connection lost")


def header_section(raw: bytes) -> bytes:
    """The header section of a message's start, up to and with the empty
    line that ends it (RFC 5322 §2.1), as BODY[HEADER] would give it
    (RFC 3501 §6.4.5); at most HEADER_ONLY bytes."""
    end = raw.find(b"\r\n\r\n", 0, HEADER_ONLY)
    return raw[:end + 4] if end >= 0 else raw[:HEADER_ONLY]


def _expunge_issued(response: aioimaplib.Response) -> bool:
    return response.result == "NO" and any(
        b"[EXPUNGEISSUED]" in bytes(x) for x in response.lines if isinstance(x, (bytes, bytearray)))


def _check(response: aioimaplib.Response, what: str) -> None:
    if response.result != "OK":
        text = b" ".join(bytes(x) for x in response.lines if isinstance(x, (bytes, bytearray)))
        raise ImapError(f"{what} failed: {response.result} {text[:200]!r}")
