"""Artifact storage against a real S3-compatible HTTP server (moto) and a local directory."""

from __future__ import annotations

import hashlib
import time
import urllib.error
import urllib.request
from urllib.parse import parse_qs, urlparse

import pytest

from ganforge.jobs.storage import LocalStorage, ObjectNotFound, S3Storage, StorageError, open_storage, sample_key

PAYLOAD = bytes(range(256)) * 4099 + b"tail"  # ~1 MiB + a bit: more than one CHUNK when streamed


@pytest.fixture(params=["s3", "local"])
def storage(request, tmp_path):
    """The same tests on both stores."""
    if request.param == "s3":
        return open_storage(request.getfixturevalue("s3_bucket"), endpoint_url=request.getfixturevalue("s3_server"))
    return open_storage(f"file://{tmp_path / 'artifacts'}")


def test_put_get_stream_delete(storage):
    key = sample_key("abc123", 200)
    stored = storage.put(key, PAYLOAD, "image/png")
    assert stored.key == key
    assert stored.size == len(PAYLOAD)
    assert stored.sha256 == hashlib.sha256(PAYLOAD).hexdigest()

    assert storage.get(key) == PAYLOAD
    chunks = list(storage.stream(key))
    assert len(chunks) >= 2 and b"".join(chunks) == PAYLOAD

    storage.put(key, b"replaced", "image/png")  # a re-upload replaces the object
    assert storage.get(key) == b"replaced"

    storage.delete(key)
    with pytest.raises(ObjectNotFound):
        storage.get(key)
    storage.delete(key)  # deleting what is gone is not an error


def test_missing_key_is_object_not_found(storage):
    with pytest.raises(ObjectNotFound):
        storage.get("jobs/nope/final/generator.pt")
    with pytest.raises(ObjectNotFound):
        storage.stream("jobs/nope/final/generator.pt")


@pytest.mark.parametrize("key", ["../x", "jobs/../../x", "/abs", "a//b", "", "a/./b", "a/"])
def test_unsafe_keys_are_refused(storage, key):
    for operation in (lambda: storage.put(key, b"x", "text/plain"), lambda: storage.get(key),
                      lambda: storage.stream(key), lambda: storage.delete(key)):
        with pytest.raises(StorageError):
            operation()


def test_local_storage_stays_inside_its_root(tmp_path):
    store = LocalStorage(tmp_path / "root")
    with pytest.raises(StorageError):
        store.put("../escaped", b"x", "text/plain")
    assert not (tmp_path / "escaped").exists()
    store.put("a/b.txt", b"x", "text/plain")
    assert (tmp_path / "root" / "a" / "b.txt").read_bytes() == b"x"
    assert [p.name for p in (tmp_path / "root" / "a").iterdir()] == ["b.txt"]  # no temp file left behind
    assert store.presigned_url("a/b.txt", 60) is None
    store.check()


def test_s3_prefix_is_applied(s3_bucket, s3_server, s3_client):
    bucket = urlparse(s3_bucket).netloc
    store = open_storage(s3_bucket, endpoint_url=s3_server)
    assert isinstance(store, S3Storage)
    store.put("jobs/j1/final/generator.pt", b"weights", "application/octet-stream")
    keys = [obj["Key"] for obj in s3_client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == ["prefix/jobs/j1/final/generator.pt"]
    head = s3_client.head_object(Bucket=bucket, Key=keys[0])
    assert head["ContentType"] == "application/octet-stream"
    assert head["Metadata"]["sha256"] == hashlib.sha256(b"weights").hexdigest()

    unprefixed = open_storage(f"s3://{bucket}", endpoint_url=s3_server)
    unprefixed.put("top.txt", b"t", "text/plain")
    assert s3_client.get_object(Bucket=bucket, Key="top.txt")["Body"].read() == b"t"
    with pytest.raises(ObjectNotFound):  # the prefixed store does not see unprefixed keys
        store.get("top.txt")


def test_presigned_url_downloads_then_expires(s3_bucket, s3_server):
    store = open_storage(s3_bucket, endpoint_url=s3_server)
    store.put("jobs/j1/samples/step-000001.png", PAYLOAD, "image/png")

    url = store.presigned_url("jobs/j1/samples/step-000001.png", 60)
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.read() == PAYLOAD

    short = store.presigned_url("jobs/j1/samples/step-000001.png", 1)
    assert parse_qs(urlparse(short).query)["X-Amz-Expires"] == ["1"]
    time.sleep(2)
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(short, timeout=10)
    assert info.value.code == 403


def test_readiness_check(s3_bucket, s3_server, tmp_path):
    open_storage(s3_bucket, endpoint_url=s3_server).check()
    missing = open_storage("s3://ganforge-no-such-bucket-0000/p", endpoint_url=s3_server)
    with pytest.raises(StorageError, match="ganforge-no-such-bucket-0000"):
        missing.check()
    for operation in (lambda: missing.put("a.txt", b"x", "text/plain"), lambda: missing.get("a.txt"),
                      lambda: missing.delete("a.txt")):
        with pytest.raises(StorageError) as info:
            operation()
        assert not isinstance(info.value, ObjectNotFound)  # a missing bucket is an outage, not a 404 to serve


def test_create_bucket_option(s3_server):
    store = open_storage("s3://ganforge-created-on-open/p", endpoint_url=s3_server, create_bucket=True)
    store.check()
    open_storage("s3://ganforge-created-on-open/p", endpoint_url=s3_server, create_bucket=True).check()  # idempotent


@pytest.mark.parametrize("url", ["s3:///nobucket", "ftp://host/x", "bucket/prefix"])
def test_bad_storage_urls(url):
    with pytest.raises(StorageError):
        open_storage(url)
