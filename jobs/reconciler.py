"""The reconciler: finds jobs that nothing will run and hands them to the broker again.

Every worker process runs one on a side thread (``start``), every ``reconcile_seconds``; the
passes of several workers do not clash, since each change is a conditional UPDATE. It covers
what Celery on Redis does not:

- a running job whose lease expired (its worker was killed, lost power or the database) goes
  back to the queue and resumes from its latest checkpoint on any worker, attempt + 1; after
  ``max_attempts`` lost attempts it fails with every attempt's reason;
- a job held by a worker process of this host that no longer exists is expired at once, without
  waiting for the lease to run out;
- a queued job not picked up for ``requeue_after_seconds`` whose message is not in the broker
  (Redis restarted empty, or the enqueue after the submit failed) is sent again. A duplicate
  message is harmless: the claim lets one delivery run the job.

``ganforge reconcile`` runs the same pass from the command line (cron, or no worker running).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections import defaultdict

from ganforge.jobs import lifecycle, sweeps, telemetry
from ganforge.jobs.queue import PRIORITY_NEW, PRIORITY_RESUME
from ganforge.jobs.services import Services

log = logging.getLogger(__name__)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def reconcile_once(services: Services, host: str | None = None) -> dict[str, int]:
    db, queue = services.db, services.queue
    dead = lifecycle.expire_dead_local_workers(db, host or socket.gethostname(), pid_alive)
    requeued = lifecycle.expire_leases(db)
    telemetry.LEASES_EXPIRED.inc(len(requeued))
    for job_id, queue_name in requeued:
        queue.enqueue(job_id, queue_name, PRIORITY_RESUME)
        log.warning("job %s: its lease expired; back in the queue", job_id, extra={"job_id": job_id})
    stale_by_queue: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for job_id, queue_name, attempt in lifecycle.stale_queued(db, services.settings.requeue_after_seconds):
        stale_by_queue[queue_name].append((job_id, attempt))
    resent = 0
    for queue_name, job_ids in stale_by_queue.items():
        depth = queue.depth(queue_name)
        if depth is not None and depth >= len(job_ids):
            continue  # every waiting job can still have its message in the broker: workers are busy
        for job_id, attempt in job_ids:
            queue.enqueue(job_id, queue_name, PRIORITY_RESUME if attempt else PRIORITY_NEW)
        lifecycle.mark_enqueued(db, [job_id for job_id, _ in job_ids])
        resent += len(job_ids)
        log.warning("re-sent %d queued job(s) on %s (broker holds %s message(s))", len(job_ids), queue_name, depth)
    # Sweeps: trials that ended without their trigger (an expired lease, a killed worker, a cancel)
    # get their successors; the decision step is idempotent, so a pass after a trigger is harmless.
    open_sweeps = sweeps.reconcile(services)
    return {"dead_local_workers": dead, "expired_leases": len(requeued), "resent": resent, "sweeps": open_sweeps}


def start(services: Services, interval_seconds: float, stop: threading.Event | None = None,
          on_pass=None) -> threading.Thread:
    """Run ``reconcile_once`` (and ``on_pass()``, e.g. the worker's announcement) now and every
    ``interval_seconds`` on a daemon thread."""
    stop = stop or threading.Event()

    def loop() -> None:
        while True:
            try:
                if on_pass is not None:
                    on_pass()
                reconcile_once(services)
            except Exception:  # the database or broker is away: next pass
                log.exception("reconciler pass failed")
            if stop.wait(interval_seconds):
                return

    thread = threading.Thread(target=loop, name="reconciler", daemon=True)
    thread.start()
    return thread
