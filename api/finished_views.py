"""Views of finished jobs, kept per API process.

A job that has succeeded, failed or been cancelled never changes again: no transition leaves a
terminal status (``jobs.lifecycle.ALLOWED``) and every other write to a job row or its history is
fenced on a live status (queued or running) or a lease, which a finished job no longer holds. Its
view (``GET /v1/jobs/{id}``: row and event history) can therefore be served from memory without a
stale answer, whichever API process a client reaches. Clients that keep polling a job after it
ended (scripts, dashboards left open) then cost no database round trip.

Bounded (least recently used out); the tenant is kept with each view so another tenant's job stays
"not found". Views of live jobs are never kept.
"""

from __future__ import annotations

import threading
from typing import Any

from cachetools import LRUCache

from jobs.models import TERMINAL


class FinishedViews:
    def __init__(self, max_entries: int = 2048):
        self.max_entries = max_entries
        # cachetools' LRUCache is not thread-safe: every access holds the lock (a read reorders too).
        self._views: LRUCache[str, tuple[str | None, dict[str, Any]]] = LRUCache(maxsize=max(1, max_entries))
        self._lock = threading.Lock()

    def get(self, job_id: str, tenant: str, is_admin: bool) -> dict[str, Any] | None:
        with self._lock:
            entry = self._views.get(job_id)
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

    def __len__(self) -> int:
        return len(self._views)
