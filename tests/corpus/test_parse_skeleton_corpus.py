"""The skeleton parse of large messages, tried on every real message.

Every corpus message is parsed twice: in full, and as a skeleton with every
leaf body cut out (thresholds at zero, so the scan, the tokens, the reads in
place and the bodies put back into attached messages are all exercised on
real structures). The results must be equal; only mail-parser's charset
defect for a body it never saw may be missing.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

from helpdesk.errors import BadMessageError
from helpdesk.ingest.parse import _parse_lazily, parse_email
from tests.corpus.scorecard import record
from tests.corpus.test_corpus_pipeline import corpus_messages


def test_skeleton_parse_equals_the_full_parse_on_every_corpus_message(corpora: Path) -> None:
    total = lazily = 0
    different: list[str] = []
    for name, raw in corpus_messages(corpora):
        try:
            full = parse_email(raw, lazy_above=1 << 62)
        except BadMessageError:
            continue
        total += 1
        if _parse_lazily(raw, hashlib.sha256(raw).hexdigest(), 0) is not None:
            lazily += 1
        mail = parse_email(raw, lazy_above=0, cut_above=0)
        lost = set(full.defects) - set(mail.defects)
        if replace(mail, defects=()) != replace(full, defects=()) or not (
            lost <= {"CharsetDecodeDefect"} and set(mail.defects) <= set(full.defects)
        ):
            different.append(name)
    print(f"\n  skeleton parse: {lazily}/{total} messages cut and read in place")
    record("skeleton parse equal to the full parse", "all corpora, every body cut",
           f"{total - len(different)}/{total} ({lazily} cut)", "100%", not different)
    assert total > 2000
    assert lazily > total // 2
    assert not different, different[:20]
