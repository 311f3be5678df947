"""/v1/datasets: upload an archive of images (zip, tar, gzip tar), list, read and delete uploads.

    POST /v1/datasets?name=faces   Content-Type: application/zip   <the archive as the body>

The body is streamed to a temporary file (never held in memory), refused past
GANFORGE_MAX_DATASET_BYTES (413), inspected by gan_core.data.archive (a zip bomb, a path that
leaves the archive, too many files or no image at all: 422 with the reason), then stored in the
artifact store and owned by the tenant. A job trains on it with
``"dataset": {"name": "image_folder", "upload_id": ID}``; while a queued or running job uses it,
it cannot be deleted (409).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import zipfile
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import RequestEntityTooLarge

from ganforge.api.auth import principal
from ganforge.api.errors import APIError, invalid, not_found
from ganforge.api.jobs import _idempotency_conflict, _idempotency_key
from ganforge.api.paging import keyset_page
from ganforge.api.schemas import _Out, iso
from ganforge.api.state import services
from ganforge.api.validation import allow_query, check_id, query_int, query_str
from gan_core.data import DataError
from ganforge.jobs import datasets
from ganforge.jobs.models import Dataset, new_id
from ganforge.jobs.storage import dataset_key

log = logging.getLogger(__name__)

bp = Blueprint("datasets", __name__, url_prefix="/v1/datasets")

DEFAULT_LIMIT, MAX_LIMIT = 50, 200
CHUNK = 1 << 20
# Content-Type -> the extension the archive is stored (and inspected) under.
ARCHIVE_TYPES = {
    "application/zip": ".zip",
    "application/x-zip-compressed": ".zip",
    "application/x-tar": ".tar",
    "application/gzip": ".tar.gz",
    "application/x-gzip": ".tar.gz",
    "application/x-gtar": ".tar.gz",
    "application/x-compressed-tar": ".tar.gz",
}
NAME = re.compile(r"[^\x00-\x1f\x7f]{1,120}")


# ---- the contract (api/openapi.py publishes these) ----------------------------------------------
class DatasetOut(_Out):
    id: str = Field(pattern=r"^[0-9a-f]{32}$", description="use as dataset.upload_id in a job spec")
    name: str
    content_type: str = Field(description="the archive's format as uploaded")
    bytes: int = Field(description="the archive's size")
    sha256: str = Field(description="of the archive's bytes")
    files: int = Field(description="regular files in the archive")
    images: int = Field(description="files that decode as images (what training uses)")
    skipped: int = Field(description="corrupt or non-image files, left out")
    classes: list[str] = Field(description="class folders found, sorted (with labels 'folders', label i is classes[i])")
    created_at: datetime


class DatasetPage(_Out):
    items: list[DatasetOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")


class UploadQuery(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=120, description="a label for the dataset (default: 'dataset')")


class ListDatasetsQuery(BaseModel):
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="page size")
    cursor: str | None = Field(None, max_length=200, description="next_cursor of the previous page")


# ---- helpers ------------------------------------------------------------------------------------
def _scoped(stmt):
    who = principal()
    return stmt if who.is_admin else stmt.where(Dataset.tenant == who.tenant)


def _dataset(session, dataset_id: str) -> Dataset:
    check_id(dataset_id, "dataset")
    found = session.scalar(_scoped(select(Dataset).where(Dataset.id == dataset_id)))
    if found is None:  # another tenant's dataset is not found either
        raise not_found("dataset")
    return found


def view(dataset: Dataset) -> dict[str, Any]:
    return {"id": dataset.id, "name": dataset.name, "content_type": dataset.content_type, "bytes": dataset.bytes,
            "sha256": dataset.sha256, "files": dataset.files, "images": dataset.images, "skipped": dataset.skipped,
            "classes": dataset.classes, "created_at": iso(dataset.created_at)}


def _too_large(limit: int) -> APIError:
    return APIError(413, "payload_too_large",
                    f"the archive is larger than this deployment's limit of {limit} bytes (GANFORGE_MAX_DATASET_BYTES)")


# Generic clients (and generated ones) send bytes as application/octet-stream: the format is then
# read from the archive's first bytes. (gan_core.data.archive reads the content, never the name.)
SNIFFED = "application/octet-stream"


def _sniff_archive(path: str) -> tuple[str, str]:
    """(content type, extension) of an archive sent as application/octet-stream."""
    if zipfile.is_zipfile(path):
        return "application/zip", ".zip"
    with open(path, "rb") as probe:
        compressed = probe.read(2) == b"\x1f\x8b"
    # Anything else is taken for a tar: inspect_archive refuses what is not one ("unreadable").
    return ("application/gzip", ".tar.gz") if compressed else ("application/x-tar", ".tar")


def _receive(path: str, limit: int) -> tuple[int, str]:
    """Copy the request body to ``path`` in chunks: (size, sha256). 413 past ``limit`` bytes."""
    request.max_content_length = limit  # this request only: a declared Content-Length past it is refused unread
    digest, size = hashlib.sha256(), 0
    try:
        stream = request.stream
        with open(path, "wb") as out:
            while chunk := stream.read(CHUNK):
                size += len(chunk)
                if size > limit:  # a chunked body declares no length: counted here
                    raise _too_large(limit)
                digest.update(chunk)
                out.write(chunk)
    except RequestEntityTooLarge:
        raise _too_large(limit) from None
    return size, digest.hexdigest()


def _refused(exc: Exception, size: int, limit: int) -> APIError:
    """The answer to an archive gan_core.data.archive refused: 413 when its content is over the
    byte limit, else 422; the problem starts with the archive error's reason code (``zip_bomb``,
    ``unsafe_path``, ``link``, ``too_many_files``, ``empty``, ``unreadable``, ...)."""
    reason = getattr(exc, "reason", "invalid")
    log.info("upload refused (%d bytes): %s: %s", size, reason, exc)
    if reason == "too_large":
        return APIError(413, "payload_too_large", f"the archive was refused: {exc} (GANFORGE_MAX_DATASET_BYTES is {limit})",
                        [{"field": "body", "problem": f"{reason}: {exc}"}])
    return invalid("body", f"{reason}: {exc}", code="invalid_archive", message=f"the archive was refused: {exc}")


def _check_room(tenant: str, cap: int) -> None:
    """409 when the tenant already keeps ``cap`` uploads (GANFORGE_MAX_DATASETS_PER_TENANT). Two
    racing uploads may both pass the last free place: a soft cap, like the job caps."""
    with services().db.read() as session:
        kept = session.scalar(select(func.count()).select_from(Dataset).where(Dataset.tenant == tenant))
    if kept >= cap:
        raise APIError(409, "too_many_datasets", f"the tenant keeps {kept} uploaded datasets, the limit is {cap} "
                       "(GANFORGE_MAX_DATASETS_PER_TENANT); delete some first")


def _replay(tenant: str, key: str, request_hash: str) -> Dataset | None:
    """The upload this tenant made with Idempotency-Key ``key``; 409 if that one had another body."""
    with services().db.read() as session:
        found = session.scalar(select(Dataset).where(Dataset.tenant == tenant, Dataset.idempotency_key == key))
    if found is not None and found.request_hash != request_hash:
        raise _idempotency_conflict(Exception(f"Idempotency-Key {key!r} was used with a different upload"))
    return found


def _created(dataset: Dataset, replayed: bool) -> Response:
    response = jsonify(view(dataset))
    response.status_code = 201
    response.headers["Location"] = f"/v1/datasets/{dataset.id}"
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


# ---- views --------------------------------------------------------------------------------------
@bp.post("")
def upload_dataset():
    """Upload an archive; 201 with the inspected dataset. Idempotency-Key as for jobs (the same key
    with the same archive and name returns the first upload; with another, 409)."""
    from gan_core.data.archive import inspect_archive

    svc = services()
    settings = svc.settings
    key = _idempotency_key()
    name = query_str("name") or "dataset"
    if not NAME.fullmatch(name):
        raise invalid("name", "must be 1 to 120 characters without control characters")
    content_type = request.mimetype
    extension = ARCHIVE_TYPES.get(content_type)
    if extension is None and content_type != SNIFFED:
        raise APIError(415, "unsupported_media_type",
                       f"send the archive as application/zip, application/x-tar or application/gzip (a gzip tar), "
                       f"or as {SNIFFED}, not {content_type or 'no content type'}")
    who = principal()
    with tempfile.TemporaryDirectory(prefix="ganforge-upload-") as folder:
        path = os.path.join(folder, "archive")
        size, sha256 = _receive(path, settings.max_dataset_bytes)
        if size == 0:
            raise APIError(400, "bad_request", "the request body is empty; send the archive as the body")
        if extension is None:
            content_type, extension = _sniff_archive(path)
        request_hash = hashlib.sha256(f"{name}\0{extension}\0{sha256}".encode()).hexdigest()
        if key is not None and (earlier := _replay(who.tenant, key, request_hash)) is not None:
            return _created(earlier, replayed=True)
        _check_room(who.tenant, settings.max_datasets_per_tenant)
        try:
            summary = inspect_archive(path, settings.archive_limits())
        except DataError as exc:  # gan_core's DatasetError: the reason is the tenant's to read
            raise _refused(exc, size, settings.max_dataset_bytes) from None
        dataset_id = new_id()
        stored = svc.storage.put_file(dataset_key(dataset_id, extension), path, content_type)
    if stored.sha256 != sha256 or stored.size != size:  # the temporary file changed under us: never store that
        svc.storage.delete(stored.key)
        raise APIError(503, "storage_unavailable", "the archive could not be stored intact; send it again")
    dataset = Dataset(id=dataset_id, tenant=who.tenant, name=name, storage_key=stored.key,
                      content_type=content_type, sha256=sha256, bytes=size, files=summary.files,
                      images=summary.images, skipped=summary.skipped, classes=summary.classes,
                      idempotency_key=key, request_hash=request_hash if key is not None else None)
    try:
        with svc.db.session() as session:
            session.add(dataset)
    except IntegrityError:
        # Only the (tenant, Idempotency-Key) index can refuse this row: a racing request with the
        # same key stored its archive first. Keep that one.
        svc.storage.delete(stored.key)
        earlier = _replay(who.tenant, key, request_hash) if key is not None else None
        if earlier is None:
            raise
        return _created(earlier, replayed=True)
    except Exception:
        svc.storage.delete(stored.key)  # no row names it: nothing would ever remove it
        raise
    log.info("dataset %s uploaded: %d bytes, %d images, %d skipped", dataset_id, size, summary.images, summary.skipped)
    return _created(dataset, replayed=False)


@bp.get("")
def list_datasets():
    allow_query(ListDatasetsQuery.model_fields)
    limit = query_int("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    page, next_cursor = keyset_page(_scoped(select(Dataset)), Dataset, limit)
    return jsonify({"items": [view(d) for d in page], "next_cursor": next_cursor})


@bp.get("/<dataset_id>")
def get_dataset(dataset_id: str):
    with services().db.read() as session:
        return jsonify(view(_dataset(session, dataset_id)))


@bp.delete("/<dataset_id>")
def delete_dataset(dataset_id: str):
    """204; 409 while a queued or running job (or a live sweep) uses it. Its archive is removed
    from the store once the row is gone."""
    check_id(dataset_id, "dataset")
    svc = services()
    who = principal()
    try:
        with svc.db.session() as session:
            key = datasets.delete_upload(session, dataset_id, None if who.is_admin else who.tenant)
    except datasets.UploadNotFound:
        raise not_found("dataset") from None
    except datasets.DatasetInUse as exc:
        raise APIError(409, "dataset_in_use", str(exc)) from None
    try:
        svc.storage.delete(key)
    except Exception:  # the row is gone, so no job can name it: an orphaned object, not an error
        log.exception("dataset %s deleted, but its archive %s could not be removed from the store", dataset_id, key)
    log.info("dataset %s deleted", dataset_id)
    return Response(status=204)
