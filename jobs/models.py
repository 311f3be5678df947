"""SQLAlchemy 2.0 models: jobs, their status events, metric series and artifacts.

The database is the source of truth for a job; the broker carries only its id. Migrations in
``migrations/`` create this schema (a test checks that autogenerate finds no difference).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    DDL,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL = ("succeeded", "failed", "cancelled")
ARTIFACT_KINDS = ("sample_grid", "checkpoint", "final_model", "loss_plot", "interpolation", "evaluation", "log")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_id() -> str:
    return uuid.uuid4().hex


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC on every backend (SQLite stores naive datetimes)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime: use timezone-aware UTC")
        return value.astimezone(timezone.utc) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


class Base(DeclarativeBase):
    pass


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant: Mapped[str] = mapped_column(String(64), default="default")
    name: Mapped[str] = mapped_column(String(120))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    queue: Mapped[str] = mapped_column(String(16), default="cpu")
    progress_step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    worker_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_token: Mapped[str | None] = mapped_column(String(32), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    latest_metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    evaluation: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Reliability: why each lost attempt ended, training time over all attempts (max_runtime),
    # rollbacks after a non-finite loss, when the id was last sent to the broker (the reconciler
    # re-sends ids whose message was lost) and the client's Idempotency-Key for the submit.
    attempt_errors: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    runtime_seconds: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    divergences: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # A sweep's trial (jobs/sweeps.py): otherwise an ordinary job.
    sweep_id: Mapped[str | None] = mapped_column(ForeignKey("sweeps.id", ondelete="SET NULL", name="fk_jobs_sweep_id"),
                                                 nullable=True, index=True)
    # The uploaded dataset the spec names (dataset.upload_id): a queued or running job keeps it
    # from being deleted; a finished job forgets it when it is.
    dataset_id: Mapped[str | None] = mapped_column(
        ForeignKey("datasets.id", ondelete="SET NULL", name="fk_jobs_dataset_id"), nullable=True, index=True)
    # What an image dataset held when the worker decoded it (files used, skipped, classes, bytes,
    # cache hit or miss): gan_core.data.folder.FolderSummary.
    dataset_summary: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # GAN health (gan_core.health): the findings [{detector, step, message, action}], and the
    # detector that stopped the job (diverged, discriminator_won, mode_collapse) when one did.
    health: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    stop_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # The owner's labels (api/job_labels.py): set at submit, editable later, never part of the
    # spec. Tags are a JSON array in the row (read with it: no join on the list or the job view);
    # on PostgreSQL a jsonb with a GIN index for the ?tag= filter (containment, @>).
    tags: Mapped[list[str]] = mapped_column(JSON().with_variant(JSONB(), "postgresql"), default=list,
                                            server_default=text("'[]'"))
    notes: Mapped[str] = mapped_column(Text, default="", server_default="")
    # the owner's webhook, called once the job ends (jobs/notify.py); notify_state: pending ->
    # sending (claimed by a notifier at notify_claimed_at) -> delivered | failed
    notify_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    notify_state: Mapped[str | None] = mapped_column(String(16), nullable=True, index=True)
    notify_claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    events: Mapped[list[JobEvent]] = relationship(back_populates="job", order_by="JobEvent.id", cascade="all, delete-orphan")

    __table_args__ = (
        Index("ix_jobs_created", "created_at", "id"),
        Index("ix_jobs_status_created", "status", "created_at", "id"),
        Index("ix_jobs_tenant_created", "tenant", "created_at", "id"),
        Index("uq_jobs_tenant_idempotency_key", "tenant", "idempotency_key", unique=True),
        # ?tag=: jsonb containment; ?q=: a case-insensitive substring of the name (ILIKE '%q%'),
        # which only a trigram index serves. On SQLite both are plain indexes nobody uses.
        Index("ix_jobs_tags", "tags", postgresql_using="gin", postgresql_ops={"tags": "jsonb_path_ops"}),
        Index("ix_jobs_name_trgm", "name", postgresql_using="gin", postgresql_ops={"name": "gin_trgm_ops"}),
    )


# The trigram operator class comes with the pg_trgm extension (a trusted extension since
# PostgreSQL 13: the database's owner may create it). Migration 0009 creates it too.
event.listen(Job.__table__, "before_create",
             DDL("CREATE EXTENSION IF NOT EXISTS pg_trgm").execute_if(dialect="postgresql"))


class JobEvent(Base):
    """One status transition (or notable moment) of a job, with time and message."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    from_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_status: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str] = mapped_column(Text, default="")

    job: Mapped[Job] = relationship(back_populates="events")


