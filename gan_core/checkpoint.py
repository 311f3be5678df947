"""Checkpoints: plain dicts of tensors and primitives, loadable with ``weights_only=True``.

A training checkpoint holds everything needed to resume bit-exactly: both networks, the EMA,
both optimizers, the step, every RNG state (torch, CUDA, numpy, python, the noise generator, the
data sampler) and the spec. A generator file (``final/generator.pt``) holds only what sampling
needs.
"""

from __future__ import annotations

import io
import os
import pickle
import random
import tempfile
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

TRAINING_FORMAT = "ganforge.checkpoint"
GENERATOR_FORMAT = "ganforge.generator"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """The file is corrupt, foreign, unsafe to unpickle, or does not fit the spec."""


def capture_rng() -> dict[str, Any]:
    """Global RNG states as tensors and primitives (numpy's tuple is split so no pickle is needed)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))


def to_bytes(checkpoint: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return buffer.getvalue()


def save(checkpoint: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write atomically: a crash mid-write never leaves a truncated checkpoint under the name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(checkpoint, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


MAX_NODES = 1_000_000  # containers and values in a loaded checkpoint, counting shared ones each time


def _check_bounded(data: Any, name: str) -> None:
    """Refuse a pickle bomb: a few KB of shared references (``x = [x] * 10``, sixty times) unpickle
    into a tiny object graph that anything walking it (validation, repr, a copy) would expand
    into 10**60 visits. Real checkpoints hold a few thousand entries."""
    stack, seen = [data], 0
    while stack:
        item = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            raise CheckpointError(f"{name}: refused to load: it holds more than {MAX_NODES} values (a pickle bomb?)")
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)


def load(source: str | os.PathLike[str] | bytes | BinaryIO, expect: str | None = None) -> dict[str, Any]:
    """Load a checkpoint or generator file safely (``weights_only=True``: no arbitrary code).

    ``expect`` is TRAINING_FORMAT or GENERATOR_FORMAT to insist on one kind.
    """
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    name = getattr(source, "name", None) or (str(source) if isinstance(source, (str, os.PathLike)) else "data")
    try:
        is_archive = zipfile.is_zipfile(source)
        if hasattr(source, "seek"):
            source.seek(0)
            head = source.read(4)
            source.seek(0)
        else:
            with open(source, "rb") as handle:
                head = handle.read(4)
    except FileNotFoundError:
        raise CheckpointError(f"{name}: no such checkpoint file") from None
    except OSError as exc:
        raise CheckpointError(f"{name}: cannot read ({exc})") from None
    if not is_archive:
        if head == b"PK\x03\x04":  # starts as a zip archive but its directory is missing
            raise CheckpointError(f"{name}: corrupt or truncated checkpoint")
        raise CheckpointError(f"{name}: not a ganforge checkpoint (not a PyTorch archive)")
    try:
        data = torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # weights_only refuses every global it does not know: a foreign or malicious pickle.
        raise CheckpointError(
            f"{name}: refused to load: it holds Python objects besides tensors and plain values, "
            "and ganforge never unpickles those"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise CheckpointError(f"{name}: corrupt or truncated checkpoint ({type(exc).__name__}: {exc})") from None
    _check_bounded(data, name)
    fmt = data.get("format") if isinstance(data, dict) else None
    if fmt not in (TRAINING_FORMAT, GENERATOR_FORMAT):
        raise CheckpointError(f"{name}: not a ganforge checkpoint")
    if data.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{name}: checkpoint format version {data.get('version')} is not supported")
    if expect is not None and fmt != expect:
        raise CheckpointError(f"{name}: expected a {expect} file, found {fmt}")
    return data
