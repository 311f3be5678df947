"""The service's figures on this machine, with real servers: PostgreSQL, Redis, an S3 server (moto),
gunicorn and a Celery worker process.

1. submit → running with an idle worker: POST /v1/jobs until the job's started_at, over --jobs
   tiny jobs (each finishes before the next is sent); p50 / p95.
2. GET /v1/jobs/{id} under gunicorn, started as `ganforge api` starts it: wrk (loopback, bounded
   in time): requests/s and p99, for a finished job (its view is remembered by the API process)
   and for a running job (one database read per request).
3. Training through the worker against gan_core's bare loop on the same spec (classic MNIST MLP,
   --steps steps, no evaluation): wall time of the job (claimed → finished, uploads and metric
   writes included) against Trainer.run() in a fresh process with no callbacks, alternated over
   --rounds pairs; the median ratio is the figure.

    python bench/service.py [--jobs 50] [--wrk-seconds 10] [--steps 2000] [--rounds 3] [--api-workers N] [--api-threads T]

MNIST for phase 3 comes from GANFORGE_DATA_DIR (e.g. ../shared/datasets) or the configured mirrors.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.prerequisites import Needs  # noqa: E402
from ganforge.resources import preset_text  # noqa: E402

TINY = {"name": "latency", "dataset": {"name": "ring8"}, "model": {"latent_dim": 2, "hidden_g": [16], "hidden_d": [16]},
        "train": {"steps": 1, "batch_size": 8}, "device": "cpu", "eval": {"at_end": False}}
CLASSIC = json.loads(preset_text("classic-mlp-mnist"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(what)


def main() -> None:
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--wrk-seconds", type=int, default=10)
    parser.add_argument("--wrk-connections", type=int, default=16)
    parser.add_argument("--api-workers", type=int, help="gunicorn workers (default: as `ganforge api`, one per CPU)")
    parser.add_argument("--api-threads", type=int, default=4, help="gthread threads per gunicorn worker")
    parser.add_argument("--shared-socket", action="store_true", help="one listening socket for all workers "
                        "(gunicorn's default) instead of one per worker (SO_REUSEPORT)")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3, help="phase 3: worker / bare pairs (median reported)")
    parser.add_argument("--phases", default="123", help="which measurements to run, e.g. 2")
    args = parser.parse_args()
    needs = Needs("bench/service.py").python("psycopg", "redis", "moto", "gunicorn", "celery", "torch")
    needs.postgres().redis()
    if "2" in args.phases:
        needs.command("wrk", "apt-get install -y wrk, or leave phase 2 out: --phases 13")
    if "3" in args.phases:
        needs.mnist()
    needs.check()

    import psycopg
    import redis
    from moto.server import ThreadedMotoServer

    from ganforge.cli.serve import gunicorn_argv
    from ganforge.client import Client
    from ganforge.jobs.migrate import upgrade

    db_name = f"ganforge_bench_{secrets.token_hex(4)}"
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db_name}"')
    db_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{db_name}"
    upgrade(db_url)
    redis_db = 13
    redis.Redis(host="127.0.0.1", db=redis_db).flushdb()
    s3_port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=s3_port)
    moto.start()
    api_port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="ganforge-bench-"))
    env = {**os.environ, "GANFORGE_MODE": "production", "GANFORGE_DATABASE_URL": db_url,
           "GANFORGE_BROKER_URL": f"redis://127.0.0.1:6379/{redis_db}", "GANFORGE_STORAGE_URL": "s3://bench/artifacts",
           "GANFORGE_SECRET_KEY": secrets.token_hex(16), "AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}",
           "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
           "OMP_NUM_THREADS": "1", "GANFORGE_LOG_JSON": "1"}
    import boto3

    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                 aws_access_key_id="bench", aws_secret_access_key="bench").create_bucket(Bucket="bench")
    api_argv = gunicorn_argv("127.0.0.1", api_port, args.api_workers, args.api_threads, reuse_port=not args.shared_socket)
    api = subprocess.Popen(api_argv, env=env, cwd=REPO,
                           stdout=(workdir / "api.log").open("wb"), stderr=subprocess.STDOUT)
    worker = subprocess.Popen([sys.executable, "-m", "ganforge.cli", "worker", "--queues", "cpu"], env=env, cwd=REPO,
                              stdout=(workdir / "worker.log").open("wb"), stderr=subprocess.STDOUT)
    # Production needs API keys: one tenant key, created as an operator would (the GET load below
    # includes the key lookup, cached per process for GANFORGE_AUTH_CACHE_SECONDS).
    from ganforge.jobs import lifecycle
    from ganforge.jobs.db import Database
    from ganforge.jobs.keys import create_key

    key_db = Database(db_url)
    api_key = create_key(key_db, "bench")[1]
    client = Client(f"http://127.0.0.1:{api_port}", api_key=api_key)
    try:
        wait_until(lambda: _ok(client), 60, "API up")
        print(f"servers: PostgreSQL {db_name}, Redis db {redis_db}, moto S3 :{s3_port}, gunicorn x{api_argv[api_argv.index('--workers') + 1]} x{args.api_threads} threads :{api_port}, "
              f"1 worker (solo pool); {os.cpu_count()} CPUs")

        # 1. submit → running
        latencies = []
        warm = job = client.submit(TINY)
        wait_until(lambda: client.job(warm["id"])["status"] == "succeeded", 120, "warm-up job")
        for _ in range(args.jobs if "1" in args.phases else 0):
            t0 = datetime.now(timezone.utc)
            job = client.submit(TINY)
            started = wait_until(lambda: client.job(job["id"]).get("started_at"), 60, "job start")
            latencies.append((datetime.fromisoformat(started.replace("Z", "+00:00")) - t0).total_seconds() * 1000)
            wait_until(lambda: client.job(job["id"])["status"] in ("succeeded", "failed"), 120, "job end")
        q = statistics.quantiles(latencies, n=20) if latencies else [float("nan")] * 19
        if latencies:
            print(f"1. submit -> running (idle worker, Redis broker), {len(latencies)} jobs: "
              f"p50 {statistics.median(latencies):.1f} ms, p95 {q[18]:.1f} ms   (target p50 <= 100 ms)")

        # 2. GET /v1/jobs/{id} under load: a finished job (its view is served from the API
        # process's memory) and a running one (a database read each time). The running job is
        # held by this script while the worker is paused, so no training competes for the CPUs.
        if "2" in args.phases:
            _get_load(args, api_port, job["id"], api_key, "finished job")
            worker.send_signal(signal.SIGSTOP)
            try:
                live = client.submit(TINY)
                lifecycle.claim(key_db, live["id"], "bench-holder", lease_seconds=3600)
                assert client.job(live["id"])["status"] == "running"
                _get_load(args, api_port, live["id"], api_key, "running job")
            finally:
                worker.send_signal(signal.SIGCONT)
        if "3" not in args.phases:
            return
        # 3. training through the worker vs the bare loop, alternated over --rounds (this machine
        # drifts by several % between runs of the same loop; a median of paired ratios, each
        # pair run back to back, is steadier than one pair).
        spec = {**CLASSIC, "train": {**CLASSIC["train"], "steps": args.steps}, "eval": {"at_end": False}, "device": "cpu"}
        ratios = []
        for round_ in range(args.rounds):
            worker_s = _through_worker(client, spec)
            worker.send_signal(signal.SIGSTOP)  # the bare run gets the machine the worker had
            try:
                bare_s = _bare(spec)
            finally:
                worker.send_signal(signal.SIGCONT)
            ratios.append(bare_s / worker_s)
            print(f"   round {round_ + 1}: worker job {worker_s:.1f} s ({args.steps / worker_s:.1f} steps/s), "
                  f"bare gan_core Trainer {bare_s:.1f} s ({args.steps / bare_s:.1f} steps/s): {ratios[-1]:.3f}x")
        print(f"3. classic MNIST MLP, {args.steps} steps, {args.rounds} rounds: worker / bare steps/s median "
              f"{statistics.median(ratios):.3f}x (each: {', '.join(f'{r:.3f}' for r in ratios)})   (target >= 0.97x)")
    finally:
        for proc in (api, worker):
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        moto.stop()
        key_db.dispose()
        with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')


def _get_load(args, api_port: int, job_id: str, api_key: str, what: str) -> None:
    out = subprocess.run(["wrk", "-t2", f"-c{args.wrk_connections}", f"-d{args.wrk_seconds}s", "--latency",
                          "-H", f"Authorization: Bearer {api_key}",
                          f"http://127.0.0.1:{api_port}/v1/jobs/{job_id}"], capture_output=True, text=True,
                         timeout=args.wrk_seconds + 30)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out.stdout).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out.stdout)
    p99_ms = float(p99.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[p99.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out.stdout)
    print(f"2. GET /v1/jobs/{{id}} ({what}), wrk {args.wrk_connections} connections {args.wrk_seconds} s: {rps:.0f} req/s, "
          f"p99 {p99_ms:.1f} ms, non-2xx {errors.group(1) if errors else 0}   (target >= 2000 req/s, p99 <= 25 ms)")


def _ok(client) -> bool:
    try:
        return client.health()["status"] == "ok"
    except OSError:
        return False


def _through_worker(client, spec: dict) -> float:
    """Seconds from claimed to finished of ``spec`` run as a job (uploads and metric writes included)."""
    job = client.submit(spec)
    while (done := client.job(job["id"]))["status"] not in ("succeeded", "failed"):
        time.sleep(2.0)  # a slow poll: the API must not compete with the training it measures
    assert done["status"] == "succeeded", done
    return (datetime.fromisoformat(done["finished_at"].replace("Z", "+00:00"))
            - datetime.fromisoformat(done["started_at"].replace("Z", "+00:00"))).total_seconds()


def _bare(spec: dict) -> float:
    """The same job with gan_core alone, in a fresh process like the worker's (one torch thread)."""
    code = ("import json,sys,time,torch; torch.set_num_threads(1)\n"
            "from gan_core.spec import JobSpec; from gan_core.trainer import Trainer\n"
            "t0=time.perf_counter(); Trainer(JobSpec.model_validate(json.loads(sys.argv[1]))).run()\n"
            "print(time.perf_counter()-t0)")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True, check=True,
                         cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return float(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
