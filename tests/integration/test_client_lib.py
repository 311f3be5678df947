"""ganforge.client against the real embedded service (`ganforge up`: API + a real worker): typed
answers, submit by dict / file / preset name, wait with progress and timeout, page iterators,
verified downloads, its own exceptions, one reused session, 429 retries after Retry-After, and
the API key sent to the service's own download URLs (and only there)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
import torch

from ganforge.api.schemas import ArtifactList, JobOut, JobSummary
from ganforge.client import (
    APIError,
    Client,
    ConnectionFailed,
    GanforgeError,
    NotFound,
    RateLimited,
    WaitTimeout,
)
from tests.browser.conftest import ROOT, running_service
from tests.integration.test_e2e_http import free_port

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RING = {"name": "client-ring", "dataset": {"name": "ring8"},
        "model": {"latent_dim": 2, "hidden_g": [32, 32], "hidden_d": [32, 32]},
        "train": {"steps": 120, "batch_size": 32}, "log_every": 20, "sample_every": 40, "checkpoint_every": 60,
        "device": "cpu", "eval": {"n_samples": 300}}
LONG = {**RING, "name": "client-long", "train": {"steps": 100_000, "batch_size": 32}}


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> Iterator[str]:
    with running_service(tmp_path_factory.mktemp("client-home")) as url:
        yield url


def test_submit_wait_download_with_typed_answers(service, tmp_path):
    seen: list[JobOut] = []
    with Client(service) as gf:
        job = gf.submit(RING, tags=["client", "demo"], notes="from the library")
        assert isinstance(job, JobOut) and job.status == "queued" and job.tags == ["client", "demo"]
        assert job["status"] == "queued" and job.get("notes") == "from the library"  # reads like the JSON too
        done = gf.wait(job, timeout=180, progress=seen.append)
        assert done.status == "succeeded", done.error
        assert done.progress.step == 120 and seen[-1] == done
        steps = [view.progress.step for view in seen]
        assert steps == sorted(steps) and len(seen) >= 2

        samples = gf.samples(done)
        assert isinstance(samples, ArtifactList) and [a.step for a in samples.items] == [40, 80, 120]
        files = gf.download_samples(done.id, tmp_path / "grids" / "new")  # made if missing
        assert [f.name for f in files] == ["step-000040.png", "step-000080.png", "step-000120.png"]
        for file, item in zip(files, samples.items):
            data = file.read_bytes()
            assert data[:8] == PNG_MAGIC and hashlib.sha256(data).hexdigest() == item.sha256
        generator = gf.download_generator(done, tmp_path / "generator.pt")
        final = gf.checkpoints(done).final
        assert hashlib.sha256(generator.read_bytes()).hexdigest() == final.sha256
        assert "generator" in torch.load(generator, weights_only=True, map_location="cpu")
        assert not list(tmp_path.rglob("*.part"))

        # One session, one kept-alive connection for all of the calls above.
        pools = gf.session.get_adapter(service).poolmanager.pools
        (pool,) = [pools[key] for key in pools.keys()]
        assert pool.num_connections == 1 and pool.num_requests > 10


def test_submit_by_file_and_preset_name_and_the_errors(service, tmp_path):
    with Client(service) as gf:
        path = tmp_path / "spec.json"
        path.write_text(json.dumps(LONG))
        from_file = gf.submit(path, name="from-file")
        assert from_file.name == "from-file" and from_file.spec["train"]["steps"] == 100_000
        from_preset = gf.submit("ring8", name="from-preset", tags=["preset"])
        presets = {p.name: p.spec for p in gf.presets().items}
        assert from_preset.spec["dataset"] == {**from_preset.spec["dataset"], **presets["ring8"]["dataset"]}
        assert from_preset.tags == ["preset"]
        for job in (from_file, from_preset):
            gf.cancel(job)

        with pytest.raises(GanforgeError, match="neither a spec file nor a preset.*ring8"):
            gf.submit("no-such-preset")
        with pytest.raises(FileNotFoundError):
            gf.submit(tmp_path / "missing.json")
        with pytest.raises(APIError) as invalid:
            gf.submit({**RING, "train": {"batch_size": 0}})
        assert invalid.value.status == 422 and invalid.value.details[0]["field"] == "train.batch_size"
        with pytest.raises(NotFound) as missing:
            gf.job("0" * 32)
        assert isinstance(missing.value, APIError) and missing.value.status == 404

        long = gf.submit(LONG)
        started = time.monotonic()
        with pytest.raises(WaitTimeout) as waited:
            gf.wait(long, timeout=1.5, poll=0.2)
        assert 1.5 <= time.monotonic() - started < 10
        assert waited.value.job.status in ("queued", "running") and "keeps running" in str(waited.value)
        updated = gf.update(long, tags=["kept"], notes="stopped by the test")
        assert (updated.tags, updated.notes) == (["kept"], "stopped by the test")
        gf.cancel(long)
        assert gf.wait(long, timeout=60).status == "cancelled"

    port = free_port()  # nothing listens there
    with pytest.raises(ConnectionFailed) as down:
        Client(f"http://127.0.0.1:{port}").job("0" * 32)
    assert f"http://127.0.0.1:{port}/v1/jobs/" in str(down.value) and "ganforge up" in str(down.value)
    assert isinstance(down.value, OSError) and isinstance(down.value, GanforgeError)


def test_jobs_iterates_every_page_with_filters(service):
    with Client(service) as gf:
        made = [gf.submit(LONG, name=f"paged-{i}", tags=["paged"]) for i in range(5)]
        for job in made:
            gf.cancel(job)
        listed = list(gf.jobs(tag="paged", limit=2))  # three pages
        assert all(isinstance(job, JobSummary) for job in listed)
        assert [job.id for job in listed] == [job.id for job in reversed(made)]  # newest first
        assert [job.name for job in gf.jobs(tag="paged", q="D-3", limit=2)] == ["paged-3"]
        assert list(gf.jobs(tag=["paged", "nothing-has-this"])) == []
        with pytest.raises(APIError) as bad:
            gf.jobs(tag="not a tag")  # the first page is read at the call
        assert bad.value.status == 422 and bad.value.details[0]["field"] == "tag"


def _create_key(home: Path, tenant: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GANFORGE_", "AWS_"))}
    env["GANFORGE_HOME"] = str(home / "data")
    out = subprocess.run([sys.executable, "-m", "ganforge.cli", "keys", "create", "--tenant", tenant], env=env,
                         cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip().splitlines()[-1]


def test_rate_limit_retries_after_retry_after_and_the_key_goes_with_downloads(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    with running_service(home, GANFORGE_AUTH="required", GANFORGE_SUBMIT_RATE_PER_MINUTE="1") as url:
        key = _create_key(home, "acme")
        with Client(url, api_key=key, retries=2, max_retry_after=1.0) as gf:
            job = gf.submit(RING)
            started = time.monotonic()
            with pytest.raises(RateLimited) as limited:
                gf.submit(RING)
            elapsed = time.monotonic() - started
            # Two retries, each after the Retry-After (about 60 s, capped at 1 s): not the backoff's 0 + 1 s.
            assert 1.9 <= elapsed < 15, elapsed
            assert limited.value.status == 429 and 1 <= limited.value.retry_after <= 60
            started = time.monotonic()
            with pytest.raises(RateLimited):
                Client(url, api_key=key, retries=0).submit(RING)
            assert time.monotonic() - started < 1.0  # without retries: at once

            done = gf.wait(job, timeout=180)
            assert done.status == "succeeded", done.error
            item = gf.samples(done).items[-1]
            # The artifact's own URL without a signature needs the owner's key: the client sends it there.
            unsigned = f"{url}/v1/artifacts/{item.id}/content"
            assert gf.download(unsigned)[:8] == PNG_MAGIC
            with pytest.raises(APIError) as anonymous:
                Client(url, api_key="").download(unsigned)
            assert anonymous.value.status == 401
            # ... and to no other host (a presigned S3 URL refuses a second credential).
            assert gf._own(unsigned) and not gf._own("https://bucket.s3.amazonaws.com/k?X-Amz-Signature=x")
            assert not gf._own(url.replace("127.0.0.1", "localhost"))


def test_download_command_unpacks_the_whole_job(service, tmp_path):
    with Client(service) as gf:
        job = gf.wait(gf.submit(RING, name="to download", tags=["bundle"]), timeout=180)
        assert job.status == "succeeded", job.error
        zipped = gf.download_bundle(job, tmp_path / "job.zip")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GANFORGE_", "AWS_"))}

    def download(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ganforge.cli", "download", *args, "--url", service],
                              env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)

    out = tmp_path / "unpacked" / "ring"
    done = download(job.id, "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["job"] == job.id and summary["status"] == "succeeded"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == sorted(summary["files"])
    assert {"job.json", "spec.json", "metrics.csv", "metrics.jsonl", "generator.pt", "evaluation.json",
            "samples/step-000040.png", "samples/step-000120.png"} <= set(summary["files"])
    assert json.loads((out / "job.json").read_text())["tags"] == ["bundle"]
    assert json.loads((out / "spec.json").read_text())["train"]["steps"] == 120
    header, *rows = (out / "metrics.csv").read_text().splitlines()
    assert header.startswith("step,") and "loss_d" in header.split(",") and rows[-1].startswith("120,")
    final = gf.checkpoints(job).final
    assert hashlib.sha256((out / "generator.pt").read_bytes()).hexdigest() == final.sha256
    import zipfile
    assert sorted(zipfile.ZipFile(zipped).namelist()) == sorted(summary["files"])

    again = download(job.id, "--out", str(out))  # never mixes two downloads silently
    assert again.returncode == 1 and "not empty" in again.stderr and "Traceback" not in again.stderr
    kept = download(job.id, "--out", str(tmp_path / "zips"), "--zip")
    assert kept.returncode == 0, kept.stderr
    (archive,) = (tmp_path / "zips").iterdir()
    assert archive.name == f"to-download-{job.id[:8]}.zip" and zipfile.ZipFile(archive).testzip() is None
    missing = download("0" * 32, "--out", str(tmp_path / "none"))
    assert missing.returncode == 1 and "not found" in missing.stderr and "Traceback" not in missing.stderr


def test_export_writes_tensorboard_event_files_that_read_back(service, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with Client(service) as gf:
        job = gf.wait(gf.submit(RING, name="tb run", tags=["tb"]), timeout=180)
        assert job.status == "succeeded", job.error
        series = gf.metrics(job).series
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GANFORGE_", "AWS_"))}
    command = [sys.executable, "-m", "ganforge.cli", "export", job.id, "--tensorboard", str(tmp_path / "tb"),
               "--url", service, "--json"]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    written = json.loads(done.stdout)
    run = Path(written["run"])
    assert run == tmp_path / "tb" / f"tb-run-{job.id[:8]}" and list(run.glob("events.out.tfevents.*"))

    events = EventAccumulator(str(run), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    assert set(events.Tags()["scalars"]) == set(series) and {"loss_d", "loss_g"} <= set(series)
    for name, points in series.items():
        read = events.Scalars(name)
        kept = [(s, v) for s, v in zip(points.steps, points.values) if v is not None]
        assert [e.step for e in read] == [s for s, _ in kept], name
        assert [e.value for e in read] == pytest.approx([v for _, v in kept], rel=1e-6), name  # float32 in the file
    assert written["scalars"] == sum(len(events.Scalars(name)) for name in series)
    images = events.Images("samples")
    assert [image.step for image in images] == [40, 80, 120] == [a.step for a in gf.samples(job).items]
    assert images[0].encoded_image_string[:8] == PNG_MAGIC and images[0].width > 0

    # Without the tensorboard package the command says what to install (no traceback).
    fake = tmp_path / "no-tensorboard" / "tensorboard"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError(\"No module named 'tensorboard'\")\n")
    missing = subprocess.run(command[:-1], env={**env, "PYTHONPATH": f"{fake.parent}{os.pathsep}{ROOT}"}, cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and "pip install 'ganforge[tensorboard]'" in missing.stderr
    assert "Traceback" not in missing.stderr
