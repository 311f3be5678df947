"""Liveness (the process answers) and readiness (its database, broker and store answer)."""

from __future__ import annotations

import logging
from typing import Callable

from flask import Blueprint, jsonify
from sqlalchemy import text

from ganforge.api.state import services

log = logging.getLogger(__name__)

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


def _database() -> None:
    with services().db.engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def _check(name: str, probe: Callable[[], None]) -> dict[str, str]:
    try:
        probe()
    except Exception as exc:  # any failure means not ready; the reason goes to the log and the body
        log.warning("readiness check %s failed: %s", name, exc)
        return {"status": "error", "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    return {"status": "ok"}


@bp.get("/readyz")
def readyz():
    svc = services()
    checks = {
        "database": _check("database", _database),
        "broker": _check("broker", svc.queue.check),
        "storage": _check("storage", svc.storage.check),
    }
    ready = all(c["status"] == "ok" for c in checks.values())
    failed = [name for name, c in checks.items() if c["status"] != "ok"]
    body = {"status": "ready" if ready else "unavailable", "checks": checks}
    if failed:
        body["failed"] = failed
    return jsonify(body), 200 if ready else 503
