"""large columns compressed with lz4 on PostgreSQL

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07

PostgreSQL compresses a value above about 2 KB before storing it out of
line (TOAST), with pglz unless told otherwise. Every message stores its raw
bytes, its text, the mail composed for it and its attachments, so pglz was
a fifth of the server's CPU time while ingesting. lz4 (PostgreSQL 14+, when
the server is built with it) compresses such mail almost as well at a
fraction of the cost. Values stored before keep pglz; both are read back
as they were. SQLite has no such setting.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

COLUMNS = (("inbound_raw", "raw"), ("blob", "data"), ("outbox", "raw"), ("message", "body"))


def _lz4_available() -> bool:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return False
    # The values this server accepts for the setting: lz4 only when built with it.
    choices = bind.execute(sa.text(
        "SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'"
    )).scalar()
    return "lz4" in (choices or ())


def _set(method: str) -> None:
    for table, column in COLUMNS:
        op.execute(f'ALTER TABLE {table} ALTER COLUMN "{column}" SET COMPRESSION {method}')


def upgrade() -> None:
    if _lz4_available():
        _set("lz4")


def downgrade() -> None:
    if _lz4_available():
        _set("default")
