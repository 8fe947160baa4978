"""Run every benchmark, print the figures, write ``bench/results/latest.json``
and print a Markdown table for the README.

    python -m bench.run_all                 # all four, sized to finish in ~10 minutes
    python -m bench.run_all --only ingest   # one benchmark (repeatable)
    python -m bench.run_all --quick         # a smoke run of a few minutes
    python -m bench.run_all --full          # the issue's full sizes, no time budgets

Today the ingest rate is far below its target, so the default run cuts the
message counts of the ingest and memory-flatness runs to fit time budgets
(a pilot run measures the rate first); every cut is printed and recorded.
"""

from __future__ import annotations

import argparse
import os
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from bench import ingest, latency, memory, servers, sla
from bench.report import Figure, machine, machine_line, markdown, write_json

BENCHES = ("ingest", "latency", "sla", "memory")


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f}/{five:.2f}"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--only", choices=BENCHES, action="append", help="run only these")
    p.add_argument("--skip", choices=BENCHES, action="append", default=[])
    p.add_argument("--db", choices=servers.DB_KINDS, action="append")
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    p.add_argument("--full", action="store_true",
                   help="5,000 ingest and 10,000 memory messages, no budgets (slow today)")
    p.add_argument("-n", "--messages", type=int, default=5000, help="ingest messages (max)")
    p.add_argument("--ingest-budget", type=float, default=45.0,
                   help="seconds per database for the timed ingest run")
    p.add_argument("--memory-budget", type=float, default=35.0,
                   help="seconds for the memory-flatness run")
    p.add_argument("--latency-seconds", type=float, default=60.0)
    p.add_argument("--tickets", type=int, default=1_000_000)
    p.add_argument("--profile", action="store_true",
                   help="also profile the ingest path (bench.profile, 1,000 messages)")
    args = p.parse_args(argv)
    dbs = tuple(args.db or servers.DB_KINDS)
    chosen = [b for b in (args.only or BENCHES) if b not in args.skip]
    started = time.perf_counter()
    m = machine()
    print(f"helpdesk benchmarks: {', '.join(chosen)} on {', '.join(dbs)}")
    print(f"machine: {machine_line(m)}; load average {_load()} (1/5 min)", flush=True)
    if os.getloadavg()[0] > 0.5:
        print("note: the machine is not idle; wall-clock figures include that contention")

    ingest_n = 1000 if args.quick else args.messages
    ingest_budget = None if args.full else (15.0 if args.quick else args.ingest_budget)
    figures: list[Figure] = []
    meta: dict[str, Any] = {"benches": {}, "dbs": dbs}

    def memory_n() -> int:
        if args.full:
            return 10_000
        if args.quick:
            return 600
        rates = [f.value for f in figures
                 if f.bench == "ingest" and f.db == "sqlite" and f.name.startswith("end to end")
                 and f.unit == "msg/s"]
        rate = rates[0] if rates else 25.0
        return max(1000, min(10_000, int(rate * args.memory_budget / 100) * 100))

    plan: dict[str, Callable[[], list[Figure]]] = {
        "ingest": lambda: ingest.run(ingest_n, dbs, budget=ingest_budget),
        "latency": lambda: latency.run(
            5.0, 15.0 if args.quick else args.latency_seconds, dbs,
            0 if args.quick else 3),
        "sla": lambda: sla.run(100_000 if args.quick else args.tickets,
                               10_000 if args.quick else args.tickets // 10, 1000, dbs),
        "memory": lambda: memory.run(memory_n(), dbs, ("sqlite",) if "sqlite" in dbs else dbs),
    }
    for name in chosen:
        t0 = time.perf_counter()
        load_before = _load()
        try:
            got = plan[name]()
            error = ""
        except Exception as exc:  # one broken benchmark must not lose the others' figures
            traceback.print_exc()
            got, error = [], f"{type(exc).__name__}: {exc}"
        figures += got
        meta["benches"][name] = {"seconds": round(time.perf_counter() - t0, 1),
                                 "load_before": load_before, "load_after": _load(),
                                 "error": error}
        print(f"   ({name}: {time.perf_counter() - t0:.0f} s, load {load_before} -> {_load()})",
              flush=True)
    if args.profile:
        from bench import profile

        meta["profile"] = profile.run(1000, "sqlite")
    total = time.perf_counter() - started
    meta["total_seconds"] = round(total, 1)
    path = write_json(figures, m, meta)
    print(f"\n{markdown(figures, m)}\n")
    print(f"total {total / 60:.1f} min; JSON summary: {path}")
    failed = [n for n, b in meta["benches"].items() if b["error"]]
    if failed:
        print(f"FAILED: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
