"""the daemon process that stored each inbound mail

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07

Two daemons on one mailbox can fetch the same mail; the one that finds it
stored already used to move it too, and two sessions moving one message at
the same time can both copy it (Dovecot did: a duplicate in Processed).
The storing process is recorded, so another daemon leaves the mail to it
while it may still be at work. Rows stored before have no worker and are
moved by whoever finds them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('inbound_mail', sa.Column('worker', sa.String(length=300), nullable=False,
                                            server_default=''))


def downgrade() -> None:
    op.drop_column('inbound_mail', 'worker')
