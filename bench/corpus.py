"""The benchmark mail mix, generated deterministically (seeded) with the
standard library's email package (never by string pasting).

Mix (fractions of the messages, all from distinct senders unless a reply):

* new requests: plain text, multipart/alternative or HTML-only, 2-20 KB;
* 10% of all mail carries a 100 KB attachment (base64, ~137 KB on the wire);
* 20% are replies that thread onto an earlier request (In-Reply-To and
  References point at its Message-ID, same sender, "Re:" subject);
* 2% are machine mail: half RFC 3464 bounces (multipart/report DSNs with a
  null return path), half RFC 3834 auto-replies (Auto-Submitted: auto-replied).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from email.mime.application import MIMEApplication
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime

SUPPORT = "support@example.test"

_WORDS = (
    "printer", "invoice", "login", "password", "server", "outage", "email", "calendar",
    "access", "account", "vpn", "laptop", "screen", "network", "slow", "error", "report",
    "update", "install", "license", "backup", "restore", "meeting", "room", "phone", "mobile",
    "sync", "folder", "share", "permission", "database", "timeout", "crash", "the", "a", "to",
    "of", "and", "in", "is", "it", "that", "for", "on", "with", "as", "was", "at", "by",
    "this", "we", "you", "be", "are", "not", "please", "could", "would", "help", "thanks",
    "hello", "regards", "issue", "problem", "since", "yesterday", "today",
)


@dataclass(frozen=True)
class Mail:
    """One generated message: its bytes, its Message-ID (no brackets), its kind."""

    raw: bytes
    message_id: str
    kind: str  # new | reply | bounce | auto_reply
    addr: str  # the sender's address
    subject: str
    has_attachment: bool = False
    sender: str = ""  # the From header


@dataclass(frozen=True)
class Mix:
    reply_share: float = 0.20
    attachment_share: float = 0.10
    machine_share: float = 0.02  # split evenly between bounces and auto-replies
    min_body: int = 2_000
    max_body: int = 20_000
    attachment_bytes: int = 100_000


class _Writer:
    """Random prose from a pool of sentences (fast: one ``choices`` call a body)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.pool = [
            " ".join(rng.choice(_WORDS) for _ in range(rng.randint(6, 14))).capitalize() + "."
            for _ in range(3000)
        ]

    def text(self, size: int) -> str:
        count = max(1, size // 60)
        body = "\n".join(self.rng.choices(self.pool, k=count))
        while len(body) < size:
            body += "\n" + self.rng.choice(self.pool)
        return body[:size] + "\n"


def _html(text: str) -> str:
    paras = "".join(f"<p>{line}</p>\n" for line in text.splitlines() if line)
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><style>p{margin:0}</style></head>"
        f"<body><div class='mail'>{paras}</div><div class='sig'><b>Sent from my desk</b>"
        "</div></body></html>\n"
    )


