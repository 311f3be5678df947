"""GAN health on the real runner (ganforge.worker.runner.run_job in this process, PostgreSQL, a file store):
real training runs that diverge or whose discriminator wins, read back through the HTTP API.

* a job whose losses go non-finite (absurd learning rates, no gradient penalty) and whose spec
  asks for it is stopped through the cancel path with the reason ``diverged``, with no rollback
  and no checkpoint of the non-finite weights; an ordinary job gets the findings as warnings (and
  keeps its rollback, then fails, as before);
* a discriminator that wins (huge D learning rate, tiny G one) is a warning on an ordinary job;
* on a sweep trial it stops the trial: the trials list shows ``pruned`` with the reason
  ``discriminator_won`` and the engine asks for the next trial exactly once.
"""

from __future__ import annotations

import copy

import pytest
from sqlalchemy import select

from ganforge.jobs import lifecycle, sweeps
from ganforge.jobs.db import Database
from ganforge.jobs.models import Artifact, Job, JobEvent, SweepTrial
from ganforge.jobs.queue import RecordingEnqueuer
from ganforge.jobs.services import Services
from ganforge.jobs.settings import Settings
from ganforge.jobs.storage import LocalStorage
from ganforge.jobs.sweep_spec import SweepSpec
from gan_core.spec import JobSpec
from ganforge.worker.runner import run_job

COMMON = {"dataset": {"name": "ring8"}, "device": "cpu", "log_every": 10, "sample_every": 1000,
          "checkpoint_every": 30, "eval": {"n_samples": 500}}
# Adam at learning rate 1 on a deep critic with no penalty: the critic's scores grow without
# bound and overflow to infinity within a few dozen steps.
DIVERGING = {**COMMON, "name": "diverging", "loss": "wgan-gp",
             "model": {"latent_dim": 2, "hidden_g": [32, 32], "hidden_d": [256] * 6},
             "train": {"steps": 100, "batch_size": 32, "lr_d": 1.0, "lr_g": 1.0, "beta1": 0.0, "gp_weight": 0.0,
                       "health": {"every": 5}}}
# D trained three times per step at a high rate, G barely at all: D separates real from fake.
D_WINS = {**COMMON, "name": "d-wins", "loss": "bce",
          "model": {"latent_dim": 2, "hidden_g": [32, 32], "hidden_d": [32, 32], "g_batchnorm": False},
          "train": {"steps": 400, "batch_size": 64, "lr_d": 0.01, "lr_g": 1e-7, "d_steps": 3,
                    "health": {"every": 20, "min_step": 100, "d_window": 100}}}


def spec(doc, **health) -> JobSpec:
    doc = copy.deepcopy(doc)
    doc["train"]["health"].update(health)
    return JobSpec.model_validate(doc)


@pytest.fixture()
def api(migrated_pg, tmp_path):
    from ganforge.api import create_app

    settings = Settings(data_dir=tmp_path / "home", database_url=migrated_pg, broker_url="memory://",
                        storage_url=f"file://{tmp_path / 'store'}", signing_secret="x", lease_seconds=30,
                        upload_patience_seconds=60, log_json=False)
    services = Services(settings, Database(migrated_pg), LocalStorage(tmp_path / "store"), RecordingEnqueuer())
    app = create_app(services=services)
    app.config["TESTING"] = True
    app.services = services
    yield app
    services.db.dispose()


def submit(services, job_spec) -> str:
    with services.db.session() as session:
        return lifecycle.submit(session, job_spec).id


def events(services, job_id) -> list[str]:
    with services.db.read() as session:
        return list(session.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id).order_by(JobEvent.id)))


def checkpoint_steps(services, job_id) -> list[int]:
    with services.db.read() as session:
        return list(session.scalars(select(Artifact.step).where(Artifact.job_id == job_id,
                                                                Artifact.kind == "checkpoint")))


def test_a_diverging_job_that_asks_for_it_is_stopped_with_the_reason_diverged(api):
    services = api.services
    job_id = submit(services, spec(DIVERGING, stop=True))
    assert run_job(services, job_id, "w1") == "cancelled"
    view = api.test_client().get(f"/v1/jobs/{job_id}").get_json()
    assert view["status"] == "cancelled" and view["stop_reason"] == "diverged" and view["error"] is None
    [finding] = view["health"]
    assert finding["detector"] == "diverged" and finding["action"] == "stopped"
    step = finding["step"]
    assert 1 <= step <= 100 and "non-finite loss" in finding["message"]
    assert view["divergences"] == 0  # no rollback: a halved learning rate is not what was asked for
    assert view["progress"]["step"] == step
    assert all(s < step for s in checkpoint_steps(services, job_id))  # no checkpoint of non-finite weights
    messages = events(services, job_id)
    assert "cancellation requested: diverged (GAN health)" in messages
    assert messages[-1] == f"stopped at step {step} by GAN health: diverged (non-finite loss)"


def test_a_diverging_ordinary_job_gets_warnings_then_rolls_back_and_fails(api):
    services = api.services
    job_id = submit(services, spec(DIVERGING))
    assert run_job(services, job_id, "w1") == "failed"
    view = api.test_client().get(f"/v1/jobs/{job_id}").get_json()
    assert view["status"] == "failed" and view["error"].startswith("diverged at step")
    assert view["stop_reason"] is None and view["divergences"] == 1
    assert [(f["detector"], f["action"]) for f in view["health"]] == [("diverged", "warning")] * 2


