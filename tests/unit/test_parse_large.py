"""Large messages are parsed as a skeleton, their big bodies read in place
from the raw bytes: the result must be the full parse's, byte for byte."""

from __future__ import annotations

import base64
import hashlib
import random
from dataclasses import replace
from email.mime.application import MIMEApplication
from email.mime.image import MIMEImage
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formatdate

import pytest

from helpdesk.ingest import mime, parse
from helpdesk.ingest.headers import lenient_b64decode
from helpdesk.ingest.inbound import InboundEmail
from helpdesk.ingest.parse import _parse_lazily, parse_email
from helpdesk.ingest.skeleton import CUT_ABOVE, LAZY_ABOVE, TOKEN_MARK

FULL = {"lazy_above": 1 << 62}  # never lazily


def _headers(msg: MIMEMultipart | MIMEApplication | MIMEText, n: int = 1) -> None:
    msg["From"] = "Big Sender <big@client.example.org>"
    msg["To"] = "support@helpdesk.example.org"
    msg["Subject"] = f"Huge attachment {n}"
    msg["Message-ID"] = f"<big.{n}@client.example.org>"
    msg["Date"] = formatdate(0)


def _crlf(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _big_request(payload: bytes) -> bytes:
    """The benchmark's shape: a line of text and one base64 attachment."""
    msg = MIMEMultipart("mixed")
    _headers(msg)
    msg.attach(MIMEText("Please find the full disk image attached.\n", "plain", "us-ascii"))
    part = MIMEApplication(payload, "octet-stream")
    part.add_header("Content-Disposition", "attachment", filename="disk.img")
    msg.attach(part)
    return _crlf(msg.as_bytes())


def _is_lazy(raw: bytes, cut_above: int = 0) -> bool:
    return _parse_lazily(raw, hashlib.sha256(raw).hexdigest(), cut_above) is not None


def _same(raw: bytes, **lazy: int) -> InboundEmail:
    """The lazy parse, checked equal to the full one. mail-parser never sees
    a cut body, so it cannot report that body's charset as undecodable:
    that defect alone may be missing."""
    full = parse_email(raw, **FULL)
    mail = parse_email(raw, **lazy)
    assert replace(mail, defects=()) == replace(full, defects=())
    assert set(full.defects) - set(mail.defects) <= {"CharsetDecodeDefect"}
    assert set(mail.defects) <= set(full.defects)
    return mail


def test_a_large_attachment_is_read_in_place_and_equals_the_full_parse() -> None:
    payload = random.Random(7).randbytes(LAZY_ABOVE + 300_000)
    raw = _big_request(payload)
    assert _is_lazy(raw, CUT_ABOVE)
    mail = parse_email(raw)
    assert mail == parse_email(raw, **FULL)
    assert [a.filename for a in mail.attachments] == ["disk.img"]
    assert mail.attachments[0].payload == payload
    assert mail.attachments[0].sha256 == hashlib.sha256(payload).hexdigest()
    assert mail.text == "Please find the full disk image attached."
    assert mail.size == len(raw)
    assert mail.sha256 == hashlib.sha256(raw).hexdigest()


def test_small_messages_are_parsed_in_full() -> None:
    raw = _big_request(b"tiny")
    assert parse_email(raw) == parse_email(raw, **FULL)
    assert not _is_lazy(raw, CUT_ABOVE)  # nothing above the cut size


def _image(data: bytes, name: str = "") -> MIMEImage:
    image = MIMEImage(data, "png")
    image.add_header("Content-ID", "<logo@x>")
    image.add_header("Content-Disposition", "inline", **({"filename": name} if name else {}))
    return image


def _alternative_with_inline_image() -> bytes:
    related = MIMEMultipart("related")
    related.attach(MIMEText("<p>Hello <img src='cid:logo@x'></p>\r\n", "html", "utf-8"))
    related.attach(_image(b"\x89PNG" + bytes(range(256)) * 40))
    alternative = MIMEMultipart("alternative")
    alternative.attach(MIMEText("Hello\n\n-- \nJane\n", "plain", "utf-8"))
    alternative.attach(related)
    outer = MIMEMultipart("mixed")
    _headers(outer)
    outer.preamble = "This is a multi-part message in MIME format."
    outer.epilogue = "an epilogue\n"
    outer.attach(alternative)
    sheet = MIMEApplication(b"a,b\r\n1,2\r\n" * 500, "csv")
    sheet.add_header("Content-Disposition", "attachment", filename="Grüße.csv")
    outer.attach(sheet)
    return outer.as_bytes()


def _forwarded() -> bytes:
    inner = MIMEMultipart("mixed")
    _headers(inner, 2)
    inner.attach(MIMEText("The original text.\n"))
    report = MIMEApplication(bytes(range(256)) * 64, "pdf")
    report.add_header("Content-Disposition", "attachment", filename="report.pdf")
    inner.attach(report)
    outer = MIMEMultipart("mixed")
    _headers(outer)
    outer.attach(MIMEText("See the attached mail.\n"))
    outer.attach(MIMEMessage(inner))
    return outer.as_bytes()


def _single_part() -> bytes:
    msg = MIMEApplication(bytes(range(256)) * 100, "pdf")
    _headers(msg)
    return msg.as_bytes()


def _quoted_printable_latin1() -> bytes:
    outer = MIMEMultipart("mixed")
    _headers(outer)
    outer.attach(MIMEText("Grüße aus Köln\n" * 200, "plain", "iso-8859-1"))
    return outer.as_bytes()


def _digest() -> bytes:
    digest = MIMEMultipart("digest")
    _headers(digest)
    for n in range(3):
        digest.attach(MIMEMessage(MIMEText(f"message {n}\n" * 50)))
    return digest.as_bytes()


STRUCTURES = {
    "alternative and inline image, LF": _alternative_with_inline_image(),
    "alternative and inline image, CRLF": _crlf(_alternative_with_inline_image()),
    "forwarded message with attachment": _crlf(_forwarded()),
    "forwarded message, LF": _forwarded(),
    "single part": _crlf(_single_part()),
    "quoted-printable latin-1 text": _crlf(_quoted_printable_latin1()),
    "digest": _digest(),
}


@pytest.mark.parametrize("raw", STRUCTURES.values(), ids=STRUCTURES.keys())
def test_every_structure_parses_lazily_to_the_full_result(raw: bytes) -> None:
    assert _is_lazy(raw)
    _same(raw, lazy_above=0, cut_above=0)


def _multipart(body: bytes, boundary: bytes = b"outer") -> bytes:
    return (b"From: a@example.org\r\nSubject: s\r\nMessage-ID: <m@x>\r\n"
            b"Content-Type: multipart/mixed; boundary=\"" + boundary + b"\"\r\n\r\n" + body)


ODD = {
    # The close delimiter is missing: the parser reads to the end.
    "unterminated": _multipart(b"--outer\r\nContent-Type: text/plain\r\n\r\nhello\r\n"),
    # A line of the outer delimiter inside the inner multipart's part ends it
    # (RFC 2046 §5.1.1; the parser honours that).
    "outer delimiter inside an inner part": _multipart(
        b"--outer\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n"
        b"--inner\r\nContent-Type: text/plain\r\n\r\none\r\n--outer\r\n"
        b"Content-Type: text/plain\r\n\r\ntwo\r\n--inner--\r\n--outer--\r\n"),
    # "--outer-x" is not a delimiter of "outer" (only padding may follow).
    "boundary prefix": _multipart(
        b"--outer\r\nContent-Type: text/plain\r\n\r\nline\r\n--outer-x\r\nmore\r\n"
        b"--outer--\r\n"),
    "part without a blank line": _multipart(
        b"--outer\r\nContent-Type: text/plain\r\nno blank line here\r\n--outer--\r\n"),
    "lone CR line ends": _multipart(
        b"--outer\rContent-Type: text/plain\r\rcr text\r--outer--\r").replace(b"\r\n", b"\r"),
    "repeated delimiter": _multipart(
        b"--outer\r\n--outer\r\nContent-Type: text/plain\r\n\r\nx\r\n--outer--\r\n"),
    "token mark in the mail": _multipart(
        b"--outer\r\nContent-Type: text/plain\r\n\r\n" + TOKEN_MARK + b"\r\n--outer--\r\n"),
    "message in a message": _multipart(
        b"--outer\r\nContent-Type: message/rfc822\r\n\r\nContent-Type: message/rfc822\r\n\r\n"
        b"Subject: inner\r\n\r\ninnermost text\r\n--outer--\r\n"),
}


@pytest.mark.parametrize("raw", ODD.values(), ids=ODD.keys())
def test_odd_structures_give_the_full_result_lazily_or_not(raw: bytes) -> None:
    _same(raw, lazy_above=0, cut_above=0)


def test_a_mail_holding_the_token_mark_is_parsed_in_full() -> None:
    assert not _is_lazy(ODD["token mark in the mail"])


def test_a_large_text_body_is_the_full_parse_text() -> None:
    body = "".join(f"line {n}: Grüße\n" for n in range(120_000)).encode("utf-8")
    raw = (b"From: a@example.org\nSubject: long\nMessage-ID: <l@x>\n"
           b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n" + body)
    assert _is_lazy(raw, CUT_ABOVE)
    mail = _same(raw, lazy_above=0)
    assert mail.text.startswith("line 0: Grüße\nline 1:")
    assert mail.parts[0].text.startswith("line 0: Grüße")


def test_only_the_charset_defect_of_a_body_never_seen_by_mail_parser_may_differ() -> None:
    raw = (b"From: a@example.org\nSubject: s\nMessage-ID: <d@x>\n"
           b"Content-Type: text/plain; charset=utf-8\n\n" + b"caf\xe9 " * 100)
    full = parse_email(raw, **FULL)
    lazy = parse_email(raw, lazy_above=0, cut_above=0)
    assert "CharsetDecodeDefect" in full.defects
    assert replace(lazy, defects=()) == replace(full, defects=())


def _b64_cases() -> list[bytes]:
    rng = random.Random(11)
    cases = [b"", b"=", b"QQ", b"QQ=", b"QUJD", b"Q", b"QUJDRA", b"QU\r\nJD\r\n", b"QU JD==xx",
             b"not base64 at all!", b"QUJD\r\nRA==\r\n--trailer"]
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\r\n -!"
    for _ in range(300):
        cases.append(bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 60))))
    for size in (1, 2, 3, 57, 1000):
        cases.append(base64.encodebytes(rng.randbytes(size)))
    return cases


