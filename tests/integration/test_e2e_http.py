"""End to end over HTTP: client → API (gunicorn) → Redis → worker process → S3 → presigned URL,
and the same in the embedded mode (`ganforge up`: SQLite, local store, serverless broker)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ganforge.client import APIError, Client
from gan_core.images import png_to_array

ROOT = Path(__file__).resolve().parents[2]
RING = {"name": "ring-http", "dataset": {"name": "ring8"},
        "model": {"latent_dim": 2, "hidden_g": [64, 64], "hidden_d": [64, 64]},
        "train": {"steps": 300, "batch_size": 64}, "log_every": 50, "sample_every": 100,
        "checkpoint_every": 150, "device": "cpu", "eval": {"n_samples": 500}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(client: Client, proc: subprocess.Popen, log: Path, timeout=60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {log.read_text()[-3000:]}")
        try:
            client.health()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("server did not come up")


def wait_job(client: Client, job_id: str, timeout=180.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.job(job_id)
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.3)
    raise AssertionError(f"job still {job['status']}")


def check_finished_job(client: Client, job_id: str) -> None:
    job = wait_job(client, job_id)
    assert job["status"] == "succeeded", job
    assert job["progress"]["step"] == 300 and job["attempts"] == 1
    assert [e["to"] for e in job["events"] if e["from"] != e["to"]] == ["queued", "running", "succeeded"]
    samples = client.samples(job_id)["items"]
    assert [s["step"] for s in samples] == [100, 200, 300]
    png = client.download(samples[-1]["url"])  # presigned (S3) or API-signed (local) URL, no credentials
    assert png_to_array(png).ndim >= 2
    assert [c["step"] for c in client.checkpoints(job_id)["items"]] == [150, 300]
    grid = client.generate(job_id, n=64, seed=3)
    assert grid[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = client.metrics(job_id, names=["loss_d"])["series"]["loss_d"]
    assert metrics["steps"] == [50, 100, 150, 200, 250, 300]


def test_http_to_worker_to_s3(service_env, start_worker, tmp_path):
    port = free_port()
    api_log = tmp_path / "api.log"
    api = subprocess.Popen([sys.executable, "-m", "ganforge.cli", "api", "--port", str(port), "--workers", "2"],
                           env=service_env, stdout=api_log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT)
    start_worker(service_env, tmp_path)
    try:
        # Production requires API keys: made by the operator command, printed alone on the last line.
        made = subprocess.run([sys.executable, "-m", "ganforge.cli", "keys", "create", "--tenant", "acme"], env=service_env,
                              cwd=ROOT, capture_output=True, text=True, check=True)
        key = made.stdout.strip().splitlines()[-1]
        assert key.startswith("gf_")
        client = Client(f"http://127.0.0.1:{port}", api_key=key)
        wait_http(client, api, api_log)
        with pytest.raises(APIError) as refused:
            Client(f"http://127.0.0.1:{port}", api_key="").jobs()
        assert refused.value.status == 401
        assert client.ready()["status"] == "ready"
        job = client.submit(RING)
        assert job["status"] == "queued"
        check_finished_job(client, job["id"])
        assert "X-Amz-Signature" in client.samples(job["id"])["items"][0]["url"]  # S3 presigned
        with pytest.raises(APIError) as info:
            client.submit({**RING, "train": {"batch_size": 0}})
        assert info.value.status == 422 and info.value.details[0]["field"] == "train.batch_size"
    finally:
        api.terminate()
        api.wait(20)


def test_embedded_mode_end_to_end(tmp_path):
    """`ganforge up` with no environment: SQLite, local store, SQLAlchemy broker, real worker."""
    port = free_port()
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("GANFORGE_", "AWS_"))}
    env["GANFORGE_DATA_DIR"] = str(ROOT.parent / "shared" / "datasets")
    env["OMP_NUM_THREADS"] = "1"
    log = tmp_path / "up.log"
    up = subprocess.Popen([sys.executable, "-m", "ganforge.cli", "up", "--port", str(port), "--data-dir", str(tmp_path / "home")],
                          env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        client = Client(f"http://127.0.0.1:{port}")
        wait_http(client, up, log)
        job = client.submit(RING)
        check_finished_job(client, job["id"])
        assert "/v1/artifacts/" in client.samples(job["id"])["items"][0]["url"]  # served by the API
        assert (tmp_path / "home" / "ganforge.db").exists() and (tmp_path / "home" / "artifacts").is_dir()
        # Cancel: a queued job never runs; a running one stops and ends cancelled.
        long = client.submit({**RING, "train": {"steps": 100_000, "batch_size": 64}})
        deadline = time.monotonic() + 60
        while client.job(long["id"])["progress"]["step"] < 50 and time.monotonic() < deadline:
            time.sleep(0.2)
        queued = client.submit(RING)
        assert client.cancel(queued["id"])["status"] == "cancelled"
        assert client.cancel(long["id"])["cancel_requested"] is True
        assert wait_job(client, long["id"], timeout=30)["status"] == "cancelled"
        assert client.job(queued["id"])["attempts"] == 0
    finally:
        up.terminate()
        up.wait(40)
    # Stopping `ganforge up` (SIGTERM) stops its worker too: no orphan keeps running.
    deadline = time.monotonic() + 40
    while _processes_with_env(f"GANFORGE_HOME={tmp_path / 'home'}") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _processes_with_env(f"GANFORGE_HOME={tmp_path / 'home'}") == []


def _processes_with_env(entry: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if entry.encode() in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_embedded_mode_trains_a_two_device_job(tmp_path):
    """`ganforge up --devices 2` on a CPU: a 2-device job trains as two gloo ranks started by torch's
    launcher, its attempt log is listed; a 4-device job waits, saying why."""
    port = free_port()
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("GANFORGE_", "AWS_"))}
    env["GANFORGE_DATA_DIR"] = str(ROOT.parent / "shared" / "datasets")
    env["OMP_NUM_THREADS"] = "1"
    log = tmp_path / "up.log"
    up = subprocess.Popen([sys.executable, "-m", "ganforge.cli", "up", "--port", str(port), "--data-dir",
                           str(tmp_path / "home"), "--devices", "2"],
                          env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        client = Client(f"http://127.0.0.1:{port}")
        wait_http(client, up, log)
        job = client.submit({**RING, "resources": {"devices": 2}})
        assert job["queue"] == "cpu-x2" and job["devices"] == 2
        check_finished_job(client, job["id"])
        deadline = time.monotonic() + 60
        while not client.logs(job["id"])["items"] and time.monotonic() < deadline:
            time.sleep(0.5)
        (entry,) = client.logs(job["id"])["items"]
        text = client.download(entry["url"]).decode()
        assert "[default1]" in text
        lines = list(client.log_lines(job["id"]))  # each rank's lines, live, in the job's own log (item 12)
        assert {line.rank for line in lines} >= {0, 1} and any(line.rank is None for line in lines)
        big = client.submit({**RING, "resources": {"devices": 4}})
        deadline = time.monotonic() + 60
        while not client.job(big["id"])["waiting_reason"] and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "needs 4 CPU devices" in client.job(big["id"])["waiting_reason"]
    finally:
        up.terminate()
        up.wait(40)
