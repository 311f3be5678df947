"""The job lifecycle: every status change goes through this module.

    queued → running → succeeded | failed | cancelled      (queued → cancelled, running → queued)

Each change is one conditional UPDATE (so two workers can never both claim a job) plus a
timestamped event row. A running job holds a lease (worker id, token, expiry); every write a
worker makes carries its token and is refused once the token is stale.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Iterable

from sqlalchemy import and_, case, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from gan_core.spec import JobSpec
from jobs.db import Database
from jobs.models import TERMINAL, Artifact, Job, JobEvent, Metric, utcnow

ALLOWED: dict[str, set[str]] = {
    "queued": {"running", "cancelled", "failed"},
    "running": {"succeeded", "failed", "cancelled", "queued"},
    "succeeded": set(),
    "failed": set(),
    "cancelled": set(),
}


class LifecycleError(Exception):
    pass


class JobNotFound(LifecycleError):
    pass


class IllegalTransition(LifecycleError):
    def __init__(self, job_id: str, current: str, wanted: str):
        super().__init__(f"job {job_id} is {current}; it cannot become {wanted}")
        self.current = current
        self.wanted = wanted


class LeaseLost(LifecycleError):
    """The caller's lease token is no longer the job's: another attempt owns it, or it ended."""


@dataclass(frozen=True)
class Claim:
    job_id: str
    token: str
    attempt: int
    worker_id: str


def queue_for(spec: JobSpec, auto_queue: str = "cpu") -> str:
    return {"cuda": "gpu", "cpu": "cpu"}.get(spec.device, auto_queue)


def _event(session: Session, job: Job | str, from_status: str | None, to_status: str, message: str, attempt: int = 0) -> None:
    job_id = job if isinstance(job, str) else job.id
    session.add(JobEvent(job_id=job_id, from_status=from_status, to_status=to_status, message=message, attempt=attempt))


def submit(session: Session, spec: JobSpec, tenant: str = "default", auto_queue: str = "cpu") -> Job:
    """A new ``queued`` job (committed by the caller's unit of work; enqueue after the commit)."""
    job = Job(
        tenant=tenant,
        name=spec.name,
        spec=spec.model_dump(mode="json"),
        status="queued",
        queue=queue_for(spec, auto_queue),
        total_steps=spec.train.steps,
    )
    session.add(job)
    session.flush()
    _event(session, job, None, "queued", "submitted")
    return job


def get(session: Session, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise JobNotFound(job_id)
    return job


def claim(db: Database, job_id: str, worker_id: str, lease_seconds: int) -> Claim | None:
    """Take a queued job (or one whose lease expired) for this worker; None if it is not free.

    One conditional UPDATE: of two workers handed the same id, exactly one gets the row. A job
    whose lease expired on its last allowed attempt (``max_attempts``: its worker keeps dying,
    e.g. out of memory) is ended instead of being run again forever.
    """
    now = utcnow()
    token = secrets.token_hex(16)
    with db.session() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise JobNotFound(job_id)
        previous = job.status
        expired = and_(Job.status == "running", Job.lease_expires_at < now)
        free = or_(
            and_(Job.status == "queued", Job.cancel_requested.is_(False)),
            and_(expired, Job.attempt < Job.max_attempts),
        )
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, free)
            .values(
                status="running",
                attempt=Job.attempt + 1,
                worker_id=worker_id,
                lease_token=token,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                started_at=now,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            _end_exhausted(session, job, expired, now)
            return None
        session.refresh(job)
        _event(session, job, previous, "running", f"claimed by {worker_id}", job.attempt)
        return Claim(job_id, token, job.attempt, worker_id)


def _end_exhausted(session: Session, job: Job, expired, now: datetime) -> None:
    """Fail (or, if asked to, cancel) a job whose lease expired on its last allowed attempt."""
    message = (f"gave up after {job.attempt} attempts: the lease expired each time "
               "(the worker died or lost the database)")
    result = session.execute(
        update(Job)
        .where(Job.id == job.id, expired, Job.attempt >= Job.max_attempts)
        .values(
            status=case((Job.cancel_requested.is_(True), "cancelled"), else_="failed"),
            error=case((Job.cancel_requested.is_(True), None), else_=message),
            lease_token=None,
            lease_expires_at=None,
            finished_at=now,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 1:
        session.refresh(job)
        _event(session, job, "running", job.status, message, job.attempt)


def _owned(session: Session, job_id: str, token: str) -> Job:
    """The job row, locked, if ``token`` still holds its lease; else LeaseLost.

    Lock first, then read: a conditional UPDATE takes the row lock on PostgreSQL and the write
    lock on SQLite (which has no SELECT ... FOR UPDATE), so the lease cannot change hands between
    this check and the caller's writes in the same unit of work.
    """
    locked = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "running", Job.lease_token == token)
        .values(lease_token=token)
        .execution_options(synchronize_session=False)
    ).rowcount
    job = session.execute(select(Job).where(Job.id == job_id)).scalar_one_or_none()
    if job is None:
        raise JobNotFound(job_id)
    if locked != 1:
        raise LeaseLost(f"job {job_id}: lease token is stale (status {job.status})")
    return job


def heartbeat(db: Database, job_id: str, token: str, lease_seconds: int, step: int | None = None) -> bool:
    """Extend the lease and record progress; returns whether cancellation was requested."""
    with db.session() as session:
        job = _owned(session, job_id, token)
        job.lease_expires_at = utcnow() + timedelta(seconds=lease_seconds)
        if step is not None:
            job.progress_step = step
        return job.cancel_requested


def record_metrics(db: Database, job_id: str, token: str, rows: Iterable[tuple[int, dict[str, float]]], lease_seconds: int) -> bool:
    """Write metric rows (one batch, idempotent per (name, step)); returns cancel_requested.

    Within a batch the last value of a (name, step) wins (one INSERT may not touch a row twice).
    Non-finite values are not stored: SQLite turns NaN into NULL and JSON has no NaN/Infinity;
    ``latest_metrics`` shows them as null.
    """
    rows = list(rows)
    values_by_key: dict[tuple[str, int], float] = {}
    for step, metrics in rows:
        for name, value in metrics.items():
            values_by_key[(name, step)] = float(value)
    with db.session() as session:
        job = _owned(session, job_id, token)
        values = [{"job_id": job_id, "name": name, "step": step, "value": value}
                  for (name, step), value in values_by_key.items() if math.isfinite(value)]
        if values:
            insert = pg_insert if session.bind.dialect.name == "postgresql" else sqlite_insert
            stmt = insert(Metric).values(values)
            stmt = stmt.on_conflict_do_update(index_elements=["job_id", "name", "step"], set_={"value": stmt.excluded.value})
            session.execute(stmt)
        if rows:
            last_step, last = rows[-1]
            job.latest_metrics = {"step": last_step,
                                  **{k: float(v) if math.isfinite(float(v)) else None for k, v in last.items()}}
            job.progress_step = max(job.progress_step, last_step)
        job.lease_expires_at = utcnow() + timedelta(seconds=lease_seconds)
        return job.cancel_requested


def record_artifact(db: Database, job_id: str, token: str, *, kind: str, step: int, key: str, size: int,
                    sha256: str, content_type: str) -> Artifact:
    """Register an uploaded object (one per job, kind and step: a re-upload replaces the row)."""
    with db.session() as session:
        _owned(session, job_id, token)
        existing = session.execute(
            select(Artifact).where(Artifact.job_id == job_id, Artifact.kind == kind, Artifact.step == step)
        ).scalar_one_or_none()
        artifact = existing or Artifact(job_id=job_id, kind=kind, step=step)
        artifact.key, artifact.bytes, artifact.sha256, artifact.content_type = key, size, sha256, content_type
        artifact.created_at = utcnow()
        session.add(artifact)
        session.flush()
        return artifact


def finish(db: Database, job_id: str, token: str, status: str, message: str = "",
           evaluation: dict[str, Any] | None = None, step: int | None = None) -> None:
    """End a run: succeeded, failed (with its reason) or cancelled; the lease is released."""
    if status not in TERMINAL:
        raise ValueError(f"finish takes a terminal status, not {status}")
    with db.session() as session:
        job = _owned(session, job_id, token)
        _transition(session, job, status, message)
        if status == "failed":
            job.error = message
        if evaluation is not None:
            job.evaluation = evaluation
        if step is not None:
            job.progress_step = step
        job.lease_token = None
        job.lease_expires_at = None


def release(db: Database, job_id: str, token: str, message: str) -> None:
    """Give a running job back to the queue (graceful worker stop): running → queued."""
    with db.session() as session:
        job = _owned(session, job_id, token)
        _transition(session, job, "queued", message)
        job.lease_token = None
        job.lease_expires_at = None
        job.worker_id = None


def request_cancel(db: Database, job_id: str, tenant: str | None = None) -> Job:
    """Queued: cancelled at once (it will never run). Running: flagged; the worker stops, saves
    a checkpoint and ends it cancelled. Finished jobs refuse."""
    with db.session() as session:
        job = session.execute(select(Job).where(Job.id == job_id).with_for_update()).scalar_one_or_none()
        if job is None or (tenant is not None and job.tenant != tenant):
            raise JobNotFound(job_id)
        if job.status == "queued":
            _transition(session, job, "cancelled", "cancelled before it ran")
        elif job.status == "running":
            if not job.cancel_requested:
                job.cancel_requested = True
                _event(session, job, "running", "running", "cancellation requested", job.attempt)
        else:
            raise IllegalTransition(job_id, job.status, "cancelled")
        job.cancel_requested = True
        session.flush()
        return job


def _transition(session: Session, job: Job, to_status: str, message: str) -> None:
    if to_status not in ALLOWED[job.status]:
        raise IllegalTransition(job.id, job.status, to_status)
    previous = job.status
    job.status = to_status
    now = utcnow()
    job.updated_at = now
    if to_status in TERMINAL:
        job.finished_at = now
    _event(session, job, previous, to_status, message, job.attempt)


def is_cancel_requested(db: Database, job_id: str) -> bool:
    with db.session() as session:
        return bool(session.execute(select(Job.cancel_requested).where(Job.id == job_id)).scalar_one_or_none())

