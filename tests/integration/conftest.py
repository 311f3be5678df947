"""Fixtures for integration tests against real servers on loopback.

PostgreSQL (127.0.0.1:5432, trust auth, user postgres) and Redis (127.0.0.1:6379) must be running;
an S3-compatible server (moto) is started in-process. A missing server fails the test with a
message saying what to start: these tests never skip (CI sets CI=true and runs them all).

Every test run gets its own databases, bucket names and Redis database number, so several
checkouts can run the suite on one machine at the same time.

    pg_url            session   an empty PostgreSQL database for this run
    fresh_pg_url      function  another empty PostgreSQL database, for one test only
    migrated_pg       function  a PostgreSQL database at the head revision, for one test only
    sqlite_url        function  an empty SQLite file
    migrated_sqlite   function  a SQLite file at the head revision
    redis_url         session   a flushed Redis database number (9..15)
    s3_server         session   endpoint URL of a moto S3 server; dummy AWS credentials in os.environ
    s3_bucket         function  s3://<fresh bucket>/prefix on that server
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import secrets
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qs

import pytest

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
RUN_ID = secrets.token_hex(4)  # one per pytest process: names this run's databases


# ---- PostgreSQL ---------------------------------------------------------------------------------

def _pg_admin():
    """An autocommit connection to the maintenance database (CREATE/DROP DATABASE cannot run in
    a transaction); fails the test with instructions if the server is not there."""
    import psycopg

    try:
        return psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True,
                               connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT} as user {PG_USER!r} (trust auth): {exc}. "
                    "Start it (e.g. `service postgresql start`); integration tests need it and never skip.",
                    pytrace=False)


def _pg_create(name: str, template: str | None = None) -> str:
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    return f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"


def _pg_drop(name: str) -> None:
    # FORCE: a connection a test leaked (a pool not disposed) must not keep the database alive.
    with _pg_admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL (``postgresql+psycopg://postgres@127.0.0.1:5432/ganforge_test_<hex>``) of an empty
    database created for this test run and dropped at its end. Shared by the whole session: a
    test that needs a clean schema should use ``migrated_pg`` or ``fresh_pg_url`` instead."""
    name = f"ganforge_test_{RUN_ID}"
    url = _pg_create(name)
    yield url
    _pg_drop(name)


@pytest.fixture()
def fresh_pg_url() -> Iterator[str]:
    """URL of an empty PostgreSQL database of this test alone (dropped afterwards): for tests
    that migrate up and down."""
    name = f"ganforge_test_{RUN_ID}_{secrets.token_hex(4)}"
    url = _pg_create(name)
    yield url
    _pg_drop(name)


@pytest.fixture(scope="session")
def _pg_template() -> Iterator[str]:
    """Name of a database migrated to head once per run; ``migrated_pg`` copies it (CREATE
    DATABASE ... TEMPLATE), which is much faster than migrating each time. Nothing else may
    connect to it: PostgreSQL copies only a template nobody is using."""
    from ganforge.jobs.migrate import upgrade

    name = f"ganforge_test_{RUN_ID}_template"
    upgrade(_pg_create(name))
    yield name
    _pg_drop(name)


@pytest.fixture()
def migrated_pg(_pg_template: str) -> Iterator[str]:
    """URL of a PostgreSQL database at the head revision (made by ``ganforge.jobs.migrate.upgrade``) with
    no rows, private to this test and dropped after it."""
    name = f"ganforge_test_{RUN_ID}_{secrets.token_hex(4)}"
    url = _pg_create(name, template=_pg_template)
    yield url
    _pg_drop(name)


# ---- SQLite -------------------------------------------------------------------------------------

@pytest.fixture()
def sqlite_url(tmp_path: Path) -> str:
    """URL of a SQLite file in this test's tmp_path (not created yet: SQLite creates it on connect)."""
    return f"sqlite:///{tmp_path / 'ganforge.db'}"


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once per run; ``migrated_sqlite`` copies it."""
    from ganforge.jobs.migrate import upgrade

    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture()
def migrated_sqlite(_sqlite_template: Path, tmp_path: Path) -> str:
    """URL of a SQLite file at the head revision (a copy of one made by ``ganforge.jobs.migrate.upgrade``)
    with no rows, in this test's tmp_path."""
    path = tmp_path / "migrated.db"
    shutil.copyfile(_sqlite_template, path)
    return f"sqlite:///{path}"


