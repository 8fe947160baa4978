"""Parsing a batch in worker processes gives what parsing in-process gives."""

from __future__ import annotations

import os

from bench import corpus
from helpdesk.ingest import parallel
from helpdesk.ingest.parallel import ParsePool
from helpdesk.ingest.pipeline import parse_result
from helpdesk.ingest.source import Fetched


def _batch(count: int) -> list[Fetched]:
    mails = corpus.generate(count, seed=7, tag="pp")
    return [Fetched("t", str(i), m.raw, uid=i + 1) for i, m in enumerate(mails)]


def test_workers_return_the_in_process_results_in_batch_order() -> None:
    items = _batch(24)
    items[3] = Fetched("t", "big", b"Subject: big\r\n\r\n" + b"x" * (parallel.MAX_SIZE + 1))
    items[5] = Fetched("t", "cut", b"Subject: cut\r\n\r\n", too_large=True)
    items[9] = Fetched("t", "empty", b"")
    pool = ParsePool(parse_result, workers=1)
    try:
        got = list(pool.map(items))
        assert pool._executor is not None  # the batch really went to a worker
    finally:
        pool.close()
    assert got == [parse_result(item) for item in items]
    assert got[5] == (None, "too_large")
    assert got[9][0] is None and got[9][1].startswith("unparseable")


def test_a_small_batch_is_parsed_in_process() -> None:
    pool = ParsePool(parse_result, workers=1)
    items = _batch(parallel.MIN_BATCH - 1)
    assert list(pool.map(items)) == [parse_result(i) for i in items]
    assert pool._executor is None


def _dies_on_marker(item: Fetched) -> str:
    if item.handle == "die" and os.environ.get("HELPDESK_TEST_PARENT") != str(os.getpid()):
        os._exit(3)  # a worker killed mid-batch (OOM killer, kill -9)
    return item.handle


def test_a_dead_worker_loses_nothing() -> None:
    os.environ["HELPDESK_TEST_PARENT"] = str(os.getpid())
    handles = [str(i) for i in range(20)]
    handles[6] = "die"
    items = [Fetched("t", h, b"") for h in handles]
    pool = ParsePool(_dies_on_marker, workers=1)
    try:
        assert list(pool.map(items)) == handles
        assert pool._executor is None  # dropped; the next batch starts a new one
        assert list(pool.map([Fetched("t", str(i), b"") for i in range(10)])) == [
            str(i) for i in range(10)]
    finally:
        pool.close()
        del os.environ["HELPDESK_TEST_PARENT"]
