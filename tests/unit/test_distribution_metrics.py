"""KID and precision / recall / density / coverage, checked against their papers' definitions
computed here by brute force on small point sets (independent of torchmetrics and prdc)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from gan_core import quality
from gan_core.quality import (
    distribution_figures,
    kernel_inception_distance,
    precision_recall_density_coverage,
    quality_score,
)


def unbiased_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Bińkowski et al. 2018, eq. (2): the unbiased MMD² with k(a, b) = (a·b / d + 1)³."""
    d = x.shape[1]
    k = lambda a, b: (a @ b / d + 1.0) ** 3  # noqa: E731
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_with_one_subset_of_everything_is_the_unbiased_mmd() -> None:
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(40, 6, generator=gen)
    fake = torch.randn(40, 6, generator=gen) * 1.5 + 0.3
    kid, std = kernel_inception_distance(fake, real, subsets=1, subset_size=40)
    assert kid == pytest.approx(unbiased_mmd2(real.double().numpy(), fake.double().numpy()), rel=1e-4)
    assert std == 0.0


def test_kid_is_near_zero_for_one_distribution_and_grows_with_the_shift() -> None:
    gen = torch.Generator().manual_seed(1)
    real = torch.randn(3000, 16, generator=gen)
    same = torch.randn(3000, 16, generator=gen)
    same_kid, same_std = kernel_inception_distance(same, real, subset_size=500)
    assert abs(same_kid) < 3 * same_std + 1e-3  # unbiased: zero in expectation, may dip below 0
    shifted = [kernel_inception_distance(same + shift, real, subset_size=500)[0] for shift in (0.2, 0.5, 1.0)]
    assert shifted == sorted(shifted) and shifted[0] > same_kid + 3 * same_std
    # Fixed subsets: the same figures every call, whatever the caller's random state.
    torch.manual_seed(99)
    assert kernel_inception_distance(same + 0.5, real, subset_size=500)[0] == shifted[1]


def test_kid_needs_two_samples() -> None:
    assert kernel_inception_distance(torch.zeros(1, 4), torch.zeros(10, 4)) is None


def brute_force_prdc(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """Kynkäänniemi et al. 2019 (precision, recall) and Naeem et al. 2020 (density, coverage),
    straight from their definitions: B(x, r) the open ball, NND_k the distance to the k-th
    nearest other point of the same set."""

    def nnd(points: np.ndarray, i: int) -> float:
        others = sorted(np.linalg.norm(points[i] - points[j]) for j in range(len(points)) if j != i)
        return others[k - 1]

    r_real = [nnd(real, i) for i in range(len(real))]
    r_fake = [nnd(fake, j) for j in range(len(fake))]
    dist = lambda a, b: float(np.linalg.norm(a - b))  # noqa: E731
    precision = np.mean([any(dist(y, x) < r for x, r in zip(real, r_real)) for y in fake])
    recall = np.mean([any(dist(x, y) < r for y, r in zip(fake, r_fake)) for x in real])
    density = np.mean([sum(dist(y, x) < r for x, r in zip(real, r_real)) for y in fake]) / k
    coverage = np.mean([any(dist(x, y) < r for y in fake) for x, r in zip(real, r_real)])
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}


def test_prdc_matches_the_definitions_on_random_points() -> None:
    rng = np.random.default_rng(3)
    real = rng.normal(size=(60, 3)).astype(np.float32)
    fake = (rng.normal(size=(60, 3)) * 0.7 + 0.8).astype(np.float32)
    got = precision_recall_density_coverage(torch.from_numpy(fake), torch.from_numpy(real), nearest_k=3)
    want = brute_force_prdc(real.astype(np.float64), fake.astype(np.float64), 3)
    assert got == pytest.approx(want, abs=1e-6)
    assert 0 < got["precision"] < 1 and 0 < got["recall"] < 1 and 0 < got["coverage"] < 1


