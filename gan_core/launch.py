"""Start the ranks of one data-parallel job through torch's launcher (``torch.distributed.run``).

The launcher (torchrun's elastic agent) starts one process per device, sets RANK, LOCAL_RANK,
WORLD_SIZE and the rendezvous, watches them, and, when any of them exits non-zero, ends the others
and exits non-zero itself: it runs with ``--max-restarts 0``, so retries stay the caller's (a job's
attempts, resumed from its latest checkpoint). Used by ``ganforge train --devices N`` and by the
service's worker; nothing here is a scheduler of its own.

Stopping is asked for through a file (``GANFORGE_STOP_FILE``): rank 0 polls it with its other
stop conditions and broadcasts the decision, so a stop is a clean end of a step (checkpoint
saved), never a signal landing in the middle of a collective. Killing is for failures:
:meth:`Launch.kill` ends the launcher and every process below it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Sequence

log = logging.getLogger(__name__)

STOP_FILE_ENV = "GANFORGE_STOP_FILE"
_PR_SET_PDEATHSIG = 1


def torchrun_argv(
    nproc: int,
    module: str,
    args: Sequence[str],
    *,
    nnodes: int = 1,
    rdzv_endpoint: str | None = None,
    rdzv_id: str | None = None,
    log_dir: Path | None = None,
    shutdown_timeout: int = 15,
) -> list[str]:
    """The command line of torch's launcher running ``python -m module args`` on ``nproc`` ranks
    here (and ``nnodes`` hosts in all, meeting at the c10d rendezvous ``rdzv_endpoint``)."""
    argv = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", "--max-restarts=0",
            "--monitor-interval=0.2", f"--shutdown-timeout={shutdown_timeout}"]
    if nnodes == 1 and rdzv_endpoint is None:
        argv.append("--standalone")  # c10d rendezvous on a free local port
    else:
        if not rdzv_endpoint or not rdzv_id:
            raise ValueError("several hosts need a rendezvous endpoint (HOST:PORT) and an id shared by all of them")
        argv += [f"--nnodes={nnodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}", f"--rdzv-id={rdzv_id}"]
    if log_dir is not None:
        # Each rank's stdout and stderr in its own file (log_dir/<run>/attempt_0/<rank>/), and on the
        # console too, with lines prefixed by the rank.
        argv += [f"--log-dir={log_dir}", "--redirects=3", "--tee=3"]
    return argv + ["-m", module, *args]


def die_with_parent(signum: int = signal.SIGKILL) -> None:
    """Linux: this process gets ``signum`` (SIGKILL) when its parent (the launcher) dies, so no
    rank outlives a launcher that was killed. A no-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signum))
    except (OSError, AttributeError):  # pragma: no cover - no prctl
        pass
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children first), from /proc; empty where /proc is missing."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may hold spaces or parentheses
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class Launch:
    """One run of the launcher as a child process."""

    def __init__(self, argv: list[str], *, stop_file: Path, env: dict[str, str] | None = None,
                 output: IO[bytes] | int | None = None):
        self.argv = argv
        self.stop_file = stop_file
        self.env = dict(os.environ if env is None else env)
        self.env[STOP_FILE_ENV] = str(stop_file)
        # torchrun would set 1 and print a banner about it; share this host's cores among the ranks.
        nproc = next((int(a.split("=", 1)[1]) for a in argv if a.startswith("--nproc-per-node=")), 1)
        self.env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
        self.output = output
        self.process: subprocess.Popen | None = None

    def start(self) -> Launch:
        self.stop_file.unlink(missing_ok=True)
        # Its own session: a terminal's Ctrl-C reaches the caller alone, which asks for a clean stop.
        self.process = subprocess.Popen(self.argv, env=self.env, start_new_session=True, stdin=subprocess.DEVNULL,
                                        stdout=self.output, stderr=subprocess.STDOUT if self.output is not None else None)
        log.info("launcher started (pid %d): %s", self.process.pid, " ".join(self.argv))
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def request_stop(self) -> None:
        """Rank 0 stops at the end of its step, saves a checkpoint and every rank exits."""
        self.stop_file.touch()

    def poll(self) -> int | None:
        assert self.process is not None
        return self.process.poll()

    def wait(self, timeout: float | None = None) -> int | None:
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """SIGKILL the launcher and every process below it (the ranks run in sessions of their own,
        so one process group does not hold them all)."""
        if self.process is None or self.process.poll() is not None and not descendants(self.process.pid):
            return
        victims = descendants(self.process.pid) + [self.process.pid]
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.wait(10)

    def close(self) -> None:
        """Kill what is left and remove the stop file."""
        if self.process is not None and self.process.poll() is None:
            self.kill()
        self.stop_file.unlink(missing_ok=True)


def stop_requested() -> bool:
    """True once the caller of the launcher asked for a stop (checked by rank 0)."""
    path = os.environ.get(STOP_FILE_ENV)
    return bool(path) and os.path.exists(path)


def wait_for(launch: Launch, interval: float = 0.2, on_tick=None) -> int:
    """Wait for the launcher to end, calling ``on_tick()`` every ``interval`` seconds."""
    while True:
        code = launch.wait(interval)
        if code is not None:
            return code
        if on_tick is not None:
            on_tick()
        time.sleep(0)
