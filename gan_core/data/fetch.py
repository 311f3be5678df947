"""Dataset files from the data dir, the cache or a mirror, verified before use.

The built-in IDX datasets (``mnist``, ``fashion-mnist``) are looked up in ``DataConfig.data_dir``
(one folder per dataset: ``<data_dir>/mnist/train-images-idx3-ubyte.gz``), then in
``DataConfig.system_dirs`` (packaged datasets: Debian's ``dataset-fashion-mnist`` installs
``/usr/share/datasets/fashion-mnist/``), then in ``DataConfig.cache_dir`` (same layout), and only
then downloaded from the configured mirrors into the cache. Every file is checked against ``KNOWN_FILES`` (sha256) first.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from gan_core.data.archive import ArchiveLimits
from gan_core.data.errors import ChecksumError, DataError, DownloadError

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# Known files and mirrors
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KnownFile:
    """One IDX file and how it is verified.

    ``raw_sha256`` is the hash of the *decompressed* content, which survives a mirror that
    recompresses the gzip; it is used whenever known. ``gz_sha256`` (hash of the .gz bytes as
    published) is the fallback where no raw hash is known. At least one must be set.
    """

    filename: str
    raw_sha256: str | None = None
    gz_sha256: str | None = None



KNOWN_FILES: dict[str, dict[str, KnownFile]] = {
    # sha256 of the decompressed IDX files (identical in every MNIST copy, whatever its gzip).
    "mnist": {
        f.filename: f
        for f in (
            KnownFile(
                "train-images-idx3-ubyte.gz",
                raw_sha256="ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            ),
            KnownFile(
                "train-labels-idx1-ubyte.gz",
                raw_sha256="65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            ),
            KnownFile(
                "t10k-images-idx3-ubyte.gz",
                raw_sha256="0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            ),
            KnownFile(
                "t10k-labels-idx1-ubyte.gz",
                raw_sha256="ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            ),
        )
    },
    # sha256 of the decompressed IDX files. The published .gz files' own hashes (TensorFlow
    # Datasets' url_checksums/fashion_mnist.txt) are 3aede38d... (train images), a04f1713... (train
    # labels), 346e55b9... (test images), 67da17c7... (test labels); the labels' .gz in the
    # publisher's repository decompress to the raw hashes below, and the raw image hashes are the
    # ones independent loaders pin. Checking the content rather than the gzip accepts a copy that
    # was recompressed, e.g. Debian's dataset-fashion-mnist package (/usr/share/datasets/fashion-mnist).
    "fashion-mnist": {
        f.filename: f
        for f in (
            KnownFile(
                "train-images-idx3-ubyte.gz",
                raw_sha256="c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            ),
            KnownFile(
                "train-labels-idx1-ubyte.gz",
                raw_sha256="bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            ),
            KnownFile(
                "t10k-images-idx3-ubyte.gz",
                raw_sha256="5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            ),
            KnownFile(
                "t10k-labels-idx1-ubyte.gz",
                raw_sha256="0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            ),
        )
    },
    # CIFAR-10's binary version (gan_core/data/cifar.py): one tar.gz of 170 052 171 bytes. Its page
    # publishes the md5 c32a1d4ab5d03f1284b67883e8d87530; this sha256 of the same file is the one
    # TensorFlow Datasets (url_checksums/cifar10.txt), Julia's MLDatasets and gomlx all pin.
    "cifar10": {
        "cifar-10-binary.tar.gz": KnownFile(
            "cifar-10-binary.tar.gz",
            gz_sha256="c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
        ),
    },
}

DEFAULT_MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    "cifar10": ("https://www.cs.toronto.edu/~kriz/",),
}

# Debian packages that install a dataset's files under a system dir (see DataConfig.system_dirs).
DEBIAN_PACKAGES = {"fashion-mnist": "dataset-fashion-mnist"}

# A mirror sending more than this for a dataset file (MNIST's are ~10 MB, CIFAR-10's binary
# archive 162 MiB) is broken or hostile; stop filling the disk.
_MAX_DOWNLOAD_BYTES = 256 * 1024**2
_CHUNK = 1024 * 1024


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "ganforge" / "datasets"


def _normalise_mirrors(mirrors: Mapping[str, Sequence[str] | str]) -> dict[str, tuple[str, ...]]:
    if not isinstance(mirrors, Mapping):
        raise DataError("mirrors must map a dataset name to a list of base URLs")
    out: dict[str, tuple[str, ...]] = {}
    for name, urls in mirrors.items():
        if name not in KNOWN_FILES:
            raise DataError(f"mirrors: unknown dataset '{name}' (downloadable: {sorted(KNOWN_FILES)})")
        if isinstance(urls, str):
            urls = [urls]
        checked = []
        for url in urls:
            if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in ("http", "https"):
                raise DataError(f"mirrors['{name}']: {url!r} is not an http(s) URL")
            checked.append(url)
        out[name] = tuple(checked)
    return out


@dataclass(frozen=True)
class DataConfig:
    """Where datasets come from. Paths may be given as strings; they are made ``Path``s."""

    data_dir: Path | None = None  # folder with one sub-folder per dataset (read only)
    # Folders of packaged datasets in the same layout, read after data_dir: Debian's dataset-*
    # packages install there (dataset-fashion-mnist: /usr/share/datasets/fashion-mnist/*.gz).
    system_dirs: tuple[Path, ...] = (Path("/usr/share/datasets"),)
    cache_dir: Path = field(default_factory=_default_cache_dir)  # downloads land here
    mirrors: Mapping[str, Sequence[str]] | None = None  # per dataset; replaces DEFAULT_MIRRORS
    max_npz_bytes: int = 2 * 1024**3
    download_timeout: float = 60.0  # seconds, per connection attempt / read
    archive_limits: ArchiveLimits = field(default_factory=ArchiveLimits)  # image_folder archives

    def __post_init__(self) -> None:
        # frozen: normalise through object.__setattr__
        if self.data_dir is not None:
            object.__setattr__(self, "data_dir", Path(self.data_dir).expanduser())
        object.__setattr__(self, "cache_dir", Path(self.cache_dir).expanduser())
        object.__setattr__(self, "system_dirs", tuple(Path(d).expanduser() for d in self.system_dirs))
        if self.mirrors is not None:
            object.__setattr__(self, "mirrors", _normalise_mirrors(self.mirrors))
        if self.max_npz_bytes <= 0:
            raise DataError("max_npz_bytes must be positive")
        if self.download_timeout <= 0:
            raise DataError("download_timeout must be positive")

    def mirrors_for(self, name: str) -> tuple[str, ...]:
        if self.mirrors is not None and name in self.mirrors:
            return tuple(self.mirrors[name])
        return DEFAULT_MIRRORS.get(name, ())


# --------------------------------------------------------------------------------------------
# Verified IDX files: local, cached or downloaded
# --------------------------------------------------------------------------------------------


def _known_file(name: str, filename: str) -> KnownFile:
    files = KNOWN_FILES.get(name)
    if files is None:
        raise DataError(f"'{name}' has no files to fetch (known: {sorted(KNOWN_FILES)})")
    if filename not in files:
        raise DataError(f"'{filename}' is not a file of '{name}' (files: {sorted(files)})")
    return files[filename]


def _check_sha256(data: bytes, expected: str, source: str, what: str) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ChecksumError(
            f"checksum mismatch for {source} ({what}): expected sha256 {expected}, got {actual}"
        )


def _verified_content(data: bytes, known: KnownFile, source: str) -> bytes:
    """Check the gzip bytes ``data`` against ``known``; return the decompressed content."""
    if known.gz_sha256:
        _check_sha256(data, known.gz_sha256, source, "gzip file")
    try:
        raw = gzip.decompress(data)  # checks the gzip CRC and length trailer too
    except (EOFError, OSError, zlib.error) as exc:
        raise ChecksumError(f"{source} is truncated or not a valid gzip file: {exc}") from exc
    if known.raw_sha256:
        _check_sha256(raw, known.raw_sha256, source, "decompressed content")
    return raw


def _read_local(path: Path, known: KnownFile, hint: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    try:
        return _verified_content(data, known, str(path))
    except ChecksumError as exc:
        raise ChecksumError(f"{exc}; {hint}") from exc


def _fetch_url(url: str, out: BinaryIO, timeout: float) -> int:
    """Stream ``url`` into ``out``; return the byte count. Raises OSError/HTTPException/DataError."""
    request = urllib.request.Request(url, headers={"User-Agent": "ganforge-datasets"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (http(s) only)
        declared = response.headers.get("Content-Length")
        received = 0
        while chunk := response.read(_CHUNK):
            received += len(chunk)
            if received > _MAX_DOWNLOAD_BYTES:
                raise DataError(f"more than {_MAX_DOWNLOAD_BYTES} bytes; not a dataset file")
            out.write(chunk)
    if declared is not None and declared.isdigit() and int(declared) != received:
        raise ChecksumError(f"truncated download: got {received} of {declared} bytes")
    return received


def _download(name: str, known: KnownFile, dest: Path, config: DataConfig) -> bytes:
    """Try each mirror in turn; keep the first verified copy at ``dest`` (atomically)."""
    mirrors = config.mirrors_for(name)
    where = f"{name}/{known.filename}"
    hint = f"put the file in {config.data_dir / name}/" if config.data_dir else "set a data dir"
    if name in DEBIAN_PACKAGES:
        hint += f", install Debian's {DEBIAN_PACKAGES[name]} (apt-get install {DEBIAN_PACKAGES[name]})"
    if not mirrors:
        raise DownloadError(f"{where} is not in the data or cache dir and no mirrors are configured ({hint})")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create the cache dir {dest.parent}: {exc}") from exc

    failures: list[tuple[str, Exception]] = []
    for base in mirrors:
        url = base.rstrip("/") + "/" + known.filename
        logger.info("downloading %s from %s", where, url)
        # The temp file sits next to dest so os.replace is an atomic rename: a reader never
        # sees a partial file, and a failed attempt leaves nothing behind.
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{known.filename}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                _fetch_url(url, out, config.download_timeout)
                out.flush()
                os.fsync(out.fileno())
            raw = _verified_content(tmp.read_bytes(), known, url)
            os.replace(tmp, dest)
            logger.info("saved %s to %s", where, dest)
            return raw
        except (OSError, http.client.HTTPException, DataError) as exc:
            logger.warning("download of %s from %s failed: %s", where, url, exc)
            failures.append((url, exc))
        finally:
            tmp.unlink(missing_ok=True)

    tried = "\n".join(f"  {url}: {exc}" for url, exc in failures)
    message = f"could not get {where} from any mirror ({hint} or configure mirrors); tried:\n{tried}"
    if all(isinstance(exc, ChecksumError) for _, exc in failures):
        raise ChecksumError(message)
    raise DownloadError(message)


def fetch_verified(name: str, filename: str, config: DataConfig) -> tuple[Path, bytes]:
    """The path of a verified copy of ``name/filename`` and its decompressed content."""
    known = _known_file(name, filename)
    for folder in ([config.data_dir] if config.data_dir is not None else []) + list(config.system_dirs):
        local = folder / name / filename
        if local.is_file():
            return local, _read_local(local, known, "replace it with an intact copy")
    cached = config.cache_dir / name / filename
    if cached.is_file():
        return cached, _read_local(cached, known, "delete it to download it again")
    dest = cached
    return dest, _download(name, known, dest, config)


def dataset_file(name: str, filename: str, config: DataConfig) -> Path:
    """Path of a verified copy of a dataset file: from the data dir, the cache, or downloaded."""
    path, _ = fetch_verified(name, filename, config)
    return path



def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while block := f.read(_CHUNK):
                digest.update(block)
    except OSError as exc:
        raise DataError(f"cannot read {os.fspath(path)}: {exc}") from exc
    return digest.hexdigest()

