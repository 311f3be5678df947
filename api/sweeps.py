"""/v1/sweeps: submit a search over job specs, read it (counts, best trial), list its trials, cancel.

The trials are ordinary jobs (GET /v1/jobs/{job_id}); the decisions are ganforge.jobs.sweeps'.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any, get_args

from flask import Blueprint, jsonify
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from ganforge.api.auth import principal
from ganforge.api.errors import APIError, invalid, not_found
from ganforge.api.jobs import _check_upload, _checked_webhook, _idempotency_conflict, _idempotency_key, _invalid_body, _object_body
from ganforge.api.limits import check_submission
from ganforge.api.paging import keyset_page
from ganforge.api.schemas import iso
from ganforge.api.state import services
from ganforge.api.validation import allow_query, check_id, query_int, query_str
from ganforge.jobs import datasets, sweeps
from ganforge.jobs.lifecycle import IdempotencyConflict
from ganforge.jobs.lifecycle import EVALUATION_SERIES
from ganforge.jobs.models import SWEEP_STATUSES, TRIAL_STATUSES, Metric as MetricRow, Sweep
from ganforge.responses import (  # noqa: F401  (ganforge.api.sweeps.SweepOut & co. are the published names)
    BestTrial, SweepSummary, SweepOut, SweepPage, TrialOut, TrialList, TrialCurve, CurvesOut, SweepStatus, TrialStatus,
)
from ganforge.jobs.sweep_spec import Metric, SweepSpec, SweepSpecError, check_sweep

log = logging.getLogger(__name__)

bp = Blueprint("sweeps", __name__, url_prefix="/v1/sweeps")

DEFAULT_LIMIT, MAX_LIMIT = 50, 200


# The contract (api/openapi.py publishes these) is in ganforge.responses, shared with the client.


class CurvesQuery(BaseModel):
    figure: Metric | None = Field(None, description="a figure of the periodic evaluation; default the objective's")


class ListSweepsQuery(BaseModel):
    status: SweepStatus | None = None
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="page size")
    cursor: str | None = Field(None, max_length=200, description="next_cursor of the previous page")


# ---- helpers ------------------------------------------------------------------------------------
def _scoped(stmt):
    who = principal()
    return stmt if who.is_admin else stmt.where(Sweep.tenant == who.tenant)


def _sweep(session: Session, sweep_id: str) -> Sweep:
    check_id(sweep_id, "sweep")
    found = session.scalar(_scoped(select(Sweep).where(Sweep.id == sweep_id)))
    if found is None:  # another tenant's sweep is not found either
        raise not_found("sweep")
    return found


def _summary(sweep: Sweep, status: str | None = None) -> dict[str, Any]:
    spec = sweep.spec
    return {"id": sweep.id, "name": sweep.name, "status": status or sweep.status, "method": spec["method"],
            "trials": sweep.planned_trials, "max_parallel": spec["max_parallel"], "error": sweep.error,
            "created_at": iso(sweep.created_at), "updated_at": iso(sweep.updated_at),
            "finished_at": iso(sweep.finished_at)}


def _view(session: Session, sweep: Sweep) -> dict[str, Any]:
    rows = sweeps.trial_rows(session, sweep.id)
    statuses = [sweeps.live_status(trial, job_status) for trial, job_status in rows]
    counts = {status: statuses.count(status) for status in TRIAL_STATUSES}
    status = sweep.status
    if status == "queued" and any(s != "queued" for s in statuses):
        status = "running"  # a trial started since the last decision step
    top = sweeps.best(sweeps.stored_spec(sweep.spec), [trial for trial, _ in rows])
    best = None if top is None else {"number": top.number, "job_id": top.job_id, "params": top.params,
                                     "objective": top.objective}
    return {**_summary(sweep, status), "counts": counts, "best_trial": best, "objective": sweep.spec["objective"],
            "spec": sweep.spec}


# ---- views --------------------------------------------------------------------------------------
@bp.post("")
def submit_sweep():
    """Submit a sweep: every trial it may ask for is validated first (a 422 names the field); the
    first ``max_parallel`` trials are queued at once. Idempotency-Key as for jobs."""
    svc = services()
    key = _idempotency_key()
    doc = _object_body("invalid_sweep", "sweep spec")
    try:
        spec = SweepSpec.model_validate(doc, context={**svc.settings.spec_limits,
                                                      "max_trials": svc.settings.max_trials_per_sweep})
        checked = check_sweep(spec, svc.settings.spec_limits)
    except ValidationError as exc:
        raise _invalid_body("invalid_sweep", exc, "sweep spec") from None
    except SweepSpecError as exc:
        raise invalid(exc.field, exc.problem, code="invalid_sweep") from None
    try:
        for job_spec in checked[:1]:  # the dataset is the base's unless the space names it
            datasets.check_spec(job_spec, svc.settings)
        if any(path.startswith("dataset") for path in spec.space):
            for job_spec in checked[1:]:
                datasets.check_spec(job_spec, svc.settings)
    except datasets.DatasetSourceError as exc:
        raise invalid("base.dataset.path", str(exc), code="invalid_sweep") from None
    _checked_webhook(spec.notify, "invalid_sweep")  # 422 naming notify.webhook_url (SSRF rules as for jobs)
    who = principal()
    for job_spec in {datasets.upload_id(job_spec): job_spec for job_spec in checked}.values():
        _check_upload(job_spec, who.tenant, "base.dataset.upload_id", "invalid_sweep")
    body_hash = None
    if key is not None:
        body_hash = hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    try:
        created = sweeps.submit(svc.db, spec, who.tenant, key, body_hash,
                                admit=lambda session: check_submission(session, svc.settings, who.tenant))
    except IdempotencyConflict as exc:
        raise _idempotency_conflict(exc) from None
    sweeps.advance(svc, created.sweep_id)  # the first trials (a retry finds them there already)
    log.info("sweep %s submitted (%d trials planned)", created.sweep_id, spec.planned_trials())
    with svc.db.read() as session:
        view = _view(session, _sweep(session, created.sweep_id))
    response = jsonify(view)
    response.status_code = 201
    response.headers["Location"] = f"/v1/sweeps/{created.sweep_id}"
    if not created.created:
        response.headers["Idempotent-Replayed"] = "true"
    response.headers.update(created.admitted or {})
    return response


@bp.get("")
def list_sweeps():
    allow_query(ListSweepsQuery.model_fields)
    status = query_str("status")
    if status is not None and status not in SWEEP_STATUSES:
        raise invalid("status", f"must be one of {', '.join(SWEEP_STATUSES)}")
    limit = query_int("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    stmt = _scoped(select(Sweep))
    if status is not None:
        stmt = stmt.where(Sweep.status == status)
    page, next_cursor = keyset_page(stmt, Sweep, limit)
    return jsonify({"items": [_summary(sweep) for sweep in page], "next_cursor": next_cursor})


@bp.get("/<sweep_id>")
def get_sweep(sweep_id: str):
    with services().db.read() as session:
        return jsonify(_view(session, _sweep(session, sweep_id)))


@bp.get("/<sweep_id>/trials")
def sweep_trials(sweep_id: str):
    allow_query(())
    with services().db.read() as session:
        _sweep(session, sweep_id)
        items = [{"number": trial.number, "job_id": trial.job_id, "params": trial.params,
                  "objective": trial.objective, "status": sweeps.live_status(trial, job_status),
                  "reason": trial.reason} for trial, job_status in sweeps.trial_rows(session, sweep_id)]
    return jsonify({"items": items})


@bp.get("/<sweep_id>/curves")
def sweep_curves(sweep_id: str):
    """The learning curve of every trial (its periodic evaluations' ``eval/<figure>`` series) in one
    response: the sweep page draws them on one chart, where a request per trial would not scale."""
    allow_query(CurvesQuery.model_fields)
    figure = query_str("figure")
    if figure is not None and figure not in get_args(Metric):
        raise invalid("figure", f"must be one of {', '.join(get_args(Metric))}")
    with services().db.read() as session:
        sweep = _sweep(session, sweep_id)
        name = EVALUATION_SERIES + (figure or sweep.spec["objective"]["metric"])
        rows = [(trial, job_status) for trial, job_status in sweeps.trial_rows(session, sweep_id) if trial.job_id]
        points: dict[str, tuple[list[int], list[float]]] = {trial.job_id: ([], []) for trial, _ in rows}
        if points:
            for job_id, step, value in session.execute(
                    select(MetricRow.job_id, MetricRow.step, MetricRow.value)
                    .where(MetricRow.job_id.in_(list(points)), MetricRow.name == name)
                    .order_by(MetricRow.job_id, MetricRow.step)):
                points[job_id][0].append(step)
                points[job_id][1].append(value)
    items = [{"number": trial.number, "job_id": trial.job_id, "status": sweeps.live_status(trial, job_status),
              "steps": points[trial.job_id][0], "values": points[trial.job_id][1]} for trial, job_status in rows]
    return jsonify({"metric": name, "items": items})


@bp.post("/<sweep_id>/cancel")
def cancel_sweep(sweep_id: str):
    """No new trial; queued trials are cancelled at once, running ones stop at their next
    heartbeat. A finished sweep: 409."""
    svc = services()
    with svc.db.read() as session:
        _sweep(session, sweep_id)  # 404 for another tenant's
    try:
        sweeps.cancel(svc, sweep_id)
    except sweeps.SweepFinished as exc:
        raise APIError(409, "conflict", str(exc)) from None
    log.info("sweep %s cancelled", sweep_id)
    with svc.db.read() as session:
        return jsonify(_view(session, _sweep(session, sweep_id)))
