"""image_folder through the service: an S3 prefix and an S3 archive on the moto server, an
upload from the artifact store, the cache across jobs (nothing decoded or downloaded twice),
and short jobs on a real worker whose view shows the dataset summary."""

from __future__ import annotations

import hashlib
import io
import time
import zipfile

import pytest
from PIL import Image

from gan_core.data import folder as folder_module
from gan_core.data.errors import ArchiveError
from gan_core.spec import JobSpec
from ganforge.jobs import datasets, lifecycle
from ganforge.jobs.models import Dataset, Job
from ganforge.jobs.services import Services
from ganforge.jobs.settings import Settings
from ganforge.jobs.storage import LocalStorage

COLOURS = {"blue": (0, 0, 255), "green": (0, 255, 0), "red": (255, 0, 0)}


def png(rgb, size=(24, 20)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, rgb).save(out, "PNG")
    return out.getvalue()


def pictures(per_class=3) -> dict[str, bytes]:
    files = {f"{name}/{i}.png": png(rgb) for name, rgb in COLOURS.items() for i in range(per_class)}
    files["red/corrupt.png"] = b"\x89PNG\r\n\x1a\nbroken"
    files["README.txt"] = b"three colours"
    return files


def zipped(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return out.getvalue()


def folder_spec(steps=2, **dataset) -> JobSpec:
    return JobSpec.model_validate({
        "name": "folder", "dataset": {"name": "image_folder", "image_size": 32, "labels": "folders", **dataset},
        "model": {"arch": "dcgan", "ngf": 8, "ndf": 8, "conditioning": "acgan"},
        "train": {"steps": steps, "batch_size": 8}, "log_every": 1, "sample_every": steps,
        "checkpoint_every": steps, "device": "cpu", "eval": {"n_samples": 64},
    })


class CountingClient:
    """The boto3 client with its get_object calls counted (a cache hit downloads nothing)."""

    def __init__(self, client):
        self.client, self.gets = client, 0

    def get_object(self, **kwargs):
        self.gets += 1
        return self.client.get_object(**kwargs)

    def __getattr__(self, name):
        return getattr(self.client, name)


@pytest.fixture
def decodes(monkeypatch) -> list[int]:
    calls = []
    real = folder_module.decode_image
    monkeypatch.setattr(folder_module, "decode_image", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


@pytest.fixture
def bucket(s3_bucket) -> str:
    return s3_bucket.removeprefix("s3://").split("/")[0]


@pytest.fixture
def worker_settings(tmp_path, bucket, s3_server) -> Settings:
    return Settings(dataset_s3_buckets=(bucket,), dataset_cache_dir=tmp_path / "cache", s3_endpoint_url=s3_server,
                    s3_region="us-east-1", allow_local_datasets=False, data_dir=tmp_path / "data")


def test_s3_prefix_is_decoded_once_and_not_downloaded_again(worker_settings, s3_client, bucket, decodes):
    for name, data in pictures().items():
        s3_client.put_object(Bucket=bucket, Key=f"users/shapes/{name}", Body=data)
    s3_client.put_object(Bucket=bucket, Key="users/shapes/", Body=b"")  # a console "folder" marker
    s3_client.put_object(Bucket=bucket, Key="users/other.png", Body=png((1, 2, 3)))  # outside the prefix
    spec = folder_spec(path=f"s3://{bucket}/users/shapes/")
    client = CountingClient(s3_client)
    localised, summary = datasets.localise_folder(spec, worker_settings, "job1", tenant="t", s3_client=client)
    assert {k: summary[k] for k in ("files", "images", "skipped", "classes", "cache")} == {
        "files": 11, "images": 9, "skipped": 2, "classes": ["blue", "green", "red"], "cache": "miss"}
    assert client.gets == 11 and len(decodes) == 10  # the README is not decoded, the corrupt png is tried
    link = datasets.folder_link("job1")
    assert localised.dataset.path == str(link) and localised.dataset.upload_id is None
    assert link.resolve().parent.parent == (worker_settings.dataset_cache_dir).resolve()
    assert not datasets._folder_work("job1").exists()  # the downloads are gone
    again, second = datasets.localise_folder(spec, worker_settings, "job2", tenant="t", s3_client=client)
    assert second["cache"] == "hit" and client.gets == 11 and len(decodes) == 10
    assert again.dataset.path == str(datasets.folder_link("job2"))
    # a changed object is another listing: decoded again
    s3_client.put_object(Bucket=bucket, Key="users/shapes/blue/0.png", Body=png((0, 0, 200)))
    _, third = datasets.localise_folder(spec, worker_settings, "job3", tenant="t", s3_client=client)
    assert third["cache"] == "miss"
    for job in ("job1", "job2", "job3"):
        datasets.discard(job)
        assert not datasets.folder_link(job).exists()


def test_s3_prefix_refusals(worker_settings, s3_client, bucket):
    s3_client.put_object(Bucket=bucket, Key="evil/a/../../b.png", Body=png((0, 0, 0)))
    with pytest.raises(ArchiveError) as traversal:
        datasets.localise_folder(folder_spec(path=f"s3://{bucket}/evil/"), worker_settings, "j", tenant="t",
                                 s3_client=s3_client)
    assert traversal.value.reason == "unsafe_path"
    with pytest.raises(ArchiveError) as empty:
        datasets.localise_folder(folder_spec(path=f"s3://{bucket}/nothing/"), worker_settings, "j", tenant="t",
                                 s3_client=s3_client)
    assert empty.value.reason == "empty"
    for i in range(4):
        s3_client.put_object(Bucket=bucket, Key=f"many/{i}.png", Body=png((i, 0, 0)))
    with pytest.raises(ArchiveError) as many:
        datasets.localise_folder(folder_spec(path=f"s3://{bucket}/many/"),
                                 worker_settings.with_(max_dataset_files=3), "j", tenant="t", s3_client=s3_client)
    assert many.value.reason == "too_many_files"
    with pytest.raises(datasets.DatasetSourceError, match="NoSuchBucket"):
        datasets.localise_folder(folder_spec(path="s3://missing-bucket/x/"),
                                 worker_settings.with_(dataset_s3_buckets=("missing-bucket",)), "j", tenant="t",
                                 s3_client=s3_client)


def test_s3_archive_key_second_job_decodes_nothing(worker_settings, s3_client, bucket, decodes):
    archive = zipped(pictures())
    s3_client.put_object(Bucket=bucket, Key="archives/shapes.zip", Body=archive)
    spec = folder_spec(path=f"s3://{bucket}/archives/shapes.zip")
    _, first = datasets.localise_folder(spec, worker_settings, "a1", tenant="t", s3_client=s3_client)
    _, second = datasets.localise_folder(spec, worker_settings, "a2", tenant="t", s3_client=s3_client)
    assert (first["cache"], second["cache"]) == ("miss", "hit")
    assert first["sha256"] == hashlib.sha256(archive).hexdigest() == second["sha256"]
    assert len(decodes) == 10


def test_check_spec_takes_prefixes_for_image_folders_only(worker_settings, bucket):
    datasets.check_spec(folder_spec(path=f"s3://{bucket}/users/shapes/"), worker_settings)
    datasets.check_spec(folder_spec(path=f"s3://{bucket}/"), worker_settings)  # the whole bucket
    for bad in (f"s3://{bucket}/a//b/", f"s3://{bucket}/../x/", f"s3://{bucket}/a/./"):
        with pytest.raises(datasets.DatasetSourceError):
            datasets.check_spec(folder_spec(path=bad), worker_settings)
    npz = JobSpec.model_validate({"name": "n", "dataset": {"name": "npz", "path": f"s3://{bucket}/data/"}})
    with pytest.raises(datasets.DatasetSourceError):
        datasets.check_spec(npz, worker_settings)
    with pytest.raises(datasets.DatasetSourceError, match="server paths"):
        datasets.check_spec(folder_spec(path="/etc/"), worker_settings)


# ---- uploads -------------------------------------------------------------------------------------


@pytest.fixture
def upload_services(migrated_sqlite, tmp_path, worker_settings):
    settings = worker_settings.with_(database_url=migrated_sqlite)
    services = Services.from_settings(settings, storage=LocalStorage(tmp_path / "store"))
    yield services
    services.db.dispose()


def add_upload(services, tenant: str, data: bytes) -> str:
    key = f"datasets/{hashlib.sha256(data).hexdigest()[:16]}.zip"
    services.storage.put(key, data, "application/zip")
    with services.db.session() as session:
        row = Dataset(tenant=tenant, name="shapes", storage_key=key, content_type="application/zip",
                      sha256=hashlib.sha256(data).hexdigest(), bytes=len(data), files=11, images=9, skipped=2,
                      classes=sorted(COLOURS))
        session.add(row)
        session.flush()
        return row.id


class CountingStorage:
    def __init__(self, storage):
        self.storage, self.streams = storage, 0

    def stream(self, key):
        self.streams += 1
        return self.storage.stream(key)


def test_upload_is_fetched_checked_and_then_served_from_the_cache(upload_services, decodes):
    svc = upload_services
    dataset_id = add_upload(svc, "acme", zipped(pictures()))
    spec = folder_spec(upload_id=dataset_id)
    storage = CountingStorage(svc.storage)
    localised, first = datasets.localise_folder(spec, svc.settings, "u1", tenant="acme", db=svc.db, storage=storage)
    assert first["cache"] == "miss" and first["images"] == 9 and storage.streams == 1
    assert localised.dataset.upload_id is None and localised.dataset.path == str(datasets.folder_link("u1"))
    _, second = datasets.localise_folder(spec, svc.settings, "u2", tenant="acme", db=svc.db, storage=storage)
    assert second["cache"] == "hit" and storage.streams == 1 and len(decodes) == 10  # not even fetched
    with pytest.raises(datasets.UploadNotFound):  # another tenant's upload does not exist for this job
        datasets.localise_folder(spec, svc.settings, "u3", tenant="other", db=svc.db, storage=storage)


def test_upload_whose_stored_bytes_changed_is_refused(upload_services):
    svc = upload_services
    dataset_id = add_upload(svc, "acme", zipped(pictures()))
    with svc.db.session() as session:
        key = session.get(Dataset, dataset_id).storage_key
    svc.storage.put(key, zipped(pictures(per_class=1)), "application/zip")
    with pytest.raises(datasets.DatasetSourceError, match="does not match its recorded sha256"):
        datasets.localise_folder(folder_spec(upload_id=dataset_id), svc.settings, "u", tenant="acme", db=svc.db,
                                 storage=svc.storage)


# ---- jobs on a real worker -----------------------------------------------------------------------


@pytest.fixture()
def folder_env(service_env, bucket, tmp_path):
    return {**service_env, "GANFORGE_DATASET_S3_BUCKETS": bucket, "GANFORGE_CACHE_DIR": str(tmp_path / "cache")}


def wait_for(services, job_id, timeout=180.0) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with services.db.session() as session:
            job = session.get(Job, job_id)
            if job.status in ("succeeded", "failed", "cancelled"):
                return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s")


def submit(services, spec, tenant="default") -> str:
    with services.db.session() as session:
        job = lifecycle.submit(session, spec, tenant=tenant)
        job_id = job.id
    services.queue.enqueue(job_id, "cpu")
    return job_id


def test_jobs_on_an_image_folder_archive_and_an_upload(folder_env, start_worker, tmp_path, s3_client, bucket):
    from ganforge.api import create_app
    from ganforge.jobs import keys

    archive = zipped(pictures())
    s3_client.put_object(Bucket=bucket, Key="user/shapes.zip", Body=archive)
    services = Services.from_settings(Settings.from_env(folder_env))
    try:
        start_worker(folder_env, tmp_path)
        first = submit(services, folder_spec(steps=4, path=f"s3://{bucket}/user/shapes.zip"))
        job = wait_for(services, first)
        assert job.status == "succeeded", job.error
        assert job.dataset_summary["cache"] == "miss" and job.dataset_summary["images"] == 9
        assert job.dataset_summary["skipped"] == 2 and job.dataset_summary["classes"] == ["blue", "green", "red"]
        assert job.evaluation["n_samples"] == 64 and "classifier_test_accuracy" in job.evaluation
        # the same archive uploaded: the worker finds it decoded already
        dataset_id = add_upload(services, "default", archive)
        second = submit(services, folder_spec(steps=2, upload_id=dataset_id))
        job = wait_for(services, second)
        assert job.status == "succeeded", job.error
        assert job.dataset_summary["cache"] == "hit"
        _, key = keys.create_key(services.db, "default")  # production mode: the API wants a key
        view = create_app(services=services).test_client().get(f"/v1/jobs/{second}",
                                                              headers={"Authorization": f"Bearer {key}"})
        assert view.status_code == 200, view.get_json()
        summary = view.get_json()["dataset_summary"]
        assert summary["cache"] == "hit" and summary["images"] == 9 and summary["classes"] == ["blue", "green", "red"]
    finally:
        services.db.dispose()


def test_https_archive_under_the_npz_ssrf_rules(worker_settings, monkeypatch, decodes):
    archive = zipped(pictures())
    fetched = []

    def fake_fetch(source, limit, out, timeout=60.0):  # the pinned-address HTTPS client, without TLS here
        fetched.append((source.host, source.addresses, source.key, limit))
        out.write(archive)

    monkeypatch.setattr(datasets, "_fetch_https", fake_fetch)
    spec = folder_spec(path="https://pictures.example/sets/shapes.zip?token=secret")
    public = lambda host, port: ["93.184.216.34"]  # noqa: E731
    _, summary = datasets.localise_folder(spec, worker_settings, "h1", tenant="t", resolver=public)
    assert summary["images"] == 9 and summary["sha256"] == hashlib.sha256(archive).hexdigest()
    assert fetched == [("pictures.example", ("93.184.216.34",), "/sets/shapes.zip?token=secret",
                        worker_settings.max_dataset_bytes)]
    for private in (["127.0.0.1"], ["10.1.2.3"], ["169.254.169.254"], ["::ffff:127.0.0.1"]):
        with pytest.raises(datasets.DatasetSourceError, match="non-public"):
            datasets.localise_folder(spec, worker_settings, "h2", tenant="t", resolver=lambda h, p, a=private: a)
    assert len(fetched) == 1
