"""GET /v1/jobs/{id}/bundle: the whole job in one zip, streamed as it is written.

    job.json            the job's view (status, labels, progress, events, evaluation)
    spec.json           the spec as submitted (defaults filled in): `ganforge submit spec.json` reruns it
    metrics.csv         one row per logged step, one column per series (empty where not logged)
    metrics.jsonl       the same, one JSON object per step with the series logged at it
    samples/step-NNNNNN.png   the fixed-noise grids
    generator.pt        the final generator (once the job has succeeded)
    evaluation.json     the final evaluation; evaluation/step-NNNNNN.json each evaluation's report
    loss.png            the loss plot, when the job wrote one

Nothing is built whole in memory: zipfile writes to a sink the response drains after each chunk
(a non-seekable output, so each member's sizes follow it in a data descriptor), the metric rows
are read from the database in batches, and artifacts come from the store in chunks. Checkpoints
are left out (the final generator is the result; checkpoints are for resuming).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import zipfile
from datetime import datetime, timezone
from typing import Iterable, Iterator

from flask import Blueprint, Response, stream_with_context
from sqlalchemy import select

from ganforge.api.auth import principal
from ganforge.api.errors import not_found
from ganforge.api.read_model import artifacts, job_row
from ganforge.api.schemas import job_to_dict
from ganforge.api.state import services
from ganforge.api.validation import allow_query, check_id
from ganforge.responses import bundle_filename
from ganforge.jobs.models import Metric

log = logging.getLogger(__name__)

bp = Blueprint("bundle", __name__, url_prefix="/v1/jobs")

METRIC_BATCH = 5000
CHUNK = 1 << 16


class _Sink(io.RawIOBase):
    """A write-only, non-seekable file whose bytes the response takes as they come."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._chunks.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


def _member(name: str, moment: datetime, compress: bool, size: int | None = None) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=moment.astimezone(timezone.utc).timetuple()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED  # PNG and .pt are compressed
    info.external_attr = 0o644 << 16
    if size is not None:
        info.file_size = size  # lets zipfile choose zip64 up front for a member over 2 GiB
    return info


def zip_stream(members: Iterable[tuple[zipfile.ZipInfo, Iterable[bytes]]]) -> Iterator[bytes]:
    """The bytes of a zip of ``members`` (each an entry and its content in chunks), as written."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w") as archive:
        for info, chunks in members:
            with archive.open(info, "w", force_zip64=info.file_size > zipfile.ZIP64_LIMIT) as out:
                for chunk in chunks:
                    out.write(chunk)
                    if len(sink._chunks) > 16:
                        yield sink.take()
            yield sink.take()
    yield sink.take()


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def metric_tables(db, job_id: str) -> tuple[Iterator[bytes], Iterator[bytes]]:
    """(CSV chunks, JSONL chunks) of the job's series by step. Each reads the metric rows in
    step order, a batch at a time, in its own read session."""

    def steps() -> Iterator[tuple[int, dict[str, float | None]]]:
        # A transaction, not the autocommit read engine: PostgreSQL keeps a server-side cursor
        # (yield_per) only inside one.
        with db.session() as session:
            rows = session.execute(select(Metric.step, Metric.name, Metric.value).where(Metric.job_id == job_id)
                                   .order_by(Metric.step, Metric.name).execution_options(yield_per=METRIC_BATCH))
            current, values = None, {}
            for step, name, value in rows:
                if step != current and current is not None:
                    yield current, values
                    values = {}
                current = step
                values[name] = _finite(value)
            if current is not None:
                yield current, values

    with db.read() as session:
        names = sorted(session.scalars(select(Metric.name).where(Metric.job_id == job_id).distinct()))

    def as_csv() -> Iterator[bytes]:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["step", *names])
        for n, (step, values) in enumerate(steps(), 1):
            writer.writerow([step, *("" if values.get(name) is None else repr(values[name]) for name in names)])
            if n % 1000 == 0:
                yield buffer.getvalue().encode()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue().encode()

    def as_jsonl() -> Iterator[bytes]:
        lines: list[str] = []
        for step, values in steps():
            lines.append(json.dumps({"step": step, **values}, allow_nan=False))
            if len(lines) == 1000:
                yield ("\n".join(lines) + "\n").encode()
                lines.clear()
        if lines:
            yield ("\n".join(lines) + "\n").encode()

    return as_csv(), as_jsonl()


@bp.get("/<job_id>/bundle")
def job_bundle(job_id: str):
    """The job as one zip (see the module's docstring), streamed; any status (a live job's bundle
    holds what it has so far)."""
    check_id(job_id, "job")
    allow_query(())
    svc = services()
    who = principal()
    with svc.db.read() as session:
        found = job_row(session.connection(), job_id, None if who.is_admin else who.tenant)
        if found is None:  # another tenant's job too
            raise not_found("job")
        view = job_to_dict(*found)
        listed = {kind: artifacts(session, job_id, kind)
                  for kind in ("sample_grid", "final_model", "evaluation", "loss_plot")}
    now = datetime.now(timezone.utc)
    metrics_csv, metrics_jsonl = metric_tables(svc.db, job_id)

    def stored(artifact) -> Iterator[bytes]:
        yield from svc.storage.stream(artifact.key)

    def members() -> Iterator[tuple[zipfile.ZipInfo, Iterable[bytes]]]:
        yield _member("job.json", now, True), [json.dumps(view, indent=2, default=str).encode()]
        yield _member("spec.json", now, True), [json.dumps(view["spec"], indent=2).encode()]
        yield _member("metrics.csv", now, True), metrics_csv
        yield _member("metrics.jsonl", now, True), metrics_jsonl
        for grid in listed["sample_grid"]:
            yield _member(f"samples/step-{grid.step:06d}.png", grid.created_at, False, grid.bytes), stored(grid)
        if listed["final_model"]:
            final = listed["final_model"][-1]
            yield _member("generator.pt", final.created_at, False, final.bytes), stored(final)
        if view.get("evaluation") is not None:
            yield _member("evaluation.json", now, True), [json.dumps(view["evaluation"], indent=2).encode()]
        for report in listed["evaluation"]:
            yield _member(f"evaluation/step-{report.step:06d}.json", report.created_at, True, report.bytes), stored(report)
        for plot in listed["loss_plot"][-1:]:
            yield _member("loss.png", plot.created_at, False, plot.bytes), stored(plot)

    def body() -> Iterator[bytes]:
        try:
            yield from zip_stream(members())
        except Exception:
            # The status line has gone out: the client sees a truncated zip, the log says why.
            log.exception("job %s: the bundle broke off", job_id, extra={"job_id": job_id})
            raise

    headers = {"Content-Disposition": f'attachment; filename="{bundle_filename(view["name"], job_id)}"',
               "Cache-Control": "private, no-store"}
    return Response(stream_with_context(body()), mimetype="application/zip", headers=headers)
