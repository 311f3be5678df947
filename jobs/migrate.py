"""Schema migrations, programmatically: the same Alembic scripts as ``alembic upgrade head``.

The scripts ship with the package (``ganforge.resources.migrations_dir``: the top-level
``migrations/`` folder of a checkout, or its copy inside an installed wheel), so any working
directory will do.
"""

from __future__ import annotations

import logging
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool

from ganforge.resources import migrations_dir

log = logging.getLogger(__name__)

MIGRATIONS_DIR = migrations_dir()


def alembic_config(url: str) -> Config:
    """An Alembic config with no ini file: scripts from MIGRATIONS_DIR, database ``url``."""
    config = Config()
    # '%' would be read as configparser interpolation.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.attributes["url"] = url  # read by migrations/env.py before any other source
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` up to ``revision`` (creating the schema on an empty one)."""
    log.info("migrating database up to %s", revision)
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    """Take the database at ``url`` down to ``revision`` (``"base"`` drops every table)."""
    log.info("migrating database down to %s", revision)
    command.downgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    """The revision the database is at; None for a database never migrated."""
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str | None:
    """The newest revision among the scripts."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