def _body_part(w: _Writer, size: int) -> Message:
    """A text/plain, multipart/alternative or text/html message of ~``size`` bytes."""
    style = w.rng.random()
    if style < 0.5:
        return MIMEText(w.text(size), "plain", "us-ascii")
    if style < 0.8:
        text = w.text(size // 2)
        alternative = MIMEMultipart("alternative")
        alternative.attach(MIMEText(text, "plain", "us-ascii"))
        alternative.attach(MIMEText(_html(text), "html", "us-ascii"))
        return alternative
    return MIMEText(_html(w.text(int(size * 0.8))), "html", "us-ascii")


def _headers(msg: Message, sender: str, subject: str, message_id: str,
             when: datetime) -> None:
    msg["From"] = sender
    msg["To"] = SUPPORT
    msg["Subject"] = subject
    msg["Date"] = format_datetime(when)
    msg["Message-ID"] = f"<{message_id}>"
    msg["MIME-Version"] = "1.0"


def _request(w: _Writer, mix: Mix, sender: str, subject: str, message_id: str,
             when: datetime, attachment: bool, parent: str = "") -> bytes:
    msg = _body_part(w, w.rng.randint(mix.min_body, mix.max_body))
    if attachment:
        mixed = MIMEMultipart("mixed")
        mixed.attach(msg)
        pdf = MIMEApplication(w.rng.randbytes(mix.attachment_bytes), "pdf")
        pdf.add_header("Content-Disposition", "attachment", filename=f"scan-{message_id[:8]}.pdf")
        mixed.attach(pdf)
        msg = mixed
    for name in ("MIME-Version",):
        del msg[name]
    _headers(msg, sender, subject, message_id, when)
    if parent:
        msg["In-Reply-To"] = f"<{parent}>"
        msg["References"] = f"<{parent}>"
    return msg.as_bytes()


def _bounce(rng: random.Random, rcpt: str, message_id: str, when: datetime) -> bytes:
    """An RFC 3464 DSN as Postfix writes it."""
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = "MAILER-DAEMON@mx.client.example.org (Mail Delivery System)"
    report["To"] = SUPPORT
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report["Date"] = format_datetime(when)
    report["Message-ID"] = f"<{message_id}>"
    report["Return-Path"] = "<>"
    report["Auto-Submitted"] = "auto-replied"
    report.attach(MIMEText(
        "This is the mail system at host mx.client.example.org.\n\n"
        "I'm sorry to have to inform you that your message could not\n"
        "be delivered to one or more recipients.\n\n"
        f"<{rcpt}>: host mx.client.example.org said: 550 5.1.1 User unknown\n"))
    per_message = Message()
    per_message["Reporting-MTA"] = "dns; mx.client.example.org"
    per_message["Arrival-Date"] = format_datetime(when)
    per_recipient = Message()
    per_recipient["Final-Recipient"] = f"rfc822; {rcpt}"
    per_recipient["Original-Recipient"] = f"rfc822;{rcpt}"
    per_recipient["Action"] = "failed"
    per_recipient["Status"] = "5.1.1"
    per_recipient["Diagnostic-Code"] = f"smtp; 550 5.1.1 <{rcpt}>: Recipient address rejected"
    status = MIMEBase("message", "delivery-status")
    status.set_payload([per_message, per_recipient])
    report.attach(status)
    returned = MIMEText(
        f"From: Example Support <{SUPPORT}>\nTo: {rcpt}\n"
        f"Subject: [HD-000001] We have your request\n"
        f"Message-ID: <ret{rng.getrandbits(48):x}@example.test>\n", "rfc822-headers")
    report.attach(returned)
    return report.as_bytes()


def _auto_reply(w: _Writer, sender: str, message_id: str, when: datetime) -> bytes:
    msg = MIMEText("I am out of the office until Monday with limited access to email.\n"
                   + w.text(400), "plain", "us-ascii")
    del msg["MIME-Version"]
    _headers(msg, sender, "Out of office: Re: [HD-000001] We have your request",
             message_id, when)
    msg["Auto-Submitted"] = "auto-replied"
    msg["X-Autoreply"] = "yes"
    return msg.as_bytes()


def generate(count: int, *, seed: int = 1, tag: str = "b", mix: Mix | None = None,
             when: datetime | None = None) -> list[Mail]:
    """``count`` messages in delivery order; ``tag`` keeps Message-IDs and
    senders of different runs apart."""
    mix = mix or Mix()
    rng = random.Random(seed)
    w = _Writer(rng)
    when = when or datetime.now(UTC).replace(microsecond=0)
    out: list[Mail] = []
    requests: list[Mail] = []
    for i in range(count):
        message_id = f"{tag}{i}.{rng.getrandbits(40):x}@client{i % 97}.example.org"
        roll = rng.random()
        attachment = rng.random() < mix.attachment_share
        if roll < mix.machine_share / 2 and requests:
            rcpt = rng.choice(requests).addr
            out.append(Mail(_bounce(rng, rcpt, message_id, when), message_id, "bounce",
                            "mailer-daemon@mx.client.example.org", ""))
            continue
        if roll < mix.machine_share and requests:
            parent = rng.choice(requests)
            out.append(Mail(_auto_reply(w, parent.sender, message_id, when), message_id,
                            "auto_reply", parent.addr, "Out of office"))
            continue
        if roll < mix.machine_share + mix.reply_share and requests:
            parent = rng.choice(requests[-500:])
            subject = f"Re: {parent.subject}"
            raw = _request(w, mix, parent.sender, subject, message_id, when, attachment,
                           parent=parent.message_id)
            out.append(Mail(raw, message_id, "reply", parent.addr, subject, attachment,
                            parent.sender))
            continue
        addr = f"customer{i}.{tag}@client{i % 97}.example.org"
        sender = f"Customer {i} <{addr}>"
        subject = f"{' '.join(rng.choice(_WORDS) for _ in range(4)).capitalize()} #{tag}{i}"
        raw = _request(w, mix, sender, subject, message_id, when, attachment)
        mail = Mail(raw, message_id, "new", addr, subject, attachment, sender)
        requests.append(mail)
        out.append(mail)
    return out


def big_message(size: int, *, tag: str = "big") -> Mail:
    """One request whose attachment brings it to about ``size`` bytes on the wire."""
    rng = random.Random(7)
    payload = rng.randbytes(int(size * 0.74))  # base64 grows it by 4/3 (plus line ends)
    msg = MIMEMultipart("mixed")
    msg.attach(MIMEText("Please find the full disk image attached.\n", "plain", "us-ascii"))
    part = MIMEApplication(payload, "octet-stream")
    part.add_header("Content-Disposition", "attachment", filename="disk.img")
    msg.attach(part)
    del msg["MIME-Version"]
    message_id = f"{tag}.{rng.getrandbits(40):x}@client.example.org"
    addr = f"big.{tag}@client.example.org"
    _headers(msg, f"Big Sender <{addr}>", f"Huge attachment {tag}", message_id,
             datetime.now(UTC).replace(microsecond=0))
    return Mail(msg.as_bytes(), message_id, "new", addr, "Huge attachment", True)


def describe(mails: list[Mail]) -> str:
    kinds = Counter(m.kind for m in mails)
    total = sum(len(m.raw) for m in mails)
    attached = sum(1 for m in mails if m.has_attachment)
    return (f"{len(mails)} messages, {total / 1e6:.1f} MB: "
            + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
            + f"; {attached} with a 100 KB attachment")
