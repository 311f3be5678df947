"""The Alembic scripts make exactly the schema of ganforge.jobs.models, and undo it, on both databases."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, pool

from ganforge.jobs.migrate import MIGRATIONS_DIR, current_revision, downgrade, head_revision, upgrade
from ganforge.jobs.models import Base

ROOT = Path(__file__).resolve().parents[2]
TABLES = {"jobs", "job_events", "metrics", "artifacts", "api_keys", "workers", "sweeps", "sweep_trials", "datasets"}


@pytest.fixture(params=["postgresql", "sqlite"])
def empty_url(request) -> str:
    """An empty database of each kind."""
    return request.getfixturevalue("fresh_pg_url" if request.param == "postgresql" else "sqlite_url")


def _schema_diff(url: str) -> list:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade_matches_models(empty_url):
    assert current_revision(empty_url) is None

    upgrade(empty_url)
    assert current_revision(empty_url) == head_revision()
    assert _tables(empty_url) == TABLES | {"alembic_version"}
    assert _schema_diff(empty_url) == []

    downgrade(empty_url, "base")
    assert _tables(empty_url) == {"alembic_version"}
    assert current_revision(empty_url) is None
    # The comparison does see a schema that differs from the models (it is not vacuous).
    assert {diff[0] for diff in _schema_diff(empty_url)} >= {"add_table"}

    upgrade(empty_url)
    assert _schema_diff(empty_url) == []
    upgrade(empty_url)  # at head already: nothing to do, no error
    assert current_revision(empty_url) == head_revision()


def test_indexes_and_constraints_exist(empty_url):
    upgrade(empty_url)
    engine = create_engine(empty_url, poolclass=pool.NullPool)
    try:
        insp = inspect(engine)
        jobs_indexes = {ix["name"]: ix["column_names"] for ix in insp.get_indexes("jobs")}
        assert jobs_indexes == {
            "ix_jobs_created": ["created_at", "id"],
            "ix_jobs_status_created": ["status", "created_at", "id"],
            "ix_jobs_tenant_created": ["tenant", "created_at", "id"],
            "uq_jobs_tenant_idempotency_key": ["tenant", "idempotency_key"],
            "ix_jobs_sweep_id": ["sweep_id"],
            "ix_jobs_dataset_id": ["dataset_id"],
            "ix_jobs_tags": ["tags"],
            "ix_jobs_name_trgm": ["name"],
            "ix_jobs_notify_state": ["notify_state"],  # the webhook notifier's due deliveries
        }
        if empty_url.startswith("postgresql"):  # the list's ?tag= (jsonb @>) and ?q= (ILIKE) filters
            options = {ix["name"]: ix.get("dialect_options", {}) for ix in insp.get_indexes("jobs")}
            assert options["ix_jobs_tags"]["postgresql_using"] == "gin"
            assert options["ix_jobs_tags"]["postgresql_ops"] == {"tags": "jsonb_path_ops"}
            assert options["ix_jobs_name_trgm"]["postgresql_ops"] == {"name": "gin_trgm_ops"}
        assert {ix["name"]: ix["unique"] for ix in insp.get_indexes("jobs")}["uq_jobs_tenant_idempotency_key"]
        assert insp.get_pk_constraint("metrics")["constrained_columns"] == ["job_id", "name", "step"]
        uniques = {uc["name"]: uc["column_names"] for uc in insp.get_unique_constraints("artifacts")}
        assert uniques["uq_artifacts_job_kind_step"] == ["job_id", "kind", "step"]
        for table in ("job_events", "metrics", "artifacts"):
            (fk,) = insp.get_foreign_keys(table)
            assert fk["referred_table"] == "jobs" and fk["options"].get("ondelete") == "CASCADE"
        # A trial's sweep, an uploaded dataset: deleting either keeps the jobs.
        job_fks = {fk["referred_table"]: fk for fk in insp.get_foreign_keys("jobs")}
        assert set(job_fks) == {"sweeps", "datasets"}
        assert all(fk["options"].get("ondelete") == "SET NULL" for fk in job_fks.values())
        assert job_fks["datasets"]["constrained_columns"] == ["dataset_id"]
        trial_uniques = {uc["name"]: uc["column_names"] for uc in insp.get_unique_constraints("sweep_trials")}
        assert trial_uniques == {"uq_sweep_trials_sweep_number": ["sweep_id", "number"],
                                 "uq_sweep_trials_job_id": ["job_id"]}
    finally:
        engine.dispose()


def test_alembic_command_line_uses_x_url(sqlite_url, tmp_path):
    """``alembic -x url=...`` from the repository root (how an operator runs it), and the
    programmatic path does not depend on the working directory."""
    result = subprocess.run([sys.executable, "-m", "alembic", "-x", f"url={sqlite_url}", "upgrade", "head"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert current_revision(sqlite_url) == head_revision()
    assert MIGRATIONS_DIR.is_absolute() and (MIGRATIONS_DIR / "env.py").is_file()
