"""/v1/jobs: submit, read, list, cancel; metric series; sample and checkpoint listings; generate.

Views validate their input, call ``ganforge.jobs.lifecycle`` or read the tables, and serialise; nothing
here trains.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from datetime import datetime, timedelta, timezone
from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ganforge.api import read_model
from ganforge.api.auth import principal, scoped
from ganforge.api.errors import APIError, invalid, not_found
from ganforge.api.generation import Busy, UnusableCheckpoint, label_problem, render
from ganforge.api.limits import check_submission
from ganforge.api.schemas import (
    MAX_TAGS,
    TAG,
    TAG_RULE,
    GenerateRequest,
    JobPatch,
    JobSubmission,
    ListJobsQuery,
    LogsQuery,
    MetricsQuery,
    artifact_to_dict,
    decode_cursor,
    encode_cursor,
    job_summary,
    job_to_dict,
    json_safe,
)
from ganforge.api.state import finished_views, generation, services, signer
from ganforge.api.validation import allow_query, check_id, json_body, query_int, query_str
from gan_core.rejection import RejectionError
from gan_core.spec import JobSpec, error_details
from ganforge.jobs import datasets, lifecycle
from ganforge.jobs import job_logs as job_logs_store
from ganforge.jobs import notify as jobs_notify
from ganforge.jobs.models import STATUSES, Artifact, Job
from ganforge.jobs.storage import StorageError

log = logging.getLogger(__name__)

bp = Blueprint("jobs", __name__, url_prefix="/v1/jobs")

DEFAULT_LIMIT, MAX_LIMIT = 50, 200
METRIC_NAME = re.compile(r"[A-Za-z0-9_.:/-]{1,64}")
MAX_METRIC_NAMES = 32
MAX_POINTS = 100_000


# ---- helpers ------------------------------------------------------------------------------------
def _invalid_body(code: str, exc: ValidationError, what: str, unknown_field: str = "unknown field") -> APIError:
    details = [{**d, "problem": unknown_field} if d["problem"] == "unknown field" else d for d in error_details(exc)]
    first = details[0]
    more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
    return APIError(422, code, f"invalid {what}: {first['field']}: {first['problem']}{more}", details)


def _object_body(code: str, what: str) -> dict[str, Any]:
    doc = json_body(code)
    if not isinstance(doc, dict):
        raise APIError(422, code, f"the {what} must be a JSON object",
                       [{"field": "(root)", "problem": f"must be a JSON object, not {type(doc).__name__}"}])
    return doc


def _require_job(session: Session, job_id: str) -> None:
    # Another tenant's job is "not found", exactly like a job that does not exist.
    if session.scalar(scoped(select(Job.id).where(Job.id == job_id))) is None:
        raise not_found("job")


def _job_view(conn: Connection, job_id: str) -> dict[str, Any]:
    # Plain rows, not ORM objects: this is the most polled endpoint.
    who = principal()  # another tenant's job is not found (admins see all)
    found = read_model.job_row(conn, job_id, None if who.is_admin else who.tenant)
    if found is None:
        raise not_found("job")
    view = job_to_dict(*found)
    view["devices"] = (view.get("spec") or {}).get("resources", {}).get("devices", 1)
    view["logs_url"] = url_for("jobs.job_logs", job_id=job_id)
    view["waiting_reason"] = None
    if view["status"] == "queued":  # a live worker may not exist for this job's size
        live = max(30.0, 3.0 * services().settings.reconcile_seconds)
        with Session(bind=conn) as session:
            view["waiting_reason"] = lifecycle.waiting_reason(session, view["queue"], live)
    finished_views().put(job_id, None if who.is_admin else who.tenant, view)
    return view


def _download(artifact: Artifact) -> dict[str, Any]:
    """The listing entry of an artifact with a fresh URL: the store's own presigned URL when it
    has one (S3), else this API's content URL signed with the deployment's secret."""
    svc = services()
    ttl = svc.settings.presign_ttl_seconds
    try:
        url = svc.storage.presigned_url(artifact.key, ttl)
    except StorageError:
        raise
    except Exception as exc:  # botocore without credentials, a malformed endpoint, ...
        raise StorageError(f"cannot presign {artifact.key}: {exc}") from exc
    if url:
        expires_at = datetime.now(timezone.utc) + timedelta(seconds=ttl)
    else:
        expires, signature = signer().sign(artifact.id, ttl)
        url = url_for("artifacts.content", artifact_id=artifact.id, expires=expires, signature=signature, _external=True)
        expires_at = datetime.fromtimestamp(expires, timezone.utc)
    return artifact_to_dict(artifact, url, expires_at)


def _check_upload(spec: JobSpec, tenant: str, field: str = "dataset.upload_id", code: str = "invalid_spec") -> None:
    """422 naming ``field`` unless the uploaded dataset the spec names (if any) is the tenant's."""
    with services().db.read() as session:
        try:
            datasets.check_upload(session, tenant, spec)
        except datasets.UploadNotFound as exc:
            raise invalid(field, str(exc), code=code) from None


