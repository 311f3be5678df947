"""Reliability of one attempt, in process: divergence rollback, max runtime, drain on stop,
retention, storage outages, and the reconciler's passes. (Real worker processes being killed,
drained and cut off from Redis and S3 are in test_chaos.py.)"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
import torch
from sqlalchemy import select, update

import gan_core.trainer as trainer_module
from gan_core.spec import JobSpec
from ganforge.jobs import lifecycle
from ganforge.jobs.db import Database
from ganforge.jobs.models import Artifact, Job, JobEvent, Metric, utcnow
from ganforge.jobs.queue import PRIORITY_NEW, PRIORITY_RESUME, RecordingEnqueuer
from ganforge.jobs.services import Services
from ganforge.jobs.settings import Settings
from ganforge.jobs.storage import LocalStorage, StorageError
from ganforge.jobs import reconciler
from tests.integration.test_worker import ring_spec as worker_ring_spec
from ganforge.worker.runner import run_job


def ring_spec(steps=120, **extra) -> JobSpec:
    """test_worker's small ring8 job, 120 steps unless said."""
    return worker_ring_spec(steps, **extra)


@pytest.fixture()
def services(migrated_sqlite, tmp_path):
    settings = Settings(mode="embedded", data_dir=tmp_path / "home", database_url=migrated_sqlite,
                        broker_url="memory://", storage_url=f"file://{tmp_path / 'store'}", lease_seconds=30,
                        upload_patience_seconds=60, log_json=False)
    svc = Services(settings, Database(migrated_sqlite), LocalStorage(tmp_path / "store"), RecordingEnqueuer())
    yield svc
    svc.db.dispose()


def submit(services, spec) -> str:
    with services.db.session() as session:
        return lifecycle.submit(session, spec).id


def job(services, job_id) -> Job:
    with services.db.session() as session:
        return lifecycle.get(session, job_id)


def steps_of(services, job_id, name="loss_d") -> list[int]:
    with services.db.read() as session:
        return list(session.scalars(select(Metric.step).where(Metric.job_id == job_id, Metric.name == name)
                                    .order_by(Metric.step)))


def artifacts(services, job_id, kind) -> list[Artifact]:
    with services.db.read() as session:
        return list(session.scalars(select(Artifact).where(Artifact.job_id == job_id, Artifact.kind == kind)
                                    .order_by(Artifact.step)))


def run_then_drain(services, job_id, worker_id, at_step, before_drain=None) -> str | None:
    """run_job on a thread until the job reaches ``at_step``, then drain the worker as SIGTERM
    does (``before_drain`` runs just before); returns what run_job returned."""
    drain = threading.Event()
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.setdefault("r", run_job(services, job_id, worker_id, drain=drain)))
    thread.start()
    deadline = time.monotonic() + 60
    while job(services, job_id).progress_step < at_step and time.monotonic() < deadline:
        time.sleep(0.02)
    if before_drain is not None:
        before_drain()
    drain.set()
    thread.join(60)
    return outcome.get("r")


def poison_losses(monkeypatch, at_steps: set[int], times: int):
    """Make the loss non-finite at the given steps, ``times`` times in all (as a divergence)."""
    real = trainer_module.train_step
    calls = {"step": 0, "left": times}

    def step(state, data, noise, spec, *args, **kwargs):
        stats = real(state, data, noise, spec, *args, **kwargs)
        if state.step + 1 in at_steps and calls["left"] > 0:
            calls["left"] -= 1
            stats["loss_d"] = torch.tensor(float("nan"))
        return stats

    monkeypatch.setattr(trainer_module, "train_step", step)


# ---- divergence ------------------------------------------------------------------------------------

def test_a_divergence_rolls_back_to_the_last_checkpoint_with_halved_learning_rates(services, monkeypatch):
    poison_losses(monkeypatch, {75}, times=1)
    job_id = submit(services, ring_spec(train={"steps": 120, "batch_size": 32, "lr_d": 4e-4, "lr_g": 2e-4}))
    assert run_job(services, job_id, "w1") == "succeeded"
    row = job(services, job_id)
    assert (row.status, row.divergences, row.progress_step, row.attempt) == ("succeeded", 1, 120, 1)
    assert steps_of(services, job_id) == list(range(10, 121, 10))  # no gap, no duplicate
    with services.db.read() as session:
        lrs = dict(session.execute(select(Metric.step, Metric.value).where(Metric.job_id == job_id,
                                                                          Metric.name == "lr_d")).all())
        messages = list(session.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id)))
    assert lrs[60] == pytest.approx(4e-4) and lrs[70] == pytest.approx(2e-4) and lrs[120] == pytest.approx(2e-4)
    assert "non-finite loss at step 75: rolled back to step 60, learning rates halved" in messages
    assert [a.step for a in artifacts(services, job_id, "sample_grid")] == list(range(20, 121, 20))


