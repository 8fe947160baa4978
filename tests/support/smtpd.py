"""An in-process SMTP server that captures what the code under test sends, and can refuse it.

Usage::

    with SmtpCapture() as smtp:
        # point the code under test at smtp.host / smtp.port
        [message] = smtp.wait_for_messages(1)  # or: await smtp.wait_for_messages_async(1)
        assert message.rcpt_tos == ("customer@example.test",)

    smtp.refuse("RCPT", 421, times=2)   # the next 2 transactions get "421" at RCPT TO, then accept
    smtp.refuse("DATA", 550)            # every transaction gets "550" after DATA, until accept()
    smtp.accept()

It runs aiosmtpd's threaded ``Controller`` on 127.0.0.1 (its own thread and event loop), so sync
tests and tests with their own event loop can both use it. A *transaction* (an *attempt*) starts
at MAIL FROM; a fault is decided there, once per transaction, so a message with several
recipients is refused or accepted as a whole. ``times`` counts transactions, not recipients.
Accepted messages are kept as ``CapturedMessage`` with the raw bytes as received (after SMTP
dot-unstuffing), the envelope and the time of receipt. All state is guarded by one lock.

Note: aiosmtpd keeps the session open after a 421 reply; aiosmtplib closes its side on 421, as a
real server would have done.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from tests.support.lifecycle import Managed
from tests.support.ports import LOOPBACK, free_port
from tests.support.tls import TlsFiles

Stage = Literal["MAIL", "RCPT", "DATA"]

_DEFAULT_TEXT = {4: "Service temporarily unavailable", 5: "Requested action not taken"}
_PORT_ATTEMPTS = 3


@dataclass(frozen=True)
class CapturedMessage:
    """One message the server accepted."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes
    received_at: datetime


@dataclass(frozen=True)
class SmtpFault:
    """Refuse transactions at ``stage`` with ``code`` and ``text``."""

    stage: Stage
    code: int
    text: str

    @property
    def reply(self) -> str:
        return f"{self.code} {self.text}"


class _Handler:
    """aiosmtpd handler hooks; every decision is delegated to the owning ``SmtpCapture``."""

    def __init__(self, owner: SmtpCapture) -> None:
        self._owner = owner
        # The fault chosen at MAIL FROM for the transaction now open on each session.
        self._faults: weakref.WeakKeyDictionary[Session, SmtpFault | None] = (
            weakref.WeakKeyDictionary()
        )

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        fault = self._owner._begin_transaction()
        self._faults[session] = fault
        if fault is not None and fault.stage == "MAIL":
            return fault.reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        fault = self._faults.get(session)
        if fault is not None and fault.stage == "RCPT":
            return fault.reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        fault = self._faults.pop(session, None)
        if fault is not None and fault.stage == "DATA":
            return fault.reply
        raw = envelope.original_content or b""
        self._owner._record(
            CapturedMessage(
                mail_from=envelope.mail_from or "",
                rcpt_tos=tuple(envelope.rcpt_tos),
                raw=raw,
                received_at=datetime.now(UTC),
            )
        )
        return "250 OK: queued"


