"""A TCP proxy for fault tests: delay, stall or cut the connections between a client and a server.

Usage::

    with TcpProxy(dovecot.host, dovecot.port) as proxy:
        # point the code under test at proxy.host / proxy.port instead of the server
        proxy.wait_for_connections(1)
        proxy.cut_all()                       # every open connection is closed now
        proxy.set_blackhole(True)             # accept, but forward nothing (a network partition)
        proxy.set_delay(0.2)                  # every chunk, both ways, waits 0.2 s
        proxy.cut_after_bytes(10_000, once=True)  # e.g. a connection cut mid-FETCH

The proxy runs its own event loop in its own thread, so it serves sync tests and tests that run
their own asyncio loop alike; every control method is thread-safe and has taken effect when it
returns. It listens on a free loopback port that it binds itself (port 0, no race).

Semantics:

- ``cut_all()`` aborts both sides of every open connection; the client sees the connection
  drop (EOF or reset). New connections are still accepted.
- ``set_blackhole(True)`` stalls: new connections are accepted but not forwarded to the
  server, and data on open connections is held back in both directions. ``set_blackhole(False)``
  lets everything held flow again (as after a healed partition, TCP delivers late, not never).
- ``set_delay(s)`` holds each chunk for ``s`` seconds before forwarding it (latency; a slow
  server). Chunks of one direction stay in order.
- ``cut_after_bytes(n)`` cuts a connection, both sides, once it has forwarded ``n`` more bytes
  from server to client: exactly ``n`` bytes reach the client, then the connection drops. It
  counts from the call for open connections and from the start for new ones, and stays armed
  until ``cut_after_bytes(None)``; with ``once=True`` it disarms after its first cut, so that a
  client's reconnection goes through.
- Counters: ``accepted`` (connections accepted so far), ``active`` (open now), ``cuts``
  (connections cut by ``cut_all`` or ``cut_after_bytes``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar

from tests.support.lifecycle import Managed
from tests.support.ports import LOOPBACK

_T = TypeVar("_T")
_CHUNK = 65536
_CONTROL_TIMEOUT = 10.0


@dataclass(eq=False)
class _Link:
    """One proxied connection."""

    client: asyncio.StreamWriter
    budget: int | None  # bytes server->client still allowed before the cut
    server: asyncio.StreamWriter | None = None
    task: asyncio.Task[None] | None = None
    cut: bool = False
    pumps: list[asyncio.Task[None]] = field(default_factory=list)


class TcpProxy(Managed):
    """Forward 127.0.0.1:<port> to ``target_host:target_port``, with faults on demand."""

    host = LOOPBACK

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event | None = None
        self._links: set[_Link] = set()
        self._lock = threading.Lock()
        self._accepted = 0
        self._cuts = 0
        self._delay = 0.0
        self._cut_after: int | None = None
        self._cut_once = False
        self._port: int | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        if self._loop is not None:
            raise RuntimeError("the proxy is already running")
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="tcp-proxy", daemon=True)
        self._thread.start()
        try:
            self._port = self._run(self._open())
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Close the listener and every connection, stop the loop and join its thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            if self._server is not None:
                self._run(self._close())
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(_CONTROL_TIMEOUT)
            loop.close()
            self._loop = self._thread = None
            self._server = None
            self._port = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the proxy is not running")
        return self._port

    # -- counters --------------------------------------------------------------------------

    @property
    def accepted(self) -> int:
        with self._lock:
            return self._accepted

    @property
    def cuts(self) -> int:
        with self._lock:
            return self._cuts

    @property
    def active(self) -> int:
        return self._call(lambda: len(self._links))

    def wait_for_connections(self, count: int, timeout: float = 5.0) -> None:
        """Block until at least ``count`` connections have been accepted in total."""
        deadline = time.monotonic() + timeout
        while self.accepted < count:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.accepted} of {count} connections within {timeout} s")
            time.sleep(0.01)

    async def wait_for_connections_async(self, count: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while self.accepted < count:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.accepted} of {count} connections within {timeout} s")
            await asyncio.sleep(0.01)

    # -- controls --------------------------------------------------------------------------

    def cut_all(self) -> int:
        """Cut every open connection now; returns how many were cut."""

        def cut() -> int:
            links = [link for link in self._links if not link.cut]
            for link in links:
                self._cut(link)
            return len(links)

        return self._call(cut)

    def set_blackhole(self, on: bool) -> None:
        def switch() -> None:
            assert self._flowing is not None
            if on:
                self._flowing.clear()
            else:
                self._flowing.set()

        self._call(switch)

    def set_delay(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the delay cannot be negative")

        def assign() -> None:
            self._delay = seconds

        self._call(assign)

    def cut_after_bytes(self, n: int | None, *, once: bool = False) -> None:
        if n is not None and n < 0:
            raise ValueError("the byte count cannot be negative")

        def arm() -> None:
            self._cut_after, self._cut_once = n, once
            for link in self._links:
                link.budget = n

        self._call(arm)

    # -- inside the proxy's loop -----------------------------------------------------------

    async def _open(self) -> int:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _close(self) -> None:
        assert self._server is not None
        self._server.close()
        tasks = [link.task for link in self._links if link.task is not None]
        for link in list(self._links):
            self._cut(link, count=False)
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()
        for _ in range(3):  # let the transports run their connection_lost callbacks
            await asyncio.sleep(0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link(client=writer, budget=self._cut_after, task=asyncio.current_task())
        self._links.add(link)
        with self._lock:
            self._accepted += 1
        try:
            assert self._flowing is not None
            await self._flowing.wait()
            try:
                up_reader, up_writer = await asyncio.open_connection(
                    self.target_host, self.target_port
                )
            except OSError:
                return
            link.server = up_writer
            link.pumps = [
                asyncio.create_task(self._pump(link, reader, up_writer, to_client=False)),
                asyncio.create_task(self._pump(link, up_reader, writer, to_client=True)),
            ]
            # Either side closing ends the connection: IMAP and SMTP do not half-close.
            await asyncio.wait(link.pumps, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            pass  # cut while waiting for the blackhole to lift
        finally:
            for pump in link.pumps:
                pump.cancel()
            await asyncio.gather(*link.pumps, return_exceptions=True)
            for side in (link.client, link.server):
                if side is not None:
                    side.close()
            self._links.discard(link)

    async def _pump(
        self,
        link: _Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        to_client: bool,
    ) -> None:
        assert self._flowing is not None
        try:
            while not link.cut:
                data = await reader.read(_CHUNK)
                if not data:
                    return
                if self._delay > 0:
                    await asyncio.sleep(self._delay)
                await self._flowing.wait()
                if link.cut:
                    return
                if to_client and link.budget is not None and len(data) >= link.budget:
                    writer.write(data[: link.budget])
                    await _flush(writer)
                    self._cut(link)
                    if self._cut_once:
                        self._disarm()
                    return
                if to_client and link.budget is not None:
                    link.budget -= len(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            return

    def _cut(self, link: _Link, *, count: bool = True) -> None:
        if link.cut:
            return
        link.cut = True
        for side in (link.client, link.server):
            if side is not None:
                side.transport.abort()
        if link.server is None and link.task is not None:
            link.task.cancel()  # still waiting for the blackhole to lift
        if count:
            with self._lock:
                self._cuts += 1

    def _disarm(self) -> None:
        self._cut_after, self._cut_once = None, False
        for link in self._links:
            link.budget = None

    # -- crossing threads ------------------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(_CONTROL_TIMEOUT)

    def _call(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` in the proxy's loop and wait for its result."""

        async def call() -> _T:
            return fn()

        return self._run(call())


async def _flush(writer: asyncio.StreamWriter) -> None:
    """Wait until the transport has handed every byte written so far to the kernel."""
    writer.transport.set_write_buffer_limits(high=0)
    with contextlib.suppress(ConnectionError, TimeoutError):
        await asyncio.wait_for(writer.drain(), _CONTROL_TIMEOUT)


ProxyFactory = Callable[[str, int], TcpProxy]
"""The ``tcp_proxy`` fixture: ``tcp_proxy(host, port)`` starts a proxy in front of a server."""
