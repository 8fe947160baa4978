"""Parsing a batch in worker processes gives what parsing in-process gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from bench import corpus
from helpdesk.ingest import parallel
from helpdesk.ingest.parallel import ParsePool
from helpdesk.ingest.reading import parse_result
from helpdesk.ingest.source import Fetched

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def _batch(count: int) -> list[Fetched]:
    mails = corpus.generate(count, seed=7, tag="pp")
    return [Fetched("t", str(i), m.raw, uid=i + 1) for i, m in enumerate(mails)]


def _on_started_workers(parse: Callable[[Fetched], T], items: list[Fetched]
                        ) -> tuple[list[T], int]:
    """``items`` mapped by a pool of one worker, started first; and how many
    of them the worker parsed."""
    pool = ParsePool(parse, workers=1)
    try:
        pool.start().result(timeout=60)
        return list(pool.map(items)), pool.parsed_by_workers
    finally:
        pool.close()


def test_workers_return_the_in_process_results_in_batch_order() -> None:
    items = _batch(80)
    items[3] = Fetched("t", "big", b"Subject: big\r\n\r\n" + b"x" * (parallel.MAX_SIZE + 1))
    items[5] = Fetched("t", "cut", b"Subject: cut\r\n\r\n", too_large=True)
    items[9] = Fetched("t", "empty", b"")
    got, by_workers = _on_started_workers(parse_result, items)
    assert got == [parse_result(item) for item in items]
    assert got[5] == (None, "too_large", None)
    assert got[9][0] is None and got[9][1].startswith("unparseable")
    # With a worker up, all but the first message, the large one and the
    # cut one were parsed there.
    assert by_workers == len(items) - 3


def test_storing_does_not_wait_for_the_workers_to_start() -> None:
    """Until a worker is up, messages are parsed here: a batch taken at once
    (before the spawn could finish) still comes back whole and in order."""
    items = _batch(20)
    pool = ParsePool(parse_result, workers=1)
    try:
        got = list(pool.map(items))
    finally:
        pool.close()
    assert got == [parse_result(i) for i in items]


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
    handles = [str(i) for i in range(40)]
    handles[20] = "die"
    items = [Fetched("t", h, b"") for h in handles]
    pool = ParsePool(_dies_on_marker, workers=1)
    try:
        pool.start().result(timeout=60)
        assert list(pool.map(items)) == handles
        assert pool._executor is None  # dropped; the next batch starts a new one
        assert 0 < pool.parsed_by_workers < 20
        assert list(pool.map([Fetched("t", str(i), b"") for i in range(10)])) == [
            str(i) for i in range(10)]
    finally:
        pool.close()
        del os.environ["HELPDESK_TEST_PARENT"]


_HOLDER = """
import os, sys, time
from helpdesk.ingest.parallel import ParsePool
from helpdesk.ingest.reading import parse_result
if __name__ == "__main__":
    pool = ParsePool(parse_result, 1)
    pool.start().result(timeout=60)
    print(pool._executor.submit(os.getpid).result(timeout=60), flush=True)
    time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_worker_leaves_when_the_daemon_is_killed(tmp_path: Path) -> None:
    """kill -9 tells a worker nothing; it must notice and go, or every
    crash of the daemon would leave an idle process behind."""
    script = tmp_path / "holder.py"
    script.write_text(_HOLDER)
    holder = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                              cwd=Path(__file__).parents[2])
    try:
        assert holder.stdout is not None
        worker = int(holder.stdout.readline())
        assert _alive(worker)
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    deadline = time.monotonic() + 10 * parallel.PARENT_CHECK + 5
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(worker)


def test_a_parse_worker_loads_the_parser_and_no_database_layer() -> None:
    """A worker is spawned: it imports what unpickling the parse function
    needs, and the parent's main module. Neither may pull in the database
    layer (which once doubled a worker's start-up time and its memory)."""
    from helpdesk.ingest import pipeline, reading
    from tests.support.worker_probe import HEAVY, parse_and_report

    assert pipeline.parse_result is reading.parse_result  # what the pipeline hands its workers
    items = _batch(40)
    reports, by_workers = _on_started_workers(parse_and_report, items)
    # This process has the database layer loaded; the worker has none of it.
    assert reports[0] and set(reports[0]) <= set(HEAVY)
    assert by_workers == len(items) - 1
    assert reports[1:] == [()] * (len(items) - 1)


_COMMAND = """
import json, sys
from helpdesk.entry import main  # as the installed command's script begins
if __name__ == "__main__":
    import helpdesk.cli  # what main() loads once the command runs
    from helpdesk.ingest.parallel import ParsePool
    from tests.support.worker_probe import parse_and_report
    from tests.unit.test_parallel import _batch
    pool = ParsePool(parse_and_report, workers=1)
    pool.start().result(timeout=60)
    reports = list(pool.map(_batch(20)))
    pool.close()
    print(json.dumps({"in_process": reports[0], "workers": reports[1:]}))
"""


def test_the_helpdesk_command_spawns_workers_without_the_cli(tmp_path: Path) -> None:
    """The installed command's script is the main module a spawned worker
    imports first: it must not pull the CLI, and with it the database layer,
    into every worker."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["scripts"]["helpdesk"] == "helpdesk.entry:main"
    script = tmp_path / "helpdesk"
    script.write_text(_COMMAND)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          check=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    reports = json.loads(done.stdout)
    assert "sqlalchemy" in reports["in_process"] and "helpdesk.cli" in reports["in_process"]
    assert reports["workers"] == [[]] * 19
