"""Objective quality figures for generated samples.

2-D mixtures (ring8, grid25) — ``evaluate_mixture``, following VEEGAN (Srivastava et al., 2017) and
PacGAN (Lin et al., 2018):

* every sample is assigned to its nearest mode centre; it is *high quality* (HQ) when it lies within
  3 sigma (Euclidean distance) of that centre. For a perfect sampler this is P(r <= 3 sigma) of a
  2-D isotropic Gaussian, 1 - exp(-4.5) = 98.9 % (not the 1-D 99.7 %);
* ``modes``: modes whose nearest-centre assignment holds at least one HQ sample (VEEGAN's count of
  captured modes); ``modes_min10``: the stricter count of modes with at least 10 HQ samples;
* ``hq_percent``: the percentage of samples that are HQ;
* ``reverse_kl``: KL(p || uniform), p being the distribution of the HQ samples over the modes, with a
  small epsilon in place of empty modes (PacGAN). 0 when the HQ samples spread evenly, log(K) when
  they all sit in one mode; None when there is no HQ sample at all (the figure is undefined);
* ``hq_spread``: the root-mean-square distance of the HQ samples from their centre, over what the
  true mixture gives inside the 3-sigma disc (sigma * sqrt(2 (1 - 5.5 e^-4.5) / (1 - e^-4.5)) =
  1.378 sigma). 1 when the modes are as wide as the data's; well below 1 flags a generator that
  shrinks each mode towards its centre (which HQ alone would reward).

Image datasets — a small CNN domain classifier trained on the dataset's training split (a cheap,
dataset-specific stand-in for the Inception network of FID, which does not fit 28×28 digits):

* ``domain_fid``: Fréchet distance between the classifier's 128-d penultimate features of the
  samples and of the test split (lower is better; ~0 for real test images);
* ``classes_covered``: classes that receive at least 20 % of their uniform share of the predicted
  labels (a class is covered when count >= 0.2 * N / K), the image analogue of modes captured;
* ``class_histogram``, ``mean_confidence`` (mean max softmax probability);
* ``label_accuracy`` (conditional models): how often the classifier agrees with the label the
  generator was asked for;
* ``kid`` / ``kid_std``: kernel inception distance (Bińkowski et al., 2018) in the same feature
  space: the unbiased MMD² estimate with the cubic polynomial kernel, mean and standard deviation
  over 100 random subsets of up to 1000 samples (torchmetrics' ``KernelInceptionDistance`` fed the
  classifier's features; unlike FID it is unbiased, so small sample counts compare fairly);
* ``precision`` / ``recall`` (Kynkäänniemi et al., 2019) and ``density`` / ``coverage`` (Naeem et
  al., 2020) with k = 5 nearest neighbours, computed by ``prdc`` (Naeem et al.'s own code) on up to
  5000 samples and 5000 real test images. Precision: samples inside the real manifold; recall:
  real images inside the samples' manifold; density can exceed 1; coverage: real images whose
  neighbourhood holds a sample (robust to outliers, the best single mode-dropping figure here).

The KID and PRDC figures need the real test images' features, so they appear when
``evaluate_images`` is given the test images (the job evaluation does); with precomputed mean and
covariance only the FID figures are given.

The classifier is trained once per dataset and cached in a file named by the dataset fingerprint.
"""

from __future__ import annotations

import logging
import math
import os
import re
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)

HQ_SIGMAS = 3.0  # a sample within this many sigma of its nearest centre is high quality
MODE_MIN_STRICT = 10  # HQ samples a mode needs for ``modes_min10``
# RMS radius of a 2-D isotropic Gaussian (sigma 1) restricted to the HQ disc r <= HQ_SIGMAS.
_A = HQ_SIGMAS**2 / 2
HQ_RMS_RADIUS = math.sqrt(2 * (1 - (1 + _A) * math.exp(-_A)) / (1 - math.exp(-_A)))
KL_EPSILON = 1e-10  # stands in for the probability of an empty mode
COVERAGE_SHARE = 0.2  # fraction of the uniform share a class needs to count as covered
FEATURE_DIM = 128
KID_SUBSETS = 100  # torch-fidelity's and torchmetrics' defaults
KID_SUBSET_SIZE = 1000
PRDC_NEAREST_K = 5  # Naeem et al. 2020's recommended k
PRDC_MAX_SAMPLES = 5000  # per side; prdc holds three N×N distance matrices (5000: 100 MB each)
DISTRIBUTION_SEED = 2024  # subsets and subsamples are drawn from it: the same figures every time
CACHE_FORMAT = 2  # bump when the classifier's architecture or cache layout changes


