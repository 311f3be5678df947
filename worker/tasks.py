"""Celery tasks: thin, given a job id only; the work is in ganforge.worker.runner.

Worker-process hooks live here too (Celery imports this module in every worker): the reconciler
and webhook notifier threads start when the worker is ready, and SIGTERM (Celery's warm shutdown) drains the running
job — checkpoint, lease released, back in the queue — within ``stop_grace_seconds``; past that the
process exits anyway and the reconciler of another worker requeues the job when its lease ends.
"""

from __future__ import annotations

import logging
import os
import threading

from celery import shared_task
from celery.signals import worker_ready, worker_shutting_down

from ganforge.jobs import lifecycle, notify, reconciler, sweeps
from ganforge.jobs.queue import TASK_NAME
from ganforge.jobs.services import Services
from ganforge.jobs.settings import Settings
from ganforge.worker import runner
from ganforge.worker.launched import kill_active

log = logging.getLogger(__name__)
_services = None


def services():
    """The worker process's services, built once from the environment (never at import)."""
    global _services
    if _services is None:
        _services = Services.from_settings(Settings.from_env())
    return _services


@shared_task(name=TASK_NAME, acks_late=True, ignore_result=True)
def run_job(job_id: str) -> str:
    svc = services()
    try:
        return runner.run_job(svc, job_id)
    finally:
        sweeps.job_ended(svc, job_id)  # a sweep's trial: the next one is asked for now


@worker_ready.connect
def _start_reconciler(**_kwargs) -> None:
    svc = services()
    settings = svc.settings
    worker_id = settings.worker_id or runner.default_worker_id()

    def announce() -> None:  # which job sizes this worker takes: the API's waiting reasons read it
        if settings.worker_queues:
            lifecycle.announce_worker(svc.db, worker_id, list(settings.worker_queues), max(1, settings.worker_devices))

    reconciler.start(svc, settings.reconcile_seconds, on_pass=announce)
    notify.start(svc.db, settings)  # ended jobs' webhooks, off the training path


@worker_shutting_down.connect
def _drain(sig=None, how=None, **_kwargs) -> None:
    grace = services().settings.stop_grace_seconds
    log.warning("%s (%s shutdown): draining the running job, at most %d s", sig, how, grace)
    runner.DRAIN.set()
    _forget_me()

    def deadline() -> None:
        log.error("the running job did not drain within %d s; exiting (its lease will expire)", grace)
        kill_active()  # no training process outlives its worker
        os._exit(1)

    timer = threading.Timer(grace, deadline)
    timer.daemon = True
    timer.start()


def _forget_me() -> None:
    """A stopping worker takes no new job: the API stops counting it for waiting reasons."""
    try:
        lifecycle.forget_worker(services().db, services().settings.worker_id or runner.default_worker_id())
    except Exception as exc:  # the database may be away; the row ages out
        log.warning("could not remove this worker's announcement: %s", exc)
