"""Reliability: attempt history, runtime, divergences, re-enqueue time, idempotency keys, scores.

Revision ID: 0002_reliability
Revises: 0001
Create Date: 2026-11-29 00:00:00
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_reliability"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("jobs", sa.Column("attempt_errors", sa.JSON(), nullable=True))
    op.add_column("jobs", sa.Column("runtime_seconds", sa.Float(), nullable=False, server_default="0"))
    op.add_column("jobs", sa.Column("divergences", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("jobs", sa.Column("enqueued_at", UTC, nullable=True))
    op.add_column("jobs", sa.Column("idempotency_key", sa.String(255), nullable=True))
    op.add_column("jobs", sa.Column("request_hash", sa.String(64), nullable=True))
    op.create_index("uq_jobs_tenant_idempotency_key", "jobs", ["tenant", "idempotency_key"], unique=True)
    op.add_column("artifacts", sa.Column("score", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("artifacts") as batch:
        batch.drop_column("score")
    op.drop_index("uq_jobs_tenant_idempotency_key", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        for column in ("request_hash", "idempotency_key", "enqueued_at", "divergences", "runtime_seconds",
                       "attempt_errors"):
            batch.drop_column(column)