# ----------------------------------------------------------------------------- 2-D mixtures


def evaluate_mixture(samples: np.ndarray | Tensor, centers: np.ndarray | Tensor, sigma: float) -> dict[str, Any]:
    """Mode coverage and sample quality of 2-D samples (N×2) against K mode centres (K×2).

    Returns ``modes``, ``modes_min10``, ``hq_percent``, ``reverse_kl``, ``hq_spread`` (see the module docstring),
    ``n_samples``, ``n_modes`` (K) and ``mode_counts`` (HQ samples per mode, in centre order).
    Non-finite samples count as samples but never as HQ.
    """
    points = _numpy(samples).reshape(-1, 2)
    modes_xy = _numpy(centers).reshape(-1, 2)
    if sigma <= 0:
        raise ValueError("sigma must be positive")
    n, k = len(points), len(modes_xy)
    if k == 0:
        raise ValueError("at least one mode centre is needed")

    finite = np.isfinite(points).all(axis=1)
    counts = np.zeros(k, dtype=np.int64)
    hq_total = 0
    spread: float | None = None
    if finite.any():
        good = points[finite]
        # (N, K) squared distances; K is small (8 or 25) so the matrix stays modest.
        d2 = ((good[:, None, :] - modes_xy[None, :, :]) ** 2).sum(axis=2)
        nearest = d2.argmin(axis=1)
        hq = d2[np.arange(len(good)), nearest] <= (HQ_SIGMAS * sigma) ** 2
        counts = np.bincount(nearest[hq], minlength=k)
        hq_total = int(hq.sum())
        if hq_total:
            r2 = d2[np.arange(len(good)), nearest][hq]
            spread = float(np.sqrt(r2.mean()) / (HQ_RMS_RADIUS * sigma))

    reverse_kl: float | None = None
    if hq_total:
        p = np.maximum(counts / hq_total, KL_EPSILON)
        reverse_kl = float(max(0.0, np.sum(p * np.log(p * k))))
    return {
        "modes": int((counts >= 1).sum()),
        "modes_min10": int((counts >= MODE_MIN_STRICT).sum()),
        "hq_percent": 100.0 * hq_total / n if n else 0.0,
        "reverse_kl": reverse_kl,
        "hq_spread": spread,
        "n_samples": n,
        "n_modes": k,
        "mode_counts": counts.astype(int).tolist(),
    }


def _numpy(values: np.ndarray | Tensor) -> np.ndarray:
    if isinstance(values, Tensor):
        values = values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64)


# ----------------------------------------------------------------------------- Fréchet distance


def frechet_distance(
    mu1: np.ndarray | float, sigma1: np.ndarray | float, mu2: np.ndarray | float, sigma2: np.ndarray | float
) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (sigma = covariance matrix).

    d² = |mu1 - mu2|² + tr(S1) + tr(S2) - 2 tr((S1 S2)^½). The trace of the product's square root
    is computed as the sum of the square roots of the eigenvalues of the symmetric PSD matrix
    S1^½ S2 S1^½ (same spectrum as S1 S2), which avoids scipy's sqrtm and its complex round-off.
    """
    m1, m2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if m1.shape != m2.shape or s1.shape != s2.shape or s1.shape != (m1.size, m1.size):
        raise ValueError(f"mismatched shapes: mu {m1.shape}, {m2.shape}; sigma {s1.shape}, {s2.shape}")
    root1 = _psd_sqrt(s1)
    middle = root1 @ _symmetric(s2) @ root1
    eigenvalues = np.linalg.eigvalsh(_symmetric(middle))
    trace_sqrt = float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())
    diff = m1 - m2
    distance = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt)
    return max(distance, 0.0)  # round-off can leave a tiny negative for identical statistics


def _symmetric(matrix: np.ndarray) -> np.ndarray:
    return (matrix + matrix.T) / 2.0


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (negative round-off clipped)."""
    eigenvalues, vectors = np.linalg.eigh(_symmetric(matrix))
    return (vectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ vectors.T


def feature_statistics(features: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of N×D features, in float64."""
    array = _numpy(features)
    if array.ndim != 2 or len(array) < 2:
        raise ValueError(f"need at least 2 feature vectors of shape N×D, got {array.shape}")
    return array.mean(axis=0), np.cov(array, rowvar=False)


# ----------------------------------------------------------------------------- domain classifier


class DomainClassifier(nn.Module):
    """conv32 - BN - pool - conv64/2 - BN - fc128 - fc K, with dropout; fc128's output is the feature space.

    Cheap by design (the second convolution strides instead of pooling; ~1.5 MMAC per 28×28 image)
    so that it trains on all of MNIST in about a minute on two CPU threads: 2 epochs reach ~99.0 %
    test accuracy, 1 epoch ~98.7 %. Batch norm lets Adam use a high learning rate in so few steps;
    dropout stays light for the same reason. An adaptive pool to 7×7 makes the head independent of
    the input size, so npz images of any size use the same architecture.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: tuple[int, int] = (28, 28)):
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # 28 -> 14
            nn.Conv2d(32, 64, 3, stride=2, padding=1),  # 14 -> 7
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d((7, 7)),  # identity at 28×28
            nn.Flatten(),  # B×3136
            nn.Dropout(0.1),
        )
        self.fc = nn.Sequential(nn.Linear(64 * 7 * 7, FEATURE_DIM), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(FEATURE_DIM, num_classes))

    def features(self, x: Tensor) -> Tensor:
        """B×C×H×W in [-1, 1] -> B×128 penultimate activations."""
        return self.fc(self.conv(x))

    def forward(self, x: Tensor) -> Tensor:
        """B×C×H×W in [-1, 1] -> B×K logits."""
        return self.head(self.features(x))