class Metric(Base):
    """One value of one named series at one step; (job, name, step) is unique."""

    __tablename__ = "metrics"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[float] = mapped_column(Float)


class Artifact(Base):
    __tablename__ = "artifacts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    step: Mapped[int] = mapped_column(Integer)
    key: Mapped[str] = mapped_column(String(512))
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    content_type: Mapped[str] = mapped_column(String(64))
    # evaluation artifacts: lower is better (domain FID for images; for the 2-D mixtures, missed
    # modes plus the fraction of low-quality samples); the checkpoint retention keeps the best.
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("job_id", "kind", "step", name="uq_artifacts_job_kind_step"),)


class ApiKey(Base):
    """An API key: only its sha256 is stored (the key itself is shown once, at creation); the
    prefix is its first characters, not secret, so operators can tell keys apart."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant: Mapped[str] = mapped_column(String(64))
    key_hash: Mapped[str] = mapped_column(String(64))
    prefix: Mapped[str] = mapped_column(String(16))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),)


class Worker(Base):
    """A worker process that serves some queues (``host:pid``), as last announced: the API tells a
    queued job that no live worker can take apart from one that waits for its turn."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    queues: Mapped[list[str]] = mapped_column(JSON)
    devices: Mapped[int] = mapped_column(Integer, default=1)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


SWEEP_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
TRIAL_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "pruned")


class Sweep(Base):
    """A search over job specs (jobs/sweep_spec.py); its trials are ordinary jobs. The search state
    is these rows and the trials' metric rows: jobs/sweeps.py rebuilds Optuna's study from them."""

    __tablename__ = "sweeps"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant: Mapped[str] = mapped_column(String(64), default="default")
    name: Mapped[str] = mapped_column(String(120))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    planned_trials: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # the sweep spec's notify.webhook_url, delivered as a job's (jobs/notify.py)
    notify_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    notify_state: Mapped[str | None] = mapped_column(String(16), nullable=True, index=True)
    notify_claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (
        Index("ix_sweeps_tenant_created", "tenant", "created_at", "id"),
        Index("ix_sweeps_status", "status"),
        Index("uq_sweeps_tenant_idempotency_key", "tenant", "idempotency_key", unique=True),
    )


class SweepTrial(Base):
    """One trial of a sweep: its parameters, its job (None if its sampled spec was invalid), its
    objective once finished, and Optuna's per-trial state (system_attrs: grid point, ASHA rungs)."""

    __tablename__ = "sweep_trials"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    sweep_id: Mapped[str] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    objective: Mapped[float | None] = mapped_column(Float, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    system_attrs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    judged_step: Mapped[int] = mapped_column(Integer, default=0)  # the last evaluation step the pruner saw
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (UniqueConstraint("sweep_id", "number", name="uq_sweep_trials_sweep_number"),
                      UniqueConstraint("job_id", name="uq_sweep_trials_job_id"))


class Dataset(Base):
    """An archive of images a tenant uploaded (POST /v1/datasets), checked once and kept in the
    artifact store under ``storage_key``; jobs name it as ``dataset.upload_id``. The figures are
    gan_core.data.archive's inspection of it."""

    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant: Mapped[str] = mapped_column(String(64), default="default")
    name: Mapped[str] = mapped_column(String(120))
    storage_key: Mapped[str] = mapped_column(String(512))
    content_type: Mapped[str] = mapped_column(String(64))  # the archive's format as uploaded
    sha256: Mapped[str] = mapped_column(String(64))
    bytes: Mapped[int] = mapped_column(BigInteger)  # the archive's size
    files: Mapped[int] = mapped_column(Integer)  # regular files in the archive
    images: Mapped[int] = mapped_column(Integer)  # of those, decodable images
    skipped: Mapped[int] = mapped_column(Integer)  # corrupt or not images
    classes: Mapped[Any] = mapped_column(JSON)  # class folder names (labels: folders), as inspected
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        Index("ix_datasets_tenant_created", "tenant", "created_at", "id"),
        Index("ix_datasets_created", "created_at", "id"),
        Index("uq_datasets_tenant_idempotency_key", "tenant", "idempotency_key", unique=True),
    )
