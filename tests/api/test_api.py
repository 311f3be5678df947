"""The HTTP API through Flask's test client, on SQLite and on PostgreSQL (see conftest.py)."""

from __future__ import annotations

import io
import json
import logging
import random
import re
import secrets
import stat
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from sqlalchemy import insert, select

from ganforge.api import create_app
from ganforge.api.generation import label_problem, render
from ganforge.api.read_model import downsample
from gan_core.spec import JobSpec
from ganforge.jobs import lifecycle
from ganforge.jobs.db import Database
from ganforge.jobs.models import STATUSES, Job
from ganforge.jobs.queue import RecordingEnqueuer
from ganforge.jobs.services import Services
from ganforge.jobs.settings import Settings, SettingsError
from ganforge.jobs.storage import LocalStorage, StorageError, checkpoint_key, final_key, sample_key

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# A small valid spec (2-D points, tiny networks: trains in milliseconds).
SPEC: dict[str, Any] = {
    "name": "ring",
    "dataset": {"name": "ring8"},
    "model": {"latent_dim": 2, "hidden_g": [16, 16], "hidden_d": [16, 16], "g_batchnorm": False},
    "train": {"steps": 3, "batch_size": 16, "seed": 1},
    "log_every": 1,
    "sample_every": 10,
    "checkpoint_every": 3,
    "eval": {"at_end": False},
    "device": "cpu",
}


# ---- arranging through jobs/ (what a worker would do) ---------------------------------------------
def submit_direct(db: Database, **changes: Any) -> str:
    spec = JobSpec.model_validate({**SPEC, **changes})
    with db.session() as session:
        return lifecycle.submit(session, spec).id


def running_job(db: Database, **changes: Any) -> tuple[str, str]:
    """(job id, lease token) of a job claimed by a pretend worker."""
    job_id = submit_direct(db, **changes)
    claim = lifecycle.claim(db, job_id, "test-worker", 60)
    assert claim is not None
    return job_id, claim.token


def add_artifact(h, job_id: str, token: str, kind: str, step: int, key: str, data: bytes,
                 content_type: str = "application/octet-stream") -> str:
    stored = h.storage.put(key, data, content_type)
    artifact = lifecycle.record_artifact(h.db, job_id, token, kind=kind, step=step, key=stored.key, size=stored.size,
                                         sha256=stored.sha256, content_type=content_type)
    return artifact.id


def assert_envelope(response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], list)
    assert error["request_id"] == response.headers["X-Request-ID"]
    return error


def fields(error: dict[str, Any]) -> set[str]:
    return {d["field"] for d in error["details"]}