def _cache_path(cache_dir: Path, fingerprint: str) -> Path:
    # The fingerprint names the file; anything unusual in it is replaced so it stays one file name.
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", fingerprint)[:160] or "dataset"
    return Path(cache_dir) / f"domain-classifier-v{CACHE_FORMAT}-{safe}.pt"


def get_classifier(
    fingerprint: str,
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    cache_dir: Path | str,
    epochs: int = 2,
    seed: int = 0,
    num_classes: int | None = None,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
) -> tuple[DomainClassifier, dict[str, Any]]:
    """The domain classifier of a dataset: loaded from ``cache_dir`` if trained before, else trained.

    ``train`` and ``test`` are (images N×C×H×W in [-1, 1], integer labels N) at the dataset's native
    size. The cache file is named by ``fingerprint`` (which must change whenever the data does) and
    holds the weights and ``meta`` (test_accuracy, train_seconds, epochs, sizes...). Training does
    not disturb the caller's global random state. The model is returned in eval mode on ``device``.
    """
    x_train, y_train = train
    x_test, y_test = test
    if x_train.ndim != 4:
        raise ValueError(f"training images must be N×C×H×W, got {tuple(x_train.shape)}")
    k = int(num_classes if num_classes is not None else int(y_train.max()) + 1)
    shape = {"in_channels": int(x_train.shape[1]), "image_size": [int(x_train.shape[2]), int(x_train.shape[3])]}
    path = _cache_path(Path(cache_dir), fingerprint)

    cached = _load_cached(path, k, shape)
    if cached is not None:
        model, meta = cached
        log.info("domain classifier for %s loaded from %s (test accuracy %.4f)", fingerprint, path, meta["test_accuracy"])
        return model.to(device).eval(), meta

    start = time.perf_counter()
    target = torch.device(device)
    forked = [target.index if target.index is not None else torch.cuda.current_device()] if target.type == "cuda" else []
    with torch.random.fork_rng(devices=forked):
        torch.manual_seed(seed)
        model = DomainClassifier(shape["in_channels"], k, tuple(shape["image_size"])).to(device)
        _train(model, x_train, y_train, epochs, batch_size, seed, device)
    seconds = time.perf_counter() - start
    accuracy = _accuracy(model, x_test, y_test)
    meta = {
        "format": CACHE_FORMAT,
        "fingerprint": fingerprint,
        "test_accuracy": accuracy,
        "train_seconds": round(seconds, 2),
        "epochs": int(epochs),
        "seed": int(seed),
        "batch_size": int(batch_size),
        "n_train": int(len(x_train)),
        "n_test": int(len(x_test)),
        "num_classes": k,
        **shape,
    }
    log.info("domain classifier for %s trained in %.1f s: test accuracy %.4f", fingerprint, seconds, accuracy)
    _save_atomic(path, {"state_dict": {n: t.detach().cpu() for n, t in model.state_dict().items()}, "meta": meta})
    return model.eval(), meta


