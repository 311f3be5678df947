"""Quality figures: 2-D mixture mode coverage, the Fréchet distance and the MNIST domain classifier."""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gan_core import quality
from gan_core.quality import (
    DomainClassifier,
    evaluate_images,
    evaluate_mixture,
    feature_statistics,
    frechet_distance,
    get_classifier,
    reference_statistics,
)

MNIST_DIR = Path("/work/shared/datasets/mnist")


def ring8() -> tuple[np.ndarray, float]:
    angles = np.arange(8) * 2 * math.pi / 8
    return 2.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1), 0.02


def grid25() -> tuple[np.ndarray, float]:
    xs, ys = np.meshgrid([-4, -2, 0, 2, 4], [-4, -2, 0, 2, 4])
    return np.stack([xs.ravel(), ys.ravel()], axis=1).astype(float), 0.05


# ----------------------------------------------------------------------------- 2-D mixtures


@pytest.mark.parametrize("mixture", [ring8, grid25])
def test_perfect_samples_capture_every_mode(mixture) -> None:
    centres, sigma = mixture()
    rng = np.random.default_rng(0)
    n = 20_000
    samples = centres[rng.integers(0, len(centres), n)] + sigma * rng.standard_normal((n, 2))
    result = evaluate_mixture(samples, centres, sigma)
    k = len(centres)
    assert result["modes"] == k and result["modes_min10"] == k and result["n_modes"] == k
    assert result["n_samples"] == n
    # Within 3 sigma (Euclidean) of a 2-D isotropic Gaussian: 1 - exp(-9/2) = 98.89 %.
    assert result["hq_percent"] == pytest.approx(100 * (1 - math.exp(-4.5)), abs=0.3)
    assert result["reverse_kl"] < 0.01
    assert result["hq_spread"] == pytest.approx(1.0, abs=0.02)  # as wide as the data
    assert sum(result["mode_counts"]) == round(result["hq_percent"] * n / 100)


def test_modes_shrunk_towards_their_centres_show_in_the_spread_not_in_hq() -> None:
    centres, sigma = grid25()
    rng = np.random.default_rng(5)
    n = 20_000
    samples = centres[rng.integers(0, len(centres), n)] + 0.4 * sigma * rng.standard_normal((n, 2))
    result = evaluate_mixture(samples, centres, sigma)
    assert result["hq_percent"] == 100.0  # HQ rewards shrunk modes ...
    assert result["hq_spread"] == pytest.approx(0.4 * math.sqrt(2) / 1.378, rel=0.03)  # ... the spread does not


def test_one_mode_gives_one_captured_mode_and_maximal_kl() -> None:
    centres, sigma = ring8()
    rng = np.random.default_rng(1)
    samples = centres[3] + sigma * rng.standard_normal((2500, 2))
    result = evaluate_mixture(torch.from_numpy(samples).float(), torch.from_numpy(centres), sigma)
    assert result["modes"] == 1 and result["modes_min10"] == 1
    assert result["mode_counts"][3] == sum(result["mode_counts"])
    assert result["reverse_kl"] == pytest.approx(math.log(8), rel=1e-3)  # all mass in 1 of 8 modes


def test_modes_min10_is_stricter_than_modes() -> None:
    centres, sigma = ring8()
    samples = np.concatenate([np.repeat(centres[:4], 50, axis=0), np.repeat(centres[4:], 3, axis=0)])
    result = evaluate_mixture(samples, centres, sigma)
    assert result["modes"] == 8 and result["modes_min10"] == 4
    assert 0.1 < result["reverse_kl"] < math.log(8)


def test_uniform_noise_is_low_quality() -> None:
    centres, sigma = grid25()
    samples = np.random.default_rng(2).uniform(-5, 5, (5000, 2))
    result = evaluate_mixture(samples, centres, sigma)
    # HQ area: 25 discs of radius 0.15 in a 10×10 square, about 1.8 % of it.
    assert result["hq_percent"] < 4.0
    assert result["modes"] >= 20  # noise touches most modes: this is why hq_percent matters too


def test_no_high_quality_sample_leaves_kl_undefined_and_non_finite_never_counts() -> None:
    centres, sigma = ring8()
    samples = np.array([[0.0, 0.0], [np.nan, 1.0], [np.inf, 0.0], [2.0, 0.0]])
    result = evaluate_mixture(samples[:3], centres, sigma)
    assert result["modes"] == 0 and result["hq_percent"] == 0.0 and result["reverse_kl"] is None
    assert result["hq_spread"] is None
    result = evaluate_mixture(samples, centres, sigma)
    assert result["modes"] == 1 and result["hq_percent"] == 25.0 and result["n_samples"] == 4


# ----------------------------------------------------------------------------- Fréchet distance


