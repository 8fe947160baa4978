"""Parse a batch in worker processes while the caller stores it (I/O shell).

Parsing is pure CPU work (MIME, charsets, HTML to text) and holds the GIL,
so a thread cannot overlap it with storing; a worker process can. Results
come back in the batch's order as soon as each is ready, so the first
message is stored while the rest are still being parsed.

Small batches (the IDLE path: one or two mails) and large messages are
parsed in-process: a round trip to a worker would only add latency, and a
large message would be copied through the pipe twice.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Generic, TypeVar

from helpdesk.ingest.source import Fetched
from helpdesk.logs import log

logger = logging.getLogger(__name__)

MIN_BATCH = 8  # fewer messages than this are parsed in-process
MAX_SIZE = 1024 * 1024  # larger messages are parsed in-process
FIRST_CHUNK = 4
CHUNK = 16
T = TypeVar("T")


class ParsePool(Generic[T]):
    """``parse`` applied to a batch, on ``workers`` processes (0: in-process).

    The pool starts on first use and is rebuilt after a worker dies; the
    batch that saw it die is parsed in-process, so nothing is lost.
    """

    def __init__(self, parse: Callable[[Fetched], T], workers: int) -> None:
        self.parse = parse
        self.workers = workers
        self._executor: Executor | None = None

    def map(self, items: Sequence[Fetched]) -> Iterator[T]:
        if self.workers <= 0 or len(items) < MIN_BATCH:
            return (self.parse(item) for item in items)
        return self._pooled(items)

    def _pooled(self, items: Sequence[Fetched]) -> Iterator[T]:
        executor = self._start()
        local = [item.too_large or len(item.raw) > MAX_SIZE for item in items]
        chunks = _chunks([i for i, here in enumerate(local) if not here])
        try:
            futures = {
                chunk[0]: (chunk, executor.submit(_parse_all, self.parse,
                                                  [items[i] for i in chunk]))
                for chunk in chunks
            }
        except (BrokenProcessPool, RuntimeError) as exc:
            self._broken(exc)
            futures = {}
        done: dict[int, T] = {}
        broken = not futures
        for i, item in enumerate(items):
            if i in futures and not broken:
                chunk, future = futures[i]
                try:
                    done.update(zip(chunk, future.result(), strict=True))
                except BrokenProcessPool as exc:
                    # A worker died (killed, out of memory): the rest of the
                    # batch is parsed here.
                    broken = True
                    self._broken(exc)
            yield done.pop(i) if i in done else self.parse(item)

    def _start(self) -> Executor:
        if self._executor is None:
            # spawn, not fork: the daemon has threads (asyncio's workers, the
            # database pool), and forking a threaded process can deadlock.
            self._executor = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context("spawn")
            )
        return self._executor

    def _broken(self, exc: BaseException) -> None:
        log(logger, logging.WARNING, "parse worker died; parsing in-process",
            error=str(exc)[:200])
        self.close()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


def _chunks(indexes: list[int]) -> list[list[int]]:
    """Work for the pool in chunks: a result per message would need the
    pool's thread in this process, which waits for the GIL while we store,
    so workers would idle. The first chunk is small, to start storing soon."""
    chunks: list[list[int]] = []
    size = FIRST_CHUNK
    while indexes:
        chunks.append(indexes[:size])
        indexes = indexes[size:]
        size = CHUNK
    return chunks


def _parse_all(parse: Callable[[Fetched], T], items: list[Fetched]) -> list[T]:
    return [parse(item) for item in items]
