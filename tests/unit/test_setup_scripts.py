"""The README's test command does its own set-up: scripts/test installs the system packages the
suite needs (through scripts/setup-system, the same script CI uses), only when they are missing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def fake_apt(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment whose apt-get only records its arguments."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "apt-calls"
    bin_dir.mkdir()
    apt = bin_dir / "apt-get"
    apt.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    apt.chmod(0o755)
    calls.touch()
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}, calls


def test_setup_system_installs_a_missing_chromium_and_nothing_present(tmp_path):
    env, calls = fake_apt(tmp_path)
    missing = subprocess.run([ROOT / "scripts" / "setup-system"], env={**env, "GANFORGE_CHROMIUM": str(tmp_path / "none")},
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 0, missing.stderr
    installs = [line for line in calls.read_text().splitlines() if line.startswith("install")]
    assert installs and "chromium" in installs[0].split() and "-y" in installs[0].split()
    calls.write_text("")
    present = subprocess.run([ROOT / "scripts" / "setup-system"], env={**env, "GANFORGE_CHROMIUM": "/bin/sh"},
                             capture_output=True, text=True, timeout=120)
    if subprocess.run(["sh", "-c", "command -v docker-compose"], capture_output=True).returncode == 0:
        assert present.returncode == 0 and calls.read_text() == "" and present.stderr == ""  # quiet, nothing to do


def test_scripts_test_sets_up_the_system_itself(tmp_path):
    """What a fresh machine lacks (Chromium here) is installed by the README's own command."""
    env, calls = fake_apt(tmp_path)
    env["GANFORGE_CHROMIUM"] = str(tmp_path / "none")
    result = subprocess.run([ROOT / "scripts" / "test", "--collect-only", "-q", "tests/unit/test_spec.py"],
                            env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert any("chromium" in line.split() for line in calls.read_text().splitlines() if line.startswith("install"))


def test_ci_uses_the_same_set_up():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/test" in ci and "apt-get" not in ci  # one place installs system packages
