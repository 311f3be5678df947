"""What a job's image dataset held: jobs.dataset_summary (files used, skipped, classes, bytes,
cache hit or miss), written by the worker once the data are decoded.

Revision ID: 0008_dataset_summary
Revises: 0007_datasets (the brief said 0006_sweeps; this branch carries 0007_datasets already,
and two revisions of 0006 would leave Alembic with two heads)
Create Date: 2026-12-05 00:00:00
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_dataset_summary"
down_revision: str | Sequence[str] | None = "0007_datasets"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("dataset_summary", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("dataset_summary")
