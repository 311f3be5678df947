"""``image_folder``: a user's PNG/JPEG/WebP pictures, decoded once into a cache, sampled from it.

The source is a zip or tar archive or a folder (``gan_core.data.archive`` reads it without
trusting it). Every image is decoded with Pillow, its EXIF orientation applied, transparency
flattened onto white, converted to RGB or grayscale, resized and centre-cropped to
``image_size`` (``ImageOps.fit``; JPEGs are first decoded at a reduced DCT scale when they are
much larger). Files that are not images, or that fail to decode, are skipped and counted.

The decoded pixels go to ``<cache_dir>/image-folders/<key>/``: ``images.npy`` (N, C, H, W)
uint8, ``labels.npy`` (N,) int64 with ``labels: folders``, and ``meta.json`` (the summary).
The key is the source's sha256 plus the size, channels and label mode, so a second job on the
same archive decodes nothing; an entry appears atomically (built in a temporary folder beside
it and renamed), and nothing is written outside the cache folder.

Training samples from ``images.npy`` memory-mapped (the page cache keeps it in memory after the
first pass): a batch is one gather of uint8 rows and a conversion to float in [-1, 1] on the
target device. On a GPU, a set that fits ``resident_max_bytes`` is copied to the device once as
uint8 (a quarter of float32's memory) and batches never leave it.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import struct
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from gan_core.data.archive import IMAGE_FORMATS, ArchiveLimits, ArchiveReader, class_folders
from gan_core.data.errors import ArchiveError, DataError

logger = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when decoding changes: older entries are then ignored
CACHE_FOLDER = "image-folders"
MAX_PIXELS = 40_000_000  # a larger picture is skipped (Pillow's bomb guard starts at 89 M)
MAX_LABEL_CLASSES = 1000  # as many classes as the conditional networks embed (formats.MAX_CLASSES)
EVAL_EXAMPLES = 20_000  # labelled examples the domain classifier trains on, at most
_NPY_HEADER_BYTES = 256  # room for any (N, C, H, W) header; written once N is known
_DECODE_CHUNK = 256  # members read ahead and decoded in parallel


@dataclass(frozen=True)
class FolderSummary:
    """What a job used, for the job view: ``images`` decoded, ``skipped`` files (not images or
    failed to decode), class folders, the source's uncompressed bytes, cache hit or miss."""

    files: int
    images: int
    skipped: int
    classes: list[str] = field(default_factory=list)
    bytes: int = 0
    cache: str = "miss"  # "hit": decoded by an earlier job; "miss": decoded now
    sha256: str = ""
    image_size: int = 0
    channels: int = 3
    labels: str = "none"
    decode_seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PreparedFolder:
    entry: Path  # the cache entry: images.npy, labels.npy (labels: folders), meta.json
    summary: FolderSummary


# ---- decoding ------------------------------------------------------------------------------------