def _load_cached(path: Path, num_classes: int, shape: dict[str, Any]) -> tuple[DomainClassifier, dict[str, Any]] | None:
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        meta = dict(payload["meta"])
        if meta.get("format") != CACHE_FORMAT or meta["num_classes"] != num_classes or any(
            meta[key] != value for key, value in shape.items()
        ):
            log.warning("cached domain classifier %s does not fit this data; retraining", path)
            return None
        model = DomainClassifier(meta["in_channels"], meta["num_classes"], tuple(meta["image_size"]))
        model.load_state_dict(payload["state_dict"])
        return model, meta
    except Exception as exc:  # a truncated or foreign file must not stop an evaluation
        log.warning("could not load cached domain classifier %s (%s); retraining", path, exc)
        return None


def _save_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write then rename, so concurrent workers never read a half-written cache file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _train(
    model: DomainClassifier, x: Tensor, y: Tensor, epochs: int, batch_size: int, seed: int, device: torch.device | str
) -> None:
    """Adam (lr 3e-3) with a cosine decay to zero over the whole run: 2 epochs reach ~99 % on MNIST."""
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    steps_per_epoch = math.ceil(len(x) / batch_size)
    total = max(1, epochs * steps_per_epoch)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    shuffle = torch.Generator().manual_seed(seed)
    y = y.long()
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=shuffle)
        running, seen = torch.zeros((), device=device), 0
        for start in range(0, len(x), batch_size):
            index = order[start : start + batch_size]
            xb, yb = x[index].to(device, torch.float32), y[index].to(device)
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            running += loss.detach() * len(index)  # no per-step device sync
            seen += len(index)
        log.debug("domain classifier epoch %d: loss %.4f", epoch + 1, float(running) / max(seen, 1))
    model.eval()


@torch.no_grad()
def _predict(model: DomainClassifier, x: Tensor, batch_size: int = 1000) -> tuple[Tensor, Tensor]:
    """(features N×128, logits N×K) on the CPU, computed in batches on the model's device."""
    model.eval()
    device = next(model.parameters()).device
    features, logits = [], []
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(device, torch.float32)
        f = model.features(xb)
        features.append(f.float().cpu())
        logits.append(model.head(f).float().cpu())
    if not features:
        return torch.zeros(0, FEATURE_DIM), torch.zeros(0, model.num_classes)
    return torch.cat(features), torch.cat(logits)


def _accuracy(model: DomainClassifier, x: Tensor, y: Tensor) -> float:
    _, logits = _predict(model, x)
    return float((logits.argmax(1) == y.long().cpu()).float().mean()) if len(y) else 0.0


def _fit_to_classifier(samples: Tensor, model: DomainClassifier) -> Tensor:
    """Resize N×C×H×W samples to the classifier's native size (e.g. 32×32 DCGAN output on MNIST)."""
    if samples.ndim != 4:
        raise ValueError(f"samples must be N×C×H×W, got {tuple(samples.shape)}")
    if samples.shape[1] != model.in_channels:
        raise ValueError(f"samples have {samples.shape[1]} channels, the classifier expects {model.in_channels}")
    if tuple(samples.shape[2:]) == model.image_size:
        return samples
    resized = []
    for start in range(0, len(samples), 1000):  # chunks keep the float copy small
        chunk = samples[start : start + 1000].float()
        resized.append(F.interpolate(chunk, size=model.image_size, mode="bilinear", align_corners=False, antialias=True))
    return torch.cat(resized).clamp(-1.0, 1.0)


