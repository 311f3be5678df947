"""Datasets in memory and the sampler, built from a spec; their fingerprint.

The whole training set lives in one tensor on the target device; ``Dataset.sample`` draws
indices with ``torch.randint`` from the dataset's own ``torch.Generator``, i.e. *with
replacement* (no epochs, no DataLoader, no per-step Python work). The generator state is the
only sampler state, so ``state_dict()``/``load_state_dict()`` make resumed runs bit-exact.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping
from typing import Any, BinaryIO, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gan_core.data.errors import DataError
from gan_core.data.fetch import KNOWN_FILES, DataConfig, file_sha256
from gan_core.data.formats import IDX_NUM_CLASSES, load_idx_split, load_npz
from gan_core.spec import DatasetSpec

logger = logging.getLogger(__name__)

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

    def labelled_examples(self) -> tuple[Tensor, Tensor]:
        """Images and labels on the CPU, for a domain classifier of the dataset's own classes."""
        if self.labels is None:
            raise DataError("this dataset has no labels")
        return self.images.cpu(), self.labels.cpu()


class PixelDataset(Dataset):
    """Images kept as uint8 (N, C, H, W) and made float32 in [-1, 1] one batch at a time.

    ``pixels`` is usually a memory-mapped array (an image_folder's cache entry): on the CPU,
    batches are gathered from it directly (the page cache holds it after the first pass); on
    another device a set up to ``resident_max_bytes`` is copied there once as uint8 (a quarter of
    float32's memory) so batches never cross the bus. Same sampler as ImageDataset."""

    kind: Literal["image", "points"] = "image"

    def __init__(
        self,
        pixels: np.ndarray,
        labels: np.ndarray | None,
        num_classes: int | None,
        device: torch.device | str = "cpu",
        seed: int = 0,
        resident_max_bytes: int = 8 * 1024**3,
        summary: Any = None,
    ) -> None:
        super().__init__(device, seed)
        if pixels.dtype != np.uint8 or pixels.ndim != 4:
            raise DataError(f"pixels must be uint8 (N, C, H, W), got {pixels.dtype} {pixels.shape}")
        resident = self.device.type != "cpu" and pixels.nbytes <= resident_max_bytes
        # On the device: one copy, batches gathered there. Otherwise the (memory-mapped) array
        # stays where it is and numpy gathers the rows: a few memcpy calls, where torch's
        # indexing of the same tensor is ~100x slower (per-element kernels, thread start-up).
        self.pixels = torch.from_numpy(pixels).to(self.device) if resident else None
        self.array = None if resident else pixels
        self.labels = torch.from_numpy(np.ascontiguousarray(labels)).to(self.device) if labels is not None else None
        self.num_classes = num_classes
        self.shape = tuple(pixels.shape[1:])
        self.summary = summary  # image_folder: what was decoded (gan_core.data.folder.FolderSummary)

    def __len__(self) -> int:
        return (self.pixels if self.pixels is not None else self.array).shape[0]

    def _gather(self, index: Tensor) -> tuple[Tensor, Tensor | None]:
        if self.pixels is not None:
            rows = self.pixels[index]  # (B, C, H, W) uint8, on the device
        else:
            rows = torch.from_numpy(np.take(self.array, index.cpu().numpy(), axis=0))
            if self.device.type == "cuda":
                rows = rows.pin_memory().to(self.device, non_blocking=True)
            elif rows.device != self.device:
                rows = rows.to(self.device)
        images = rows.float().div_(127.5).sub_(1.0)
        return images, None if self.labels is None else self.labels[index.to(self.device)]

    def sample(self, batch_size: int) -> tuple[Tensor, Tensor | None]:
        index = torch.randint(0, len(self), (batch_size,), generator=self.generator, device=self.device)
        return self._gather(index)

    def real_batch(self, n: int, seed: int) -> tuple[Tensor, Tensor | None]:
        return self._gather(_eval_indices(len(self), n, seed).to(self.device))

    def labelled_examples(self, limit: int = 20_000) -> tuple[Tensor, Tensor]:
        """Up to ``limit`` labelled examples on the CPU (a seeded pick), for a domain classifier."""
        if self.labels is None:
            raise DataError("this dataset has no labels")
        images, labels = self.real_batch(min(limit, len(self)), seed=0)
        return images.cpu(), labels.cpu()


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
    if spec.name == "stacked-mnist":  # three MNIST digits as RGB channels (gan_core/stacked_mnist.py)
        from gan_core.stacked_mnist import build_stacked_dataset

        return build_stacked_dataset(spec, config, device, seed)
    if spec.name == "image_folder":
        return _folder_dataset(spec, config, device, seed)

    if spec.name == "npz":
        source = npz_file if npz_file is not None else spec.path
        if source is None:
            raise DataError("the npz dataset needs a file")
        x, y = load_npz(source, config.max_npz_bytes, spec.channels)
        num_classes = int(y.max()) + 1 if y is not None else None
    elif spec.name == "cifar10":  # binary version (gan_core/data/cifar.py): (N, 3, 32, 32) uint8
        from gan_core.data.cifar import CLASSES, load_cifar_split

        x, y = load_cifar_split("train", config)
        num_classes = len(CLASSES)
    elif spec.name in KNOWN_FILES:
        images, y = load_idx_split(spec.name, "train", config)
        x = images[:, None]  # (N, 1, 28, 28)
        num_classes = IDX_NUM_CLASSES
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


