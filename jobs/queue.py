"""The enqueue facade: the broker carries only job ids, sent after the job row is committed."""

from __future__ import annotations

import logging
from typing import Protocol

log = logging.getLogger(__name__)

TASK_NAME = "ganforge.run_job"


class Enqueuer(Protocol):
    def enqueue(self, job_id: str, queue: str) -> None: ...

    def check(self) -> None:
        """Raise if the broker cannot be reached (readiness)."""


class CeleryEnqueuer:
    def __init__(self, broker_url: str):
        from worker.celery_app import make_celery

        self.app = make_celery(broker_url)

    def enqueue(self, job_id: str, queue: str) -> None:
        self.app.send_task(TASK_NAME, args=[job_id], queue=queue)
        log.info("enqueued job %s on %s", job_id, queue)

    def check(self) -> None:
        with self.app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)


class RecordingEnqueuer:
    """For tests of the API alone: remembers what would have been sent."""

    def __init__(self):
        self.sent: list[tuple[str, str]] = []

    def enqueue(self, job_id: str, queue: str) -> None:
        self.sent.append((job_id, queue))

    def check(self) -> None:
        return None