def test_a_second_divergence_fails_the_job_naming_the_step(services, monkeypatch):
    poison_losses(monkeypatch, {45}, times=2)  # blows up again after the rollback to step 30
    job_id = submit(services, ring_spec())
    assert run_job(services, job_id, "w1") == "failed"
    row = job(services, job_id)
    assert (row.status, row.error, row.divergences) == ("failed", "diverged at step 45", 1)


# ---- stopping ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("outcome", ["fail", "keep"])
def test_max_runtime_stops_saves_and_ends_as_asked(services, outcome):
    spec = ring_spec(steps=1_000_000, checkpoint_every=500_000, sample_every=500_000, log_every=50,
                     max_runtime_seconds=1.5, on_max_runtime=outcome)
    job_id = submit(services, spec)
    started = time.monotonic()
    result = run_job(services, job_id, "w1")
    assert time.monotonic() - started < 30
    row = job(services, job_id)
    (checkpoint,) = artifacts(services, job_id, "checkpoint")
    assert checkpoint.step == row.progress_step > 0 and row.runtime_seconds >= 1.5
    if outcome == "fail":
        assert result == "failed" and row.error.startswith("max_runtime_exceeded: stopped at step ")
        assert artifacts(services, job_id, "final_model") == []
    else:
        assert result == "succeeded" and row.error is None
        assert [a.step for a in artifacts(services, job_id, "final_model")] == [row.progress_step]


def test_runtime_counts_over_attempts(services):
    """A job resumed after 1.4 s of an earlier attempt has only the rest of its budget."""
    job_id = submit(services, ring_spec(steps=1_000_000, checkpoint_every=500_000, sample_every=500_000,
                                        log_every=50, max_runtime_seconds=2.0))
    with services.db.session() as session:
        session.execute(update(Job).where(Job.id == job_id).values(runtime_seconds=1.4))
    started = time.monotonic()
    assert run_job(services, job_id, "w1") == "failed"
    assert time.monotonic() - started < 1.6 + 5  # 0.6 s of training, plus start-up and the checkpoint


def test_a_drained_worker_checkpoints_releases_and_requeues_and_the_job_resumes_exactly(services):
    spec = ring_spec(steps=400, checkpoint_every=100, sample_every=50, log_every=10)
    job_id = submit(services, spec)
    result = run_then_drain(services, job_id, "w1", at_step=120)
    row = job(services, job_id)
    assert result == "released" and row.status == "queued" and row.lease_token is None
    stopped_at = row.progress_step
    assert 120 <= stopped_at < 400
    assert artifacts(services, job_id, "checkpoint")[-1].step == stopped_at
    assert services.queue.sent == [(job_id, "cpu")]  # back in the broker

    assert run_job(services, job_id, "w2") == "succeeded"
    row = job(services, job_id)
    assert (row.status, row.attempt, row.progress_step, row.attempt_errors) == ("succeeded", 2, 400, None)
    assert steps_of(services, job_id) == list(range(10, 401, 10))
    assert [a.step for a in artifacts(services, job_id, "sample_grid")] == list(range(50, 401, 50))


def test_resume_after_a_drain_gives_the_same_weights_as_one_run(services, tmp_path):
    """Stopped and resumed through the service, the final generator is bit for bit the one an
    uninterrupted run makes (CPU)."""
    from gan_core import checkpoint as ckpt

    spec = ring_spec(steps=200, checkpoint_every=1000, sample_every=1000, log_every=10)
    straight = submit(services, spec)
    assert run_job(services, straight, "w0") == "succeeded"

    job_id = submit(services, spec)
    run_then_drain(services, job_id, "w1", at_step=50)
    assert 50 <= job(services, job_id).progress_step < 200
    assert run_job(services, job_id, "w2") == "succeeded"

    def weights(jid):
        (final,) = artifacts(services, jid, "final_model")
        return ckpt.load(services.storage.get(final.key), expect=ckpt.GENERATOR_FORMAT)["generator"]

    a, b = weights(straight), weights(job_id)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---- storage outages and retention -----------------------------------------------------------------