def test_frechet_distance_of_identical_statistics_is_zero() -> None:
    features = np.random.default_rng(3).standard_normal((500, 32)) @ np.random.default_rng(4).standard_normal((32, 32))
    mu, sigma = feature_statistics(features)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("mu1, s1, mu2, s2", [(0.0, 1.0, 0.0, 2.0), (1.5, 0.5, -1.0, 3.0), (2.0, 1.0, 0.0, 1.0)])
def test_frechet_distance_of_1d_gaussians(mu1: float, s1: float, mu2: float, s2: float) -> None:
    expected = (mu1 - mu2) ** 2 + (s1 - s2) ** 2
    assert frechet_distance(mu1, s1**2, mu2, s2**2) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_matches_the_textbook_formula() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((6, 6)), rng.standard_normal((6, 6))
    s1, s2 = a @ a.T + 0.1 * np.eye(6), b @ b.T
    mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
    # tr((S1 S2)^½) from the (real, non-negative) eigenvalues of the non-symmetric product.
    trace_sqrt = np.sqrt(np.linalg.eigvals(s1 @ s2).real.clip(0)).sum()
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
    # Diagonal covariances: the distance is the sum of the 1-D distances.
    d1, d2 = np.array([1.0, 4.0]), np.array([9.0, 1.0])
    assert frechet_distance(np.zeros(2), np.diag(d1), np.ones(2), np.diag(d2)) == pytest.approx(2 + 4 + 1)


def test_frechet_distance_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))


# ----------------------------------------------------------------------------- domain classifier on MNIST


def read_idx(path: Path, count: int) -> np.ndarray:
    """The first ``count`` records of a gzip IDX file (images magic 2051, labels magic 2049)."""
    with gzip.open(path, "rb") as handle:
        magic, total = struct.unpack(">ii", handle.read(8))
        count = min(count, total)
        if magic == 2051:
            rows, cols = struct.unpack(">ii", handle.read(8))
            return np.frombuffer(handle.read(count * rows * cols), np.uint8).reshape(count, rows, cols)
        assert magic == 2049, f"{path}: bad IDX magic {magic}"
        return np.frombuffer(handle.read(count), np.uint8)


