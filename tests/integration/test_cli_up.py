"""`ganforge up` never leaves its worker behind: a taken port, SIGTERM, SIGINT and a killed `up`
all end the worker it started, within a bounded time (real processes, real signals)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_env() -> dict[str, str]:
    """The environment a user's shell gives `ganforge`: no GANFORGE_/AWS_ settings of the tests'
    own, the shared MNIST copy, this checkout's code."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GANFORGE_", "AWS_"))}
    env["GANFORGE_DATA_DIR"] = str(ROOT.parent / "shared" / "datasets")
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = str(ROOT)
    return env


def _start_up(home: Path, port: int) -> tuple[subprocess.Popen, Path]:
    log = home.parent / f"{home.name}-up.log"
    up = subprocess.Popen([sys.executable, "-m", "ganforge.cli", "up", "--port", str(port), "--data-dir", str(home)],
                          env=cli_env(), cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    return up, log


def _children_of_up(home: Path) -> list[int]:
    """Live processes `up --data-dir home` started: they inherit GANFORGE_HOME=home (`up` sets it
    in its own os.environ only, so its /proc entry does not carry it)."""
    entry = f"GANFORGE_HOME={home.resolve()}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if entry in (proc / "environ").read_bytes().split(b"\0"):
                status = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if status != "Z":  # a zombie has ended; only its parent's wait is missing
                    found.append(int(proc.name))
        except OSError:
            continue
    return found


def _wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"after {timeout:g} s: {what}")


def _wait_worker_ready(up: subprocess.Popen, home: Path, log: Path) -> None:
    def ready() -> bool:
        if up.poll() is not None:
            raise AssertionError(f"`ganforge up` exited: {log.read_text()[-3000:]}")
        worker_log = home / "worker.log"
        return worker_log.exists() and " ready." in worker_log.read_text(errors="replace")

    _wait_until(ready, 120, "the worker never said it was ready")
    assert _children_of_up(home), "the worker runs"


def _kill_leftovers(home: Path) -> None:
    for pid in _children_of_up(home):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_up_on_a_taken_port_says_so_and_leaves_no_worker(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        up, log = _start_up(tmp_path / "home", port)
        try:
            assert up.wait(90) == 1
            # A worker started before the bind failed would outlive `up`: give it time to show.
            time.sleep(3)
            assert _children_of_up(tmp_path / "home") == []
        finally:
            if up.poll() is None:
                up.kill()
            _kill_leftovers(tmp_path / "home")
    output = log.read_text()
    assert f"cannot listen on 127.0.0.1:{port}: the port is already in use" in output
    assert "--port" in output and "Traceback" not in output


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_up_and_its_worker(tmp_path, signum):
    up, log = _start_up(tmp_path / "home", _free_port())
    try:
        _wait_worker_ready(up, tmp_path / "home", log)
        os.kill(up.pid, signum)
        assert up.wait(60) == 130
        _wait_until(lambda: not _children_of_up(tmp_path / "home"), 10, "the worker outlived `ganforge up`")
    finally:
        if up.poll() is None:
            up.kill()
        _kill_leftovers(tmp_path / "home")
    assert "Traceback" not in log.read_text()


def test_a_killed_up_takes_its_worker_with_it(tmp_path):
    """SIGKILL gives `up` no chance to clean up: the kernel tells the worker (parent-death signal)."""
    up, log = _start_up(tmp_path / "home", _free_port())
    try:
        _wait_worker_ready(up, tmp_path / "home", log)
        up.kill()
        up.wait(10)
        _wait_until(lambda: not _children_of_up(tmp_path / "home"), 45, "the worker outlived a killed `ganforge up`")
    finally:
        _kill_leftovers(tmp_path / "home")
