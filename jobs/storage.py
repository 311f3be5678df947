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


def dataset_key(dataset_id: str, extension: str) -> str:
    """An uploaded dataset's archive (its owner is the datasets row, not the key)."""
    return f"datasets/{dataset_id}/archive{extension}"


def _check_key(key: str) -> str:
    path = PurePosixPath(key)
    if not key or key.startswith("/") or any(part in ("..", ".", "") for part in key.split("/")) or path.is_absolute():
        raise StorageError(f"invalid object key {key!r}")
    return key


class Storage(Protocol):
    def put(self, key: str, data: bytes, content_type: str) -> StoredObject: ...

    def put_file(self, key: str, path: str | os.PathLike[str], content_type: str) -> StoredObject:
        """``put`` for a file on disk, read in chunks (an uploaded dataset never sits whole in memory)."""

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

    def put_file(self, key: str, path: str | os.PathLike[str], content_type: str) -> StoredObject:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
        digest, size = hashlib.sha256(), 0
        try:
            with os.fdopen(fd, "wb") as out, open(path, "rb") as source:
                while block := source.read(CHUNK):
                    digest.update(block)
                    size += len(block)
                    out.write(block)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        if target.stat().st_size != size:
            raise StorageError(f"{key}: wrote {size} bytes, found {target.stat().st_size}")
        return StoredObject(key, size, digest.hexdigest())

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

    def put_file(self, key: str, path: str | os.PathLike[str], content_type: str) -> StoredObject:
        from boto3.exceptions import S3UploadFailedError
        from boto3.s3.transfer import TransferConfig
        from botocore.exceptions import BotoCoreError, ClientError

        digest, size = hashlib.sha256(), 0
        with open(path, "rb") as source:
            while block := source.read(CHUNK):
                digest.update(block)
                size += len(block)
        full = self._full(key)
        try:
            # boto3's managed transfer: multipart past 64 MiB, each part read from the file as sent.
            self.client.upload_file(str(path), self.bucket, full,
                                    ExtraArgs={"ContentType": content_type, "Metadata": {"sha256": digest.hexdigest()}},
                                    Config=TransferConfig(multipart_threshold=64 * 1024**2, use_threads=False))
            head = self.client.head_object(Bucket=self.bucket, Key=full)
        except (BotoCoreError, ClientError, S3UploadFailedError) as exc:
            raise StorageError(f"upload of {key} failed: {exc}") from exc
        if head["ContentLength"] != size:
            raise StorageError(f"{key}: uploaded {size} bytes, store reports {head['ContentLength']}")
        return StoredObject(key, size, digest.hexdigest())

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
