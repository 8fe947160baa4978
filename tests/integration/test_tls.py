"""TLS, STARTTLS and AUTH against real servers with a throwaway CA."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpdesk.ingest.imap import ImapError, ImapSource
from helpdesk.sender import SmtpTransport
from helpdesk.settings import InboundSettings, OutboundSettings
from tests.support.config import cli, cli_json, imap_inbound, smtp_outbound, write_config
from tests.support.dovecot import Dovecot, ImapAccount
from tests.support.mail import make_mail
from tests.support.proxy import TcpProxy
from tests.support.services import require_dovecot
from tests.support.smtpd import SmtpCapture
from tests.support.tls import TlsFiles, make_tls_files


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_dovecot(tls_files: TlsFiles) -> Iterator[Dovecot]:
    require_dovecot()
    with Dovecot(tls=tls_files) as server:
        yield server


@pytest.fixture
def tls_account(tls_dovecot: Dovecot) -> ImapAccount:
    import secrets

    return tls_dovecot.add_user(f"tls-{secrets.token_hex(4)}@example.test", "secret")


@pytest.mark.dovecot
@pytest.mark.parametrize("mode", ["tls", "starttls"])
def test_imap_over_tls_and_starttls(
    mode: str, tls_dovecot: Dovecot, tls_account: ImapAccount, tls_files: TlsFiles,
    tmp_path: Path,
) -> None:
    tls_dovecot.append(tls_account.user, "INBOX", make_mail(message_id=f"<{mode}@client.test>"))
    port = tls_dovecot.tls_port if mode == "tls" else tls_account.port
    config = write_config(tmp_path, inbound=imap_inbound(
        tls_account, security=mode, port=port, ca_file=str(tls_files.ca)))
    code, _, err = cli(config, "run", "--once")
    assert code == 0, err
    assert [t["subject"] for t in cli_json(config, "tickets", "list")] == ["Printer is broken"]


@pytest.mark.dovecot
def test_imap_refuses_a_certificate_it_cannot_verify(
    tls_dovecot: Dovecot, tls_account: ImapAccount, tmp_path: Path
) -> None:
    tls_dovecot.append(tls_account.user, "INBOX", make_mail())
    config = write_config(tmp_path, inbound=imap_inbound(
        tls_account, security="tls", port=tls_dovecot.tls_port))  # system CAs only
    code, _, err = cli(config, "run", "--once")
    assert code != 0 and "CERTIFICATE_VERIFY_FAILED" in err
    assert cli_json(config, "tickets", "list") == []
    assert len(tls_dovecot.list_uids(tls_account.user, "INBOX")) == 1  # nothing lost


def test_smtp_starttls_with_auth_from_the_environment(
    tls_files: TlsFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SmtpCapture(tls=tls_files, credentials=("helpdesk", "s3cret")) as server:
        config = write_config(tmp_path, outbound=smtp_outbound(
            server, security="starttls", username="helpdesk", ca_file=str(tls_files.ca)))
        raw = tmp_path / "in.eml"
        raw.write_bytes(make_mail(sender="carol@client.test", message_id="<tls@client.test>"))
        assert cli(config, "ingest", str(raw))[0] == 0

        monkeypatch.setenv("HELPDESK_OUTBOUND__PASSWORD", "wrong")
        assert cli(config, "run", "--once")[0] == 0
        rows = cli_json(config, "outbox", "list")
        assert {r["status"] for r in rows} == {"queued"}  # kept, not failed
        assert all("authentication failed" in r["last_error"] for r in rows)
        assert server.messages == []

        monkeypatch.setenv("HELPDESK_OUTBOUND__PASSWORD", "s3cret")
        monkeypatch.setenv("HELPDESK_CLOCK_OFFSET_SECONDS", "3600")  # past the backoff
        assert cli(config, "run", "--once")[0] == 0
        assert sorted(m.rcpt_tos[0] for m in server.messages) == [
            "carol@client.test", "team@example.test"]
        assert server.logins and set(server.logins) == {"helpdesk"}


def test_smtp_over_implicit_tls(tls_files: TlsFiles, tmp_path: Path) -> None:
    with SmtpCapture(tls=tls_files, implicit_tls=True) as server:
        config = write_config(tmp_path, outbound=smtp_outbound(
            server, security="tls", ca_file=str(tls_files.ca)))
        raw = tmp_path / "in.eml"
        raw.write_bytes(make_mail(sender="carol@client.test", message_id="<itls@client.test>"))
        assert cli(config, "ingest", str(raw))[0] == 0
        assert cli(config, "run", "--once")[0] == 0
        assert sorted(m.rcpt_tos[0] for m in server.messages) == [
            "carol@client.test", "team@example.test"]
        # Without our CA the server cannot be verified: nothing is sent, and
        # the mail waits in the outbox with the reason.
        untrusted = write_config(tmp_path, outbound=smtp_outbound(server, security="tls"))
        second = tmp_path / "second.eml"
        second.write_bytes(make_mail(sender="dan@client.test", message_id="<itls2@client.test>"))
        assert cli(untrusted, "ingest", str(second))[0] == 0
        assert cli(untrusted, "run", "--once")[0] == 0
        assert len(server.messages) == 2
        waiting = cli_json(untrusted, "outbox", "list", "--status", "queued")
        assert {r["to"] for r in waiting} == {"dan@client.test", "team@example.test"}
        assert all("CERTIFICATE_VERIFY_FAILED" in r["last_error"] for r in waiting)


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_closing_the_smtp_connection_closes_its_socket(tls_files: TlsFiles, security: str
                                                       ) -> None:
    """Once ``close`` returns, the socket is closed: a TLS close that still
    waits for the server's close_notify would leave it open when ``run
    --once`` ends its event loop."""
    with SmtpCapture(tls=tls_files, implicit_tls=security == "tls") as server:
        cfg = OutboundSettings(kind="smtp", host=server.host, port=server.port,
                               security=security, ca_file=str(tls_files.ca), timeout=10)

        async def send_and_close() -> tuple[bool, int]:
            transport = SmtpTransport(cfg)
            result = await transport.send("helpdesk@example.test", ["carol@client.test"],
                                          make_mail(sender="helpdesk@example.test"))
            client = transport._client
            assert client is not None and client.transport is not None
            sock = client.transport.get_extra_info("socket")
            await transport.close()
            return result.ok, sock.fileno()

        ok, fileno = asyncio.run(send_and_close())
    assert ok and len(server.messages) == 1
    assert fileno == -1


@pytest.mark.dovecot
@pytest.mark.parametrize("mode", ["tls", "starttls"])
def test_closing_the_imap_connection_closes_its_socket(
    mode: str, tls_dovecot: Dovecot, tls_account: ImapAccount, tls_files: TlsFiles
) -> None:
    """The same for IMAP after LOGOUT."""
    port = tls_dovecot.tls_port if mode == "tls" else tls_account.port
    assert port is not None
    cfg = InboundSettings(**imap_inbound(tls_account, security=mode, port=port,
                                         ca_file=str(tls_files.ca)))

    async def open_and_close() -> int:
        source = ImapSource(cfg, max_bytes=1 << 20)
        await source.open()
        assert source._client is not None
        sock = source._client.protocol.transport.get_extra_info("socket")
        await source.close()
        return int(sock.fileno())

    assert asyncio.run(open_and_close()) == -1


@pytest.mark.dovecot
@pytest.mark.parametrize("mode", ["tls", "starttls"])
def test_a_connection_cut_during_idle_ends_it_at_once(
    mode: str, tls_dovecot: Dovecot, tls_account: ImapAccount, tls_files: TlsFiles,
) -> None:
    """IDLE ends with "connection lost" as soon as the connection drops, over
    TLS as over plain TCP: the callback reaches the protocol either way, and
    nothing then waits out the command timeout for an answer to DONE that
    cannot come (which held off every reconnect by that timeout)."""
    port = tls_dovecot.tls_port if mode == "tls" else tls_account.port
    assert port is not None
    with TcpProxy("127.0.0.1", port) as proxy:
        cfg = InboundSettings(**imap_inbound(tls_account, security=mode, port=proxy.port,
                                             ca_file=str(tls_files.ca), timeout=120))

        async def idle_then_cut() -> str:
            source = ImapSource(cfg, max_bytes=1 << 20)
            await source.open()
            waiting = asyncio.ensure_future(source.wait(timeout=120))
            try:
                await asyncio.sleep(0.5)
                assert not waiting.done()
                proxy.cut_all()
                # A quarter of the IDLE's and the command timeout's 120 s:
                # only noticing the cut ends the wait in time.
                done, _ = await asyncio.wait({waiting}, timeout=30)
                assert waiting in done
                with pytest.raises(ImapError) as lost:
                    waiting.result()
                return str(lost.value)
            finally:
                waiting.cancel()
                await source.close()

        assert "connection lost" in asyncio.run(idle_then_cut())
