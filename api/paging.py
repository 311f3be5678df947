"""Keyset paging of a list endpoint (newest first): the request's ``?cursor=`` in, the next page's
cursor out. Cursors are opaque to clients (``ganforge.api.schemas.encode_cursor``: created_at and id)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, tuple_

from ganforge.api.errors import invalid
from ganforge.api.schemas import decode_cursor, encode_cursor
from ganforge.api.state import services
from ganforge.api.validation import query_str


def keyset_page(stmt: Select, model: Any, limit: int) -> tuple[list[Any], str | None]:
    """Up to ``limit`` rows of ``model`` selected by ``stmt``, newest first, after ``?cursor=``;
    and the cursor of the next page (None on the last one). A cursor this API did not make is a
    422 naming it."""
    cursor = query_str("cursor")
    if cursor is not None:
        try:
            created_at, last_id = decode_cursor(cursor)
        except ValueError:
            raise invalid("cursor", "not a cursor from this API; start again without it") from None
        stmt = stmt.where(tuple_(model.created_at, model.id) < tuple_(created_at, last_id))
    with services().db.read() as session:
        rows = list(session.scalars(stmt.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1)))
    page = rows[:limit]
    return page, (encode_cursor(page[-1].created_at, page[-1].id) if len(rows) > limit else None)
