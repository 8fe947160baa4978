"""Real servers and databases for the benchmarks, on top of ``tests/support``.

APPEND is made fast with MULTIAPPEND (RFC 3502) and non-synchronising
literals (LITERAL+, RFC 7888) on a raw socket: a whole chunk of messages is
one command and one round trip. Dovecot answers with APPENDUID (RFC 4315).
"""

from __future__ import annotations

import atexit
import contextlib
import imaplib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import make_url

from bench import cpu
from tests.support.dovecot import Dovecot, ImapAccount, find_binary, quote
from tests.support.services import (
    DEFAULT_PG_URL,
    PG_URL_VARIABLE,
    libpq_url,
    scratch_database,
)

PASSWORD = "secret"
DB_KINDS = ("sqlite", "postgres")
_APPENDUID_RE = re.compile(rb"\[APPENDUID (\d+) ([0-9:,]+)\]")
# The installed command, as an operator starts it: its script is also the
# main module that every spawned parse worker imports first.
CLI = [str(Path(sys.executable).with_name("helpdesk"))]


def crlf(raw: bytes) -> bytes:
    """IMAP wants CRLF line ends (RFC 3501 §2.2); the generator writes LF."""
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


class ImapWire:
    """A minimal blocking IMAP client on a raw socket, for MULTIAPPEND."""

    def __init__(self, account: ImapAccount) -> None:
        self.sock = socket.create_connection((account.host, account.port), timeout=120)
        self.buf = b""
        self.seq = 0
        self._line()  # greeting
        self.command(f"LOGIN {quote(account.user)} {quote(account.password)}".encode())

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("IMAP server closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def command(self, payload: bytes) -> bytes:
        """Send one tagged command (literals inline, LITERAL+); return the tagged reply."""
        self.seq += 1
        tag = f"b{self.seq}".encode()
        self.sock.sendall(tag + b" " + payload + b"\r\n")
        while True:
            line = self._line()
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise RuntimeError(f"IMAP command failed: {line[:300]!r}")
                return line

    def append_many(self, mailbox: str, raws: Sequence[bytes]) -> list[int]:
        """MULTIAPPEND ``raws`` to ``mailbox``; returns their UIDs."""
        parts = [f"APPEND {quote(mailbox)}".encode()]
        for raw in raws:
            data = crlf(raw)
            parts.append(b" {%d+}\r\n" % len(data) + data)
        reply = self.command(b"".join(parts))
        match = _APPENDUID_RE.search(reply)
        return _expand(match.group(2).decode()) if match else []

    def close(self) -> None:
        with contextlib.suppress(OSError, RuntimeError, ConnectionError):
            self.command(b"LOGOUT")
        self.sock.close()


def _expand(uid_set: str) -> list[int]:
    out: list[int] = []
    for part in uid_set.split(","):
        lo, _, hi = part.partition(":")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def append_all(account: ImapAccount, raws: Sequence[bytes], mailbox: str = "INBOX",
               chunk: int = 100) -> float:
    """APPEND every message in order over one connection; returns the seconds taken."""
    start = time.perf_counter()
    wire = ImapWire(account)
    try:
        for i in range(0, len(raws), chunk):
            wire.append_many(mailbox, raws[i:i + chunk])
    finally:
        wire.close()
    return time.perf_counter() - start


@contextlib.contextmanager
def imap(account: ImapAccount) -> Iterator[imaplib.IMAP4]:
    conn = imaplib.IMAP4(account.host, account.port, timeout=120)
    try:
        conn.login(account.user, account.password)
        yield conn
    finally:
        with contextlib.suppress(imaplib.IMAP4.error, OSError):
            conn.logout()


def count(account: ImapAccount, mailbox: str) -> int:
    with imap(account) as conn:
        status, data = conn.status(quote(mailbox), "(MESSAGES)")
    if status != "OK":
        return 0
    match = re.search(rb"MESSAGES (\d+)", data[0] if isinstance(data[0], bytes) else b"")
    return int(match.group(1)) if match else 0


@contextlib.contextmanager
def dovecot() -> Iterator[Dovecot]:
    if find_binary("dovecot") is None or os.geteuid() != 0:
        raise SystemExit("bench: needs Dovecot (apt-get install dovecot-imapd) and root")
    with Dovecot() as server:
        yield server


def new_account(server: Dovecot, prefix: str = "bench") -> ImapAccount:
    return server.add_user(f"{prefix}-{secrets.token_hex(4)}@example.test", PASSWORD)


def pg_base_url() -> str:
    return os.environ.get(PG_URL_VARIABLE, DEFAULT_PG_URL)


def postmaster_pid(url: str) -> int | None:
    """The local PostgreSQL server's main process (every backend's parent),
    or None when the server of ``url`` is not a process on this machine.

    Read while connected: the backend is then alive, and it is ours only if
    its process title names our connection's client port."""
    with psycopg.connect(libpq_url(make_url(url))) as conn:
        row = conn.execute("SELECT pg_backend_pid(), inet_client_port()").fetchone()
        if row is None or row[1] is None:
            return None  # a Unix socket: no port to recognise it by
        backend, port = int(row[0]), int(row[1])
        if f"({port})" not in cpu.command_line(backend):
            return None  # a remote server, or that pid is some other local process
        return cpu.parent_of(backend)


def wait_for_no_backends(url: str, timeout: float = 5.0) -> None:
    """Until no other session is connected to ``url``'s database: the
    daemon's backends have exited, and their CPU time is their parent's."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(libpq_url(make_url(url)), autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchone()
            if row is not None and row[0] == 0:
                return
            time.sleep(0.05)
    print(f"   warning: sessions still open on the database after {timeout:.0f} s; "
          "the PostgreSQL CPU figure may miss their time", flush=True)


@contextlib.contextmanager
def database(kind: str, folder: Path) -> Iterator[str]:
    """A fresh, empty database URL: a SQLite file in ``folder``, or a scratch
    PostgreSQL database (dropped afterwards)."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'helpdesk.db'}"
        return
    with scratch_database(pg_base_url()) as url:
        yield url


_LEFT: list[Path] = []
STALE_AFTER = 6 * 3600  # seconds


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    """A scratch folder, removed when the benchmarks exit, not when it is left.

    Removing thousands of files at once slows the next run's file creation
    on ext4: allocating an inode skips, one by one, those freed in the last
    half minute (``recently_deleted`` in ``find_inode_bit``, 60% of the
    kernel's time in a profile), and one create cost 400-700 µs instead of
    10-40. A pilot run removed just before the measured run made sending
    look several times slower than it is.
    """
    if not _LEFT:
        atexit.register(_remove_left)
        _remove_stale()
    path = Path(tempfile.mkdtemp(prefix=f"helpdesk-bench-{prefix}-"))
    _LEFT.append(path)
    yield path


def _remove_left() -> None:
    for path in _LEFT:
        shutil.rmtree(path, ignore_errors=True)


def _remove_stale() -> None:
    """Folders a killed run left behind (atexit does not run on SIGKILL),
    once they are old enough not to be a run still going beside this one."""
    cutoff = time.time() - STALE_AFTER
    for path in Path(tempfile.gettempdir()).glob("helpdesk-bench-*"):
        with contextlib.suppress(OSError):
            if path.is_dir() and path.stat().st_mtime < cutoff:
                shutil.rmtree(path, ignore_errors=True)


def imap_inbound(account: ImapAccount, **over: Any) -> dict[str, Any]:
    return {"kind": "imap", "host": account.host, "port": account.port, "security": "none",
            "username": account.user, "password": account.password, "poll_interval": 60,
            "timeout": 60, **over}


@dataclass(frozen=True)
class RunResult:
    seconds: float
    summary: dict[str, Any]
    peak_rss_mb: float  # the last VmHWM read before the process exited
    cpu_seconds: float  # user + system time of the child, from wait4(2)
    samples: tuple[tuple[float, int, float], ...]  # (seconds, progress, VmRSS MB)
    log: Path


def proc_status_mb(pid: int, field: str = "VmRSS") -> float:
    """A field of /proc/PID/status in MB (VmRSS now, VmHWM the peak so far)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def helpdesk(config: Path, *args: str, log: Path,
             progress: Callable[[], int] | None = None, every: float = 0.25) -> RunResult:
    """Run ``helpdesk --config CONFIG ARGS`` as a subprocess, timed from start to exit.

    The peak RSS is the child's VmHWM, read every 20 ms until it exits: its
    ``ru_maxrss`` would not do, since Linux carries the parent's high-water
    mark across fork and exec and this process holds the whole corpus. With
    ``progress``, VmRSS is sampled with its value every ``every`` s.
    """
    samples: list[tuple[float, int, float]] = []
    peak = float("nan")
    with log.open("wb") as err, tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.Popen([*CLI, "--config", str(config), *args], stdout=out, stderr=err)
        next_sample = start
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            hwm = proc_status_mb(proc.pid, "VmHWM")
            if hwm == hwm:
                peak = hwm
            now = time.perf_counter()
            if progress is not None and now >= next_sample:
                samples.append((now - start, progress(), proc_status_mb(proc.pid)))
                next_sample = now + every
            time.sleep(0.02)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        stdout = out.read().decode(errors="replace")
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"helpdesk {' '.join(args)} exited {proc.returncode}:\n{tail}")
    try:
        summary = json.loads(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        summary = {}
    return RunResult(seconds, summary, peak, usage.ru_utime + usage.ru_stime, tuple(samples),
                     log)


def upgrade(config: Path, log: Path) -> None:
    helpdesk(config, "db", "upgrade", log=log)
