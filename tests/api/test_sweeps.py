"""/v1/sweeps on SQLite and PostgreSQL: validation before anything is queued (422 naming the field),
trials as ordinary jobs under max_parallel and the tenant's caps, tenancy, paging, cancel,
idempotency. The engine's decisions over finished trials: tests/integration/test_sweep_runs.py."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ganforge.jobs.keys import create_key
from ganforge.jobs.models import Job

BASE = {"name": "ring", "dataset": {"name": "ring8"}, "train": {"steps": 60, "batch_size": 64}, "eval_every": 20,
        "log_every": 20, "sample_every": 60, "checkpoint_every": 60}
SWEEP = {"name": "ring-lr", "base": BASE, "method": "random", "trials": 6, "max_parallel": 2,
         "space": {"train.lr_d": {"type": "log_uniform", "low": 1e-4, "high": 3e-3},
                   "train.seed": {"type": "int", "low": 0, "high": 10000},
                   "model.ema_decay": {"type": "choice", "values": [None, 0.999]}},
         "objective": {"metric": "hq_percent", "direction": "maximize"},
         "early_stopping": {"method": "asha", "min_steps": 20, "reduction_factor": 3}}


def sweep(**changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(SWEEP)
    doc.update(changes)
    return doc


def trial_jobs(db, sweep_id: str) -> list[Job]:
    with db.read() as session:
        return list(session.query(Job).filter(Job.sweep_id == sweep_id).order_by(Job.created_at))


def test_a_sweep_queues_max_parallel_trials_as_ordinary_jobs(api):
    response = api.client.post("/v1/sweeps", json=sweep())
    assert response.status_code == 201, response.get_json()
    view = response.get_json()
    assert response.headers["Location"] == f"/v1/sweeps/{view['id']}"
    assert view["status"] == "queued" and view["trials"] == 6 and view["best_trial"] is None
    assert view["counts"] == {"queued": 2, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 0, "pruned": 0}
    jobs = trial_jobs(api.db, view["id"])
    assert len(jobs) == 2 and {queue for _, queue in api.queue.sent} == {"cpu"}
    assert sorted(job_id for job_id, _ in api.queue.sent) == sorted(job.id for job in jobs)
    trials = api.client.get(f"/v1/sweeps/{view['id']}/trials").get_json()["items"]
    assert [t["number"] for t in trials] == [0, 1]
    for trial, job in zip(trials, jobs):
        assert trial["job_id"] == job.id and trial["status"] == "queued" and trial["objective"] is None
        assert 1e-4 <= trial["params"]["train.lr_d"] <= 3e-3
        assert job.spec["train"]["lr_d"] == trial["params"]["train.lr_d"]
        assert job.spec["model"]["ema_decay"] == trial["params"]["model.ema_decay"]
        assert job.spec["train"]["seed"] == trial["params"]["train.seed"]
        # an ordinary job: readable and cancellable through /v1/jobs
        assert api.client.get(f"/v1/jobs/{job.id}").get_json()["status"] == "queued"
    # Asking again changes nothing: two trials are queued, max_parallel is 2.
    from ganforge.jobs import sweeps

    assert sweeps.advance(api.services, view["id"]) == []
    assert len(trial_jobs(api.db, view["id"])) == 2


@pytest.mark.parametrize("changes, field", [
    ({"space": {"train.lr_x": {"type": "uniform", "low": 0.1, "high": 0.2}}}, "space.train.lr_x"),
    ({"space": {"train.lr_d": {"type": "log_uniform", "low": 1e-4, "high": 2.0}}}, "space.train.lr_d"),
    ({"space": {"train.steps": {"type": "uniform", "low": 10, "high": 20}}}, "space.train.steps"),
    ({"space": {"model.arch": {"type": "choice", "values": ["mlp", "dcgan"]}}}, "space.model.arch"),
    ({"trials": 257}, "trials"),
    ({"objective": {"metric": "domain_fid", "direction": "minimize"}}, "objective.metric"),
    ({"base": {**BASE, "eval_every": None}}, "base.eval_every"),
    ({"base": {**BASE, "train": {"steps": 10**9}}}, "base.train.steps"),
    ({"early_stopping": {"method": "asha", "min_steps": 60}}, "early_stopping.min_steps"),
    ({"method": "grid", "trials": None}, "space.train.lr_d"),
    ({"method": "grid", "trials": None, "space": {"train.batch_size": {"type": "choice", "values": [64, 5000]}}},
     "space.train.batch_size"),
])
def test_an_invalid_sweep_is_a_422_naming_the_field_and_queues_nothing(api, changes, field):
    response = api.client.post("/v1/sweeps", json=sweep(**changes))
    assert response.status_code == 422, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == "invalid_sweep"
    assert error["details"][0]["field"] == field, error
    assert api.queue.sent == []
    with api.db.read() as session:
        assert session.query(Job).count() == 0


def test_a_grid_runs_every_point_once(api):
    doc = sweep(method="grid", trials=None, max_parallel=8,
                space={"train.seed": {"type": "int", "low": 0, "high": 2},
                       "model.ema_decay": {"type": "choice", "values": [None, 0.999]}})
    view = api.client.post("/v1/sweeps", json=doc).get_json()
    assert view["trials"] == 6
    params = [t["params"] for t in api.client.get(f"/v1/sweeps/{view['id']}/trials").get_json()["items"]]
    assert sorted((p["train.seed"], p["model.ema_decay"] or 0) for p in params) == [
        (s, e) for s in range(3) for e in (0, 0.999)]


def test_the_tenants_active_cap_counts_trials(make_api):
    api = make_api(max_active_per_tenant=3)
    api.client.post("/v1/jobs", json=BASE)
    view = api.client.post("/v1/sweeps", json=sweep(max_parallel=4)).get_json()
    assert len(trial_jobs(api.db, view["id"])) == 2  # 1 job + 2 trials = the cap of 3
    assert api.client.post("/v1/sweeps", json=sweep()).status_code == 429  # at the cap: refused


def test_cancel_cancels_the_queued_trials_and_ends_the_sweep(api):
    view = api.client.post("/v1/sweeps", json=sweep()).get_json()
    response = api.client.post(f"/v1/sweeps/{view['id']}/cancel")
    assert response.status_code == 200
    after = response.get_json()
    assert after["status"] == "cancelled" and after["finished_at"] is not None
    assert after["counts"]["cancelled"] == 2
    assert {job.status for job in trial_jobs(api.db, view["id"])} == {"cancelled"}
    assert api.client.post(f"/v1/sweeps/{view['id']}/cancel").status_code == 409


def test_idempotency_key_replays_the_same_sweep(api):
    headers = {"Idempotency-Key": "sweep-1"}
    first = api.client.post("/v1/sweeps", json=sweep(), headers=headers)
    again = api.client.post("/v1/sweeps", json=sweep(), headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert first.get_json()["id"] == again.get_json()["id"]
    assert len(trial_jobs(api.db, first.get_json()["id"])) == 2
    conflict = api.client.post("/v1/sweeps", json=sweep(trials=5), headers=headers)
    assert conflict.status_code == 409


def test_list_pages_newest_first(api):
    ids = [api.client.post("/v1/sweeps", json=sweep(name=f"s{i}", max_parallel=1)).get_json()["id"] for i in range(3)]
    first = api.client.get("/v1/sweeps?limit=2").get_json()
    assert [item["id"] for item in first["items"]] == ids[::-1][:2]
    rest = api.client.get(f"/v1/sweeps?limit=2&cursor={first['next_cursor']}").get_json()
    assert [item["id"] for item in rest["items"]] == ids[:1] and rest["next_cursor"] is None
    assert api.client.get("/v1/sweeps?status=bogus").status_code == 422
    assert api.client.get("/v1/sweeps?cursor=nope").status_code == 422


def test_another_tenants_sweep_is_not_found(make_api):
    api = make_api(auth="required", auth_cache_seconds=0)
    keys = {name: create_key(api.db, name)[1] for name in ("a", "b")}

    def auth(who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {keys[who]}"}

    view = api.client.post("/v1/sweeps", json=sweep(), headers=auth("a")).get_json()
    for path in (f"/v1/sweeps/{view['id']}", f"/v1/sweeps/{view['id']}/trials", f"/v1/sweeps/{view['id']}/curves"):
        assert api.client.get(path, headers=auth("b")).status_code == 404
        assert api.client.get(path, headers=auth("a")).status_code == 200
    assert api.client.post(f"/v1/sweeps/{view['id']}/cancel", headers=auth("b")).status_code == 404
    assert api.client.get("/v1/sweeps", headers=auth("b")).get_json()["items"] == []
    with api.db.read() as session:
        assert {job.tenant for job in session.query(Job)} == {"a"}  # the trials are tenant a's jobs


def test_curves_hold_every_trials_evaluation_series_and_a_trial_job_names_its_sweep(api):
    from ganforge.jobs import lifecycle

    view = api.client.post("/v1/sweeps", json=sweep()).get_json()
    first, second = trial_jobs(api.db, view["id"])
    claim = lifecycle.claim(api.db, first.id, "w:1", 30)
    for step, value in ((40, 30.0), (20, 10.0)):  # out of order: the curve comes back sorted by step
        lifecycle.record_evaluation(api.db, first.id, claim.token, step, {"hq_percent": value, "modes": step / 10}, 30)
    curves = api.client.get(f"/v1/sweeps/{view['id']}/curves").get_json()
    assert curves["metric"] == "eval/hq_percent"
    assert [(c["number"], c["job_id"], c["status"]) for c in curves["items"]] == [
        (0, first.id, "running"), (1, second.id, "queued")]
    assert (curves["items"][0]["steps"], curves["items"][0]["values"]) == ([20, 40], [10.0, 30.0])
    assert (curves["items"][1]["steps"], curves["items"][1]["values"]) == ([], [])
    modes = api.client.get(f"/v1/sweeps/{view['id']}/curves?figure=modes").get_json()
    assert modes["metric"] == "eval/modes" and modes["items"][0]["values"] == [2.0, 4.0]
    bad = api.client.get(f"/v1/sweeps/{view['id']}/curves?figure=bogus")
    assert bad.status_code == 422 and bad.get_json()["error"]["details"][0]["field"] == "figure"
    # A trial's job names its sweep (the dashboard links them); an ordinary job has none.
    assert api.client.get(f"/v1/jobs/{first.id}").get_json()["sweep_id"] == view["id"]
    listed = {job["id"]: job for job in api.client.get("/v1/jobs").get_json()["items"]}
    assert listed[second.id]["sweep_id"] == view["id"]
    plain = api.client.post("/v1/jobs", json=BASE).get_json()
    assert api.client.get(f"/v1/jobs/{plain['id']}").get_json()["sweep_id"] is None


def test_the_sweep_presets_are_accepted_as_they_are_and_the_cli_finds_them_by_name(api):
    import json

    from ganforge.cli.sweeps import _read
    from ganforge.resources import presets_dir

    presets = sorted(presets_dir().joinpath("sweeps").glob("*.json"))
    assert [p.stem for p in presets] == ["grid25-search"]
    for path in presets:
        doc = json.loads(path.read_text())
        assert _read(path.stem) == doc == _read(str(path))
        response = api.client.post("/v1/sweeps", json=doc)
        assert response.status_code == 201, response.get_json()
        view = response.get_json()
        assert view["trials"] == doc.get("trials", view["trials"]) >= doc["max_parallel"]  # a grid: its size
        assert len(trial_jobs(api.db, view["id"])) == doc["max_parallel"]
