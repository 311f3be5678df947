"""/v1/datasets on SQLite and PostgreSQL: uploads of zip, tar and gzip tar archives made here
(a corrupt file counted, not fatal), refusals with their reasons (empty archive, zip bomb,
traversal, symlinks, over GANFORGE_MAX_DATASET_BYTES with or without a Content-Length), tenancy
(another tenant's upload is a 404, also as a job's upload_id), delete (409 while a job uses it,
then 204 and the archive gone), Idempotency-Key, paging."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pytest

from ganforge.jobs import datasets as job_datasets
from ganforge.jobs.keys import create_key
from ganforge.jobs.models import Dataset, Job

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from upload_archives import empty_zip, image_members, tar_bytes, zip_bomb, zip_bytes  # noqa: E402

ZIP = "application/zip"


def upload(client, body: bytes, content_type: str = ZIP, name: str | None = "shapes", **kwargs):
    query = {"name": name} if name is not None else {}
    return client.post("/v1/datasets", data=body, content_type=content_type, query_string=query, **kwargs)


def folder_spec(upload_id: str, **dataset) -> dict:
    return {"name": "folder", "dataset": {"name": "image_folder", "upload_id": upload_id, "image_size": 32, **dataset},
            "model": {"arch": "dcgan"}, "train": {"steps": 10, "batch_size": 8}}


def stored_keys(api) -> list[str]:
    root = Path(api.services.settings.storage_url.removeprefix("file://"))
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "datasets" in p.parts)


@pytest.mark.parametrize("content_type, body", [
    (ZIP, zip_bytes(image_members())),
    ("application/x-tar", tar_bytes(image_members())),
    ("application/gzip", tar_bytes(image_members(), "w:gz")),
])
def test_an_upload_is_inspected_stored_and_readable(api, content_type, body):
    response = upload(api.client, body, content_type)
    assert response.status_code == 201, response.get_json()
    created = response.get_json()
    assert response.headers["Location"] == f"/v1/datasets/{created['id']}"
    shown = api.client.get(f"/v1/datasets/{created['id']}").get_json()
    assert shown == created
    # 9 PNGs in three class folders and one corrupt file: counted, skipped, not fatal.
    assert (shown["files"], shown["images"], shown["skipped"]) == (10, 9, 1)
    assert shown["classes"] == ["blue", "green", "red"]
    assert shown["bytes"] == len(body) and shown["name"] == "shapes" and shown["content_type"] == content_type
    # Stored whole in the artifact store, where the worker finds it.
    with api.db.read() as session:
        key, sha256 = job_datasets.upload_location(session, "default", created["id"])
    assert api.storage.get(key) == body
    import hashlib

    assert sha256 == shown["sha256"] == hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize("body, reason", [
    (empty_zip(), "empty"),
    (zip_bytes({"notes.txt": b"hello"}), "empty"),
    (zip_bomb(), "zip_bomb"),
    (zip_bytes({"../escape.png": b"x", "red/0.png": b"y"}), "unsafe_path"),
    (tar_bytes({"/etc/evil.png": b"x"}), "unsafe_path"),
    (tar_bytes(image_members(), symlinks={"red/link.png": "/etc/passwd"}), "link"),
    (b"this is not an archive at all", "unreadable"),
])
def test_a_hostile_or_useless_archive_is_a_422_with_the_reason_and_nothing_is_stored(api, body, reason):
    content_type = "application/x-tar" if body[257:262] == b"ustar" else ZIP
    response = upload(api.client, body, content_type)
    assert response.status_code == 422, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == "invalid_archive" and error["details"][0]["field"] == "body"
    assert error["details"][0]["problem"].startswith(f"{reason}: "), error
    assert stored_keys(api) == []
    assert api.client.get("/v1/datasets").get_json()["items"] == []


def test_too_many_files_is_a_422(make_api):
    api = make_api(max_dataset_files=5)
    response = upload(api.client, zip_bytes(image_members()))
    assert response.status_code == 422
    assert response.get_json()["error"]["details"][0]["problem"].startswith("too_many_files: ")


@pytest.mark.parametrize("chunked", [False, True])
def test_an_archive_over_the_byte_limit_is_a_413_naming_the_limit(make_api, chunked):
    body = zip_bytes(image_members(per_class=20))
    api = make_api(max_dataset_bytes=len(body) - 1)
    if chunked:  # no Content-Length: counted while streamed
        response = api.client.post("/v1/datasets", input_stream=io.BytesIO(body), content_type=ZIP,
                                   environ_overrides={"wsgi.input_terminated": True})
    else:
        response = upload(api.client, body)
    assert response.status_code == 413, response.get_json()
    assert "GANFORGE_MAX_DATASET_BYTES" in response.get_json()["error"]["message"]
    assert stored_keys(api) == []
    # At the limit exactly it is accepted.
    assert upload(make_api(max_dataset_bytes=len(body)).client, body).status_code == 201


def test_an_archive_whose_content_is_over_the_byte_limit_is_a_413(make_api):
    # Half random, half zeros: it inflates to twice its size (no bomb), past a limit it fits under.
    body = zip_bytes({"red/0.png": image_members()["red/0.png"], "blob.bin": os.urandom(100_000) + bytes(100_000)})
    api = make_api(max_dataset_bytes=len(body) + 1000)
    response = upload(api.client, body)
    assert response.status_code == 413, response.get_json()
    error = response.get_json()["error"]
    assert error["details"][0]["problem"].startswith("too_large: ") and "GANFORGE_MAX_DATASET_BYTES" in error["message"]
    assert stored_keys(api) == []


def test_the_archive_is_streamed_never_held_whole_in_memory(make_api, tmp_path):
    import tracemalloc
    import zipfile

    path = tmp_path / "big.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:  # 24 MiB that do not compress
        archive.writestr("red/0.png", image_members()["red/0.png"])
        for i in range(24):
            archive.writestr(f"noise/{i}.bin", os.urandom(1 << 20))
    api = make_api(max_dataset_bytes=64 << 20)
    size = path.stat().st_size
    with path.open("rb") as body:
        tracemalloc.start()
        try:
            response = api.client.post("/v1/datasets", input_stream=body, content_length=size, content_type=ZIP)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["bytes"] == size and response.get_json()["skipped"] == 24
    print(f"upload of {size} bytes: peak traced memory {peak} bytes")
    assert peak < size / 3, f"peak {peak} bytes while uploading {size}"


def test_an_upload_may_be_far_larger_than_the_json_body_limit(make_api):
    body = zip_bytes(image_members(per_class=4))
    api = make_api(max_body_bytes=1000)
    assert len(body) > 1000
    assert upload(api.client, body).status_code == 201
    assert api.client.post("/v1/jobs", data=b"{" + b" " * 2000 + b"}", content_type="application/json").status_code == 413


@pytest.mark.parametrize("body, detected", [
    (zip_bytes(image_members()), "application/zip"),
    (tar_bytes(image_members()), "application/x-tar"),
    (tar_bytes(image_members(), "w:gz"), "application/gzip"),
])
def test_an_octet_stream_upload_is_read_by_its_content(api, body, detected):
    response = upload(api.client, body, "application/octet-stream")
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["content_type"] == detected and response.get_json()["images"] == 9


def test_an_octet_stream_that_is_no_archive_is_a_422(api):
    response = upload(api.client, b"just some bytes, no archive", "application/octet-stream")
    assert response.status_code == 422 and "unreadable" in response.get_json()["error"]["details"][0]["problem"]


@pytest.mark.parametrize("content_type, name, status, field", [
    ("application/json", "x", 415, None),
    ("text/plain", "x", 415, None),
    (ZIP, "a\x01b", 422, "name"),
    (ZIP, "x" * 121, 422, "name"),
])
def test_bad_upload_requests_are_refused_naming_the_problem(api, content_type, name, status, field):
    response = upload(api.client, zip_bytes(image_members()), content_type, name)
    assert response.status_code == status
    if field:
        assert response.get_json()["error"]["details"][0]["field"] == field


def test_an_empty_body_is_a_400(api):
    response = upload(api.client, b"")
    assert response.status_code == 400 and "empty" in response.get_json()["error"]["message"]


def test_another_tenants_dataset_is_not_found(make_api):
    api = make_api(auth="required", auth_cache_seconds=0)
    keys = {name: create_key(api.db, name)[1] for name in ("a", "b")}
    admin = create_key(api.db, "ops", is_admin=True)[1]

    def auth(who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {keys[who] if who in keys else admin}"}

    created = upload(api.client, zip_bytes(image_members()), headers=auth("a")).get_json()
    path = f"/v1/datasets/{created['id']}"
    assert api.client.get(path, headers=auth("b")).status_code == 404
    assert api.client.delete(path, headers=auth("b")).status_code == 404
    assert api.client.get("/v1/datasets", headers=auth("b")).get_json()["items"] == []
    assert api.client.get(path, headers=auth("a")).status_code == 200
    assert [d["id"] for d in api.client.get("/v1/datasets", headers=auth("admin")).get_json()["items"]] == [created["id"]]
    # Nor can tenant b train on it: the same 422 as an id that never existed.
    for upload_id in (created["id"], "0" * 32):
        response = api.client.post("/v1/jobs", json=folder_spec(upload_id), headers=auth("b"))
        assert response.status_code == 422, response.get_json()
        assert response.get_json()["error"]["details"][0]["field"] == "dataset.upload_id"
    with api.db.read() as session:
        assert session.query(Job).count() == 0
        with pytest.raises(job_datasets.UploadNotFound):
            job_datasets.upload_location(session, "b", created["id"])
    assert api.client.post("/v1/jobs", json=folder_spec(created["id"]), headers=auth("a")).status_code == 201
    assert api.client.get(path, headers=auth("a")).status_code == 200


def test_delete_is_refused_while_a_job_uses_the_dataset_then_removes_it_and_its_archive(api):
    created = upload(api.client, zip_bytes(image_members())).get_json()
    path = f"/v1/datasets/{created['id']}"
    job = api.client.post("/v1/jobs", json=folder_spec(created["id"]))
    assert job.status_code == 201, job.get_json()
    job_id = job.get_json()["id"]
    with api.db.read() as session:
        assert session.get(Job, job_id).dataset_id == created["id"]
    response = api.client.delete(path)
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "dataset_in_use" and job_id in response.get_json()["error"]["message"]
    assert len(stored_keys(api)) == 1
    # Running still holds it; a finished job does not.
    with api.db.session() as session:
        session.get(Job, job_id).status = "running"
    assert api.client.delete(path).status_code == 409
    assert api.client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200  # running: cancel requested
    with api.db.session() as session:
        session.get(Job, job_id).status = "cancelled"
    response = api.client.delete(path)
    assert response.status_code == 204 and response.data == b""
    assert api.client.get(path).status_code == 404
    assert api.client.delete(path).status_code == 404
    assert stored_keys(api) == []
    with api.db.read() as session:
        assert session.get(Job, job_id).dataset_id is None  # the finished job stays, without it
    # Gone: a new job cannot name it.
    assert api.client.post("/v1/jobs", json=folder_spec(created["id"])).status_code == 422


@pytest.mark.parametrize("key", [None, "job-1"])
def test_an_upload_deleted_between_the_check_and_the_insert_is_the_same_422(api, monkeypatch, key):
    created = upload(api.client, zip_bytes(image_members())).get_json()
    real_check = job_datasets.check_upload
    deleted = []

    def check_then_lose_it(session, tenant, spec):  # a DELETE /v1/datasets/{id} that lands just after the check
        real_check(session, tenant, spec)
        if not deleted:
            with api.db.session() as other:
                other.delete(other.get(Dataset, created["id"]))
            deleted.append(True)

    monkeypatch.setattr(job_datasets, "check_upload", check_then_lose_it)
    headers = {"Idempotency-Key": key} if key else {}
    response = api.client.post("/v1/jobs", json=folder_spec(created["id"]), headers=headers)
    assert deleted and response.status_code == 422, response.get_json()
    assert response.get_json()["error"]["details"][0]["field"] == "dataset.upload_id"
    with api.db.read() as session:
        assert session.query(Job).count() == 0


def test_a_live_sweep_naming_the_dataset_keeps_it(api):
    created = upload(api.client, zip_bytes(image_members())).get_json()
    with api.db.session() as session:
        from ganforge.jobs.models import Sweep

        session.add(Sweep(tenant="default", name="s", spec={"base": folder_spec(created["id"])}, planned_trials=4))
    response = api.client.delete(f"/v1/datasets/{created['id']}")
    assert response.status_code == 409 and "sweep" in response.get_json()["error"]["message"]


def test_an_idempotent_upload_is_replayed_and_a_different_body_is_a_409(api):
    body = zip_bytes(image_members())
    headers = {"Idempotency-Key": "upload-1"}
    first = upload(api.client, body, headers=headers)
    again = upload(api.client, body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert again.get_json() == first.get_json()
    assert len(stored_keys(api)) == 1
    other = upload(api.client, zip_bytes(image_members(per_class=2)), headers=headers)
    assert other.status_code == 409 and other.get_json()["error"]["code"] == "idempotency_conflict"
    renamed = upload(api.client, body, name="other", headers=headers)
    assert renamed.status_code == 409
    # Without the key the same archive is a second dataset.
    assert upload(api.client, body).get_json()["id"] != first.get_json()["id"]
    assert upload(api.client, body, headers={"Idempotency-Key": "bad key\x01"}).status_code == 422


def test_a_tenant_keeps_at_most_the_cap_of_uploads(make_api):
    api = make_api(max_datasets_per_tenant=2)
    body = zip_bytes(image_members(per_class=1, corrupt=0))
    first = upload(api.client, body, headers={"Idempotency-Key": "one"}).get_json()
    assert upload(api.client, body).status_code == 201
    refused = upload(api.client, body)
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "too_many_datasets"
    assert "GANFORGE_MAX_DATASETS_PER_TENANT" in refused.get_json()["error"]["message"]
    assert len(stored_keys(api)) == 2
    # A retry of an upload already made is still answered; a delete makes room.
    assert upload(api.client, body, headers={"Idempotency-Key": "one"}).headers["Idempotent-Replayed"] == "true"
    assert api.client.delete(f"/v1/datasets/{first['id']}").status_code == 204
    assert upload(api.client, body).status_code == 201


def test_the_list_is_paged_newest_first_with_a_cursor(api):
    body = zip_bytes(image_members(per_class=1, corrupt=0))
    ids = [upload(api.client, body, name=f"d{i}").get_json()["id"] for i in range(5)]
    seen, cursor = [], None
    while True:
        page = api.client.get("/v1/datasets", query_string={"limit": 2, **({"cursor": cursor} if cursor else {})}).get_json()
        assert len(page["items"]) <= 2
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    assert api.client.get("/v1/datasets?cursor=nonsense").status_code == 422
    assert api.client.get("/v1/datasets?limit=0").status_code == 422
    assert api.client.get("/v1/datasets/not-an-id").status_code == 404


def test_submit_records_the_upload_on_the_job_and_sweeps_check_it(api):
    created = upload(api.client, zip_bytes(image_members())).get_json()
    job_id = api.client.post("/v1/jobs", json=folder_spec(created["id"])).get_json()["id"]
    with api.db.read() as session:
        assert session.get(Job, job_id).dataset_id == created["id"]
        assert session.query(Dataset).count() == 1
    sweep = {"name": "s", "base": folder_spec("f" * 32), "method": "random", "trials": 2,
             "space": {"train.seed": {"type": "int", "low": 0, "high": 9}},
             "objective": {"metric": "kid", "direction": "minimize"}}
    response = api.client.post("/v1/sweeps", json=sweep)
    assert response.status_code == 422, response.get_json()
    assert response.get_json()["error"]["details"][0]["field"] == "base.dataset.upload_id"
    sweep["base"] = folder_spec(created["id"])
    response = api.client.post("/v1/sweeps", json=sweep)
    assert response.status_code == 201, response.get_json()
    with api.db.read() as session:  # its trials record the upload like any job
        trials = session.query(Job).filter(Job.sweep_id == response.get_json()["id"]).all()
    assert trials and {job.dataset_id for job in trials} == {created["id"]}
