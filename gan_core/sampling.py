"""Samples from a checkpoint or a final generator file: arrays in data space, grids, interpolations
(and the per-job interpolation strip, ``interpolation_png``)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, BinaryIO, Sequence

import numpy as np
import torch
from torch import nn

from gan_core import checkpoint as ckpt
from gan_core import rejection as rejection_sampling
from gan_core.models import build_discriminator, build_generator
from gan_core.rejection import Rejector, build_rejector, chunk_size
from gan_core.spec import JobSpec, stored_spec

MAX_SAMPLES = 100_000


@dataclass
class LoadedGenerator:
    module: nn.Module
    spec: JobSpec
    data_shape: tuple[int, ...]
    num_classes: int | None
    step: int
    rejector: Rejector | None = None  # discriminator rejection sampling (spec.sampling.rejection)

    @property
    def is_points(self) -> bool:
        return len(self.data_shape) == 1


def load_generator(source: dict[str, Any] | str | os.PathLike[str] | bytes | BinaryIO, device: str = "cpu") -> LoadedGenerator:
    """Build the sampling network (the EMA when the checkpoint has one) in eval mode."""
    data = source if isinstance(source, dict) else ckpt.load(source)
    spec = stored_spec(data["spec"])
    shape = tuple(int(d) for d in data["data_shape"])
    num_classes = data.get("num_classes")
    module = build_generator(spec.model, shape, num_classes)
    if data["format"] == ckpt.TRAINING_FORMAT and data.get("ema") is not None:
        weights = data["ema"]
    else:
        weights = data["generator"]
    try:
        module.load_state_dict(weights)
    except RuntimeError as exc:
        raise ckpt.CheckpointError(f"generator weights do not fit the spec: {exc}") from None
    module.to(device).eval()
    rejector = _load_rejector(data, spec, module, shape, num_classes, device)
    return LoadedGenerator(module, spec, shape, num_classes, int(data["step"]), rejector)


def _load_rejector(data: dict[str, Any], spec: JobSpec, generator: nn.Module, shape: tuple[int, ...],
                   num_classes: int | None, device: str) -> Rejector | None:
    """A generator file carries its discriminator and threshold; a training checkpoint its D (the
    threshold is then computed here, as the trainer does)."""
    if spec.sampling.rejection == "none":
        return None
    stored = data.get("rejection") if data["format"] == ckpt.GENERATOR_FORMAT else {"discriminator": data.get("discriminator")}
    if not isinstance(stored, dict) or not isinstance(stored.get("discriminator"), dict):
        raise ckpt.CheckpointError("the spec asks for rejection sampling, but the file holds no discriminator")
    discriminator = build_discriminator(spec.model, shape, num_classes, spec.loss)
    try:
        discriminator.load_state_dict(stored["discriminator"])
    except RuntimeError as exc:
        raise ckpt.CheckpointError(f"discriminator weights do not fit the spec: {exc}") from None
    discriminator.to(device).eval()
    threshold = stored.get("threshold")
    if isinstance(threshold, (int, float)) and math.isfinite(threshold):
        return Rejector(discriminator, float(threshold), chunk_size(discriminator, spec.train.batch_size))
    return build_rejector(generator, discriminator, spec.sampling.rejection_quantile, spec.train.batch_size, num_classes)


def _labels(loaded: LoadedGenerator, n: int, labels: Sequence[int] | int | None, device: str) -> torch.Tensor | None:
    k = loaded.num_classes
    if not k:
        if labels is not None:
            raise ValueError("labels were given, but this generator is not conditional")
        return None
    if labels is None:
        values = [i % k for i in range(n)]
    elif isinstance(labels, int):
        values = [labels] * n
    else:
        values = list(labels)
        if len(values) != n:
            raise ValueError(f"{len(values)} labels were given for {n} samples")
    bad = [v for v in values if not isinstance(v, (int, np.integer)) or not 0 <= v < k]
    if bad:
        raise ValueError(f"labels must be integers in [0, {k - 1}]; got {bad[:5]}")
    return torch.tensor(values, dtype=torch.long, device=device)


@torch.no_grad()
def generate(
    source: LoadedGenerator | dict[str, Any] | str | os.PathLike[str] | bytes,
    n: int,
    seed: int = 0,
    labels: Sequence[int] | int | None = None,
    device: str = "cpu",
    batch_size: int = 1024,
    rejection: bool = True,
) -> np.ndarray:
    """``n`` samples as float32 in data space: N×C×H×W for images, N×2 for the 2-D mixtures.

    The same (checkpoint, n, seed, labels, rejection) always gives the same samples. When the spec
    asks for ``sampling.rejection``, samples go through discriminator rejection sampling unless
    ``rejection`` is False (the raw generator's samples).
    """
    if not 1 <= n <= MAX_SAMPLES:
        raise ValueError(f"n must be between 1 and {MAX_SAMPLES}")
    loaded = source if isinstance(source, LoadedGenerator) else load_generator(source, device)
    y = _labels(loaded, n, labels, device)
    gen = torch.Generator().manual_seed(seed)
    if rejection and loaded.rejector is not None:
        kept, _ = rejection_sampling.sample(loaded.module, loaded.rejector, n, gen, y.cpu() if y is not None else None)
        return kept.numpy()
    z = loaded.module.sample_latent(n, gen)
    out = []
    for start in range(0, n, batch_size):
        zb = z[start : start + batch_size].to(device)
        yb = y[start : start + batch_size] if y is not None else None
        out.append(loaded.module(zb, yb).float().cpu())
    return torch.cat(out).numpy()


def _slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    # Spherical interpolation keeps intermediate latents at a typical Gaussian norm (White, 2016).
    a_n, b_n = a / a.norm(), b / b.norm()
    omega = torch.arccos(torch.clamp((a_n * b_n).sum(), -1.0, 1.0))
    if omega.abs() < 1e-6:
        return torch.lerp(a, b, t)
    so = torch.sin(omega)
    return (torch.sin((1.0 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


@torch.no_grad()
def interpolate(
    source: LoadedGenerator | dict[str, Any] | str | os.PathLike[str] | bytes,
    seed_a: int,
    seed_b: int,
    steps: int = 8,
    label: int | None = None,
    spherical: bool = True,
    device: str = "cpu",
) -> np.ndarray:
    """Samples along a path between the latent points of two seeds (``steps`` including ends)."""
    if not 2 <= steps <= 64:
        raise ValueError("steps must be between 2 and 64")
    loaded = source if isinstance(source, LoadedGenerator) else load_generator(source, device)
    za = loaded.module.sample_latent(1, torch.Generator().manual_seed(seed_a))[0]
    zb = loaded.module.sample_latent(1, torch.Generator().manual_seed(seed_b))[0]
    ts = torch.linspace(0.0, 1.0, steps)
    path = torch.stack([_slerp(za, zb, t) if spherical else torch.lerp(za, zb, t) for t in ts]).to(device)
    y = _labels(loaded, steps, label, device) if loaded.num_classes else None
    return loaded.module(path, y).float().cpu().numpy()


def samples_png(samples: np.ndarray, nrow: int | None = None) -> bytes:
    """A PNG of samples: an image grid, or a scatter plot for 2-D points."""
    from gan_core import images

    if samples.ndim == 2:
        return images.scatter_png(samples)
    return images.grid_png(samples, nrow=nrow or max(1, round(math.sqrt(len(samples)))))


STRIP_ROWS = 4  # latent paths in an unconditional job's strip
STRIP_STEPS = 10  # images along each path, ends included
MAX_STRIP_ROWS = 20  # conditional: one row per class, at most this many classes


def interpolation_png(
    source: LoadedGenerator | dict[str, Any] | str | os.PathLike[str] | bytes,
    rows: int = STRIP_ROWS,
    steps: int = STRIP_STEPS,
    seed: int = 0,
) -> bytes:
    """A job's interpolation strip: rows of images along spherical latent paths.

    Unconditional: ``rows`` paths, row r from the latent of seed ``seed + 2r`` to that of
    ``seed + 2r + 1``. Conditional: one row per class (the first ``MAX_STRIP_ROWS``), all along the
    same path, so the rows show what the label changes and the columns what z changes. For 2-D
    points, the paths' points on a scatter plot. Always the raw generator (no rejection sampling).
    """
    from gan_core import images

    loaded = source if isinstance(source, LoadedGenerator) else load_generator(source)
    if loaded.num_classes:
        paths = [interpolate(loaded, seed, seed + 1, steps, label=c) for c in range(min(loaded.num_classes, MAX_STRIP_ROWS))]
    else:
        paths = [interpolate(loaded, seed + 2 * r, seed + 2 * r + 1, steps) for r in range(rows)]
    samples = np.concatenate(paths)
    if loaded.is_points:
        return images.scatter_png(samples)
    return images.grid_png(samples, nrow=steps)
