"""Item 11: Prometheus /metrics under the real gunicorn `ganforge api` starts (two processes,
PROMETHEUS_MULTIPROC_DIR), admin-only when keys are required; a worker's own /metrics on the port
it is given (`ganforge worker --metrics-port`)."""

from __future__ import annotations

import subprocess
import sys
import time

import requests
from prometheus_client.parser import text_string_to_metric_families

from ganforge.client import Client
from tests.integration.test_e2e_http import ROOT, free_port, wait_http

TINY = {"name": "metered", "dataset": {"name": "ring8"}, "model": {"latent_dim": 2, "hidden_g": [16], "hidden_d": [16]},
        "train": {"steps": 300, "batch_size": 32}, "log_every": 20, "device": "cpu", "eval": {"at_end": False}}


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found, name, **labels) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def key(env, *args) -> str:
    made = subprocess.run([sys.executable, "-m", "ganforge.cli", "keys", "create", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, check=True)
    return made.stdout.strip().splitlines()[-1]


def test_metrics_under_gunicorn_and_on_the_worker(service_env, start_worker, tmp_path):
    port, worker_port = free_port(), free_port()
    api_log = tmp_path / "api.log"
    api = subprocess.Popen([sys.executable, "-m", "ganforge.cli", "api", "--port", str(port), "--workers", "2"],
                           env=service_env, stdout=api_log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT)
    start_worker(service_env, tmp_path, extra=("--metrics-port", str(worker_port), "--metrics-host", "127.0.0.1"))
    base = f"http://127.0.0.1:{port}"
    try:
        tenant, admin = key(service_env, "--tenant", "acme"), key(service_env, "--tenant", "ops", "--admin")
        client = Client(base, api_key=tenant)
        wait_http(client, api, api_log)
        # admin only: the figures span every tenant
        assert requests.get(base + "/metrics", timeout=10).status_code == 401
        refused = requests.get(base + "/metrics", headers={"Authorization": f"Bearer {tenant}"}, timeout=10)
        assert refused.status_code == 403 and "admin" in refused.json()["error"]["message"]

        def scrape():
            response = requests.get(base + "/metrics", headers={"Authorization": f"Bearer {admin}"}, timeout=10)
            assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/plain")
            return samples(response.text)

        job = client.submit(TINY)
        queued = scrape()
        assert value(queued, "ganforge_jobs", state="queued") + value(queued, "ganforge_jobs", state="running") == 1
        client.wait(job, timeout=180)
        before = scrape()
        route = "/v1/jobs/<job_id>"
        # 40 requests, each on a new connection: the kernel spreads them over both gunicorn processes
        # (SO_REUSEPORT), and the answer to a scrape sums every process's counts
        for _ in range(40):
            assert requests.get(f"{base}/v1/jobs/{job.id}", headers={"Authorization": f"Bearer {tenant}"},
                                timeout=10).status_code == 200
        requests.get(f"{base}/v1/jobs/{'0' * 32}", headers={"Authorization": f"Bearer {tenant}"}, timeout=10)
        after = scrape()
        assert value(after, "ganforge_http_requests_total", method="GET", route=route, status="200") \
            - value(before, "ganforge_http_requests_total", method="GET", route=route, status="200") == 40
        assert value(after, "ganforge_http_requests_total", method="GET", route=route, status="404") >= 1
        assert value(after, "ganforge_http_request_duration_seconds_count", method="GET", route=route) \
            - value(before, "ganforge_http_request_duration_seconds_count", method="GET", route=route) == 41
        assert value(after, "ganforge_http_requests_total", method="GET", route="/metrics", status="401") == 1
        assert not any(job.id in str(labels) for _, labels in after), "a raw path leaked into the labels"
        assert value(after, "ganforge_jobs", state="succeeded") == 1
        assert api_log.read_text().count("Booting worker") == 2, api_log.read_text()[-2000:]  # two processes

        worker = samples(requests.get(f"http://127.0.0.1:{worker_port}/metrics", timeout=10).text)
        assert value(worker, "ganforge_lease_renewals_total") >= 1
        assert ("ganforge_worker_training_steps_per_second", frozenset()) in worker  # 0 again once idle
        assert value(worker, "ganforge_worker_training_steps_per_second") == 0
        assert value(worker, "ganforge_upload_retries_total") == 0 and value(worker, "ganforge_leases_lost_total") == 0
    finally:
        api.terminate()
        api.wait(20)


def test_the_running_jobs_speed_is_on_the_workers_metrics(service_env, start_worker, tmp_path):
    worker_port = free_port()
    start_worker(service_env, tmp_path, extra=("--metrics-port", str(worker_port), "--metrics-host", "127.0.0.1"))
    from ganforge.jobs import lifecycle
    from ganforge.jobs.services import Services
    from ganforge.jobs.settings import Settings
    from gan_core.spec import JobSpec

    svc = Services.from_settings(Settings.from_env(service_env))
    long = {**TINY, "train": {"steps": 100_000, "batch_size": 32}}
    with svc.db.session() as session:
        job_id = lifecycle.submit(session, JobSpec.model_validate(long)).id
    svc.queue.enqueue(job_id, "cpu")
    try:
        deadline, steps, images = time.monotonic() + 120, 0.0, 0.0
        while time.monotonic() < deadline and not steps:
            try:
                found = samples(requests.get(f"http://127.0.0.1:{worker_port}/metrics", timeout=5).text)
            except requests.ConnectionError:
                found = {}
            steps = value(found, "ganforge_worker_training_steps_per_second")
            images = value(found, "ganforge_worker_training_images_per_second")
            time.sleep(0.5)
        assert steps > 0 and images == steps * 32, (steps, images)
    finally:
        lifecycle.request_cancel(svc.db, job_id)
        svc.db.dispose()
