"""Prometheus metrics of the service (prometheus-client), defined once for the API and the worker.

Counters and histograms live in the process that counts them. Under gunicorn (several API
processes) ``PROMETHEUS_MULTIPROC_DIR`` must be set before this module is imported (``ganforge
api`` sets it): each process then writes its values to files there and a scrape sums them
(``registry()``). Figures read from the database at scrape time (jobs by state, queue depth)
are not here: ``ganforge.api.metrics`` collects them per scrape, so they are right whichever process
answers.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client import REGISTRY

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

HTTP_REQUESTS = Counter("ganforge_http_requests_total", "HTTP requests answered, by method, route (the URL rule, "
                        "not the path) and status", ["method", "route", "status"])
HTTP_LATENCY = Histogram("ganforge_http_request_duration_seconds", "time to answer an HTTP request, by method and "
                         "route", ["method", "route"],
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))

# ---- the worker --------------------------------------------------------------------------------
LEASE_RENEWALS = Counter("ganforge_lease_renewals_total", "heartbeats that extended a running job's lease")
LEASES_LOST = Counter("ganforge_leases_lost_total", "attempts stopped because their lease was gone (another attempt "
                      "owns the job)")
LEASES_EXPIRED = Counter("ganforge_leases_expired_total", "running jobs whose lease this process's reconciler found "
                         "expired (requeued)")
UPLOAD_RETRIES = Counter("ganforge_upload_retries_total", "artifact uploads retried after a store or database error")
# per worker (one job at a time): the running job's speed over the last log window, 0 when idle
TRAINING_STEPS = Gauge("ganforge_worker_training_steps_per_second", "training steps per second of the job this "
                       "worker runs (0: none)", multiprocess_mode="livemax")
TRAINING_IMAGES = Gauge("ganforge_worker_training_images_per_second", "real images per second the running job's "
                        "discriminator sees (0: none)", multiprocess_mode="livemax")


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def registry() -> CollectorRegistry:
    """What this process's scrape reports: every process's values in multi-process mode,
    this process's otherwise."""
    if multiprocess_dir() is None:
        return REGISTRY
    combined = CollectorRegistry()
    multiprocess.MultiProcessCollector(combined)
    return combined


def training_speed(metrics: dict[str, float]) -> None:
    """The running job's speed from a metrics row (``steps_per_s``, ``images_per_s``)."""
    for gauge, name in ((TRAINING_STEPS, "steps_per_s"), (TRAINING_IMAGES, "images_per_s")):
        value = metrics.get(name)
        if value is not None and value == value:  # NaN: not measured in this window
            gauge.set(value)


def idle() -> None:
    TRAINING_STEPS.set(0)
    TRAINING_IMAGES.set(0)