def test_the_chunked_base64_decoder_equals_the_whole_one(monkeypatch: pytest.MonkeyPatch) -> None:
    for chunk in (1, 3, 4, 7, 1 << 20):
        monkeypatch.setattr(mime, "_BASE64_CHUNK", chunk)
        for case in _b64_cases():
            assert mime.b64decode_lenient(case) == lenient_b64decode(case), (chunk, case)
            assert mime.b64decode_lenient(memoryview(case)) == lenient_b64decode(case)


def test_bodies_put_back_into_an_attached_message_keep_crlf_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Chunk edges falling between CR and LF, and inside runs of CRs.
    text = "a\r\r\nb\r\rc\r\n\r\nd\re\n".replace("\n", "\r\n") * 40
    inner = MIMEText(text, "plain", "us-ascii")
    inner.replace_header("Content-Transfer-Encoding", "8bit")
    outer = MIMEMultipart("mixed")
    _headers(outer)
    outer.attach(MIMEMessage(inner))
    raw = outer.as_bytes()
    for chunk in (1, 2, 3, 5):
        monkeypatch.setattr(mime, "_CUT_CHUNK", chunk)
        _same(raw, lazy_above=0, cut_above=0)


TEXTS = [
    ("utf-8", "Grüße, 東京 — ok\r\n".encode() * 3 + b"\xff\xfe broken \xe2\x82"),
    ("iso-2022-jp", "日本語のテキスト\n".encode("iso-2022-jp") * 3),
    ("utf-16", "two-byte text\n".encode("utf-16") + b"\x00"),
    ("shift_jis", "ｶﾀｶﾅと漢字\n".encode("shift_jis") * 3 + b"\x81"),
    ("x-unknown-charset", "falls back to UTF-8 ✓".encode()),
    ("hex", b"a bytes-to-bytes codec is no charset"),
    ("utf-7", "+ and ✓ in UTF-7\n".encode("utf-7") * 3),
]


@pytest.mark.parametrize(("charset", "data"), TEXTS, ids=[c for c, _ in TEXTS])
def test_the_start_of_a_cut_text_is_the_start_of_the_whole_text(
    monkeypatch: pytest.MonkeyPatch, charset: str, data: bytes
) -> None:
    try:
        whole = data.decode(charset, "replace")
    except (LookupError, UnicodeError, ValueError):
        whole = data.decode("utf-8", "replace")
    for chunk in (1, 2, 5, 1 << 16):
        monkeypatch.setattr(parse, "_TEXT_CHUNK", chunk)
        for limit in (1, 7, 10_000):
            assert parse._text_start(memoryview(data), charset, limit) == whole[:limit]