# ---- Redis --------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """``redis://127.0.0.1:6379/<n>`` with n in 9..15 (an empty one if there is one, so parallel
    runs rarely meet), flushed at the start and the end of the session."""
    import redis

    numbers = list(range(9, 16))
    random.shuffle(numbers)
    try:
        probe = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=numbers[0], socket_connect_timeout=3)
        probe.ping()
        chosen = next((n for n in numbers if redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=n).dbsize() == 0),
                      numbers[0])
    except redis.RedisError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_HOST}:{REDIS_PORT}: {exc}. Start it (e.g. `redis-server "
                    "--daemonize yes`); integration tests need it and never skip.", pytrace=False)
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=chosen)
    client.flushdb()
    yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{chosen}"
    client.flushdb()
    client.close()


# ---- S3 (moto server) ---------------------------------------------------------------------------

class _RefuseExpiredPresignedUrls:
    """WSGI middleware: moto serves a presigned URL forever, real S3 (and MinIO) answer 403
    once X-Amz-Date + X-Amz-Expires has passed. This adds that one rule in front of moto."""

    EXPIRED = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
               b"<Message>Request has expired</Message></Error>")

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        query = parse_qs(environ.get("QUERY_STRING", ""))
        if "X-Amz-Date" in query and "X-Amz-Expires" in query:
            signed_at = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
            if datetime.now(timezone.utc) > signed_at + timedelta(seconds=int(query["X-Amz-Expires"][0])):
                start_response("403 Forbidden", [("Content-Type", "application/xml"),
                                                 ("Content-Length", str(len(self.EXPIRED)))])
                return [self.EXPIRED]
        return self.app(environ, start_response)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """Endpoint URL (``http://127.0.0.1:<port>``) of a moto S3 server running in a thread for the
    whole session. While it runs, os.environ holds dummy credentials (AWS_ACCESS_KEY_ID and
    AWS_SECRET_ACCESS_KEY ``testing``, AWS_DEFAULT_REGION ``us-east-1``) and no AWS profile or
    session token, so boto3 can never reach a real account; the previous environment is restored
    at the end. Unlike plain moto, expired presigned URLs are refused with 403, as on AWS."""
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        for name in ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE"):
            env.delenv(name, raising=False)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)  # port 0: any free port
        server.start()
        # werkzeug's server calls self.app per request; nothing has been served yet.
        server._server.app = _RefuseExpiredPresignedUrls(server._server.app)
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()


@pytest.fixture()
def s3_client(s3_server: str):
    """A boto3 S3 client for the moto server (path-style addressing), for setting up and
    inspecting buckets behind the code under test."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"}))


@pytest.fixture()
def s3_bucket(s3_client) -> str:
    """``s3://<fresh random bucket>/prefix``: an empty bucket created on the moto server for this
    test (pass ``endpoint_url=s3_server`` to ``ganforge.jobs.storage.open_storage``)."""
    bucket = f"ganforge-test-{secrets.token_hex(6)}"
    s3_client.create_bucket(Bucket=bucket)
    return f"s3://{bucket}/prefix"


# ---- service processes -------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def service_env(migrated_pg, redis_url, s3_bucket, s3_server, tmp_path):
    env = dict(os.environ)
    env.update({
        "GANFORGE_MODE": "production",
        "GANFORGE_DATABASE_URL": migrated_pg,
        "GANFORGE_BROKER_URL": redis_url,
        "GANFORGE_STORAGE_URL": s3_bucket,
        "GANFORGE_SECRET_KEY": "test-secret-key-for-signing-urls",
        "AWS_ENDPOINT_URL": s3_server,
        "GANFORGE_LEASE_SECONDS": "30",
        "GANFORGE_HOME": str(tmp_path / "home"),
        "OMP_NUM_THREADS": "1",
        "GANFORGE_LOG_JSON": "1",
    })
    return env


def _start_worker(env, tmp_path, name="w1", devices=None, extra=()):
    """A real `ganforge worker` process (on the cpu queue, or with ``devices``: on every CPU queue
    up to that size); its log goes to tmp_path/<name>.log."""
    log = (tmp_path / f"{name}.log").open("wb")
    size = ["--devices", str(devices)] if devices else ["--queues", "cpu"]
    return subprocess.Popen([sys.executable, "-m", "ganforge.cli", "worker", *size, "--hostname", f"{name}@test", *extra],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)


def _stop_worker(proc):
    """SIGTERM (warm shutdown), then SIGKILL after 30 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture()
def stop_worker():
    return _stop_worker


@pytest.fixture()
def start_worker():
    """start_worker(env, tmp_path, name) -> Popen; every worker started is stopped at teardown."""
    started = []

    def start(env, tmp_path, name="w1", devices=None, extra=()):
        proc = _start_worker(env, tmp_path, name, devices, extra)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        _stop_worker(proc)
