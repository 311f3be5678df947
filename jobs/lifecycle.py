"""The job lifecycle: every status change goes through this module.

    queued → running → succeeded | failed | cancelled      (queued → cancelled, running → queued)

Each change is one conditional UPDATE (so two workers can never both claim a job) plus a
timestamped event row. A running job holds a lease (worker id, token, expiry); every write a
worker makes carries its token and is refused once the token is stale.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterable

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gan_core.spec import JobSpec
from ganforge.jobs.db import Database
from ganforge.jobs.models import TERMINAL, Artifact, Job, JobEvent, Metric, Worker, utcnow

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


def load_spec(doc: dict[str, Any], settings) -> JobSpec:
    """A stored job's spec, validated with the deployment's limits exactly as the API validated it
    at submission (raising pydantic's ValidationError if the limits changed since)."""
    return JobSpec.model_validate(doc, context=settings.spec_limits)


def queue_for(spec: JobSpec, auto_queue: str = "cpu") -> str:
    """The queue of a job by kind and size: ``cpu``, ``gpu``, and ``gpu-x2``, ``gpu-x4``, ...
    (``cpu-x2``, ...) for jobs on several devices, so a big job never waits behind a worker that
    cannot run it."""
    kind = {"cuda": "gpu", "cpu": "cpu"}.get(spec.device, auto_queue)
    return queue_name(kind, spec.resources.devices)


def queue_name(kind: str, devices: int) -> str:
    return kind if devices == 1 else f"{kind}-x{devices}"


def parse_queue(name: str) -> tuple[str, int]:
    """(kind, devices) of a queue name: ``gpu-x4`` -> ("gpu", 4)."""
    kind, _, size = name.partition("-x")
    return kind, int(size) if size.isdigit() else 1


def queues_served(devices: int, gpus: bool) -> list[str]:
    """The queues of a worker with ``devices`` devices: every job size up to its own (a 4-GPU host
    also runs 1- and 2-GPU jobs, one at a time); a GPU host also takes one-process CPU jobs."""
    kind = "gpu" if gpus else "cpu"
    served = [queue_name(kind, n) for n in range(1, devices + 1)]
    return served + (["cpu"] if gpus else [])


def _event(session: Session, job: Job | str, from_status: str | None, to_status: str, message: str, attempt: int = 0) -> None:
    job_id = job if isinstance(job, str) else job.id
    session.add(JobEvent(job_id=job_id, from_status=from_status, to_status=to_status, message=message, attempt=attempt))


class IdempotencyConflict(LifecycleError):
    """The Idempotency-Key was used before with a different request body."""


def submit(session: Session, spec: JobSpec, tenant: str = "default", auto_queue: str = "cpu",
           idempotency_key: str | None = None, request_hash: str | None = None,
           tags: Iterable[str] = (), notes: str = "", notify_url: str | None = None) -> Job:
    """A new ``queued`` job (committed by the caller's unit of work; enqueue after the commit).
    ``notify_url``: a webhook called once the job ends (jobs/notify.py; checked by the caller)."""
    job = Job(
        tags=list(tags),
        notes=notes,
        notify_url=notify_url,
        notify_state="pending" if notify_url else None,
        tenant=tenant,
        name=spec.name,
        spec=spec.model_dump(mode="json"),
        status="queued",
        queue=queue_for(spec, auto_queue),
        total_steps=spec.train.steps,
        max_attempts=spec.max_attempts,
        enqueued_at=utcnow(),
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        dataset_id=spec.dataset.upload_id,  # an uploaded archive: kept while the job may read it
    )
    session.add(job)
    session.flush()
    _event(session, job, None, "queued", "submitted")
    return job


def idempotent_job(db: Database, tenant: str, idempotency_key: str, request_hash: str) -> str | None:
    """The id of the job this tenant submitted with ``idempotency_key``, None if there is none;
    IdempotencyConflict if that submit had another request body."""
    with db.read() as session:
        row = session.execute(select(Job.id, Job.request_hash).where(
            Job.tenant == tenant, Job.idempotency_key == idempotency_key)).one_or_none()
    if row is None:
        return None
    if row.request_hash != request_hash:
        raise IdempotencyConflict(f"Idempotency-Key {idempotency_key!r} was used with a different request body")
    return row.id


def submit_once(db: Database, spec: JobSpec, tenant: str, idempotency_key: str, request_hash: str,
                auto_queue: str = "cpu", tags: Iterable[str] = (), notes: str = "",
                notify_url: str | None = None) -> tuple[str, bool]:
    """Submit unless this tenant already used ``idempotency_key``: (job id, created).

    The same key with another request body raises IdempotencyConflict. Two racing requests
    with one key insert once: the unique (tenant, key) index refuses the second, which then
    reads the first one's job.
    """
    for _ in range(2):
        found = idempotent_job(db, tenant, idempotency_key, request_hash)
        if found is not None:
            return found, False
        try:
            with db.session() as session:
                job = submit(session, spec, tenant, auto_queue, idempotency_key, request_hash, tags, notes, notify_url)
                return job.id, True
        except IntegrityError:
            continue  # lost the race: the other request's job is there now
    raise LifecycleError(f"could not submit with Idempotency-Key {idempotency_key!r}")


@dataclass(frozen=True)
class Submitted:
    job_id: str
    queue: str
    created: bool  # False: a retry of an earlier submit (same key and body); nothing to enqueue
    admitted: Any = None  # what ``admit`` returned (the API: its rate-limit headers)


def submit_idempotent(db: Database, spec: JobSpec, tenant: str, idempotency_key: str | None = None,
                      request_hash: str | None = None, admit=None, auto_queue: str = "cpu",
                      tags: Iterable[str] = (), notes: str = "", notify_url: str | None = None) -> Submitted:
    """Submit a job; with ``idempotency_key``, once per key and tenant.

    A retry (the same key and request body) gets the first submit's job back, ``created`` False,
    and ``admit`` is not called: no limit is spent twice. The same key with another body raises
    IdempotencyConflict. ``admit(session)`` runs before a new job is made (the API's per-tenant
    limits, which raise to refuse); without a key in the same transaction as the insert. The row
    is committed when this returns: enqueue ``job_id`` then, if ``created``.
    """
    admit = admit or (lambda session: None)
    if idempotency_key is None:
        with db.session() as session:
            admitted = admit(session)
            job = submit(session, spec, tenant=tenant, auto_queue=auto_queue, tags=tags, notes=notes,
                         notify_url=notify_url)
            return Submitted(job.id, job.queue, True, admitted)
    replay = idempotent_job(db, tenant, idempotency_key, request_hash)
    if replay is not None:
        return Submitted(replay, queue_for(spec, auto_queue), False)
    with db.session() as session:
        admitted = admit(session)
    job_id, created = submit_once(db, spec, tenant, idempotency_key, request_hash, auto_queue, tags, notes, notify_url)
    return Submitted(job_id, queue_for(spec, auto_queue), created, admitted)


def set_labels(db: Database, job_id: str, tenant: str | None, changes: dict[str, Any]) -> None:
    """Replace a job's ``tags`` and/or ``notes`` (the keys of ``changes``), whatever its status:
    labels are the owner's, not the run's, so no lease fences them. JobNotFound for a job that
    does not exist or (``tenant`` not None) belongs to another tenant."""
    unknown = set(changes) - {"tags", "notes"}
    if unknown:
        raise ValueError(f"only tags and notes are labels, not {sorted(unknown)}")
    stmt = update(Job).where(Job.id == job_id)
    if tenant is not None:
        stmt = stmt.where(Job.tenant == tenant)
    with db.session() as session:
        if session.execute(stmt.values(**changes)).rowcount != 1:
            raise JobNotFound(job_id)


def get(session: Session, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise JobNotFound(job_id)
    return job


def claim(db: Database, job_id: str, worker_id: str, lease_seconds: int) -> Claim | None:
    """Take a queued job for this worker; None if it is not free.

    One conditional UPDATE: of two workers handed the same id, exactly one gets the row. A job
    still ``running`` under an expired lease (its worker died) is first handed back to the queue
    (or ended, after ``max_attempts`` lost attempts) exactly as the reconciler would.
    """
    with db.session() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise JobNotFound(job_id)
        if job.status == "running" and job.lease_expires_at is not None and job.lease_expires_at < utcnow():
            _expire(session, job)
    now = utcnow()
    token = secrets.token_hex(16)
    with db.session() as session:
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "queued", Job.cancel_requested.is_(False))
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
            return None
        job = session.get(Job, job_id)
        session.refresh(job)
        _event(session, job, "queued", "running", f"claimed by {worker_id}", job.attempt)
        return Claim(job_id, token, job.attempt, worker_id)


def _expire(session: Session, job: Job, reason: str | None = None, expired_only: bool = True) -> str | None:
    """Hand back a running job whose lease expired: queued again with this attempt's reason
    recorded, or — after ``max_attempts`` lost attempts — failed with every attempt's reason
    (cancelled if cancellation was asked for). Returns the new status, None if another process
    got there first (the UPDATE is conditional on the lease the caller saw).

    ``expired_only=False`` ends the attempt now, lease or not (its holder knows it is lost)."""
    reason = reason or (f"attempt {job.attempt}: worker {job.worker_id} stopped renewing its lease "
                        "(killed, out of memory or cut off from the database)")
    errors = list(job.attempt_errors or []) + [reason]
    if job.cancel_requested:
        status, error = "cancelled", None
    elif len(errors) >= job.max_attempts:
        status, error = "failed", f"gave up after {len(errors)} lost attempts: " + "; ".join(errors)
    else:
        status, error = "queued", None
    now = utcnow()
    values: dict[str, Any] = dict(status=status, attempt_errors=errors, lease_token=None, lease_expires_at=None,
                                  worker_id=None, updated_at=now)
    if status == "queued":
        values["enqueued_at"] = now
    else:
        values.update(error=error, finished_at=now)
    conditions = [Job.id == job.id, Job.status == "running", Job.lease_token == job.lease_token]
    if expired_only:
        conditions.append(Job.lease_expires_at < now)
    result = session.execute(
        update(Job)
        .where(*conditions)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return None
    _event(session, job.id, "running", status, error or reason, job.attempt)
    return status


def abandon(db: Database, job_id: str, token: str, reason: str) -> str | None:
    """End a running attempt that its worker knows is lost (a training process died) at once, as a
    lost attempt: queued again (resuming from its latest checkpoint), or failed after
    ``max_attempts``. Returns the new status; None if the token no longer holds the job (rank 0
    ended it first, or the lease already moved on)."""
    with db.session() as session:
        job = session.get(Job, job_id)
        if job is None or job.status != "running" or job.lease_token != token:
            return None
        return _expire(session, job, reason, expired_only=False)


def record_attempt_log(db: Database, job_id: str, attempt: int, key: str, data: bytes) -> None:
    """Register an attempt's log (kind ``log``, step = the attempt), whatever the job's state: the
    log is written after the attempt ended."""
    with db.session() as session:
        existing = session.execute(
            select(Artifact).where(Artifact.job_id == job_id, Artifact.kind == "log", Artifact.step == attempt)
        ).scalar_one_or_none()
        artifact = existing or Artifact(job_id=job_id, kind="log", step=attempt)
        artifact.key, artifact.bytes, artifact.content_type = key, len(data), "text/plain; charset=utf-8"
        artifact.sha256 = hashlib.sha256(data).hexdigest()
        artifact.created_at = utcnow()
        session.add(artifact)


def announce_worker(db: Database, worker_id: str, queues: list[str], devices: int) -> None:
    """A worker says it is alive and which queues it serves (at start and on every reconciler
    pass); workers not heard from for a day are forgotten."""
    now = utcnow()
    with db.session() as session:
        row = session.get(Worker, worker_id) or Worker(id=worker_id, started_at=now)
        row.queues, row.devices, row.last_seen = list(queues), devices, now
        session.add(row)
        session.execute(delete(Worker).where(Worker.last_seen < now - timedelta(days=1)))


def forget_worker(db: Database, worker_id: str) -> None:
    with db.session() as session:
        session.execute(delete(Worker).where(Worker.id == worker_id))


def waiting_reason(session: Session, queue: str, live_seconds: float) -> str | None:
    """Why a queued job on ``queue`` cannot start: no live worker serves that queue (None when one
    does: the job waits for its turn). Live: heard from within ``live_seconds``."""
    cutoff = utcnow() - timedelta(seconds=live_seconds)
    workers = session.execute(select(Worker.queues, Worker.devices).where(Worker.last_seen >= cutoff)).all()
    if any(queue in (queues or []) for queues, _ in workers):
        return None
    kind, devices = parse_queue(queue)
    what = f"{devices} {'GPU' if kind == 'gpu' else 'CPU'} device{'s' if devices > 1 else ''}"
    if not workers:
        return f"no worker is running; this job needs a worker with {what} (queue '{queue}')"
    sizes = sorted({(parse_queue(q)[0], parse_queue(q)[1]) for queues, _ in workers for q in queues or []})
    largest = max((n for k, n in sizes if k == kind), default=0)
    have = (f"the largest running {kind.upper()} worker has {largest}" if largest
            else f"no running worker has {'a GPU' if kind == 'gpu' else 'CPU queues'}")
    return f"no running worker can take this job: it needs {what} (queue '{queue}'), and {have}"


def expire_leases(db: Database, limit: int = 100) -> list[tuple[str, str]]:
    """The reaper: every running job whose lease expired is requeued (or ended); returns the
    (job id, queue) pairs now queued, for the caller to enqueue after this commit."""
    now = utcnow()
    requeued = []
    with db.session() as session:
        jobs = session.scalars(
            select(Job).where(Job.status == "running", Job.lease_expires_at < now).limit(limit)
        ).all()
        for job in jobs:
            if _expire(session, job) == "queued":
                requeued.append((job.id, job.queue))
    return requeued


def expire_dead_local_workers(db: Database, host: str, alive) -> int:
    """Expire at once the leases held by workers of this host whose process is gone.

    Worker ids are ``host:pid``; ``alive(pid)`` says whether that process exists. A worker killed
    on this host is noticed on the reconciler's next pass instead of after its lease runs out.
    Returns how many leases were cut short.
    """
    prefix = f"{host}:"
    cut = 0
    with db.session() as session:
        rows = session.execute(
            select(Job.id, Job.worker_id, Job.lease_token).where(Job.status == "running", Job.worker_id.startswith(prefix))
        ).all()
        for job_id, worker_id, token in rows:
            pid = worker_id[len(prefix):]
            if not pid.isdigit() or alive(int(pid)):
                continue
            cut += session.execute(
                update(Job)
                .where(Job.id == job_id, Job.lease_token == token, Job.status == "running")
                .values(lease_expires_at=utcnow() - timedelta(seconds=1))
                .execution_options(synchronize_session=False)
            ).rowcount
    return cut


def stale_queued(db: Database, older_than_seconds: float, limit: int = 500) -> list[tuple[str, str, int]]:
    """(id, queue, attempt) of queued jobs last sent to the broker more than ``older_than_seconds`` ago."""
    cutoff = utcnow() - timedelta(seconds=older_than_seconds)
    with db.read() as session:
        rows = session.execute(
            select(Job.id, Job.queue, Job.attempt).where(Job.status == "queued", Job.cancel_requested.is_(False),
                                            or_(Job.enqueued_at.is_(None), Job.enqueued_at < cutoff))
            .order_by(Job.created_at).limit(limit)
        ).all()
    return [(row.id, row.queue, row.attempt) for row in rows]


def mark_enqueued(db: Database, job_ids: Iterable[str]) -> None:
    ids = list(job_ids)
    if not ids:
        return
    with db.session() as session:
        session.execute(update(Job).where(Job.id.in_(ids), Job.status == "queued").values(enqueued_at=utcnow())
                        .execution_options(synchronize_session=False))


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


def heartbeat(db: Database, job_id: str, token: str, lease_seconds: int, step: int | None = None,
              runtime_seconds: float | None = None) -> bool:
    """Extend the lease and record progress (and the training time over all attempts); returns
    whether cancellation was requested."""
    with db.session() as session:
        job = _owned(session, job_id, token)
        job.lease_expires_at = utcnow() + timedelta(seconds=lease_seconds)
        if step is not None:
            job.progress_step = step
        if runtime_seconds is not None:
            job.runtime_seconds = runtime_seconds
        return job.cancel_requested


def record_divergence(db: Database, job_id: str, token: str, message: str) -> int:
    """Count a non-finite loss (with an event saying what was done); returns the count so far."""
    with db.session() as session:
        job = _owned(session, job_id, token)
        job.divergences = job.divergences + 1
        _event(session, job, "running", "running", message, job.attempt)
        return job.divergences


def record_dataset_summary(db: Database, job_id: str, token: str, summary: dict[str, Any]) -> None:
    """What the job's image dataset held (gan_core.data.folder.FolderSummary), for the job view."""
    with db.session() as session:
        job = _owned(session, job_id, token)
        job.dataset_summary = summary


MAX_HEALTH_FINDINGS = 100  # a job's health list keeps the newest (each finding is also an event)


def record_health(db: Database, job_id: str, token: str, findings: list[dict[str, Any]],
                  stop_reason: str | None = None) -> tuple[bool, str | None]:
    """GAN health findings ({detector, step, message, action}): each an entry of ``jobs.health``
    and an event row. With ``stop_reason`` the job is stopped through the cancel path (as a
    sweep's pruner stops one) and keeps the reason, unless a cancel was asked for already.
    Returns (cancel_requested, the job's stop_reason)."""
    with db.session() as session:
        job = _owned(session, job_id, token)
        for finding in findings:
            _event(session, job, "running", "running", f"GAN health: {finding['detector']} at step {finding['step']}: "
                   f"{finding['message']}", job.attempt)
        job.health = (list(job.health or []) + list(findings))[-MAX_HEALTH_FINDINGS:]
        if stop_reason is not None and not job.cancel_requested:
            job.stop_reason = stop_reason
            cancel_locked(session, job, f"{stop_reason} (GAN health)")
        return job.cancel_requested, job.stop_reason


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
        _upsert_metrics(session, job_id, values_by_key)
        if rows:
            last_step, last = rows[-1]
            job.latest_metrics = {"step": last_step,
                                  **{k: float(v) if math.isfinite(float(v)) else None for k, v in last.items()}}
            job.progress_step = max(job.progress_step, last_step)
        job.lease_expires_at = utcnow() + timedelta(seconds=lease_seconds)
        return job.cancel_requested


def record_artifact(db: Database, job_id: str, token: str, *, kind: str, step: int, key: str, size: int,
                    sha256: str, content_type: str, score: float | None = None) -> Artifact:
    """Register an uploaded object (one per job, kind and step: a re-upload replaces the row)."""
    with db.session() as session:
        _owned(session, job_id, token)
        existing = session.execute(
            select(Artifact).where(Artifact.job_id == job_id, Artifact.kind == kind, Artifact.step == step)
        ).scalar_one_or_none()
        artifact = existing or Artifact(job_id=job_id, kind=kind, step=step)
        artifact.key, artifact.bytes, artifact.sha256, artifact.content_type = key, size, sha256, content_type
        artifact.score = score
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


def release(db: Database, job_id: str, token: str, message: str, step: int | None = None) -> None:
    """Give a running job back to the queue (graceful worker stop): running → queued. A release
    is not a lost attempt: it does not count against ``max_attempts``."""
    with db.session() as session:
        job = _owned(session, job_id, token)
        if step is not None:
            job.progress_step = step
        _transition(session, job, "queued", message)
        job.lease_token = None
        job.lease_expires_at = None
        job.worker_id = None
        job.enqueued_at = utcnow()


def request_cancel(db: Database, job_id: str, tenant: str | None = None) -> Job:
    """Queued: cancelled at once (it will never run). Running: flagged; the worker stops, saves
    a checkpoint and ends it cancelled. Finished jobs refuse."""
    with db.session() as session:
        job = session.execute(select(Job).where(Job.id == job_id).with_for_update()).scalar_one_or_none()
        if job is None or (tenant is not None and job.tenant != tenant):
            raise JobNotFound(job_id)
        cancel_locked(session, job)
        session.flush()
        return job


def cancel_locked(session: Session, job: Job, reason: str = "") -> None:
    """``request_cancel`` on a job row the caller holds locked (in its unit of work); ``reason``
    goes into the event (a sweep's pruner: ``pruned``)."""
    why = f": {reason}" if reason else ""
    if job.status == "queued":
        _transition(session, job, "cancelled", f"cancelled before it ran{why}")
    elif job.status == "running":
        if not job.cancel_requested:
            job.cancel_requested = True
            _event(session, job, "running", "running", f"cancellation requested{why}", job.attempt)
    else:
        raise IllegalTransition(job.id, job.status, "cancelled")
    job.cancel_requested = True


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


def checkpoints_to_prune(db: Database, job_id: str, keep_last: int, keep_best: bool) -> list[Artifact]:
    """Checkpoints outside the retention policy: all but the latest ``keep_last`` and (with
    ``keep_best``) the one at the best-scored evaluation step. The latest — the one a resume
    needs — is always kept."""
    with db.read() as session:
        checkpoints = list(session.scalars(select(Artifact).where(Artifact.job_id == job_id, Artifact.kind == "checkpoint")
                                           .order_by(Artifact.step.desc())))
        keep = {a.step for a in checkpoints[:max(1, keep_last)]}
        if keep_best:
            best = session.execute(
                select(Artifact.step).where(Artifact.job_id == job_id, Artifact.kind == "evaluation",
                                            Artifact.score.is_not(None),
                                            Artifact.step.in_([a.step for a in checkpoints]))
                .order_by(Artifact.score, Artifact.step.desc()).limit(1)
            ).scalar_one_or_none()
            if best is not None:
                keep.add(best)
        return [a for a in checkpoints if a.step not in keep]


def forget_artifact(db: Database, job_id: str, token: str, artifact_id: str) -> None:
    """Remove an artifact's row (under the job's lease); the caller deletes the object after."""
    with db.session() as session:
        _owned(session, job_id, token)
        artifact = session.get(Artifact, artifact_id)
        if artifact is not None and artifact.job_id == job_id:
            session.delete(artifact)


def latest_artifact(db: Database, job_id: str, kind: str) -> Artifact | None:
    """The job's artifact of ``kind`` with the highest step (e.g. the checkpoint to resume from)."""
    with db.session() as session:  # the pre-pinged pool: the worker may have outlived a database restart
        return session.execute(
            select(Artifact).where(Artifact.job_id == job_id, Artifact.kind == kind)
            .order_by(Artifact.step.desc()).limit(1)
        ).scalar_one_or_none()


def latest_checkpoint_step(db: Database, job_id: str) -> int:
    """The step of the job's newest stored checkpoint; 0 if it has none."""
    with db.read() as session:
        return session.scalar(select(func.max(Artifact.step)).where(Artifact.job_id == job_id,
                                                                    Artifact.kind == "checkpoint")) or 0


def metric_series(db: Database, job_id: str, names: Iterable[str]) -> dict[str, list[tuple[int, float]]]:
    """(step, value) points of each named series, in step order (an empty list where none)."""
    series: dict[str, list[tuple[int, float]]] = {name: [] for name in names}
    with db.session() as session:
        rows = session.execute(select(Metric.name, Metric.step, Metric.value)
                               .where(Metric.job_id == job_id, Metric.name.in_(list(series))).order_by(Metric.step))
        for name, step, value in rows:
            series[name].append((step, value))
    return series


def _upsert_metrics(session: Session, job_id: str, values_by_key: dict[tuple[str, int], float]) -> None:
    values = [{"job_id": job_id, "name": name, "step": step, "value": value}
              for (name, step), value in values_by_key.items() if math.isfinite(value)]
    if values:
        insert = pg_insert if session.bind.dialect.name == "postgresql" else sqlite_insert
        stmt = insert(Metric).values(values)
        stmt = stmt.on_conflict_do_update(index_elements=["job_id", "name", "step"], set_={"value": stmt.excluded.value})
        session.execute(stmt)


EVALUATION_SERIES = "eval/"


def record_evaluation(db: Database, job_id: str, token: str, step: int, results: dict[str, Any],
                      lease_seconds: int) -> str | None:
    """The numeric figures of a periodic evaluation as metric series ``eval/<figure>`` at ``step``
    (the learning curve of the quality; a sweep's pruner reads it); ``latest_metrics`` is left to
    the training series. Returns the job's sweep id (None for an ordinary job)."""
    values = {(f"{EVALUATION_SERIES}{name}", step): float(value) for name, value in results.items()
              if isinstance(value, (int, float)) and not isinstance(value, bool)}
    with db.session() as session:
        job = _owned(session, job_id, token)
        _upsert_metrics(session, job_id, values)
        job.lease_expires_at = utcnow() + timedelta(seconds=lease_seconds)
        return job.sweep_id


def is_cancel_requested(db: Database, job_id: str) -> bool:
    with db.session() as session:
        return bool(session.execute(select(Job.cancel_requested).where(Job.id == job_id)).scalar_one_or_none())