def test_prdc_by_hand_on_a_line() -> None:
    # Real points 0..9 on a line (k = 1: every real radius is 1, open ball). Fakes at 0.5 and 2.5
    # each lie strictly inside two real balls, the fake at 20 in none; the fakes' own radii are 2, 2
    # and 17.5 (20 is far from the others).
    real = torch.tensor([[float(i)] for i in range(10)])
    fake = torch.tensor([[0.5], [2.5], [20.0]])
    got = precision_recall_density_coverage(fake, real, nearest_k=1)
    assert got["precision"] == pytest.approx(2 / 3)
    assert got["density"] == pytest.approx((2 + 2 + 0) / 3)
    assert got["coverage"] == pytest.approx(4 / 10)  # real 0, 1, 2, 3 have a fake within distance 1
    # fake radii: 0.5 -> 2 (to 2.5), 2.5 -> 2, 20 -> 17.5: every real point lies in the ball of 20.
    assert got["recall"] == pytest.approx(1.0)
    # Too few samples for k neighbours: no figures rather than nonsense.
    assert precision_recall_density_coverage(fake[:1], real, nearest_k=1) is None


def test_dropping_half_the_modes_halves_recall_and_coverage_but_not_precision() -> None:
    gen = torch.Generator().manual_seed(4)
    centres = torch.tensor(list(itertools.product((0.0, 10.0), (0.0, 10.0), (0.0, 10.0))))  # 8 clusters
    real = centres[torch.arange(2000) % 8] + torch.randn(2000, 3, generator=gen)
    half = centres[torch.arange(2000) % 4] + torch.randn(2000, 3, generator=gen)
    full = centres[torch.arange(2000) % 8] + torch.randn(2000, 3, generator=gen)
    dropped, good = precision_recall_density_coverage(half, real), precision_recall_density_coverage(full, real)
    assert dropped["precision"] > 0.9 and good["precision"] > 0.9
    assert good["recall"] > 0.9 and good["coverage"] > 0.9
    assert 0.4 < dropped["recall"] < 0.6 and 0.4 < dropped["coverage"] < 0.6
    assert good["density"] == pytest.approx(1.0, abs=0.15)


def test_distribution_figures_name_every_entry() -> None:
    gen = torch.Generator().manual_seed(5)
    figures = distribution_figures(torch.randn(300, 8, generator=gen), torch.randn(400, 8, generator=gen))
    assert set(figures) == {"kid", "kid_std", "precision", "recall", "density", "coverage"}
    assert all(isinstance(v, float) and math.isfinite(v) for v in figures.values())
    assert distribution_figures(torch.randn(1, 8), torch.randn(10, 8)) == {}


def test_quality_score_ranks_stacked_mnist_by_modes_then_kl() -> None:
    fewer = {"modes": 990, "n_modes": 1000, "reverse_kl": 0.01, "domain_fid": 1.0}
    more = {"modes": 999, "n_modes": 1000, "reverse_kl": 0.5, "domain_fid": 50.0}
    better_kl = {**more, "reverse_kl": 0.05}
    assert quality_score(more) < quality_score(fewer)
    assert quality_score(better_kl) < quality_score(more)
    assert quality_score({"domain_fid": 12.5, "kid": 0.1}) == 12.5
    assert quality_score({"modes": 8, "n_modes": 8, "hq_percent": 98.0}) == pytest.approx(0.02)
    assert quality.PRDC_NEAREST_K == 5  # Naeem et al.'s recommended k


def test_the_train_summary_names_kid_and_prdc() -> None:
    from gan_core.cli import _distribution_line

    line = _distribution_line({"domain_fid": 3.0, "kid": 0.01234, "kid_std": 0.00101, "precision": 0.7,
                               "recall": 0.65, "density": 1.02, "coverage": 0.9})
    assert line == "KID 0.0123 ± 0.0010, precision 0.700, recall 0.650, density 1.020, coverage 0.900"
    assert _distribution_line({"modes": 8, "hq_percent": 99.0}) is None
