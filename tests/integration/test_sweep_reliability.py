"""Sweeps sharing the service with other work, and surviving the loss of the API and the broker.

First the engine alone (PostgreSQL and SQLite; a pool of workers played through ganforge.jobs.lifecycle,
served in the broker's order): two sweeps of two tenants and ordinary jobs of a third share three
workers; a sweep never holds more than its max_parallel trials queued or running (a pruned trial
still running until its next heartbeat included), and an ordinary job submitted mid-sweep starts
at the first free worker instead of behind the sweeps' remaining trials.

Then real worker processes over Redis and S3: the same fairness with two sweeps and another
tenant's jobs, and a sweep that outlives its API (killed, another started on the same database)
and a broker emptied mid-sweep (the reconciler re-sends the queued trials): no trial lost or
doubled, the count exact.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest
from sqlalchemy import func, select

from gan_core.spec import JobSpec
from ganforge.jobs import lifecycle, sweeps
from ganforge.jobs.models import Job, JobEvent, Sweep, SweepTrial
from tests.integration.test_sweep_runs import BASE, ROOT, engine_services, max_active, sweep_spec  # noqa: F401

TICKS_PER_JOB = 3  # a played job: an evaluation at steps 20 and 40 on its first two ticks, its end on the third


@dataclass
class Running:
    job_id: str
    token: str
    ticks: int = 0


def active_by_sweep(services) -> dict[str, int]:
    with services.db.read() as session:
        return dict(session.execute(select(Job.sweep_id, func.count()).where(
            Job.sweep_id.is_not(None), Job.status.in_(("queued", "running"))).group_by(Job.sweep_id)).all())


def submit_job(services, tenant: str, name: str) -> str:
    with services.db.session() as session:
        job = lifecycle.submit(session, JobSpec.model_validate({**BASE, "name": name}), tenant=tenant)
        job_id, queue = job.id, job.queue
    services.queue.enqueue(job_id, queue)
    return job_id


def test_two_sweeps_and_other_tenants_jobs_share_the_workers(engine_services):
    services = engine_services
    rng = random.Random(7)
    limits = {}
    a = sweeps.submit(services.db, sweep_spec(name="a", trials=6, max_parallel=2), "tenant-a").sweep_id
    b = sweeps.submit(services.db, sweep_spec(name="b", trials=4, max_parallel=1, early_stopping=None),
                      "tenant-b").sweep_id
    limits = {a: 2, b: 1}
    sweeps.advance(services, a)
    sweeps.advance(services, b)
    sent = services.queue.sent  # the broker: served in the order sent
    served = 0
    workers: list[Running | None] = [None, None, None]
    ordinary: dict[str, dict[str, int]] = {}  # job id -> {"submitted": tick, "started": tick}
    both_ran = False

    def check() -> None:
        for sweep_id, active in active_by_sweep(services).items():
            assert active <= limits[sweep_id], (sweep_id, active)

    for tick in range(200):
        if tick in (2, 5, 9):  # another tenant's jobs arrive while every worker is busy with trials
            ordinary[submit_job(services, "tenant-c", f"plain-{tick}")] = {"submitted": tick}
        # Busy workers train one tick: an evaluation (the pruner sees it), or the end.
        for slot, run in enumerate(workers):
            if run is None:
                continue
            run.ticks += 1
            if run.ticks < TICKS_PER_JOB:
                sweep_id = lifecycle.record_evaluation(services.db, run.job_id, run.token, 20 * run.ticks,
                                                       {"hq_percent": rng.uniform(0, 100)}, 30)
                sweeps.advance_quietly(services, sweep_id)
                check()
                if not lifecycle.is_cancel_requested(services.db, run.job_id):
                    continue
                # A pruned trial holds its worker until its next heartbeat: still counted as active.
                lifecycle.finish(services.db, run.job_id, run.token, "cancelled", "pruned", step=20 * run.ticks)
            else:
                lifecycle.finish(services.db, run.job_id, run.token, "succeeded", "done",
                                 evaluation={"hq_percent": rng.uniform(0, 100)}, step=60)
            sweeps.job_ended(services, run.job_id)
            workers[slot] = None
            check()
        # Free workers take the next message.
        for slot in range(len(workers)):
            while workers[slot] is None and served < len(sent):
                job_id = sent[served][0]
                served += 1
                claim = lifecycle.claim(services.db, job_id, f"w:{slot}", 30)
                if claim is not None:
                    workers[slot] = Running(job_id, claim.token)
                    if job_id in ordinary:
                        ordinary[job_id]["started"] = tick
        check()
        with services.db.read() as session:
            running = set(session.scalars(select(Job.sweep_id).where(Job.status == "running")))
            both_ran = both_ran or {a, b} <= running
            if all(session.get(Sweep, s).finished_at for s in (a, b)) and all(w is None for w in workers):
                break
    else:
        pytest.fail("the sweeps did not end")

    for sweep_id, planned in ((a, 6), (b, 4)):
        with services.db.read() as session:
            sweep = session.get(Sweep, sweep_id)
            trials = list(session.scalars(select(SweepTrial).where(SweepTrial.sweep_id == sweep_id)
                                          .order_by(SweepTrial.number)))
            jobs = list(session.scalars(select(Job).where(Job.sweep_id == sweep_id)))
        assert sweep.status == "succeeded"
        assert [t.number for t in trials] == list(range(planned)) and len({t.job_id for t in trials}) == planned
        assert len(jobs) == planned and {job.tenant for job in jobs} == {sweep.tenant}
        assert max_active(services, sweep_id) == limits[sweep_id]  # used its share, never more
    assert both_ran  # neither sweep waited for the other to end
    # Every ordinary job started on the first worker freed after it arrived (a worker is busy
    # TICKS_PER_JOB ticks at most), not behind the trials the sweeps asked for meanwhile.
    for job_id, times in ordinary.items():
        assert times["started"] - times["submitted"] <= TICKS_PER_JOB, times
    with services.db.read() as session:
        assert set(session.scalars(select(Job.status).where(Job.id.in_(list(ordinary))))) == {"succeeded"}


# ---- real workers ---------------------------------------------------------------------------------
TRIAL = {"name": "ring-trial", "dataset": {"name": "ring8"},
         "model": {"latent_dim": 2, "hidden_g": [32, 32], "hidden_d": [32, 32]},
         "train": {"steps": 60, "batch_size": 64}, "log_every": 20, "sample_every": 60, "checkpoint_every": 60,
         "eval_every": 30, "eval": {"n_samples": 300}, "device": "cpu"}


def real_sweep(name: str, trials: int, max_parallel: int) -> dict:
    return {"name": name, "base": TRIAL, "method": "random", "trials": trials, "max_parallel": max_parallel,
            "space": {"train.lr_d": {"type": "log_uniform", "low": 1e-4, "high": 3e-3},
                      "train.seed": {"type": "int", "low": 0, "high": 10000}},
            "objective": {"metric": "hq_percent", "direction": "maximize"}}


def fast_env(service_env: dict) -> dict:
    # Frequent reconciler passes: a lost message is re-sent within seconds. The lease stays at
    # service_env's 30 s: no worker dies here, and a 4 s lease expires under a loaded machine
    # during a cold worker's first steps (a second attempt, which the tests count as a double).
    return {**service_env, "GANFORGE_RECONCILE_SECONDS": "1", "GANFORGE_REQUEUE_AFTER_SECONDS": "3"}


def wait_until(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        assert time.monotonic() < deadline, what
        time.sleep(0.2)
    return value


def started_at(services, job_ids) -> dict[str, object]:
    """When each job first went running (its first claim)."""
    with services.db.read() as session:
        rows = session.execute(select(JobEvent.job_id, func.min(JobEvent.at)).where(
            JobEvent.job_id.in_(list(job_ids)), JobEvent.to_status == "running").group_by(JobEvent.job_id)).all()
    return dict(rows)


def test_two_sweeps_and_another_tenants_jobs_share_real_workers(service_env, start_worker, tmp_path):
    from ganforge.jobs.services import Services
    from ganforge.jobs.settings import Settings

    env = fast_env(service_env)
    services = Services.from_settings(Settings.from_env(env))
    try:
        start_worker(env, tmp_path, "a")
        start_worker(env, tmp_path, "b")
        ids = {}
        for tenant, name in (("tenant-a", "a"), ("tenant-b", "b")):
            spec = sweeps.stored_spec(real_sweep(name, trials=3, max_parallel=1))
            ids[name] = sweeps.submit(services.db, spec, tenant).sweep_id
            sweeps.advance(services, ids[name])

        def running_sweeps() -> set:
            with services.db.read() as session:
                return set(session.scalars(select(Job.sweep_id).where(Job.status == "running")))

        # Both workers busy with one trial of each sweep (neither sweep waits for the other) ...
        wait_until(lambda: set(ids.values()) <= running_sweeps(), 120, "both sweeps running at once")
        # ... when another tenant's jobs arrive.
        plain = [submit_job(services, "tenant-c", f"plain-{i}") for i in range(2)]
        with services.db.read() as session:
            arrived = session.scalar(select(func.max(Job.created_at)).where(Job.id.in_(plain)))

        def ended() -> bool:
            with services.db.read() as session:
                return (all(session.get(Sweep, s).finished_at for s in ids.values())
                        and set(session.scalars(select(Job.status).where(Job.id.in_(plain)))) == {"succeeded"})

        wait_until(ended, 240, "the sweeps and the jobs ended")
        with services.db.read() as session:
            trial_jobs = list(session.scalars(select(Job).where(Job.sweep_id.in_(list(ids.values())))))
        for name, sweep_id in ids.items():
            mine = [job for job in trial_jobs if job.sweep_id == sweep_id]
            assert len(mine) == 3 and all(job.status == "succeeded" for job in mine), name
            assert max_active(services, sweep_id) == 1  # one worker at most, though two were there
        # Fair: the trials asked for after the other tenant's jobs arrived ran after them.
        later = [job.id for job in trial_jobs if job.created_at > arrived]
        assert later, "every trial was queued before the other tenant's jobs: nothing was compared"
        starts = started_at(services, plain + later)
        assert max(starts[job_id] for job_id in plain) < min(starts[job_id] for job_id in later), starts
    finally:
        services.db.dispose()


def test_a_sweep_outlives_its_api_and_a_broker_emptied_mid_sweep(service_env, redis_url, start_worker, tmp_path):
    import redis

    from ganforge.client import Client
    from ganforge.jobs.services import Services
    from ganforge.jobs.settings import Settings
    from tests.integration.test_e2e_http import free_port, wait_http

    env = fast_env(service_env)

    def start_api(name: str) -> tuple[subprocess.Popen, Client]:
        port, log = free_port(), tmp_path / f"{name}.log"
        proc = subprocess.Popen([sys.executable, "-m", "ganforge.cli", "api", "--port", str(port), "--workers", "1"],
                                env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT)
        client = Client(f"http://127.0.0.1:{port}", api_key=key)
        wait_http(client, proc, log)
        return proc, client

    made = subprocess.run([sys.executable, "-m", "ganforge.cli", "keys", "create", "--tenant", "acme"], env=env,
                          cwd=ROOT, capture_output=True, text=True, check=True)
    key = made.stdout.strip().splitlines()[-1]
    services = Services.from_settings(Settings.from_env(env))
    api, client = start_api("api-1")
    second = None
    try:
        start_worker(env, tmp_path, "w")  # one worker, max_parallel 2: a trial always waits in the broker
        # Eight short trials: the sweep is still mid-way when the second API is up.
        sweep_id = client.submit_sweep(real_sweep("outlives", trials=8, max_parallel=2))["id"]

        def one_running_one_waiting() -> bool:
            with services.db.read() as session:
                statuses = list(session.scalars(select(Job.status).where(Job.sweep_id == sweep_id)))
            return statuses.count("running") == 1 and statuses.count("queued") == 1

        wait_until(one_running_one_waiting, 120, "a trial running and one waiting")
        api.send_signal(signal.SIGKILL)  # the API dies mid-sweep ...
        api.wait()
        broker = redis.Redis.from_url(redis_url)
        broker.flushdb()  # ... and the broker loses every message (the waiting trial's among them)
        assert broker.dbsize() == 0
        second, client = start_api("api-2")  # another API on the same database
        view = client.sweep(sweep_id)
        assert view["status"] == "running" and view["counts"]["queued"] + view["counts"]["running"] <= 2, view

        deadline = time.monotonic() + 240
        while (view := client.sweep(sweep_id))["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, view
            time.sleep(0.5)
        assert view["status"] == "succeeded", view
        items = client.sweep_trials(sweep_id)["items"]
        # exact: eight trials, numbers 0..7, eight jobs, each run once (one claim, one attempt)
        assert [t["number"] for t in items] == list(range(8)) and len({t["job_id"] for t in items}) == 8
        assert view["counts"]["succeeded"] == sum(view["counts"].values()) == 8
        with services.db.read() as session:
            jobs = list(session.scalars(select(Job).where(Job.sweep_id == sweep_id)))
            claims = dict(session.execute(select(JobEvent.job_id, func.count()).join(Job, Job.id == JobEvent.job_id)
                                          .where(Job.sweep_id == sweep_id, JobEvent.to_status == "running")
                                          .group_by(JobEvent.job_id)).all())
        assert len(jobs) == 8 and all(job.status == "succeeded" and job.attempt == 1 for job in jobs)
        assert claims == {job.id: 1 for job in jobs}
        assert max_active(services, sweep_id) == 2
        # The lost message came back through the worker's reconciler, not by luck.
        assert "re-sent" in (tmp_path / "w.log").read_text()
    finally:
        for proc in (api, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(30)
        services.db.dispose()