def local_path(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


# ---- submit ---------------------------------------------------------------------------------------
def test_submit_commits_before_enqueue_and_returns_the_view(make_api, settings):
    seen: list[tuple[str, str, str]] = []

    class CheckingEnqueuer(RecordingEnqueuer):
        """Looks the job up through its own connection, as a worker would, when handed the id."""

        def enqueue(self, job_id: str, queue: str) -> None:
            other = Database(settings.database_url)
            try:
                with other.session() as session:
                    status = session.scalar(select(Job.status).where(Job.id == job_id))
            finally:
                other.dispose()
            seen.append((job_id, queue, status))
            super().enqueue(job_id, queue)

    h = make_api(queue=CheckingEnqueuer())
    response = h.client.post("/v1/jobs", json=SPEC)
    assert response.status_code == 201, response.get_data(as_text=True)
    body = response.get_json()
    assert response.headers["Location"] == f"/v1/jobs/{body['id']}"
    assert body["status"] == "queued" and body["queue"] == "cpu" and body["name"] == "ring"
    assert body["progress"] == {"step": 0, "total": 3, "fraction": 0.0}
    assert body["spec"]["train"]["batch_size"] == 16 and body["spec"]["loss"] == "bce"  # defaults filled in
    assert [(e["from"], e["to"]) for e in body["events"]] == [(None, "queued")]
    assert seen == [(body["id"], "cpu", "queued")]  # enqueued once, after the row was visible to others
    assert h.queue.sent == [(body["id"], "cpu")]


def test_submit_routes_cuda_jobs_to_the_gpu_queue(api):
    response = api.client.post("/v1/jobs", json={**SPEC, "device": "cuda"})
    assert response.status_code == 201
    assert api.queue.sent == [(response.get_json()["id"], "gpu")]


def test_submit_with_the_broker_down_still_keeps_the_job(make_api, caplog):
    class DownEnqueuer(RecordingEnqueuer):
        def enqueue(self, job_id: str, queue: str) -> None:
            raise ConnectionError("broker unreachable")

    h = make_api(queue=DownEnqueuer())
    with caplog.at_level(logging.ERROR, logger="ganforge.api.jobs"):
        response = h.client.post("/v1/jobs", json=SPEC)
    assert response.status_code == 201
    job_id = response.get_json()["id"]
    assert h.client.get(f"/v1/jobs/{job_id}").get_json()["status"] == "queued"
    assert any(job_id in r.getMessage() and "could not be enqueued" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code", "field"),
    [
        ("{", "application/json", 400, "bad_request", None),
        ("", "application/json", 400, "bad_request", None),
        (b"\xff\xfe{}", "application/json", 400, "bad_request", None),
        ('{"name": NaN}', "application/json", 400, "bad_request", None),
        ("[" * 100_000, "application/json", 400, "bad_request", None),
        (json.dumps(SPEC), "text/plain", 415, "unsupported_media_type", None),
        (json.dumps(SPEC), None, 415, "unsupported_media_type", None),
        ("[1, 2]", "application/json", 422, "invalid_spec", "(root)"),
        ('"spec"', "application/json", 422, "invalid_spec", "(root)"),
        (json.dumps({**SPEC, "colour": "red"}), "application/json", 422, "invalid_spec", "colour"),
        (json.dumps({**SPEC, "train": {"batch_size": "many"}}), "application/json", 422, "invalid_spec", "train.batch_size"),
        (json.dumps({**SPEC, "train": {"batch_size": 0}}), "application/json", 422, "invalid_spec", "train.batch_size"),
        (json.dumps({**SPEC, "train": {"steps": 10**7}}), "application/json", 422, "invalid_spec", "train.steps"),
        (json.dumps({**SPEC, "model": {"arch": "dcgan"}}), "application/json", 422, "invalid_spec", "model.arch"),
        (json.dumps({k: v for k, v in SPEC.items() if k != "dataset"}), "application/json", 422, "invalid_spec", "dataset"),
        (json.dumps({**SPEC, "name": "a\u0000b"}), "application/json", 422, "invalid_spec", "name"),
        ('{"name": "\\ud800"}', "application/json", 422, "invalid_spec", "name"),
        (json.dumps({"name": "s", "dataset": {"name": "stacked-mnist"},
                     "model": {"arch": "dcgan", "conditioning": "cgan"}}), "application/json", 422, "invalid_spec",
         "model.conditioning"),
        (json.dumps({"name": "s", "dataset": {"name": "stacked-mnist", "channels": 1},
                     "model": {"arch": "dcgan"}}), "application/json", 422, "invalid_spec", "dataset.channels"),
    ],
    ids=["truncated", "empty", "not-utf8", "nan", "too-deep", "text-plain", "no-type", "list", "string",
         "unknown-field", "wrong-type", "impossible-value", "over-deployment-limit", "cross-field", "missing",
         "nul", "lone-surrogate", "stacked-mnist-conditional", "stacked-mnist-one-channel"],
)
def test_submit_rejects_bad_input_with_the_envelope(api, body, content_type, status, code, field):
    headers = {"Content-Type": content_type} if content_type else {}
    response = api.client.post("/v1/jobs", data=body, headers=headers)
    error = assert_envelope(response, status, code)
    if field is not None:
        assert field in fields(error)
        assert all(set(d) == {"field", "problem"} for d in error["details"])
    assert api.queue.sent == []


def test_submit_body_over_the_limit_is_413(make_api):
    h = make_api(max_body_bytes=2048)
    big = {**SPEC, "name": "x" * 100, "model": {**SPEC["model"], "hidden_g": [16] * 1000}}
    assert_envelope(h.client.post("/v1/jobs", json=big), 413, "payload_too_large")
    assert h.client.post("/v1/jobs", json=SPEC).status_code == 201  # the limit leaves room for real specs


def test_submit_reports_the_deployment_limits(make_api):
    h = make_api(max_batch_size=32)
    error = assert_envelope(h.client.post("/v1/jobs", json={**SPEC, "train": {"batch_size": 64}}), 422, "invalid_spec")
    assert error["details"] == [{"field": "train.batch_size", "problem": "at most 32 examples per batch are allowed here"}]


# ---- read, list ------------------------------------------------------------------------------------
def test_get_job_view_has_every_field(api):
    job_id, token = running_job(api.db)
    lifecycle.record_metrics(api.db, job_id, token, [(2, {"loss_d": 0.5, "loss_g": 1.5})], 60)
    lifecycle.finish(api.db, job_id, token, "failed", "diverged at step 2")
    job = api.client.get(f"/v1/jobs/{job_id}").get_json()
    assert set(job) == {"id", "name", "status", "queue", "progress", "created_at", "updated_at", "started_at",
                        "finished_at", "attempts", "max_attempts", "error", "cancel_requested", "latest_metrics",
                        "evaluation", "sweep_id", "spec", "events", "attempt_errors", "runtime_seconds", "divergences",
                        "health", "stop_reason", "devices", "waiting_reason", "logs_url", "tags", "notes",
                        "dataset_summary"}
    assert job["status"] == "failed" and job["error"] == "diverged at step 2"
    assert (job["attempt_errors"], job["runtime_seconds"], job["divergences"]) == ([], 0.0, 0)
    assert (job["health"], job["stop_reason"]) == ([], None)
    assert job["progress"] == {"step": 2, "total": 3, "fraction": 0.6667}
    assert job["attempts"] == 1 and job["max_attempts"] == 3
    assert job["latest_metrics"] == {"step": 2, "loss_d": 0.5, "loss_g": 1.5}
    for key in ("created_at", "updated_at", "started_at", "finished_at"):
        assert ISO_Z.match(job[key]), job[key]
    assert [(e["from"], e["to"], e["attempt"]) for e in job["events"]] == [
        (None, "queued", 0), ("queued", "running", 1), ("running", "failed", 1)]
    assert all(ISO_Z.match(e["at"]) and isinstance(e["message"], str) for e in job["events"])


@pytest.mark.parametrize("job_id", ["0" * 32, "not-an-id", "A" * 32, "x" * 500])
def test_unknown_or_malformed_job_ids_are_404(api, job_id):
    for method, path in (("get", ""), ("post", "/cancel"), ("get", "/metrics"), ("get", "/samples"),
                         ("get", "/checkpoints")):
        assert_envelope(getattr(api.client, method)(f"/v1/jobs/{job_id}{path}"), 404, "not_found")
    assert_envelope(api.client.post(f"/v1/jobs/{job_id}/generate", json={"n": 1}), 404, "not_found")


def test_unknown_routes_and_methods_get_the_envelope(api):
    assert_envelope(api.client.get("/v1/nothing"), 404, "not_found")
    response = api.client.delete("/v1/jobs")
    assert_envelope(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]


def test_an_unexpected_exception_is_a_logged_500_envelope(make_api, caplog):
    h = make_api()

    @h.app.get("/boom")
    def boom():
        raise RuntimeError("a bug")

    with caplog.at_level(logging.ERROR, logger="ganforge.api.errors"):
        response = h.client.get("/boom")
    assert_envelope(response, 500, "internal")
    assert "a bug" not in response.get_data(as_text=True)  # internals stay in the log
    assert any(r.exc_info and "a bug" in str(r.exc_info[1]) for r in caplog.records)


def _seed_jobs(db: Database, n: int) -> list[dict[str, Any]]:
    """``n`` jobs in one bulk insert; timestamps come in threes so the id must break ties."""
    rng = random.Random(7)
    base = datetime(2025, 1, 1, tzinfo=timezone.utc)
    spec = JobSpec.model_validate(SPEC).model_dump(mode="json")
    rows = []
    for i in range(n):
        at = base + timedelta(milliseconds=i // 3)
        rows.append({"id": secrets.token_hex(16), "tenant": "default", "name": f"job-{i}", "spec": spec,
                     "status": rng.choice(STATUSES), "queue": "cpu", "progress_step": 0, "total_steps": 3,
                     "attempt": 0, "max_attempts": 3, "cancel_requested": False, "created_at": at, "updated_at": at})
    with db.session() as session:
        session.execute(insert(Job), rows)
    return rows


def _walk(client, query: str) -> tuple[list[str], int]:
    ids, pages, cursor = [], 0, None
    while True:
        url = f"/v1/jobs?{query}" + (f"&cursor={cursor}" if cursor else "")
        response = client.get(url)
        assert response.status_code == 200, response.get_data(as_text=True)
        page = response.get_json()
        ids += [item["id"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            return ids, pages
        assert pages < 1000


def test_list_pages_through_10000_jobs_in_order_without_gaps_or_duplicates(api):
    rows = _seed_jobs(api.db, 10_000)
    newest_first = sorted(rows, key=lambda r: (r["created_at"], r["id"]), reverse=True)

    ids, pages = _walk(api.client, "limit=200")
    assert ids == [r["id"] for r in newest_first] and pages == 50

    expected = [r["id"] for r in newest_first if r["status"] == "running"]
    ids, pages = _walk(api.client, "status=running&limit=137")
    assert ids == expected and len(set(ids)) == len(ids)
    assert pages == -(-len(expected) // 137)

    first = api.client.get("/v1/jobs?status=running").get_json()
    assert len(first["items"]) == 50  # the default limit
    assert {item["status"] for item in first["items"]} == {"running"}
    assert set(first["items"][0]) == {"id", "name", "status", "queue", "progress", "created_at", "updated_at",
                                      "started_at", "finished_at", "attempts", "max_attempts", "error",
                                      "cancel_requested", "latest_metrics", "evaluation", "sweep_id", "tags"}


def test_list_of_no_jobs_is_empty(api):
    assert api.client.get("/v1/jobs").get_json() == {"items": [], "next_cursor": None}


@pytest.mark.parametrize(
    ("query", "field"),
    [("status=done", "status"), ("limit=0", "limit"), ("limit=201", "limit"), ("limit=ten", "limit"),
     ("limit=1.5", "limit"), ("cursor=!!!", "cursor"), ("cursor=Zm9v", "cursor"),
     ("cursor=" + "A" * 500, "cursor")],
)
def test_list_rejects_bad_query_parameters(api, query, field):
    error = assert_envelope(api.client.get(f"/v1/jobs?{query}"), 422, "invalid_request")
    assert fields(error) == {field}


# ---- cancel ----------------------------------------------------------------------------------------
def test_cancel_queued_running_and_finished_jobs(api):
    queued = submit_direct(api.db)
    body = api.client.post(f"/v1/jobs/{queued}/cancel").get_json()
    assert body["status"] == "cancelled" and body["cancel_requested"] is True
    assert body["events"][-1]["to"] == "cancelled" and ISO_Z.match(body["finished_at"])

    running, token = running_job(api.db)
    response = api.client.post(f"/v1/jobs/{running}/cancel")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "running" and body["cancel_requested"] is True
    assert lifecycle.heartbeat(api.db, running, token, 60) is True  # the worker learns of it

    lifecycle.finish(api.db, running, token, "cancelled", "stopped")
    error = assert_envelope(api.client.post(f"/v1/jobs/{running}/cancel"), 409, "conflict")
    assert "cancelled" in error["message"]


# ---- metrics ---------------------------------------------------------------------------------------
def test_metrics_series_filters_and_downsampling(api):
    job_id, token = running_job(api.db)
    rows = [(step, {"loss_d": step / 10, "loss_g": -step, "acc_d": 0.5}) for step in range(10, 210, 10)]
    lifecycle.record_metrics(api.db, job_id, token, rows, 60)
    get = lambda query="": api.client.get(f"/v1/jobs/{job_id}/metrics{query}")  # noqa: E731

    series = get().get_json()["series"]
    assert set(series) == {"loss_d", "loss_g", "acc_d"}
    assert series["loss_d"]["steps"] == list(range(10, 210, 10))
    assert series["loss_d"]["values"] == pytest.approx([s / 10 for s in range(10, 210, 10)])

    series = get("?names=loss_g,missing&since_step=150").get_json()["series"]
    assert series == {"loss_g": {"steps": [160, 170, 180, 190, 200], "values": [-160, -170, -180, -190, -200]},
                      "missing": {"steps": [], "values": []}}

    series = get("?names=loss_d&max_points=5").get_json()["series"]["loss_d"]
    assert len(series["steps"]) == 5 and series["steps"][0] == 10 and series["steps"][-1] == 200
    assert series["steps"] == sorted(set(series["steps"]))

    for query, field in (("?since_step=-1", "since_step"), ("?since_step=x", "since_step"), ("?max_points=1", "max_points"),
                         ("?max_points=abc", "max_points"), ("?names=a%20b", "names"), ("?names=,,", "names"),
                         ("?names=" + ",".join(f"m{i}" for i in range(40)), "names")):
        assert fields(assert_envelope(get(query), 422, "invalid_request")) == {field}, query


@pytest.mark.parametrize(("n", "m"), [(10, 2), (10, 3), (101, 7), (5, 5), (5, 9), (1000, 999)])
def test_downsample_keeps_the_ends_and_strides_evenly(n, m):
    steps, values = downsample(list(range(n)), [float(i) for i in range(n)], m)
    assert len(steps) == min(n, m) and steps[0] == 0 and steps[-1] == n - 1
    assert steps == sorted(set(steps)) and values == [float(s) for s in steps]


# ---- samples, checkpoints, artifact content ---------------------------------------------------------
def test_samples_listing_signed_urls_streaming_and_expiry(api):
    job_id, token = running_job(api.db)
    grids = {step: PNG_MAGIC + secrets.token_bytes(3000 + step) for step in (200, 100, 300)}
    for step, data in grids.items():
        add_artifact(api, job_id, token, "sample_grid", step, sample_key(job_id, step), data, "image/png")

    listing = api.client.get(f"/v1/jobs/{job_id}/samples").get_json()["items"]
    assert [item["step"] for item in listing] == [100, 200, 300]
    item = listing[0]
    assert set(item) >= {"id", "step", "url", "expires_at", "bytes", "sha256"}
    assert item["bytes"] == len(grids[100]) and ISO_Z.match(item["expires_at"])
    query = parse_qs(urlsplit(item["url"]).query)
    assert urlsplit(item["url"]).path == f"/v1/artifacts/{item['id']}/content"
    assert int(query["expires"][0]) - time.time() == pytest.approx(600, abs=5)

    response = api.client.get(local_path(item["url"]))  # no credentials: the URL is enough
    assert response.status_code == 200
    assert response.data == grids[100] and response.mimetype == "image/png"
    assert response.headers["Content-Length"] == str(len(grids[100]))
    assert response.headers["ETag"] == f'"{item["sha256"]}"'
    assert api.client.get(local_path(item["url"]), headers={"If-None-Match": f'"{item["sha256"]}"'}).status_code == 304

    # Tampered, borrowed or half-missing signatures are refused.
    expires, signature = query["expires"][0], query["signature"][0]
    other = listing[1]["id"]
    for url in (f"/v1/artifacts/{item['id']}/content?expires={int(expires) + 1}&signature={signature}",
                f"/v1/artifacts/{other}/content?expires={expires}&signature={signature}",
                f"/v1/artifacts/{item['id']}/content?signature={signature}",
                f"/v1/artifacts/{item['id']}/content?expires={expires}&signature=abc"):
        assert_envelope(api.client.get(url), 403, "forbidden")

    # Past its expiry the URL is refused; listing again gives a fresh one that works.
    signer = api.app.extensions["ganforge.signer"]
    signer.clock = lambda: time.time() + 601
    assert_envelope(api.client.get(local_path(item["url"])), 403, "forbidden")
    fresh = api.client.get(f"/v1/jobs/{job_id}/samples").get_json()["items"][0]
    assert fresh["url"] != item["url"] and fresh["expires_at"] > item["expires_at"]
    assert api.client.get(local_path(fresh["url"])).data == grids[100]

    assert_envelope(api.client.get(f"/v1/artifacts/{'0' * 32}/content"), 404, "not_found")
    assert_envelope(api.client.get("/v1/artifacts/../content"), 404, "not_found")


def test_artifact_content_missing_from_the_store_is_404(api):
    job_id, token = running_job(api.db)
    artifact_id = add_artifact(api, job_id, token, "sample_grid", 1, sample_key(job_id, 1), b"png", "image/png")
    api.storage.delete(sample_key(job_id, 1))
    assert_envelope(api.client.get(f"/v1/artifacts/{artifact_id}/content"), 404, "not_found")


class PresigningStorage(LocalStorage):
    """A local store that presigns like S3 does (the API must then hand out the store's URL)."""

    def presigned_url(self, key: str, ttl_seconds: int) -> str | None:
        return f"https://store.example/{key}?ttl={ttl_seconds}"


def test_checkpoints_listing_with_final_and_store_presigned_urls(make_api, tmp_path):
    h = make_api(storage=PresigningStorage(tmp_path / "presigned"))
    job_id, token = running_job(h.db)
    assert h.client.get(f"/v1/jobs/{job_id}/checkpoints").get_json() == {"items": [], "final": None}
    for step in (6, 3):
        add_artifact(h, job_id, token, "checkpoint", step, checkpoint_key(job_id, step), b"ckpt%d" % step)
    add_artifact(h, job_id, token, "sample_grid", 3, sample_key(job_id, 3), b"png", "image/png")
    add_artifact(h, job_id, token, "final_model", 6, final_key(job_id), b"generator")
    body = h.client.get(f"/v1/jobs/{job_id}/checkpoints").get_json()
    assert [item["step"] for item in body["items"]] == [3, 6]
    assert body["items"][0]["url"] == f"https://store.example/{checkpoint_key(job_id, 3)}?ttl=600"
    assert body["final"]["step"] == 6 and body["final"]["url"].endswith(f"{final_key(job_id)}?ttl=600")
    assert body["final"]["bytes"] == len(b"generator")


def test_a_store_outage_is_503_not_500(make_api, tmp_path):
    class BrokenStorage(LocalStorage):
        def presigned_url(self, key: str, ttl_seconds: int) -> str | None:
            raise StorageError("connection refused")

    h = make_api(storage=BrokenStorage(tmp_path / "broken"))
    job_id, token = running_job(h.db)
    add_artifact(h, job_id, token, "sample_grid", 1, sample_key(job_id, 1), b"png", "image/png")
    assert_envelope(h.client.get(f"/v1/jobs/{job_id}/samples"), 503, "storage_unavailable")


# ---- generate --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained() -> dict[str, bytes]:
    """A real (tiny) ring8 training checkpoint and generator file, 3 steps."""
    from gan_core import checkpoint as ckpt
    from gan_core.trainer import Trainer

    trainer = Trainer(JobSpec.model_validate(SPEC))
    trainer.run(3)
    return {"checkpoint": ckpt.to_bytes(trainer.checkpoint()), "final": ckpt.to_bytes(trainer.generator_file())}


def test_generate_from_a_real_checkpoint(api, trained):
    job_id, token = running_job(api.db)
    generate = lambda **body: api.client.post(f"/v1/jobs/{job_id}/generate", json=body)  # noqa: E731
    assert_envelope(generate(n=4), 409, "no_checkpoint")

    add_artifact(api, job_id, token, "checkpoint", 3, checkpoint_key(job_id, 3), trained["checkpoint"])
    png = generate(n=16, seed=5)
    assert png.status_code == 200, png.get_data(as_text=True)
    assert png.mimetype == "image/png" and png.data.startswith(PNG_MAGIC)
    assert png.headers["X-Checkpoint-Step"] == "3"
    assert generate(n=16, seed=5).data == png.data  # deterministic in (checkpoint, n, seed)

    npy = generate(n=8, seed=5, format="npy")
    assert npy.mimetype == "application/octet-stream"
    samples = np.load(io.BytesIO(npy.data), allow_pickle=False)
    assert samples.shape == (8, 2) and samples.dtype == np.float32 and np.isfinite(samples).all()
    again = np.load(io.BytesIO(generate(n=8, seed=6, format="npy").data), allow_pickle=False)
    assert not np.array_equal(samples, again)
    assert api.app.extensions["ganforge.generation"].loads == 1  # loaded once, then cached

    many = generate(n=300, format="npy")  # past the inline limit: runs on the pool
    assert np.load(io.BytesIO(many.data), allow_pickle=False).shape == (300, 2)

    for body, field in (({"n": 0}, "n"), ({"n": 1025}, "n"), ({"n": "4"}, "n"), ({"n": True}, "n"),
                        ({"seed": -1}, "seed"), ({"format": "gif"}, "format"), ({"labels": 1}, "labels"),
                        ({"labels": [0, 1]}, "labels"), ({"labels": "x"}, "labels"),
                        ({"labels": [0, True]}, "labels"), ({"checkpoint": 4}, "checkpoint"), ({"colour": 1}, "colour")):
        error = assert_envelope(generate(**body), 422, "invalid_request")
        assert field in fields(error), (body, error)

    add_artifact(api, job_id, token, "final_model", 3, final_key(job_id), trained["final"])
    final = generate(n=8, format="npy")
    assert final.status_code == 200 and final.headers["X-Artifact-Id"] != npy.headers["X-Artifact-Id"]
    assert generate(n=8, format="npy", checkpoint=3).status_code == 200


def test_generate_answers_503_when_busy_or_too_slow(api, trained, monkeypatch):
    job_id, token = running_job(api.db)
    add_artifact(api, job_id, token, "checkpoint", 3, checkpoint_key(job_id, 3), trained["checkpoint"])
    runtime = api.app.extensions["ganforge.generation"]

    release = threading.Event()

    real_render = render

    def slow_render(loaded, n, *args, **kwargs):
        if n > runtime.inline_max:  # only the pooled requests hang
            release.wait(5)
        return real_render(loaded, n, *args, **kwargs)

    monkeypatch.setattr("ganforge.api.jobs.render", slow_render)
    runtime.timeout = 0.05
    assert_envelope(api.client.post(f"/v1/jobs/{job_id}/generate", json={"n": 512}), 503, "busy")
    # Small requests never queue behind the pool.
    assert api.client.post(f"/v1/jobs/{job_id}/generate", json={"n": 8}).status_code == 200

    while runtime._slots.acquire(blocking=False):  # the rest of the capacity taken by others
        pass
    response = api.client.post(f"/v1/jobs/{job_id}/generate", json={"n": 512})
    assert_envelope(response, 503, "busy")
    assert response.headers["Retry-After"] == "5"
    release.set()


def test_generate_rejects_a_corrupt_checkpoint(api):
    job_id, token = running_job(api.db)
    add_artifact(api, job_id, token, "checkpoint", 3, checkpoint_key(job_id, 3), b"not a checkpoint")
    assert_envelope(api.client.post(f"/v1/jobs/{job_id}/generate", json={"n": 2}), 409, "checkpoint_unusable")


def test_generate_with_and_without_rejection_sampling(api, monkeypatch):
    from gan_core import checkpoint as ckpt
    from gan_core.rejection import RejectionError
    from gan_core.trainer import Trainer

    trainer = Trainer(JobSpec.model_validate({**SPEC, "sampling": {"rejection": "discriminator"}}))
    trainer.run(3)
    job_id, token = running_job(api.db)
    add_artifact(api, job_id, token, "final_model", 3, final_key(job_id), ckpt.to_bytes(trainer.generator_file()))
    generate = lambda **body: api.client.post(f"/v1/jobs/{job_id}/generate", json=body)  # noqa: E731
    kept = np.load(io.BytesIO(generate(n=64, format="npy").data), allow_pickle=False)
    raw = np.load(io.BytesIO(generate(n=64, format="npy", rejection=False).data), allow_pickle=False)
    assert kept.shape == raw.shape == (64, 2) and not np.array_equal(kept, raw)
    assert np.array_equal(kept, np.load(io.BytesIO(generate(n=64, format="npy").data), allow_pickle=False))
    assert "rejection" in fields(assert_envelope(generate(n=4, rejection="yes"), 422, "invalid_request"))

    def keeps_nothing(*args, **kwargs):
        raise RejectionError("the discriminator kept 0 of 51200 candidates; too few for rejection sampling")

    monkeypatch.setattr("ganforge.api.jobs.render", keeps_nothing)
    error = assert_envelope(generate(n=4), 422, "invalid_request")
    assert "rejection" in fields(error) and "rejection: false" in error["message"]


class _Conditional:
    num_classes = 10


class _Plain:
    num_classes = None


@pytest.mark.parametrize(
    ("loaded", "n", "labels", "ok"),
    [(_Conditional, 3, None, True), (_Conditional, 3, 9, True), (_Conditional, 3, [0, 1, 2], True),
     (_Conditional, 3, 10, False), (_Conditional, 3, [0, 1], False), (_Conditional, 2, [0, -1], False),
     (_Plain, 3, None, True), (_Plain, 3, 0, False)],
)
def test_label_checks(loaded, n, labels, ok):
    assert (label_problem(loaded, n, labels) is None) == ok


# ---- health ----------------------------------------------------------------------------------------
def test_healthz_and_readyz(make_api, tmp_path):
    h = make_api()
    assert h.client.get("/healthz").get_json() == {"status": "ok"}
    ready = h.client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["status"] == "ready"
    assert {name: c["status"] for name, c in ready.get_json()["checks"].items()} == {
        "database": "ok", "broker": "ok", "storage": "ok"}

    class DeadBroker(RecordingEnqueuer):
        def check(self) -> None:
            raise ConnectionError("broker unreachable")

    class DeadStorage(LocalStorage):
        def check(self) -> None:
            raise StorageError("bucket gone")

    h = make_api(queue=DeadBroker(), storage=DeadStorage(tmp_path / "dead"))
    response = h.client.get("/readyz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "unavailable" and body["failed"] == ["broker", "storage"]
    assert body["checks"]["database"]["status"] == "ok"
    assert "bucket gone" in body["checks"]["storage"]["error"]


# ---- never a 5xx for bad input ----------------------------------------------------------------------
def _random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 2**31, 2**63, -(2**70), 10**30, rng.randrange(-1000, 100_000)])
    if kind == 3:
        return rng.choice([0.0, -0.5, 1e-300, 1e300, rng.uniform(-10, 10)])
    if kind in (4, 5):
        return rng.choice(["", "ring8", "mnist", "dcgan", "cuda", "a" * 500, "\u0000", "\ud800", "é🙂", "../../etc",
                           "png", "npy", "' OR 1=1 --"])
    if kind == 6:
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["name", "dataset", "model", "train", "eval", "loss", "device", "n", "seed", "labels", "format",
            "checkpoint", "steps", "batch_size", "arch", "latent_dim", "hidden_g", "limit", "path", "x\u0000"]
    return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randrange(5))}


def _mutated_spec(rng: random.Random) -> dict[str, Any]:
    """A valid spec with one or two values replaced: reaches deep validation paths."""
    doc = json.loads(json.dumps(SPEC))
    for _ in range(rng.randrange(1, 3)):
        section = rng.choice(["model", "train", "dataset", None])
        target = doc if section is None else doc.setdefault(section, {})
        if not isinstance(target, dict):  # an earlier round replaced the whole section
            target = doc
        key = rng.choice(list(target) + ["steps", "pack", "conditioning", "image_size", "ema_decay"])
        target[key] = _random_json(rng, 3)
    return doc


def _plausible(rng: random.Random, generate: bool) -> dict[str, Any]:
    """A body that is often valid: known values in random combinations."""
    if generate:
        return {"n": rng.randrange(1, 65), "seed": rng.randrange(2**40), "format": rng.choice(["png", "npy"]),
                "checkpoint": rng.choice([None, 3, 4]), "labels": rng.choice([None, None, None, 0])}
    return {**SPEC, "name": rng.choice(["a", "é🙂", "x" * 120, "x" * 121]), "loss": rng.choice(["bce", "hinge", "lsgan", "l1"]),
            "train": {"steps": rng.randrange(0, 50), "batch_size": rng.choice([1, 16, 63, 5000])},
            "model": {**SPEC["model"], "pack": rng.choice([1, 2, 3]), "arch": rng.choice(["mlp", "mlp", "dcgan"])}}


def test_random_bodies_and_queries_never_get_a_5xx(api, trained):
    job_id, token = running_job(api.db)
    add_artifact(api, job_id, token, "checkpoint", 3, checkpoint_key(job_id, 3), trained["checkpoint"])
    rng = random.Random(1234)
    statuses: dict[int, int] = {}
    for i in range(400):
        path = "/v1/jobs" if i % 4 != 3 else f"/v1/jobs/{job_id}/generate"
        body = (_plausible(rng, path.endswith("generate")), _mutated_spec(rng), _random_json(rng))[i % 3]
        if isinstance(body, dict) and path.endswith("generate") and isinstance(body.get("n"), int):
            body["n"] = min(body["n"], 64)  # keep valid requests cheap
        raw = json.dumps(body, allow_nan=False)
        if i % 25 == 0:
            raw = raw[: rng.randrange(len(raw) + 1)]  # truncated
        response = api.client.post(path, data=raw, content_type="application/json")
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        assert response.status_code < 500, (path, raw, response.get_data(as_text=True))
        if response.status_code >= 400:
            assert set(response.get_json()["error"]) >= {"code", "message", "details"}
    alphabet = "abc019-_=&%,;:.!~ \u00e9"
    for _ in range(150):
        junk = "".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))
        name = rng.choice(["status", "limit", "cursor", "names", "since_step", "max_points"])
        for path in ("/v1/jobs", f"/v1/jobs/{job_id}/metrics"):
            response = api.client.get(path, query_string={name: junk})
            assert response.status_code < 500, (path, name, junk)
    # Valid and invalid bodies were both tried, on both endpoints.
    assert statuses.get(201, 0) > 0 and statuses.get(200, 0) > 0 and statuses.get(422, 0) > 0, statuses


