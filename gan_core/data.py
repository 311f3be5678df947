"""Training data: the built-in datasets, user .npz files and a fast in-memory sampler.

Datasets
--------
* ``mnist``, ``fashion-mnist``: IDX (gzip) files. They are looked up in ``DataConfig.data_dir``
  (one folder per dataset: ``<data_dir>/mnist/train-images-idx3-ubyte.gz``), then in
  ``DataConfig.cache_dir`` (same layout), and only then downloaded from the configured mirrors
  into the cache. Every file is verified before use, see ``KNOWN_FILES``.
* ``ring8``, ``grid25``: 2-D Gaussian mixtures sampled on the fly (not rescaled: their
  coordinates span about [-2, 2] and [-4, 4]).
* ``npz``: the user's ``x`` (N×H×W or N×H×W×C, uint8 or float in [-1, 1]) and optional ``y``.

Images are float32 N×C×H×W in [-1, 1] (uint8 is mapped by ``x / 127.5 - 1``), resized once at
load time when the spec asks for another size.

Sampling
--------
The whole training set lives in one tensor on the target device; ``Dataset.sample`` draws
indices with ``torch.randint`` from the dataset's own ``torch.Generator``, i.e. *with
replacement* (no epochs, no DataLoader, no per-step Python work). The generator state is the
only sampler state, so ``state_dict()``/``load_state_dict()`` make resumed runs bit-exact.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import json
import logging
import math
import os
import struct
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gan_core.spec import DatasetSpec

logger = logging.getLogger(__name__)

__all__ = [
    "ChecksumError",
    "DataConfig",
    "DataError",
    "Dataset",
    "DownloadError",
    "ImageDataset",
    "KNOWN_FILES",
    "MixtureDataset",
    "build_dataset",
    "dataset_file",
    "dataset_fingerprint",
    "load_idx_split",
    "load_npz",
    "load_test_images",
    "mixture_params",
]


class DataError(ValueError):
    """Bad user data, or a spec that does not fit the data."""


class ChecksumError(DataError):
    """A dataset file whose sha256 does not match, or a truncated / corrupt gzip file."""


class DownloadError(DataError):
    """A dataset file that is neither local nor downloadable from any configured mirror."""


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


_IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_SPLIT_SIZES = {"train": 60_000, "test": 10_000}
_IDX_NUM_CLASSES = 10

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
    # Only the hashes of the published .gz files are known (TensorFlow Datasets,
    # url_checksums/fashion_mnist.txt; the same files torchvision pins by md5), so a
    # fashion-mnist copy must be byte-identical to the official gzip files.
    "fashion-mnist": {
        f.filename: f
        for f in (
            KnownFile(
                "train-images-idx3-ubyte.gz",
                gz_sha256="3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            ),
            KnownFile(
                "train-labels-idx1-ubyte.gz",
                gz_sha256="a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            ),
            KnownFile(
                "t10k-images-idx3-ubyte.gz",
                gz_sha256="346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            ),
            KnownFile(
                "t10k-labels-idx1-ubyte.gz",
                gz_sha256="67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            ),
        )
    },
}

DEFAULT_MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}

# A mirror sending more than this for a ~30 MB file is broken or hostile; stop filling the disk.
_MAX_DOWNLOAD_BYTES = 256 * 1024**2
_CHUNK = 1024 * 1024
# Largest label value + 1 accepted from a user's y (the conditional networks embed each class).
MAX_CLASSES = 1000


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
    cache_dir: Path = field(default_factory=_default_cache_dir)  # downloads land here
    mirrors: Mapping[str, Sequence[str]] | None = None  # per dataset; replaces DEFAULT_MIRRORS
    max_npz_bytes: int = 2 * 1024**3
    download_timeout: float = 60.0  # seconds, per connection attempt / read

    def __post_init__(self) -> None:
        # frozen: normalise through object.__setattr__
        if self.data_dir is not None:
            object.__setattr__(self, "data_dir", Path(self.data_dir).expanduser())
        object.__setattr__(self, "cache_dir", Path(self.cache_dir).expanduser())
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
    if not mirrors:
        raise DownloadError(f"{where} is not in the data or cache dir and no mirrors are configured")
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
    hint = f"put the file in {config.data_dir / name}/" if config.data_dir else "set a data dir"
    message = f"could not get {where} from any mirror ({hint} or configure mirrors); tried:\n{tried}"
    if all(isinstance(exc, ChecksumError) for _, exc in failures):
        raise ChecksumError(message)
    raise DownloadError(message)


def _fetch_verified(name: str, filename: str, config: DataConfig) -> tuple[Path, bytes]:
    """The path of a verified copy of ``name/filename`` and its decompressed content."""
    known = _known_file(name, filename)
    if config.data_dir is not None:
        local = config.data_dir / name / filename
        if local.is_file():
            return local, _read_local(local, known, "replace it with an intact copy")
    cached = config.cache_dir / name / filename
    if cached.is_file():
        return cached, _read_local(cached, known, "delete it to download it again")
    dest = cached
    return dest, _download(name, known, dest, config)


def dataset_file(name: str, filename: str, config: DataConfig) -> Path:
    """Path of a verified copy of a dataset file: from the data dir, the cache, or downloaded."""
    path, _ = _fetch_verified(name, filename, config)
    return path


def _parse_idx(raw: bytes, source: str, ndim: int) -> np.ndarray:
    """An IDX uint8 array (a read-only view of ``raw``, no copy)."""
    header = 4 + 4 * ndim
    if len(raw) < header or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{source} is not an IDX file")
    if raw[2] != 0x08 or raw[3] != ndim:
        raise DataError(f"{source}: expected a {ndim}-D uint8 IDX array, got type {raw[2]:#x}, {raw[3]}-D")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) != header + math.prod(dims):
        raise DataError(f"{source}: the header says {dims} but the file holds {len(raw) - header} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def load_idx_split(
    name: str, split: Literal["train", "test"], config: DataConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, 28, 28) and labels int64 (N,) of an IDX dataset split (read only)."""
    if split not in _IDX_FILES:
        raise DataError(f"split must be 'train' or 'test', not {split!r}")
    images_file, labels_file = _IDX_FILES[split]
    images_path, images_raw = _fetch_verified(name, images_file, config)
    labels_path, labels_raw = _fetch_verified(name, labels_file, config)
    images = _parse_idx(images_raw, str(images_path), ndim=3)
    labels = _parse_idx(labels_raw, str(labels_path), ndim=1).astype(np.int64)
    expected = _SPLIT_SIZES[split]
    if images.shape != (expected, 28, 28) or labels.shape != (expected,):
        raise DataError(
            f"{name} {split}: expected {expected} 28x28 images and labels, "
            f"got images {images.shape} and labels {labels.shape}"
        )
    if labels.max() >= _IDX_NUM_CLASSES:
        raise DataError(f"{labels_path}: label {labels.max()} is out of range 0-9")
    return images, labels


