"""Sampling for POST /v1/jobs/{id}/generate: a small LRU of loaded generators and a bounded pool.

Small requests run on the request thread. Large ones (more than ``inline_max`` samples) run on
an app-wide pool of ``threads`` threads with at most ``backlog`` more waiting; past that, or
past ``timeout`` seconds, the view answers 503 rather than tying up every server thread.

torch and gan_core.sampling are imported on first use, so an API process that never generates
never loads torch.
"""

from __future__ import annotations

import io
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
import torch
from cachetools import LRUCache

from gan_core.checkpoint import CheckpointError
from gan_core.sampling import LoadedGenerator, generate, load_generator, samples_png

log = logging.getLogger(__name__)

T = TypeVar("T")


class Busy(Exception):
    """Generation capacity is exhausted or the request ran past its time limit."""


class UnusableCheckpoint(Exception):
    """The stored bytes are not a loadable ganforge checkpoint (corrupt, foreign, mismatched)."""


class GenerationRuntime:
    def __init__(self, threads: int = 2, backlog: int = 2, timeout: float = 25.0, cache_size: int = 4,
                 inline_max: int = 256):
        self.threads = threads
        self.timeout = timeout
        self.inline_max = inline_max
        self.cache_size = cache_size
        self.loads = 0  # generators built from bytes so far (the cache's misses)
        # Not thread-safe by itself (a read reorders): every access holds _cache_lock.
        self._cache: LRUCache[tuple[str, str], LoadedGenerator] = LRUCache(maxsize=max(1, cache_size))
        self._cache_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(threads + backlog)
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()

    # ---- loaded generators -----------------------------------------------------------------
    def generator(self, artifact_id: str, sha256: str, read: Callable[[], bytes]) -> LoadedGenerator:
        """The sampling network of an artifact, from the cache or built from ``read()``.

        Keyed by id *and* digest: a checkpoint re-uploaded at the same step keeps its row id
        but gets new bytes.
        """
        key = (artifact_id, sha256)
        with self._cache_lock:
            cached = self._cache.get(key)
            if cached is not None:
                return cached
        # Built outside the lock: two first requests may both load; the second insert wins.
        try:
            loaded = load_generator(read())
        except (CheckpointError, KeyError, TypeError, ValueError) as exc:
            # ValueError covers a stored spec that no longer validates; KeyError a missing entry.
            raise UnusableCheckpoint(f"{type(exc).__name__}: {exc}") from exc
        with self._cache_lock:
            self.loads += 1
            self._cache[key] = loaded
        return loaded

    # ---- running ------------------------------------------------------------------------------
    def _pool(self) -> ThreadPoolExecutor:
        # Created on first large request: no threads exist before a (gunicorn) fork.
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="generate")
            return self._executor

    def run(self, n: int, work: Callable[[], T]) -> T:
        """``work()`` inline for small ``n``; on the pool otherwise (Busy when full or too slow)."""
        if n <= self.inline_max:
            return work()
        if not self._slots.acquire(blocking=False):
            raise Busy("generation is busy; try again shortly")
        try:
            future: Future[T] = self._pool().submit(work)
        except BaseException:
            self._slots.release()
            raise
        # The slot is held until the work ends, even after a timeout: an abandoned computation
        # still occupies a thread, and new work must not pile up behind it.
        future.add_done_callback(lambda _: self._slots.release())
        try:
            return future.result(timeout=self.timeout)
        except FutureTimeout:
            log.warning("generation of %d samples passed %.1f s; answered 503", n, self.timeout)
            raise Busy(f"generation took longer than {self.timeout:g} s") from None

    def shutdown(self) -> None:
        with self._executor_lock:
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = None


# ---- the computation ----------------------------------------------------------------------------
def label_problem(loaded: LoadedGenerator, n: int, labels: Sequence[int] | int | None) -> str | None:
    """Why ``labels`` do not fit this generator and ``n``, or None when they do."""
    k = loaded.num_classes
    if labels is None:
        return None
    if not k:
        return "this generator is not conditional; leave labels null"
    values = [labels] if isinstance(labels, int) else list(labels)
    if not isinstance(labels, int) and len(values) != n:
        return f"{len(values)} labels for {n} samples: give one label, or one per sample"
    bad = [v for v in values if not 0 <= v < k]
    if bad:
        return f"labels must be integers in [0, {k - 1}]; got {bad[:5]}"
    return None


def render(loaded: LoadedGenerator, n: int, seed: int, labels: Sequence[int] | int | None, fmt: str,
           rejection: bool = True) -> tuple[bytes, str]:
    """(body, content type): a PNG grid (or scatter plot for 2-D points) or a ``.npy`` array.

    Raises ``gan_core.rejection.RejectionError`` when rejection sampling keeps too few samples."""
    with torch.no_grad():
        samples: Any = generate(loaded, n, seed=seed, labels=labels, rejection=rejection)
    if fmt == "png":
        return samples_png(samples), "image/png"
    buffer = io.BytesIO()
    np.save(buffer, samples, allow_pickle=False)
    return buffer.getvalue(), "application/octet-stream"
