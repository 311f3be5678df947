"""Real worker processes under faults: kill -9, two workers handed one job, SIGTERM drains, a
Redis restarted empty, an S3 server that goes away. Every job must end ``succeeded`` with all its
steps, metrics and artifacts, each listed once. Bounded in time: small ring8 jobs, short leases."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from gan_core.spec import JobSpec
from ganforge.jobs import lifecycle
from ganforge.jobs.models import Artifact, Job, JobEvent, Metric
from ganforge.jobs.services import Services
from ganforge.jobs.settings import Settings

from tests.integration.conftest import _start_worker

STEPS, LOG, SAMPLE, CKPT = 1500, 50, 250, 250


def spec(**extra) -> JobSpec:
    doc = {"name": "ring-chaos", "dataset": {"name": "ring8"},
           "model": {"latent_dim": 2, "hidden_g": [64, 64], "hidden_d": [64, 64]},
           "train": {"steps": STEPS, "batch_size": 64}, "log_every": LOG, "sample_every": SAMPLE,
           "checkpoint_every": CKPT, "device": "cpu", "eval": {"n_samples": 500}, "max_attempts": 10,
           "keep_checkpoints": 100}
    doc.update(extra)
    return JobSpec.model_validate(doc)


@pytest.fixture()
def chaos_env(service_env):
    return {**service_env, "GANFORGE_LEASE_SECONDS": "4", "GANFORGE_RECONCILE_SECONDS": "1",
            "GANFORGE_REQUEUE_AFTER_SECONDS": "3", "GANFORGE_STOP_GRACE_SECONDS": "20"}


@pytest.fixture()
def workers(tmp_path):
    """start(env, name) -> Popen; all stopped (SIGKILL if needed) at teardown, logs printed on failure."""
    started: list[tuple[str, subprocess.Popen]] = []

    def start(env, name):
        proc = _start_worker(env, tmp_path, name)
        started.append((name, proc))
        return proc

    yield start
    for name, proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for name, _ in started[-3:]:
        print(f"---- {name} ----\n" + (tmp_path / f"{name}.log").read_text(errors="replace")[-2500:])


def services_for(env) -> Services:
    return Services.from_settings(Settings.from_env(env))


def submit(services, job_spec) -> str:
    with services.db.session() as session:
        job_id = lifecycle.submit(session, job_spec).id
    services.queue.enqueue(job_id, "cpu")
    return job_id


def row(services, job_id) -> Job:
    with services.db.session() as session:
        return lifecycle.get(session, job_id)


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_done(services, job_ids, timeout=240):
    wait_until(lambda: all(row(services, j).status in ("succeeded", "failed", "cancelled") for j in job_ids),
               timeout, f"jobs {job_ids} to finish")


def assert_complete(services, job_id, steps=STEPS, extra_checkpoints=()):
    """Succeeded, every step trained once: metrics without gap or duplicate, each artifact once
    and in the store."""
    job = row(services, job_id)
    assert job.status == "succeeded", (job.status, job.error)
    assert job.progress_step == steps
    with services.db.read() as session:
        logged = list(session.scalars(select(Metric.step).where(Metric.job_id == job_id, Metric.name == "loss_d")
                                      .order_by(Metric.step)))
        arts = list(session.scalars(select(Artifact).where(Artifact.job_id == job_id)))
    assert logged == list(range(LOG, steps + 1, LOG))
    grids = sorted(a.step for a in arts if a.kind == "sample_grid")
    assert grids == list(range(SAMPLE, steps + 1, SAMPLE))
    assert sorted(a.step for a in arts if a.kind == "checkpoint") == sorted(
        [*range(CKPT, steps + 1, CKPT), *extra_checkpoints])
    assert [a.kind for a in arts].count("final_model") == 1
    for artifact in arts:
        assert len(services.storage.get(artifact.key)) == artifact.bytes
    return job


def runs_overlap(services, job_id) -> bool:
    """Whether two attempts of the job trained at the same time: each claim event must come
    after the previous attempt ended (its requeue, release or lease expiry event)."""
    with services.db.read() as session:
        events = session.execute(select(JobEvent.from_status, JobEvent.to_status).where(JobEvent.job_id == job_id)
                                 .order_by(JobEvent.id)).all()
    running = False
    for before, after in events:
        if after == "running" and before != "running":
            if running:
                return True
            running = True
        elif before == "running" and after != "running":
            running = False
    return False


def test_kill_9_mid_training_again_and_again_resumes_from_checkpoints(chaos_env, workers):
    services = services_for(chaos_env)
    job_id = submit(services, spec())
    for n, at_step in enumerate((300, 700, 1100)):
        proc = workers(chaos_env, f"k{n}")
        wait_until(lambda: row(services, job_id).progress_step >= at_step, 120, f"step {at_step}")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    workers(chaos_env, "k-last")
    wait_done(services, [job_id])
    job = assert_complete(services, job_id)
    assert job.attempt == 4 and len(job.attempt_errors) == 3
    assert not runs_overlap(services, job_id)


def test_two_workers_with_kills_across_several_jobs(chaos_env, workers):
    services = services_for(chaos_env)
    job_ids = [submit(services, spec(train={"steps": 750, "batch_size": 64, "seed": n})) for n in range(4)]
    a, b = workers(chaos_env, "a0"), workers(chaos_env, "b0")
    for n in range(1, 4):  # kill a worker while it trains, start a fresh one
        wait_until(lambda: any(row(services, j).status == "running" and row(services, j).progress_step >= 100
                               for j in job_ids), 120, "a job in training")
        victim = a if n % 2 else b
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        if n % 2:
            a = workers(chaos_env, f"a{n}")
        else:
            b = workers(chaos_env, f"b{n}")
    wait_done(services, job_ids, timeout=300)
    for job_id in job_ids:
        assert_complete(services, job_id, steps=750)
        assert not runs_overlap(services, job_id)


def test_two_workers_handed_the_same_job_train_it_once(chaos_env, workers):
    services = services_for(chaos_env)
    workers(chaos_env, "d1"), workers(chaos_env, "d2")
    time.sleep(3)  # both idle and consuming
    job_id = submit(services, spec(train={"steps": 500, "batch_size": 64}))
    services.queue.enqueue(job_id, "cpu")  # the duplicate
    wait_done(services, [job_id])
    job = assert_complete(services, job_id, steps=500)
    assert job.attempt == 1, job.attempt_errors


def test_sigterm_drains_the_running_job_to_another_worker(chaos_env, workers):
    services = services_for(chaos_env)
    job_id = submit(services, spec())
    first = workers(chaos_env, "t1")
    wait_until(lambda: row(services, job_id).progress_step >= 300, 120, "step 300")
    first.send_signal(signal.SIGTERM)
    asked = time.monotonic()
    wait_until(lambda: row(services, job_id).status == "queued", 20, "the job back in the queue")
    requeued_in = time.monotonic() - asked
    first.wait(20)
    assert requeued_in < 20
    stopped_at = row(services, job_id).progress_step
    workers(chaos_env, "t2")
    wait_done(services, [job_id])
    job = assert_complete(services, job_id, extra_checkpoints=[stopped_at] if stopped_at % CKPT else [])
    assert job.attempt == 2 and job.attempt_errors is None  # a drain is not a lost attempt
    with services.db.read() as session:
        messages = list(session.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id)))
    assert f"worker stopping: checkpoint at step {stopped_at}, back in the queue" in messages


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis(port: int, tmp_path: Path) -> subprocess.Popen:
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    wait_until(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, 10, "redis to listen")
    return proc


def test_redis_restarted_empty_loses_no_job(chaos_env, workers, tmp_path):
    port = _free_port()
    redis = _redis(port, tmp_path)
    env = {**chaos_env, "GANFORGE_BROKER_URL": f"redis://127.0.0.1:{port}/0"}
    services = services_for(env)
    try:
        job_ids = [submit(services, spec(train={"steps": 500, "batch_size": 64, "seed": n})) for n in range(3)]
        workers(env, "r1")
        wait_until(lambda: any(row(services, j).status == "running" for j in job_ids), 60, "a job running")
        (training,) = [j for j in job_ids if row(services, j).status == "running"]
        redis.kill()
        redis.wait()
        time.sleep(2)
        redis = _redis(port, tmp_path)  # empty: the queued jobs' messages are gone
        wait_done(services, job_ids, timeout=240)
        for job_id in job_ids:
            assert_complete(services, job_id, steps=500)
        assert row(services, training).attempt == 1  # the broker's loss did not stop the training
    finally:
        redis.kill()
        redis.wait()


def test_database_connections_cut_during_training_are_retried(chaos_env, workers):
    """PostgreSQL drops every connection of the job's database three times mid-training (as a
    restart or a failover would): the worker reconnects and the same attempt finishes."""
    import psycopg

    services = services_for(chaos_env)
    job_id = submit(services, spec())
    workers(chaos_env, "p1")
    db_name = chaos_env["GANFORGE_DATABASE_URL"].rsplit("/", 1)[1]
    cut = 0
    for at in (300, 700, 1100):
        wait_until(lambda: row(services, job_id).progress_step >= at, 120, f"step {at}")
        with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True) as admin:
            cut += len(admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                     "WHERE datname = %s AND pid <> pg_backend_pid()", (db_name,)).fetchall())
    wait_done(services, [job_id])
    job = assert_complete(services, job_id)
    assert cut >= 3 and job.attempt == 1


def test_an_s3_outage_delays_artifacts_and_loses_none(chaos_env, workers, s3_client, tmp_path):
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="outage")
    env = {**chaos_env, "AWS_ENDPOINT_URL": endpoint, "GANFORGE_STORAGE_URL": "s3://outage/p",
           "AWS_MAX_ATTEMPTS": "1", "AWS_RETRY_MODE": "standard"}
    services = services_for(env)
    try:
        job_id = submit(services, spec())
        workers(env, "s1")
        wait_until(lambda: row(services, job_id).progress_step >= 200, 120, "step 200")
        server.stop()  # moto keeps its objects in this process: they are there again after the restart
        time.sleep(8)
        assert row(services, job_id).status == "running"
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        wait_done(services, [job_id])
        assert_complete(services, job_id)
    finally:
        server.stop()


def test_a_requeued_job_goes_ahead_of_jobs_that_never_started(chaos_env, workers):
    """On Redis, a job handed back after its worker died is served before the queue's new jobs."""
    from ganforge.jobs.queue import PRIORITY_RESUME

    services = services_for(chaos_env)
    new = [submit(services, spec(train={"steps": 100, "batch_size": 64, "seed": n})) for n in range(3)]
    resumed = submit(services, spec(train={"steps": 100, "batch_size": 64, "seed": 9}))
    services.queue.enqueue(resumed, "cpu", PRIORITY_RESUME)  # as the reconciler sends it
    workers(chaos_env, "q1")
    wait_done(services, [*new, resumed])
    with services.db.read() as session:
        first = session.scalars(select(JobEvent.job_id).where(JobEvent.to_status == "running")
                                .order_by(JobEvent.id).limit(1)).one()
    assert first == resumed