# ---- jobs ---------------------------------------------------------------------------------------
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")  # visible ASCII, as the IETF draft's examples


def _idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not IDEMPOTENCY_KEY.fullmatch(key):
        raise APIError(422, "invalid_header", "Idempotency-Key must be 1 to 255 visible ASCII characters",
                       [{"field": "Idempotency-Key", "problem": "must be 1 to 255 visible ASCII characters"}])
    return key


def _idempotency_conflict(exc: Exception) -> APIError:
    return APIError(409, "idempotency_conflict", str(exc),
                    [{"field": "Idempotency-Key", "problem": "already used with a different request body"}])


def _checked_webhook(notify, code: str = "invalid_spec") -> str | None:
    """The submit's webhook URL once allowed (422 naming ``notify.webhook_url`` otherwise)."""
    if notify is None:
        return None
    settings = services().settings
    if not settings.webhook_secret:
        raise invalid("notify.webhook_url", "this deployment sends no webhooks (GANFORGE_WEBHOOK_SECRET is not set)",
                      code=code)
    try:
        jobs_notify.check_url(notify.webhook_url, settings)  # https, public hosts only (SSRF)
    except jobs_notify.WebhookRefused as exc:
        raise invalid("notify.webhook_url", str(exc), code=code) from None
    return notify.webhook_url


@bp.post("")
def submit_job():
    """Submit a job. With an ``Idempotency-Key`` header a retried POST returns the job the first
    one made (header ``Idempotent-Replayed: true``); the same key with another body is a 409."""
    svc = services()
    key = _idempotency_key()
    doc = _object_body("invalid_spec", "job spec")
    try:  # the spec, the job's labels (tags, notes) and its webhook side by side in one body
        submission = JobSubmission.model_validate(doc, context=svc.settings.spec_limits)
    except ValidationError as exc:
        raise _invalid_body("invalid_spec", exc, "job spec") from None
    spec, labels = submission.split()
    notify_url = _checked_webhook(submission.notify)
    try:
        datasets.check_spec(spec, svc.settings)  # no server paths, no internal hosts (SSRF)
    except datasets.DatasetSourceError as exc:
        raise invalid("dataset.path", str(exc), code="invalid_spec") from None
    who = principal()
    _check_upload(spec, who.tenant)
    body_hash = None
    if key is not None:
        body_hash = hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    try:
        submitted = lifecycle.submit_idempotent(
            svc.db, spec, who.tenant, key, body_hash, auto_queue="cpu", tags=labels.tags, notes=labels.notes,
            notify_url=notify_url,
            admit=lambda session: check_submission(session, svc.settings, who.tenant))  # 429 past a per-tenant limit
    except lifecycle.IdempotencyConflict as exc:  # this key was used with another body (maybe by a racing request)
        raise _idempotency_conflict(exc) from None
    except (IntegrityError, lifecycle.LifecycleError):
        # The upload was deleted between the check above and the insert (its foreign key refused
        # the job): the same 422 as if it had been gone before.
        _check_upload(spec, who.tenant)
        raise
    job_id, queue, created = submitted.job_id, submitted.queue, submitted.created
    limit_headers = submitted.admitted or {}
    # Only now is the row committed: a worker handed the id can always find the job.
    if created:
        try:
            svc.queue.enqueue(job_id, queue)
        except Exception:
            # The job is safe in the database as queued and the client still gets it; the
            # reconciler sends it again once it has waited requeue_after_seconds.
            log.exception("job %s was saved but could not be enqueued on %s; it stays queued",
                          job_id, queue, extra={"job_id": job_id})
        else:
            log.info("job %s submitted on %s", job_id, queue, extra={"job_id": job_id})
    with svc.db.session() as session:
        view = _job_view(session.connection(), job_id)
    response = jsonify(view)
    response.status_code = 201
    response.headers["Location"] = f"/v1/jobs/{job_id}"
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    response.headers.update(limit_headers)
    return response


