"""A sweep on real workers: the ring8 preset's learning rates and seeds, random search, with ASHA
and without, on PostgreSQL, a private Redis, a local artifact store and N `ganforge worker`
processes.

    python bench/sweep.py                          # 16 trials of presets/ring8-quality.json, 2 workers
    python bench/sweep.py --steps 1500 --trials 8  # shorter
    python bench/sweep.py --spec presets/sweeps/grid25-search.json --workers 2   # a sweep file, as it is

Prints, for each run (pruned with ASHA, then every trial to its end): the wall time from submit to
the sweep's end, trials succeeded / pruned, the best trial's parameters and final figures; and the
control-plane cost per trial: the time from one trial's end (its job's terminal event) to the next
trial's job row (asked of Optuna and queued by ganforge.jobs.sweeps.advance), over every trial after the
first max_parallel. Needs PostgreSQL on 127.0.0.1:5432 and redis-server.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.prerequisites import Needs  # noqa: E402
from ganforge.resources import preset_text  # noqa: E402

TERMINAL = ("succeeded", "failed", "cancelled")


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


def sweep_doc(args: argparse.Namespace, pruning: bool) -> dict:
    if args.spec:  # a sweep file (a preset of presets/sweeps/) run as it is, on CPU workers
        doc = json.loads(Path(args.spec).read_text())
        doc["base"] = {**doc["base"], "device": "cpu", "max_attempts": 5}
        if args.steps is not None:  # the same sweep on a shorter budget: every step count scaled
            base, scale = doc["base"], args.steps / doc["base"]["train"]["steps"]
            base["train"] = {**base["train"], "steps": args.steps}
            base["eval_every"] = max(1, round(base["eval_every"] * scale))
            for key in ("sample_every", "checkpoint_every"):
                base[key] = min(base[key], args.steps)
            if doc.get("early_stopping"):
                doc["early_stopping"] = {**doc["early_stopping"],
                                         "min_steps": max(1, round(doc["early_stopping"]["min_steps"] * scale))}
        if args.trials is not None:
            doc["trials"] = args.trials
        return doc
    base = json.loads(preset_text("ring8-quality"))
    base.update({"device": "cpu", "eval_every": args.eval_every, "max_attempts": 5})
    base["train"] = {**base["train"], "steps": args.steps}
    base["checkpoint_every"] = min(base["checkpoint_every"], args.steps)
    doc = {"name": f"bench-{'asha' if pruning else 'full'}", "base": base, "method": "random",
           "trials": args.trials, "max_parallel": args.workers, "seed": args.seed,
           "space": {"train.lr_d": {"type": "log_uniform", "low": 1e-4, "high": 3e-3},
                     "train.lr_g": {"type": "log_uniform", "low": 1e-4, "high": 3e-3},
                     "train.seed": {"type": "int", "low": 0, "high": 10000}},
           "objective": {"metric": "hq_percent", "direction": "maximize"}}
    if pruning:
        doc["early_stopping"] = {"method": "asha", "min_steps": args.min_steps, "reduction_factor": args.reduction_factor}
    return doc


def control_plane_gaps(services, sweep_id: str, max_parallel: int) -> list[float]:
    """Seconds from a trial's end to the next trial's job row, for each trial after the first batch."""
    from sqlalchemy import select

    from ganforge.jobs.models import Job, JobEvent

    with services.db.read() as session:
        created = sorted(session.execute(select(Job.created_at).where(Job.sweep_id == sweep_id)).scalars())
        ends = sorted(session.execute(select(JobEvent.at).join(Job, Job.id == JobEvent.job_id).where(
            Job.sweep_id == sweep_id, JobEvent.to_status.in_(TERMINAL), JobEvent.from_status != JobEvent.to_status))
            .scalars())
    gaps = []
    for when in created[max_parallel:]:
        before = [end for end in ends if end <= when]
        if before:
            gaps.append((when - before[-1]).total_seconds())
    return gaps


def run(args, services, env, logs: Path, pruning: bool) -> dict:
    from ganforge.jobs import sweeps
    from ganforge.jobs.models import Job, Sweep
    from ganforge.jobs.sweep_spec import SweepSpec, check_sweep

    spec = SweepSpec.model_validate(sweep_doc(args, pruning), context=services.settings.spec_limits)
    check_sweep(spec, services.settings.spec_limits)
    workers = [subprocess.Popen([sys.executable, "-m", "ganforge.cli", "worker", "--queues", "cpu", "--hostname",
                                 f"w{n}-{spec.name}@bench"], env=env, cwd=ROOT, stderr=subprocess.STDOUT,
                                stdout=(logs / f"{spec.name}-w{n}.log").open("wb")) for n in range(args.workers)]
    try:
        time.sleep(3.0)  # the workers start (imports) before the clock does
        t0 = time.monotonic()
        sweep_id = sweeps.submit(services.db, spec, "bench").sweep_id
        sweeps.advance(services, sweep_id)
        shown: set[int] = set()
        while True:
            with services.db.read() as session:
                sweep = session.get(Sweep, sweep_id)
                ended = [(trial, session.get(Job, trial.job_id)) for trial, _ in sweeps.trial_rows(session, sweep_id)
                         if trial.status not in sweeps.ACTIVE and trial.number not in shown]
            for trial, job in ended:  # as they end: a run cut short still shows what it found
                shown.add(trial.number)
                figures = (job.evaluation or {}) if job else {}
                print(f"  trial {trial.number} {trial.status} after {job.progress_step if job else 0} steps "
                      f"at {time.monotonic() - t0:.0f} s: {spec.objective.metric} {trial.objective}, "
                      f"modes {figures.get('modes')}, raw hq {(figures.get('raw') or {}).get('hq_percent')}; "
                      f"{json.dumps(trial.params)}", flush=True)
            if sweep.finished_at is not None:
                break
            if time.monotonic() - t0 > args.timeout:
                raise SystemExit(f"{spec.name}: not finished after {args.timeout:.0f} s")
            time.sleep(0.5)
        wall = time.monotonic() - t0
    finally:
        for proc in workers:
            proc.send_signal(signal.SIGTERM)
        for proc in workers:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    with services.db.read() as session:
        rows = sweeps.trial_rows(session, sweep_id)
        trials = [trial for trial, _ in rows]
        best = sweeps.best(spec, trials)
        evaluation = session.get(Job, best.job_id).evaluation if best else None
        steps = sum(job.progress_step for job in session.query(Job).filter(Job.sweep_id == sweep_id))
    return {"name": spec.name, "status": sweep.status, "wall_s": wall, "trials": len(trials),
            "succeeded": sum(t.status == "succeeded" for t in trials), "pruned": sum(t.status == "pruned" for t in trials),
            "steps_trained": steps, "best": best, "evaluation": evaluation,
            "gaps_ms": [1000 * g for g in control_plane_gaps(services, sweep_id, spec.max_parallel)]}


def report(result: dict) -> None:
    print(f"{result['name']}: {result['status']} in {result['wall_s']:.0f} s; {result['trials']} trials, "
          f"{result['succeeded']} succeeded, {result['pruned']} pruned; {result['steps_trained']} steps trained")
    best, figures = result["best"], result["evaluation"] or {}
    if best is not None:
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.params.items())
        print(f"  best trial {best.number} ({params}): hq_percent {figures.get('hq_percent', float('nan')):.1f}, "
              f"modes {figures.get('modes')}/{figures.get('n_modes')}, reverse_kl {figures.get('reverse_kl') or float('nan'):.3f}")
    gaps = result["gaps_ms"]
    if gaps:
        print(f"  control plane, trial end -> next trial queued: median {statistics.median(gaps):.0f} ms, "
              f"mean {statistics.fmean(gaps):.0f} ms, max {max(gaps):.0f} ms over {len(gaps)} trials")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=None, help="default 16 (with --spec: the file's)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--steps", type=int, default=None, help="train.steps of each trial (default: the preset's 6000; "
                                                           "with --spec: the file's, others scaled with it)")
    ap.add_argument("--eval-every", type=int, default=None, help="default: steps / 6")
    ap.add_argument("--min-steps", type=int, default=None, help="ASHA's first rung (default: steps / 6)")
    ap.add_argument("--reduction-factor", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=("asha", "full"), help="run one of the two sweeps")
    ap.add_argument("--spec", help="run this sweep file once instead (its own trials, space and early stopping; "
                                   "--workers should match its max_parallel)")
    ap.add_argument("--timeout", type=float, default=7200.0)
    args = ap.parse_args()
    if not args.spec:
        args.trials, args.steps = args.trials or 16, args.steps or 6000
    args.eval_every = args.eval_every or max(1, (args.steps or 6) // 6)
    args.min_steps = args.min_steps or args.eval_every
    (Needs("bench/sweep.py").python("psycopg", "redis", "celery", "torch", "optuna")
     .command("redis-server", "apt-get install -y redis-server").postgres().check())
    import psycopg

    from ganforge.jobs.migrate import upgrade
    from ganforge.jobs.services import Services
    from ganforge.jobs.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="ganforge-sweep-"))
    db_name = f"ganforge_sweep_{secrets.token_hex(4)}"
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db_name}"')
    db_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{db_name}"
    upgrade(db_url)
    redis_port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--dir", str(tmp)], stdout=subprocess.DEVNULL)
    wait_port(redis_port)
    env = {**os.environ, "GANFORGE_MODE": "production", "GANFORGE_DATABASE_URL": db_url,
           "GANFORGE_BROKER_URL": f"redis://127.0.0.1:{redis_port}/0",
           "GANFORGE_STORAGE_URL": f"file://{tmp / 'store'}", "GANFORGE_SECRET_KEY": "bench",
           "GANFORGE_HOME": str(tmp / "home"), "OMP_NUM_THREADS": "1", "GANFORGE_LOG_JSON": "1"}
    services = Services.from_settings(Settings.from_env(env))
    logs = tmp / "logs"
    logs.mkdir()
    if args.spec:
        print(f"{args.spec}; {args.workers} workers; logs in {logs}", flush=True)
    else:
        print(f"{args.trials} trials of ring8-quality at {args.steps} steps (eval every {args.eval_every}), "
              f"random search over lr_d, lr_g, seed; {args.workers} workers; logs in {logs}", flush=True)
    try:
        results = []
        for pruning in (True, False):
            if args.spec and not pruning:
                continue
            if args.only and args.only != ("asha" if pruning else "full"):
                continue
            results.append(run(args, services, env, logs, pruning))
            report(results[-1])
            sys.stdout.flush()
        if len(results) == 2:
            print(f"wall time with ASHA / without: {results[0]['wall_s'] / results[1]['wall_s']:.2f} "
                  f"({results[0]['wall_s']:.0f} s vs {results[1]['wall_s']:.0f} s)")
    finally:
        services.db.dispose()
        redis.kill()
        with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
