"""What the API sends back (jobs, events, artifacts, list cursors) and the generate request body.

Timestamps are ISO 8601 in UTC with a ``Z``; non-finite floats become null so every response is
valid JSON.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator

from gan_core.spec import JobSpec
from ganforge.jobs.models import Artifact, Job, JobEvent

_CURSOR_ID = re.compile(r"[0-9a-f]{32}")

# The columns a job summary needs (the list endpoint selects only these: no spec, no lease).
SUMMARY_COLUMNS = (
    Job.id, Job.name, Job.status, Job.queue, Job.progress_step, Job.total_steps, Job.attempt, Job.max_attempts,
    Job.error, Job.cancel_requested, Job.latest_metrics, Job.evaluation, Job.created_at, Job.updated_at,
    Job.started_at, Job.finished_at, Job.sweep_id, Job.tags,
)
# ... and what only the single-job view shows.
DETAIL_COLUMNS = (*SUMMARY_COLUMNS, Job.notes, Job.spec, Job.attempt_errors, Job.runtime_seconds, Job.divergences,
                  Job.dataset_summary, Job.health, Job.stop_reason)


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def json_safe(value: Any) -> Any:
    """Floats that JSON cannot carry (NaN, ±inf) become None, at any depth."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def progress(step: int, total: int) -> dict[str, Any]:
    fraction = min(1.0, step / total) if total > 0 else 0.0
    return {"step": step, "total": total, "fraction": round(fraction, 4)}


def job_summary(job: Any) -> dict[str, Any]:
    """A job without its spec and history (a Job or a row of SUMMARY_COLUMNS)."""
    return {
        "id": job.id,
        "name": job.name,
        "status": job.status,
        "queue": job.queue,
        "progress": progress(job.progress_step, job.total_steps),
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "attempts": job.attempt,
        "max_attempts": job.max_attempts,
        "error": job.error,
        "cancel_requested": bool(job.cancel_requested),
        "latest_metrics": json_safe(job.latest_metrics),
        "evaluation": json_safe(job.evaluation),
        "sweep_id": job.sweep_id,
        "tags": list(job.tags or ()),
    }


def event_to_dict(event: JobEvent) -> dict[str, Any]:
    return {"at": iso(event.at), "from": event.from_status, "to": event.to_status, "attempt": event.attempt,
            "message": event.message}


def job_to_dict(job: Job, events: list[JobEvent]) -> dict[str, Any]:
    """The full view: the summary, the spec as submitted (with defaults filled in) and the history."""
    return {**job_summary(job), "notes": job.notes or "", "attempt_errors": job.attempt_errors or [],
            "runtime_seconds": round(job.runtime_seconds or 0.0, 3), "divergences": job.divergences,
            "dataset_summary": job.dataset_summary, "health": json_safe(job.health or []), "stop_reason": job.stop_reason,
            "spec": job.spec, "events": [event_to_dict(e) for e in events]}


def artifact_to_dict(artifact: Artifact, url: str, expires_at: datetime) -> dict[str, Any]:
    return {
        "id": artifact.id,
        "step": artifact.step,
        "url": url,
        "expires_at": iso(expires_at),
        "bytes": artifact.bytes,
        "sha256": artifact.sha256,
        "content_type": artifact.content_type,
    }


# ---- list cursors ------------------------------------------------------------------------------
def encode_cursor(created_at: datetime, job_id: str) -> str:
    """Opaque to clients: base64url of ``<created_at ISO, microseconds>|<id>``, unpadded."""
    raw = f"{created_at.astimezone(timezone.utc).isoformat(timespec='microseconds')}|{job_id}"
    return base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """(created_at, id) of the last job of the previous page; ValueError if it is not one of ours."""
    if len(cursor) > 200:
        raise ValueError("too long")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("not base64url") from None
    stamp, sep, job_id = raw.partition("|")
    if not sep or not _CURSOR_ID.fullmatch(job_id):
        raise ValueError("malformed")
    created_at = datetime.fromisoformat(stamp)  # ValueError when malformed
    if created_at.tzinfo is None:
        raise ValueError("naive timestamp")
    try:
        # A forged stamp at the calendar's edge with an extreme offset (year 9999 at -14:00) is a
        # valid ISO string whose UTC form lies outside datetime's range.
        return created_at.astimezone(timezone.utc), job_id
    except OverflowError:
        raise ValueError("timestamp out of range") from None


# ---- request bodies ----------------------------------------------------------------------------
class GenerateRequest(BaseModel):
    """Body of POST /v1/jobs/{id}/generate. ``n``'s upper bound is the deployment's
    ``max_generate_samples``, checked by the view."""

    model_config = ConfigDict(extra="forbid")

    n: StrictInt = Field(64, ge=1)
    seed: StrictInt = Field(0, ge=0, le=2**63 - 1)
    labels: Any = Field(None, description="one label for all, a list with one per sample, or null")
    checkpoint: StrictInt | None = Field(None, ge=0, description="a checkpoint's step; null = final generator, else latest")
    format: Literal["png", "npy"] = "png"
    rejection: StrictBool = Field(
        True, description="when the job's spec asks for sampling.rejection, false gives the raw generator's samples"
    )

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_shape(cls, labels: Any) -> list[int] | int | None:
        # One plain error instead of pydantic's per-member union errors ("labels.list[int].0").
        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        if labels is None or is_int(labels) or (isinstance(labels, list) and all(is_int(v) for v in labels)):
            return labels
        raise ValueError("must be null, an integer, or a list of integers")