def _folder_dataset(spec: DatasetSpec, config: DataConfig, device: torch.device, seed: int) -> PixelDataset:
    from gan_core.data.folder import load_folder

    if spec.path is None:
        raise DataError("an uploaded image_folder (upload_id) is fetched by the service; gan_core needs its path")
    arrays = load_folder(spec.path, config.cache_dir, spec.image_size, spec.channels or 3, spec.labels or "none",
                         config.archive_limits)
    pixels, labels = arrays.pixels, arrays.labels
    if spec.limit is not None:
        pixels = pixels[: spec.limit]
        labels = labels[: spec.limit] if labels is not None else None
    num_classes = len(arrays.classes) if labels is not None else None
    data = PixelDataset(pixels, labels, num_classes, device, seed, summary=arrays.summary)
    logger.info("dataset image_folder: %d images of shape %s (%d skipped, classes %s, cache %s)", len(data),
                data.shape, arrays.summary.skipped, arrays.classes or "none", arrays.summary.cache)
    return data


def load_test_images(
    spec: DatasetSpec, config: DataConfig, split: Literal["train", "test"] = "test", image_size: int | None = None
) -> tuple[Tensor, Tensor | None] | None:
    """A split (the test split by default): images (N, C, H, W) in [-1, 1] and int64 labels, on the
    CPU; None for datasets without a test split (npz, image folders, point mixtures). At native size
    unless ``image_size`` is given: then resized exactly as a dataset of that size resizes its images."""
    if spec.name == "cifar10":
        from gan_core.data.cifar import load_cifar_split

        images, labels = load_cifar_split(split, config)
        return _to_model_range(images, torch.device("cpu"), image_size), torch.from_numpy(labels)
    if spec.name not in KNOWN_FILES:
        return None
    images, labels = load_idx_split(spec.name, split, config)
    return _to_model_range(images[:, None], torch.device("cpu"), image_size), torch.from_numpy(labels)


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
    elif spec.name == "stacked-mnist":  # MNIST's files stacked with a fixed seed
        from gan_core.stacked_mnist import STACKED_SEED

        identity["files"] = {f.filename: f.raw_sha256 for f in KNOWN_FILES["mnist"].values()}
        identity["stack_seed"] = STACKED_SEED
    elif spec.name == "npz":
        if spec.path is None:
            raise DataError("the npz dataset needs a path to fingerprint")
        identity["sha256"] = file_sha256(spec.path)
    elif spec.name == "image_folder":
        from gan_core.data.folder import folder_sha256

        if spec.path is None:
            raise DataError("the image_folder dataset needs a path to fingerprint")
        identity.update(sha256=folder_sha256(spec.path, config.archive_limits), channels=spec.channels,
                        labels=spec.labels)
    else:
        centers, sigma = mixture_params(spec.name)
        identity["centers"] = centers.tolist()
        identity["sigma"] = sigma
    text = json.dumps(identity, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
