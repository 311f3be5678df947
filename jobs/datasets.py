"""Where a tenant's training data may come from, and fetching it safely.

``dataset.path`` of an ``npz`` job is a URI:

* ``s3://bucket/key.npz`` — only buckets on GANFORGE_DATASET_S3_BUCKETS; keys with ``..``,
  ``.`` or empty segments, backslashes or control characters are refused (path traversal);
* ``https://host/...`` — only hosts on GANFORGE_DATASET_HTTPS_HOSTS when that list is set, and
  never a host that resolves to a loopback, private, link-local, multicast or reserved address
  (SSRF: the metadata service, the database, the broker), IPv4 addresses inside IPv6 ones (mapped,
  compatible, 6to4, Teredo, NAT64) included. The worker connects to the address it
  checked (no second lookup a DNS rebinding could change) and follows no redirects;
* a plain server path — only when GANFORGE_ALLOW_LOCAL_DATASETS is on (the embedded default: one
  trusted user on their own machine; production refuses to turn it on). ``file://`` and every
  other scheme are refused.

``dataset.upload_id`` names an archive the tenant uploaded (POST /v1/datasets): checked at submit
(``check_upload``), found by the worker (``upload_location``), kept while a job uses it.

Downloads stop at GANFORGE_MAX_DATASET_BYTES. The API checks a submitted URI (422 naming
``dataset.path``); the worker checks it again before fetching (settings may have changed, DNS
may answer differently) and hands gan_core a local copy, which ``np.load(allow_pickle=False)``
reads.
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import json
import logging
import os
import re
import shutil
import socket
import ssl
import tempfile
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import SplitResult, urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from gan_core.data import DataError
from gan_core.data.archive import safe_member_name
from gan_core.data.errors import ArchiveError
from gan_core.data.folder import find_prepared, prepare_folder
from gan_core.spec import JobSpec
from ganforge.jobs.models import Dataset, Job, Sweep
from ganforge.jobs.settings import Settings
from ganforge.jobs.storage import StorageError

MAX_URI = 2048
_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")
_CHUNK = 1 << 20
Resolver = Callable[[str, int], list[str]]
log = logging.getLogger(__name__)


class DatasetSourceError(DataError):
    """The dataset URI is not allowed, or fetching it failed (the message says why)."""


@dataclass(frozen=True)
class Source:
    scheme: str  # "s3" | "https" | "local"
    host: str = ""  # bucket or host name
    port: int = 443
    key: str = ""  # S3 key, URL path + query, or the local path
    addresses: tuple[str, ...] = ()  # https: the checked addresses to connect to


# getaddrinfo has no timeout of its own and a slow resolver can take many seconds: lookups run on
# this small pool and the caller (an API thread) waits at most RESOLVE_TIMEOUT_SECONDS. A stuck
# lookup then holds a pool thread, never a request thread; once all are stuck, lookups queue and
# time out too.
RESOLVE_TIMEOUT_SECONDS = 5.0
_resolver_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="dataset-dns")

# NAT64 prefixes: the well-known /96 (RFC 6052) carries an IPv4 address in its last 32 bits; the
# local-use /48 (RFC 8215) translates to addresses of the operator's choosing.
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def _getaddrinfo(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def resolve(host: str, port: int) -> list[str]:
    """The addresses of ``host``, looked up off the calling thread within RESOLVE_TIMEOUT_SECONDS."""
    future = _resolver_pool.submit(_getaddrinfo, host, port)
    try:
        return future.result(timeout=RESOLVE_TIMEOUT_SECONDS)
    except FutureTimeout:
        future.cancel()  # still queued: never runs; already running: finishes on the pool
        raise DatasetSourceError(f"cannot resolve {host!r}: no answer within {RESOLVE_TIMEOUT_SECONDS:g} s") from None
    except (socket.gaierror, UnicodeError) as exc:
        log.info("cannot resolve dataset host %r: %s", host, exc)
        raise DatasetSourceError(f"cannot resolve {host!r}") from None  # no resolver errno for the tenant


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries and that traffic to it may reach: IPv4-mapped
    (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d), 6to4 (2002:AABB:CCDD::/48), Teredo (server and
    client of 2001:0::/32) and NAT64 (64:ff9b::a.b.c.d)."""
    found = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if ip in _NAT64_WELL_KNOWN or (ip in _IPV4_COMPATIBLE and int(ip) > 1):  # :: and ::1 are not IPv4
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def _public_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return ip.is_global and not (ip.is_multicast or ip.is_loopback or ip.is_link_local or ip.is_private
                                 or ip.is_reserved or ip.is_unspecified)


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv4Address):
        return _public_address(ip)
    if ip in _NAT64_LOCAL:
        return False
    embedded = _embedded_ipv4(ip)
    if ip.ipv4_mapped is not None:
        return _public_address(ip.ipv4_mapped)  # ::ffff:0:0/96 is "private" as IPv6; judge the IPv4 inside
    return _public_address(ip) and all(_public_address(v4) for v4 in embedded)


