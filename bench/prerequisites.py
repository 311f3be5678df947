"""What a benchmark needs before it starts, checked first so that a missing tool is one line
saying how to get it, never a traceback halfway through a run.

    from bench.prerequisites import Needs
    Needs("service.py").python("moto", "redis").command("wrk", "apt-get install -y wrk").postgres().check()

Standard library only: it must work where nothing else is installed yet.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETUP = "run scripts/setup, then `. .venv/bin/activate`"
MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def _port_open(host: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class Needs:
    """Collects what is missing; ``check()`` prints it on one line and exits 2."""

    def __init__(self, script: str):
        self.script = script
        self.missing: list[str] = []

    def python(self, *modules: str, how: str = SETUP) -> Needs:
        absent = [m for m in modules if importlib.util.find_spec(m) is None]
        if absent:
            self.missing.append(f"Python package(s) {', '.join(absent)} ({how})")
        return self

    def command(self, name: str, how: str) -> Needs:
        if shutil.which(name) is None:
            self.missing.append(f"`{name}` ({how})")
        return self

    def file(self, path: str | Path, what: str, how: str) -> Needs:
        if not Path(path).exists():
            self.missing.append(f"{what} at {path} ({how})")
        return self

    def postgres(self, host: str = "127.0.0.1", port: int = 5432) -> Needs:
        if not _port_open(host, port):
            self.missing.append(f"PostgreSQL on {host}:{port} (start it: pg_ctlcluster --skip-systemctl-redirect "
                                "$(ls /etc/postgresql) main start; see ARCHITECTURE.md)")
        return self

    def redis(self, host: str = "127.0.0.1", port: int = 6379) -> Needs:
        if not _port_open(host, port):
            self.missing.append(f"Redis on {host}:{port} (start it: redis-server --daemonize yes --bind 127.0.0.1)")
        return self

    def mnist(self) -> Needs:
        """The four MNIST files in $GANFORGE_DATA_DIR/mnist or in the download cache."""
        places = []
        if os.environ.get("GANFORGE_DATA_DIR"):
            places.append(Path(os.environ["GANFORGE_DATA_DIR"]) / "mnist")
        cache = os.environ.get("GANFORGE_CACHE_DIR") or Path.home() / ".cache" / "ganforge" / "datasets"
        places.append(Path(cache) / "mnist")
        if not any(all((place / name).is_file() for name in MNIST_FILES) for place in places):
            self.missing.append("MNIST (`. scripts/env` points GANFORGE_DATA_DIR at ../shared/datasets; or set "
                                "GANFORGE_DATA_DIR to a folder holding mnist/ with the four IDX .gz files)")
        return self

    def cuda(self) -> Needs:
        """A CUDA device torch can use (checked only once torch itself is there)."""
        if importlib.util.find_spec("torch") is not None:
            import torch

            if not torch.cuda.is_available():
                self.missing.append("a CUDA device (torch.cuda.is_available() is False: a CUDA build of torch "
                                    "and a GPU; or leave out --device cuda)")
        return self

    def check(self) -> None:
        if self.missing:
            print(f"{self.script}: cannot run, missing: {'; '.join(self.missing)}", file=sys.stderr)
            raise SystemExit(2)
