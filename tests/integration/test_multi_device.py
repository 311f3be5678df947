"""A job on two devices through the real service: a `ganforge worker --devices 2` process on Redis,
PostgreSQL and moto S3 claims it and starts two gloo ranks through torch's launcher."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from gan_core import checkpoint as ckpt
from gan_core.launch import descendants
from gan_core.spec import JobSpec
from ganforge.jobs import lifecycle
from ganforge.jobs.models import Artifact, Job, Metric
from tests.integration.test_worker import services  # noqa: F401  (the fixture)

pytestmark = pytest.mark.slow


def ring_spec(steps=200, devices=2, **extra) -> JobSpec:
    doc = {"name": "ring-x2", "dataset": {"name": "ring8"},
           "model": {"latent_dim": 2, "hidden_g": [32, 32], "hidden_d": [32, 32]},
           "train": {"steps": steps, "batch_size": 64}, "log_every": 10, "sample_every": 50,
           "checkpoint_every": 50, "device": "cpu", "eval": {"n_samples": 500},
           "resources": {"devices": devices}}
    doc.update(extra)
    return JobSpec.model_validate(doc)


def submit(services, spec) -> str:
    with services.db.session() as session:
        job = lifecycle.submit(session, spec)
        job_id, queue = job.id, job.queue
    services.queue.enqueue(job_id, queue)
    return job_id


def wait_for(services, job_id, predicate, timeout=180.0) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with services.db.session() as session:
            job = session.get(Job, job_id)
            if predicate(job):
                return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} is {job.status} at step {job.progress_step} after {timeout}s")


def wait_for_log(services, job_id: str, worker_log: Path, timeout: float = 60.0) -> Artifact:
    """The attempt's log artifact: the claiming task stores it once the launcher has exited, just
    after rank 0 ended the job."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with services.db.session() as session:
            found = session.scalars(select(Artifact).where(Artifact.job_id == job_id, Artifact.kind == "log")).first()
            if found is not None:
                session.expunge(found)
                return found
        time.sleep(0.2)
    raise AssertionError(f"no log artifact; worker log:\n{worker_log.read_text()[-3000:]}")


def rank_pids(worker_pid: int) -> dict[int, int]:
    ranks = {}
    for pid in descendants(worker_pid):
        try:
            env = dict(item.split(b"=", 1) for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in item)
        except OSError:
            continue
        if b"LOCAL_RANK" in env:
            ranks[int(env[b"RANK"])] = pid
    return ranks


def test_a_two_device_job_runs_through_the_launcher_and_reports_once(services, service_env, start_worker, tmp_path):
    worker = start_worker(service_env, tmp_path, "w2", devices=2)
    job_id = submit(services, ring_spec())
    assert lifecycle.queue_for(ring_spec()) == "cpu-x2"
    job = wait_for(services, job_id, lambda j: j.status in ("succeeded", "failed"))
    assert job.status == "succeeded", (job.error, (tmp_path / "w2.log").read_text()[-3000:])
    assert job.attempt == 1 and job.evaluation["modes"] >= 1
    log_artifact = wait_for_log(services, job_id, tmp_path / "w2.log")
    with services.db.session() as session:
        kinds = [a.kind for a in session.scalars(select(Artifact).where(Artifact.job_id == job_id))]
        steps = sorted(s for s, in session.execute(select(Metric.step).where(
            Metric.job_id == job_id, Metric.name == "images_per_s_per_device")))
    # Rank 0 alone reported: each metric step once, each artifact once.
    assert steps == list(range(10, 201, 10))
    assert kinds.count("sample_grid") == 4 and kinds.count("final_model") == 1 and kinds.count("evaluation") == 1
    assert kinds.count("checkpoint") == 3  # keep_checkpoints: the latest 3 of 4
    text = services.storage.get(log_artifact.key).decode()
    assert log_artifact.step == 1 and "[default0]" in text and "[default1]" in text  # lines tagged with the rank
    final = ckpt.load(services.storage.get(f"jobs/{job_id}/final/generator.pt"))
    assert final["step"] == 200
    assert worker.poll() is None