class FlakyStorage(LocalStorage):
    """Refuses every upload while ``down`` is set, like an S3 endpoint that went away."""

    def __init__(self, root):
        super().__init__(root)
        self.down = threading.Event()
        self.refused = 0

    def put(self, key, data, content_type):
        if self.down.is_set():
            self.refused += 1
            raise StorageError(f"upload of {key} failed: connection refused")
        return super().put(key, data, content_type)

    def get(self, key):
        if self.down.is_set():
            self.refused += 1
            raise StorageError(f"download of {key} failed: connection refused")
        return super().get(key)


def test_a_storage_outage_delays_artifacts_but_loses_none(services, tmp_path):
    store = FlakyStorage(tmp_path / "flaky")
    services.storage = store
    store.down.set()
    threading.Timer(2.5, store.down.clear).start()
    job_id = submit(services, ring_spec(steps=90))
    assert run_job(services, job_id, "w1") == "succeeded"
    assert store.refused > 0
    assert [a.step for a in artifacts(services, job_id, "sample_grid")] == [20, 40, 60, 80, 90]
    for kind in ("checkpoint", "sample_grid", "final_model", "loss_plot", "evaluation"):
        for artifact in artifacts(services, job_id, kind):
            assert len(store.get(artifact.key)) == artifact.bytes
    assert not any((services.settings.data_dir / "spool" / job_id).rglob("*-*")), "spool left behind"


def test_a_job_resuming_during_a_storage_outage_waits_for_its_checkpoint(services, tmp_path):
    store = FlakyStorage(tmp_path / "flaky")
    services.storage = store
    job_id = submit(services, ring_spec(steps=200, checkpoint_every=50, sample_every=100))
    run_then_drain(services, job_id, "w1", at_step=60)
    assert job(services, job_id).status == "queued"
    store.down.set()
    refused = store.refused
    threading.Timer(2.0, store.down.clear).start()
    assert run_job(services, job_id, "w2") == "succeeded"  # not "failed: cannot download"
    assert store.refused > refused and job(services, job_id).progress_step == 200


def test_a_drain_while_the_store_is_down_leaves_the_job_to_its_lease(services, tmp_path):
    """SIGTERM with the store away: the drain checkpoint cannot land within the grace period, so
    the worker leaves without failing the job; the lease runs out and the job is requeued."""
    store = FlakyStorage(tmp_path / "flaky")
    services.storage = store
    services.settings = services.settings.with_(stop_grace_seconds=1, lease_seconds=2)
    job_id = submit(services, ring_spec(steps=100_000, checkpoint_every=50_000, sample_every=50_000, log_every=50))
    result = run_then_drain(services, job_id, "host:1", at_step=100, before_drain=store.down.set)
    assert result == "abandoned" and job(services, job_id).status == "running"
    time.sleep(2.5)  # the lease runs out
    assert reconciler.reconcile_once(services, host="elsewhere")["expired_leases"] == 1
    row = job(services, job_id)
    assert row.status == "queued" and row.error is None and len(row.attempt_errors) == 1


def test_retention_keeps_the_latest_k_and_the_best_evaluated_checkpoint(services, monkeypatch):
    scores = {40: 3.0, 80: 0.5, 120: 2.0, 160: 4.0, 200: 5.0}  # step 80 is the best evaluation
    monkeypatch.setattr("ganforge.worker.runner.quality_score", lambda results: scores.get(results["_step"]))
    real_evaluate = trainer_module.Trainer.evaluate
    monkeypatch.setattr(trainer_module.Trainer, "evaluate",
                        lambda self, n=None: {**real_evaluate(self, n), "_step": self.state.step})
    spec = ring_spec(steps=200, checkpoint_every=20, eval_every=40, sample_every=100, keep_checkpoints=2)
    job_id = submit(services, spec)
    assert run_job(services, job_id, "w1") == "succeeded"
    kept = [a.step for a in artifacts(services, job_id, "checkpoint")]
    assert kept == [80, 180, 200]
    stored = sorted(p.name for p in (services.settings.data_dir.parent / "store" / "jobs" / job_id / "checkpoints").iterdir())
    assert stored == ["step-000080.pt", "step-000180.pt", "step-000200.pt"]


# ---- the reconciler --------------------------------------------------------------------------------

