"""Sweeps on the real database and the real worker.

The engine's decisions (PostgreSQL and SQLite, trials driven through ganforge.jobs.lifecycle as a worker
would): the next trial is asked for exactly once per finished trial however many processes ask,
pruning goes through the cancel path with the reason ``pruned``, the objective comes from the
final evaluation. Then real worker processes over Redis and S3: a sweep submitted over HTTP runs
to its end while a worker is killed mid-sweep, with no trial lost or doubled and the exact count.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from ganforge.jobs import lifecycle, sweeps
from ganforge.jobs.db import Database
from ganforge.jobs.models import Job, JobEvent, Sweep, SweepTrial
from ganforge.jobs.queue import RecordingEnqueuer
from ganforge.jobs.services import Services
from ganforge.jobs.settings import Settings
from ganforge.jobs.storage import LocalStorage
from ganforge.jobs.sweep_spec import SweepSpec

ROOT = Path(__file__).resolve().parents[2]
BASE = {"name": "ring", "dataset": {"name": "ring8"}, "train": {"steps": 60, "batch_size": 64}, "eval_every": 20}


def sweep_spec(**changes) -> SweepSpec:
    doc = {"name": "s", "base": BASE, "method": "random", "trials": 8, "max_parallel": 3,
           "space": {"train.lr_d": {"type": "log_uniform", "low": 1e-4, "high": 3e-3},
                     "train.seed": {"type": "int", "low": 0, "high": 10000}},
           "objective": {"metric": "hq_percent", "direction": "maximize"},
           "early_stopping": {"method": "asha", "min_steps": 20, "reduction_factor": 2}}
    doc.update(changes)
    return SweepSpec.model_validate(doc)


@pytest.fixture(params=["postgresql", "sqlite"])
def engine_services(request, tmp_path):
    url = request.getfixturevalue("migrated_pg" if request.param == "postgresql" else "migrated_sqlite")
    settings = Settings(data_dir=tmp_path / "home", database_url=url, broker_url="memory://",
                        storage_url=f"file://{tmp_path / 'store'}", signing_secret="x")
    services = Services(settings, Database(url), LocalStorage(tmp_path / "store"), RecordingEnqueuer())
    yield services
    services.db.dispose()


def queued_trials(services, sweep_id) -> list[str]:
    with services.db.read() as session:
        return list(session.scalars(select(Job.id).where(Job.sweep_id == sweep_id, Job.status == "queued")
                                    .order_by(Job.created_at)))


def play(services, job_id, curve, final, worker="w:1") -> str:
    """A worker's attempt: evaluations at steps 20 and 40 (the pruner sees each), then the end."""
    claim = lifecycle.claim(services.db, job_id, worker, 30)
    if claim is None:
        return "skipped"
    for step, value in zip((20, 40), curve):
        sweep_id = lifecycle.record_evaluation(services.db, job_id, claim.token, step, {"hq_percent": value}, 30)
        sweeps.advance_quietly(services, sweep_id)
        if lifecycle.is_cancel_requested(services.db, job_id):
            lifecycle.finish(services.db, job_id, claim.token, "cancelled", f"cancelled at step {step}", step=step)
            sweeps.job_ended(services, job_id)
            return "cancelled"
    lifecycle.finish(services.db, job_id, claim.token, "succeeded", "done", evaluation={"hq_percent": final}, step=60)
    sweeps.job_ended(services, job_id)
    return "succeeded"


def trials_of(services, sweep_id) -> list[SweepTrial]:
    with services.db.read() as session:
        return list(session.scalars(select(SweepTrial).where(SweepTrial.sweep_id == sweep_id)
                                    .order_by(SweepTrial.number)))


def max_active(services, sweep_id) -> int:
    """The most trial jobs of the sweep queued or running at one moment (from their events)."""
    with services.db.read() as session:
        events = session.execute(select(JobEvent.at, JobEvent.from_status, JobEvent.to_status)
                                 .join(Job, Job.id == JobEvent.job_id).where(Job.sweep_id == sweep_id)
                                 .order_by(JobEvent.at, JobEvent.id)).all()
    active = most = 0
    for _, before, after in events:
        if before is None:
            active += 1
        elif after in ("succeeded", "failed", "cancelled") and before != after:
            active -= 1
        most = max(most, active)
    return most