# ---- settings: the signing secret ---------------------------------------------------------------------
def test_signing_secret_is_generated_once_in_embedded_mode(tmp_path):
    settings = Settings(data_dir=tmp_path / "home")
    first = settings.resolve_signing_secret()
    assert len(first) >= 32 and first == Settings(data_dir=tmp_path / "home").resolve_signing_secret()
    mode = (tmp_path / "home" / "secret_key").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600
    assert Settings(data_dir=tmp_path / "home", signing_secret="given").resolve_signing_secret() == "given"
    assert Settings.from_env({"GANFORGE_HOME": str(tmp_path), "GANFORGE_SECRET_KEY": "s3cret"}).signing_secret == "s3cret"
    assert "s3cret" not in repr(Settings(signing_secret="s3cret"))


def test_production_without_a_secret_refuses_to_start(tmp_path):
    settings = Settings.from_env({"GANFORGE_MODE": "production", "GANFORGE_DATABASE_URL": f"sqlite:///{tmp_path}/db",
                                  "GANFORGE_BROKER_URL": "memory://", "GANFORGE_STORAGE_URL": f"file://{tmp_path}/a"})
    with pytest.raises(SettingsError, match="GANFORGE_SECRET_KEY"):
        settings.resolve_signing_secret()
    with pytest.raises(SettingsError, match="GANFORGE_SECRET_KEY"):
        create_app(services=Services(settings, Database(settings.database_url), LocalStorage(tmp_path / "a"),
                                     RecordingEnqueuer()))