def test_a_discriminator_that_wins_is_a_warning_on_an_ordinary_job(api):
    services = api.services
    job_id = submit(services, spec(D_WINS))
    assert run_job(services, job_id, "w1") == "succeeded"
    view = api.test_client().get(f"/v1/jobs/{job_id}").get_json()
    assert view["status"] == "succeeded" and view["stop_reason"] is None
    found = [f for f in view["health"] if f["detector"] == "discriminator_won"]
    assert found and found[0]["action"] == "warning" and 199 <= found[0]["step"] <= 400  # min_step + d_window - 1
    assert "on real" in found[0]["message"]
    assert any(m.startswith("GAN health: discriminator_won at step") for m in events(services, job_id))


def test_a_sweep_trial_stopped_by_a_detector_shows_the_reason_and_the_next_trial_is_asked_once(api):
    services, client = api.services, api.test_client()
    base = copy.deepcopy(D_WINS)
    base["eval_every"] = 200
    base["train"]["health"]["diversity_ratio"] = 0.0  # G barely moves, so its batch stays collapsed too: off
    body = {"name": "d-wins-sweep", "base": base, "method": "random", "trials": 3, "max_parallel": 1,
            "space": {"train.seed": {"type": "int", "low": 0, "high": 1000}},
            "objective": {"metric": "hq_percent", "direction": "maximize"}}
    response = client.post("/v1/sweeps", json=body)
    assert response.status_code == 201, response.get_json()
    sweep_id = response.get_json()["id"]
    [first] = client.get(f"/v1/sweeps/{sweep_id}/trials").get_json()["items"]

    assert run_job(services, first["job_id"], "w1") == "cancelled"  # train.health.stop unset: a trial stops
    sweeps.job_ended(services, first["job_id"])  # what the worker task does after an attempt
    sweeps.advance(services, sweep_id)  # a repeated trigger (the reconciler) asks nothing more

    items = client.get(f"/v1/sweeps/{sweep_id}/trials").get_json()["items"]
    assert [t["number"] for t in items] == [0, 1]  # the next trial, exactly once
    assert (items[0]["status"], items[0]["reason"]) == ("pruned", "discriminator_won")
    assert items[1]["status"] == "queued"
    view = client.get(f"/v1/sweeps/{sweep_id}").get_json()
    assert view["counts"]["pruned"] == 1 and view["counts"]["queued"] == 1
    job = client.get(f"/v1/jobs/{first['job_id']}").get_json()
    assert job["status"] == "cancelled" and job["stop_reason"] == "discriminator_won"
    assert [f["action"] for f in job["health"] if f["detector"] == "discriminator_won"] == ["stopped"]
    assert job["progress"]["step"] < 400  # stopped early
    with services.db.read() as session:
        assert session.scalar(select(Job.stop_reason).where(Job.id == first["job_id"])) == "discriminator_won"


@pytest.mark.parametrize("backend", ["migrated_pg", "migrated_sqlite"])
def test_the_engine_treats_a_health_stop_like_a_prune(request, backend, tmp_path):
    """The decision step alone (a worker's calls made through ganforge.jobs.lifecycle, no training): a trial
    stopped by each detector is ``pruned`` with the detector as reason, Optuna sees it pruned, and
    each finished trial is followed by exactly one new trial however often the step runs."""
    url = request.getfixturevalue(backend)
    settings = Settings(data_dir=tmp_path / "home", database_url=url, broker_url="memory://",
                        storage_url=f"file://{tmp_path / 'store'}", signing_secret="x")
    services = Services(settings, Database(url), LocalStorage(tmp_path / "store"), RecordingEnqueuer())
    try:
        base = copy.deepcopy(D_WINS)
        base["eval_every"] = 200
        spec = SweepSpec.model_validate({
            "name": "s", "base": base, "method": "random", "trials": 4, "max_parallel": 1,
            "space": {"train.seed": {"type": "int", "low": 0, "high": 1000}},
            "objective": {"metric": "hq_percent", "direction": "maximize"}})
        sweep_id = sweeps.submit(services.db, spec, "default").sweep_id
        sweeps.advance(services, sweep_id)
        for number, reason in enumerate(("diverged", "discriminator_won", "mode_collapse")):
            with services.db.read() as session:
                [job_id] = session.scalars(select(Job.id).where(Job.sweep_id == sweep_id, Job.status == "queued"))
            claim = lifecycle.claim(services.db, job_id, "w:1", 30)
            finding = {"detector": reason, "step": 120, "message": "synthetic", "action": "stopped"}
            assert lifecycle.record_health(services.db, job_id, claim.token, [finding], reason) == (True, reason)
            # A second finding keeps the first reason (the job is already being stopped).
            assert lifecycle.record_health(services.db, job_id, claim.token, [finding], "mode_collapse") == (True, reason)
            lifecycle.finish(services.db, job_id, claim.token, "cancelled", "stopped", step=120)
            for _ in range(3):
                sweeps.job_ended(services, job_id)
            with services.db.read() as session:
                trials = list(session.scalars(select(SweepTrial).where(SweepTrial.sweep_id == sweep_id)
                                              .order_by(SweepTrial.number)))
            assert len(trials) == number + 2  # the next trial, exactly once
            assert (trials[number].status, trials[number].reason) == ("pruned", reason)
        study = sweeps._study(spec, trials, {})
        assert [t.state.name for t in study.trials] == ["PRUNED", "PRUNED", "PRUNED", "RUNNING"]
    finally:
        services.db.dispose()