def test_trials_are_asked_exactly_once_per_finished_trial_and_the_best_is_kept(engine_services):
    services = engine_services
    created = sweeps.submit(services.db, sweep_spec(), "default")
    sweep_id = created.sweep_id
    assert len(sweeps.advance(services, sweep_id)) == 3
    rng = random.Random(0)
    finals = {}
    while True:
        pending = queued_trials(services, sweep_id)
        if not pending:
            break
        job_id = pending[0]
        finals[job_id] = round(rng.uniform(0, 100), 3)
        play(services, job_id, [rng.uniform(0, 100), rng.uniform(0, 100)], finals[job_id])
        sweeps.advance(services, sweep_id)  # a repeated trigger (a reconciler pass) asks nothing more
    trials = trials_of(services, sweep_id)
    assert [t.number for t in trials] == list(range(8))
    assert len({t.job_id for t in trials}) == 8
    assert {t.status for t in trials} <= {"succeeded", "pruned"} and any(t.status == "pruned" for t in trials)
    for t in trials:
        if t.status == "pruned":
            assert t.reason == "pruned" and t.objective is None
        else:
            assert t.objective == finals[t.job_id]
    assert max_active(services, sweep_id) == 3
    with services.db.read() as session:
        sweep = session.get(Sweep, sweep_id)
        assert sweep.status == "succeeded" and sweep.finished_at is not None
        # the pruned trials' jobs ended through the cancel path, with the reason in their events
        messages = session.scalars(select(JobEvent.message).join(Job, Job.id == JobEvent.job_id)
                                   .where(Job.sweep_id == sweep_id, JobEvent.message.like("cancellation requested: pruned%")))
        assert len(list(messages)) == sum(t.status == "pruned" for t in trials)
    best = sweeps.best(sweep_spec(), trials)
    assert best.objective == max(t.objective for t in trials if t.status == "succeeded")
    assert sweeps.advance(services, sweep_id) == []


