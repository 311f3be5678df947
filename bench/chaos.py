"""A bounded chaos run against real processes: PostgreSQL, a private Redis, a moto S3 server
and two `ganforge worker` processes that keep being killed with SIGKILL.

    python bench/chaos.py                  # 20 jobs, >= 50 kills, one Redis restart, one 30 s S3 outage

Prints: jobs submitted, succeeded, lost (not succeeded), runs that overlapped in time for one job
(two attempts training at once, from the event history), and the mean time from a kill to the
killed job training again (its next claim). Needs PostgreSQL on 127.0.0.1:5432 and redis-server.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.prerequisites import Needs  # noqa: E402
from ganforge.resources import preset_text  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if socket.socket().connect_ex(("127.0.0.1", port)) == 0:
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--outage", type=float, default=30.0, help="seconds the S3 server is down")
    ap.add_argument("--timeout", type=float, default=1500.0)
    args = ap.parse_args()
    (Needs("bench/chaos.py").python("moto", "psycopg", "redis", "celery", "torch")
     .command("redis-server", "apt-get install -y redis-server").postgres().mnist().check())
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log

    import boto3
    import psycopg
    from moto.server import ThreadedMotoServer
    from sqlalchemy import select

    from gan_core.spec import JobSpec
    from ganforge.jobs import lifecycle
    from ganforge.jobs.migrate import upgrade
    from ganforge.jobs.models import Job, JobEvent
    from ganforge.jobs.services import Services
    from ganforge.jobs.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="ganforge-chaos-"))
    db_name = f"ganforge_chaos_{secrets.token_hex(4)}"
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db_name}"')
    db_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{db_name}"
    upgrade(db_url)

    redis_port, s3_port = free_port(), free_port()

    def start_redis():
        proc = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", str(tmp)], stdout=subprocess.DEVNULL)
        wait_port(redis_port)
        return proc

    redis = start_redis()
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"})
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=s3_port, verbose=False)
    s3.start()
    endpoint = f"http://127.0.0.1:{s3_port}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="chaos")
    env = {**os.environ, "GANFORGE_MODE": "production", "GANFORGE_DATABASE_URL": db_url,
           "GANFORGE_BROKER_URL": f"redis://127.0.0.1:{redis_port}/0", "GANFORGE_STORAGE_URL": "s3://chaos/run",
           "GANFORGE_SECRET_KEY": "chaos", "AWS_ENDPOINT_URL": endpoint, "AWS_MAX_ATTEMPTS": "1",
           "GANFORGE_LEASE_SECONDS": "5", "GANFORGE_RECONCILE_SECONDS": "1", "GANFORGE_REQUEUE_AFTER_SECONDS": "5",
           "GANFORGE_HOME": str(tmp / "home"), "OMP_NUM_THREADS": "1", "GANFORGE_LOG_JSON": "1"}
    shared = ROOT.parent / "shared" / "datasets"
    if "GANFORGE_DATA_DIR" not in env and shared.is_dir():
        env["GANFORGE_DATA_DIR"] = str(shared)
    services = Services.from_settings(Settings.from_env(env))
    logs = tmp / "logs"
    logs.mkdir()
    started = [0]

    def start_worker() -> subprocess.Popen:
        started[0] += 1
        log = (logs / f"w{started[0]}.log").open("wb")
        return subprocess.Popen([sys.executable, "-m", "ganforge.cli", "worker", "--queues", "cpu",
                                 "--hostname", f"w{started[0]}@chaos"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                cwd=ROOT)

    spec = {"name": "chaos", "dataset": {"name": "ring8"},
            "model": {"latent_dim": 2, "hidden_g": [64, 64], "hidden_d": [64, 64]},
            "train": {"steps": args.steps, "batch_size": 64}, "log_every": 50, "sample_every": 250,
            "checkpoint_every": 200, "device": "cpu", "eval": {"n_samples": 500}, "max_attempts": 20}
    job_ids = []
    for n in range(args.jobs):
        doc = {**spec, "train": {**spec["train"], "seed": n}}
        with services.db.session() as session:
            job_ids.append(lifecycle.submit(session, JobSpec.model_validate(doc)).id)
        services.queue.enqueue(job_ids[-1], "cpu")
    workers = [start_worker() for _ in range(args.workers)]
    host = socket.gethostname()
    kills: list[tuple[str, datetime]] = []  # (job id, when)
    rng = random.Random(0)
    t0 = time.monotonic()
    redis_restarted = outage_done = False
    outage_thread = None

    def statuses() -> dict[str, str]:
        with services.db.read() as session:
            return dict(session.execute(select(Job.id, Job.status).where(Job.id.in_(job_ids))).all())

    def outage() -> None:
        nonlocal s3
        s3.stop()
        print(f"[{time.monotonic() - t0:6.1f}s] S3 down for {args.outage:.0f} s", flush=True)
        time.sleep(args.outage)
        s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=s3_port, verbose=False)
        s3.start()
        print(f"[{time.monotonic() - t0:6.1f}s] S3 back", flush=True)

    while time.monotonic() - t0 < args.timeout:
        done = statuses()
        if all(s in ("succeeded", "failed", "cancelled") for s in done.values()):
            break
        elapsed = time.monotonic() - t0
        if not redis_restarted and len(kills) >= args.kills // 3:
            redis.kill()
            redis.wait()
            time.sleep(1)
            redis = start_redis()
            redis_restarted = True
            print(f"[{elapsed:6.1f}s] Redis restarted empty", flush=True)
        if not outage_done and len(kills) >= args.kills // 2:
            outage_thread = threading.Thread(target=outage, daemon=True)
            outage_thread.start()
            outage_done = True
        if len(kills) < args.kills:
            # kill a worker that is training (it holds a lease), then replace it
            with services.db.read() as session:
                running = session.execute(select(Job.id, Job.worker_id, Job.progress_step)
                                          .where(Job.id.in_(job_ids), Job.status == "running")).all()
            by_pid = {int(w.split(":")[1]): (j, step) for j, w, step in running if w and w.startswith(host + ":")}
            # spread the kills over the jobs: none is killed more than its share (+1)
            killed = collections.Counter(j for j, _ in kills)
            share = -(-args.kills // args.jobs) + 1
            victims = [w for w in workers if w.pid in by_pid and by_pid[w.pid][1] > 0 and killed[by_pid[w.pid][0]] < share]
            if victims:
                victim = rng.choice(victims)
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                kills.append((by_pid[victim.pid][0], datetime.now(timezone.utc)))
                workers[workers.index(victim)] = start_worker()
                time.sleep(rng.uniform(2.0, 6.0))
                continue
        time.sleep(0.5)
    if outage_thread is not None:
        outage_thread.join()
    final = statuses()
    for w in workers:
        w.send_signal(signal.SIGTERM)
    for w in workers:
        try:
            w.wait(30)
        except subprocess.TimeoutExpired:
            w.kill()

    with services.db.read() as session:
        events = session.execute(select(JobEvent.job_id, JobEvent.at, JobEvent.from_status, JobEvent.to_status)
                                 .where(JobEvent.job_id.in_(job_ids)).order_by(JobEvent.id)).all()
    overlaps = 0
    claims: dict[str, list[datetime]] = {}
    running: dict[str, bool] = {}
    for job_id, at, before, after in events:
        if after == "running" and before != "running":
            if running.get(job_id):
                overlaps += 1
            running[job_id] = True
            claims.setdefault(job_id, []).append(at)
        elif before == "running" and after != "running":
            running[job_id] = False
    recoveries = []
    for job_id, when in kills:
        later = [at for at in claims.get(job_id, []) if at > when]
        if later:
            recoveries.append((later[0] - when).total_seconds())
    succeeded = sum(1 for s in final.values() if s == "succeeded")
    with services.db.read() as session:
        for job_id, status, attempt, error in session.execute(
                select(Job.id, Job.status, Job.attempt, Job.error).where(Job.id.in_(job_ids), Job.status != "succeeded")):
            print(f"NOT SUCCEEDED {job_id}: {status} after {attempt} attempts: {error}")
    per_job = collections.Counter(j for j, _ in kills)
    print(f"jobs submitted:               {len(job_ids)}")
    print(f"worker kills (SIGKILL):       {len(kills)} over {len(per_job)} jobs (at most {max(per_job.values(), default=0)} per job)")
    print(f"redis restarted empty:        {'yes' if redis_restarted else 'no'}")
    print(f"s3 outage:                    {'%.0f s' % args.outage if outage_done else 'no'}")
    print(f"succeeded:                    {succeeded}")
    print(f"lost (not succeeded):         {len(job_ids) - succeeded}")
    print(f"overlapping runs of one job:  {overlaps}")
    if recoveries:
        print(f"kill -> training again:       mean {statistics.mean(recoveries):.1f} s, "
              f"median {statistics.median(recoveries):.1f} s, max {max(recoveries):.1f} s over {len(recoveries)} kills")
    print(f"wall time:                    {time.monotonic() - t0:.0f} s")

    # Cancellation latency on the classic MNIST MLP (CPU): cancel at step >= 300, time to `cancelled`.
    mnist = json.loads(preset_text("classic-mlp-mnist"))
    mnist.update({"device": "cpu", "log_every": 50})
    worker = start_worker()
    latencies = []
    for _ in range(3):
        with services.db.session() as session:
            job_id = lifecycle.submit(session, JobSpec.model_validate(mnist)).id
        services.queue.enqueue(job_id, "cpu")
        while True:
            with services.db.read() as session:
                if session.get(Job, job_id).progress_step >= 300:
                    break
            time.sleep(0.05)
        asked = time.monotonic()
        lifecycle.request_cancel(services.db, job_id)
        while True:
            with services.db.read() as session:
                if session.get(Job, job_id).status == "cancelled":
                    break
            time.sleep(0.02)
        latencies.append(time.monotonic() - asked)
    worker.send_signal(signal.SIGTERM)
    worker.wait(30)
    print(f"cancel running MNIST MLP:     {', '.join(f'{x:.2f}' for x in latencies)} s (checkpoint saved, then cancelled)")
    redis.kill()
    s3.stop()
    services.db.dispose()
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
    return 0 if succeeded == len(job_ids) and overlaps == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