# --------------------------------------------------------------------------------------------
# User .npz files
# --------------------------------------------------------------------------------------------


def _source_size(source: str | os.PathLike[str] | BinaryIO) -> int | None:
    if isinstance(source, (str, os.PathLike)):
        try:
            return os.path.getsize(source)
        except OSError as exc:
            raise DataError(f"cannot read the npz file {os.fspath(source)}: {exc}") from exc
    try:
        position = source.tell()
        size = source.seek(0, io.SEEK_END) - position
        source.seek(position)
        return size
    except (OSError, AttributeError, ValueError):
        return None


def _check_x(x: np.ndarray, channels: int | None) -> np.ndarray:
    """Validate the user's images; return them as (N, C, H, W) uint8 or float32."""
    if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"x must be uint8 (0-255) or float in [-1, 1], not {x.dtype}")
    if x.ndim not in (3, 4):
        raise DataError(f"x must be N×H×W or N×H×W×C, got shape {x.shape}")
    if x.shape[0] == 0 or x.size == 0:
        raise DataError(f"x is empty (shape {x.shape})")
    if x.ndim == 3:
        x = x[:, :, :, None]
    n, h, w, c = x.shape
    if c not in (1, 3):
        hint = " (looks channels-first; store N×H×W×C)" if x.shape[1] in (1, 3) else ""
        raise DataError(f"x must have 1 or 3 channels in its last axis, got shape {x.shape}{hint}")
    if channels is not None and c != channels:
        raise DataError(f"the spec asks for {channels} channel(s) but x has {c} (shape {x.shape})")
    if h != w:
        raise DataError(f"images must be square, got {h}×{w}")
    if not 8 <= h <= 64:
        raise DataError(f"image size must be between 8 and 64 pixels, got {h}×{w}")
    if x.dtype != np.uint8:
        if not np.isfinite(x).all():
            raise DataError("x contains NaN or infinite values")
        low, high = float(x.min()), float(x.max())
        if low < -1.0 or high > 1.0:
            raise DataError(f"float x must lie in [-1, 1], got values from {low:g} to {high:g}")
        x = x.astype(np.float32, copy=False)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _check_y(y: np.ndarray, n: int) -> np.ndarray:
    if y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"y must hold integer class labels, not {y.dtype}")
    if y.ndim != 1 or y.shape[0] != n:
        raise DataError(f"y must have shape ({n},) to match x, got {y.shape}")
    if y.min() < 0:
        raise DataError(f"labels must be >= 0, got {y.min()}")
    if y.max() >= MAX_CLASSES:
        raise DataError(f"labels must be below {MAX_CLASSES}, got {y.max()}")
    return y.astype(np.int64)


