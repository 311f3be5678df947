"""Alembic environment: the schema of ganforge.jobs.models, applied to the database the settings name.

The URL comes from, in order: ``config.attributes["url"]`` (ganforge.jobs.migrate, tests),
``alembic -x url=...`` (command line), then ``Settings.from_env().database_url`` (the same
settings object the API and workers read). A caller may also hand over an open connection in
``config.attributes["connection"]``.
"""

from __future__ import annotations

import logging
from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import Connection

from ganforge.jobs.models import Base
from ganforge.jobs.settings import Settings

config = context.config
target_metadata = Base.metadata

# Only the command line configures logging (from alembic.ini); a programmatic call keeps the
# application's logging untouched.
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

log = logging.getLogger("alembic.env")


def database_url() -> str:
    url = config.attributes.get("url") or context.get_x_argument(as_dictionary=True).get("url")
    if url:
        return url
    settings = Settings.from_env()
    if settings.is_embedded:
        # The embedded default is a SQLite file under the data directory, which may not exist yet.
        settings.ensure_data_dir()
    return settings.database_url


def _configure(**kwargs) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        **kwargs,
    )


def run_migrations_offline() -> None:
    """``alembic upgrade head --sql``: print the SQL instead of running it."""
    url = database_url()
    _configure(url=url, literal_binds=True, dialect_opts={"paramstyle": "named"},
               render_as_batch=url.startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()


def _run_on(connection: Connection) -> None:
    # SQLite cannot ALTER most things in place: batch mode recreates the table instead.
    _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    url = database_url()
    # NullPool: a migration is one short-lived connection, nothing to keep around.
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            _run_on(connection)
            connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
