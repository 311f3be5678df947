"""GET /v1/jobs/{id}/bundle: the whole job as one streamed zip (spec, metrics as CSV and JSONL,
grids, final generator, evaluation), tenancy like every job endpoint. SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import zipfile

from ganforge.jobs import lifecycle
from ganforge.jobs.keys import create_key
from ganforge.jobs.storage import evaluation_key, final_key, loss_plot_key, sample_key
from tests.api.test_api import SPEC, add_artifact, assert_envelope, fields, running_job
from tests.api.test_security import bearer

PNG = b"\x89PNG\r\n\x1a\n" + b"grid"


def finished_job(h) -> tuple[str, dict[str, bytes]]:
    job_id, token = running_job(h.db)
    rows = [(step, {"loss_d": 0.5 + step / 100, "loss_g": 1.0 - step / 100}) for step in range(10, 310, 10)]
    rows += [(150, {"eval/fid": 12.5}), (300, {"eval/fid": 7.25})]
    lifecycle.record_metrics(h.db, job_id, token, rows, 60)
    stored = {f"samples/step-{s:06d}.png": PNG + bytes([s % 256]) for s in (100, 200, 300)}
    for s in (100, 200, 300):
        add_artifact(h, job_id, token, "sample_grid", s, sample_key(job_id, s), stored[f"samples/step-{s:06d}.png"], "image/png")
    stored["generator.pt"] = os.urandom(3 << 20)  # bigger than a chunk: streamed in pieces
    add_artifact(h, job_id, token, "final_model", 300, final_key(job_id), stored["generator.pt"])
    stored["evaluation/step-000300.json"] = json.dumps({"fid": 7.25}).encode()
    add_artifact(h, job_id, token, "evaluation", 300, evaluation_key(job_id, 300), stored["evaluation/step-000300.json"],
                 "application/json")
    stored["loss.png"] = PNG + b"loss"
    add_artifact(h, job_id, token, "loss_plot", 300, loss_plot_key(job_id), stored["loss.png"], "image/png")
    add_artifact(h, job_id, token, "checkpoint", 300, f"jobs/{job_id}/checkpoints/step-000300.pt", b"ckpt")
    lifecycle.finish(h.db, job_id, token, "succeeded", evaluation={"fid": 7.25, "modes": 8}, step=300)
    return job_id, stored


def test_the_bundle_holds_the_whole_job(api):
    job_id, stored = finished_job(api)
    response = api.client.get(f"/v1/jobs/{job_id}/bundle")
    assert response.status_code == 200 and response.mimetype == "application/zip"
    assert response.is_streamed
    assert response.headers["Content-Disposition"] == f'attachment; filename="ring-{job_id[:8]}.zip"'
    chunks = list(response.response)
    assert len(chunks) > 3  # written and sent as it goes, not as one body
    archive = zipfile.ZipFile(io.BytesIO(b"".join(chunks)))
    assert archive.testzip() is None
    assert archive.namelist() == ["job.json", "spec.json", "metrics.csv", "metrics.jsonl",
                                  "samples/step-000100.png", "samples/step-000200.png", "samples/step-000300.png",
                                  "generator.pt", "evaluation.json", "evaluation/step-000300.json", "loss.png"]
    for name, data in stored.items():  # every artifact byte for byte (no checkpoint: not a result)
        assert hashlib.sha256(archive.read(name)).digest() == hashlib.sha256(data).digest(), name
    assert archive.getinfo("generator.pt").compress_type == zipfile.ZIP_STORED
    assert archive.getinfo("metrics.csv").compress_type == zipfile.ZIP_DEFLATED

    job = json.loads(archive.read("job.json"))
    assert job["id"] == job_id and job["status"] == "succeeded"
    assert json.loads(archive.read("spec.json")) == api.client.get(f"/v1/jobs/{job_id}").get_json()["spec"]
    assert json.loads(archive.read("evaluation.json")) == {"fid": 7.25, "modes": 8}

    table = list(csv.DictReader(io.StringIO(archive.read("metrics.csv").decode())))
    assert list(table[0]) == ["step", "eval/fid", "loss_d", "loss_g"]
    assert [int(r["step"]) for r in table] == list(range(10, 310, 10))
    assert float(table[14]["eval/fid"]) == 12.5 and table[13]["eval/fid"] == ""  # step 150; 140 had none
    assert float(table[-1]["loss_d"]) == 0.5 + 300 / 100 and float(table[-1]["loss_g"]) == 1.0 - 300 / 100
    lines = [json.loads(line) for line in archive.read("metrics.jsonl").decode().splitlines()]
    assert lines[14] == {"step": 150, "eval/fid": 12.5, "loss_d": 0.5 + 1.5, "loss_g": 1.0 - 1.5}
    assert lines[0] == {"step": 10, "loss_d": 0.5 + 0.1, "loss_g": 1.0 - 0.1} and len(lines) == 30
    api_series = api.client.get(f"/v1/jobs/{job_id}/metrics?names=loss_g").get_json()["series"]["loss_g"]
    assert [line["loss_g"] for line in lines] == api_series["values"]


def test_a_fresh_job_has_a_small_bundle(api):
    job_id = api.client.post("/v1/jobs", json={**SPEC, "tags": ["t"]}).get_json()["id"]
    archive = zipfile.ZipFile(io.BytesIO(api.client.get(f"/v1/jobs/{job_id}/bundle").get_data()))
    assert archive.namelist() == ["job.json", "spec.json", "metrics.csv", "metrics.jsonl"]
    assert archive.read("metrics.csv") == b"step\n" and archive.read("metrics.jsonl") == b""
    assert json.loads(archive.read("job.json"))["tags"] == ["t"]


def test_the_bundle_follows_the_tenant_rules(make_api):
    h = make_api(auth="required")
    key_a, key_b = create_key(h.db, "a")[1], create_key(h.db, "b")[1]
    admin = create_key(h.db, "ops", is_admin=True)[1]
    job_id = h.client.post("/v1/jobs", json=SPEC, headers=bearer(key_a)).get_json()["id"]
    assert h.client.get(f"/v1/jobs/{job_id}/bundle", headers=bearer(key_a)).status_code == 200
    assert h.client.get(f"/v1/jobs/{job_id}/bundle", headers=bearer(admin)).status_code == 200
    assert_envelope(h.client.get(f"/v1/jobs/{job_id}/bundle", headers=bearer(key_b)), 404, "not_found")
    assert_envelope(h.client.get(f"/v1/jobs/{job_id}/bundle"), 401, "unauthorized")
    assert_envelope(h.client.get(f"/v1/jobs/{'0' * 32}/bundle", headers=bearer(key_a)), 404, "not_found")
    error = assert_envelope(h.client.get(f"/v1/jobs/{job_id}/bundle?with=checkpoints", headers=bearer(key_a)), 422,
                            "invalid_request")
    assert fields(error) == {"with"}