def load_npz(
    source: str | os.PathLike[str] | BinaryIO,
    max_bytes: int = 2 * 1024**3,
    channels: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate a user .npz: x as (N, C, H, W) uint8 or float32 in [-1, 1], y int64 or None."""
    size = _source_size(source)
    if size is not None and size > max_bytes:
        raise DataError(f"the npz file has {size} bytes; the limit is {max_bytes}")
    if size == 0:
        raise DataError("the npz file is empty")
    try:
        archive = np.load(source, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"not a readable .npz file: {exc}") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError("expected a .npz archive (np.savez) holding 'x', not a single .npy array")
    with archive:
        if "x" not in archive.files:
            raise DataError(f"the npz file must hold an array 'x' (it holds {archive.files})")
        # A compressed archive can expand far beyond its size on disk: check the sizes the
        # zip declares (zipfile never reads past them) before loading anything.
        declared = 0
        for key in ("x", "y"):
            if key in archive.files:
                try:
                    declared += archive.zip.getinfo(f"{key}.npy").file_size
                except KeyError:
                    pass
        if declared > max_bytes:
            raise DataError(f"the arrays in the npz file take {declared} bytes; the limit is {max_bytes}")
        try:
            x = archive["x"]
            y = archive["y"] if "y" in archive.files else None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"cannot read the arrays of the npz file: {exc}") from exc
    x = _check_x(x, channels)
    if y is not None:
        y = _check_y(y, x.shape[0])
    return x, y


# --------------------------------------------------------------------------------------------
# Gaussian mixtures
# --------------------------------------------------------------------------------------------


def mixture_params(name: str) -> tuple[Tensor, float]:
    """Mode centers (K, 2) float32 on the CPU and the per-axis standard deviation."""
    if name == "ring8":
        angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
        centers = 2.0 * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
        return centers.float(), 0.02
    if name == "grid25":
        axis = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0])
        centers = torch.cartesian_prod(axis, axis)
        return centers, 0.05
    raise DataError(f"'{name}' is not a Gaussian mixture (ring8, grid25)")


# --------------------------------------------------------------------------------------------
# Datasets and the sampler
# --------------------------------------------------------------------------------------------


def _eval_indices(total: int, n: int, seed: int) -> Tensor:
    """n indices, each example at most once per pass (several passes when n > total)."""
    generator = torch.Generator().manual_seed(seed)
    passes = -(-n // total)
    return torch.cat([torch.randperm(total, generator=generator) for _ in range(passes)])[:n]


class Dataset:
    """What the trainer samples from. ``sample`` draws with replacement from the generator."""

    kind: Literal["image", "points"]
    shape: tuple[int, ...]
    num_classes: int | None

    def __init__(self, device: torch.device | str, seed: int) -> None:
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)

    def sample(self, batch_size: int) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def real_batch(self, n: int, seed: int) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def state_dict(self) -> dict:
        # A CPU uint8 tensor (also for CUDA generators): loadable with weights_only=True.
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        rng = state.get("generator") if isinstance(state, Mapping) else None
        if not isinstance(rng, Tensor):
            raise ValueError("sampler state must hold the 'generator' state tensor")
        try:
            self.generator.set_state(rng.to(device="cpu", dtype=torch.uint8))
        except RuntimeError as exc:
            raise ValueError(f"sampler state does not fit this device's generator: {exc}") from exc


class ImageDataset(Dataset):
    """A whole image training set in memory: images (N, C, H, W) float32 in [-1, 1]."""

    kind: Literal["image", "points"] = "image"

    def __init__(
        self,
        images: Tensor,
        labels: Tensor | None,
        num_classes: int | None,
        device: torch.device | str = "cpu",
        seed: int = 0,
    ) -> None:
        super().__init__(device, seed)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device) if labels is not None else None
        self.num_classes = num_classes
        self.shape = tuple(self.images.shape[1:])

    def __len__(self) -> int:
        return self.images.shape[0]

    def sample(self, batch_size: int) -> tuple[Tensor, Tensor | None]:
        index = torch.randint(
            0, len(self), (batch_size,), generator=self.generator, device=self.device
        )
        return self.images[index], None if self.labels is None else self.labels[index]

    def real_batch(self, n: int, seed: int) -> tuple[Tensor, Tensor | None]:
        # Own CPU generator: the same examples on every device, and the training RNG untouched.
        index = _eval_indices(len(self), n, seed).to(self.device)
        return self.images[index], None if self.labels is None else self.labels[index]


class MixtureDataset(Dataset):
    """Points (2,) from a mixture of equal-weight isotropic Gaussians; no labels."""

    kind: Literal["image", "points"] = "points"

    def __init__(self, name: str, device: torch.device | str = "cpu", seed: int = 0) -> None:
        super().__init__(device, seed)
        centers, sigma = mixture_params(name)
        self.name = name
        self.centers = centers.to(self.device)  # (K, 2)
        self.sigma = sigma
        self.shape = (2,)
        self.num_classes = None

    @staticmethod
    def _draw(centers: Tensor, sigma: float, n: int, generator: torch.Generator) -> Tensor:
        mode = torch.randint(0, centers.shape[0], (n,), generator=generator, device=centers.device)
        noise = torch.randn((n, 2), generator=generator, device=centers.device)
        return centers[mode] + sigma * noise

    def sample(self, batch_size: int) -> tuple[Tensor, Tensor | None]:
        return self._draw(self.centers, self.sigma, batch_size, self.generator), None

    def real_batch(self, n: int, seed: int) -> tuple[Tensor, Tensor | None]:
        generator = torch.Generator().manual_seed(seed)
        return self._draw(self.centers.cpu(), self.sigma, n, generator).to(self.device), None


def _to_model_range(x: np.ndarray, device: torch.device, image_size: int | None) -> Tensor:
    """(N, C, H, W) uint8 or float32 in [-1, 1] -> float32 on ``device``, resized to image_size."""
    if not x.flags.writeable:  # IDX arrays are views of immutable bytes; torch wants writable
        x = x.copy()
    source = torch.from_numpy(x).to(device)  # move the compact uint8 before widening to float
    n, c, h, w = source.shape
    resize = image_size is not None and image_size != h
    if source.dtype == torch.float32 and not resize:
        return source
    size = image_size if resize else h
    out = torch.empty((n, c, size, size), dtype=torch.float32, device=device)
    chunk = 4096  # bounds the float temporaries of the conversion
    for start in range(0, n, chunk):
        part = source[start : start + chunk].float()
        if source.dtype == torch.uint8:
            part = part.div_(127.5).sub_(1.0)
        if resize:
            part = F.interpolate(
                part, size=(size, size), mode="bilinear", antialias=True, align_corners=False
            ).clamp_(-1.0, 1.0)
        out[start : start + chunk] = part
    return out


def build_dataset(
    spec: DatasetSpec,
    config: DataConfig,
    device: torch.device | str = "cpu",
    seed: int = 0,
    npz_file: BinaryIO | None = None,
) -> Dataset:
    """The training set of ``spec`` on ``device``, its sampler seeded with ``seed``.

    For npz, ``npz_file`` (an open binary file) is read instead of ``spec.path`` when given.
    """
    device = torch.device(device)
    if npz_file is not None and spec.name != "npz":
        raise DataError(f"an npz file was given but the dataset is '{spec.name}'")
    if spec.name in ("ring8", "grid25"):
        return MixtureDataset(spec.name, device, seed)

    if spec.name == "npz":
        source = npz_file if npz_file is not None else spec.path
        if source is None:
            raise DataError("the npz dataset needs a file")
        x, y = load_npz(source, config.max_npz_bytes, spec.channels)
        num_classes = int(y.max()) + 1 if y is not None else None
    elif spec.name in KNOWN_FILES:
        images, y = load_idx_split(spec.name, "train", config)
        x = images[:, None]  # (N, 1, 28, 28)
        num_classes = _IDX_NUM_CLASSES
    else:
        raise DataError(f"unknown dataset '{spec.name}'")

    if spec.limit is not None:
        if spec.limit > x.shape[0]:
            logger.info("limit %d exceeds the %d examples of %s", spec.limit, x.shape[0], spec.name)
        x = x[: spec.limit]
        y = y[: spec.limit] if y is not None else None
    images = _to_model_range(x, device, spec.image_size)
    labels = torch.from_numpy(np.ascontiguousarray(y)) if y is not None else None
    logger.info("dataset %s: %d images of shape %s on %s", spec.name, images.shape[0], tuple(images.shape[1:]), device)
    return ImageDataset(images, labels, num_classes, device, seed)


def load_test_images(
    spec: DatasetSpec, config: DataConfig, split: Literal["train", "test"] = "test"
) -> tuple[Tensor, Tensor | None] | None:
    """A split (the test split by default) at native size: images (N, 1, 28, 28) in [-1, 1] and
    int64 labels, on the CPU; None for datasets without a test split (npz, point mixtures)."""
    if spec.name not in KNOWN_FILES:
        return None
    images, labels = load_idx_split(spec.name, split, config)
    return _to_model_range(images[:, None], torch.device("cpu"), None), torch.from_numpy(labels)


def _file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while block := f.read(_CHUNK):
                digest.update(block)
    except OSError as exc:
        raise DataError(f"cannot read {os.fspath(path)}: {exc}") from exc
    return digest.hexdigest()


def dataset_fingerprint(spec: DatasetSpec, config: DataConfig) -> str:
    """A short stable hash of the training data as the networks see it (content, image size,
    limit), e.g. to cache a classifier. Reads the file for npz; uses known hashes otherwise."""
    identity: dict[str, object] = {
        "version": 1,  # bump when the preprocessing changes
        "name": spec.name,
        "image_size": spec.image_size,
        "limit": spec.limit,
    }
    if spec.name in KNOWN_FILES:
        identity["files"] = {
            f.filename: f.raw_sha256 or f.gz_sha256 for f in KNOWN_FILES[spec.name].values()
        }
    elif spec.name == "npz":
        if spec.path is None:
            raise DataError("the npz dataset needs a path to fingerprint")
        identity["sha256"] = _file_sha256(spec.path)
    else:
        centers, sigma = mixture_params(spec.name)
        identity["centers"] = centers.tolist()
        identity["sigma"] = sigma
    text = json.dumps(identity, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
