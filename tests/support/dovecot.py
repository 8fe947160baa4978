"""A real, throw-away Dovecot IMAP server for integration tests.

Usage::

    with Dovecot({"support@example.test": "secret"}) as server:
        server.append("support@example.test", "INBOX", raw_bytes)
        assert server.list_uids("support@example.test", "INBOX") == [1]
        # point the code under test at server.host / server.port

``Dovecot`` writes a self-contained configuration into a fresh temporary directory, runs
``dovecot -F`` (foreground, so the master is our child and can always be reaped), waits for the
IMAP greeting on a free loopback port and, on ``stop()``, sends SIGTERM to the master (that
child) and waits for it to exit. ``start()`` cleans up after itself
when it fails and prints Dovecot's log; an ``atexit`` hook stops any server still running when
the interpreter exits, so an aborted test run does not leave a daemon behind.

Dovecot needs root to switch to its ``dovecot``/``dovenull`` users (see the guide, "Running real
servers in tests"). Users authenticate with ``{PLAIN}`` passwords from passwd-files, one file per
user, so a user added with ``add_user()`` can log in at once while the server runs. Every user
gets a Maildir under ``<dir>/mail/<user>``. IDLE, MOVE, UIDPLUS, CONDSTORE and ENABLE are available.

Test-side helpers (``append``, ``list_uids``, ``fetch_all``, ...) use the standard library's
synchronous ``imaplib``: one short connection per call, simple and independent of any event
loop. Mailbox names must be ASCII (no modified UTF-7 encoding is done). ``imaplib`` turns bare LF
line endings into CRLF when appending, as an MTA would. ``change_uidvalidity()`` uses
``doveadm mailbox update --uid-validity``: the messages and their UIDs stay, only UIDVALIDITY
changes, and any session that has the mailbox selected is disconnected by Dovecot with
"IMAP session state is inconsistent" (what a client sees when a server is migrated).
"""

from __future__ import annotations

import atexit
import contextlib
import imaplib
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Self

from tests.support.lifecycle import Managed
from tests.support.ports import LOOPBACK, free_port
from tests.support.tls import TlsFiles

_SEARCH_DIRS = ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin")
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0
_PORT_ATTEMPTS = 3
_UID_RE = re.compile(rb"UID (\d+)")
_FLAGS_RE = re.compile(rb"FLAGS \(([^)]*)\)")
_UIDVALIDITY_RE = re.compile(rb"UIDVALIDITY (\d+)")
_USER_RE = re.compile(r"[a-z0-9][a-z0-9._+-]*(@[a-z0-9.-]+)?")
_LIST_RE = re.compile(rb'^\([^)]*\) (?:"[^"]*"|NIL) (.+)$')


class DovecotError(RuntimeError):
    """Dovecot could not be started, or a helper command failed."""


@dataclass(frozen=True)
class ImapAccount:
    """Everything a client needs to log in to one mailbox account."""

    host: str
    port: int
    user: str
    password: str


def find_binary(name: str) -> str | None:
    """Find ``name`` on PATH or in the usual system directories (sbin is often not on PATH)."""
    found = shutil.which(name)
    if found:
        return found
    for directory in _SEARCH_DIRS:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def quote(name: str) -> str:
    """Quote a mailbox name as an IMAP quoted string (imaplib sends arguments verbatim)."""
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


_running: weakref.WeakSet[Dovecot] = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_running):
        server.stop()


