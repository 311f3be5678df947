"""Capture a job's log lines on the worker and store them with the job (``ganforge.jobs.job_logs``).

``capture(services, job_id)`` installs a logging handler on the root logger for one claimed
attempt. It keeps the records that belong to the job: those logged with ``extra={"job_id": …}``
(the upload thread, heartbeat threads) and those logged, without another job's id, from the
thread that runs the attempt (the runner, gan_core's trainer, the data code). A multi-device job's
ranks are other processes: the claiming thread feeds their output in with ``add_rank_line``.
Lines are buffered and written as one chunk every ``GANFORGE_JOB_LOG_CHUNK_LINES`` lines or
``GANFORGE_JOB_LOG_FLUSH_SECONDS`` seconds by a side thread, so training never waits for the
store; a failed write keeps the lines for the next try. URLs lose their query strings (presigned
signatures) before anything is kept.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
from datetime import datetime, timezone
from typing import Any, Iterator

from ganforge.jobs import job_logs
from ganforge.jobs.logs import without_query_strings
from ganforge.jobs.services import Services

log = logging.getLogger(__name__)

MAX_BUFFERED = 20_000  # lines held while the store is away; past it the oldest are dropped (and counted)
MAX_MESSAGE = 8_000  # characters of one line (a traceback included)
_RANK_PREFIX = re.compile(r"^\[[A-Za-z_]*?(\d+)\]:(.*)$")  # torch's launcher: "[default1]:<the rank's line>"


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JobLogHandler(logging.Handler):
    def __init__(self, services: Services, job_id: str, thread_id: int):
        super().__init__(logging.INFO)
        self.services, self.job_id = services, job_id
        self.threads = {thread_id}
        settings = services.settings
        self.chunk_lines, self.flush_seconds = settings.job_log_chunk_lines, settings.job_log_flush_seconds
        self._lines: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._next = job_logs.next_line(services.db, services.storage, job_id)
        self._dropped = 0
        self._flusher = threading.Thread(target=self._run, name=f"joblog-{job_id[:8]}", daemon=True)
        self._flusher.start()

    # ---- capture ---------------------------------------------------------------------------
    def belongs(self, record: logging.LogRecord) -> bool:
        owner = getattr(record, "job_id", None)
        return owner == self.job_id or (owner is None and record.thread in self.threads)

    def emit(self, record: logging.LogRecord) -> None:
        if not self.belongs(record):
            return
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            self._add(_iso(record.created), record.levelname, getattr(record, "rank", None), record.name, message)
        except Exception:  # a log line must never break the job
            self.handleError(record)

    def add_rank_line(self, raw: str, default_time: float) -> None:
        """One line of the launcher's output: ``[defaultR]:`` and the rank's JSON log line (its
        time, level, logger, message) or any other text it printed (a traceback's line)."""
        found = _RANK_PREFIX.match(raw)
        rank, text = (int(found.group(1)), found.group(2)) if found else (None, raw)
        try:
            entry = json.loads(text)
        except ValueError:
            entry = None
        if isinstance(entry, dict) and "message" in entry:
            message = str(entry["message"]) + (f"\n{entry['exception']}" if entry.get("exception") else "")
            self._add(str(entry.get("time") or _iso(default_time)), str(entry.get("level") or "INFO"),
                      entry.get("rank", rank), str(entry.get("logger") or ""), message)
        elif text.strip():
            self._add(_iso(default_time), "INFO", rank, "stdout" if found else "launcher", text)

    def _add(self, time: str, level: str, rank: int | None, logger: str, message: str) -> None:
        line = {"time": time, "level": level, "rank": rank, "logger": logger,
                "message": without_query_strings(message)[:MAX_MESSAGE]}
        with self._lock:
            line["n"] = self._next
            self._next += 1
            self._lines.append(line)
            if len(self._lines) > MAX_BUFFERED:
                self._dropped += len(self._lines) - MAX_BUFFERED
                del self._lines[: len(self._lines) - MAX_BUFFERED]
            if len(self._lines) >= self.chunk_lines:
                self._wake.set()

    # ---- writing ---------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        with self._lock:
            lines, self._lines = self._lines, []
            dropped, self._dropped = self._dropped, 0
        while lines:
            # whole chunks of consecutive numbers (lines dropped under pressure leave a gap)
            chunk = lines[: self.chunk_lines]
            try:
                job_logs.store_chunk(self.services.db, self.services.storage, self.job_id, chunk)
            except job_logs.ChunkTaken:  # a stale attempt wrote these numbers: renumber after its lines
                self._renumber(lines)
                continue
            except Exception as exc:
                log.warning("job %s: could not store %d log lines (%s: %s); keeping them for the next try",
                            self.job_id, len(lines), type(exc).__name__, exc)
                with self._lock:
                    self._lines[:0] = lines
                return
            del lines[: len(chunk)]
        if dropped:
            log.warning("job %s: %d log lines dropped while the store was unreachable", self.job_id, dropped)

    def _renumber(self, pending: list[dict[str, Any]]) -> None:
        with self._lock:
            start = job_logs.next_line(self.services.db, self.services.storage, self.job_id)
            for i, line in enumerate(pending + self._lines):
                line["n"] = start + i
            self._next = start + len(pending) + len(self._lines)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._flusher.join(timeout=30)
        self.flush()
        super().close()


@contextlib.contextmanager
def capture(services: Services, job_id: str) -> Iterator[JobLogHandler | None]:
    """The job's lines from this thread (and records naming the job) go to its stored log while
    the block runs; the rest of them is written when it ends."""
    try:
        handler = JobLogHandler(services, job_id, threading.get_ident())
    except Exception as exc:  # the store or database away at the start: the job runs without its log
        log.warning("job %s: its log lines will not be stored (%s: %s)", job_id, type(exc).__name__, exc)
        yield None
        return
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        handler.close()
