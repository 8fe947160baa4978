"""Figures, the machine description, the JSON summary and the Markdown table."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).with_name("results")


@dataclass(frozen=True)
class Figure:
    """One measured number, with its target when the issue sets one."""

    bench: str  # ingest | latency | sla | memory
    name: str  # what was measured, e.g. "end to end"
    db: str  # sqlite | postgres | "-" when the database does not matter
    value: float
    unit: str  # "msg/s", "s", "ms", "MB", "ratio"
    target: str = ""  # e.g. ">= 700"
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def met(self) -> bool | None:
        return check(self.value, self.target)

    def line(self) -> str:
        goal = f"  (target {self.target} {self.unit}: {_met_text(self.met)})" if self.target else ""
        note = f"  [{self.note}]" if self.note else ""
        return f"  {self.name:<44} {self.db:<9} {fmt(self.value, self.unit):>12}{goal}{note}"


def check(value: float, target: str) -> bool | None:
    """``target`` is "<= N", ">= N" or "" (none)."""
    if not target or value != value:  # NaN: not measured
        return None
    op, _, number = target.partition(" ")
    bound = float(number)
    compare: dict[str, Callable[[float, float], bool]] = {
        "<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b,
    }
    return compare[op](value, bound)


def fmt(value: float, unit: str) -> str:
    if value != value:
        return "n/a"
    if value == float("inf"):
        return "never"
    if unit in ("msg/s", "MB"):
        return f"{value:,.0f} {unit}" if value >= 100 else f"{value:,.1f} {unit}"
    if unit == "ratio":
        return f"{value:.2f}"
    if unit == "s":
        return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"
    if unit == "ms":
        return f"{value:.1f} ms"
    return f"{value:g} {unit}"


def _met_text(met: bool | None) -> str:
    return {True: "met", False: "NOT met", None: "-"}[met]


def show(figures: Iterable[Figure]) -> None:
    for figure in figures:
        print(figure.line(), flush=True)


def machine() -> dict[str, str]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GB"
    except OSError:
        pass
    return {
        "cores": str(os.cpu_count() or "?"),
        "cpu": cpu or platform.processor() or "unknown",
        "memory": mem,
        "python": platform.python_version(),
        "dovecot": _version(["dovecot", "--version"]),
        "postgresql": _pg_version(),
        "sqlite": _sqlite_version(),
        "kernel": platform.release(),
    }


def _version(cmd: list[str]) -> str:
    binary = shutil.which(cmd[0]) or next(
        (p for p in (f"/usr/sbin/{cmd[0]}", f"/usr/bin/{cmd[0]}") if Path(p).exists()), None)
    if binary is None:
        return "not installed"
    try:
        done = subprocess.run([binary, *cmd[1:]], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip().split(" (")[0] or "unknown"


def _pg_version() -> str:
    try:
        import psycopg
        from sqlalchemy.engine import make_url

        from bench.servers import pg_base_url
        from tests.support.services import libpq_url

        with psycopg.connect(libpq_url(make_url(pg_base_url())), connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]).split(" ")[0] if row else "unknown"
    except Exception:
        return "unreachable"


def _sqlite_version() -> str:
    import sqlite3

    return sqlite3.sqlite_version


def machine_line(m: dict[str, str]) -> str:
    return (f"{m['cores']} cores, {m['cpu']}, {m['memory']} RAM; Python {m['python']}; "
            f"Dovecot {m['dovecot']}; PostgreSQL {m['postgresql']}; SQLite {m['sqlite']}")


def markdown(figures: Iterable[Figure], m: dict[str, str]) -> str:
    rows = [
        "| Figure | DB | Measured | Target | Met? |",
        "|---|---|---:|---:|:---:|",
    ]
    for f in figures:
        target = f"{f.target} {f.unit}" if f.target else ""
        met = {True: "yes", False: "**no**", None: ""}[f.met]
        name = f"{f.bench}: {f.name}" + (f" ({f.note})" if f.note else "")
        rows.append(f"| {name} | {f.db} | {fmt(f.value, f.unit)} | {target} | {met} |")
    return f"Machine: {machine_line(m)}.\n\n" + "\n".join(rows)


def write_json(figures: list[Figure], m: dict[str, str], meta: dict[str, Any],
               path: Path | None = None) -> Path:
    path = path or RESULTS / "latest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": m,
        "argv": sys.argv,
        **meta,
        "figures": [asdict(f) | {"met": f.met} for f in figures],
    }
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path