class SmtpCapture(Managed):
    """A capturing SMTP server on a free loopback port."""

    host = LOOPBACK

    def __init__(
        self,
        tls: TlsFiles | None = None,
        credentials: tuple[str, str] | None = None,
        implicit_tls: bool = False,
    ) -> None:
        """``tls`` offers STARTTLS (or, with ``implicit_tls``, TLS from the first
        byte, RFC 8314); ``credentials`` requires AUTH (after TLS)."""
        self._tls = tls
        self._implicit = implicit_tls
        self._credentials = credentials
        self.logins: list[str] = []
        self._cond = threading.Condition()
        self._messages: list[CapturedMessage] = []
        self._attempts = 0
        self._refused = 0
        self._fault: SmtpFault | None = None
        self._fault_times: int | None = None
        self._controller: Controller | None = None
        self._port: int | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        if self._controller is not None:
            raise RuntimeError("the SMTP server is already running")
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            port = free_port()
            # A fixed server hostname: otherwise aiosmtpd asks DNS for this machine's FQDN.
            options: dict[str, Any] = {}
            if self._tls is not None:
                context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                context.load_cert_chain(self._tls.cert, self._tls.key)
                if self._implicit:
                    options.update(ssl_context=context)
                else:
                    options.update(tls_context=context, require_starttls=True)
            if self._credentials is not None:
                options.update(authenticator=self._authenticate, auth_required=True,
                               auth_require_tls=self._tls is not None)
            controller = Controller(
                _Handler(self), hostname=self.host, port=port, server_hostname="smtp.test",
                **options,
            )
            try:
                controller.start()
            except OSError:
                controller.stop(no_assert=True)
                if not controller.loop.is_closed():
                    controller.loop.close()
                if attempt == _PORT_ATTEMPTS:
                    raise
                continue
            self._controller, self._port = controller, port
            break
        return self

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        login = getattr(auth_data, "login", b"")
        password = getattr(auth_data, "password", b"")
        expected = self._credentials
        ok = expected is not None and (login, password) == tuple(x.encode() for x in expected)
        if ok:
            self.logins.append(login.decode())
        return AuthResult(success=ok, handled=False)

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the SMTP server is not running")
        return self._port

    # -- what was received -----------------------------------------------------------------

    @property
    def messages(self) -> list[CapturedMessage]:
        with self._cond:
            return list(self._messages)

    @property
    def attempts(self) -> int:
        """Transactions begun (MAIL FROM commands), accepted or refused."""
        with self._cond:
            return self._attempts

    @property
    def refused(self) -> int:
        """Transactions that drew a fault (counted at MAIL FROM)."""
        with self._cond:
            return self._refused

    def clear(self) -> None:
        with self._cond:
            self._messages.clear()
            self._attempts = self._refused = 0

    def wait_for_messages(self, count: int, timeout: float = 5.0) -> list[CapturedMessage]:
        """Block until at least ``count`` messages arrived; returns all of them."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._messages) >= count, timeout):
                raise TimeoutError(self._timeout_text(count, timeout))
            return list(self._messages)

    async def wait_for_messages_async(
        self, count: int, timeout: float = 5.0
    ) -> list[CapturedMessage]:
        """Like ``wait_for_messages`` without blocking the caller's event loop."""
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                if len(self._messages) >= count:
                    return list(self._messages)
            if time.monotonic() >= deadline:
                raise TimeoutError(self._timeout_text(count, timeout))
            await asyncio.sleep(0.01)

    def _timeout_text(self, count: int, timeout: float) -> str:
        return (
            f"{len(self._messages)} of {count} messages arrived within {timeout} s "
            f"({self._attempts} attempts, {self._refused} refused)"
        )

    # -- faults ----------------------------------------------------------------------------

    def refuse(
        self, stage: Stage, code: int, text: str | None = None, *, times: int | None = None
    ) -> None:
        """Refuse the next ``times`` transactions (all, if None) at ``stage`` with ``code``."""
        if not 400 <= code <= 599:
            raise ValueError("a refusal needs a 4xx or 5xx code")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1")
        fault = SmtpFault(stage, code, text or _DEFAULT_TEXT[code // 100])
        with self._cond:
            self._fault, self._fault_times = fault, times

    def accept(self) -> None:
        """Accept every transaction from now on."""
        with self._cond:
            self._fault, self._fault_times = None, None

    def _begin_transaction(self) -> SmtpFault | None:
        with self._cond:
            self._attempts += 1
            fault = self._fault
            if fault is not None:
                self._refused += 1
                if self._fault_times is not None:
                    self._fault_times -= 1
                    if self._fault_times == 0:
                        self._fault = self._fault_times = None
            return fault

    def _record(self, message: CapturedMessage) -> None:
        with self._cond:
            self._messages.append(message)
            self._cond.notify_all()
