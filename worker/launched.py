"""A job on several devices: the claiming task starts its ranks through torch's launcher.

The Celery task (``runner.run_job``) has claimed the job; ``run_launched`` then starts
``python -m torch.distributed.run --nproc-per-node N --max-restarts 0 -m ganforge.worker.launched`` and
waits. Rank 0 runs ``runner.run_claimed`` (lease, metrics, artifacts, the job's end) and the other
ranks ``runner.follow_claimed``. The task stays thin:

* a drain (SIGTERM to the worker) becomes a stop file that rank 0 polls: checkpoint, release,
  back in the queue, as for a one-device job;
* when the launcher exits non-zero (a rank died: killed, out of memory, a crash) every process
  below it is killed and the attempt is ended at once as a lost attempt (queued again to resume
  from its latest checkpoint, or failed after ``max_attempts``); the launcher itself never
  restarts ranks;
* the launcher's output, every line tagged with its rank, is uploaded as the attempt's log.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from pathlib import Path

import torch

from gan_core import distributed
from gan_core.launch import Launch, die_with_parent, stop_requested, torchrun_argv, wait_for
from gan_core.spec import JobSpec
from ganforge.jobs import lifecycle
from ganforge.jobs.lifecycle import Claim
from ganforge.jobs.logs import configure_logging
from ganforge.jobs.queue import PRIORITY_RESUME
from ganforge.jobs.services import Services
from ganforge.jobs.settings import Settings
from ganforge.jobs.storage import attempt_log_key

log = logging.getLogger(__name__)

CLAIM_ENV = "GANFORGE_CLAIM"
OUTCOME_ENV = "GANFORGE_OUTCOME_FILE"
DEVICE_ENV = "GANFORGE_RANK_DEVICE"
# Once rank 0 has ended the job, the other ranks have this long to exit before they are killed
# (rank 0 may have stopped on an error of its own while they wait for its next decision).
AFTER_OUTCOME_SECONDS = 15.0

_active: set[Launch] = set()
_active_lock = threading.Lock()


def kill_active() -> None:
    """Kill every launcher this process started (the worker is exiting past its drain deadline)."""
    with _active_lock:
        launches = list(_active)
    for launch in launches:
        launch.kill()


def rank_device(spec: JobSpec) -> str:
    if spec.device != "auto":
        return spec.device
    return "cuda" if torch.cuda.is_available() else "cpu"


class _Tail:
    """The launcher's output as it grows: each complete new line to ``sink`` (the job's log)."""

    def __init__(self, path: Path, sink):
        self.path, self.sink, self.offset, self.partial = path, sink, 0, b""

    def read(self, final: bool = False) -> None:
        if self.sink is None:
            return
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return
        self.offset += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        if final and self.partial:
            lines, self.partial = lines + [self.partial], b""
        now = time.time()
        for line in lines:
            self.sink(line.decode(errors="replace").rstrip("\r"), now)


def run_launched(services: Services, claim: Claim, spec: JobSpec, drain, job_log=None) -> str:
    settings, job_id, devices = services.settings, claim.job_id, spec.resources.devices
    work = settings.data_dir / "ranks" / job_id / f"attempt-{claim.attempt}"
    work.mkdir(parents=True, exist_ok=True)
    outcome = work / "outcome"
    outcome.unlink(missing_ok=True)
    env = dict(os.environ)
    env[CLAIM_ENV] = json.dumps(claim.__dict__)
    env[OUTCOME_ENV] = str(outcome)
    env[DEVICE_ENV] = rank_device(spec)
    argv = torchrun_argv(devices, "ganforge.worker.launched", [], log_dir=work / "ranks", shutdown_timeout=10)
    log_path = work / "launcher.log"
    tail = _Tail(log_path, job_log.add_rank_line if job_log is not None else None)  # each rank's lines, live
    with open(log_path, "wb") as output:
        launch = Launch(argv, stop_file=work / "stop", env=env, output=output)
        with _active_lock:
            _active.add(launch)
        try:
            launch.start()
            log.info("job %s: %d ranks started by torch's launcher (pid %d)", job_id, devices, launch.pid)
            ended_at: list[float] = []

            def tick() -> None:
                tail.read()
                if drain.is_set():
                    launch.request_stop()
                if outcome.exists():
                    ended_at.append(ended_at[0] if ended_at else time.monotonic())
                    if time.monotonic() - ended_at[0] > AFTER_OUTCOME_SECONDS:
                        log.warning("job %s: ranks still running %.0f s after rank 0 ended the job; killing them",
                                    job_id, AFTER_OUTCOME_SECONDS)
                        launch.kill()

            code = wait_for(launch, on_tick=tick)
        finally:
            launch.close()
            with _active_lock:
                _active.discard(launch)
    tail.read(final=True)
    _upload_log(services, claim, log_path)
    result = outcome.read_text().strip() if outcome.exists() else ""
    if result:
        log.info("job %s: rank 0 ended the attempt: %s (launcher exit code %s)", job_id, result, code)
        return result
    reason = _failure_reason(log_path.read_text(errors="replace"), code)
    log.warning("job %s attempt %d: %s", job_id, claim.attempt, reason)
    status = lifecycle.abandon(services.db, job_id, claim.token, f"attempt {claim.attempt}: {reason}")
    if status == "queued":
        services.queue.enqueue(job_id, _queue_of(services, job_id), PRIORITY_RESUME)
    return "rank_failed"


def _queue_of(services: Services, job_id: str) -> str:
    with services.db.read() as session:
        return lifecycle.get(session, job_id).queue


_EXIT = re.compile(r"rank\s*:\s*(\d+).*?\n.*?exitcode\s*:\s*(-?\d+)", re.IGNORECASE)


def _failure_reason(launcher_log: str, code: int) -> str:
    """Which rank ended the attempt, from the launcher's failure report."""
    # torchrun lists every failed rank, the one that failed first under "Root Cause"
    root = launcher_log.rfind("Root Cause")
    found = _EXIT.search(launcher_log, root if root >= 0 else 0)
    if found:
        rank, exit_code = found.groups()
        how = f"was killed by signal {-int(exit_code)}" if int(exit_code) < 0 else f"exited with code {exit_code}"
        return f"training process of rank {rank} {how}; the other ranks were stopped"
    return f"the training processes' launcher exited with code {code}"


