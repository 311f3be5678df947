"""What api/ and worker/ need, built once from the settings: database, storage, enqueuer."""

from __future__ import annotations

from dataclasses import dataclass

from ganforge.jobs.db import Database
from ganforge.jobs.queue import CeleryEnqueuer, Enqueuer
from ganforge.jobs.settings import Settings
from ganforge.jobs.storage import Storage, open_storage


@dataclass
class Services:
    settings: Settings
    db: Database
    storage: Storage
    queue: Enqueuer

    @classmethod
    def from_settings(cls, settings: Settings, queue: Enqueuer | None = None, storage: Storage | None = None) -> "Services":
        if settings.is_embedded:
            settings.ensure_data_dir()
        return cls(
            settings=settings,
            db=Database(settings.database_url),
            storage=storage or open_storage(settings.storage_url, settings.s3_endpoint_url, settings.s3_region,
                                            create_bucket=settings.is_embedded),
            queue=queue or CeleryEnqueuer(settings.broker_url),
        )