# ---- app factory and logging -----------------------------------------------------------------------
def test_create_app_builds_its_services_from_settings(tmp_path):
    settings = Settings(data_dir=tmp_path / "home", database_url=f"sqlite:///{tmp_path}/db.sqlite", broker_url="memory://",
                        storage_url=f"file://{tmp_path}/artifacts", signing_secret="s")
    app = create_app(settings)
    assert app.extensions["ganforge"].settings is settings
    assert app.config["MAX_CONTENT_LENGTH"] == settings.max_body_bytes
    assert app.test_client().get("/healthz").get_json() == {"status": "ok"}
    app.extensions["ganforge"].db.dispose()
    with pytest.raises(ValueError):
        create_app(settings.with_(max_body_bytes=1), services=app.extensions["ganforge"])


def test_log_lines_are_json_with_the_request_id(make_api):
    from ganforge.api.logging import JSONFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        h = make_api()  # the app adds the request id to the handlers it finds
        response = h.client.post("/v1/jobs", json=SPEC, headers={"X-Request-ID": "req-123"})
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    assert response.headers["X-Request-ID"] == "req-123"
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    submitted = [line for line in lines if line["logger"] == "ganforge.api.jobs"]
    assert submitted and submitted[0]["request_id"] == "req-123"
    assert submitted[0]["job_id"] == response.get_json()["id"]
    access = [line for line in lines if line["logger"] == "api.access"][-1]
    assert access["request_id"] == "req-123" and access["status"] == 201 and access["method"] == "POST"
    assert access["path"] == "/v1/jobs" and access["duration_ms"] >= 0 and access["time"].endswith("Z")
