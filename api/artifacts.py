"""/v1/artifacts/{id}/content: an artifact's bytes, streamed from the store through the API.

A URL from a listing carries ``expires`` and ``signature`` (see ganforge.api.signing); with them the
content is served to anyone until expiry (that is what a presigned URL is for), and a wrong or
expired pair is refused with 403. Without them the caller must be authenticated and own the
artifact's job (admins: any job); another tenant's artifact is a 404.
"""

from __future__ import annotations

import logging
from pathlib import PurePosixPath

from flask import Blueprint, Response, request
from sqlalchemy import select

from ganforge.api.auth import scoped
from ganforge.api.errors import APIError, not_found
from ganforge.api.signing import SignatureError
from ganforge.api.state import services, signer
from ganforge.api.validation import check_id
from ganforge.jobs.models import Artifact, Job

log = logging.getLogger(__name__)

bp = Blueprint("artifacts", __name__, url_prefix="/v1/artifacts")


@bp.get("/<artifact_id>/content")
def content(artifact_id: str):
    check_id(artifact_id, "artifact")
    expires, signature = request.args.get("expires"), request.args.get("signature")
    signed = expires is not None or signature is not None
    if signed:
        try:
            signer().verify(artifact_id, expires, signature)
        except SignatureError as exc:
            raise APIError(403, "forbidden", f"this download URL is not valid: {exc}; list the artifacts again") from None
    stmt = select(Artifact).where(Artifact.id == artifact_id)
    if not signed:
        stmt = scoped(stmt.join(Job, Job.id == Artifact.job_id))
    svc = services()
    with svc.db.read() as session:
        artifact = session.scalar(stmt)
    if artifact is None:
        raise not_found("artifact")
    headers = {
        "ETag": f'"{artifact.sha256}"',
        "Content-Disposition": f'inline; filename="{PurePosixPath(artifact.key).name}"',
        # The URL is a credential until it expires: shared caches must not keep the bytes.
        "Cache-Control": "private, max-age=0, must-revalidate",
    }
    if artifact.sha256 in request.if_none_match:
        return Response(status=304, headers=headers)
    chunks = svc.storage.stream(artifact.key)  # ObjectNotFound → 404, StorageError → 503
    headers["Content-Length"] = str(artifact.bytes)
    return Response(chunks, mimetype=artifact.content_type, headers=headers, direct_passthrough=True)
