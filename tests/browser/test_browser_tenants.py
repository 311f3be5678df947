"""The dashboard with API keys required: another tenant's job page is "not found", the owner's
shows the job, and the jobs table lists only the tenant's own jobs."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Iterator

import pytest

from tests.browser.conftest import ROOT, running_service
from ganforge.client import Client, APIError


def create_key(env: dict[str, str], tenant: str) -> str:
    out = subprocess.run([sys.executable, "-m", "ganforge.cli", "keys", "create", "--tenant", tenant], env=env,
                         cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def secured(tmp_path_factory) -> Iterator[tuple[str, str, str]]:
    """(url, key of tenant a, key of tenant b) of `ganforge up` with GANFORGE_AUTH=required."""
    home = tmp_path_factory.mktemp("tenants-home")
    with running_service(home, GANFORGE_AUTH="required") as url:
        env = {**os.environ, "GANFORGE_HOME": str(home / "data")}
        env = {k: v for k, v in env.items() if not k.startswith("AWS_") and k not in ("GANFORGE_MODE",)}
        yield url, create_key(env, "tenant-a"), create_key(env, "tenant-b")


def use_key(page, url: str, key: str) -> None:
    page.goto(url + "/")
    page.fill("#api-key", key)
    page.click("#api-key-form button[type=submit]")


def test_another_tenants_job_page_is_not_found(page, secured, artifacts_dir):
    url, key_a, key_b = secured
    spec = {"name": "tenant-a-ring", "dataset": {"name": "ring8"}, "train": {"steps": 5, "batch_size": 16},
            "device": "cpu", "eval": {"at_end": False}}
    job_id = Client(url, api_key=key_a).submit(spec)["id"]
    with pytest.raises(APIError) as refused:
        Client(url, api_key=key_b).job(job_id)
    assert refused.value.status == 404

    use_key(page, url, key_b)
    page.goto(f"{url}/jobs/{job_id}")
    page.wait_for_selector("#not-found:not([hidden])")
    assert page.is_hidden("#job-view") and "Job not found" in page.inner_text("#not-found")
    page.screenshot(path=artifacts_dir / "tenants-01-other-tenant-not-found.png", full_page=True)
    page.goto(url + "/")
    page.wait_for_load_state("networkidle")
    assert job_id not in page.content()

    use_key(page, url, key_a)
    page.goto(f"{url}/jobs/{job_id}")
    page.wait_for_selector("#job-view:not([hidden])")
    assert page.inner_text("#job-name") == "tenant-a-ring" and page.is_hidden("#not-found")
    page.screenshot(path=artifacts_dir / "tenants-02-owner-sees-the-job.png", full_page=True)
    assert page.js_errors == []
