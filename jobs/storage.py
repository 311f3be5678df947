"""Artifact storage: S3-compatible (boto3; AWS, MinIO, moto) and a local directory, one interface.

Keys look like ``jobs/{id}/samples/step-000200.png``. Every put records the size and sha256 of
what was written and checks the size the store reports back.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator, Protocol
from urllib.parse import urlparse

CHUNK = 1 << 20


class StorageError(Exception):
    pass


class ObjectNotFound(StorageError):
    pass


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    sha256: str


def sample_key(job_id: str, step: int) -> str:
    return f"jobs/{job_id}/samples/step-{step:06d}.png"


def checkpoint_key(job_id: str, step: int) -> str:
    return f"jobs/{job_id}/checkpoints/step-{step:06d}.pt"


def final_key(job_id: str, name: str = "generator.pt") -> str:
    return f"jobs/{job_id}/final/{name}"


def evaluation_key(job_id: str, step: int) -> str:
    return f"jobs/{job_id}/evaluation/step-{step:06d}.json"


def loss_plot_key(job_id: str) -> str:
    return final_key(job_id, "loss_plot.png")


def interpolation_key(job_id: str) -> str:
    return final_key(job_id, "interpolation.png")


def attempt_log_key(job_id: str, attempt: int) -> str:
    return f"jobs/{job_id}/logs/attempt-{attempt}.log"


def _check_key(key: str) -> str:
    path = PurePosixPath(key)
    if not key or key.startswith("/") or any(part in ("..", ".", "") for part in key.split("/")) or path.is_absolute():
        raise StorageError(f"invalid object key {key!r}")
    return key


class Storage(Protocol):
    def put(self, key: str, data: bytes, content_type: str) -> StoredObject: ...

    def get(self, key: str) -> bytes: ...

    def stream(self, key: str) -> Iterator[bytes]: ...

    def delete(self, key: str) -> None: ...

    def presigned_url(self, key: str, ttl_seconds: int) -> str | None:
        """A URL anyone can GET until it expires; None if the store has none (local directory)."""

    def check(self) -> None:
        """Raise StorageError if the store cannot be reached (readiness)."""


class LocalStorage:
    """A directory; writes are atomic (temp file + rename)."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put(self, key: str, data: bytes, content_type: str) -> StoredObject:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        size = path.stat().st_size
        if size != len(data):
            raise StorageError(f"{key}: wrote {len(data)} bytes, found {size}")
        return StoredObject(key, size, hashlib.sha256(data).hexdigest())

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    def stream(self, key: str) -> Iterator[bytes]:
        try:
            handle = self._path(key).open("rb")
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

        def chunks() -> Iterator[bytes]:
            with handle:
                while block := handle.read(CHUNK):
                    yield block

        return chunks()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def presigned_url(self, key: str, ttl_seconds: int) -> str | None:
        return None

    def check(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise StorageError(f"{self.root} is not writable")


class S3Storage:
    """Any S3-compatible endpoint through boto3 (credentials from boto3's usual chain)."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None, region: str | None = None,
                 create_bucket: bool = False):
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region or "us-east-1",
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=5,
                read_timeout=30,
                signature_version="s3v4",
            ),
        )
        if create_bucket:
            self._ensure_bucket()

    def _full(self, key: str) -> str:
        key = _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)

    def put(self, key: str, data: bytes, content_type: str) -> StoredObject:
        from botocore.exceptions import BotoCoreError, ClientError

        digest = hashlib.sha256(data).hexdigest()
        full = self._full(key)
        try:
            self.client.put_object(Bucket=self.bucket, Key=full, Body=data, ContentType=content_type,
                                   Metadata={"sha256": digest})
            head = self.client.head_object(Bucket=self.bucket, Key=full)
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"upload of {key} failed: {exc}") from exc
        if head["ContentLength"] != len(data):
            raise StorageError(f"{key}: uploaded {len(data)} bytes, store reports {head['ContentLength']}")
        return StoredObject(key, len(data), digest)

    def _get_object(self, key: str):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._full(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise ObjectNotFound(key) from None
            raise StorageError(f"download of {key} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"download of {key} failed: {exc}") from exc

    def get(self, key: str) -> bytes:
        return self._get_object(key)["Body"].read()

    def stream(self, key: str) -> Iterator[bytes]:
        body = self._get_object(key)["Body"]
        return body.iter_chunks(CHUNK)

    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        full = self._full(key)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=full)
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"delete of {key} failed: {exc}") from exc

    def presigned_url(self, key: str, ttl_seconds: int) -> str | None:
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._full(key)}, ExpiresIn=ttl_seconds
        )

    def check(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"bucket {self.bucket} unreachable: {exc}") from exc


def open_storage(url: str, endpoint_url: str | None = None, region: str | None = None, create_bucket: bool = False) -> Storage:
    """``s3://bucket/prefix`` or ``file:///path``."""
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise StorageError(f"{url}: no bucket")
        return S3Storage(parsed.netloc, parsed.path, endpoint_url, region, create_bucket)
    if parsed.scheme == "file":
        return LocalStorage(parsed.path)
    raise StorageError(f"unsupported storage URL {url!r}")
