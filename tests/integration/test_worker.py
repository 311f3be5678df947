"""The real worker: a Celery worker process on Redis, PostgreSQL for jobs, moto for S3."""

from __future__ import annotations

import hashlib
import time
import pytest
from sqlalchemy import func, select

from gan_core.spec import JobSpec
from ganforge.jobs import job_logs, lifecycle
from ganforge.jobs.models import Artifact, Job, Metric
from ganforge.jobs.services import Services
from ganforge.jobs.settings import Settings

def ring_spec(steps=60, **extra) -> JobSpec:
    doc = {"name": "ring-e2e", "dataset": {"name": "ring8"},
           "model": {"latent_dim": 2, "hidden_g": [32, 32], "hidden_d": [32, 32]},
           "train": {"steps": steps, "batch_size": 32}, "log_every": 10, "sample_every": 20,
           "checkpoint_every": 30, "device": "cpu", "eval": {"n_samples": 500}}
    doc.update(extra)
    return JobSpec.model_validate(doc)


@pytest.fixture()
def services(service_env):
    svc = Services.from_settings(Settings.from_env(service_env))
    yield svc
    svc.db.dispose()


@pytest.fixture()
def worker(service_env, start_worker, tmp_path):
    proc = start_worker(service_env, tmp_path)
    yield proc
    print((tmp_path / "w1.log").read_text()[-3000:])


def submit(services, spec) -> str:
    with services.db.session() as session:
        job_id = lifecycle.submit(session, spec).id
    services.queue.enqueue(job_id, "cpu")  # after the commit
    return job_id


def wait_for(services, job_id, statuses, timeout=120.0) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with services.db.session() as session:
            job = session.get(Job, job_id)
            if job.status in statuses:
                return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} is {job.status} after {timeout}s, not {statuses}")


def test_job_runs_on_the_worker_and_uploads_everything(services, worker):
    job_id = submit(services, ring_spec())
    job = wait_for(services, job_id, ("succeeded", "failed"))
    assert job.status == "succeeded", job.error
    # the worker's lines for the job, stored in the artifact store (item 12)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with services.db.read() as session:
            lines = [line for chunk in job_logs.chunks(session, job_id)
                     for line in job_logs.decode(services.storage.get(chunk.key))]
        if any("claimed by" in line["message"] for line in lines):
            break
        time.sleep(0.2)
    assert [line["n"] for line in lines] == list(range(len(lines)))
    assert any(f"job {job_id} attempt 1 claimed by" in line["message"] for line in lines), lines
    assert job.attempt == 1 and job.progress_step == 60 and job.evaluation["n_samples"] == 500
    with services.db.session() as session:
        artifacts = session.execute(select(Artifact).where(Artifact.job_id == job_id)).scalars().all()
        steps = session.execute(select(Metric.step).where(Metric.job_id == job_id, Metric.name == "loss_d").order_by(Metric.step)).scalars().all()
    kinds = sorted((a.kind, a.step) for a in artifacts)
    assert [s for k, s in kinds if k == "sample_grid"] == [20, 40, 60]
    assert [s for k, s in kinds if k == "checkpoint"] == [30, 60]
    assert ("final_model", 60) in kinds and ("loss_plot", 60) in kinds and ("evaluation", 60) in kinds
    assert ("interpolation", 60) in kinds  # the final interpolation strip, uploaded like the loss plot
    assert steps == [10, 20, 30, 40, 50, 60]
    for artifact in artifacts:  # every object is in the store, as recorded
        data = services.storage.get(artifact.key)
        assert len(data) == artifact.bytes and hashlib.sha256(data).hexdigest() == artifact.sha256


def test_a_duplicate_delivery_runs_the_job_once(services, worker):
    job_id = submit(services, ring_spec(steps=40))
    services.queue.enqueue(job_id, "cpu")  # the same id again, as a broker redelivery would
    job = wait_for(services, job_id, ("succeeded", "failed"))
    assert job.status == "succeeded" and job.attempt == 1
    with services.db.session() as session:
        claims = [e for e in session.get(Job, job_id).events if e.to_status == "running"]
    assert len(claims) == 1


def test_cancel_running_job_saves_a_checkpoint(services, worker):
    job_id = submit(services, ring_spec(steps=200_000, checkpoint_every=100_000, sample_every=100_000))
    wait_for(services, job_id, ("running",))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with services.db.session() as session:
            if session.get(Job, job_id).progress_step >= 20:
                break
        time.sleep(0.2)
    asked = time.monotonic()
    lifecycle.request_cancel(services.db, job_id)
    job = wait_for(services, job_id, ("cancelled", "failed", "succeeded"), timeout=30)
    assert job.status == "cancelled", job.error
    assert time.monotonic() - asked < 10
    with services.db.session() as session:
        ckpts = session.execute(select(Artifact.step).where(Artifact.job_id == job_id, Artifact.kind == "checkpoint")).scalars().all()
    assert ckpts and ckpts[-1] == job.progress_step > 0


def test_cancelled_queued_job_never_runs(services, service_env, start_worker, stop_worker, tmp_path):
    job_id = submit(services, ring_spec())
    lifecycle.request_cancel(services.db, job_id)  # before any worker exists
    proc = start_worker(service_env, tmp_path, "w2")
    try:
        second = submit(services, ring_spec(steps=20))  # a later job proves the worker consumed the queue
        wait_for(services, second, ("succeeded",))
    finally:
        stop_worker(proc)
    with services.db.session() as session:
        job = session.get(Job, job_id)
        assert job.status == "cancelled" and job.attempt == 0
        assert session.scalar(select(func.count()).select_from(Artifact).where(Artifact.job_id == job_id)) == 0


def test_a_failing_job_records_a_readable_reason(services, worker):
    spec = ring_spec(dataset={"name": "npz", "path": "/nonexistent/data.npz"})
    spec = JobSpec.model_validate({**spec.model_dump(mode="json"), "model": {"latent_dim": 8, "hidden_g": [8], "hidden_d": [8]}})
    job_id = submit(services, spec)
    job = wait_for(services, job_id, ("failed", "succeeded"))
    # In production the worker refuses a server path itself (the API would have refused it too).
    assert job.status == "failed" and "server paths are not accepted" in job.error and "Traceback" not in job.error
