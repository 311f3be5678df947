"""Uploaded datasets: archives a tenant sent to POST /v1/datasets, and the job that uses one.

Revision ID: 0007_datasets
Revises: 0006_sweeps
Create Date: 2026-12-05 00:00:00
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_datasets"
down_revision: str | Sequence[str] | None = "0006_sweeps"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("name", sa.String(120), nullable=False),
        sa.Column("storage_key", sa.String(512), nullable=False),
        sa.Column("content_type", sa.String(64), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("files", sa.Integer(), nullable=False),
        sa.Column("images", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("classes", sa.JSON(), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("request_hash", sa.String(64), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_datasets_tenant_created", "datasets", ["tenant", "created_at", "id"])
    op.create_index("ix_datasets_created", "datasets", ["created_at", "id"])
    op.create_index("uq_datasets_tenant_idempotency_key", "datasets", ["tenant", "idempotency_key"], unique=True)
    with op.batch_alter_table("jobs") as batch:  # SQLite adds a foreign key by copying the table
        batch.add_column(sa.Column("dataset_id", sa.String(32), nullable=True))
        batch.create_index("ix_jobs_dataset_id", ["dataset_id"])
        batch.create_foreign_key("fk_jobs_dataset_id", "datasets", ["dataset_id"], ["id"], ondelete="SET NULL")


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint("fk_jobs_dataset_id", type_="foreignkey")
        batch.drop_index("ix_jobs_dataset_id")
        batch.drop_column("dataset_id")
    op.drop_index("uq_datasets_tenant_idempotency_key", table_name="datasets")
    op.drop_index("ix_datasets_created", table_name="datasets")
    op.drop_index("ix_datasets_tenant_created", table_name="datasets")
    op.drop_table("datasets")
