"""Engine and session factory for a settings object."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import orjson
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            # WAL: the API reads while the worker writes; foreign keys are off by default in SQLite.
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    # pool_pre_ping: a connection dropped by a database restart is replaced, not used.
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10, json_deserializer=orjson.loads)


class Database:
    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        # Reads (the API's GETs) need no transaction: autocommit saves BEGIN/COMMIT and the
        # pre-ping, i.e. three of five round trips per request. A dropped connection fails one
        # read, which the pool then replaces.
        self.read_engine = self.engine if url.startswith("sqlite") else create_engine(
            url, isolation_level="AUTOCOMMIT", pool_size=5, max_overflow=10, json_deserializer=orjson.loads
        )
        self.read_sessions = sessionmaker(self.read_engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: committed on success, rolled back on error."""
        with self.sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only unit of work (nothing is committed)."""
        with self.read_sessions() as session:
            yield session

    @contextmanager
    def read_connection(self) -> Iterator[Connection]:
        """A bare connection for a read (no ORM session): for the most polled endpoints."""
        with self.read_engine.connect() as conn:
            yield conn

    def dispose(self) -> None:
        self.engine.dispose()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()
