"""One error hierarchy, split by who is at fault.

A *bad message* is the sender's problem: quarantine or ignore it and carry on.
An *unwell system* is ours: retry with backoff and alert; never blame the mail.
"""

from __future__ import annotations


class HelpdeskError(Exception):
    """Base of every error the helpdesk raises on purpose."""


class ConfigError(HelpdeskError):
    """The configuration is invalid. ``key`` names the offending setting."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"config key {key!r}: {problem}")
        self.key = key
        self.problem = problem


class BadMessageError(HelpdeskError):
    """This one message cannot be processed; quarantine it with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SystemUnwellError(HelpdeskError):
    """A dependency (database, IMAP, SMTP) is failing; retry later."""


class SchemaOutdatedError(SystemUnwellError):
    """The database schema is older than this code expects."""
