"""Every real message in ../shared/corpora through the real pipeline.

Each must end as a ticket, a reply, an ignored automatic mail, or in
quarantine with a reason; nothing may raise, and quarantine stays <= 1%.
"""

from __future__ import annotations

import gzip
import mailbox
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from helpdesk.ingest.pipeline import Pipeline
from helpdesk.ingest.source import Fetched
from tests.corpus.scorecard import record
from tests.support.config import make_app, write_config

# Not messages: licences, provenance, expected outputs, the discourse
# trimmer's bare reply bodies and zammad's signature-detection samples (text
# without headers, not RFC 5322 mail).
SKIP_NAMES = {"LICENSE", "LICENSE-MIT", "COPYING", "SOURCE.txt", "README", "README.md",
              "README.upstream"}
SKIP_SUFFIXES = (".yml", ".json", ".html.gz", ".md")
SKIP_DIRS = ("discourse-email_reply_trimmer", "zammad/test/data/email_signature_detection")
OUTCOMES = {"new_ticket", "reply", "note", "staff_reply", "staff_reply_direct", "staff_commands",
            "staff_command_error",
            "bounce", "auto_reply", "own_loop", "duplicate_message_id", "already stored"}


def corpus_messages(root: Path) -> Iterator[tuple[str, bytes]]:
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = str(path.relative_to(root))
        if path.name in SKIP_NAMES or rel.startswith(SKIP_DIRS) or rel.endswith(SKIP_SUFFIXES):
            continue
        if path.name.endswith(".gz"):
            yield from _mbox(rel, gzip.decompress(path.read_bytes()), path)
            continue
        raw = path.read_bytes()
        if raw.startswith(b"From ") and b"\n" in raw[:1000]:  # an mbox, not a CR-only file
            yield from _mbox(rel, raw, path)
        else:
            yield rel, raw


def _mbox(rel: str, data: bytes, path: Path) -> Iterator[tuple[str, bytes]]:
    tmp = path if not path.name.endswith(".gz") else None
    if tmp is None:
        import tempfile

        with tempfile.NamedTemporaryFile(suffix=".mbox", delete=False) as fh:
            fh.write(data)
            tmp = Path(fh.name)
    box = mailbox.mbox(str(tmp), create=False)
    try:
        for i, message in enumerate(box):
            yield f"{rel}#{i}", message.as_bytes(unixfrom=False)
    finally:
        box.close()
        if path.name.endswith(".gz"):
            tmp.unlink()


def test_every_corpus_message_is_a_ticket_reply_ignored_or_quarantined(
    corpora: Path, tmp_path: Path
) -> None:
    config = write_config(tmp_path)
    app = make_app(config)
    pipeline = Pipeline(app)
    items = [Fetched(f"corpus:{name}", name, raw) for name, raw in corpus_messages(corpora)]
    outcomes = []
    try:
        # Batches of 200 go through the parse workers, as in the daemon.
        for start in range(0, len(items), 200):
            outcomes.extend(pipeline.process(items[start : start + 200]))
    finally:
        pipeline.close()
    by_status = Counter(o.status for o in outcomes)
    by_detail = Counter(o.detail for o in outcomes if o.status != "quarantined")
    reasons = Counter(o.detail for o in outcomes if o.status == "quarantined")
    held = [o.fetched.handle for o in outcomes if o.status == "quarantined"]
    total = len(outcomes)
    print(f"\ncorpus pipeline: {total} messages; {dict(by_status)}")
    print(f"  outcomes: {dict(by_detail)}")
    print(f"  quarantined by reason: {dict(reasons)}: {held}")
    share = len(held) / total
    record("processed without an exception", "all corpora", f"{total}/{total}", "100%", True)
    record("quarantined", "all corpora", f"{len(held)}/{total} ({share:.2%})", "<= 1%",
           share <= 0.01)
    assert total > 2000
    assert set(by_detail) <= OUTCOMES, by_detail
    assert all(reason for reason in reasons)
    assert share <= 0.01, held
    app.dispose()