def _upload_log(services: Services, claim: Claim, path: Path) -> None:
    """The attempt's log (every line tagged with its rank by the launcher) into the store."""
    try:
        data = path.read_bytes()
        key = attempt_log_key(claim.job_id, claim.attempt)
        services.storage.put(key, data, "text/plain; charset=utf-8")
        lifecycle.record_attempt_log(services.db, claim.job_id, claim.attempt, key, data)
    except Exception as exc:  # the job's outcome does not depend on its log
        log.warning("job %s: could not store the attempt's log: %s", claim.job_id, exc)


# ---- in each rank (run by the launcher) -------------------------------------------------------

class _StopFile:
    """The drain flag of rank 0: the claiming task asks for a stop through the launcher's stop file."""

    def is_set(self) -> bool:
        return stop_requested()


def main() -> int:
    die_with_parent()
    settings = Settings.from_env()
    rank = int(os.environ.get("RANK", "0"))
    configure_logging(settings.log_json)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_RankTag(rank))
    claim = Claim(**json.loads(os.environ[CLAIM_ENV]))
    device = distributed.device_for(os.environ.get(DEVICE_ENV, "cpu"), int(os.environ.get("LOCAL_RANK", "0")))
    parallel = distributed.init_from_env(device)
    from ganforge.worker import runner  # deliberately lazy (a cycle): runner starts this module's ranks (run_launched)

    if parallel.is_main:
        # Written only when rank 0 has ended the attempt itself; without it the claiming task
        # treats the attempt as lost.
        result = runner.run_claimed(Services.from_settings(settings), claim, _StopFile(), parallel)
        Path(os.environ[OUTCOME_ENV]).write_text(result)
    else:
        runner.follow_claimed(parallel, settings.data_config())
    distributed.shutdown(parallel)
    return 0


class _RankTag(logging.Filter):
    def __init__(self, rank: int):
        super().__init__()
        self.rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        record.rank = self.rank
        return True


if __name__ == "__main__":
    sys.exit(main())
