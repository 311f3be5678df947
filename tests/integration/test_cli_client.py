"""The client commands against a real `ganforge up` (API + a real worker, its own data folder):
--json on stdout (errors too), a reader that leaves early, Ctrl-C while following, wait, logs,
presets by name, clear messages, the progress bar and the summary."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ganforge.cli import main
from ganforge.client import Client
from tests.integration.test_cli_up import cli_env

ROOT = Path(__file__).resolve().parents[2]
TINY = {"name": "cli-tiny", "dataset": {"name": "ring8"}, "model": {"latent_dim": 2, "hidden_g": [32], "hidden_d": [32]},
        "train": {"steps": 200, "batch_size": 32}, "log_every": 100, "sample_every": 100, "checkpoint_every": 200,
        "device": "cpu", "eval": {"n_samples": 300}}
# Long enough to be caught running; one log line, one grid and one checkpoint, all at the end.
LONG = {**TINY, "name": "cli-long", "train": {"steps": 200_000, "batch_size": 32}, "log_every": 200_000,
        "sample_every": 200_000, "checkpoint_every": 200_000, "eval": {"at_end": False}}


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """The base URL of a `ganforge up` on a free port."""
    home = tmp_path_factory.mktemp("cli-up")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = home / "up.log"
    up = subprocess.Popen([sys.executable, "-m", "ganforge.cli", "up", "--port", str(port), "--data-dir", str(home / "data")],
                          env=cli_env(), cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        if up.poll() is not None:
            raise AssertionError(log.read_text())
        try:
            Client(url).health()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
    yield url
    up.send_signal(signal.SIGTERM)
    up.wait(60)


def cli(*args: str, url: str | None = None, timeout: float = 120, **popen) -> subprocess.CompletedProcess:
    """`ganforge ARGS` in a process of its own, as a user's shell runs it."""
    argv = [sys.executable, "-m", "ganforge.cli", *args] + (["--url", url] if url else [])
    streams = popen or {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    return subprocess.run(argv, env=cli_env(), cwd=ROOT, text=True, timeout=timeout, **streams)


def _spec(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / f"{doc['name']}.json"
    path.write_text(json.dumps(doc))
    return path


def _wait_status(client: Client, job_id: str, statuses: tuple[str, ...], timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.job(job_id)
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']}"
        time.sleep(0.2)


# ---- item 6: --json, pipes, Ctrl-C, wait, logs -------------------------------------------------
def test_json_errors_are_json_on_stdout(service, tmp_path):
    done = cli("status", "0" * 32, "--json", url=service)
    assert done.returncode == 1 and done.stderr == ""
    error = json.loads(done.stdout)["error"]
    assert error["status"] == 404 and error["exit_code"] == 1 and "not found" in error["message"]

    done = cli("submit", str(tmp_path / "missing.json"), "--json", url=service)
    assert done.returncode == 2 and json.loads(done.stdout)["error"]["exit_code"] == 2

    done = cli("list", "--json", "--no-such-flag", url=service)  # argparse's errors too
    assert done.returncode == 2 and "--no-such-flag" in json.loads(done.stdout)["error"]["message"]

    done = cli("list", "--json", url="http://127.0.0.1:9")  # nothing listens on the discard port
    assert done.returncode == 1 and json.loads(done.stdout)["error"]["url"] == "http://127.0.0.1:9"


def test_list_json_into_a_closed_pipe_ends_quietly(service, tmp_path):
    client = Client(service)
    client.submit(TINY)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte: like `| head` having exited
    try:
        done = cli("list", "--json", url=service, stdout=write_end, stderr=subprocess.PIPE)
    finally:
        os.close(write_end)
    assert done.returncode == 141
    assert done.stderr == ""  # no BrokenPipeError traceback, no "Exception ignored"


def test_ctrl_c_while_following_leaves_the_job_running(service, tmp_path):
    argv = [sys.executable, "-m", "ganforge.cli", "submit", str(_spec(tmp_path, LONG)), "--wait", "--url", service]
    proc = subprocess.Popen(argv, env=cli_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert first.startswith("submitted job "), first
        job_id = first.split()[2]
        _wait_status(Client(service), job_id, ("running",))
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "keeps running" in err and f"ganforge wait {job_id}" in err
    client = Client(service)
    assert client.job(job_id)["status"] == "running"

    # Cancel it, then cancel it again: the second says what happened instead of an HTTP 409.
    done = cli("cancel", job_id, url=service)
    assert done.returncode == 0 and "cancellation requested" in done.stdout
    done = cli("cancel", job_id, url=service)  # the worker may have stopped it in the meantime
    assert done.returncode == 0 and ("already requested" in done.stdout or "was already cancelled" in done.stdout)
    _wait_status(client, job_id, ("cancelled",), timeout=60)
    done = cli("cancel", job_id, url=service)
    assert done.returncode == 0 and "was already cancelled" in done.stdout


def test_wait_reattaches_and_logs_show_the_events(service, tmp_path):
    client = Client(service)
    job = client.submit(TINY)
    done = cli("wait", job["id"], url=service, timeout=180)
    assert done.returncode == 0, done.stderr
    assert f"{job['id']} (cli-tiny)" in done.stdout and "succeeded" in done.stdout
    assert "200 / 200, " in done.stdout and "steps/s while training" in done.stdout
    assert "http" not in done.stdout and "{" not in done.stdout  # a table, no signed URLs, no raw JSON
    assert f"ganforge samples {job['id']}" in done.stdout

    done = cli("logs", job["id"], url=service)
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert any(line.rstrip().endswith("queued") or "queued:" in line for line in lines), done.stdout
    assert any("queued -> running" in line for line in lines) and any("running -> succeeded" in line for line in lines)

    done = cli("logs", job["id"], "--json", url=service)
    assert [e["to"] for e in json.loads(done.stdout)["events"]][-1] == "succeeded"

    done = cli("wait", job["id"], "--json", url=service)
    assert done.returncode == 0 and json.loads(done.stdout)["status"] == "succeeded"

    done = cli("cancel", job["id"], url=service)
    assert done.returncode == 1 and "already ended (succeeded): there is nothing to cancel" in done.stderr

    # The service's generator, as JPEG for a .jpg (not PNG bytes under a .jpg name).
    done = cli("generate", job["id"], "--n", "16", "--out", str(tmp_path / "g.jpg"), url=service)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "g.jpg").read_bytes()[:3] == b"\xff\xd8\xff"


def test_logs_follow_ends_with_the_job(service, tmp_path):
    client = Client(service)
    job = client.submit(TINY)
    done = cli("logs", job["id"], "--follow", "--interval", "0.3", url=service, timeout=180)
    assert done.returncode == 0
    assert "running -> succeeded" in done.stdout.splitlines()[-1] or "succeeded" in done.stdout
    assert client.job(job["id"])["status"] == "succeeded"


# ---- item 7: presets by name ---------------------------------------------------------------------
def test_submit_a_preset_by_name(service, tmp_path):
    done = cli("submit", "ring8", "--json", url=service)
    assert done.returncode == 0, done.stdout + done.stderr
    job = json.loads(done.stdout)
    assert job["name"] == "ring" and job["progress"]["total"] == 3000
    assert job["spec"]["description"].startswith("2-D ring of 8 Gaussians")
    Client(service).cancel(job["id"])  # the point was the name; free the worker for the other tests


# ---- item 9: the step shows while the job runs ------------------------------------------------------
def test_the_step_shows_before_the_first_logged_metrics(service):
    """LONG logs metrics only at its last step: the step must come from the worker's heartbeat."""
    client = Client(service)
    job = client.submit(LONG)
    try:
        _wait_status(client, job["id"], ("running",))
        deadline = time.monotonic() + 20
        seen = client.job(job["id"])
        while seen["progress"]["step"] == 0 and time.monotonic() < deadline:
            time.sleep(0.3)
            seen = client.job(job["id"])
        assert 0 < seen["progress"]["step"] < LONG["train"]["steps"]
        assert seen["latest_metrics"] is None  # nothing logged yet: the step is the heartbeat's
        done = cli("status", job["id"], "--json", url=service)
        assert json.loads(done.stdout)["progress"]["step"] >= seen["progress"]["step"]
    finally:
        client.cancel(job["id"])
        _wait_status(client, job["id"], ("cancelled",), timeout=60)
