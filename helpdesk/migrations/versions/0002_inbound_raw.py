"""raw message bytes in their own table

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30

The status written to ``inbound_mail`` after the apply made SQLite rewrite
the whole row, raw bytes and all (a 25 MB message cost a second 25 MB copy
in memory). The bytes move to ``inbound_raw``, one row per message, keyed by
the ``inbound_mail`` id.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('inbound_raw',
    sa.Column('inbound_mail_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('raw', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['inbound_mail_id'], ['inbound_mail.id'], ),
    sa.PrimaryKeyConstraint('inbound_mail_id')
    )
    # The database copies row by row; nothing passes through Python.
    op.execute("INSERT INTO inbound_raw (inbound_mail_id, raw) SELECT id, raw FROM inbound_mail")
    # A plain DROP COLUMN on SQLite too (3.35+, which RETURNING needs
    # already), not a batch: batch mode copies the table and drops the old
    # one, and with foreign_keys=ON that DROP fails for the rows that
    # message, quarantine and inbound_raw point at.
    op.drop_column('inbound_mail', 'raw')


def downgrade() -> None:
    # The column comes back nullable: adding a NOT NULL column to rows
    # already there would need a default for them.
    op.add_column('inbound_mail', sa.Column('raw', sa.LargeBinary(), nullable=True))
    op.execute("UPDATE inbound_mail SET raw = (SELECT raw FROM inbound_raw "
               "WHERE inbound_raw.inbound_mail_id = inbound_mail.id)")
    op.drop_table('inbound_raw')