def check_source(uri: str, settings: Settings, resolver: Resolver = resolve, allow_prefix: bool = False) -> Source:
    """The parsed source of an allowed URI; DatasetSourceError (saying why) otherwise.
    ``allow_prefix``: an S3 key ending in ``/`` (image_folder reads every object under it)."""
    if not uri or len(uri) > MAX_URI:
        raise DatasetSourceError(f"must be a URI of 1 to {MAX_URI} characters")
    if _CONTROL.search(uri):
        raise DatasetSourceError("must not contain control characters or backslashes")
    if "://" not in uri:
        if not settings.allow_local_datasets:
            raise DatasetSourceError("server paths are not accepted: give s3://bucket/key.npz or an https:// URL")
        return Source("local", key=uri)
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise DatasetSourceError(f"not a valid URI: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme == "s3":
        return _check_s3(parts.netloc, parts.path, settings, allow_prefix)
    if scheme == "https":
        return check_public_https(parts, settings.dataset_https_hosts, resolver)
    raise DatasetSourceError(f"the {scheme or 'empty'}:// scheme is not accepted: give s3://bucket/key.npz or an https:// URL")


def check_public_https(parts: SplitResult, allowed: tuple[str, ...], resolver: Resolver = resolve) -> Source:
    """An https:// URL (split) whose host is on ``allowed`` (when given) and resolves to public
    addresses only (SSRF); the Source carries those addresses, to connect to them and no other.
    Dataset URLs and webhooks (jobs/notify.py) go through this one check."""
    if parts.username is not None or parts.password is not None:
        raise DatasetSourceError("credentials in the URL are not accepted")
    host = (parts.hostname or "").lower()
    if not host:
        raise DatasetSourceError("the URL has no host")
    if allowed and host not in allowed:
        raise DatasetSourceError(f"host {host} is not on the allowed list ({', '.join(allowed)})")
    port = parts.port or 443
    addresses = resolver(host, port)
    private = [a for a in addresses if not _public(a)]
    if private or not addresses:
        raise DatasetSourceError(f"host {host} resolves to a non-public address ({', '.join(private) or 'none'}); "
                                 "only public hosts are fetched")
    key = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Source("https", host, port, key, tuple(addresses))


def _check_s3(bucket: str, path: str, settings: Settings, allow_prefix: bool = False) -> Source:
    bucket = bucket.lower()
    if not settings.dataset_s3_buckets:
        raise DatasetSourceError("this deployment accepts no s3:// datasets (GANFORGE_DATASET_S3_BUCKETS is empty)")
    if bucket not in settings.dataset_s3_buckets:
        raise DatasetSourceError(f"bucket {bucket!r} is not on the allowed list ({', '.join(settings.dataset_s3_buckets)})")
    key = path[1:] if path.startswith("/") else path
    prefix = allow_prefix and (key == "" or key.endswith("/"))  # "" : the whole bucket
    segments = key[:-1].split("/") if prefix and key else key.split("/")
    if (not key and not prefix) or (key and any(s in ("", ".", "..") for s in segments)) \
            or "%2e" in key.lower() or "%2f" in key.lower():
        raise DatasetSourceError("the key must be a plain path without empty, '.' or '..' segments")
    return Source("s3", bucket, 0, key)


def check_spec(spec: JobSpec, settings: Settings, resolver: Resolver = resolve) -> None:
    if spec.dataset.path is not None:
        check_source(spec.dataset.path, settings, resolver, allow_prefix=spec.dataset.name == "image_folder")


# ---- fetching (worker) -----------------------------------------------------------------------
def download_path(job_id: str) -> Path:
    # The same on every worker host, so a job resumed elsewhere has the same spec (the trainer
    # refuses a checkpoint whose dataset differs).
    return Path(tempfile.gettempdir()) / "ganforge-datasets" / f"{job_id}.npz"


def localise(spec: JobSpec, settings: Settings, job_id: str, resolver: Resolver = resolve,
             s3_client=None) -> JobSpec:
    """``spec`` with a remote ``dataset.path`` replaced by a size-capped local copy."""
    if spec.dataset.path is None:
        return spec
    source = check_source(spec.dataset.path, settings, resolver)
    if source.scheme == "local":
        return spec
    target = download_path(job_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    try:
        with partial.open("wb") as out:
            if source.scheme == "s3":
                _fetch_s3(source, settings, out, s3_client)
            else:
                _fetch_https(source, settings.max_dataset_bytes, out)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return spec.model_copy(update={"dataset": spec.dataset.model_copy(update={"path": str(target)})})


def discard(job_id: str) -> None:
    download_path(job_id).unlink(missing_ok=True)
    folder_link(job_id).unlink(missing_ok=True)  # the cache entry itself stays for the next job
    shutil.rmtree(_folder_work(job_id), ignore_errors=True)


def _copy_capped(read: Callable[[int], bytes], out, limit: int) -> None:
    total = 0
    while chunk := read(_CHUNK):
        total += len(chunk)
        if total > limit:
            raise DatasetSourceError(f"the dataset is larger than the limit of {limit} bytes")
        out.write(chunk)


def _fetch_s3(source: Source, settings: Settings, out, client=None) -> None:
    client = _s3_client(settings, client)
    try:
        obj = client.get_object(Bucket=source.host, Key=source.key)
    except Exception as exc:  # botocore's ClientError (NoSuchKey, AccessDenied), connection errors
        raise _s3_failure(exc, f"s3://{source.host}/{source.key}") from None
    if obj.get("ContentLength", 0) > settings.max_dataset_bytes:
        raise DatasetSourceError(f"the dataset has {obj['ContentLength']} bytes; the limit is {settings.max_dataset_bytes}")
    _copy_capped(obj["Body"].read, out, settings.max_dataset_bytes)


def _s3_client(settings: Settings, client=None):
    if client is None:
        import boto3

        client = boto3.client("s3", endpoint_url=settings.s3_endpoint_url, region_name=settings.s3_region)
    return client


def _s3_failure(exc: Exception, where: str) -> DatasetSourceError:
    """The store's answer (NoSuchKey, AccessDenied) for the tenant; the network's detail (the
    endpoint, errno) only in the worker's log."""
    log.warning("dataset %s could not be read: %r", where, exc)
    answer = getattr(exc, "response", None)  # botocore's ClientError carries the store's answer
    code = answer.get("Error", {}).get("Code") if isinstance(answer, dict) else None
    problem = f"the store answered {code}" if isinstance(code, str) and code.isalnum() else "connection failed"
    return DatasetSourceError(f"could not read the dataset {where}: {problem}")


class PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to an address checked beforehand; the certificate is still checked against the
    host name (SNI and verification use ``host``)."""

    def __init__(self, host: str, address: str, port: int, timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def _fetch_https(source: Source, limit: int, out, timeout: float = 60.0) -> None:
    connection = PinnedHTTPS(source.host, source.addresses[0], source.port, timeout)
    path = source.key.split("?", 1)[0]  # the query may hold the tenant's own token: never in a message
    try:
        connection.request("GET", source.key, headers={"Host": source.host, "User-Agent": "ganforge"})
        response = connection.getresponse()
        if response.status != 200:
            raise DatasetSourceError(f"https://{source.host}{path} answered {response.status} "
                                     "(redirects are not followed)")
        length = response.getheader("Content-Length")
        if length and length.isdigit() and int(length) > limit:
            raise DatasetSourceError(f"the dataset has {length} bytes; the limit is {limit}")
        _copy_capped(response.read, out, limit)
    except (OSError, http.client.HTTPException) as exc:
        # Refused, timed out, reset, a TLS or certificate failure: one reason for the tenant (the
        # difference would make the worker a probe of what it can reach); the detail is logged.
        log.warning("dataset download from https://%s%s (%s) failed: %r", source.host, path, source.addresses[0], exc)
        raise DatasetSourceError(f"could not download the dataset from {source.host}: connection failed") from None
    finally:
        connection.close()


# ---- image folders (worker) ----------------------------------------------------------------------
# An image_folder comes from an upload (the artifact store), an S3 archive or prefix, an https://
# archive or (embedded) a server path. The worker decodes it once into the data cache
# (gan_core.data.folder) and hands the trainer the cache entry through a per-job link, whose path
# is the same on every host (a resumed job's spec matches its checkpoint's). Downloads land in a
# per-job folder removed as soon as the entry exists; a cached upload or S3 prefix is not even
# downloaded (the upload's recorded sha256, the prefix's listing name the entry).
def folder_link(job_id: str) -> Path:
    return Path(tempfile.gettempdir()) / "ganforge-datasets" / f"{job_id}.folder"


def _folder_work(job_id: str) -> Path:
    return Path(tempfile.gettempdir()) / "ganforge-datasets" / f"{job_id}.download"


def localise_folder(spec: JobSpec, settings: Settings, job_id: str, *, tenant: str, db=None, storage=None,
                    resolver: Resolver = resolve, s3_client=None) -> tuple[JobSpec, dict]:
    """``spec`` with its image_folder replaced by the decoded cache entry, and the dataset's
    summary (FolderSummary.as_dict(): files, images, skipped, classes, bytes, cache hit/miss).
    ``db`` and ``storage`` are needed for uploads (``dataset.upload_id``)."""
    data = spec.dataset
    limits = settings.archive_limits()
    cache_dir = settings.data_config().cache_dir

    def prepare(source: Path | None, sha256: str | None = None):
        """The decoded entry: found by ``sha256`` when given and cached (``source`` may then be
        None: the caller downloads nothing), else decoded from ``source``."""
        args = (data.image_size, data.channels or 3, data.labels or "none")
        if source is None:
            return find_prepared(cache_dir, sha256, *args)
        return prepare_folder(source, cache_dir, *args, limits, sha256=sha256)

    work = _folder_work(job_id)
    shutil.rmtree(work, ignore_errors=True)
    try:
        if data.upload_id is not None:
            prepared = _prepare_upload(data.upload_id, tenant, db, storage, limits, work, prepare)
        else:
            source = check_source(data.path, settings, resolver, allow_prefix=True)
            if source.scheme == "local":
                prepared = prepare(Path(source.key))
            elif source.scheme == "s3" and (source.key == "" or source.key.endswith("/")):
                prepared = _prepare_s3_prefix(source, settings, limits, work, prepare, s3_client)
            else:
                archive = work / "archive"
                archive.parent.mkdir(parents=True, exist_ok=True)
                with archive.open("wb") as out:
                    if source.scheme == "s3":
                        _fetch_s3(source, settings, out, s3_client)
                    else:
                        _fetch_https(source, settings.max_dataset_bytes, out)
                prepared = prepare(archive)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    link = folder_link(job_id)
    link.parent.mkdir(parents=True, exist_ok=True)
    temporary = link.with_name(f".{link.name}.{os.getpid()}")
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(prepared.entry.resolve(), target_is_directory=True)
    temporary.replace(link)  # atomic: a resumed attempt's link is swapped, never missing
    localised = data.model_copy(update={"path": str(link), "upload_id": None})
    return spec.model_copy(update={"dataset": localised}), prepared.summary.as_dict()


def _prepare_upload(dataset_id: str, tenant: str, db, storage, limits, work: Path, prepare):
    if db is None or storage is None:
        raise DatasetSourceError("an uploaded dataset needs the service's database and artifact store")
    with db.session() as session:
        key, sha256 = upload_location(session, tenant, dataset_id)
    found = prepare(None, sha256)  # decoded by an earlier job: nothing to download
    if found is not None:
        return found
    archive = work / "archive"
    archive.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    try:
        with archive.open("wb") as out:
            def read(_size: int, chunks=iter(storage.stream(key))) -> bytes:
                chunk = next(chunks, b"")
                digest.update(chunk)
                return chunk

            _copy_capped(read, out, limits.max_bytes)
    except StorageError as exc:
        log.warning("uploaded dataset %s (%s) could not be read: %r", dataset_id, key, exc)
        raise DatasetSourceError(f"the uploaded dataset {dataset_id} could not be read from the artifact store") from None
    if digest.hexdigest() != sha256:
        raise DatasetSourceError(f"the uploaded dataset {dataset_id} in the store does not match its recorded sha256")
    return prepare(archive, sha256)


def s3_prefix_listing(source: Source, limits, client) -> list[tuple[str, str, int, str]]:
    """(relative name, key, size, ETag) of every object under the prefix, refused like an
    archive (ArchiveError) past the file or byte limits or when it is empty."""
    where = f"s3://{source.host}/{source.key}"
    objects = []
    total = 0
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=source.host, Prefix=source.key):
            for item in page.get("Contents", []):
                key = item["Key"]
                if key.endswith("/"):  # a console-made "folder" marker
                    continue
                objects.append((key[len(source.key):], key, int(item.get("Size", 0)), str(item.get("ETag", ""))))
                total += objects[-1][2]
                if len(objects) > limits.max_files:
                    raise ArchiveError("too_many_files", f"{where} holds more than {limits.max_files} files")
                if total > limits.max_bytes:
                    raise ArchiveError("too_large", f"the files under {where} add up to more than {limits.max_bytes} bytes")
    except DataError:
        raise
    except Exception as exc:  # botocore's ClientError (NoSuchBucket, AccessDenied), connection errors
        raise _s3_failure(exc, where) from None
    if not objects:
        raise ArchiveError("empty", f"there are no files under {where}")
    return sorted(objects)


def _prepare_s3_prefix(source: Source, settings: Settings, limits, work: Path, prepare, client=None):
    client = _s3_client(settings, client)
    listing = s3_prefix_listing(source, limits, client)
    # The listing (names, sizes, ETags) stands for the content: a second job finds the entry
    # without downloading anything; a changed object changes its ETag and so the entry.
    identity = hashlib.sha256(json.dumps([source.host, source.key, listing]).encode()).hexdigest()
    found = prepare(None, identity)
    if found is not None:
        return found
    folder = work / "prefix"
    left = limits.max_bytes  # the listing was within it; objects may have grown since
    for relative, key, _, _ in listing:
        name = safe_member_name(relative)  # '..', absolute: ArchiveError; archiver metadata: None
        if name is None:
            continue
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            obj = client.get_object(Bucket=source.host, Key=key)
        except Exception as exc:
            raise _s3_failure(exc, f"s3://{source.host}/{key}") from None
        with target.open("wb") as out:
            _copy_capped(obj["Body"].read, out, left)
            left -= out.tell()
    folder.mkdir(parents=True, exist_ok=True)
    return prepare(folder, identity)


# ---- uploads (POST /v1/datasets) ---------------------------------------------------------------
class UploadNotFound(DatasetSourceError):
    """The spec names an upload this tenant does not have (never uploaded, deleted, or another
    tenant's: the same answer for all three)."""


class DatasetInUse(DatasetSourceError):
    """A queued or running job (or a sweep that may still queue one) uses the upload."""


def upload_id(spec: JobSpec) -> str | None:
    """The uploaded dataset ``spec`` trains on (``dataset.upload_id``), if any."""
    return spec.dataset.upload_id


def _owned(session: Session, tenant_id: str, dataset_id: str) -> Dataset | None:
    return session.scalar(select(Dataset).where(Dataset.id == dataset_id, Dataset.tenant == tenant_id))


def check_upload(session: Session, tenant_id: str, spec: JobSpec) -> None:
    """At submit: the spec's upload, if it names one, is the tenant's own (UploadNotFound else)."""
    wanted = upload_id(spec)
    if wanted is not None and _owned(session, tenant_id, wanted) is None:
        raise UploadNotFound(f"no uploaded dataset {wanted} (see GET /v1/datasets)")


def upload_location(session: Session, tenant_id: str, dataset_id: str) -> tuple[str, str]:
    """(storage key, sha256) of the tenant's uploaded archive, for the worker to fetch and check;
    UploadNotFound if the tenant has no such upload."""
    found = _owned(session, tenant_id, dataset_id)
    if found is None:
        raise UploadNotFound(f"no uploaded dataset {dataset_id} for this job's tenant")
    return found.storage_key, found.sha256


def in_use(session: Session, dataset: Dataset) -> str | None:
    """Why ``dataset`` may not be deleted now (None: it may)."""
    jobs = session.scalars(select(Job.id).where(Job.dataset_id == dataset.id, Job.status.in_(("queued", "running")))
                           .order_by(Job.created_at).limit(5)).all()
    if jobs:
        return f"used by queued or running jobs: {', '.join(jobs)}"
    # A live sweep queues trials later; its base (or its space) names the upload. The id is 32 hex
    # digits, so finding it in the spec's JSON is finding it named.
    sweeps = session.scalars(select(Sweep).where(Sweep.tenant == dataset.tenant,
                                                 Sweep.status.in_(("queued", "running")))).all()
    users = [sweep.id for sweep in sweeps if dataset.id in json.dumps(sweep.spec)]
    if users:
        return f"named by sweeps that may still queue trials: {', '.join(users[:5])}"
    return None


def delete_upload(session: Session, dataset_id: str, tenant_id: str | None) -> str:
    """Delete the row of an upload (any tenant's when ``tenant_id`` is None) and return its
    storage key, for the caller to remove once this unit of work is committed. UploadNotFound,
    or DatasetInUse while a job may still read it.

    The row is locked first (PostgreSQL): a job inserted meanwhile holds a key-share lock on it
    through its foreign key, so either that job is committed and seen here, or it waits and then
    fails its foreign key (the API answers that submit with a 422)."""
    stmt = select(Dataset).where(Dataset.id == dataset_id)
    if tenant_id is not None:
        stmt = stmt.where(Dataset.tenant == tenant_id)
    found = session.scalar(stmt.with_for_update())
    if found is None:
        raise UploadNotFound(f"no uploaded dataset {dataset_id}")
    reason = in_use(session, found)
    if reason is not None:
        raise DatasetInUse(f"dataset {dataset_id} is {reason}; cancel them or wait for them to finish")
    session.delete(found)
    return found.storage_key
