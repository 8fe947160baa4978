"""Maildir outbound: a key names the file, so sending it again adds nothing."""

from __future__ import annotations

import asyncio
import socket
import stat
from pathlib import Path
from typing import Any

import pytest

from helpdesk.sender import Mail, MaildirTransport, SendResult


def _mail(key: str, rcpt: str = "carol@client.test", raw: bytes = b"x\r\n") -> Mail:
    return Mail("support@example.test", (rcpt, "team@example.test"), raw, key)


async def test_the_same_key_delivers_one_file(tmp_path: Path) -> None:
    transport = MaildirTransport(str(tmp_path / "sent"))
    raw = b"Subject: hi\r\n\r\nbody\r\n"
    [first] = await transport.send_many([_mail("000000000007", raw=raw)])
    # A crash before the batch's results were committed: the same rows again.
    [again, other] = await transport.send_many([
        _mail("000000000007", raw=raw), _mail("000000000008", "dave@client.test", raw)])
    assert first.ok and again.ok and other.ok
    files = sorted((tmp_path / "sent" / "new").iterdir())
    assert [f.name.split(".")[0] for f in files] == ["000000000007", "000000000008"]
    assert files[0].read_bytes().endswith(raw)
    assert b"X-Envelope-To: carol@client.test" in files[0].read_bytes()
    assert not list((tmp_path / "sent" / "tmp").iterdir())


async def test_without_a_key_every_send_is_a_new_file(tmp_path: Path) -> None:
    transport = MaildirTransport(str(tmp_path / "sent"))
    for _ in range(3):
        await transport.send_many([_mail("")])
    assert len(list((tmp_path / "sent" / "new").iterdir())) == 3


async def test_a_batch_is_one_thread_hop_and_one_file_per_mail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hops: list[object] = []
    to_thread = asyncio.to_thread

    async def counting(func: Any, /, *args: Any) -> Any:
        hops.append(func)
        return await to_thread(func, *args)

    monkeypatch.setattr(asyncio, "to_thread", counting)
    transport = MaildirTransport(str(tmp_path / "sent"))
    mails = [_mail(f"{i:012d}", f"c{i}@client.test", f"Subject: {i}\r\n\r\nbody\r\n".encode())
             for i in range(1, 4)]
    results = await transport.send_many(mails)
    assert results == [SendResult(ok=True)] * 3
    assert len(hops) == 1
    host = socket.gethostname()
    new = tmp_path / "sent" / "new"
    assert sorted(p.name for p in new.iterdir()) == [f"{m.key}.{host}" for m in mails]
    for mail in mails:
        assert (new / f"{mail.key}.{host}").read_bytes() == (
            b"X-Envelope-From: <support@example.test>\n"
            + f"X-Envelope-To: {mail.recipients[0]}, team@example.test\n".encode()
            + mail.raw)
    assert not list((tmp_path / "sent" / "tmp").iterdir())


async def test_a_batch_again_replaces_its_files(tmp_path: Path) -> None:
    transport = MaildirTransport(str(tmp_path / "sent"))
    await transport.send_many([_mail("000000000001", raw=b"first\r\n"), _mail("000000000002")])
    # The sender crashed before committing: the same rows come again.
    again = await transport.send_many([_mail("000000000001", raw=b"second\r\n"),
                                       _mail("000000000002")])
    assert all(r.ok for r in again)
    files = sorted((tmp_path / "sent" / "new").iterdir())
    assert [f.name.split(".")[0] for f in files] == ["000000000001", "000000000002"]
    assert files[0].read_bytes().endswith(b"\nsecond\r\n")
    assert not list((tmp_path / "sent" / "tmp").iterdir())


@pytest.mark.parametrize("blocked", ["new", "tmp"])
async def test_a_mail_that_cannot_be_written_fails_alone(tmp_path: Path, blocked: str) -> None:
    transport = MaildirTransport(str(tmp_path / "sent"))
    host = socket.gethostname()
    # Something else holds the mail's name: the rename into new/ (or the
    # create in tmp/) fails for that mail only.
    (tmp_path / "sent" / blocked / f"000000000002.{host}").mkdir(parents=True)
    results = await transport.send_many([_mail(f"{i:012d}") for i in range(1, 4)])
    assert [r.ok for r in results] == [True, False, True]
    assert not results[1].permanent and "IsADirectoryError" in results[1].detail
    new = tmp_path / "sent" / "new"
    assert sorted(p.name for p in new.iterdir() if p.is_file()) == [
        f"000000000001.{host}", f"000000000003.{host}"]
    leftovers = [p for p in (tmp_path / "sent" / "tmp").iterdir() if p.is_file()]
    assert not leftovers


async def test_files_get_the_mode_write_bytes_gave(tmp_path: Path) -> None:
    transport = MaildirTransport(str(tmp_path / "sent"))
    await transport.send_many([_mail("000000000001")])
    reference = tmp_path / "reference"
    reference.write_bytes(b"")  # what delivery used before: 0o666 less the umask
    [sent] = (tmp_path / "sent" / "new").iterdir()
    assert stat.S_IMODE(sent.stat().st_mode) == stat.S_IMODE(reference.stat().st_mode)
