"""Hostile input: dataset URIs (SSRF, server paths, traversal, size caps) and malicious
checkpoints (arbitrary code in a pickle, a shared-reference pickle bomb)."""

from __future__ import annotations

import io
import os
import socket
from typing import Any

import pytest
import torch

from gan_core import checkpoint as ckpt
from gan_core.spec import JobSpec
from ganforge.jobs import datasets, lifecycle
from ganforge.jobs.datasets import DatasetSourceError, check_source
from ganforge.jobs.settings import Settings

PRODUCTION = Settings(allow_local_datasets=False, dataset_s3_buckets=("user-data",), dataset_https_hosts=())
PUBLIC_DNS = {"data.example.org": ["93.184.216.34"], "evil.example.org": ["93.184.216.34", "10.0.0.7"],
              "localhost": ["127.0.0.1", "::1"], "rebind.example.org": ["169.254.169.254"],
              "v6.example.org": ["2606:4700::6810:85e5"], "mapped.example.org": ["::ffff:127.0.0.1"]}


def fake_resolver(host: str, port: int) -> list[str]:
    if host in PUBLIC_DNS:
        return PUBLIC_DNS[host]
    try:  # IP literals resolve to themselves, as getaddrinfo does
        return [socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)[0][4][0]]
    except socket.gaierror:
        raise DatasetSourceError(f"cannot resolve {host}") from None


@pytest.mark.parametrize("uri, why", [
    ("/etc/passwd", "server paths"),
    ("../../../etc/passwd", "server paths"),
    ("file:///etc/passwd", "file://"),
    ("FILE:///etc/passwd", "file://"),
    ("http://data.example.org/x.npz", "http://"),
    ("gopher://127.0.0.1:6379/_FLUSHALL", "gopher://"),
    ("ftp://data.example.org/x.npz", "ftp://"),
    ("https://localhost/x.npz", "non-public"),
    ("https://127.0.0.1/x.npz", "non-public"),
    ("https://127.1/x.npz", "non-public"),
    ("https://2130706433/x.npz", "non-public"),  # 127.0.0.1 as one decimal number
    ("https://0.0.0.0/x.npz", "non-public"),
    ("https://[::1]/x.npz", "non-public"),
    ("https://10.1.2.3/x.npz", "non-public"),
    ("https://172.16.0.1/x.npz", "non-public"),
    ("https://192.168.0.10/x.npz", "non-public"),
    ("https://169.254.169.254/latest/meta-data/", "non-public"),  # the cloud metadata service
    ("https://rebind.example.org/x.npz", "non-public"),
    ("https://evil.example.org/x.npz", "non-public"),  # one private answer among public ones
    ("https://mapped.example.org/x.npz", "non-public"),
    ("https://user:pw@data.example.org/x.npz", "credentials"),
    ("https://data.example.org\\@127.0.0.1/x.npz", "backslash"),
    ("https://data.example.org/x\x00.npz", "control"),
    ("https:///x.npz", "no host"),
    ("https://data.example.org:99999/x.npz", "not a valid URI"),
    ("s3://other-bucket/x.npz", "not on the allowed list"),
    ("s3://user-data/../secrets/x.npz", "segments"),
    ("s3://user-data/a/../../x.npz", "segments"),
    ("s3://user-data/a//x.npz", "segments"),
    ("s3://user-data/./x.npz", "segments"),
    ("s3://user-data/%2e%2e/x.npz", "segments"),
    ("s3://user-data/", "segments"),
    ("s3://user-data", "segments"),
    ("", "URI of 1"),
    ("https://data.example.org/" + "a" * 3000, "URI of 1"),
])
def test_refused_dataset_uris(uri, why):
    with pytest.raises(DatasetSourceError) as info:
        check_source(uri, PRODUCTION, fake_resolver)
    assert why.lower() in str(info.value).lower()


def test_allowed_dataset_uris():
    assert check_source("s3://user-data/tenants/a/faces.npz", PRODUCTION, fake_resolver).key == "tenants/a/faces.npz"
    source = check_source("https://data.example.org/sets/x.npz?v=2", PRODUCTION, fake_resolver)
    assert (source.host, source.port, source.key, source.addresses) == ("data.example.org", 443, "/sets/x.npz?v=2",
                                                                         ("93.184.216.34",))
    assert check_source("https://v6.example.org/x.npz", PRODUCTION, fake_resolver).addresses == ("2606:4700::6810:85e5",)
    only = PRODUCTION.with_(dataset_https_hosts=("files.example.com",))
    with pytest.raises(DatasetSourceError, match="allowed list"):
        check_source("https://data.example.org/x.npz", only, fake_resolver)
    with pytest.raises(DatasetSourceError, match="no s3"):
        check_source("s3://user-data/x.npz", PRODUCTION.with_(dataset_s3_buckets=()), fake_resolver)
    # Embedded mode (one trusted local user) may name a file on its own machine.
    assert check_source("/home/me/data.npz", Settings(), fake_resolver).scheme == "local"


def test_production_cannot_allow_server_paths(tmp_path):
    env = {"GANFORGE_MODE": "production", "GANFORGE_DATABASE_URL": "sqlite://", "GANFORGE_BROKER_URL": "memory://",
           "GANFORGE_STORAGE_URL": f"file://{tmp_path}"}
    assert Settings.from_env(env).allow_local_datasets is False
    from ganforge.jobs.settings import SettingsError

    with pytest.raises(SettingsError, match="GANFORGE_ALLOW_LOCAL_DATASETS"):
        Settings.from_env({**env, "GANFORGE_ALLOW_LOCAL_DATASETS": "1"})
    assert Settings.from_env({}).allow_local_datasets is True
    assert Settings.from_env({"GANFORGE_DATASET_S3_BUCKETS": "A, b"}).dataset_s3_buckets == ("a", "b")


