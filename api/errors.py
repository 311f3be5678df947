"""The error envelope, and the handlers that turn every failure into one.

    {"error": {"code": "invalid_spec", "message": "...", "details": [{"field": "...", "problem": "..."}],
               "request_id": "..."}}

``details`` is always a list (empty when there is nothing field-specific). Bad input of any kind
gets a 4xx; a 500 (code ``internal``) only ever comes from the catch-all, i.e. from a bug.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from flask import Flask, Response, current_app, g, has_request_context, jsonify, request
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from ganforge.jobs.lifecycle import IllegalTransition, JobNotFound
from ganforge.jobs.storage import ObjectNotFound, StorageError

log = logging.getLogger(__name__)

# Machine-readable codes for plain HTTP errors (the router's 404/405, werkzeug's 413, ...).
HTTP_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    411: "length_required",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    431: "headers_too_large",
    500: "internal",
    501: "not_implemented",
    503: "unavailable",
}

# Response headers of an HTTPException worth keeping on the envelope (405's Allow, 503's Retry-After).
_KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")

Details = list[dict[str, str]]


class APIError(Exception):
    """Raised by views: becomes the envelope with this status, code, message and details."""

    def __init__(self, status: int, code: str, message: str, details: Details | None = None,
                 headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        self.headers = dict(headers or {})


def invalid(field: str, problem: str, code: str = "invalid_request", message: str | None = None) -> APIError:
    """A 422 naming one field (a body field or a query parameter)."""
    return APIError(422, code, message or f"{field}: {problem}", [{"field": field, "problem": problem}])


def not_found(what: str) -> APIError:
    return APIError(404, "not_found", f"{what} not found")


def error_response(status: int, code: str, message: str, details: Details | None = None,
                   headers: Mapping[str, str] | None = None) -> Response:
    error: dict[str, Any] = {"code": code, "message": message, "details": details or []}
    if has_request_context() and "request_id" in g:
        error["request_id"] = g.request_id
    response = jsonify({"error": error})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _api_error(exc: APIError) -> Response:
    return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    message = exc.description or exc.name
    if isinstance(exc, RequestEntityTooLarge):
        limit = current_app.config.get("MAX_CONTENT_LENGTH")
        message = f"the request body is larger than the limit of {limit} bytes" if limit else message
    headers = {}
    original = exc.get_response()
    for name in _KEPT_HEADERS:
        if name in original.headers:
            headers[name] = original.headers[name]
    code = HTTP_CODES.get(status) or exc.name.lower().replace(" ", "_").replace("'", "")
    return error_response(status, code, message, headers=headers)


def _job_not_found(exc: JobNotFound) -> Response:
    return error_response(404, "not_found", "job not found")


def _illegal_transition(exc: IllegalTransition) -> Response:
    return error_response(409, "conflict", str(exc))


def _object_missing(exc: ObjectNotFound) -> Response:
    log.error("artifact object missing from the store: %s", exc)
    return error_response(404, "not_found", "the artifact's content is missing from the store")


def _storage_down(exc: StorageError) -> Response:
    log.error("artifact store error: %s", exc)
    return error_response(503, "storage_unavailable", "the artifact store cannot be reached; try again",
                          headers={"Retry-After": "5"})


def _database_down(exc: OperationalError) -> Response:
    # Connection refused, database restarting, SQLite locked past its timeout: an outage, not a bug.
    log.error("database error on %s %s", request.method, request.path, exc_info=exc)
    return error_response(503, "database_unavailable", "the database cannot be reached; try again",
                          headers={"Retry-After": "5"})


def _unexpected(exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.path)
    return error_response(500, "internal", "internal error; the server log has the details")


def register_error_handlers(app: Flask) -> None:
    # Flask picks the handler of the most specific class in the exception's MRO, so the
    # catch-all for Exception only sees what nothing below claims.
    app.register_error_handler(APIError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(JobNotFound, _job_not_found)
    app.register_error_handler(IllegalTransition, _illegal_transition)
    app.register_error_handler(ObjectNotFound, _object_missing)
    app.register_error_handler(StorageError, _storage_down)
    app.register_error_handler(OperationalError, _database_down)
    app.register_error_handler(Exception, _unexpected)
