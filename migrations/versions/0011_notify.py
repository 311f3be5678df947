"""Webhooks of jobs and sweeps: the owner's URL called when it ends, and its delivery state.

Revision ID: 0011_notify
Revises: 0010_job_tags
Create Date: 2026-12-05 00:00:00
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_notify"
down_revision: str | Sequence[str] | None = "0010_job_tags"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


TABLES = ("jobs", "sweeps")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("notify_url", sa.String(2048), nullable=True))
            batch.add_column(sa.Column("notify_state", sa.String(16), nullable=True))
            batch.add_column(sa.Column("notify_claimed_at", sa.DateTime(timezone=True), nullable=True))
        op.create_index(f"ix_{table}_notify_state", table, ["notify_state"])


def downgrade() -> None:
    for table in TABLES:
        op.drop_index(f"ix_{table}_notify_state", table_name=table)
        with op.batch_alter_table(table) as batch:
            batch.drop_column("notify_claimed_at")
            batch.drop_column("notify_state")
            batch.drop_column("notify_url")
