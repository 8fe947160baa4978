"""One fetched mail read: parsed, and its new text found. Pure code.

This is what a parse worker runs (:mod:`helpdesk.ingest.parallel`). A worker
is a spawned process that imports only what unpickling this function needs,
so this module keeps to the parser's own imports: no database layer, which
would double the worker's start-up time and its memory.
"""

from __future__ import annotations

from helpdesk.errors import BadMessageError
from helpdesk.ingest.inbound import InboundEmail
from helpdesk.ingest.parse import parse_email
from helpdesk.ingest.quotes import extract_new_text
from helpdesk.ingest.source import Fetched


def parse_result(item: Fetched) -> tuple[InboundEmail | None, str, str | None]:
    """The parsed mail or why there is none, and its new text (the reply
    without quoted history). All pure work that needs nothing but the mail,
    and no copy of the raw bytes back."""
    if item.too_large:
        return None, "too_large", None
    try:
        mail = parse_email(item.raw)
    except BadMessageError as exc:
        return None, f"unparseable: {exc.reason}", None
    except Exception as exc:  # our own bug must not stop the batch either
        return None, f"parser crashed: {type(exc).__name__}: {exc}", None
    try:
        return mail, "", extract_new_text(mail.text)
    except Exception:
        return mail, "", None  # worked out again when applied, where a failure quarantines