def test_the_reconciler_requeues_expired_leases_and_fails_after_max_attempts(services):
    job_id = submit(services, ring_spec(max_attempts=2))
    for attempt in (1, 2):
        claim = lifecycle.claim(services.db, job_id, f"host-x:{100 + attempt}", 30)
        assert claim.attempt == attempt
        with services.db.session() as session:
            session.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
        counts = reconciler.reconcile_once(services, host="elsewhere")
        assert counts["expired_leases"] == (1 if attempt == 1 else 0)
    row = job(services, job_id)
    assert row.status == "failed" and row.error.startswith("gave up after 2 lost attempts: attempt 1: worker host-x:101")
    assert "attempt 2: worker host-x:102" in row.error
    assert services.queue.sent == [(job_id, "cpu")]  # requeued once, then ended
    assert services.queue.priorities == [PRIORITY_RESUME]  # ahead of jobs that never started


def test_the_reconciler_expires_dead_workers_of_its_host_at_once(services):
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead_job, live_job = submit(services, ring_spec()), submit(services, ring_spec())
    import os
    lifecycle.claim(services.db, dead_job, f"this-host:{gone.pid}", 600)
    lifecycle.claim(services.db, live_job, f"this-host:{os.getpid()}", 600)
    counts = reconciler.reconcile_once(services, host="this-host")
    assert counts == {"dead_local_workers": 1, "expired_leases": 1, "resent": 0, "sweeps": 0}
    assert job(services, dead_job).status == "queued" and job(services, live_job).status == "running"
    assert services.queue.sent == [(dead_job, "cpu")]


def test_the_reconciler_resends_queued_jobs_whose_message_was_lost(services):
    class EmptyBroker(RecordingEnqueuer):
        def depth(self, queue):
            return 0  # as after a Redis restart

    services.queue = EmptyBroker()
    services.settings = services.settings.with_(requeue_after_seconds=5)
    fresh, stale = submit(services, ring_spec()), submit(services, ring_spec())
    with services.db.session() as session:
        session.execute(update(Job).where(Job.id == stale).values(enqueued_at=utcnow() - timedelta(seconds=60)))
    assert reconciler.reconcile_once(services)["resent"] == 1
    assert services.queue.sent == [(stale, "cpu")] and services.queue.priorities == [PRIORITY_NEW]
    assert reconciler.reconcile_once(services)["resent"] == 0  # sent just now: not again at once
    assert job(services, fresh).enqueued_at is not None


def test_the_reconciler_leaves_waiting_jobs_alone_while_the_broker_holds_their_messages(services):
    services.settings = services.settings.with_(requeue_after_seconds=5)
    waiting = [submit(services, ring_spec()) for _ in range(3)]
    for job_id in waiting:
        services.queue.enqueue(job_id, "cpu")
    with services.db.session() as session:
        session.execute(update(Job).values(enqueued_at=utcnow() - timedelta(seconds=60)))
    assert reconciler.reconcile_once(services)["resent"] == 0
    assert len(services.queue.sent) == 3


def test_the_worker_validates_a_spec_with_the_deployments_limits(services):
    """A job the API accepted under raised limits (GANFORGE_MAX_STEPS above the spec's built-in
    bound) trains on the worker, which validates with the same settings."""
    raised = services.settings.with_(max_steps=5_000_000)
    svc = Services(raised, services.db, services.storage, services.queue)
    doc = ring_spec().model_dump(mode="json")
    doc["train"]["steps"] = 2_000_000
    doc.update(max_runtime_seconds=1.0, on_max_runtime="keep")
    spec = lifecycle.load_spec(doc, raised)
    job_id = submit(svc, spec)
    assert run_job(svc, job_id, "w1") == "succeeded"
    with svc.db.read() as session:
        last = session.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id).order_by(JobEvent.id)).all()[-1]
    assert "stopped at max_runtime_seconds" in last


def test_a_stored_spec_the_current_limits_refuse_fails_the_job_with_the_field(services):
    doc = ring_spec().model_dump(mode="json")
    doc["train"]["steps"] = 2_000_000
    job_id = submit(services, lifecycle.load_spec(doc, services.settings.with_(max_steps=5_000_000)))
    assert run_job(services, job_id, "w1") == "failed"  # the limit is back at its default here
    assert "train.steps" in job(services, job_id).error and "no longer valid" in job(services, job_id).error
