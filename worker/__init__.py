"""Celery workers: a task receives a job id, claims the job and drives gan_core's Trainer."""
