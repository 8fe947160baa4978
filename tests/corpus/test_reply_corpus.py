"""Reply stripping measured on the discourse email_reply_trimmer corpus.

Each ``test/emails/NAME.txt`` is a reply body and ``test/trimmed/NAME.txt``
what its new text should be. The gem's own test strips both files and its
output at both ends before comparing; inside the text every line must match
exactly. We keep the indentation of the first line (it can open a code
block), so only trailing whitespace is ignored here, and leading empty lines
are not produced in the first place.
"""

from __future__ import annotations

from pathlib import Path

from helpdesk.ingest.quotes import extract_new_text
from tests.corpus.scorecard import record

CORPUS = "discourse-email_reply_trimmer"
TARGET = 58


def test_reply_new_text_matches_the_trimmed_bodies(corpora: Path) -> None:
    root = corpora / CORPUS / "test"
    emails = sorted((root / "emails").glob("*.txt"))
    assert emails, f"no emails under {root}"

    failures: list[str] = []
    for email in emails:
        expected = (root / "trimmed" / email.name).read_text(encoding="utf-8").rstrip()
        got = extract_new_text(email.read_text(encoding="utf-8")).rstrip()
        if got != expected:
            failures.append(email.stem)

    total = len(emails)
    ok = total - len(failures)
    record("reply new text exact match", CORPUS, f"{ok}/{total}", f">= {TARGET}/64", ok >= TARGET)
    assert ok >= TARGET, f"{ok}/{total} exact matches; failing: {', '.join(failures)}"
