"""Benchmark 4: peak memory of ``helpdesk run --once``.

* One 25 MB message (``max_message_size`` set a little above it): peak RSS
  of the subprocess (its VmHWM), next to the peak of a ``run --once`` over
  an empty mailbox (the interpreter and imports). The message is a request
  with a base64 attachment; ``--shape`` picks another: a 25 MB plain-text
  body, or the request forwarded as an attached message (message/rfc822).
* Many messages of the standard mix in one ``run --once``: VmRSS of the
  subprocess is sampled every 0.25 s together with the number of
  ``inbound_mail`` rows committed, and reported at 1k, 5k and 10k messages
  (or as far as the run went) with the slope in MB per 1,000 messages after
  the first 500 (least squares over the samples); flat means about zero,
  and the target used is at most 1 MB per 1,000 (10 MB over 10,000).
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email import message_from_bytes
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from bench import corpus, servers
from bench.report import Figure, show
from tests.support.config import write_config
from tests.support.dovecot import Dovecot, ImapAccount

BIG = 25 * 1024 * 1024
SHAPES = ("attachment", "text", "forwarded")
CHECKPOINTS = (1000, 5000, 10000)
WARMUP = 500  # messages before caches (SQLAlchemy statements, templates) are filled


def _config(folder: Path, url: str, account: ImapAccount, **helpdesk: object) -> Path:
    return write_config(folder, db_url=url, inbound=servers.imap_inbound(account),
                        outbound={"kind": "maildir", "path": str(folder / "sent")},
                        helpdesk=dict(helpdesk))


def big_mail(shape: str, size: int, tag: str) -> corpus.Mail:
    """One message of about ``size`` bytes of the given shape."""
    if shape == "attachment":
        return corpus.big_message(size, tag=tag)
    rng = random.Random(11)
    message_id = f"{tag}.{rng.getrandbits(40):x}@client.example.org"
    addr = f"big.{tag}@client.example.org"
    subject = f"Huge {shape} {tag}"
    if shape == "text":
        words = ("log", "line", "error", "retry", "timeout", "server", "ok", "at")
        lines = (" ".join(rng.choice(words) for _ in range(10)) for _ in range(size // 50))
        msg: MIMEText | MIMEMultipart = MIMEText("\n".join(lines) + "\n", "plain", "us-ascii")
    else:
        inner = corpus.big_message(size, tag=f"{tag}-inner")
        msg = MIMEMultipart("mixed")
        msg.attach(MIMEText("The mail below came with the attachment.\n", "plain", "us-ascii"))
        msg.attach(MIMEMessage(message_from_bytes(inner.raw)))
    msg["From"] = f"Big Sender <{addr}>"
    msg["To"] = corpus.SUPPORT
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime.now(UTC).replace(microsecond=0))
    msg["Message-ID"] = f"<{message_id}>"
    return corpus.Mail(msg.as_bytes(), message_id, "new", addr, subject, shape != "text")


def big_message(server: Dovecot, db: str, shape: str = "attachment") -> list[Figure]:
    mail = big_mail(shape, BIG, tag=f"big{db}")
    account = servers.new_account(server)
    with servers.workdir(f"memory-{db}") as folder, servers.database(db, folder) as url:
        # Sized on the wire: APPEND sends CRLF line ends (a CR more per line).
        wire = len(servers.crlf(mail.raw))
        config = _config(folder, url, account, max_message_size=wire + 512 * 1024)
        servers.upgrade(config, folder / "upgrade.log")
        empty = servers.helpdesk(config, "run", "--once", log=folder / "empty.log")
        servers.append_all(account, [mail.raw])
        big = servers.helpdesk(config, "run", "--once", log=folder / "big.log")
    status = ", ".join(f"{k}={v}" for k, v in big.summary.items())
    print(f"   {db}: one {len(mail.raw) / 1e6:.1f} MB message ({shape}): "
          f"peak RSS {big.peak_rss_mb:.0f} MB "
          f"({big.seconds:.1f} s; {status}); empty mailbox: {empty.peak_rss_mb:.0f} MB",
          flush=True)
    if big.summary.get("done") != 1:
        print(f"   WARNING: the big message was not processed normally: {big.summary}")
    what = "" if shape == "attachment" else f" ({shape})"
    return [Figure("memory", f"peak RSS, one 25 MB message{what}", db, big.peak_rss_mb, "MB",
                   "<= 200", extra={"empty_mailbox_mb": empty.peak_rss_mb,
                                    "seconds": big.seconds, "summary": big.summary})]


def _progress(url: str) -> Callable[[], int]:
    engine = create_engine(url)

    def count() -> int:
        try:
            with engine.connect() as conn:
                return int(conn.execute(text("SELECT count(*) FROM inbound_mail")).scalar_one())
        except OperationalError:
            return -1

    return count


def slope(samples: Sequence[tuple[float, int, float]], skip: int) -> float:
    """Least-squares MB per 1,000 messages through the committed batches past
    ``skip`` messages: for each progress value, the highest VmRSS seen with it."""
    by_count: dict[int, float] = {}
    for _, done, rss in samples:
        if done > skip and rss == rss:
            by_count[done] = max(rss, by_count.get(done, 0.0))
    pts = sorted(by_count.items())
    if len(pts) < 3:
        return float("nan")
    mx = sum(n for n, _ in pts) / len(pts)
    my = sum(r for _, r in pts) / len(pts)
    var = sum((n - mx) ** 2 for n, _ in pts)
    return sum((n - mx) * (r - my) for n, r in pts) / var * 1000


def many(server: Dovecot, db: str, n: int) -> list[Figure]:
    mails = corpus.generate(n, seed=21, tag=f"m{db[0]}")
    account = servers.new_account(server)
    servers.append_all(account, [m.raw for m in mails])
    with servers.workdir(f"memory-many-{db}") as folder, \
            servers.database(db, folder) as url:
        config = _config(folder, url, account)
        servers.upgrade(config, folder / "upgrade.log")
        result = servers.helpdesk(config, "run", "--once", log=folder / "many.log",
                                  progress=_progress(url))
    samples = result.samples
    at: dict[int, float] = {}
    for mark in CHECKPOINTS:
        hit = [rss for _, done, rss in samples if done >= mark]
        if hit:
            at[mark] = hit[0]
    per_k = slope(samples, skip=WARMUP)
    last = samples[-1] if samples else (0.0, 0, float("nan"))
    marks = ", ".join(f"{k:,}: {v:.0f} MB" for k, v in at.items()) or "no checkpoint reached"
    print(f"   {db}: {n:,} messages in {result.seconds:.0f} s; VmRSS at {marks}; last sample "
          f"{last[2]:.0f} MB at {last[1]:,}; peak {result.peak_rss_mb:.0f} MB; "
          f"slope {per_k:+.1f} MB per 1,000 messages", flush=True)
    figures = [Figure("memory", f"VmRSS after {k:,} messages", db, v, "MB", "<= 200")
               for k, v in at.items()]
    figures.append(Figure("memory", f"peak RSS over {n:,} messages", db, result.peak_rss_mb,
                          "MB", "<= 200", extra={"seconds": result.seconds,
                                                 "samples": samples}))
    figures.append(Figure("memory", f"RSS growth per 1,000 messages after {WARMUP}", db, per_k,
                          "MB", "<= 1", note=f"slope over {last[1]:,} messages; flat is ~0"))
    return figures


def run(n: int = 10_000, dbs: Sequence[str] = servers.DB_KINDS,
        many_dbs: Sequence[str] = ("sqlite",),
        shapes: Sequence[str] = ("attachment",)) -> list[Figure]:
    print(f"\n== memory: one 25 MB message ({', '.join(dbs)}; {', '.join(shapes)}); "
          f"{n:,} messages ({', '.join(many_dbs)})", flush=True)
    figures: list[Figure] = []
    with servers.dovecot() as server:
        for shape in shapes:
            for db in dbs:
                figures += big_message(server, db, shape)
        for db in many_dbs:
            if n:
                figures += many(server, db, n)
    show(figures)
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Peak memory of run --once.")
    p.add_argument("-n", "--messages", type=int, default=10_000,
                   help="messages for the flatness run (0: skip it)")
    p.add_argument("--db", choices=servers.DB_KINDS, action="append")
    p.add_argument("--many-db", choices=servers.DB_KINDS, action="append",
                   help="databases for the many-messages run (default sqlite)")
    p.add_argument("--shape", choices=SHAPES, action="append",
                   help="the 25 MB message: a base64 attachment (default), a plain-text "
                        "body, or a forwarded message carrying the attachment")
    args = p.parse_args(argv)
    run(args.messages, args.db or servers.DB_KINDS, args.many_db or ("sqlite",),
        args.shape or ("attachment",))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
