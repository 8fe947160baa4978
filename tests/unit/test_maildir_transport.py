"""Maildir outbound: a key names the file, so sending it again adds nothing."""

from __future__ import annotations

from pathlib import Path

from helpdesk.sender import MaildirTransport


async def test_the_same_key_delivers_one_file(tmp_path: Path) -> None:
    transport = MaildirTransport(str(tmp_path / "sent"))
    raw = b"Subject: hi\r\n\r\nbody\r\n"
    first = await transport.send("support@example.test", ["carol@client.test"], raw,
                                 key="000000000007")
    # A crash before the batch's results were committed: the same rows again.
    again = await transport.send("support@example.test", ["carol@client.test"], raw,
                                 key="000000000007")
    other = await transport.send("support@example.test", ["dave@client.test"], raw,
                                 key="000000000008")
    assert first.ok and again.ok and other.ok
    files = sorted((tmp_path / "sent" / "new").iterdir())
    assert [f.name.split(".")[0] for f in files] == ["000000000007", "000000000008"]
    assert files[0].read_bytes().endswith(raw)
    assert b"X-Envelope-To: carol@client.test" in files[0].read_bytes()
    assert not list((tmp_path / "sent" / "tmp").iterdir())


async def test_without_a_key_every_send_is_a_new_file(tmp_path: Path) -> None:
    transport = MaildirTransport(str(tmp_path / "sent"))
    for _ in range(3):
        await transport.send("a@example.test", ["b@example.test"], b"x\r\n")
    assert len(list((tmp_path / "sent" / "new").iterdir())) == 3
