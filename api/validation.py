"""Request parsing shared by the views: ids, JSON bodies and query parameters.

Everything here raises :class:`ganforge.api.errors.APIError` (or werkzeug's 413) for bad input, so a view
never sees a value it has not checked.
"""

from __future__ import annotations

import io
import json
import math
import re
from typing import Any, Iterator

from flask import current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from ganforge.api.errors import APIError, invalid, not_found

# Job and artifact ids are uuid4 hex (ganforge.jobs.models.new_id).
_ID = re.compile(r"[0-9a-f]{32}")
_INT = re.compile(r"[+-]?[0-9]{1,18}")
# Lone surrogates cannot be encoded as UTF-8, and PostgreSQL text cannot hold NUL.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# Views that stream a large body to disk (an uploaded dataset archive) rather than buffer it.
STREAMED_BODIES = frozenset({"datasets.upload_dataset"})


def check_id(value: str, what: str) -> str:
    """A well-formed id, or the same 404 an unknown id gets (``what`` names the resource)."""
    if not _ID.fullmatch(value):
        raise not_found(what)
    return value


def buffer_chunked_body() -> None:
    """Before each request: read a body sent without Content-Length (``Transfer-Encoding:
    chunked``) whole, up to MAX_CONTENT_LENGTH + 1 bytes, and refuse it (413) past the limit.

    Werkzeug enforces the limit on such a stream by stopping at it: ``get_data()`` then returns
    the first MAX_CONTENT_LENGTH bytes as if they were the whole body (a padded spec was accepted,
    a long one was invalid JSON). A body within the limit is handed on with its Content-Length,
    so every later reader sees an ordinary, complete body."""
    environ = request.environ
    if request.endpoint in STREAMED_BODIES:
        return  # the view reads the body itself, in chunks, under its own limit
    if environ.get("CONTENT_LENGTH") or "wsgi.input_terminated" not in environ:
        # With a length werkzeug refuses a body over the limit up front; without one and without a
        # server that ends the stream, werkzeug reads nothing (it cannot know where the body ends).
        return
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    if limit is None:
        return
    stream, body = environ["wsgi.input"], bytearray()
    while len(body) <= limit:
        chunk = stream.read(min(1 << 16, limit + 1 - len(body)))
        if not chunk:
            break
        body += chunk
    if len(body) > limit:
        raise RequestEntityTooLarge()
    environ["wsgi.input"] = io.BytesIO(bytes(body))
    environ["CONTENT_LENGTH"] = str(len(body))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def json_body(invalid_code: str = "invalid_request") -> Any:
    """The request body parsed as JSON: 415 unless sent as JSON, 413 over the size limit,
    400 when it is not valid UTF-8 JSON, 422 (with ``invalid_code``) when a string cannot be
    stored."""
    if not request.is_json:
        raise APIError(415, "unsupported_media_type",
                       f"send the body as application/json, not {request.mimetype or 'no content type'}")
    raw = request.get_data(cache=True)  # raises RequestEntityTooLarge past MAX_CONTENT_LENGTH
    if not raw.strip():
        raise APIError(400, "bad_request", "the request body is empty; send a JSON document")
    try:
        text = raw.decode("utf-8")
        doc = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except UnicodeDecodeError:
        raise APIError(400, "bad_request", "the request body is not valid UTF-8") from None
    except RecursionError:
        raise APIError(400, "bad_request", "the JSON document is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, rejected constants, over-long integers
        raise APIError(400, "bad_request", f"the request body is not valid JSON: {exc}") from None
    bad = list(_unstorable_strings(doc))
    if bad:
        raise APIError(422, invalid_code, "strings must not hold NUL characters or lone surrogates",
                       [{"field": field, "problem": "contains a NUL character or a lone surrogate"} for field in bad[:20]])
    return doc


def _unstorable_strings(doc: Any) -> Iterator[str]:
    """Dotted paths of the strings (or keys) that no database can store. Iterative: the
    document may be nested as deeply as the JSON parser allows."""
    stack: list[tuple[Any, tuple[str, ...]]] = [(doc, ())]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            if _UNSTORABLE.search(value):
                yield ".".join(path) or "(root)"
        elif isinstance(value, dict):
            for key, item in value.items():
                if _UNSTORABLE.search(key):
                    yield ".".join((*path, "(key)"))
                else:
                    stack.append((item, (*path, key)))
        elif isinstance(value, list):
            stack.extend((item, (*path, str(index))) for index, item in enumerate(value))


def allow_query(names) -> None:
    """422 naming the first query parameter that is not one of ``names`` (an endpoint's query
    model's fields): a mistyped filter must not silently return everything."""
    allowed = tuple(names)
    for name in request.args:
        if name not in allowed:
            takes = ", ".join(allowed) if allowed else "no query parameters"
            raise invalid(name[:64], f"unknown query parameter; this endpoint takes {takes}")


def query_str(name: str) -> str | None:
    """A query parameter; absent and empty are the same (None)."""
    value = request.args.get(name)
    return value if value else None


def query_int(name: str, default: int | None, lo: int, hi: int | None = None) -> int | None:
    """An integer query parameter in [lo, hi]; 422 naming the parameter otherwise."""
    raw = query_str(name)
    if raw is None:
        return default
    if not _INT.fullmatch(raw.strip()):
        raise invalid(name, f"must be an integer, not {raw[:40]!r}")
    value = int(raw)
    if value < lo or (hi is not None and value > hi):
        raise invalid(name, f"must be between {lo} and {hi}" if hi is not None else f"must be at least {lo}")
    return value
