"""JSON log lines for the API, with the request id on every line logged during a request.

The formatter is the service's own (``ganforge.jobs.logs.JSONFormatter``: one object per line with time,
level, logger, message and any extras); this module adds the request id and one access line per
request (method, path, status, duration).
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from flask import Flask, Response, g, has_request_context, request

from ganforge.jobs.logs import JSONFormatter, configure_logging

__all__ = ["JSONFormatter", "RequestContextFilter", "init_app"]

access_log = logging.getLogger("api.access")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class RequestContextFilter(logging.Filter):
    """Adds ``request_id`` to records made while a request is being handled."""

    def filter(self, record: logging.LogRecord) -> bool:
        if has_request_context() and "request_id" in g and not hasattr(record, "request_id"):
            record.request_id = g.request_id
        return True


def _begin() -> None:
    # A caller's (or the proxy's) X-Request-ID is kept when it is sane, so lines can be joined.
    incoming = request.headers.get("X-Request-ID", "")
    g.request_id = incoming if _REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
    g.started = time.perf_counter()


def _end(response: Response) -> Response:
    response.headers["X-Request-ID"] = g.get("request_id", "")
    started = g.get("started")
    access_log.info(
        "%s %s %d", request.method, request.path, response.status_code,
        extra={"method": request.method, "path": request.path, "status": response.status_code,
               "duration_ms": round((time.perf_counter() - started) * 1000, 2) if started else None},
    )
    return response


def queryless_request_handler():
    """Werkzeug's request handler for the embedded server, its access line without the query
    string: signed download URLs carry their signature there, and ``ganforge up`` writes this log
    into the data directory. (The app's own access line logs the path alone too.)"""
    from werkzeug.serving import WSGIRequestHandler

    class QuerylessRequestHandler(WSGIRequestHandler):
        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            full = self.path
            self.path = full.split("?", 1)[0]
            try:
                super().log_request(code, size)
            finally:
                self.path = full

    return QuerylessRequestHandler


# gunicorn's access line (off unless --access-logfile is given): %(U)s is the path without the query.
GUNICORN_ACCESS_FORMAT = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(L)ss'


def init_app(app: Flask, json_lines: bool = True) -> None:
    """Request ids and access lines for ``app``; configures the root logger only when nothing
    else has (gunicorn's ``ganforge.api:create_app()``), leaving a host's own setup (the CLI, pytest) alone."""
    root = logging.getLogger()
    if not root.handlers:
        configure_logging(json_lines)
    context = RequestContextFilter()
    for handler in root.handlers:
        if not any(isinstance(f, RequestContextFilter) for f in handler.filters):
            handler.addFilter(context)
    app.before_request(_begin)
    app.after_request(_end)
