"""Job labels: tags (a JSON array; jsonb with a GIN index on PostgreSQL) and free notes, and a
trigram index on the job name for the list's case-insensitive name search.

Revision ID: 0010_job_tags
Revises: 0006_sweeps
Create Date: 2026-12-05 00:00:00
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010_job_tags"
down_revision: str | Sequence[str] | None = "0009_health"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        # gin_trgm_ops; a trusted extension since PostgreSQL 13 (the database owner may create it).
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("tags", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
                                   server_default=sa.text("'[]'"), nullable=False))
        batch.add_column(sa.Column("notes", sa.Text(), server_default="", nullable=False))
    op.create_index("ix_jobs_tags", "jobs", ["tags"], postgresql_using="gin",
                    postgresql_ops={"tags": "jsonb_path_ops"})
    op.create_index("ix_jobs_name_trgm", "jobs", ["name"], postgresql_using="gin",
                    postgresql_ops={"name": "gin_trgm_ops"})


def downgrade() -> None:
    op.drop_index("ix_jobs_name_trgm", table_name="jobs")
    op.drop_index("ix_jobs_tags", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("notes")
        batch.drop_column("tags")
    # pg_trgm stays: other objects of the database may use it, and it holds no data.
