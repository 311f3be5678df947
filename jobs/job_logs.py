"""A job's own log lines, kept in the artifact store in chunks (never in the database).

The worker (``ganforge.worker.job_logs``) numbers every line of a job from 0 across all its attempts and
writes them in chunks of JSON lines, each an artifact of kind ``log_lines`` whose ``step`` is the
number of its first line: the rows say where each chunk starts, so a reader asking for the lines
from ``since`` on fetches only the chunks that hold them. A line is
``{"n", "time", "level", "rank", "logger", "message"}`` (``rank`` null outside multi-device jobs).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ganforge.jobs.db import Database
from ganforge.jobs.models import Artifact, utcnow
from ganforge.jobs.storage import Storage

KIND = "log_lines"
CONTENT_TYPE = "application/x-ndjson"


class ChunkTaken(RuntimeError):
    """Another writer (a stale attempt) registered a chunk starting at the same line."""


def chunk_key(job_id: str, first: int) -> str:
    return f"jobs/{job_id}/logs/lines-{first:09d}.jsonl"


def encode(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line, separators=(",", ":"), default=str).encode() + b"\n" for line in lines)


def decode(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def chunks(session: Session, job_id: str) -> list[Artifact]:
    return list(session.scalars(select(Artifact).where(Artifact.job_id == job_id, Artifact.kind == KIND)
                                .order_by(Artifact.step)))


def next_line(db: Database, storage: Storage, job_id: str) -> int:
    """The number the job's next line gets: after the last stored chunk's last line."""
    with db.read() as session:
        stored = chunks(session, job_id)
    if not stored:
        return 0
    last = decode(storage.get(stored[-1].key))
    return last[-1]["n"] + 1 if last else stored[-1].step


def store_chunk(db: Database, storage: Storage, job_id: str, lines: list[dict[str, Any]]) -> None:
    """Put one chunk (lines numbered consecutively) into the store and register it. Not fenced by
    the lease: the lines that say why an attempt ended are written after it ended."""
    first = lines[0]["n"]
    data = encode(lines)
    stored = storage.put(chunk_key(job_id, first), data, CONTENT_TYPE)
    try:
        with db.session() as session:
            session.add(Artifact(job_id=job_id, kind=KIND, step=first, key=stored.key, bytes=len(data),
                                 sha256=hashlib.sha256(data).hexdigest(), content_type=CONTENT_TYPE,
                                 created_at=utcnow()))
    except IntegrityError as exc:
        raise ChunkTaken(f"a log chunk of job {job_id} already starts at line {first}") from exc


def read_lines(session: Session, storage: Storage, job_id: str, since: int, limit: int) -> tuple[list[dict[str, Any]], int, bool]:
    """(lines numbered ``since`` and up, at most ``limit`` of them; the cursor to ask for next;
    whether more lines are stored past them)."""
    stored = chunks(session, job_id)
    # a chunk holds the lines from its step up to the next chunk's step
    wanted = [c for i, c in enumerate(stored) if i + 1 == len(stored) or stored[i + 1].step > since]
    lines: list[dict[str, Any]] = []
    more = False
    for chunk in wanted:
        if len(lines) >= limit:
            more = True
            break
        for line in decode(storage.get(chunk.key)):
            if line["n"] < since:
                continue
            if len(lines) >= limit:
                more = True
                break
            lines.append(line)
    cursor = lines[-1]["n"] + 1 if lines else since
    return lines, cursor, more