def test_concurrent_deciders_never_double_a_trial(engine_services):
    """Eight threads keep asking while trials end: the count is exact, no number twice, never
    more than max_parallel queued or running."""
    services = engine_services
    spec = sweep_spec(trials=10, max_parallel=2, early_stopping=None)
    sweep_id = sweeps.submit(services.db, spec, "default").sweep_id
    stop = threading.Event()
    errors: list[BaseException] = []

    def decider() -> None:
        while not stop.is_set():
            try:
                sweeps.advance(services, sweep_id)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                return

    threads = [threading.Thread(target=decider) for _ in range(8)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with services.db.read() as session:
                if session.get(Sweep, sweep_id).finished_at is not None:
                    break
            for job_id in queued_trials(services, sweep_id):
                play(services, job_id, [50.0, 50.0], 50.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not errors, errors
    trials = trials_of(services, sweep_id)
    assert [t.number for t in trials] == list(range(10))
    assert all(t.status == "succeeded" for t in trials)
    assert max_active(services, sweep_id) <= 2


def test_a_lost_trigger_is_recovered_by_the_reconciler(engine_services):
    from ganforge.jobs import reconciler

    services = engine_services
    sweep_id = sweeps.submit(services.db, sweep_spec(trials=3, max_parallel=1, early_stopping=None), "default").sweep_id
    sweeps.advance(services, sweep_id)
    job_id = queued_trials(services, sweep_id)[0]
    claim = lifecycle.claim(services.db, job_id, "w:1", 30)
    lifecycle.finish(services.db, job_id, claim.token, "succeeded", "done", evaluation={"hq_percent": 1.0})
    assert queued_trials(services, sweep_id) == []  # the worker died before its hook ran
    assert reconciler.reconcile_once(services, host="elsewhere")["sweeps"] == 1
    assert len(queued_trials(services, sweep_id)) == 1


def test_a_sweep_whose_trials_all_fail_fails_with_their_reasons(engine_services):
    services = engine_services
    sweep_id = sweeps.submit(services.db, sweep_spec(trials=2, max_parallel=2, early_stopping=None), "default").sweep_id
    sweeps.advance(services, sweep_id)
    for job_id in queued_trials(services, sweep_id):
        claim = lifecycle.claim(services.db, job_id, "w:1", 30)
        lifecycle.finish(services.db, job_id, claim.token, "succeeded", "done", evaluation={"modes": 8})
        sweeps.job_ended(services, job_id)
    with services.db.read() as session:
        sweep = session.get(Sweep, sweep_id)
    assert sweep.status == "failed" and "no finite hq_percent" in sweep.error


# ---- real workers ---------------------------------------------------------------------------------
TRIAL = {"name": "ring-sweep", "dataset": {"name": "ring8"},
         "model": {"latent_dim": 2, "hidden_g": [32, 32], "hidden_d": [32, 32]},
         "train": {"steps": 300, "batch_size": 64}, "log_every": 50, "sample_every": 150, "checkpoint_every": 50,
         "eval_every": 100, "eval": {"n_samples": 500}, "device": "cpu", "max_attempts": 10}
SWEEP = {"name": "ring-lr", "base": TRIAL, "method": "random", "trials": 6, "max_parallel": 2,
         "space": {"train.lr_d": {"type": "log_uniform", "low": 1e-4, "high": 3e-3},
                   "train.lr_g": {"type": "log_uniform", "low": 1e-4, "high": 3e-3},
                   "train.seed": {"type": "int", "low": 0, "high": 10000}},
         "objective": {"metric": "hq_percent", "direction": "maximize"},
         "early_stopping": {"method": "asha", "min_steps": 100, "reduction_factor": 2}}


def test_a_sweep_over_http_survives_a_worker_killed_mid_sweep(service_env, start_worker, tmp_path):
    from ganforge.cli import main
    from ganforge.client import Client
    from tests.integration.test_e2e_http import free_port, wait_http

    env = {**service_env, "GANFORGE_LEASE_SECONDS": "4", "GANFORGE_RECONCILE_SECONDS": "1",
           "GANFORGE_REQUEUE_AFTER_SECONDS": "3", "GANFORGE_STOP_GRACE_SECONDS": "20"}
    port = free_port()
    api_log = tmp_path / "api.log"
    api = subprocess.Popen([sys.executable, "-m", "ganforge.cli", "api", "--port", str(port), "--workers", "1"],
                           env=env, stdout=api_log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        made = subprocess.run([sys.executable, "-m", "ganforge.cli", "keys", "create", "--tenant", "acme"], env=env,
                              cwd=ROOT, capture_output=True, text=True, check=True)
        key = made.stdout.strip().splitlines()[-1]
        client = Client(f"http://127.0.0.1:{port}", api_key=key)
        wait_http(client, api, api_log)
        victim = start_worker(env, tmp_path, "a")
        start_worker(env, tmp_path, "b")
        sweep_id = client.submit_sweep(SWEEP)["id"]
        services = Services.from_settings(Settings.from_env(env))

        def running_trial() -> bool:
            with services.db.read() as session:
                return session.scalar(select(Job.id).where(Job.sweep_id == sweep_id, Job.status == "running",
                                                           Job.worker_id.like("%"), Job.progress_step >= 50)
                                      .limit(1)) is not None

        deadline = time.monotonic() + 120
        while not running_trial():
            assert time.monotonic() < deadline, "no trial started training"
            time.sleep(0.2)
        victim.send_signal(signal.SIGKILL)  # mid-sweep, mid-trial
        victim.wait()
        start_worker(env, tmp_path, "c")
        deadline = time.monotonic() + 420
        while (view := client.sweep(sweep_id))["status"] not in ("succeeded", "failed", "cancelled"):
            assert time.monotonic() < deadline, view
            time.sleep(1.0)
        assert view["status"] == "succeeded", view
        items = client.sweep_trials(sweep_id)["items"]
        # exact: six trials, numbers 0..5, six distinct jobs, every one ended once
        assert [t["number"] for t in items] == list(range(6))
        assert len({t["job_id"] for t in items}) == 6
        assert {t["status"] for t in items} <= {"succeeded", "pruned"}, items
        assert sum(view["counts"].values()) == 6 and view["counts"]["succeeded"] >= 1
        with services.db.read() as session:
            jobs = list(session.scalars(select(Job).where(Job.sweep_id == sweep_id)))
        assert len(jobs) == 6 and all(job.status in ("succeeded", "cancelled") for job in jobs)
        assert any(job.attempt >= 2 for job in jobs)  # the killed worker's trial resumed elsewhere
        assert max_active(services, sweep_id) <= 2
        # the worker records each periodic evaluation as eval/<figure> series: the pruner's curve
        curve = client.metrics(best_job := view["best_trial"]["job_id"], names=["eval/hq_percent"])["series"]
        assert curve["eval/hq_percent"]["steps"] == [100, 200, 300], best_job
        best = view["best_trial"]
        assert best["objective"] == max(t["objective"] for t in items if t["status"] == "succeeded")
        # ganforge sweep best downloads the best trial's generator and sample grids
        out = tmp_path / "best"
        env_cli = {"GANFORGE_API_KEY": key}
        with pytest.MonkeyPatch.context() as patch:
            for name, value in env_cli.items():
                patch.setenv(name, value)
            assert main(["sweep", "best", sweep_id, "--url", f"http://127.0.0.1:{port}", "--out", str(out)]) == 0
        assert (out / "generator.pt").stat().st_size > 0
        assert sorted(p.name for p in out.glob("step-*.png")) == ["step-000150.png", "step-000300.png"]
        assert json.loads((out / "trial.json").read_text())["job_id"] == best["job_id"]
        services.db.dispose()
    finally:
        api.terminate()
        api.wait(30)
