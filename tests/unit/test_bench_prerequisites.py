"""Every benchmark checks what it needs before it starts: a missing package or tool is one line
naming it and how to get it (exit status 2), never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(p.name for p in (ROOT / "bench").glob("*.py") if p.name != "prerequisites.py")


def run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_bench_script_without_its_packages_says_what_to_install(script):
    # -S: no site-packages, so torch, flask and the test tools are all missing.
    result = run(["-S", f"bench/{script}"])
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"bench/{script}: cannot run, missing: Python package(s)")
    assert "scripts/setup" in line


def test_service_bench_without_wrk_says_how_to_get_it(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path)}  # an empty PATH: no wrk (python is called by its full path)
    result = run(["bench/service.py"], env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "`wrk` (apt-get install -y wrk" in line