def decode_image(data: bytes, image_size: int, channels: int) -> np.ndarray | None:
    """One picture as (C, image_size, image_size) uint8, or None when it is not a readable
    PNG/JPEG/WebP (or has more than MAX_PIXELS pixels)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    mode = "RGB" if channels == 3 else "L"
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format not in IMAGE_FORMATS:
                return None
            width, height = image.size
            if width < 1 or height < 1 or width * height > MAX_PIXELS:
                return None
            if image.format == "JPEG":  # decode at 1/2, 1/4 or 1/8 scale while still >= the target
                image.draft(mode, (image_size, image_size))
            picture = ImageOps.exif_transpose(image)
            picture = _flattened(picture, mode)
            picture = ImageOps.fit(picture, (image_size, image_size), method=Image.Resampling.BICUBIC)
            pixels = np.asarray(picture, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
        return None
    except Exception:  # noqa: BLE001 - a damaged file can trip any decoder path (struct.error, IndexError)
        logger.debug("image decoder failed", exc_info=True)
        return None
    if channels == 1:
        return pixels[None]
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def _flattened(image, mode: str):
    """Transparent pixels over white (a sprite's background), then RGB or L."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    elif image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit / float grayscale: to 8 bits
        array = np.asarray(image, dtype=np.float64)
        high = array.max() or 1.0
        image = Image.fromarray((array * (255.0 / (65535.0 if high > 255 else 255.0))).clip(0, 255).astype(np.uint8))
    return image.convert(mode)


def _decode_count_workers() -> int:
    # Pillow releases the GIL while decoding and resampling: threads decode in parallel.
    return max(1, min(8, os.cpu_count() or 1))


# ---- cache entries -------------------------------------------------------------------------------


def cache_key(sha256: str, image_size: int, channels: int, labels: str) -> str:
    return f"{sha256}-{image_size}px-{channels}c-{labels}-v{CACHE_VERSION}"


def cache_entry(cache_dir: str | os.PathLike[str], key: str) -> Path:
    return Path(cache_dir) / CACHE_FOLDER / key


def is_entry(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a complete cache entry (the worker hands the trainer one)."""
    meta = Path(path) / "meta.json"
    return meta.is_file() and (Path(path) / "images.npy").is_file()


def read_meta(entry: Path) -> dict:
    try:
        meta = json.loads((entry / "meta.json").read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"the decoded dataset at {entry} is unreadable: {exc}") from None
    if not isinstance(meta, dict) or meta.get("version") != CACHE_VERSION:
        raise DataError(f"the decoded dataset at {entry} is of another version")
    return meta


def _npy_header(shape: tuple[int, ...]) -> bytes:
    """A .npy v1.0 header (numpy's format: magic, length, dict literal padded to the length)."""
    text = repr({"descr": "|u1", "fortran_order": False, "shape": tuple(int(s) for s in shape)}).encode("latin1")
    pad = _NPY_HEADER_BYTES - 10 - len(text) - 1
    if pad < 0:
        raise DataError(f"shape {shape} does not fit the .npy header")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", _NPY_HEADER_BYTES - 10) + text + b" " * pad + b"\n"


def source_digest(source: str | os.PathLike[str], limits: ArchiveLimits | None = None) -> str:
    """sha256 of an archive file; of a folder, sha256 over its files' names and contents."""
    path = Path(source)
    digest = hashlib.sha256()
    if path.is_dir():
        for name, data in ArchiveReader(path, limits):
            digest.update(name.encode() + b"\0")
            digest.update(hashlib.sha256(data or b"").digest())
        return digest.hexdigest()
    try:
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    except OSError as exc:
        raise DataError(f"cannot read the dataset {path}: {exc.strerror or exc}") from None
    return digest.hexdigest()


def _decoded(members: Iterator[tuple[str, bytes | None]], image_size: int, channels: int,
             pool: ThreadPoolExecutor) -> Iterator[tuple[str, np.ndarray | None]]:
    """(name, pixels or None) in archive order, decoded a chunk at a time on the pool."""
    chunk: list[tuple[str, bytes | None]] = []

    def flush() -> Iterator[tuple[str, np.ndarray | None]]:
        futures = [None if data is None else pool.submit(decode_image, data, image_size, channels)
                   for _, data in chunk]
        for (name, _), future in zip(chunk, futures):
            yield name, None if future is None else future.result()
        chunk.clear()

    for member in members:
        chunk.append(member)
        if len(chunk) >= _DECODE_CHUNK:
            yield from flush()
    yield from flush()


def find_prepared(cache_dir: str | os.PathLike[str], sha256: str, image_size: int, channels: int = 3,
                  labels: str = "none") -> PreparedFolder | None:
    """The cache entry of the source whose sha256 is given, if an earlier job decoded it (a
    damaged entry is removed and None returned: it is decoded again)."""
    entry = cache_entry(cache_dir, cache_key(sha256, image_size, channels, labels))
    if not is_entry(entry):
        return None
    try:
        meta = read_meta(entry)
        summary = FolderSummary(**{**meta["summary"], "cache": "hit", "decode_seconds": 0.0})
    except (DataError, KeyError, TypeError):
        logger.warning("image_folder cache entry %s is damaged; decoding again", entry)
        shutil.rmtree(entry, ignore_errors=True)
        return None
    logger.info("image_folder %s: %d images from the cache (%s)", sha256[:12], summary.images, entry)
    return PreparedFolder(entry, summary)


def prepare_folder(
    source: str | os.PathLike[str] | None,
    cache_dir: str | os.PathLike[str],
    image_size: int,
    channels: int = 3,
    labels: str = "none",
    limits: ArchiveLimits | None = None,
    sha256: str | None = None,
) -> PreparedFolder:
    """The cache entry of ``source`` (an archive or folder) at this size, channels and label
    mode, decoding it only when no earlier job did. With ``sha256`` given (an upload's recorded
    hash, an S3 listing's digest) a cached entry is found without reading ``source``, which
    may then be None."""
    if image_size < 1 or channels not in (1, 3) or labels not in ("none", "folders"):
        raise DataError("image_folder needs an image size, 1 or 3 channels and labels 'none' or 'folders'")
    if sha256 is None:
        if source is None:
            raise DataError("image_folder: neither a source nor its sha256 was given")
        sha256 = source_digest(source, limits)
    found = find_prepared(cache_dir, sha256, image_size, channels, labels)
    if found is not None:
        return found
    entry = cache_entry(cache_dir, cache_key(sha256, image_size, channels, labels))
    if source is None:
        raise DataError("image_folder: the dataset is not in the cache and no source was given")
    return _decode_into(Path(source), entry, sha256, image_size, channels, labels, limits or ArchiveLimits())


def _decode_into(source: Path, entry: Path, sha256: str, image_size: int, channels: int, labels: str,
                 limits: ArchiveLimits) -> PreparedFolder:
    started = time.perf_counter()
    entry.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        reader = ArchiveReader(source, limits)
        names: list[str] = []
        with (work / "images.npy").open("wb") as out, ThreadPoolExecutor(_decode_count_workers()) as pool:
            out.write(b"\0" * _NPY_HEADER_BYTES)
            for name, pixels in _decoded(iter(reader), image_size, channels, pool):
                if pixels is not None:
                    out.write(pixels.tobytes())
                    names.append(name)
            if not names:
                raise ArchiveError("empty", "the dataset holds no readable PNG, JPEG or WebP image")
            out.seek(0)
            out.write(_npy_header((len(names), channels, image_size, image_size)))
        classes, of = class_folders(names)
        if labels == "folders":
            _write_labels(work, classes, of)
        summary = FolderSummary(
            files=reader.files, images=len(names), skipped=reader.files - len(names), classes=classes,
            bytes=reader.bytes, cache="miss", sha256=sha256, image_size=image_size, channels=channels,
            labels=labels, decode_seconds=round(time.perf_counter() - started, 3),
        )
        (work / "meta.json").write_text(json.dumps({"version": CACHE_VERSION, "summary": summary.as_dict()}))
        try:
            os.rename(work, entry)  # atomic: readers see a whole entry or none
        except OSError:
            if not is_entry(entry):  # not a concurrent job's identical entry: a real failure
                raise
            logger.info("image_folder %s: another job decoded it first", sha256[:12])
        logger.info("image_folder %s: decoded %d images (%d skipped) in %.1f s into %s",
                    sha256[:12], summary.images, summary.skipped, summary.decode_seconds, entry)
        return PreparedFolder(entry, summary)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _write_labels(work: Path, classes: list[str], of: list[str | None]) -> None:
    outside = sum(c is None for c in of)
    if outside:
        raise ArchiveError("labels", f"labels 'folders': {outside} image(s) are not inside a class folder")
    if len(classes) > MAX_LABEL_CLASSES:
        raise ArchiveError("labels", f"labels 'folders': {len(classes)} class folders; at most {MAX_LABEL_CLASSES}")
    index = {name: i for i, name in enumerate(classes)}
    np.save(work / "labels.npy", np.array([index[c] for c in of], dtype=np.int64))


# ---- opening an entry ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FolderArrays:
    pixels: np.ndarray  # (N, C, H, W) uint8, memory-mapped copy-on-write (never written back)
    labels: np.ndarray | None  # (N,) int64 with labels 'folders'
    classes: list[str]
    summary: FolderSummary


def open_entry(entry: str | os.PathLike[str]) -> FolderArrays:
    """A cache entry's arrays, memory-mapped."""
    entry = Path(entry)
    meta = read_meta(entry)
    try:
        summary = FolderSummary(**meta["summary"])
        # mode "c": writable pages for torch.from_numpy, changes stay in memory, the file never changes
        pixels = np.load(entry / "images.npy", mmap_mode="c", allow_pickle=False)
        labels = np.load(entry / "labels.npy", allow_pickle=False) if summary.labels == "folders" else None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"the decoded dataset at {entry} is unreadable: {exc}") from None
    shape = (summary.images, summary.channels, summary.image_size, summary.image_size)
    if pixels.dtype != np.uint8 or pixels.shape != shape or (labels is not None and labels.shape != (shape[0],)):
        raise DataError(f"the decoded dataset at {entry} does not match its summary")
    return FolderArrays(pixels, labels, list(summary.classes), summary)


def load_folder(path: str | os.PathLike[str], cache_dir: str | os.PathLike[str], image_size: int, channels: int,
                labels: str, limits: ArchiveLimits | None = None) -> FolderArrays:
    """A job's image_folder: ``path`` is a cache entry (what the service's worker hands over) or
    a local archive or folder, decoded into ``cache_dir`` unless it already is."""
    if is_entry(path):
        arrays = open_entry(path)
        s = arrays.summary
        if (s.image_size, s.channels, s.labels) != (image_size, channels, labels):
            raise DataError(f"the decoded dataset at {path} is {s.image_size} px, {s.channels} channel(s), "
                            f"labels '{s.labels}'; the spec asks for {image_size} px, {channels}, '{labels}'")
        return arrays
    prepared = prepare_folder(path, cache_dir, image_size, channels, labels, limits)
    arrays = open_entry(prepared.entry)
    return FolderArrays(arrays.pixels, arrays.labels, arrays.classes, prepared.summary)


def folder_sha256(path: str | os.PathLike[str], limits: ArchiveLimits | None = None) -> str:
    """The content hash an image_folder path stands for (an entry records its source's)."""
    if is_entry(path):
        return read_meta(Path(path))["summary"]["sha256"]
    return source_digest(path, limits)
