"""What the dashboard shows beyond the plain listings: the sample-grid timeline as an animated
GIF, and a latent interpolation strip between two seeds.

    GET  /v1/jobs/{id}/samples.gif?max_frames=&frame_ms=
    POST /v1/jobs/{id}/interpolate   {"seed_a", "seed_b", "steps", "label", "checkpoint"} → PNG

Both read the same artifacts as ``ganforge.api.jobs`` and reuse its helpers, so a job another tenant
cannot see through /v1/jobs/{id} is a 404 here too.
"""

from __future__ import annotations

import hashlib
import logging

import torch
from flask import Blueprint, Response, request
from pydantic import ValidationError

from ganforge.api.errors import APIError, invalid
from ganforge.api.generation import Busy, label_problem
from ganforge.api.jobs import _invalid_body, _object_body, _require_job, load_job_generator
from ganforge.api.read_model import artifacts, downsample
from ganforge.api.schemas import InterpolateRequest, TimelineQuery
from ganforge.api.state import generation, services
from ganforge.api.validation import allow_query, check_id, query_int
from gan_core.images import MIXTURE_EXTENTS, gif_bytes, scatter_png
from gan_core.sampling import interpolate, samples_png

log = logging.getLogger(__name__)

bp = Blueprint("job_media", __name__, url_prefix="/v1/jobs")

# A GIF holds every frame decoded at once while it is built: bound the work per request.
DEFAULT_GIF_FRAMES, MAX_GIF_FRAMES = 40, 120  # published in ganforge.api.schemas.TimelineQuery


@bp.get("/<job_id>/samples.gif")
def samples_gif(job_id: str):
    """The fixed-noise grids as one animated GIF, at most ``max_frames`` of them evenly picked
    (the first and last always kept), each shown ``frame_ms``."""
    check_id(job_id, "job")
    allow_query(TimelineQuery.model_fields)
    max_frames = query_int("max_frames", DEFAULT_GIF_FRAMES, 2, MAX_GIF_FRAMES)
    frame_ms = query_int("frame_ms", 250, 20, 5000)
    svc = services()
    with svc.db.read() as session:
        _require_job(session, job_id)
        grids = artifacts(session, job_id, "sample_grid")
    if not grids:
        raise APIError(409, "no_samples", "the job has no sample grids yet; try again once it has saved one")
    _, picked = downsample([g.step for g in grids], grids, max_frames)
    # The same grids in the same order give the same GIF: let the browser revalidate cheaply.
    etag = hashlib.sha256(f"{frame_ms}|".encode() + "|".join(g.sha256 for g in picked).encode()).hexdigest()[:32]
    headers = {"ETag": f'"{etag}"', "Cache-Control": "private, max-age=0, must-revalidate",
               "Content-Disposition": f'attachment; filename="timeline-{job_id[:8]}.gif"'}
    if etag in request.if_none_match:
        return Response(status=304, headers=headers)
    frames = [svc.storage.get(g.key) for g in picked]  # ObjectNotFound → 404, StorageError → 503
    try:
        body = gif_bytes(frames, duration_ms=frame_ms)
    except OSError as exc:  # Pillow: a stored grid that is not an image
        log.error("job %s: cannot build the timeline GIF: %s", job_id, exc)
        raise APIError(409, "samples_unusable", "a stored sample grid cannot be decoded") from None
    headers["X-Frame-Steps"] = ",".join(str(g.step) for g in picked)
    return Response(body, mimetype="image/gif", headers=headers)


@bp.post("/<job_id>/interpolate")
def interpolate_samples(job_id: str):
    """A PNG strip of ``steps`` samples along the spherical path between the latent points of
    ``seed_a`` and ``seed_b`` (a scatter plot of the path's points for the 2-D mixtures)."""
    check_id(job_id, "job")
    doc = _object_body("invalid_request", "interpolate request")
    try:
        req = InterpolateRequest.model_validate(doc)
    except ValidationError as exc:
        raise _invalid_body("invalid_request", exc, "interpolate request") from None
    artifact, loaded = load_job_generator(job_id, req.checkpoint)
    runtime = generation()
    label = req.label
    if label is None and loaded.num_classes:
        label = 0
    problem = label_problem(loaded, req.steps, label)
    if problem:
        raise invalid("label", problem.replace("labels", "label"))

    def work() -> bytes:
        with torch.no_grad():
            path = interpolate(loaded, req.seed_a, req.seed_b, steps=req.steps, label=label)
        if loaded.is_points:
            # The path's points on the dataset's fixed square, so strips of two seeds compare.
            extent = MIXTURE_EXTENTS.get(loaded.spec.dataset.name)
            return scatter_png(path, extent=extent, title=f"seed {req.seed_a} -> {req.seed_b}, {req.steps} steps")
        # One row: the strip reads left (seed_a) to right (seed_b).
        return samples_png(path, nrow=req.steps)

    try:
        body = runtime.run(req.steps, work)
    except Busy as exc:
        raise APIError(503, "busy", str(exc), headers={"Retry-After": "5"}) from None
    response = Response(body, mimetype="image/png")
    response.headers["Content-Disposition"] = (
        f'inline; filename="interpolation-{job_id[:8]}-step{artifact.step}-{req.seed_a}-{req.seed_b}.png"')
    response.headers["X-Checkpoint-Step"] = str(artifact.step)
    return response
