"""Parse a batch in worker processes while the caller stores it (I/O shell).

Parsing is pure CPU work (MIME, charsets, HTML to text) and holds the GIL,
so a thread cannot overlap it with storing; a worker process can. Results
come back in the batch's order, so each message is stored while the
workers parse the ones after it.

Small batches (the IDLE path: one or two mails) and large messages are
parsed in-process: a round trip to a worker would only add latency, and a
large message would be copied through the pipe twice.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Generic, TypeVar

from helpdesk.ingest.source import Fetched
from helpdesk.logs import log

logger = logging.getLogger(__name__)

MIN_BATCH = 8  # fewer messages than this are parsed in-process
MAX_SIZE = 1024 * 1024  # larger messages are parsed in-process
CHUNK = 16  # messages per job: one result per message would need the
# pool's thread here, which waits for the GIL while we store, so workers idle
AHEAD = 3 * CHUNK  # messages handed to workers beyond the one in hand
PARENT_CHECK = 1.0  # seconds between a worker's looks at whether the daemon is alive
T = TypeVar("T")


class ParsePool(Generic[T]):
    """``parse`` applied to a batch, on ``workers`` processes (0: in-process).

    The pool starts on the first batch big enough. Until its workers are up,
    and for the message in hand, parsing happens here; once they are, chunks
    of the messages ahead go to them, so storing never waits for a worker to
    start. A pool whose worker died is dropped (the rest of that batch is
    parsed here) and started again on the next batch: nothing is lost.
    """

    def __init__(self, parse: Callable[[Fetched], T], workers: int) -> None:
        self.parse = parse
        self.workers = workers
        self.parsed_by_workers = 0
        self._executor: Executor | None = None
        self._warm: Future[None] | None = None

    def map(self, items: Sequence[Fetched]) -> Iterator[T]:
        if self.workers <= 0 or len(items) < MIN_BATCH:
            return (self.parse(item) for item in items)
        self.start()
        return self._pooled(items)

    def start(self) -> Future[None]:
        """Start the workers (if not running); the future is done once one is up."""
        if self._executor is None or self._warm is None:
            # spawn, not fork: the daemon has threads (asyncio's workers, the
            # database pool), and forking a threaded process can deadlock.
            self._executor = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_exit_with_parent, initargs=(os.getpid(),),
            )
            self._warm = self._executor.submit(_warm_up, self.parse)
        return self._warm

    def _ready(self) -> Executor | None:
        """The executor when a worker is up and none has died, else None."""
        if self._executor is None or self._warm is None or not self._warm.done():
            return None
        if self._warm.exception() is not None:
            self._broken(self._warm.exception())
            return None
        return self._executor

    def _pooled(self, items: Sequence[Fetched]) -> Iterator[T]:
        ahead: deque[int] = deque(
            i for i, item in enumerate(items) if not item.too_large and len(item.raw) <= MAX_SIZE
        )
        assigned: dict[int, Future[list[T]]] = {}
        chunk_of: dict[Future[list[T]], list[int]] = {}
        results: dict[int, T] = {}
        in_flight = 0
        for i, item in enumerate(items):
            executor = self._ready()
            if executor is not None:
                # The message in hand is parsed here whatever happens; keep
                # the workers busy with the ones after it.
                while ahead and ahead[0] <= i:
                    ahead.popleft()
                while ahead and in_flight < AHEAD:
                    chunk = [ahead.popleft() for _ in range(min(CHUNK, len(ahead)))]
                    try:
                        future = executor.submit(_parse_all, self.parse,
                                                 [items[k] for k in chunk])
                    except (BrokenProcessPool, RuntimeError) as exc:
                        self._broken(exc)
                        break
                    assigned.update(dict.fromkeys(chunk, future))
                    chunk_of[future] = chunk
                    in_flight += len(chunk)
            mine = assigned.pop(i, None)
            if mine is not None:
                in_flight -= 1
                if i not in results and self._executor is not None:
                    try:
                        results.update(zip(chunk_of.pop(mine), mine.result(), strict=True))
                        self.parsed_by_workers += 1
                    except BrokenProcessPool as exc:
                        # A worker died (killed, out of memory): the rest of
                        # the batch is parsed here.
                        self._broken(exc)
                elif i in results:
                    self.parsed_by_workers += 1
            yield results.pop(i) if i in results else self.parse(item)

    def _broken(self, exc: BaseException | None) -> None:
        log(logger, logging.WARNING, "parse worker died; parsing in-process",
            error=str(exc)[:200])
        self.close()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
            self._warm = None


def _exit_with_parent(parent: int) -> None:
    """A worker leaves when the daemon is gone. After a kill -9 nothing
    tells it: it holds both ends of its work queue, so it would wait for
    work forever, and every crash would leave one more behind."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _warm_up(parse: Callable[[Fetched], object]) -> None:
    """Nothing: unpickling ``parse`` has imported the parser in the worker."""


def _parse_all(parse: Callable[[Fetched], T], items: list[Fetched]) -> list[T]:
    return [parse(item) for item in items]
