"""CIFAR-10 from its binary version (``cifar-10-binary.tar.gz``), never the pickled one.

The archive comes through the same machinery as MNIST (``fetch``): ``<data_dir>/cifar10/``,
then the cache, then the configured mirrors, its sha256 checked before anything is read
(``KNOWN_FILES["cifar10"]``). The published page gives only an md5
(c32a1d4ab5d03f1284b67883e8d87530) for the 170 052 171-byte file; the sha256 in ``fetch`` is the
one several independent projects pin for that same file (TensorFlow Datasets' url_checksums,
Julia's MLDatasets, gomlx), which agree with each other.

Format (the dataset's page): each of ``data_batch_1.bin`` .. ``data_batch_5.bin`` (train) and
``test_batch.bin`` (test) under ``cifar-10-batches-bin/`` is a run of 3073-byte records: the
label (0-9), then 1024 red, 1024 green and 1024 blue bytes of a 32x32 image in row-major order.
Only those six members are read from the tar (by name, regular files only); nothing is extracted.
"""

from __future__ import annotations

import io
import logging
import tarfile
from pathlib import Path
from typing import Literal

import numpy as np

from gan_core.data.errors import DataError
from gan_core.data.fetch import DataConfig, fetch_verified

logger = logging.getLogger(__name__)

NAME = "cifar10"
ARCHIVE = "cifar-10-binary.tar.gz"
FOLDER = "cifar-10-batches-bin"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
RECORD = 1 + 3 * 32 * 32
SPLITS = {"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test": ("test_batch.bin",)}

# The parsed splits of the last archive read (one process reads the same archive for training
# and for the evaluator's classifier): (path, size, mtime) -> {split: (images, labels)}.
_parsed: dict[tuple[str, int, int], dict[str, tuple[np.ndarray, np.ndarray]]] = {}


def parse_batch(raw: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 from one binary batch file."""
    if not raw or len(raw) % RECORD:
        raise DataError(f"{source}: {len(raw)} bytes is not a whole number of {RECORD}-byte CIFAR-10 records")
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= len(CLASSES):
        raise DataError(f"{source}: label {labels.max()} is out of range 0-9")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def parse_archive(raw_tar: bytes, source: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Both splits from the (decompressed) tar of the binary version."""
    wanted = {f"{FOLDER}/{name}": split for split, names in SPLITS.items() for name in names}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(raw_tar), mode="r:") as archive:
            for member in archive:
                if member.name in wanted and member.isreg():
                    reader = archive.extractfile(member)
                    found[member.name] = reader.read() if reader is not None else b""
    except tarfile.TarError as exc:
        raise DataError(f"{source} is not a readable tar archive: {exc}") from None
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise DataError(f"{source} lacks {', '.join(missing)}: is it the binary version ({ARCHIVE})?")
    splits = {}
    for split, names in SPLITS.items():
        parts = [parse_batch(found[f"{FOLDER}/{name}"], f"{source}:{name}") for name in names]
        splits[split] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return splits


def load_cifar_split(split: Literal["train", "test"], config: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 of a CIFAR-10 split (50 000 / 10 000
    in the real archive), from a verified copy of the binary version."""
    if split not in SPLITS:
        raise DataError(f"split must be 'train' or 'test', not {split!r}")
    for folder in (config.data_dir, config.cache_dir):  # a verified copy read before: reuse its parse
        if folder is None:
            continue
        path = folder / NAME / ARCHIVE
        key = _key(path)
        if key is not None and key in _parsed:
            return _parsed[key][split]
    path, raw = fetch_verified(NAME, ARCHIVE, config)  # checks the sha256, then decompresses
    splits = parse_archive(raw, str(path))
    key = _key(path)
    _parsed.clear()
    if key is not None:
        _parsed[key] = splits
    logger.info("cifar10: %d training and %d test images from %s", len(splits["train"][1]), len(splits["test"][1]), path)
    return splits[split]


def _key(path: Path) -> tuple[str, int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns
