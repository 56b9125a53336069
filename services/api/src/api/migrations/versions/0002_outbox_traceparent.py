"""outbox.traceparent: the trace context of the write that staged the row

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: adding it rewrites no row (PostgreSQL and SQLite alike), and rows
    # staged before the upgrade, or with tracing off, simply have none.
    op.add_column("outbox", sa.Column("traceparent", sa.String(512), nullable=True))


def downgrade() -> None:
    # batch mode: SQLite before 3.35 cannot DROP COLUMN in place.
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("traceparent")
