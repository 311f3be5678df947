"""Who is calling: ``Authorization: Bearer <key>`` → ``flask.g.principal`` (tenant, admin, key id).

With ``GANFORGE_AUTH=off`` (the embedded default: one user on 127.0.0.1) every request is the
local admin of tenant ``default``. With ``required`` (always in production) every endpoint but
the health checks, the API description and presigned artifact URLs needs a live key; anything
else is 401 with ``WWW-Authenticate: Bearer``.

Keys are looked up by their sha256, and the answer (also "no such key") is cached in the
process for ``auth_cache_seconds`` (GANFORGE_AUTH_CACHE_SECONDS, default 5): the most polled
endpoint then costs no extra query. The price: a revoked key keeps working for up to that long
in each API process that saw it recently.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from cachetools import TTLCache
from flask import Flask, g, request
from sqlalchemy import Select

from ganforge.api.errors import APIError
from ganforge.jobs.db import Database
from ganforge.jobs.keys import Principal, principal_for
from ganforge.jobs.models import Job

__all__ = ["Principal", "KeyCache", "principal", "scoped", "init_app", "LOCAL_ADMIN"]

LOCAL_ADMIN = Principal(tenant="default", is_admin=True, key_id=None)
# Endpoints anyone may call: probes, the API description, the dashboard's page shells and their
# scripts (they hold no data: the pages read everything through the API with the user's key).
# (Presigned artifact URLs are checked by their signature in ganforge.api.artifacts instead.)
PUBLIC_ENDPOINTS = frozenset({"health.healthz", "health.readyz", "openapi.spec", "openapi.docs", "openapi.docs_plain",
                              "openapi.docs_asset", "static",
                              "dashboard.jobs_page", "dashboard.job_page", "dashboard.submit_page",
                              "dashboard.sweeps_page", "dashboard.sweep_page"})
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="ganforge"'}


class KeyCache:
    """key → Principal | None for ``ttl`` seconds (cachetools' TTLCache). Bounded: the least
    recently used entry goes when full, so a flood of random keys costs one query each, never
    unbounded memory. Unknown keys are cached too (as None)."""

    def __init__(self, db: Database, ttl: float, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic):
        self.db = db
        self.ttl = ttl
        self._entries: TTLCache[str, Principal | None] | None = (
            TTLCache(maxsize=max_entries, ttl=ttl, timer=clock) if ttl > 0 else None)
        self._lock = threading.Lock()  # TTLCache is not thread-safe (reads expire and reorder)

    def lookup(self, key: str) -> Principal | None:
        if self._entries is None:
            return principal_for(self.db, key)
        with self._lock:
            hit = self._entries.get(key, _MISSING)
        if hit is not _MISSING:
            return hit
        found = principal_for(self.db, key)
        with self._lock:
            self._entries[key] = found
        return found


_MISSING: Any = object()


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _signed_download() -> bool:
    # The view verifies the signature; a URL with a bad one is a 403 there, never a pass here.
    return request.endpoint == "artifacts.content" and ("signature" in request.args or "expires" in request.args)


def init_app(app: Flask, required: bool, cache: KeyCache) -> None:
    def authenticate() -> None:
        if not required:
            g.principal = LOCAL_ADMIN
            return
        g.principal = None
        if request.endpoint in PUBLIC_ENDPOINTS or _signed_download():
            return
        key = _bearer()
        if key is None:
            raise APIError(401, "unauthorized", "this API needs an API key: send Authorization: Bearer <key>",
                           headers=CHALLENGE)
        found = cache.lookup(key)
        if found is None:
            raise APIError(401, "unauthorized", "the API key is not valid (unknown or revoked)", headers=CHALLENGE)
        g.principal = found

    app.before_request(authenticate)


def principal() -> Principal:
    """The caller of the current request (views behind authentication always have one)."""
    found = g.get("principal")
    if found is None:
        raise APIError(401, "unauthorized", "this API needs an API key: send Authorization: Bearer <key>",
                       headers=CHALLENGE)
    return found


def scoped(stmt: Select) -> Select:
    """``stmt`` (over jobs) limited to the caller's tenant; admins see every tenant."""
    who = principal()
    return stmt if who.is_admin else stmt.where(Job.tenant == who.tenant)
