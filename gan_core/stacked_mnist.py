"""Stacked MNIST: the 1000-mode benchmark of mode collapse (Metz et al. 2017, Unrolled GAN;
Srivastava et al. 2017, VEEGAN; Lin et al. 2018, PacGAN).

Data
----
Each image stacks three MNIST training digits, drawn independently and uniformly, as its three
channels: 3×28×28, the digits' native size (as in VEEGAN's and PacGAN's setting; the per-channel
classifier then reads each channel without resampling, and 28×28 costs a DCGAN on a CPU ~25 %
less than 32×32 — ``dataset.image_size`` 32 or 64 resizes as for MNIST). Its mode is the triple
of digits, ``100·d_R + 10·d_G + d_B``: 1000 modes. The set is a deterministic function of the
seed (``STACKED_SEED`` for every job, so every job trains and is scored on the same data): from
the MNIST training split, ``STACKED_TRAIN_SIZE`` images (``dataset.limit`` takes fewer); the
evaluation's real reference stacks the test split the same way.

Evaluation (``evaluate_stacked``)
---------------------------------
Each channel of a sample is classified by the MNIST domain classifier (``gan_core.quality``):

* ``modes``: modes (digit triples) that receive at least one sample, out of ``n_modes`` = 1000;
* ``reverse_kl``: KL(p_G || uniform) over the 1000 modes, p_G the share of samples per mode
  (PacGAN's figure; empty modes contribute nothing, one mode alone gives log 1000 = 6.91).
  26 000 samples, the standard protocol, leave a perfect sampler at about (K − 1) / 2N = 0.02;
* ``domain_fid``, ``kid``, precision / recall / density / coverage in the space of the three
  channels' classifier features side by side (3 × 128 = 384-d), against the stacked test split.

Published figures in PacGAN's setting (Lin et al. 2018; as quoted in ganforge issue 13): DCGAN 99
modes, PacDCGAN2 1000 modes with KL 0.08.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gan_core import quality
from gan_core.quality import DomainClassifier

log = logging.getLogger(__name__)

NAME = "stacked-mnist"
N_MODES = 1000
CHANNELS = 3
STACKED_SEED = 0  # the one seed of the built-in dataset (the data never depends on the job)
STACKED_TRAIN_SIZE = 60_000
STACKED_TEST_SIZE = 10_000
STANDARD_EVAL_SAMPLES = 26_000  # PacGAN / VEEGAN / Unrolled GAN protocol


def stack_digits(images: np.ndarray, labels: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` stacked images (n, 3, H, W) of the dtype of ``images`` (N, H, W), and their modes (n,).

    Channel c of image i is ``images[index[i, c]]``, the indices drawn uniformly with replacement
    by a numpy generator seeded with ``seed``: the same inputs and seed give the same set.
    """
    if images.ndim != 3 or len(images) != len(labels):
        raise ValueError(f"need N×H×W images and N labels, got {images.shape} and {labels.shape}")
    index = np.random.default_rng(seed).integers(0, len(images), size=(n, CHANNELS))
    stacked = images[index]  # (n, 3, H, W)
    digits = labels[index].astype(np.int64)
    return np.ascontiguousarray(stacked), mode_of(digits)


def mode_of(digits: np.ndarray | Tensor) -> Any:
    """(n, 3) digits → (n,) mode ids 100·d0 + 10·d1 + d2 (numpy or torch, as given)."""
    return digits[:, 0] * 100 + digits[:, 1] * 10 + digits[:, 2]


def load_stacked(split: str, config: Any, n: int | None = None, seed: int = STACKED_SEED) -> tuple[np.ndarray, np.ndarray]:
    """The stacked set of an MNIST split ('train' or 'test'): uint8 (n, 3, 28, 28) and modes (n,)."""
    from gan_core.data import load_idx_split

    images, labels = load_idx_split("mnist", split, config)
    size = n if n is not None else (STACKED_TRAIN_SIZE if split == "train" else STACKED_TEST_SIZE)
    # The test set gets its own stream, so changing one split's size never changes the other.
    return stack_digits(images, labels, size, seed if split == "train" else seed + 1)


def build_stacked_dataset(spec: Any, config: Any, device: torch.device, seed: int) -> Any:
    """The training ImageDataset of a ``stacked-mnist`` spec (``limit`` caps its size).

    Its labels are the mode ids, kept for inspection; the spec refuses conditioning on them.
    """
    from gan_core.data.datasets import ImageDataset, _to_model_range

    size = STACKED_TRAIN_SIZE if spec.limit is None else min(spec.limit, STACKED_TRAIN_SIZE)
    x, modes = load_stacked("train", config, size)
    images = _to_model_range(x, device, spec.image_size)
    log.info("dataset %s: %d images of shape %s on %s", NAME, len(images), tuple(images.shape[1:]), device)
    return ImageDataset(images, torch.from_numpy(modes), None, device, seed)


def stacked_test_images(config: Any) -> Tensor:
    """The stacked test split as float32 (10 000, 3, 28, 28) in [-1, 1] on the CPU."""
    x, _ = load_stacked("test", config)
    return torch.from_numpy(x).float().div_(127.5).sub_(1.0)


@torch.no_grad()
def channel_predictions(samples: Tensor, classifier: DomainClassifier) -> tuple[Tensor, Tensor]:
    """Per-channel features (N, 3·128) side by side and predicted digits (N, 3) of N×3×H×W samples."""
    if samples.ndim != 4 or samples.shape[1] != CHANNELS:
        raise ValueError(f"stacked MNIST samples must be N×3×H×W, got {tuple(samples.shape)}")
    features, digits = [], []
    for c in range(CHANNELS):
        channel = quality._fit_to_classifier(samples[:, c : c + 1], classifier)
        f, logits = quality._predict(classifier, channel)
        features.append(f)
        digits.append(logits.argmax(dim=1))
    return torch.cat(features, dim=1), torch.stack(digits, dim=1)


def mode_figures(modes: Tensor | np.ndarray, n_modes: int = N_MODES) -> dict[str, Any]:
    """Modes covered and KL(p || uniform) of a sequence of mode ids."""
    ids = torch.as_tensor(modes).long().cpu()
    counts = torch.bincount(ids, minlength=n_modes).double()
    n = float(counts.sum())
    p = counts[counts > 0] / n
    kl = float((p * torch.log(p * n_modes)).sum()) if n else math.log(n_modes)
    return {"modes": int((counts > 0).sum()), "n_modes": n_modes, "reverse_kl": max(kl, 0.0)}


def evaluate_stacked(samples: Tensor, classifier: DomainClassifier, real: Tensor) -> dict[str, Any]:
    """Modes covered, reverse KL and the feature-space figures of N×3×H×W samples in [-1, 1]
    (see the module docstring); ``real`` is the stacked test split."""
    if len(samples) < 2 or len(real) < 2:
        raise ValueError("need at least 2 samples and 2 real images")
    if classifier.in_channels != 1:
        raise ValueError("stacked MNIST is scored with the one-channel MNIST classifier")
    sample_features, digits = channel_predictions(samples, classifier)
    real_features, _ = channel_predictions(real, classifier)
    results: dict[str, Any] = mode_figures(mode_of(digits))
    results["domain_fid"] = quality.frechet_distance(
        *quality.feature_statistics(sample_features), *quality.feature_statistics(real_features)
    )
    results.update(quality.distribution_figures(sample_features, real_features))
    results["n_samples"] = len(samples)
    return results
