"""Views of finished jobs, kept per API process.

A job that has succeeded, failed or been cancelled never changes again: no transition leaves a
terminal status (``ganforge.jobs.lifecycle.ALLOWED``) and every other write to a job row or its history is
fenced on a live status (queued or running) or a lease, which a finished job no longer holds. Its
view (``GET /v1/jobs/{id}``: row and event history) can therefore be served from memory without a
stale answer, whichever API process a client reaches. Clients that keep polling a job after it
ended (scripts, dashboards left open) then cost no database round trip.

Bounded (least recently used out); the tenant is kept with each view so another tenant's job stays
"not found". Views of live jobs are never kept.

One part of a finished job does change: its owner's labels (tags, notes: PATCH /v1/jobs/{id}).
The process that takes the PATCH drops its copy at once; every other process serves a view for at
most ``max_age`` seconds (GANFORGE_FINISHED_VIEW_SECONDS) before reading it again, which bounds
how long an edit may take to show there.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from cachetools import TTLCache

from ganforge.jobs.models import TERMINAL


class FinishedViews:
    def __init__(self, max_entries: int = 2048, max_age: float = 5.0, clock=time.monotonic):
        self.max_entries = max_entries
        self.max_age = max_age
        # cachetools' TTLCache: least recently used out when full, and nothing older than max_age.
        # Not thread-safe by itself (a read reorders and expires): every access holds the lock.
        self._views: TTLCache[str, tuple[str | None, dict[str, Any]]] = TTLCache(
            maxsize=max(1, max_entries), ttl=max_age, timer=clock)
        self._lock = threading.Lock()

    def get(self, job_id: str, tenant: str, is_admin: bool) -> dict[str, Any] | None:
        with self._lock:
            entry = self._views.get(job_id)  # None too once max_age has passed: its labels may have changed
            if entry is None:
                return None
        owner, view = entry
        # A view read by an admin (owner None: tenant unknown) is only served to admins.
        return view if is_admin or (owner is not None and owner == tenant) else None

    def put(self, job_id: str, owner: str | None, view: dict[str, Any]) -> None:
        """Keep ``view`` if its job has finished (``owner``: its tenant, None when not known)."""
        if view.get("status") not in TERMINAL or self.max_entries <= 0:
            return
        with self._lock:
            self._views[job_id] = (owner, view)

    def discard(self, job_id: str) -> None:
        with self._lock:
            self._views.pop(job_id, None)

    def __len__(self) -> int:
        with self._lock:
            self._views.expire()
            return len(self._views)
