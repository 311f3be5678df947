"""A client generated from /openapi.json with openapi-python-client (scripts/generate-client)
works against the real app: typed models in and out, binary responses as files, error envelopes
parsed, the X-Request-ID and Idempotent-Replayed headers where the description says."""

from __future__ import annotations

import importlib
import io
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from test_api import PNG_MAGIC, SPEC, add_artifact, running_job, trained  # noqa: F401
from ganforge.jobs.storage import checkpoint_key

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/upload_archives.py
from upload_archives import image_members, tar_bytes  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    if shutil.which("openapi-python-client") is None:
        pytest.fail("openapi-python-client is not installed (it is in the [test] extra)")
    out = tmp_path_factory.mktemp("client") / "generated"
    run = subprocess.run([str(ROOT / "scripts" / "generate-client"), str(out)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    # "Cleanly": the generator skipped nothing it could not parse.
    assert "WARNING" not in run.stdout + run.stderr and "Cannot parse" not in run.stdout + run.stderr
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module("ganforge_api_client")
    finally:
        sys.path.remove(str(out))
        for name in [m for m in sys.modules if m.split(".")[0] == "ganforge_api_client"]:
            del sys.modules[name]


def _client(generated, api):
    transport = httpx.WSGITransport(app=api.app)
    client = generated.Client(base_url="http://testserver")
    client.set_httpx_client(httpx.Client(transport=transport, base_url="http://testserver"))
    return client


def test_submit_read_and_list_through_the_generated_client(generated, api):
    from ganforge_api_client.api.jobs import get_job, list_jobs, submit_job
    from ganforge_api_client.models import ErrorEnvelope, JobOut, JobSpec

    client = _client(generated, api)
    body = JobSpec.from_dict(SPEC)
    first = submit_job.sync_detailed(client=client, body=body, idempotency_key="k-1")
    assert first.status_code == 201 and isinstance(first.parsed, JobOut)
    replay = submit_job.sync_detailed(client=client, body=body, idempotency_key="k-1")
    assert replay.headers["Idempotent-Replayed"] == "true" and replay.parsed.id == first.parsed.id
    assert get_job.sync(first.parsed.id, client=client).status == "queued"
    page = list_jobs.sync(client=client, limit=5)
    assert [item.id for item in page.items] == [first.parsed.id]

    missing = get_job.sync_detailed("0" * 32, client=client, x_request_id="trace-1")
    assert missing.status_code == 404 and isinstance(missing.parsed, ErrorEnvelope)
    assert missing.parsed.error.code == "not_found" and missing.headers["X-Request-ID"] == "trace-1"


def test_an_archive_upload_through_the_generated_client(generated, api):
    from ganforge_api_client.api.datasets import upload_dataset
    from ganforge_api_client.models import DatasetOut
    from ganforge_api_client.types import File

    body = File(payload=io.BytesIO(tar_bytes(image_members())), file_name="shapes.tar")
    created = upload_dataset.sync(client=_client(generated, api), body=body, name="shapes")
    assert isinstance(created, DatasetOut) and (created.images, created.skipped) == (9, 1)


def test_binary_answers_are_files(generated, api, trained):
    from ganforge_api_client.api.jobs import generate_samples
    from ganforge_api_client.models import GenerateRequest
    from ganforge_api_client.types import File

    job_id, token = running_job(api.db)
    add_artifact(api, job_id, token, "checkpoint", 3, checkpoint_key(job_id, 3), trained["checkpoint"])
    png = generate_samples.sync(job_id, client=_client(generated, api), body=GenerateRequest.from_dict({"n": 4}))
    assert isinstance(png, File) and png.payload.read().startswith(PNG_MAGIC)
