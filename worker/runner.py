"""One attempt at one job: claim it, train with callbacks that report through jobs/, finish it."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from typing import Any, Callable, Iterator

from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_before_delay, wait_exponential

from gan_core import checkpoint as ckpt
from gan_core import distributed, health, images
from gan_core.data import DataConfig, DataError, DownloadError
from gan_core.distributed import SINGLE, Parallel
from gan_core.quality import quality_score
from gan_core.sampling import interpolation_png
from gan_core.spec import JobSpec, error_details
from gan_core.trainer import Callbacks, NonFiniteLossError, Trainer
from ganforge.jobs import datasets, lifecycle, sweeps, telemetry
from ganforge.jobs.lifecycle import Claim, LeaseLost
from ganforge.jobs.queue import PRIORITY_RESUME
from ganforge.jobs.services import Services
from ganforge.jobs.storage import (ObjectNotFound, StorageError, checkpoint_key, evaluation_key, final_key, interpolation_key,
                          loss_plot_key, sample_key)
from ganforge.worker import job_logs
from ganforge.worker.uploads import BACKOFF_MAX, BACKOFF_START, Uploader, UploadsPending

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 1.0  # how often should_stop() goes to the database (lease + cancel flag)

# Set when this worker process is asked to stop (SIGTERM): the running job checkpoints, gives its
# lease back and returns to the queue.
DRAIN = threading.Event()


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class JobReporter(Callbacks):
    """Trainer callbacks that write metrics, upload artifacts, keep the lease alive and decide
    when to stop: cancellation (database flag), a worker drain (SIGTERM) or max_runtime_seconds."""

    def __init__(self, services: Services, claim: Claim, uploader: Uploader, spec: JobSpec,
                 runtime_before: float, drain: threading.Event, health_stops: bool = False):
        self.services = services
        self.claim = claim
        self.uploader = uploader
        self.spec = spec
        self.lease = services.settings.lease_seconds
        self.drain = drain
        self.stop_reason: str | None = None  # cancel | drain | max_runtime
        self.cancel_requested = False
        # GAN health: a finding stops the job (train.health.stop; by default a sweep trial's),
        # else it is a warning; health_stop is the detector that stopped it.
        self.health_stops = health_stops
        self.health_stop: str | None = None
        self._runtime_before = runtime_before
        self._started: float | None = None  # the clock runs while the loop trains (start_clock)
        self._last_beat = time.monotonic()
        # The trainer's step, read by each heartbeat: progress shows every second, not only at
        # log_every (runner sets it once the trainer exists).
        self.current_step: Callable[[], int] | None = None

    def start_clock(self) -> None:
        if self._started is None:
            self._started = time.monotonic()

    def runtime(self) -> float:
        """Training time of this job over all its attempts, in seconds."""
        return self._runtime_before + (time.monotonic() - self._started if self._started is not None else 0.0)

    def upload(self, kind: str, step: int, key: str, data: bytes, content_type: str, score: float | None = None) -> None:
        self.uploader.submit(kind, step, key, data, content_type, score)

    def beat(self) -> None:
        self.cancel_requested = with_db_retry(lambda: lifecycle.heartbeat(
            self.services.db, self.claim.job_id, self.claim.token, self.lease,
            step=self.current_step() if self.current_step is not None else None, runtime_seconds=self.runtime()),
            self.lease)
        telemetry.LEASE_RENEWALS.inc()
        self._last_beat = time.monotonic()

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        telemetry.training_speed(metrics)
        self.cancel_requested = with_db_retry(lambda: lifecycle.record_metrics(
            self.services.db, self.claim.job_id, self.claim.token, [(step, metrics)], self.lease), self.lease)

    def on_samples(self, step: int, png: bytes) -> None:
        self.upload("sample_grid", step, sample_key(self.claim.job_id, step), png, "image/png")

    def on_checkpoint(self, step: int, checkpoint: dict[str, Any]) -> None:
        self.upload("checkpoint", step, checkpoint_key(self.claim.job_id, step), ckpt.to_bytes(checkpoint),
                    "application/octet-stream")

    def on_evaluation(self, step: int, results: dict[str, Any]) -> None:
        self.upload("evaluation", step, evaluation_key(self.claim.job_id, step), json.dumps(results).encode(), "application/json",
                    score=quality_score(results))
        # The figures as eval/<figure> series: a learning curve of the quality (a sweep prunes on it).
        sweep_id = with_db_retry(lambda: lifecycle.record_evaluation(
            self.services.db, self.claim.job_id, self.claim.token, step, results, self.lease), self.lease)
        sweeps.advance_quietly(self.services, sweep_id)

    def on_health(self, step: int, findings: list[health.Finding]) -> None:
        action = "stopped" if self.health_stops else "warning"
        entries = [{**finding.as_dict(), "action": action} for finding in findings]
        for finding in findings:
            log.warning("job %s: GAN health at step %d: %s (%s): %s", self.claim.job_id, finding.step, finding.detector,
                        action, finding.message, extra={"job_id": self.claim.job_id})
        stop = findings[0].detector if self.health_stops else None
        self.cancel_requested, self.health_stop = with_db_retry(lambda: lifecycle.record_health(
            self.services.db, self.claim.job_id, self.claim.token, entries, stop), self.lease)

    def should_stop(self) -> bool:
        if self.drain.is_set():
            self.stop_reason = "drain"
            return True
        limit = self.spec.max_runtime_seconds
        if limit is not None and self.runtime() >= limit:
            self.stop_reason = "max_runtime"
            return True
        if time.monotonic() - self._last_beat >= HEARTBEAT_SECONDS:
            self.beat()
        if self.cancel_requested:
            self.stop_reason = "cancel"
        return self.cancel_requested

    @contextlib.contextmanager
    def long_operation(self, name: str) -> Iterator[None]:
        """Heartbeats from a side thread while the training thread is busy elsewhere."""
        done = threading.Event()

        def keep_alive() -> None:
            while not done.wait(HEARTBEAT_SECONDS):
                try:
                    self.beat()
                except Exception as exc:  # the training thread sees LeaseLost at its next write
                    log.warning("heartbeat during %s failed: %s", name, exc, extra={"job_id": self.claim.job_id})

        thread = threading.Thread(target=keep_alive, name=f"keepalive-{name}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()


def _connection_lost(exc: BaseException) -> bool:
    return isinstance(exc, DBAPIError) and (exc.connection_invalidated or isinstance(exc, (OperationalError, InterfaceError)))


def _log_retry(what: str, job_id: str | None = None):
    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("%s (%s: %s); retrying in %.1f s", what, type(exc).__name__, exc, state.upcoming_sleep,
                    extra={"job_id": job_id} if job_id else None)
    return before_sleep


def with_db_retry(call, budget_seconds: float):
    """Run ``call``; while the database connection fails, retry with backoff for up to
    ``budget_seconds`` (a restarted database, a dropped connection). LeaseLost is not retried."""
    return Retrying(retry=retry_if_exception(_connection_lost), stop=stop_before_delay(budget_seconds),
                    wait=wait_exponential(multiplier=0.2, max=5.0), reraise=True,
                    before_sleep=_log_retry("database unreachable"))(call)


def prune_checkpoints(services: Services, claim: Claim, spec: JobSpec) -> None:
    """The retention policy, applied after each checkpoint or evaluation lands."""
    for artifact in lifecycle.checkpoints_to_prune(services.db, claim.job_id, spec.keep_checkpoints,
                                                   spec.keep_best_checkpoint):
        lifecycle.forget_artifact(services.db, claim.job_id, claim.token, artifact.id)
        try:
            services.storage.delete(artifact.key)
        except Exception as exc:  # the row is gone; an orphaned object costs space, not correctness
            log.warning("could not delete %s: %s", artifact.key, exc, extra={"job_id": claim.job_id})


def latest_checkpoint(services: Services, job_id: str, patience_seconds: float = 0.0) -> dict[str, Any] | None:
    """The newest checkpoint of an earlier attempt, loaded safely; None if there is none.

    While the store is unreachable the download is retried with backoff for up to
    ``patience_seconds`` (an outage must not fail a job that is resuming); a missing object is
    not retried.
    """
    artifact = lifecycle.latest_artifact(services.db, job_id, "checkpoint")
    if artifact is None:
        return None
    # ObjectNotFound is a StorageError too, but waiting will not make a missing object appear.
    fetch = Retrying(retry=retry_if_exception(lambda exc: isinstance(exc, StorageError) and not isinstance(exc, ObjectNotFound)),
                     stop=stop_before_delay(patience_seconds), reraise=True,
                     wait=wait_exponential(multiplier=BACKOFF_START, max=BACKOFF_MAX),
                     before_sleep=_log_retry(f"cannot fetch {artifact.key}", job_id))
    data = fetch(services.storage.get, artifact.key)
    return ckpt.load(data, expect=ckpt.TRAINING_FORMAT)


def loss_plot(services: Services, job_id: str, title: str) -> bytes:
    series = lifecycle.metric_series(services.db, job_id, ("loss_d", "loss_g", "acc_d"))
    return images.line_plot_png(series, title=title)


def run_job(services: Services, job_id: str, worker_id: str | None = None,
            drain: threading.Event | None = None) -> str:
    """Run one attempt; returns what happened (for logs and tests).

    A job on one device trains in this process. A job on N devices is claimed here, then trained
    by N processes that torch's launcher starts (ganforge.worker.launched); rank 0 of those reports
    through jobs/ exactly as this process would.
    """
    settings = services.settings
    worker_id = worker_id or settings.worker_id or default_worker_id()
    drain = drain or DRAIN
    claim = with_db_retry(lambda: lifecycle.claim(services.db, job_id, worker_id, settings.lease_seconds),
                          settings.lease_seconds)
    if claim is None:
        log.info("job %s is not free (finished, cancelled or held by a live lease): nothing to do", job_id)
        return "skipped"
    with job_logs.capture(services, job_id) as job_log:  # the attempt's lines, stored with the job
        log.info("job %s attempt %d claimed by %s", job_id, claim.attempt, worker_id)
        return _run_attempt(services, claim, drain, job_log)


def _run_attempt(services: Services, claim: Claim, drain, job_log) -> str:
    settings, job_id = services.settings, claim.job_id
    try:
        with services.db.session() as session:
            spec = lifecycle.load_spec(lifecycle.get(session, job_id).spec, settings)
    except ValidationError as exc:  # the deployment's limits changed since the job was accepted
        problems = "; ".join(f"{d['field']}: {d['problem']}" for d in error_details(exc))
        return _fail(services, claim, f"the job's spec is no longer valid here: {problems}")
    if spec.resources.devices > 1:
        # Deliberately lazy (a cycle): each rank runs ganforge.worker.launched as __main__, which imports this module.
        from ganforge.worker.launched import run_launched

        return run_launched(services, claim, spec, drain, job_log)
    return run_claimed(services, claim, drain, spec=spec)


def run_claimed(services: Services, claim: Claim, drain, parallel: Parallel = SINGLE,
                spec: JobSpec | None = None) -> str:
    """Train a claimed job to its end (or stop) in this process: the whole job, or rank 0 of a
    data-parallel one. The other ranks run ``follow_claimed``: every value they need from the
    control plane comes from ``parallel.share`` calls made here in the same order."""
    settings, job_id = services.settings, claim.job_id
    with services.db.session() as session:
        job = lifecycle.get(session, job_id)
        spec = spec or lifecycle.load_spec(job.spec, settings)
        runtime_before, divergences, tenant = job.runtime_seconds, job.divergences, job.tenant
        health_stops = spec.train.health.stop if spec.train.health.stop is not None else job.sweep_id is not None

    def retention(item) -> None:  # a new checkpoint or a new evaluation score may free older checkpoints
        if item.kind in ("checkpoint", "evaluation"):
            prune_checkpoints(services, claim, spec)

    uploader = Uploader(services, claim, settings.data_dir / "spool", after_upload=retention)
    reporter = JobReporter(services, claim, uploader, spec, runtime_before, drain, health_stops)
    try:
        data_config = settings.data_config()  # a bad GANFORGE_DATASET_MIRRORS fails the job, naming it
        # user data: allowed sources, size-capped (the other ranks read the same local copy)
        spec = parallel.share(lambda: _localise(services, claim, spec, tenant, reporter))
        trainer = None
        while True:
            def resume_point() -> tuple[bytes | None, float]:
                with reporter.long_operation("fetch checkpoint"):
                    found = latest_checkpoint(services, job_id, settings.upload_patience_seconds)
                return distributed.checkpoint_bytes(found), 0.5 ** divergences

            resume_bytes, lr_scale = parallel.share(resume_point)
            trainer = _trainer(spec, data_config, reporter, resume_bytes, lr_scale, trainer, parallel)
            reporter.current_step = lambda trainer=trainer: trainer.state.step
            if resume_bytes is not None:
                log.info("job %s resumes from step %d", job_id, trainer.state.step)
            try:
                reporter.start_clock()
                result = trainer.run()
                break
            except NonFiniteLossError as exc:  # every rank sees it at the same step (global statistics)
                def rollback() -> int:
                    """-2: stopped by GAN health; -1: failed (a second divergence); else the count."""
                    reporter.on_health(exc.step, [health.diverged(exc.step, exc.values)])
                    if reporter.health_stop == health.DIVERGED:
                        return -2  # no rollback: halved learning rates would not be the trial's
                    if divergences >= 1:
                        return -1
                    with reporter.long_operation("drain"):
                        uploader.drain(settings.upload_patience_seconds)  # the last good checkpoint is in the store
                    back_to = lifecycle.latest_checkpoint_step(services.db, job_id)
                    log.warning("job %s diverged at step %d; rolling back to step %d with halved learning rates",
                                job_id, exc.step, back_to)
                    return lifecycle.record_divergence(
                        services.db, job_id, claim.token,
                        f"non-finite loss at step {exc.step}: rolled back to step {back_to}, learning rates halved")

                divergences = parallel.share(rollback)
                if divergences == -2:
                    return _diverged(services, claim, reporter, uploader, exc)
                if divergences < 0:
                    return _fail(services, claim, f"diverged at step {exc.step}")
        if result.stopped:
            return _stopped(services, claim, spec, trainer, reporter, uploader, result.step)
        _upload_final(services, job_id, spec, trainer, reporter, result.step)
        with reporter.long_operation("drain"):
            uploader.drain(settings.upload_patience_seconds)  # the job is not done before every artifact is in the store
        reporter.beat()  # the final training time
        lifecycle.finish(services.db, job_id, claim.token, "succeeded", f"finished {result.step} steps",
                         evaluation=result.evaluation, step=result.step)
        return "succeeded"
    except LeaseLost:
        telemetry.LEASES_LOST.inc()
        log.warning("job %s: lease lost (another attempt owns the job); stopping this one", job_id)
        return "lease_lost"
    except UploadsPending as exc:
        return _fail(services, claim, f"artifact store unreachable: {exc}")
    except DownloadError as exc:  # each mirror's network error (errno, TLS) stays in the log, not in the reason
        log.warning("job %s: dataset download failed: %s", job_id, exc)
        return _fail(services, claim, "could not download the dataset from its mirrors (the worker's log has the details)")
    except (DataError, ckpt.CheckpointError, ValueError) as exc:
        return _fail(services, claim, str(exc))
    except Exception as exc:  # a bug or an outage: record a readable reason, keep the traceback in the log
        if parallel.enabled:
            # Most likely another rank died and a collective broke: the claiming task ends the
            # attempt as a lost one, naming the rank that failed first (the launcher knows it).
            log.exception("job %s: rank 0 stops on %s", job_id, type(exc).__name__)
            raise
        log.exception("job %s failed", job_id)
        # The exception's text may name internal hosts and errno (a database or store outage).
        return _fail(services, claim, f"internal error ({type(exc).__name__}); the worker's log has the details")
    finally:
        telemetry.idle()
        uploader.close()
        datasets.discard(job_id)


def _localise(services: Services, claim: Claim, spec: JobSpec, tenant: str, reporter: JobReporter) -> JobSpec:
    """The spec with its user data made local: an npz copied, an image folder decoded into the
    data cache (its summary recorded on the job for the job view)."""
    if spec.dataset.name != "image_folder":
        return datasets.localise(spec, services.settings, claim.job_id)
    with reporter.long_operation("prepare dataset"):  # a first decode of a large archive takes minutes
        localised, summary = datasets.localise_folder(spec, services.settings, claim.job_id, tenant=tenant,
                                                      db=services.db, storage=services.storage)
    lifecycle.record_dataset_summary(services.db, claim.job_id, claim.token, summary)
    log.info("job %s: image_folder with %d images (%d skipped, cache %s)", claim.job_id, summary["images"],
             summary["skipped"], summary["cache"])
    return localised


def follow_claimed(parallel: Parallel, data_config: DataConfig) -> str:
    """A rank other than 0 of a data-parallel job: trains its slice, talks to nobody but the
    other ranks; the spec, the checkpoint to resume from and every decision come from rank 0
    (``data_config``: from the settings of the environment the ranks inherit)."""
    try:
        spec = parallel.share(None)
        trainer = None
        while True:
            resume_bytes, lr_scale = parallel.share(None)
            trainer = _trainer(spec, data_config, Callbacks(), resume_bytes, lr_scale, trainer, parallel)
            try:
                result = trainer.run()
                return "stopped" if result.stopped else "trained"
            except NonFiniteLossError:
                if parallel.share(None) < 0:
                    return "diverged"
    except distributed.RankZeroError as exc:  # rank 0 failed the job and recorded why
        log.info("rank %d: rank 0 ended the job (%s)", parallel.rank, exc)
        return "rank0_failed"


def _trainer(spec: JobSpec, data_config: DataConfig, callbacks: Callbacks, resume_bytes: bytes | None,
             lr_scale: float, previous: Trainer | None, parallel: Parallel) -> Trainer:
    resume = ckpt.load(resume_bytes, expect=ckpt.TRAINING_FORMAT) if resume_bytes is not None else None
    device = None
    if parallel.enabled:
        device = str(distributed.device_for(spec.device, parallel.local_rank))
    trainer = Trainer(spec, data_config=data_config, callbacks=callbacks, resume_from=resume,
                      dataset=previous.data if previous is not None else None, device=device, parallel=parallel)
    trainer.lr_scale = lr_scale
    return trainer


def _upload_final(services: Services, job_id: str, spec: JobSpec, trainer: Trainer, reporter: JobReporter,
                  step: int) -> None:
    reporter.upload("final_model", step, final_key(job_id), ckpt.to_bytes(trainer.generator_file()),
                    "application/octet-stream")
    reporter.upload("loss_plot", step, loss_plot_key(job_id),
                    loss_plot(services, job_id, f"{spec.name}: losses and D accuracy"), "image/png")
    reporter.upload("interpolation", step, interpolation_key(job_id),
                    interpolation_png(trainer.generator_file()), "image/png")


def _stopped(services: Services, claim: Claim, spec: JobSpec, trainer: Trainer, reporter: JobReporter,
             uploader: Uploader, step: int) -> str:
    """The loop stopped early: save a checkpoint, then cancel, hand back or end the job."""
    settings, job_id, reason = services.settings, claim.job_id, reporter.stop_reason
    reporter.on_checkpoint(step, trainer.checkpoint())
    keep = reason == "max_runtime" and spec.on_max_runtime == "keep"
    if keep:
        _upload_final(services, job_id, spec, trainer, reporter, step)
    patience = settings.stop_grace_seconds if reason == "drain" else settings.upload_patience_seconds
    try:
        with reporter.long_operation("drain"):
            uploader.drain(patience)
    except UploadsPending:
        if reason != "drain":
            raise
        # The worker must go now and the store is away: keep the lease, let it expire; the
        # reconciler requeues the job from its last stored checkpoint.
        log.warning("job %s: the store did not take the drain checkpoint in time; leaving the job to its lease",
                    job_id, extra={"job_id": job_id})
        return "abandoned"
    reporter.beat()  # the final training time
    runtime = f"{reporter.runtime():.1f} s of training"
    if reason == "drain":
        lifecycle.release(services.db, job_id, claim.token, f"worker stopping: checkpoint at step {step}, back in the queue",
                          step=step)
        with services.db.read() as session:
            queue_name = lifecycle.get(session, job_id).queue
        services.queue.enqueue(job_id, queue_name, PRIORITY_RESUME)
        return "released"
    if reason == "max_runtime":
        if keep:
            lifecycle.finish(services.db, job_id, claim.token, "succeeded",
                             f"stopped at max_runtime_seconds ({runtime}) after {step} steps; generator kept", step=step)
            return "succeeded"
        return _fail(services, claim, f"max_runtime_exceeded: stopped at step {step} after {runtime}", step=step)
    if reporter.health_stop is not None:
        message = f"stopped at step {step} by GAN health: {reporter.health_stop}"
    else:
        message = f"cancelled at step {step}"
    lifecycle.finish(services.db, job_id, claim.token, "cancelled", message, step=step)
    return "cancelled"


def _diverged(services: Services, claim: Claim, reporter: JobReporter, uploader: Uploader,
              exc: NonFiniteLossError) -> str:
    """A non-finite loss stopped the job (GAN health): its weights are not finite, so no
    checkpoint; the earlier ones land, then the job ends cancelled, stop reason ``diverged``."""
    with reporter.long_operation("drain"):
        uploader.drain(services.settings.upload_patience_seconds)
    reporter.beat()  # the final training time
    lifecycle.finish(services.db, claim.job_id, claim.token, "cancelled",
                     f"stopped at step {exc.step} by GAN health: diverged (non-finite loss)", step=exc.step)
    return "cancelled"


def _fail(services: Services, claim: Claim, reason: str, step: int | None = None) -> str:
    log.warning("job %s failed: %s", claim.job_id, reason)
    try:
        lifecycle.finish(services.db, claim.job_id, claim.token, "failed", reason, step=step)
    except LeaseLost:
        return "lease_lost"
    return "failed"
