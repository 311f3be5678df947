"""File formats: IDX (the MNIST family) and the user's .npz (x, optional y)."""

from __future__ import annotations

import io
import math
import os
import struct
import zipfile
from typing import BinaryIO, Literal

import numpy as np

from gan_core.data.errors import DataError
from gan_core.data.fetch import DataConfig, fetch_verified

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_SPLIT_SIZES = {"train": 60_000, "test": 10_000}
IDX_NUM_CLASSES = 10
# Largest label value + 1 accepted from a user's y (the conditional networks embed each class).
MAX_CLASSES = 1000


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
    images_path, images_raw = fetch_verified(name, images_file, config)
    labels_path, labels_raw = fetch_verified(name, labels_file, config)
    images = _parse_idx(images_raw, str(images_path), ndim=3)
    labels = _parse_idx(labels_raw, str(labels_path), ndim=1).astype(np.int64)
    expected = _SPLIT_SIZES[split]
    if images.shape != (expected, 28, 28) or labels.shape != (expected,):
        raise DataError(
            f"{name} {split}: expected {expected} 28x28 images and labels, "
            f"got images {images.shape} and labels {labels.shape}"
        )
    if labels.max() >= IDX_NUM_CLASSES:
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
