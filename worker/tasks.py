"""Celery tasks: thin, given a job id only; the work is in worker.runner."""

from __future__ import annotations

import logging

from celery import shared_task

from jobs.queue import TASK_NAME

log = logging.getLogger(__name__)
_services = None


def services():
    """The worker process's services, built once from the environment (never at import)."""
    global _services
    if _services is None:
        from jobs.services import Services
        from jobs.settings import Settings

        _services = Services.from_settings(Settings.from_env())
    return _services


@shared_task(name=TASK_NAME, acks_late=True, ignore_result=True)
def run_job(job_id: str) -> str:
    from worker.runner import run_job as run

    return run(services(), job_id)