def test_a_dead_rank_ends_the_attempt_and_the_job_resumes_from_its_checkpoint(services, service_env, start_worker,
                                                                              tmp_path):
    worker = start_worker(service_env, tmp_path, "w2", devices=2)
    job_id = submit(services, ring_spec(steps=600, checkpoint_every=100, sample_every=1000))
    wait_for(services, job_id, lambda j: j.status == "running" and j.progress_step >= 150)
    ranks = rank_pids(worker.pid)
    assert sorted(ranks) == [0, 1]
    os.kill(ranks[1], signal.SIGKILL)
    t0 = time.monotonic()
    job = wait_for(services, job_id, lambda j: j.attempt == 2 or j.status != "running", timeout=60)
    assert time.monotonic() - t0 < 30, "the attempt was not ended promptly"
    assert job.attempt_errors and "rank 1" in job.attempt_errors[0], job.attempt_errors
    assert not any(Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
                   for pid in ranks.values())
    job = wait_for(services, job_id, lambda j: j.status in ("succeeded", "failed"), timeout=300)
    assert job.status == "succeeded", job.error
    with services.db.session() as session:
        events = [e.message for e in lifecycle.get(session, job_id).events]
    assert any("rank 1" in message for message in events)


def test_cancel_reaches_every_rank(services, service_env, start_worker, tmp_path):
    worker = start_worker(service_env, tmp_path, "w2", devices=2)
    job_id = submit(services, ring_spec(steps=100_000, checkpoint_every=100_000, sample_every=100_000))
    wait_for(services, job_id, lambda j: j.status == "running" and j.progress_step >= 20)
    ranks = rank_pids(worker.pid)
    lifecycle.request_cancel(services.db, job_id)
    t0 = time.monotonic()
    job = wait_for(services, job_id, lambda j: j.status == "cancelled", timeout=60)
    assert time.monotonic() - t0 < 15
    deadline = time.monotonic() + 20
    while any(Path(f"/proc/{pid}").exists() for pid in ranks.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(Path(f"/proc/{pid}").exists() for pid in ranks.values())
    with services.db.session() as session:
        saved = session.scalars(select(Artifact).where(Artifact.job_id == job_id, Artifact.kind == "checkpoint")).all()
    assert saved and saved[-1].step == job.progress_step


def test_a_draining_worker_hands_a_two_device_job_back_and_another_finishes_it(services, service_env, start_worker,
                                                                                stop_worker, tmp_path):
    first = start_worker(service_env, tmp_path, "w2", devices=2)
    job_id = submit(services, ring_spec(steps=1500, checkpoint_every=500, sample_every=500))
    wait_for(services, job_id, lambda j: j.status == "running" and j.progress_step >= 100)
    stop_worker(first)  # SIGTERM: warm shutdown drains the running job
    job = wait_for(services, job_id, lambda j: j.status != "running", timeout=60)
    assert job.status == "queued", job.error
    with services.db.session() as session:
        events = [e.message for e in lifecycle.get(session, job_id).events]
    assert any("back in the queue" in message for message in events)
    start_worker(service_env, tmp_path, "w3", devices=2)
    job = wait_for(services, job_id, lambda j: j.status in ("succeeded", "failed"), timeout=300)
    assert job.status == "succeeded" and job.attempt == 2 and not job.attempt_errors, job.error


def test_a_job_too_big_for_every_worker_says_why_it_waits(services, service_env, start_worker, tmp_path):
    start_worker(service_env, tmp_path, "w2", devices=2)
    job_id = submit(services, ring_spec(devices=4))
    deadline = time.monotonic() + 60
    reason = None
    while time.monotonic() < deadline:
        with services.db.session() as session:
            reason = lifecycle.waiting_reason(session, "cpu-x4", 60)
            served = lifecycle.waiting_reason(session, "cpu-x2", 60)
        if reason and served is None:
            break
        time.sleep(0.5)
    assert reason and "4 CPU devices" in reason and "has 2" in reason, reason
    with services.db.session() as session:
        assert session.get(Job, job_id).status == "queued"