def mnist(split: str, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    images = read_idx(MNIST_DIR / f"{split}-images-idx3-ubyte.gz", count)
    labels = read_idx(MNIST_DIR / f"{split}-labels-idx1-ubyte.gz", count)
    x = torch.from_numpy(images.copy()).float().div(127.5).sub(1.0).unsqueeze(1)  # N×1×28×28 in [-1, 1]
    return x, torch.from_numpy(labels.astype(np.int64))


needs_mnist = pytest.mark.usefixtures("data_dir")  # fails (never skips) without MNIST


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """A classifier trained on a small MNIST subset (3000 images, 1 epoch: a few seconds)."""
    torch.set_num_threads(1)
    train, test = mnist("train", 3000), mnist("t10k", 2000)
    cache = tmp_path_factory.mktemp("classifiers")
    torch.manual_seed(123)
    rng_before = torch.get_rng_state()
    model, meta = get_classifier("mnist-small", train, test, cache, epochs=1, seed=0, batch_size=64)
    rng_after = torch.get_rng_state()
    return {"model": model, "meta": meta, "train": train, "test": test, "cache": cache,
            "rng_untouched": torch.equal(rng_before, rng_after)}


@needs_mnist
def test_classifier_learns_and_reports_its_accuracy(trained) -> None:
    meta = trained["meta"]
    assert meta["test_accuracy"] > 0.8  # chance is 0.1
    assert meta["n_train"] == 3000 and meta["n_test"] == 2000 and meta["num_classes"] == 10
    assert meta["in_channels"] == 1 and meta["image_size"] == [28, 28]
    assert trained["rng_untouched"]  # training must not shift the caller's random stream
    assert not trained["model"].training
    features = trained["model"].features(trained["test"][0][:5])
    assert features.shape == (5, 128)


@needs_mnist
def test_second_call_loads_from_the_cache(trained, monkeypatch: pytest.MonkeyPatch) -> None:
    files = list(trained["cache"].glob("*.pt"))
    assert len(files) == 1 and "mnist-small" in files[0].name
    mtime = files[0].stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("the cached classifier should have been loaded, not retrained")

    monkeypatch.setattr(quality, "_train", no_training)
    model, meta = get_classifier("mnist-small", trained["train"], trained["test"], trained["cache"], epochs=1)
    assert meta == trained["meta"]
    assert files[0].stat().st_mtime_ns == mtime
    x = trained["test"][0][:64]
    with torch.no_grad():
        assert torch.allclose(model(x), trained["model"](x), atol=1e-5)


@needs_mnist
def test_corrupt_cache_is_retrained(trained, tmp_path: Path) -> None:
    train = (trained["train"][0][:300], trained["train"][1][:300])
    path = quality._cache_path(tmp_path, "mnist-tiny")
    path.write_bytes(b"not a checkpoint")
    _, meta = get_classifier("mnist-tiny", train, trained["test"], tmp_path, epochs=1)
    assert meta["n_train"] == 300
    assert torch.load(path, weights_only=True)["meta"] == meta


@needs_mnist
def test_real_images_score_well_and_noise_badly(trained) -> None:
    model, (x, y) = trained["model"], trained["test"]
    real = evaluate_images(x[:500], model, x[1000:], labels=y[:500])
    reference = reference_statistics(model, x[1000:])  # the same FID figures from precomputed statistics
    from_statistics = evaluate_images(x[:500], model, reference, labels=y[:500])
    distribution = {"kid", "kid_std", "precision", "recall", "density", "coverage"}
    assert from_statistics == {k: v for k, v in real.items() if k not in distribution}
    # With the test images themselves, KID and PRDC in the same feature space (they need real features).
    assert distribution <= set(real) and not distribution & set(from_statistics)
    noise_full = evaluate_images(torch.rand(500, 1, 28, 28) * 2 - 1, model, x[1000:])
    assert real["kid"] < noise_full["kid"] / 10 and real["kid_std"] < real["kid"] + noise_full["kid_std"]
    assert real["precision"] > 0.6 and real["recall"] > 0.6 and real["coverage"] > 0.8
    assert noise_full["precision"] < 0.1 and noise_full["coverage"] < 0.1
    noise = evaluate_images(torch.rand(500, 1, 28, 28) * 2 - 1, model, reference)
    same = evaluate_images(x[1000:], model, reference)
    assert same["domain_fid"] == pytest.approx(0.0, abs=1e-3)
    assert noise["domain_fid"] > 10 * real["domain_fid"]
    assert real["label_accuracy"] > 0.8 and "label_accuracy" not in noise
    assert real["classes_covered"] == 10
    assert sum(real["class_histogram"]) == 500 and len(real["class_histogram"]) == 10
    assert 0.1 <= noise["mean_confidence"] <= 1.0 and real["n_samples"] == 500
    wrong = evaluate_images(x[:500], model, reference, labels=(y[:500] + 1) % 10)
    assert wrong["label_accuracy"] < 0.2


@needs_mnist
def test_one_digit_only_covers_one_class(trained) -> None:
    model, (x, y) = trained["model"], trained["test"]
    ones = x[y == 1][:200]
    result = evaluate_images(ones, model, x[:1000])
    # A class is covered with >= 20 % of its uniform share (0.2 * 200 / 10 = 4 predictions).
    assert result["classes_covered"] <= 2
    assert max(result["class_histogram"]) == result["class_histogram"][1]


@needs_mnist
def test_samples_at_another_size_are_resized(trained) -> None:
    model, (x, y) = trained["model"], trained["test"]
    upscaled = F.interpolate(x[:500], size=(32, 32), mode="bilinear", align_corners=False)  # like 32×32 DCGAN output
    reference = reference_statistics(model, x[1000:])
    result = evaluate_images(upscaled, model, reference, labels=y[:500])
    assert result["label_accuracy"] > 0.75
    noise = evaluate_images(torch.rand(500, 1, 32, 32) * 2 - 1, model, reference)
    assert result["domain_fid"] < noise["domain_fid"] / 5
    with pytest.raises(ValueError):
        evaluate_images(torch.zeros(10, 3, 28, 28), model, reference)


def test_classifier_handles_other_sizes_and_channels() -> None:
    model = DomainClassifier(in_channels=3, num_classes=5, image_size=(64, 48))
    model.eval()
    x = torch.rand(4, 3, 64, 48) * 2 - 1
    assert model(x).shape == (4, 5) and model.features(x).shape == (4, 128)


@needs_mnist
def test_a_resized_dataset_is_compared_with_test_images_resized_the_same_way(trained, data_dir, tmp_path, monkeypatch):
    # A 32 px MNIST job's samples reach the 28 px classifier through a 32 -> 28 resize. Its own
    # training images must then score about as well as native training images do against the native
    # test split: the reference makes the same 28 -> 32 -> 28 round trip (before the fix it did not,
    # and real digits at 32 px scored far worse than the classic MLP GAN's samples).
    from gan_core import evaluator
    from gan_core.data import DataConfig, build_dataset
    from gan_core.spec import JobSpec

    monkeypatch.setattr(evaluator, "classifier_for", lambda *a, **k: (trained["model"], trained["meta"]))
    config = DataConfig(data_dir=data_dir, cache_dir=tmp_path)
    figures = {}
    for size in (28, 32):
        spec = JobSpec.model_validate({"name": "e", "dataset": {"name": "mnist", "image_size": size},
                                       "model": {"arch": "dcgan", "variant": "radford"}, "loss": "hinge"})
        data = build_dataset(spec.dataset, config, device=torch.device("cpu"), seed=1)
        ev = evaluator.Evaluator(spec, data, config)
        figures[size] = ev.evaluate_samples(data.images[:3000])["domain_fid"]
        assert ev._test_images.shape[-1] == size  # the reference as the job's data hold it
    assert figures[32] < 2 * figures[28] + 2.0, figures