def reference_statistics(classifier: DomainClassifier, test_images: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Feature mean and covariance of the real test images: compute once, pass to every evaluation."""
    features, _ = _predict(classifier, _fit_to_classifier(test_images, classifier))
    return feature_statistics(features)


def evaluate_images(
    samples: Tensor,
    classifier: DomainClassifier,
    test_images: Tensor | tuple[np.ndarray, np.ndarray],
    labels: Tensor | None = None,
    num_classes: int | None = None,
) -> dict[str, Any]:
    """Domain FID, KID, precision / recall / density / coverage, class coverage and confidence of
    N×C×H×W samples in [-1, 1] (see module docstring).

    ``test_images`` are the real test split (resized like the samples if needed), or their
    ``reference_statistics`` computed beforehand, which saves a pass over the test split per
    evaluation but gives the FID figures only (KID and PRDC need the real features). ``labels`` are the classes a conditional generator was asked for (adds
    ``label_accuracy``). ``num_classes`` defaults to the classifier's; it must not be smaller.
    """
    real_features: Tensor | None = None
    if isinstance(test_images, Tensor):
        if len(test_images) < 2:
            raise ValueError("need at least 2 test images")
        real_features, _ = _predict(classifier, _fit_to_classifier(test_images, classifier))
        reference = feature_statistics(real_features)
    else:
        reference = (np.asarray(test_images[0], np.float64), np.asarray(test_images[1], np.float64))
    if len(samples) < 2:
        raise ValueError("need at least 2 samples")
    k = classifier.num_classes if num_classes is None else int(num_classes)
    if k < classifier.num_classes:
        raise ValueError(f"num_classes {k} is below the classifier's {classifier.num_classes}")
    sample_features, logits = _predict(classifier, _fit_to_classifier(samples, classifier))
    fid = frechet_distance(*feature_statistics(sample_features), *reference)

    probabilities = logits.softmax(dim=1)
    predicted = probabilities.argmax(dim=1)
    histogram = torch.bincount(predicted, minlength=k)
    n = len(samples)
    results: dict[str, Any] = {
        "domain_fid": fid,
        "classes_covered": int((histogram >= COVERAGE_SHARE * n / k).sum()),
        "class_histogram": histogram.tolist(),
        "mean_confidence": float(probabilities.max(dim=1).values.mean()),
        "n_samples": n,
    }
    if real_features is not None:
        results.update(distribution_figures(sample_features, real_features))
    if labels is not None:
        if len(labels) != n:
            raise ValueError(f"{len(labels)} labels for {n} samples")
        results["label_accuracy"] = float((predicted == labels.long().cpu()).float().mean())
    return results


def kernel_inception_distance(
    sample_features: Tensor, real_features: Tensor, subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE,
    seed: int = DISTRIBUTION_SEED,
) -> tuple[float, float] | None:
    """(KID mean, std over subsets) of two N×D feature sets, or None with fewer than 2 of either.

    torchmetrics' metric with an identity "feature extractor", since the features are already
    computed; its subsets come from the global torch RNG, so a forked, seeded one is used.
    """
    from torchmetrics.image.kid import KernelInceptionDistance

    size = min(subset_size, len(sample_features), len(real_features))
    if size < 2:
        return None
    with warnings.catch_warnings():  # its note that features are buffered: that is the point here
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(feature=nn.Identity(), subsets=subsets, subset_size=size)
    metric.update(real_features.float(), real=True)
    metric.update(sample_features.float(), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def precision_recall_density_coverage(
    sample_features: Tensor, real_features: Tensor, nearest_k: int = PRDC_NEAREST_K,
    max_samples: int = PRDC_MAX_SAMPLES, seed: int = DISTRIBUTION_SEED,
) -> dict[str, float] | None:
    """Precision, recall, density and coverage (``prdc.compute_prdc``) of N×D features, each side
    subsampled (seeded) to at most ``max_samples``; None with too few points for k neighbours."""
    import contextlib
    import io

    from prdc import compute_prdc

    if min(len(sample_features), len(real_features)) <= nearest_k:
        return None
    gen = torch.Generator().manual_seed(seed)
    fake = sample_features[torch.randperm(len(sample_features), generator=gen)[:max_samples]]
    real = real_features[torch.randperm(len(real_features), generator=gen)[:max_samples]]
    with contextlib.redirect_stdout(io.StringIO()):  # compute_prdc prints the set sizes
        figures = compute_prdc(real.float().numpy(), fake.float().numpy(), nearest_k)
    return {name: float(value) for name, value in figures.items()}


def distribution_figures(sample_features: Tensor, real_features: Tensor) -> dict[str, Any]:
    """KID (mean, std) and precision / recall / density / coverage, as evaluation entries."""
    out: dict[str, Any] = {}
    kid = kernel_inception_distance(sample_features, real_features)
    if kid is not None:
        out["kid"], out["kid_std"] = kid
    prdc = precision_recall_density_coverage(sample_features, real_features)
    if prdc is not None:
        out.update(prdc)
    return out


def quality_score(results: dict[str, Any]) -> float | None:
    """One number per evaluation, lower is better, for picking the best checkpoint. Mode counts
    come first where there are modes: for the 2-D mixtures, missed modes plus the fraction of
    low-quality samples; for stacked MNIST, missed modes plus the reverse KL over log K (so a missed
    mode always weighs more than any HQ or KL difference). Other images: the domain FID. None when
    nothing was scored."""
    if results.get("n_modes") is not None and results.get("modes") is not None:
        missed = float(results["n_modes"] - results["modes"])
        if "hq_percent" in results:
            return missed + (100.0 - float(results["hq_percent"])) / 100.0
        kl = results.get("reverse_kl")
        return missed + (min(1.0, float(kl) / math.log(results["n_modes"])) if kl is not None else 1.0)
    if results.get("domain_fid") is not None:
        return float(results["domain_fid"])
    return None
