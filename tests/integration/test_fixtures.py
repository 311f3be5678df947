"""The shared fixtures themselves: each hands out what its docstring promises."""

from __future__ import annotations

import os

import boto3
import redis
from sqlalchemy import create_engine, inspect, pool


def test_redis_url_is_a_private_flushed_database(redis_url):
    client = redis.Redis.from_url(redis_url)
    assert 9 <= client.connection_pool.connection_kwargs["db"] <= 15
    client.set("ganforge-fixture-probe", b"1")
    assert client.get("ganforge-fixture-probe") == b"1"
    client.delete("ganforge-fixture-probe")
    client.close()


def test_s3_server_sets_dummy_credentials(s3_server, s3_bucket):
    assert s3_server.startswith("http://127.0.0.1:")
    assert os.environ["AWS_ACCESS_KEY_ID"] == "testing" and os.environ["AWS_DEFAULT_REGION"] == "us-east-1"
    assert s3_bucket.startswith("s3://ganforge-test-") and s3_bucket.endswith("/prefix")
    bucket = s3_bucket.removeprefix("s3://").split("/")[0]
    client = boto3.client("s3", endpoint_url=s3_server)
    assert client.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def _tables(url: str) -> set[str]:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_database_fixtures(pg_url, fresh_pg_url, sqlite_url, migrated_pg, migrated_sqlite):
    assert pg_url.startswith("postgresql+psycopg://postgres@127.0.0.1:5432/ganforge_test_")
    assert len({pg_url, fresh_pg_url, migrated_pg}) == 3
    assert _tables(pg_url) == set() and _tables(fresh_pg_url) == set() and _tables(sqlite_url) == set()
    # The migrations make exactly the tables the models declare (and Alembic's own).
    from ganforge.jobs.models import Base

    expected = set(Base.metadata.tables) | {"alembic_version"}
    assert {"jobs", "job_events", "metrics", "artifacts", "api_keys", "workers", "sweeps", "datasets"} <= expected
    assert _tables(migrated_pg) == expected and _tables(migrated_sqlite) == expected
