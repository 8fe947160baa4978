"""Structured logging: key=value or JSON lines, addresses redacted on request.

Every line about a message carries ``message_id`` and ``ticket`` so an
operator can follow one mail through the pipeline with grep.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None)))


class _Formatter(logging.Formatter):
    def __init__(self, fmt_kind: str) -> None:
        super().__init__()
        self.kind = fmt_kind

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                fields[key] = value
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        if self.kind == "json":
            return json.dumps(fields, default=str, ensure_ascii=False)
        return " ".join(f"{k}={_kv(v)}" for k, v in fields.items())


def _kv(value: Any) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "=\n'):
        return json.dumps(text, ensure_ascii=False)
    return text


def configure(level: str = "INFO", kind: str = "kv") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(kind))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aioimaplib", "apscheduler", "mail", "aiosmtplib", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def log(logger: logging.Logger, level: int, event: str, /, **fields: Any) -> None:
    """Log ``event`` with structured ``fields`` (message_id, ticket, ...).

    A field named like a LogRecord attribute (``name``, ``message``...) would
    make logging raise, so such names get a ``field_`` prefix.
    """
    safe = {(f"field_{k}" if k in _RESERVED or k == "message" else k): v
            for k, v in fields.items()}
    logger.log(level, event, extra=safe)
