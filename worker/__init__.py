"""Celery workers: a task receives a job id, claims the job and drives gan_core's Trainer."""

if __name__ != "ganforge.worker":  # namespace guard: one name per module, never two copies
    raise ImportError(f"import ganforge.worker, not {__name__}: worker/ is installed as part of the ganforge package")
