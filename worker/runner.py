"""One attempt at one job: claim it, train with callbacks that report through jobs/, finish it."""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import threading
import time
from typing import Any

from gan_core import checkpoint as ckpt
from gan_core import images
from gan_core.data import DataConfig, DataError
from gan_core.spec import JobSpec
from gan_core.trainer import Callbacks, NonFiniteLossError, Trainer
from jobs import datasets, lifecycle
from jobs.lifecycle import Claim, LeaseLost
from jobs.models import Artifact, Metric
from jobs.services import Services
from jobs.storage import checkpoint_key, final_key, sample_key

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 1.0  # how often should_stop() goes to the database (lease + cancel flag)


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Uploader:
    """Uploads artifacts on a background thread, so training does not wait for the store.

    Bytes are handed over already serialised; the first failure is re-raised on the training
    thread at the next ``submit`` or at ``drain``. At most ``depth`` uploads wait at a time.
    """

    def __init__(self, services: Services, claim: Claim, depth: int = 4):
        self.services = services
        self.claim = claim
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"upload-{claim.job_id[:8]}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self._error is None:
                    self._upload(*item)
            except BaseException as exc:  # kept for the training thread to raise
                self._error = exc
            finally:
                self._queue.task_done()

    def _upload(self, kind: str, step: int, key: str, data: bytes, content_type: str) -> None:
        stored = self.services.storage.put(key, data, content_type)
        lifecycle.record_artifact(self.services.db, self.claim.job_id, self.claim.token, kind=kind, step=step,
                                  key=stored.key, size=stored.size, sha256=stored.sha256, content_type=content_type)

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, kind: str, step: int, key: str, data: bytes, content_type: str) -> None:
        self._raise()
        self._queue.put((kind, step, key, data, content_type))

    def drain(self) -> None:
        """Wait until every submitted upload has landed (or raise the first failure)."""
        self._queue.join()
        self._raise()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=60)


class JobReporter(Callbacks):
    """Trainer callbacks that write metrics, upload artifacts and poll for cancellation."""

    def __init__(self, services: Services, claim: Claim, uploader: Uploader):
        self.services = services
        self.claim = claim
        self.uploader = uploader
        self.lease = services.settings.lease_seconds
        self.cancel_requested = False
        self._last_beat = time.monotonic()
        self.step = 0

    def _upload(self, kind: str, step: int, key: str, data: bytes, content_type: str) -> None:
        self.uploader.submit(kind, step, key, data, content_type)

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.step = step
        self.cancel_requested = lifecycle.record_metrics(
            self.services.db, self.claim.job_id, self.claim.token, [(step, metrics)], self.lease
        )
        self._last_beat = time.monotonic()

    def on_samples(self, step: int, png: bytes) -> None:
        self._upload("sample_grid", step, sample_key(self.claim.job_id, step), png, "image/png")

    def on_checkpoint(self, step: int, checkpoint: dict[str, Any]) -> None:
        self._upload("checkpoint", step, checkpoint_key(self.claim.job_id, step), ckpt.to_bytes(checkpoint),
                     "application/octet-stream")

    def on_evaluation(self, step: int, results: dict[str, Any]) -> None:
        key = f"jobs/{self.claim.job_id}/evaluation/step-{step:06d}.json"
        self._upload("evaluation", step, key, json.dumps(results).encode(), "application/json")

    def should_stop(self) -> bool:
        now = time.monotonic()
        if now - self._last_beat >= HEARTBEAT_SECONDS:
            self._last_beat = now
            self.cancel_requested = lifecycle.heartbeat(self.services.db, self.claim.job_id, self.claim.token, self.lease)
        return self.cancel_requested


def latest_checkpoint(services: Services, job_id: str) -> dict[str, Any] | None:
    """The newest checkpoint of an earlier attempt, loaded safely; None if there is none."""
    from sqlalchemy import select

    with services.db.session() as session:
        artifact = session.execute(
            select(Artifact).where(Artifact.job_id == job_id, Artifact.kind == "checkpoint").order_by(Artifact.step.desc()).limit(1)
        ).scalar_one_or_none()
    if artifact is None:
        return None
    return ckpt.load(services.storage.get(artifact.key), expect=ckpt.TRAINING_FORMAT)


def loss_plot(services: Services, job_id: str, title: str) -> bytes:
    from sqlalchemy import select

    series: dict[str, list[tuple[int, float]]] = {"loss_d": [], "loss_g": [], "acc_d": []}
    with services.db.session() as session:
        rows = session.execute(
            select(Metric.name, Metric.step, Metric.value).where(Metric.job_id == job_id, Metric.name.in_(list(series))).order_by(Metric.step)
        ).all()
    for name, step, value in rows:
        series[name].append((step, value))
    return images.line_plot_png(series, title=title)


def run_job(services: Services, job_id: str, worker_id: str | None = None) -> str:
    """Run one attempt; returns what happened (for logs and tests)."""
    worker_id = worker_id or services.settings.worker_id or default_worker_id()
    claim = lifecycle.claim(services.db, job_id, worker_id, services.settings.lease_seconds)
    if claim is None:
        log.info("job %s is not free (finished, cancelled or held by a live lease): nothing to do", job_id)
        return "skipped"
    log.info("job %s attempt %d claimed by %s", job_id, claim.attempt, worker_id)
    uploader = Uploader(services, claim)
    reporter = JobReporter(services, claim, uploader)
    try:
        with services.db.session() as session:
            spec = JobSpec.model_validate(lifecycle.get(session, job_id).spec)
        spec = datasets.localise(spec, services.settings, job_id)  # user data: allowed sources, size-capped
        resume = latest_checkpoint(services, job_id)
        trainer = Trainer(spec, data_config=DataConfig.from_env(), callbacks=reporter, resume_from=resume)
        if resume is not None:
            log.info("job %s resumes from step %d", job_id, trainer.state.step)
        result = trainer.run()
        if result.stopped:
            reporter.on_checkpoint(result.step, trainer.checkpoint())
            uploader.drain()
            lifecycle.finish(services.db, job_id, claim.token, "cancelled", f"cancelled at step {result.step}", step=result.step)
            return "cancelled"
        reporter._upload("final_model", result.step, final_key(job_id), ckpt.to_bytes(trainer.generator_file()),
                         "application/octet-stream")
        reporter._upload("loss_plot", result.step, f"jobs/{job_id}/final/loss_plot.png",
                         loss_plot(services, job_id, f"{spec.name}: losses and D accuracy"), "image/png")
        uploader.drain()  # the job is not done before every artifact is in the store
        lifecycle.finish(services.db, job_id, claim.token, "succeeded", f"finished {result.step} steps",
                         evaluation=result.evaluation, step=result.step)
        return "succeeded"
    except LeaseLost:
        log.warning("job %s: lease lost (another attempt owns the job); stopping this one", job_id)
        return "lease_lost"
    except NonFiniteLossError as exc:
        return _fail(services, claim, f"diverged at step {exc.step}")
    except (DataError, ckpt.CheckpointError, ValueError) as exc:
        return _fail(services, claim, str(exc))
    except Exception as exc:  # a bug or an outage: record a readable reason, keep the traceback in the log
        log.exception("job %s failed", job_id)
        return _fail(services, claim, f"internal error: {type(exc).__name__}: {exc}")
    finally:
        uploader.close()
        datasets.discard(job_id)


def _fail(services: Services, claim: Claim, reason: str) -> str:
    log.warning("job %s failed: %s", claim.job_id, reason)
    try:
        lifecycle.finish(services.db, claim.job_id, claim.token, "failed", reason)
    except LeaseLost:
        return "lease_lost"
    return "failed"
