"""Fixtures for the API tests: an app on a fresh database (SQLite file or PostgreSQL), a local
artifact store and a recording enqueuer.

PostgreSQL: one throw-away database per test session (``ganforge_test_<random>``) on the server
at ``GANFORGE_TEST_POSTGRES`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``),
dropped at the end; tables are emptied between tests. An unreachable server fails the run
(never a skip).
"""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from ganforge.jobs.db import Database
from ganforge.jobs.models import Base
from ganforge.jobs.queue import Enqueuer, RecordingEnqueuer
from ganforge.jobs.services import Services
from ganforge.jobs.settings import Settings
from ganforge.jobs.storage import LocalStorage, Storage

ADMIN_DSN = os.environ.get("GANFORGE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
BACKENDS = ("sqlite", "postgresql")
TEST_SECRET = "test-signing-secret"

def _pg_url(database: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(ADMIN_DSN).set(drivername="postgresql+psycopg", database=database).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_url():
    """A fresh PostgreSQL database with the schema, for this test session."""
    import psycopg

    try:
        admin = psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        # Never a skip: the API is tested on PostgreSQL as in production.
        pytest.fail(f"PostgreSQL is not reachable at {ADMIN_DSN}: {exc} (start it; see ARCHITECTURE.md)")
    name = f"ganforge_test_{secrets.token_hex(6)}"
    admin.execute(f'CREATE DATABASE "{name}"')
    url = _pg_url(name)
    engine = create_engine(url)
    try:
        Base.metadata.create_all(engine)  # production migrates; the tests need only the tables
    finally:
        engine.dispose()
    try:
        yield url
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="session")
def postgres_cleaner(postgres_url):
    """Empties the tables between tests (DELETE: cheaper than TRUNCATE for a few rows)."""
    engine = create_engine(postgres_url)

    def clean() -> None:
        with engine.begin() as connection:
            for table in ("job_events", "metrics", "artifacts", "sweep_trials", "jobs", "sweeps", "datasets", "api_keys"):
                connection.execute(text(f"DELETE FROM {table}"))

    yield clean
    engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """An empty database with the schema, copied for each test (faster than creating tables)."""
    path = tmp_path_factory.mktemp("template") / "api.db"
    engine = create_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    engine.dispose()
    return path


@pytest.fixture(params=BACKENDS)
def database_url(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        path = tmp_path / "api.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    request.getfixturevalue("postgres_cleaner")()
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "home",
        database_url=database_url,
        broker_url="memory://",
        storage_url=f"file://{tmp_path / 'artifacts'}",
        signing_secret=TEST_SECRET,
        presign_ttl_seconds=600,
        max_generate_samples=1024,
        log_json=True,
    )


@dataclass
class Harness:
    """One app and what it is built on (tests reach past the API to arrange and to check)."""

    app: Any
    client: Any
    services: Services
    queue: Any

    @property
    def db(self) -> Database:
        return self.services.db

    @property
    def storage(self) -> Storage:
        return self.services.storage


@pytest.fixture
def make_api(settings: Settings, tmp_path: Path):
    """Build an app; ``queue``, ``storage`` and settings changes may be swapped in."""
    from ganforge.api import create_app

    built: list[Database] = []

    def make(queue: Enqueuer | None = None, storage: Storage | None = None, **setting_changes) -> Harness:
        s = settings.with_(**setting_changes) if setting_changes else settings
        db = Database(s.database_url)
        built.append(db)
        queue = queue if queue is not None else RecordingEnqueuer()
        services = Services(s, db, storage or LocalStorage(tmp_path / "artifacts"), queue)
        app = create_app(services=services)
        app.config["TESTING"] = True
        return Harness(app, app.test_client(), services, queue)

    yield make
    for db in built:
        db.dispose()


@pytest.fixture
def api(make_api) -> Harness:
    return make_api()
