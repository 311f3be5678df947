"""The enqueue facade: the broker carries only job ids, sent after the job row is committed."""

from __future__ import annotations

import logging
from typing import Protocol

from kombu.exceptions import ChannelError

from ganforge.jobs.broker import make_celery

log = logging.getLogger(__name__)

TASK_NAME = "ganforge.run_job"

# A job that already trained (requeued after its worker died or drained) goes ahead of jobs that
# have not started, so a killed run resumes at once instead of behind the whole queue. On Redis
# a lower number is served first (kombu keeps one list per priority step: 0, 3, 6, 9); the
# SQLAlchemy broker of the embedded mode keeps plain FIFO order.
PRIORITY_RESUME = 0
PRIORITY_NEW = 5


class Enqueuer(Protocol):
    def enqueue(self, job_id: str, queue: str, priority: int = PRIORITY_NEW) -> None: ...

    def check(self) -> None:
        """Raise if the broker cannot be reached (readiness)."""

    def depth(self, queue: str) -> int | None:
        """Messages waiting in ``queue``; None if the broker cannot tell."""


class CeleryEnqueuer:
    def __init__(self, broker_url: str):
        self.app = make_celery(broker_url)

    def enqueue(self, job_id: str, queue: str, priority: int = PRIORITY_NEW) -> None:
        self.app.send_task(TASK_NAME, args=[job_id], queue=queue, priority=priority)
        log.info("enqueued job %s on %s (priority %d)", job_id, queue, priority)

    def check(self) -> None:
        with self.app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)

    def depth(self, queue: str) -> int | None:
        try:
            with self.app.connection_for_read() as conn:
                conn.ensure_connection(max_retries=1, timeout=2)
                return conn.default_channel.queue_declare(queue=queue, passive=True).message_count
        except ChannelError:  # the queue does not exist (e.g. Redis restarted empty): nothing waits
            return 0
        except Exception as exc:
            log.warning("cannot read the depth of queue %s: %s", queue, exc)
            return None


class RecordingEnqueuer:
    """For tests of the API alone: remembers what would have been sent."""

    def __init__(self):
        self.sent: list[tuple[str, str]] = []
        self.priorities: list[int] = []

    def enqueue(self, job_id: str, queue: str, priority: int = PRIORITY_NEW) -> None:
        self.sent.append((job_id, queue))
        self.priorities.append(priority)

    def check(self) -> None:
        return None

    def depth(self, queue: str) -> int | None:
        return sum(1 for _, q in self.sent if q == queue)