# ---- a job's labels: tags and notes --------------------------------------------------------------
MAX_TAGS, MAX_TAG_LENGTH, MAX_NOTES_LENGTH = 16, 64, 4000
TAG = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.:=+/-]{{0,{MAX_TAG_LENGTH - 1}}}")
TAG_RULE = (f"1 to {MAX_TAG_LENGTH} characters: letters, digits and _ . : = + / -, "
            "starting with a letter or a digit")
LABEL_FIELDS = ("tags", "notes")


class JobLabels(BaseModel):
    """What the job's owner says about a job, beside its spec: set at submit (the submit body's
    ``tags`` and ``notes``), changed with PATCH /v1/jobs/{id}. Not part of the spec: the spec is
    the training recipe as submitted and never changes; labels do."""

    model_config = ConfigDict(extra="forbid", strict=True)

    tags: list[StrictStr] = Field(default_factory=list, max_length=MAX_TAGS, description=(
        f"at most {MAX_TAGS} tags of {TAG_RULE}; case-sensitive, duplicates dropped; filter with ?tag="))
    notes: StrictStr = Field("", max_length=MAX_NOTES_LENGTH, description="free text")

    @field_validator("tags")
    @classmethod
    def _tag_charset(cls, tags: list[str]) -> list[str]:
        for index, tag in enumerate(tags):
            if not TAG.fullmatch(tag):
                raise ValueError(f"tag {index} ({tag[:70]!r}) is not {TAG_RULE}")
        return list(dict.fromkeys(tags))


class JobPatch(JobLabels):
    """Body of PATCH /v1/jobs/{id}: the labels to replace (a field left out stays as it is)."""


from ganforge.jobs.notify import Notify  # noqa: E402 (shared with the sweep spec)


class JobSubmission(JobLabels, JobSpec):
    """Body of POST /v1/jobs: a JobSpec, plus the job's labels (``tags``, ``notes``) and whom to
    notify when it ends (``notify``) — service matters beside the training recipe, not in it."""

    notify: Notify | None = Field(None, description="a webhook called once the job ends")

    def split(self) -> tuple[JobSpec, JobLabels]:
        """The spec and the labels, each as validated here (built without a second validation)."""
        spec = JobSpec.model_construct(
            _fields_set=self.model_fields_set - set(LABEL_FIELDS) - {"notify"},
            **{name: getattr(self, name) for name in JobSpec.model_fields})
        return spec, JobLabels.model_construct(tags=self.tags, notes=self.notes)


# The responses (the contract: api/openapi.py publishes these; tests check the views follow them)
# live in ganforge.responses, which the client shares without Flask or SQLAlchemy.
from ganforge.responses import (  # noqa: E402,F401
    _Out, Progress, JobSummary, JobEventOut, DatasetSummaryOut, HealthFindingOut, JobOut, Preset, PresetList, JobPage, MetricSeries, MetricsOut, ArtifactLink, ArtifactList, LogLine, JobLogs, CheckpointList, ErrorDetail, ErrorBody, ErrorEnvelope, Health, CheckResult, Readiness,
)


# ---- query parameters (documented from these models; the views parse with ganforge.api.validation) -----
class ListJobsQuery(BaseModel):
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"] | None = None
    tag: list[str] | None = Field(None, max_length=MAX_TAGS,
                                  description="jobs with this tag; repeat it for jobs with all the tags given")
    q: str | None = Field(None, max_length=120, description="a part of the job's name, any case")
    limit: int = Field(50, ge=1, le=200, description="page size")
    cursor: str | None = Field(None, max_length=200, description="next_cursor of the previous page")


class TimelineQuery(BaseModel):
    max_frames: int = Field(40, ge=2, le=120, description="grids evenly picked, first and last kept")
    frame_ms: int = Field(250, ge=20, le=5000, description="how long each frame shows")


class InterpolateRequest(BaseModel):
    """Body of POST /v1/jobs/{id}/interpolate."""

    model_config = ConfigDict(extra="forbid")

    seed_a: StrictInt = Field(0, ge=0, le=2**63 - 1)
    seed_b: StrictInt = Field(1, ge=0, le=2**63 - 1)
    steps: StrictInt = Field(8, ge=2, le=64, description="images along the path, both ends included")
    label: StrictInt | None = Field(None, description="the class for a conditional generator (default 0)")
    checkpoint: StrictInt | None = Field(None, ge=0, description="a checkpoint's step; null = final, else latest")


class LogsQuery(BaseModel):
    since: int | None = Field(None, ge=0, description="the first line wanted: 0 (default) or the previous response's next")
    limit: int | None = Field(None, ge=1, le=5000, description="at most this many lines (default 1000)")


class MetricsQuery(BaseModel):
    names: str | None = Field(None, description="comma-separated series names (default: all), at most 32")
    since_step: int | None = Field(None, ge=0, description="only points after this step (exclusive)")
    max_points: int | None = Field(None, ge=2, le=100_000, description="evenly strided per series, first and last kept")
