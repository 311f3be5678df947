"""Artifact uploads that survive a storage outage: spooled to local disk, retried with backoff.

Training never waits for the store: ``submit`` writes the bytes to a spool file and returns; a
background thread uploads them in order, registers each under the job's lease, and retries with
exponential backoff (0.5 s doubling to 15 s) for as long as it takes — an S3 outage delays
artifacts, it does not fail the job or lose one. Only a lost lease (another attempt owns the job)
stops it for good. ``drain`` waits until every spooled artifact has landed.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tenacity import RetryCallState, RetryError, Retrying, retry_if_not_exception_type, wait_exponential

from ganforge.jobs import lifecycle, telemetry
from ganforge.jobs.lifecycle import Claim, LeaseLost
from ganforge.jobs.services import Services

log = logging.getLogger(__name__)

BACKOFF_START, BACKOFF_MAX = 0.5, 15.0


class UploadsPending(RuntimeError):
    """``drain`` gave up waiting: the store stayed unreachable for the whole patience period."""


@dataclass(frozen=True)
class Pending:
    kind: str
    step: int
    key: str
    path: Path
    content_type: str
    score: float | None = None


class Uploader:
    """One per attempt. ``after_upload(pending)`` runs on the upload thread after each artifact
    is registered (the checkpoint retention hooks in there)."""

    def __init__(self, services: Services, claim: Claim, spool_root: Path,
                 after_upload: Callable[[Pending], None] | None = None):
        self.services = services
        self.claim = claim
        self.after_upload = after_upload
        self.spool = spool_root / claim.job_id / f"attempt-{claim.attempt}-{claim.token[:8]}"
        self.spool.mkdir(parents=True, exist_ok=True)
        self._queue: queue.Queue[Pending | None] = queue.Queue()
        self._fatal: BaseException | None = None
        self._stop = threading.Event()
        self._seq = 0
        self.retries = 0
        self._thread = threading.Thread(target=self._run, name=f"upload-{claim.job_id[:8]}", daemon=True)
        self._thread.start()

    # ---- training thread -------------------------------------------------------------------
    def submit(self, kind: str, step: int, key: str, data: bytes, content_type: str, score: float | None = None) -> None:
        self._raise()
        self._seq += 1
        path = self.spool / f"{self._seq:06d}-{kind}-{step}"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # a spool file is whole or absent
        self._queue.put(Pending(kind, step, key, path, content_type, score))

    def drain(self, patience_seconds: float) -> None:
        """Wait until every submitted artifact is in the store and registered."""
        deadline = time.monotonic() + patience_seconds
        while self._queue.unfinished_tasks:
            self._raise()
            if time.monotonic() > deadline:
                raise UploadsPending(f"{self._queue.unfinished_tasks} artifact(s) still not uploaded after "
                                     f"{patience_seconds:.0f} s (the store is unreachable)")
            time.sleep(0.05)
        self._raise()

    def close(self) -> None:
        """Stop the thread; files not uploaded stay in the spool folder only until it is removed."""
        self._stop.set()
        self._queue.put(None)
        self._thread.join(timeout=30)
        shutil.rmtree(self.spool, ignore_errors=True)

    def _raise(self) -> None:
        if self._fatal is not None:
            raise self._fatal

    # ---- upload thread ---------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self._fatal is None:
                    self._land(item)
            finally:
                self._queue.task_done()

    def _land(self, item: Pending) -> None:
        # The store or the database away: wait and try again, for as long as the job runs.
        # A lost lease is final (another attempt owns the job); close() stops the waiting.
        def before_sleep(state: RetryCallState) -> None:
            self.retries += 1
            telemetry.UPLOAD_RETRIES.inc()
            exc = state.outcome.exception() if state.outcome else None
            log.warning("upload of %s failed (%s: %s); retrying in %.1f s", item.key, type(exc).__name__, exc,
                        state.upcoming_sleep, extra={"job_id": self.claim.job_id})

        attempts = Retrying(retry=retry_if_not_exception_type(LeaseLost), stop=lambda _: self._stop.is_set(),
                            wait=wait_exponential(multiplier=BACKOFF_START, max=BACKOFF_MAX),
                            sleep=self._stop.wait, before_sleep=before_sleep)
        try:
            attempts(self._upload, item)
        except LeaseLost as exc:
            self._fatal = exc
        except RetryError:
            return  # closed while the store was away: the spool file goes with the folder
        else:
            item.path.unlink(missing_ok=True)

    def _upload(self, item: Pending) -> None:
        data = item.path.read_bytes()
        stored = self.services.storage.put(item.key, data, item.content_type)  # verifies the stored size
        lifecycle.record_artifact(self.services.db, self.claim.job_id, self.claim.token, kind=item.kind, step=item.step,
                                  key=stored.key, size=stored.size, sha256=stored.sha256,
                                  content_type=item.content_type, score=item.score)
        if self.after_upload is not None:
            self.after_upload(item)
