"""What the API answers, as pydantic models: the contract that api/openapi.py publishes, that the
views are tested against, and that ganforge.client parses answers into.

Kept apart from api/ (Flask) and jobs/ (SQLAlchemy) so that the client, and the CLI's client
commands, work on a base install (`pip install ganforge`, no [service] extra).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

def bundle_filename(name: str, job_id: str) -> str:
    """The file name GET /v1/jobs/{id}/bundle is served under (and `ganforge download --zip` saves)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:60] or "job"
    return f"{slug}-{job_id[:8]}.zip"


SweepStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TrialStatus = Literal["queued", "running", "succeeded", "failed", "cancelled", "pruned"]


# ---- jobs, artifacts, errors, probes -----------------------------------------------------------
class _Out(BaseModel):
    # Closed objects: a field the schema does not name is a contract violation the fuzz tests catch.
    # (ganforge.client parses answers with extra="ignore": a newer server's fields do not break it.)
    model_config = ConfigDict(extra="forbid")

    # Read access by the JSON names too (job["progress"]["step"], job.get("error")), for code
    # written against the client when it returned plain dicts.
    def __getitem__(self, key: str) -> Any:
        for name, field in type(self).model_fields.items():
            if key == name or key == field.alias:
                return getattr(self, name)
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def keys(self) -> list[str]:
        return [field.alias or name for name, field in type(self).model_fields.items()]

    def __contains__(self, key: object) -> bool:
        return key in self.keys()


class Progress(_Out):
    step: int
    total: int
    fraction: float = Field(ge=0, le=1)


class JobSummary(_Out):
    id: str = Field(pattern=r"^[0-9a-f]{32}$")
    name: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    queue: str
    progress: Progress
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    max_attempts: int
    error: str | None
    cancel_requested: bool
    latest_metrics: dict[str, float | None] | None
    evaluation: dict[str, Any] | None
    sweep_id: str | None = Field(description="the sweep this job is a trial of (GET /v1/sweeps/{sweep_id}); null if none")
    tags: list[str]


class JobEventOut(_Out):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    at: datetime
    from_: str | None = Field(alias="from")
    to: str
    attempt: int
    message: str


class DatasetSummaryOut(_Out):
    files: int = Field(ge=0, description="files in the archive or S3 prefix (archiver metadata such as __MACOSX/ not counted)")
    images: int = Field(ge=0, description="images decoded and used")
    skipped: int = Field(ge=0, description="files skipped: not PNG/JPEG/WebP, corrupt, or too large")
    classes: list[str] = Field(description="class folders found, sorted (labels 'folders': label i is classes[i])")
    bytes: int = Field(ge=0, description="the files' uncompressed size")
    cache: Literal["hit", "miss"] = Field(description="'hit': decoded by an earlier job on the same archive")
    sha256: str = Field(description="the archive's sha256 (an S3 prefix: of its listing)")
    image_size: int
    channels: int
    labels: Literal["none", "folders"]
    decode_seconds: float = Field(ge=0, description="time spent decoding (0 on a cache hit)")


class HealthFindingOut(_Out):
    detector: Literal["diverged", "discriminator_won", "mode_collapse"]
    step: int = Field(ge=0, description="the training step it was found at")
    message: str
    action: Literal["warning", "stopped"] = Field(description="'stopped': the job was stopped for it")


class JobOut(JobSummary):
    notes: str
    attempt_errors: list[str] = Field(description="why each lost attempt ended (its worker died or lost the database)")
    runtime_seconds: float = Field(ge=0, description="training time over all attempts")
    divergences: int = Field(ge=0, description="non-finite losses rolled back (a second one fails the job)")
    dataset_summary: DatasetSummaryOut | None = Field(
        None, description="image_folder: what the worker decoded (null before it did, and for other datasets)")
    health: list[HealthFindingOut] = Field(
        description="GAN health (train.health): what the detectors found, oldest first; each also an event")
    stop_reason: Literal["diverged", "discriminator_won", "mode_collapse"] | None = Field(
        None, description="the GAN health detector that stopped the job (it ends cancelled), if one did")
    spec: dict[str, Any] = Field(description="the JobSpec as submitted, with defaults filled in")
    events: list[JobEventOut]
    devices: int = Field(ge=1, description="devices the job trains on (resources.devices)")
    waiting_reason: str | None = Field(
        None, description="a queued job that no live worker can take (none serves its queue: its size or kind): why")
    logs_url: str = Field(description="the training logs of its multi-device attempts (GET), lines tagged with the rank")


