"""The Celery application, configured for long GPU tasks.

- prefetch 1 and late acknowledgement: a worker holds one job at a time, and a job whose worker
  died before finishing is delivered again;
- the solo pool: the task runs in the worker process itself, so nothing forks after CUDA starts
  (run one worker process per GPU with CUDA_VISIBLE_DEVICES);
- a redelivered or duplicated message is harmless: the task claims the job with a conditional
  UPDATE and does nothing if another live attempt holds it.
"""

from __future__ import annotations

from typing import Sequence

from celery import Celery


def make_celery(broker_url: str, include: Sequence[str] = ()) -> Celery:
    """The app that sends (``include`` empty: tasks are sent by name) or, given the task modules
    in ``include`` (``ganforge worker`` passes its task module), runs jobs."""
    app = Celery("ganforge", broker=broker_url, include=list(include))
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_pool="solo",
        task_ignore_result=True,
        task_default_queue="cpu",
        task_create_missing_queues=True,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    if broker_url.startswith(("redis://", "rediss://")):
        # With Redis an unacknowledged message comes back after this many seconds: longer than
        # a job's lease, so the claim fencing, not the broker, decides who runs a job.
        app.conf.broker_transport_options = {"visibility_timeout": 6 * 3600}
    return app
