"""A parse function for tests that also says what its process has loaded.

It imports only what the daemon's own parse function imports, so a spawned
parse worker running it loads what the daemon's workers load.
"""

from __future__ import annotations

import sys

from helpdesk.ingest.reading import parse_result
from helpdesk.ingest.source import Fetched

# The database layer, the CLI and the daemon's network and template stacks:
# none of them is needed to parse a mail.
HEAVY = ("sqlalchemy", "sqlmodel", "psycopg", "alembic", "jinja2", "aioimaplib",
         "aiosmtplib", "apscheduler", "helpdesk.cli", "helpdesk.db", "helpdesk.models")


def parse_and_report(item: Fetched) -> tuple[str, ...]:
    """Parse ``item`` as the daemon does; return the heavy modules loaded here."""
    parse_result(item)
    return tuple(name for name in HEAVY if name in sys.modules)
