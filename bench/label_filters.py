"""What the indexes of the job list's label filters buy on PostgreSQL: ?tag= (jsonb @>, GIN
jsonb_path_ops) and ?q= (ILIKE '%q%', GIN gin_trgm_ops), with and without them.

    python bench/label_filters.py [--jobs 200000] [--admin-dsn postgresql://postgres@127.0.0.1:5432/postgres]

Seeds one tenant's jobs in a temporary database (dropped after): each has a tag t0..t499 (a rare
tag: 1 job in 500) and every other one the tag "common". Runs the list's own page statement
(ganforge.api.read_model.job_page, a page of 50 newest first) under EXPLAIN ANALYZE, seven times each,
prints the median execution time, then drops the two indexes and does it again. A common filter
needs no index (walking the created_at index finds 51 rows at once); a rare one does.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.prerequisites import Needs  # noqa: E402

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200_000)
    parser.add_argument("--admin-dsn", default=ADMIN_DSN)
    args = parser.parse_args(argv)
    Needs("bench/label_filters.py").python("sqlalchemy", "psycopg").postgres().check()

    import psycopg
    from sqlalchemy import insert, text
    from sqlalchemy.engine import make_url

    from ganforge.api.read_model import job_page
    from ganforge.jobs.db import Database
    from ganforge.jobs.models import Base, Job

    name = f"ganforge_bench_{secrets.token_hex(4)}"
    with psycopg.connect(args.admin_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            db = Database(make_url(args.admin_dsn).set(drivername="postgresql+psycopg", database=name)
                          .render_as_string(hide_password=False))
            Base.metadata.create_all(db.engine)
            base = datetime(2025, 1, 1, tzinfo=timezone.utc)
            rows = [{"id": secrets.token_hex(16), "tenant": "default", "name": f"job-{i}", "spec": {},
                     "status": "succeeded", "queue": "cpu", "total_steps": 3,
                     "tags": [f"t{i % 500}"] + (["common"] if i % 2 else []),
                     "created_at": base + timedelta(seconds=i), "updated_at": base} for i in range(args.jobs)]
            with db.session() as session:
                for start in range(0, len(rows), 20_000):
                    session.execute(insert(Job), rows[start:start + 20_000])
            with db.engine.begin() as connection:
                connection.execute(text("ANALYZE jobs"))

            def scope(stmt):
                return stmt.where(Job.tenant == "default")

            needle = f"B-{args.jobs // 20}"  # job-10000 and the ten job-10000N: any case
            cases = {"tag=t7 (1 in 500)": job_page(scope, None, None, 50, tags=["t7"], dialect="postgresql"),
                     "tag=common (1 in 2)": job_page(scope, None, None, 50, tags=["common"], dialect="postgresql"),
                     f"q={needle} (a few)": job_page(scope, None, None, 50, q=needle, dialect="postgresql"),
                     "q=job (all)": job_page(scope, None, None, 50, q="job", dialect="postgresql")}

            def median_ms(stmt) -> float:
                sql = str(stmt.compile(dialect=db.engine.dialect, compile_kwargs={"literal_binds": True}))
                with db.engine.connect() as connection:
                    return statistics.median(
                        connection.execute(text("EXPLAIN (ANALYZE, FORMAT JSON) " + sql)).scalar()[0]["Execution Time"]
                        for _ in range(7))

            indexed = {label: median_ms(stmt) for label, stmt in cases.items()}
            with db.engine.begin() as connection:
                connection.execute(text("DROP INDEX ix_jobs_tags"))
                connection.execute(text("DROP INDEX ix_jobs_name_trgm"))
            plain = {label: median_ms(stmt) for label, stmt in cases.items()}
            for label in cases:
                print(f"{label:22s} with the GIN indexes {indexed[label]:8.2f} ms   without {plain[label]:8.2f} ms"
                      f"   ({args.jobs} jobs, a page of 50, median of 7 EXPLAIN ANALYZE)")
            db.dispose()
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
