"""when the team was told of each held mail

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07

The team is told of held mail in one notice an hour at most. Which holds a
notice listed is recorded on each: by time alone, a hold whose transaction
began before a notice and ended after it would be listed by none, and two
daemons could both list the same holds. Holds made before are taken as told.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Naive UTC, as every time column here (helpdesk.models.UTCDateTime).
    op.add_column('quarantine', sa.Column('notified_at', sa.DateTime(), nullable=True))
    # Not a flood of old news on the first pass after the upgrade.
    op.execute("UPDATE quarantine SET notified_at = created_at")


def downgrade() -> None:
    op.drop_column('quarantine', 'notified_at')