class Preset(_Out):
    name: str
    spec: dict[str, Any] = Field(description="a JobSpec document, ready to submit")


class PresetList(_Out):
    items: list[Preset]


class JobPage(_Out):
    items: list[JobSummary]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")


class MetricSeries(_Out):
    steps: list[int]
    values: list[float | None] = Field(description="null where the value was not finite")


class MetricsOut(_Out):
    series: dict[str, MetricSeries]


class ArtifactLink(_Out):
    id: str = Field(pattern=r"^[0-9a-f]{32}$")
    step: int
    url: str = Field(description="a presigned URL: fetch it without credentials until expires_at")
    expires_at: datetime
    bytes: int
    sha256: str
    content_type: str


class ArtifactList(_Out):
    items: list[ArtifactLink]


class LogLine(_Out):
    n: int = Field(description="the line's number in the job's log (0, 1, ... over all its attempts)")
    time: str = Field(description="when it was logged (ISO 8601, UTC)")
    level: str = Field(description="DEBUG, INFO, WARNING, ERROR or CRITICAL")
    rank: int | None = Field(description="the training process of a multi-device job; null for the worker's own lines")
    logger: str
    message: str = Field(description="the text (a traceback included); URLs without their query strings")


class JobLogs(_Out):
    items: list[ArtifactLink] = Field(description="each multi-device attempt's whole launcher log (step: the attempt)")
    lines: list[LogLine] = Field(description="the job's log lines numbered from ?since= on, oldest first")
    next: int = Field(description="pass as ?since= for the lines logged after these")
    more: bool = Field(description="more lines are stored already: ask again at once with ?since=next")


class CheckpointList(_Out):
    items: list[ArtifactLink]
    final: ArtifactLink | None = Field(description="the final generator, once the job has succeeded")


class ErrorDetail(_Out):
    field: str
    problem: str


class ErrorBody(_Out):
    code: str
    message: str
    details: list[ErrorDetail]
    request_id: str | None = None


class ErrorEnvelope(_Out):
    error: ErrorBody


class Health(_Out):
    status: Literal["ok"]


class CheckResult(_Out):
    status: Literal["ok", "error"]
    error: str | None = None


class Readiness(_Out):
    status: Literal["ready", "unavailable"]
    checks: dict[str, CheckResult]
    failed: list[str] | None = None


# ---- sweeps --------------------------------------------------------------------------------------
class BestTrial(_Out):
    number: int
    job_id: str | None
    params: dict[str, Any] = Field(description="the trial's value of each space path")
    objective: float


class SweepSummary(_Out):
    id: str = Field(pattern=r"^[0-9a-f]{32}$")
    name: str
    status: SweepStatus
    method: Literal["grid", "random", "tpe"]
    trials: int = Field(description="trials planned (the spec's trials, or the grid's size)")
    max_parallel: int
    error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class SweepOut(SweepSummary):
    counts: dict[str, int] = Field(description="trials by status (queued, running, succeeded, failed, cancelled, pruned)")
    best_trial: BestTrial | None
    objective: dict[str, str] = Field(description="the spec's objective: metric and direction")
    spec: dict[str, Any] = Field(description="the SweepSpec as submitted, with defaults filled in")


class SweepPage(_Out):
    items: list[SweepSummary]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")


class TrialOut(_Out):
    number: int
    job_id: str | None = Field(description="the trial's job (GET /v1/jobs/{job_id}); null if its spec was invalid")
    params: dict[str, Any]
    objective: float | None = Field(description="the metric of its final evaluation, once it succeeded")
    status: TrialStatus
    reason: str | None = Field(description="why it ended other than succeeded: 'pruned', the job's error, ...")


class TrialList(_Out):
    items: list[TrialOut]


class TrialCurve(_Out):
    number: int
    job_id: str
    status: TrialStatus
    steps: list[int]
    values: list[float]


class CurvesOut(_Out):
    metric: str = Field(description="the series read: eval/<figure>")
    items: list[TrialCurve] = Field(description="every trial that has a job, in number order (empty series too)")
