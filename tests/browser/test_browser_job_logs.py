"""Item 12: the job page's log panel shows the worker's lines for the job (from the stored
chunks, GET /v1/jobs/{id}/logs?since=), as text. In a real headless Chromium against
`ganforge up` (see conftest.py)."""

from __future__ import annotations

RING = {"name": "logged", "dataset": {"name": "ring8"}, "model": {"latent_dim": 2, "hidden_g": [16], "hidden_d": [16]},
        "train": {"steps": 5, "batch_size": 16}, "device": "cpu", "eval": {"at_end": False}}


def test_the_job_page_shows_the_jobs_log_lines(page, service, artifacts_dir):
    from ganforge.client import Client

    client = Client(service)
    job = client.submit(RING)
    client.wait(job, timeout=120)
    page.goto(f"{service}/jobs/{job.id}")
    page.wait_for_function("() => document.getElementById('log-lines').textContent.includes('claimed by')", timeout=20_000)
    text = page.inner_text("#log-lines")
    stored = list(client.log_lines(job.id))
    assert f"job {job.id} attempt 1 claimed by" in text and "INFO" in text
    page.wait_for_function("n => document.getElementById('log-lines').dataset.lines === String(n)",
                           arg=len(stored), timeout=20_000)  # every stored line, each once
    assert len(page.inner_text("#log-lines").strip().splitlines()) >= len(stored)
    assert page.is_hidden("#log-empty")
    page.screenshot(path=artifacts_dir / "10-job-log-panel.png", full_page=True)
    assert page.js_errors == []