NPZ_SPEC: dict[str, Any] = {
    "name": "mine", "dataset": {"name": "npz", "path": "/etc/passwd"},
    "model": {"arch": "mlp", "latent_dim": 8}, "train": {"steps": 3, "batch_size": 8}, "device": "cpu",
}


@pytest.mark.parametrize("path", ["/etc/passwd", "file:///etc/passwd", "https://127.0.0.1/x.npz",
                                  "https://169.254.169.254/latest/meta-data/", "s3://ganforge-internal/jobs/x.npz"])
def test_the_api_refuses_hostile_dataset_paths_with_a_422(make_api, path):
    h = make_api(allow_local_datasets=False)
    response = h.client.post("/v1/jobs", json={**NPZ_SPEC, "dataset": {"name": "npz", "path": path}})
    assert response.status_code == 422, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["details"][0]["field"] == "dataset.path"
    assert h.queue.sent == []


class FakeS3:
    def __init__(self, data: bytes, declared: int | None = None):
        self.data, self.declared = data, declared
        self.asked: list[tuple[str, str]] = []

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        self.asked.append((Bucket, Key))
        return {"ContentLength": self.declared if self.declared is not None else len(self.data),
                "Body": io.BytesIO(self.data)}


def test_the_worker_fetches_s3_data_size_capped_and_trains_on_a_local_copy(tmp_path):
    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, x=np.zeros((4, 8, 8), np.uint8))
    settings = PRODUCTION.with_(max_dataset_bytes=100_000)
    spec = JobSpec.model_validate({**NPZ_SPEC, "dataset": {"name": "npz", "path": "s3://user-data/a/x.npz"}})
    s3 = FakeS3(buffer.getvalue())
    local = datasets.localise(spec, settings, "f" * 32, fake_resolver, s3_client=s3)
    try:
        assert s3.asked == [("user-data", "a/x.npz")]
        assert local.dataset.path == str(datasets.download_path("f" * 32))
        assert open(local.dataset.path, "rb").read() == buffer.getvalue()
    finally:
        datasets.discard("f" * 32)
    assert not datasets.download_path("f" * 32).exists()
    # Over the cap: by the declared size, and by the bytes actually sent (a lying server).
    for fake in (FakeS3(b"x" * 10, declared=200_000), FakeS3(b"x" * 200_000, declared=10)):
        with pytest.raises(DatasetSourceError, match="limit"):
            datasets.localise(spec, settings, "e" * 32, fake_resolver, s3_client=fake)
        assert not datasets.download_path("e" * 32).exists()
    # The worker checks again: a bucket removed from the list since submission is refused.
    with pytest.raises(DatasetSourceError, match="allowed list"):
        datasets.localise(spec, settings.with_(dataset_s3_buckets=("other",)), "e" * 32, fake_resolver, s3_client=s3)


def test_https_fetch_connects_to_the_checked_address_only(monkeypatch):
    """No second DNS lookup (DNS rebinding): the socket goes to the address that was checked."""
    dialled: list[tuple[str, int]] = []

    def refuse(address, timeout=None, *a, **k):
        dialled.append(address)
        raise ConnectionRefusedError("test: not connecting anywhere")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: pytest.fail("resolved again"))
    spec = JobSpec.model_validate({**NPZ_SPEC, "dataset": {"name": "npz", "path": "https://data.example.org/x.npz"}})
    with pytest.raises(DatasetSourceError, match="could not download the dataset from data.example.org"):
        datasets.localise(spec, PRODUCTION, "d" * 32, fake_resolver)
    assert dialled == [("93.184.216.34", 443)]


# ---- checkpoints ----------------------------------------------------------------------------------
MARKER = "/tmp/ganforge-sec-test-pwned"


class Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


def _bomb() -> bytes:
    """A small file that unpickles to 10**60 paths through shared lists: harmless unless
    something walks it (a serialiser, a deep copy, a recursive validator)."""
    nested: list = []
    for _ in range(60):
        nested = [nested] * 10
    buffer = io.BytesIO()
    torch.save({"format": ckpt.GENERATOR_FORMAT, "version": ckpt.FORMAT_VERSION, "spec": nested}, buffer)
    return buffer.getvalue()


def _evil() -> bytes:
    buffer = io.BytesIO()
    torch.save({"format": ckpt.GENERATOR_FORMAT, "payload": Exploit()}, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("make_bytes", [_evil, _bomb], ids=["code-execution", "pickle-bomb"])
def test_generate_refuses_malicious_checkpoints_without_running_them(api, make_bytes):
    if os.path.exists(MARKER):
        os.unlink(MARKER)
    data = make_bytes()
    assert len(data) < 100_000
    spec = JobSpec.model_validate({"name": "ring", "dataset": {"name": "ring8"}, "train": {"steps": 3, "batch_size": 16},
                                   "device": "cpu"})
    with api.db.session() as session:
        job_id = lifecycle.submit(session, spec).id
    claim = lifecycle.claim(api.db, job_id, "w", 60)
    stored = api.storage.put(f"jobs/{job_id}/final/generator.pt", data, "application/octet-stream")
    lifecycle.record_artifact(api.db, job_id, claim.token, kind="final_model", step=3, key=stored.key, size=stored.size,
                              sha256=stored.sha256, content_type="application/octet-stream")
    response = api.client.post(f"/v1/jobs/{job_id}/generate", json={"n": 4})
    assert response.status_code == 409, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == "checkpoint_unusable"
    assert not os.path.exists(MARKER)
    with pytest.raises(ckpt.CheckpointError if make_bytes is _evil else (ckpt.CheckpointError, KeyError, TypeError, ValueError)):
        from gan_core.sampling import load_generator

        load_generator(data)
