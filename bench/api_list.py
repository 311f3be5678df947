"""Latency of GET /v1/jobs: a page of 50 out of 10 000 jobs, filtered by status.

    python bench/api_list.py                      # a temporary SQLite file
    python bench/api_list.py --postgres postgresql://postgres@127.0.0.1:5432/postgres
                                                  # a temporary database on that server (dropped after)

Seeds the jobs in one bulk insert (five statuses, so about 2 000 match the filter), then times
the whole request through Flask's test client (routing, query, serialisation; no network):
the first page, and a page deep in the listing reached by its cursor; then the label filters:
a rare tag (1 job in 500), a common one (every other job), a name search matching a few jobs and
one matching all of them. Prints the median and 95th percentile in milliseconds. The target is a
median of at most 20 ms.
"""

from __future__ import annotations

import argparse
import logging
import random
import secrets
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.prerequisites import Needs  # noqa: E402

log = logging.getLogger("bench.api_list")


@contextmanager
def database(admin_dsn: str | None, workdir: Path) -> Iterator[str]:
    if admin_dsn is None:
        yield f"sqlite:///{workdir / 'bench.db'}"
        return
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"ganforge_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield make_url(admin_dsn).set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def seed(db, n: int) -> None:
    from sqlalchemy import insert, text

    from gan_core.spec import JobSpec
    from ganforge.jobs.models import STATUSES, Job

    rng = random.Random(0)
    spec = JobSpec.model_validate({"name": "bench", "dataset": {"name": "ring8"}}).model_dump(mode="json")
    base = datetime(2025, 1, 1, tzinfo=timezone.utc)
    rows = []
    for i in range(n):
        at = base + timedelta(seconds=i)
        rows.append({"id": secrets.token_hex(16), "tenant": "default", "name": f"job-{i}", "spec": spec,
                     "status": rng.choice(STATUSES), "queue": "cpu", "progress_step": rng.randrange(1000),
                     "total_steps": 1000, "attempt": 1, "max_attempts": 3, "cancel_requested": False,
                     "latest_metrics": {"step": 100, "loss_d": 0.7, "loss_g": 1.2}, "created_at": at, "updated_at": at,
                     "tags": [f"t{i % 500}"] + (["common"] if i % 2 else [])})
    with db.session() as session:
        session.execute(insert(Job), rows)
    with db.engine.begin() as connection:  # fresh planner statistics, as a live database would have
        connection.execute(text("ANALYZE"))


def timed(client, url: str, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, response.get_data(as_text=True)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", metavar="ADMIN_DSN", help="benchmark PostgreSQL (a temporary database)")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--status", default="running")
    args = parser.parse_args(argv)
    needs = Needs("bench/api_list.py").python("flask", "sqlalchemy", "torch")
    if args.postgres:
        dsn = urlsplit(args.postgres)
        needs.python("psycopg").postgres(dsn.hostname or "127.0.0.1", dsn.port or 5432)
    needs.check()
    logging.basicConfig(level=logging.WARNING)

    from ganforge.api import create_app
    from ganforge.jobs.db import Database
    from ganforge.jobs.models import Base
    from ganforge.jobs.queue import RecordingEnqueuer
    from ganforge.jobs.services import Services
    from ganforge.jobs.settings import Settings
    from ganforge.jobs.storage import LocalStorage

    with tempfile.TemporaryDirectory() as tmp, database(args.postgres, Path(tmp)) as url:
        db = Database(url)
        Base.metadata.create_all(db.engine)
        seed(db, args.jobs)
        settings = Settings(data_dir=Path(tmp), database_url=url, signing_secret="bench")
        client = create_app(services=Services(settings, db, LocalStorage(Path(tmp) / "a"), RecordingEnqueuer())).test_client()
        first = f"/v1/jobs?status={args.status}&limit=50"
        cursor = None
        for _ in range(20):  # twenty pages in: a cursor from the middle of the listing
            cursor = client.get(first + (f"&cursor={cursor}" if cursor else "")).get_json()["next_cursor"]
        timed(client, first, 20)  # warm-up: connections, caches
        results = {"first page": timed(client, first, args.repeats),
                   "page 21 (cursor)": timed(client, f"{first}&cursor={cursor}", args.repeats),
                   "tag=t7 (rare)": timed(client, "/v1/jobs?tag=t7&limit=50", args.repeats),
                   "tag=common": timed(client, "/v1/jobs?tag=common&limit=50", args.repeats),
                   "q=B-1234 (few)": timed(client, "/v1/jobs?q=B-1234&limit=50", args.repeats),
                   "q=job (all)": timed(client, "/v1/jobs?q=job&limit=50", args.repeats)}
        backend = "postgresql" if args.postgres else "sqlite"
        for label, times in results.items():
            p95 = statistics.quantiles(times, n=20)[-1]
            what = f"status={args.status}, " if "page" in label else ""
            print(f"{backend:10s} {label:18s} median {statistics.median(times):6.2f} ms   p95 {p95:6.2f} ms"
                  f"   ({args.jobs} jobs, {what}limit=50, {args.repeats} requests)")
        db.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
