"""The job page's "GAN health" row in a real headless Chromium against `ganforge up` (API + a real
worker): a job whose discriminator wins shows a warning badge and the finding; a job that asks to
be stopped and diverges shows "stopped: diverged"; a healthy queued job shows "ok"."""

from __future__ import annotations

import copy

from ganforge.client import Client
from tests.integration.test_health_stops import D_WINS, DIVERGING


def test_the_gan_health_row_shows_warnings_and_stops(page, service, artifacts_dir):
    client = Client(service)
    warned = client.submit(copy.deepcopy(D_WINS))
    diverging = copy.deepcopy(DIVERGING)
    diverging["train"]["health"]["stop"] = True
    stopped = client.submit(diverging)

    page.goto(f"{service}/jobs/{warned['id']}")
    page.wait_for_selector("#job-status[data-status='succeeded']", timeout=240_000)
    page.wait_for_selector("#job-health-badge[data-health='warning']")
    assert "warning" in page.inner_text("#job-health-badge")
    assert page.locator("#job-health-list li[data-detector='discriminator_won']").count() == 1
    assert "(warning)" in page.inner_text("#job-health-list")
    page.screenshot(path=artifacts_dir / "09-gan-health-warning.png", full_page=True)

    page.goto(f"{service}/jobs/{stopped['id']}")
    page.wait_for_selector("#job-status[data-status='cancelled']", timeout=240_000)
    page.wait_for_selector("#job-health-badge[data-health='stopped']")
    assert page.inner_text("#job-health-badge") == "stopped: diverged"
    assert "(stopped): non-finite loss" in page.inner_text("#job-health-list li[data-detector='diverged']")
    page.screenshot(path=artifacts_dir / "10-gan-health-stopped.png", full_page=True)
    assert page.js_errors == []
