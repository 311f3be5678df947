"""Fixtures for the dashboard tests in a real headless Chromium (Debian's ``chromium``, driven by
Playwright) against the embedded service (`ganforge up`: API + a real Celery worker).

Playwright's own browser downloads are never used (``playwright install`` needs a network these
machines do not have): Chromium comes from Debian (`apt-get install chromium`; .ci/run does it).
A missing browser fails the tests with that instruction; they never skip.

    service         module   base URL of a running `ganforge up` with its own data folder
    browser         session  a Playwright Chromium browser
    page            function a fresh page (own context, so sessionStorage starts empty)
    artifacts_dir   session  where screenshots go: $GANFORGE_TEST_ARTIFACTS, else tests/.artifacts/
"""

from __future__ import annotations

import os
from contextlib import contextmanager
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

# The helpers of the HTTP end-to-end tests (same module name as when pytest collects them).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from test_e2e_http import ROOT, free_port, wait_http  # noqa: E402

from ganforge.client import Client  # noqa: E402

CHROMIUM = Path(os.environ.get("GANFORGE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    path = Path(os.environ.get("GANFORGE_TEST_ARTIFACTS") or ROOT / "tests" / ".artifacts") / "browser"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def running_service(home: Path, **env_changes: str) -> Iterator[str]:
    """`ganforge up` on a free loopback port with its data under ``home`` (fresh SQLite database,
    local artifact store, serverless broker) and ``env_changes`` in its environment; yields the
    base URL and stops it (with its worker) afterwards."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GANFORGE_", "AWS_"))}
    env["GANFORGE_DATA_DIR"] = os.environ.get("GANFORGE_DATA_DIR", str(ROOT.parent / "shared" / "datasets"))
    env["OMP_NUM_THREADS"] = "1"
    env.update(env_changes)
    log = home / "up.log"
    up = subprocess.Popen([sys.executable, "-m", "ganforge.cli", "up", "--port", str(port), "--data-dir", str(home / "data")],
                          env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(Client(url), up, log)
        yield url
    finally:
        up.terminate()
        try:
            up.wait(40)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> Iterator[str]:
    """The embedded service (no keys) for one test module."""
    with running_service(tmp_path_factory.mktemp("dashboard-home")) as url:
        yield url


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's Chromium (`apt-get install -y chromium`); "
                    "the browser tests never skip", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: `pip install -e .[test]` (never `playwright install`)", pytrace=False)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture()
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.js_errors = errors  # the tests assert the scripts ran without an uncaught exception
    # Whatever the page's Content-Security-Policy blocked (Chromium reports it on the console).
    blocked: list[str] = []
    page.on("console", lambda msg: blocked.append(msg.text) if "Content Security Policy" in msg.text else None)
    page.csp_violations = blocked
    page.set_default_timeout(15_000)
    yield page
    context.close()
    # Every browser test also proves the dashboard works under its CSP: nothing of its own was blocked.
    assert blocked == [], blocked