def _tag_filter() -> list[str]:
    tags = list(dict.fromkeys(request.args.getlist("tag")))
    if len(tags) > MAX_TAGS:
        raise invalid("tag", "too many tags at once")
    for tag in tags:
        if not TAG.fullmatch(tag):
            raise invalid("tag", f"{tag[:70]!r} is not a tag ({TAG_RULE})")
    return tags


@bp.get("")
def list_jobs():
    """Newest first, a page at a time; ``status``, ``tag`` (repeatable: all of them) and ``q`` (a
    part of the name, any case) filter."""
    allow_query(ListJobsQuery.model_fields)
    tags = _tag_filter()
    q = query_str("q")
    if q is not None and len(q) > 120:
        raise invalid("q", "at most 120 characters (a job name is no longer)")
    status = query_str("status")
    if status is not None and status not in STATUSES:
        raise invalid("status", f"must be one of {', '.join(STATUSES)}")
    limit = query_int("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    cursor = query_str("cursor")
    after = None
    if cursor is not None:
        try:
            after = decode_cursor(cursor)
        except ValueError:
            raise invalid("cursor", "not a cursor from this API; start again without it") from None
    db = services().db
    stmt = read_model.job_page(scoped, status, after, limit, tags, q, db.engine.dialect.name)
    with db.read() as session:
        rows = session.execute(stmt).all()
    page = rows[:limit]
    next_cursor = encode_cursor(page[-1].created_at, page[-1].id) if len(rows) > limit else None
    return jsonify({"items": [job_summary(row) for row in page], "next_cursor": next_cursor})


@bp.get("/<job_id>")
def get_job(job_id: str):
    check_id(job_id, "job")
    who = principal()
    view = finished_views().get(job_id, who.tenant, who.is_admin)  # a finished job's view never changes
    if view is not None:
        return jsonify(view)
    with services().db.read_connection() as conn:
        return jsonify(_job_view(conn, job_id))


@bp.patch("/<job_id>")
def update_job(job_id: str):
    """Replace the job's ``tags`` and/or ``notes`` (whatever its status); any other field is a 422
    naming it: the spec of a submitted job never changes."""
    check_id(job_id, "job")
    doc = _object_body("invalid_request", "job update")
    try:
        patch = JobPatch.model_validate(doc)
    except ValidationError as exc:
        raise _invalid_body("invalid_request", exc, "job update", "cannot be changed; only tags and notes can") from None
    if not patch.model_fields_set:
        raise invalid("(root)", "give tags and/or notes", code="invalid_request")
    svc = services()
    who = principal()
    # JobNotFound (also another tenant's job) → 404
    lifecycle.set_labels(svc.db, job_id, None if who.is_admin else who.tenant,
                         {name: getattr(patch, name) for name in patch.model_fields_set})
    finished_views().discard(job_id)  # this process; the others' copies expire (finished_view_seconds)
    with svc.db.session() as session:
        return jsonify(_job_view(session.connection(), job_id))


@bp.post("/<job_id>/cancel")
def cancel_job(job_id: str):
    """Queued: cancelled at once. Running: cancel_requested (the worker stops at its next
    heartbeat). Finished: 409."""
    check_id(job_id, "job")
    svc = services()
    who = principal()
    # JobNotFound (also another tenant's job) → 404, IllegalTransition → 409
    lifecycle.request_cancel(svc.db, job_id, tenant=None if who.is_admin else who.tenant)
    log.info("cancellation of job %s requested", job_id, extra={"job_id": job_id})
    with svc.db.session() as session:
        return jsonify(_job_view(session.connection(), job_id))


# ---- metrics ------------------------------------------------------------------------------------
def _metric_names() -> list[str] | None:
    raw = query_str("names")
    if raw is None:
        return None
    names = list(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
    if not names:
        raise invalid("names", "give comma-separated series names, e.g. loss_d,loss_g")
    if len(names) > MAX_METRIC_NAMES:
        raise invalid("names", f"at most {MAX_METRIC_NAMES} series at once")
    bad = [name for name in names if not METRIC_NAME.fullmatch(name)]
    if bad:
        raise invalid("names", f"{bad[0][:70]!r} is not a series name (letters, digits, _ . : / -, up to 64)")
    return names


@bp.get("/<job_id>/metrics")
def job_metrics(job_id: str):
    """Series by name, ordered by step: ``names`` (comma-separated; default all), ``since_step``
    (only points after that step, exclusive: pass the last step you have), ``max_points``
    (evenly strided per series, first and last kept)."""
    check_id(job_id, "job")
    allow_query(MetricsQuery.model_fields)
    names = _metric_names()
    since_step = query_int("since_step", None, 0)
    max_points = query_int("max_points", None, 2, MAX_POINTS)
    with services().db.read() as session:
        _require_job(session, job_id)
        rows = read_model.metric_rows(session, job_id, names, since_step, max_points)
    collected: dict[str, tuple[list[int], list[float]]] = {name: ([], []) for name in names or ()}
    for name, step, value in rows:
        steps, values = collected.setdefault(name, ([], []))
        steps.append(step)
        values.append(value)
    series = {name: {"steps": steps, "values": json_safe(values)} for name, (steps, values) in collected.items()}
    return jsonify({"series": series})


# ---- artifacts ----------------------------------------------------------------------------------
@bp.get("/<job_id>/samples")
def job_samples(job_id: str):
    """Sample grids by step, each with a URL valid for ``presign_ttl_seconds``."""
    check_id(job_id, "job")
    allow_query(())
    with services().db.read() as session:
        _require_job(session, job_id)
        grids = read_model.artifacts(session, job_id, "sample_grid")
    return jsonify({"items": [_download(a) for a in grids]})


@bp.get("/<job_id>/logs")
def job_logs(job_id: str):
    """The job's log lines (the worker's lines for the job and each rank's), numbered, from
    ``?since=`` on (``next``: the cursor for the following ones), read from the chunks in the
    artifact store; and under ``items`` each multi-device attempt's whole launcher log (``step``:
    the attempt), with a URL valid for ``presign_ttl_seconds``."""
    check_id(job_id, "job")
    allow_query(LogsQuery.model_fields)
    since = query_int("since", 0, 0)
    limit = query_int("limit", 1000, 1, 5000)
    svc = services()
    with svc.db.read() as session:
        _require_job(session, job_id)
        logs = read_model.artifacts(session, job_id, "log")
        lines, cursor, more = job_logs_store.read_lines(session, svc.storage, job_id, since, limit)
    return jsonify({"items": [_download(a) for a in logs], "lines": lines, "next": cursor, "more": more})


@bp.get("/<job_id>/checkpoints")
def job_checkpoints(job_id: str):
    """Training checkpoints by step in ``items``; the final generator file (written when the job
    succeeds) under ``final`` (null until then)."""
    check_id(job_id, "job")
    allow_query(())
    with services().db.read() as session:
        _require_job(session, job_id)
        checkpoints = read_model.artifacts(session, job_id, "checkpoint")
        finals = read_model.artifacts(session, job_id, "final_model")
    return jsonify({"items": [_download(a) for a in checkpoints],
                    "final": _download(finals[-1]) if finals else None})


# ---- generation ---------------------------------------------------------------------------------
def load_job_generator(job_id: str, step: int | None):
    """(artifact, loaded generator) of the job's checkpoint at ``step`` (see _pick_checkpoint),
    through the generation runtime's cache; 404 for another tenant's job, 409 if unusable."""
    svc = services()
    with svc.db.session() as session:
        _require_job(session, job_id)
        artifact = _pick_checkpoint(session, job_id, step)
    try:
        loaded = generation().generator(artifact.id, artifact.sha256, lambda: svc.storage.get(artifact.key))
    except UnusableCheckpoint as exc:
        log.error("job %s: checkpoint %s cannot be loaded: %s", job_id, artifact.key, exc)
        raise APIError(409, "checkpoint_unusable", f"the checkpoint at step {artifact.step} cannot be loaded") from None
    return artifact, loaded


def _pick_checkpoint(session: Session, job_id: str, step: int | None) -> Artifact:
    """The final generator (else the latest checkpoint) for ``step=None``; else the checkpoint
    (or final generator) saved at that step."""
    checkpoints = read_model.artifacts(session, job_id, "checkpoint")
    finals = read_model.artifacts(session, job_id, "final_model")
    if step is None:
        if finals:
            return finals[-1]
        if checkpoints:
            return checkpoints[-1]
        raise APIError(409, "no_checkpoint", "the job has no checkpoint yet; try again once it has saved one")
    for artifact in (*checkpoints, *finals):
        if artifact.step == step:
            return artifact
    steps = sorted({a.step for a in (*checkpoints, *finals)})
    available = ", ".join(map(str, steps[-20:])) or "none yet"
    raise invalid("checkpoint", f"no checkpoint at step {step}; available steps: {available}")


@bp.post("/<job_id>/generate")
def generate_samples(job_id: str):
    """Fresh samples from a checkpoint: a PNG grid (a scatter plot for 2-D points) or a .npy
    array of float32 in data space. The same request always gives the same bytes."""
    check_id(job_id, "job")
    svc = services()
    doc = _object_body("invalid_request", "generate request")
    try:
        req = GenerateRequest.model_validate(doc)
    except ValidationError as exc:
        raise _invalid_body("invalid_request", exc, "generate request") from None
    limit = svc.settings.max_generate_samples
    if req.n > limit:
        raise invalid("n", f"at most {limit} samples per request")
    artifact, loaded = load_job_generator(job_id, req.checkpoint)
    runtime = generation()
    problem = label_problem(loaded, req.n, req.labels)
    if problem:
        raise invalid("labels", problem)
    try:
        body, mimetype = runtime.run(
            req.n, lambda: render(loaded, req.n, req.seed, req.labels, req.format, rejection=req.rejection)
        )
    except Busy as exc:
        raise APIError(503, "busy", str(exc), headers={"Retry-After": "5"}) from None
    except RejectionError as exc:
        raise invalid("rejection", f"{exc}; ask for the raw generator's samples with rejection: false") from None
    response = Response(body, mimetype=mimetype)
    filename = f"samples-{job_id[:8]}-step{artifact.step}-seed{req.seed}.{req.format}"
    disposition = "inline" if req.format == "png" else "attachment"
    response.headers["Content-Disposition"] = f'{disposition}; filename="{filename}"'
    response.headers["X-Checkpoint-Step"] = str(artifact.step)
    response.headers["X-Artifact-Id"] = artifact.id
    return response
