"""The API side of multi-device jobs: the spec's resources, routing by size, the job view's
device count, waiting reason and logs."""

from __future__ import annotations

import pytest

from ganforge.jobs import lifecycle
from ganforge.jobs.models import Artifact

from tests.api.test_api import SPEC


def fields(response) -> set[str]:
    return {d["field"] for d in response.get_json()["error"]["details"]}


@pytest.mark.parametrize("devices, queue", [(1, "cpu"), (2, "cpu-x2"), (4, "cpu-x4")])
def test_jobs_go_to_a_queue_by_size(api, devices, queue):
    response = api.client.post("/v1/jobs", json={**SPEC, "resources": {"devices": devices}})
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["queue"] == queue and body["devices"] == devices
    assert api.queue.sent == [(body["id"], queue)]


def test_cuda_jobs_on_several_gpus_go_to_the_gpu_queue_of_their_size(api):
    response = api.client.post("/v1/jobs", json={**SPEC, "device": "cuda", "resources": {"devices": 8}})
    assert response.status_code == 201
    assert response.get_json()["queue"] == "gpu-x8"


def test_more_devices_than_the_deployment_allows_is_a_422_naming_the_field(make_api):
    api = make_api(max_devices=2)
    response = api.client.post("/v1/jobs", json={**SPEC, "resources": {"devices": 4}})
    assert response.status_code == 422
    assert fields(response) == {"resources.devices"}
    assert "at most 2 devices" in response.get_data(as_text=True)
    assert api.queue.sent == []


@pytest.mark.parametrize("resources, train, field", [
    ({"devices": 2}, {"batch_size": 15}, "train.batch_size"),
    ({"devices": 0}, {}, "resources.devices"),
    ({"devices": "2"}, {}, "resources.devices"),
    ({"devices": 2, "gpus": 1}, {}, "resources.gpus"),
])
def test_bad_resources_are_a_422_naming_the_field(api, resources, train, field):
    response = api.client.post("/v1/jobs", json={**SPEC, "resources": resources, "train": {**SPEC["train"], **train}})
    assert response.status_code == 422, response.get_json()
    assert field in fields(response)


def test_a_packing_discriminator_needs_the_batch_to_split_into_whole_packs_per_device(api):
    spec = {**SPEC, "model": {**SPEC["model"], "pack": 4}, "resources": {"devices": 2},
            "train": {**SPEC["train"], "batch_size": 20}}
    response = api.client.post("/v1/jobs", json=spec)
    assert response.status_code == 422 and fields(response) == {"train.batch_size"}
    assert "model.pack x resources.devices" in response.get_data(as_text=True)


def test_a_queued_job_no_live_worker_can_take_says_why(api):
    job_id = api.client.post("/v1/jobs", json={**SPEC, "resources": {"devices": 4}}).get_json()["id"]
    view = api.client.get(f"/v1/jobs/{job_id}").get_json()
    assert view["status"] == "queued" and "no worker is running" in view["waiting_reason"]

    lifecycle.announce_worker(api.services.db, "host:1", ["cpu", "cpu-x2"], 2)
    view = api.client.get(f"/v1/jobs/{job_id}").get_json()
    assert "needs 4 CPU devices (queue 'cpu-x4')" in view["waiting_reason"]
    assert "largest running CPU worker has 2" in view["waiting_reason"]

    small = api.client.post("/v1/jobs", json={**SPEC, "resources": {"devices": 2}}).get_json()["id"]
    assert api.client.get(f"/v1/jobs/{small}").get_json()["waiting_reason"] is None  # it waits its turn

    lifecycle.announce_worker(api.services.db, "host:2", ["cpu", "cpu-x2", "cpu-x3", "cpu-x4"], 4)
    assert api.client.get(f"/v1/jobs/{job_id}").get_json()["waiting_reason"] is None
    lifecycle.forget_worker(api.services.db, "host:2")
    assert api.client.get(f"/v1/jobs/{job_id}").get_json()["waiting_reason"] is not None


def test_the_attempt_logs_are_listed_with_urls(api):
    job_id = api.client.post("/v1/jobs", json={**SPEC, "resources": {"devices": 2}}).get_json()["id"]
    view = api.client.get(f"/v1/jobs/{job_id}").get_json()
    assert view["logs_url"] == f"/v1/jobs/{job_id}/logs"
    assert api.client.get(view["logs_url"]).get_json() == {"items": [], "lines": [], "next": 0, "more": False}
    data = b"[default0]:rank 0 line\n[default1]:rank 1 line\n"
    api.services.storage.put(f"jobs/{job_id}/logs/attempt-1.log", data, "text/plain; charset=utf-8")
    lifecycle.record_attempt_log(api.services.db, job_id, 1, f"jobs/{job_id}/logs/attempt-1.log", data)
    items = api.client.get(view["logs_url"]).get_json()["items"]
    assert [item["step"] for item in items] == [1] and items[0]["bytes"] == len(data)
    assert api.client.get(items[0]["url"]).data == data
    with api.services.db.session() as session:
        assert session.query(Artifact).filter_by(job_id=job_id, kind="log").count() == 1
    assert api.client.get("/v1/jobs/" + "0" * 32 + "/logs").status_code == 404