class Dovecot(Managed):
    """One Dovecot instance in its own directory, on its own loopback port."""

    host = LOOPBACK

    def __init__(
        self,
        users: Mapping[str, str] | None = None,
        *,
        binary: str | None = None,
        tls: TlsFiles | None = None,
    ):
        self._tls = tls
        self.tls_port: int | None = None
        self._users: dict[str, str] = dict(users or {})
        for user, password in self._users.items():
            _validate(user, password)
        self._binary = binary
        self._dir: Path | None = None
        self._port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise DovecotError("Dovecot is not running")
        return self._port

    @property
    def master_pid(self) -> int:
        """Dovecot's master process, which forks a process per connection."""
        if self._process is None:
            raise DovecotError("Dovecot is not running")
        # Started with -F: the master stays in the foreground, our child.
        return self._process.pid

    @property
    def directory(self) -> Path:
        if self._dir is None:
            raise DovecotError("Dovecot is not running")
        return self._dir

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> Self:
        """Start the server; returns once it greets IMAP clients. Raises ``DovecotError``."""
        if self._process is not None:
            raise DovecotError("Dovecot is already running")
        binary = self._binary or find_binary("dovecot")
        if binary is None:
            raise DovecotError("the dovecot binary was not found (Debian package dovecot-imapd)")
        if os.geteuid() != 0:
            raise DovecotError("the test Dovecot must be started as root (see the guide)")
        self._dir = self._make_directory()
        _running.add(self)
        try:
            for attempt in range(1, _PORT_ATTEMPTS + 1):
                self._port = free_port()
                self._write_config()
                for name in ("stderr.log", "dovecot.log"):  # log_text() tells of this try only
                    (self._dir / name).unlink(missing_ok=True)
                if self._spawn(binary):
                    return self
                port_taken = "Address already in use" in self.log_text()
                self._reap()
                if not port_taken or attempt == _PORT_ATTEMPTS:
                    break
            log = self.log_text()
            print(f"--- Dovecot failed to start; its log:\n{log}", file=sys.stderr)
            raise DovecotError(f"Dovecot failed to start on port {self._port}:\n{log}")
        except BaseException:
            self.stop()
            raise

    def restart(self) -> None:
        """Stop and start the master on the same port, keeping all mail (clients are cut off)."""
        binary = self._binary or find_binary("dovecot")
        if binary is None or self._dir is None:
            raise DovecotError("Dovecot is not running")
        self._reap()
        if not self._spawn(binary):
            log = self.log_text()
            self.stop()
            raise DovecotError(f"Dovecot failed to restart:\n{log}")

    def stop(self) -> None:
        """Stop the server (SIGTERM to the master pid, then wait) and delete its directory."""
        self._reap()
        _running.discard(self)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        self._port = None

    def log_text(self) -> str:
        """Dovecot's stderr (early fatal errors) followed by its log file."""
        if self._dir is None:
            return ""
        parts = []
        for name in ("stderr.log", "dovecot.log"):
            path = self._dir / name
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "".join(parts)

    def log_errors(self) -> list[str]:
        """Lines of Dovecot's log that report an error, a fatal error or a panic."""
        markers = (" Error: ", " Fatal: ", " Panic: ")
        return [line for line in self.log_text().splitlines() if any(m in line for m in markers)]

    def _make_directory(self) -> Path:
        # Dovecot's unprivileged processes must reach the directory: mkdtemp makes it 0700.
        root = Path(tempfile.mkdtemp(prefix="helpdesk-dovecot-"))
        root.chmod(0o755)
        for parent in root.parents:
            if not parent.stat().st_mode & stat.S_IXOTH:
                shutil.rmtree(root, ignore_errors=True)
                raise DovecotError(f"{parent} is not traversable by other users; set TMPDIR")
        try:
            entry = pwd.getpwnam("dovecot")
        except KeyError:
            shutil.rmtree(root, ignore_errors=True)
            raise DovecotError("there is no 'dovecot' system user (dovecot-core)") from None
        mail = root / "mail"
        mail.mkdir()
        os.chown(mail, entry.pw_uid, entry.pw_gid)
        for name in ("run", "state"):
            (root / name).mkdir(mode=0o755)
        for user in self._users:
            self._write_passwd(root, user)
        return root

    def _write_passwd(self, root: Path, user: str) -> None:
        # One passwd-file per user (the passdb path is ".../passwd.d/%u"): Dovecot opens a new
        # user's file on first use, whereas a changed shared file is re-read at most once a
        # second and failed logins meanwhile earn an auth penalty of several seconds.
        folder = root / "passwd.d"
        folder.mkdir(mode=0o755, exist_ok=True)
        tmp = folder / f".{user}.tmp"
        tmp.write_text(f"{user}:{{PLAIN}}{self._users[user]}::::::\n")
        tmp.chmod(0o644)
        tmp.replace(folder / user)

    def _write_config(self) -> None:
        root = self.directory
        if any(ch.isspace() for ch in str(root)):
            raise DovecotError(f"the test directory {root} must not contain whitespace")
        ssl = "ssl = no"
        imaps = 0
        if self._tls is not None:
            # Implicit TLS on the imaps port, STARTTLS (RFC 3501 §6.2.1) on the plain one.
            self.tls_port = imaps = free_port()
            ssl = (f"ssl = yes\nssl_cert = <{self._tls.cert}\nssl_key = <{self._tls.key}")
            if Path("/usr/share/dovecot/dh.pem").exists():
                ssl += "\nssl_dh = </usr/share/dovecot/dh.pem"
        (root / "dovecot.conf").write_text(
            _CONFIG.format(root=root, port=self.port, ssl=ssl, imaps=imaps)
        )

    def _spawn(self, binary: str) -> bool:
        """Run Dovecot and wait for its greeting; False if it exited or never greeted."""
        root = self.directory
        self._stderr = (root / "stderr.log").open("ab")
        self._process = subprocess.Popen(
            [binary, "-F", "-c", str(root / "dovecot.conf")],
            stdin=subprocess.DEVNULL,
            stdout=self._stderr,
            stderr=self._stderr,
            start_new_session=True,
        )
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            if self._greets():
                return True
            time.sleep(0.02)
        return False

    def _greets(self) -> bool:
        # imap-login sends its greeting only once the auth process is ready.
        try:
            with (
                socket.create_connection((self.host, self.port), timeout=1.0) as sock,
                sock.makefile("rb") as stream,  # closed too, or the socket outlives this
            ):
                return stream.readline().startswith(b"* OK")
        except OSError:
            return False

    def _reap(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)  # -F: the master itself
            try:
                process.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)  # its own session: all its children
                process.wait()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    # -- accounts --------------------------------------------------------------------------

    def add_user(self, user: str, password: str) -> ImapAccount:
        """Add a user, also while the server runs; returns its account.

        A new user can log in at once. Changing an existing user's password takes up to a
        second: Dovecot re-reads a changed passwd-file at most once a second.
        """
        _validate(user, password)
        self._users[user] = password
        if self._dir is not None:
            self._write_passwd(self._dir, user)
        return self.account(user)

    def account(self, user: str) -> ImapAccount:
        return ImapAccount(self.host, self.port, user, self._users[user])

    @property
    def users(self) -> list[str]:
        return list(self._users)

    # -- synchronous IMAP helpers for tests ------------------------------------------------

    @contextlib.contextmanager
    def connect(self, user: str) -> Iterator[imaplib.IMAP4]:
        """A logged-in ``imaplib`` connection for ``user``, logged out afterwards."""
        conn = imaplib.IMAP4(self.host, self.port, timeout=10)
        try:
            _check(conn.login(user, self._users[user]), "LOGIN")
            yield conn
        finally:
            try:
                conn.logout()
            except (imaplib.IMAP4.error, OSError):
                conn.sock.close()

    def append(self, user: str, mailbox: str, raw: bytes, *, flags: str | None = None) -> None:
        """APPEND ``raw`` to ``mailbox`` (which must exist); ``flags`` like ``r"(\\Seen)"``."""
        with self.connect(user) as conn:
            _check(conn.append(quote(mailbox), flags, None, raw), "APPEND")

    def create_mailbox(self, user: str, mailbox: str) -> None:
        with self.connect(user) as conn:
            _check(conn.create(quote(mailbox)), "CREATE")

    def delete_mailbox(self, user: str, mailbox: str) -> None:
        with self.connect(user) as conn:
            _check(conn.delete(quote(mailbox)), "DELETE")

    def list_mailboxes(self, user: str) -> list[str]:
        with self.connect(user) as conn:
            data = _check(conn.list(), "LIST")
        names = []
        for line in data:
            if isinstance(line, bytes) and (match := _LIST_RE.match(line)):
                names.append(match.group(1).decode().strip('"'))
        return sorted(names)

    def list_uids(self, user: str, mailbox: str) -> list[int]:
        with self.connect(user) as conn:
            return _uids(conn, mailbox)

    def fetch_all(self, user: str, mailbox: str) -> list[bytes]:
        """The raw bytes of every message in ``mailbox``, in UID order (does not set \\Seen)."""
        return list(self.fetch_by_uid(user, mailbox).values())

    def fetch_by_uid(self, user: str, mailbox: str) -> dict[int, bytes]:
        with self.connect(user) as conn:
            if not _uids(conn, mailbox):
                return {}
            data = _check(conn.uid("FETCH", "1:*", "(UID BODY.PEEK[])"), "FETCH")
        messages: dict[int, bytes] = {}
        for item in data:
            if isinstance(item, tuple) and (match := _UID_RE.search(item[0])):
                messages[int(match.group(1))] = item[1]
        return dict(sorted(messages.items()))

    def flags(self, user: str, mailbox: str) -> dict[int, frozenset[str]]:
        """The flags of every message, by UID (e.g. ``{1: frozenset({"\\\\Seen"})}``)."""
        with self.connect(user) as conn:
            if not _uids(conn, mailbox):
                return {}
            data = _check(conn.uid("FETCH", "1:*", "(UID FLAGS)"), "FETCH")
        result: dict[int, frozenset[str]] = {}
        for item in data:
            line = item[0] if isinstance(item, tuple) else item
            if not isinstance(line, bytes):
                continue
            uid, flags = _UID_RE.search(line), _FLAGS_RE.search(line)
            if uid and flags:
                result[int(uid.group(1))] = frozenset(flags.group(1).decode().split())
        return dict(sorted(result.items()))

    def uidvalidity(self, user: str, mailbox: str) -> int:
        with self.connect(user) as conn:
            data = _check(conn.status(quote(mailbox), "(UIDVALIDITY)"), "STATUS")
        for line in data:
            if isinstance(line, bytes) and (match := _UIDVALIDITY_RE.search(line)):
                return int(match.group(1))
        raise DovecotError(f"no UIDVALIDITY in STATUS response: {data!r}")

    def change_uidvalidity(self, user: str, mailbox: str, new: int | None = None) -> int:
        """Give ``mailbox`` a new UIDVALIDITY, keeping its messages; returns the new value.

        Sessions that have the mailbox selected are disconnected by Dovecot.
        """
        old = self.uidvalidity(user, mailbox)
        value = new if new is not None else old % 0xFFFFFFFE + 1
        if value == old or not 0 < value <= 0xFFFFFFFF:
            raise ValueError(f"UIDVALIDITY {value} is not a valid change from {old}")
        self.doveadm("mailbox", "update", "-u", user, "--uid-validity", str(value), mailbox)
        return value

    def doveadm(self, *args: str) -> str:
        """Run ``doveadm`` against this instance's configuration; returns its output."""
        binary = find_binary("doveadm")
        if binary is None:
            raise DovecotError("the doveadm binary was not found (Debian package dovecot-core)")
        config = str(self.directory / "dovecot.conf")
        done = subprocess.run(
            [binary, "-c", config, *args], capture_output=True, text=True, timeout=30
        )
        if done.returncode != 0:
            raise DovecotError(f"doveadm {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def reset_user(self, user: str) -> None:
        """Delete every mailbox but INBOX and expunge INBOX, over IMAP."""
        names = [name for name in self.list_mailboxes(user) if name.upper() != "INBOX"]
        with self.connect(user) as conn:
            # Children first; a parent that only existed as a path (\\NonExistent) is then gone.
            for name in sorted(names, key=len, reverse=True):
                status, data = conn.delete(quote(name))
                if status != "OK" and b"[NONEXISTENT]" not in b" ".join(data):
                    raise DovecotError(f"DELETE {name} failed: {status} {data!r}")
            exists = _check(conn.select("INBOX"), "SELECT")
            if exists and exists[0] not in (b"0", "0"):
                _check(conn.store("1:*", "+FLAGS.SILENT", r"(\Deleted)"), "STORE")
                _check(conn.expunge(), "EXPUNGE")


def _validate(user: str, password: str) -> None:
    # Dovecot lower-cases user names (auth_username_format = %Lu) and names a file after each.
    if not _USER_RE.fullmatch(user) or not password or any(ch in password for ch in ":\r\n"):
        raise ValueError(f"unsuitable test user name or password: {user!r}")


def _check(result: tuple[str, list[Any]], command: str) -> list[Any]:
    status, data = result
    if status != "OK":
        raise DovecotError(f"{command} failed: {status} {data!r}")
    return data


def _uids(conn: imaplib.IMAP4, mailbox: str) -> list[int]:
    _check(conn.select(quote(mailbox), readonly=True), "SELECT")
    data = _check(conn.uid("SEARCH", "ALL"), "SEARCH")
    first = data[0] if data else b""
    return sorted(int(uid) for uid in first.split()) if isinstance(first, bytes) else []


# Kept deliberately small; every line is here for a reason a test depends on.
_CONFIG = """\
protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
first_valid_uid = 1
{ssl}
disable_plaintext_auth = no
auth_mechanisms = plain login
# Tests try wrong passwords on purpose: answer soon (failures are still flushed every 0.5 s).
auth_failure_delay = 0
mail_location = maildir:~/Maildir
mail_fsync = never
# Fallback when inotify misses a change: IDLE clients hear of new mail within a second.
mailbox_idle_check_interval = 1 secs
# Tests (and daemons under test that reconnect) open many connections at once.
default_process_limit = 200
default_client_limit = 2000
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd.d/%u
}}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home={root}/mail/%u
}}
namespace inbox {{
  inbox = yes
  separator = /
}}
protocol imap {{
  mail_max_userip_connections = 1000
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps}
  }}
}}
service anvil {{
  chroot =
  # No auth penalty socket, so no auth penalty: after a failed login Dovecot would otherwise
  # delay every later login from 127.0.0.1, good passwords too, by 2 to 15 seconds.
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""
