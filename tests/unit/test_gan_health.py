"""GAN health detectors (gan_core.health) on synthetic streams: each fires on the failure it names
and stays quiet on healthy curves; the spec's defaults and strictness; the trainer's wiring."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from gan_core import health
from gan_core.data.datasets import mixture_params
from gan_core.health import (DISCRIMINATOR_WON, DIVERGED, MODE_COLLAPSE, DiscriminatorWon, DiversityCollapse,
                             HealthMonitor, ModeDrop, first_non_finite, mean_pairwise_distance)
from gan_core.spec import HealthSpec, JobSpec
from gan_core.trainer import Callbacks, NonFiniteLossError, Trainer


def _noisy(level: float, n: int, seed: int, spread: float = 0.02) -> list[float]:
    g = torch.Generator().manual_seed(seed)
    return (level + spread * torch.randn(n, generator=g)).clamp(0, 1).tolist()


# ---- non-finite ---------------------------------------------------------------------------------
def test_first_non_finite_names_the_first_bad_row():
    rows = torch.tensor([[0.5, 0.7], [0.4, 0.8], [float("nan"), 0.1], [float("inf"), 1.0]])
    assert first_non_finite(rows) == 2
    assert first_non_finite(torch.tensor([[1.0, -1.0], [2.0, 3.0]])) is None
    assert first_non_finite(torch.tensor([[1.0, -float("inf")]])) == 0


# ---- discriminator won --------------------------------------------------------------------------
@pytest.mark.parametrize("loss", ["minimax", "bce", "lsgan", "hinge"])
def test_d_won_fires_once_when_accuracy_sits_at_100_percent(loss):
    d = DiscriminatorWon(loss, accuracy=0.99, window=100, min_step=50)
    healthy = d.observe(1, _noisy(0.7, 300, 0), _noisy(0.65, 300, 1))
    assert healthy is None
    found = d.observe(301, [1.0] * 300, [1.0] * 300)
    assert found is not None and found.detector == DISCRIMINATOR_WON
    # The window's mean reaches 99 % once at most ~3 of its 100 steps are the healthy ~70 %.
    assert 396 <= found.step <= 400
    assert "% on real" in found.message and "threshold 99 %" in found.message
    assert d.observe(601, [1.0] * 200, [1.0] * 200) is None  # the same episode: reported once
    assert d.observe(801, [0.6] * 100, [0.6] * 100) is None  # recovered
    again = d.observe(901, [1.0] * 100, [1.0] * 100)
    assert again is not None and 996 <= again.step <= 1000  # a new episode is reported


def test_d_won_needs_both_sides_and_the_whole_window():
    d = DiscriminatorWon("bce", accuracy=0.99, window=100)
    # D perfect on real data but fooled on fakes (G winning or balanced): not "D won".
    assert d.observe(1, [1.0] * 500, _noisy(0.5, 500, 2)) is None
    d = DiscriminatorWon("bce", accuracy=0.99, window=100)
    assert d.observe(1, [1.0] * 99, [1.0] * 99) is None  # the window is not full yet
    # A long healthy but confident D (~95 %) stays quiet.
    d = DiscriminatorWon("bce", accuracy=0.99, window=100)
    assert d.observe(1, _noisy(0.95, 2000, 3), _noisy(0.95, 2000, 4)) is None


def test_d_won_ignores_the_start_of_training():
    d = DiscriminatorWon("bce", accuracy=0.99, window=100, min_step=500)
    # D wins every step of the first 500 (normal: G starts as noise), then the game balances.
    assert d.observe(1, [1.0] * 499, [1.0] * 499) is None
    assert d.observe(500, _noisy(0.7, 1000, 5), _noisy(0.7, 1000, 6)) is None


def test_d_won_is_skipped_for_wgan_gp_with_a_reason():
    d = DiscriminatorWon("wgan-gp", window=10)
    assert "critic" in d.skip_reason
    assert d.observe(1, [1.0] * 100, [1.0] * 100) is None


# ---- diversity ----------------------------------------------------------------------------------
def test_mean_pairwise_distance_matches_a_direct_computation():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    assert mean_pairwise_distance(x) == pytest.approx((5 + 10 + 5) / 3)
    images = torch.randn(10, 1, 4, 4)
    direct = sum(float((images[i] - images[j]).norm()) for i in range(10) for j in range(i + 1, 10)) / 45
    assert mean_pairwise_distance(images) == pytest.approx(direct, rel=1e-5)
    with pytest.raises(ValueError):
        mean_pairwise_distance(torch.zeros(1, 3))


def test_diversity_collapse_fires_after_patience_and_not_on_healthy_batches():
    d = DiversityCollapse(real_distance=2.0, ratio=0.2, patience=3, min_step=100)
    assert d.observe(50, 0.01) is None  # before min_step: G's first samples are alike
    for step, distance in zip(range(100, 1100, 100), [1.8, 1.5, 2.1, 1.2, 0.9, 1.6, 1.9, 2.0, 1.7, 1.8]):
        assert d.observe(step, distance) is None  # healthy: 45-105 % of the real spread
    assert d.observe(1100, 0.3) is None  # 15 %: one check is not yet a collapse
    assert d.observe(1200, 0.35) is None
    found = d.observe(1300, 0.1)
    assert found is not None and found.detector == MODE_COLLAPSE and found.step == 1300
    assert "5.0 %" in found.message and "3 checks" in found.message
    assert d.observe(1400, 0.1) is None  # the same episode
    assert d.observe(1500, 1.5) is None  # recovered


def test_diversity_collapse_is_reset_by_a_good_check():
    d = DiversityCollapse(real_distance=1.0, ratio=0.2, patience=3)
    for distance in (0.1, 0.1, 0.5, 0.1, 0.1, 0.5):
        assert d.observe(1000, distance) is None


def test_mode_drop_fires_when_the_mode_count_falls_and_not_when_it_climbs():
    m = ModeDrop(n_modes=8, drop=0.5, patience=2)
    for modes in (1, 2, 4, 6, 8, 8, 7, 8):  # learning the modes, one briefly lost
        assert m.observe(100, modes) is None
    assert m.observe(200, 3) is None
    found = m.observe(300, 2)
    assert found is not None and found.detector == MODE_COLLAPSE
    assert "covers 2 of 8 modes, down from 8" in found.message
    climbing = ModeDrop(n_modes=25, drop=0.5, patience=1)
    assert all(climbing.observe(100 * i, modes) is None for i, modes in enumerate((1, 3, 5, 9, 14, 20, 25)))


def test_mode_drop_waits_until_half_the_modes_were_covered():
    """The swings of a run still finding its modes (grid25: 8 covered, then 3, then all 25) are no
    verdict; a drop from at least half of them is."""
    early = ModeDrop(n_modes=25, drop=0.5, patience=2)
    assert all(early.observe(100 * i, modes) is None for i, modes in enumerate((6, 8, 3, 3, 2, 4, 12, 25)))
    late = ModeDrop(n_modes=25, drop=0.5, patience=2)
    assert late.observe(100, 13) is None and late.observe(200, 6) is None
    found = late.observe(300, 5)
    assert found is not None and "covers 5 of 25 modes, down from 13" in found.message


# ---- the monitor --------------------------------------------------------------------------------
def _ring(n: int, seed: int, modes: int = 8) -> torch.Tensor:
    centers, sigma = mixture_params("ring8")
    g = torch.Generator().manual_seed(seed)
    pick = torch.randint(0, modes, (n,), generator=g)
    return centers[pick] + sigma * torch.randn(n, 2, generator=g)


def test_monitor_on_a_2d_mixture_collapse():
    centers, sigma = mixture_params("ring8")
    spec = HealthSpec(min_step=0, patience=2)
    monitor = HealthMonitor(spec, "bce", _ring(256, 0), centers, sigma)
    for step in (50, 100, 150):
        assert monitor.observe_samples(step, _ring(256, step)) == []  # all 8 modes
    assert monitor.observe_samples(200, _ring(256, 200, modes=1)) == []
    found = monitor.observe_samples(250, _ring(256, 250, modes=1))
    assert [f.detector for f in found] == [MODE_COLLAPSE]  # one finding, though both criteria hold
    bad = torch.full((256, 2), float("nan"))
    assert [f.detector for f in monitor.observe_samples(300, bad)] == [DIVERGED]


def test_ema_warmup_steps():
    assert health.ema_warmup_steps(None) == 0 and health.ema_warmup_steps(0.0) == 0
    assert health.ema_warmup_steps(0.998) == 1497 and health.ema_warmup_steps(0.999) == 2995
    assert 0.998 ** 1497 <= 0.05 < 0.998 ** 1496


def test_monitor_checks_the_fixed_batch_only_after_the_ema_warm_up():
    """An EMA generator's early batches look collapsed (it still holds its initial weights): no
    verdict on them before ``samples_from_step``; a real collapse afterwards is still reported."""
    centers, sigma = mixture_params("ring8")
    monitor = HealthMonitor(HealthSpec(min_step=0, patience=2), "bce", _ring(256, 0), centers, sigma,
                            samples_from_step=1000)
    assert monitor.samples_from_step == 1000
    point = torch.zeros(256, 2) + 0.001 * torch.randn(256, 2)  # one point: collapsed by both criteria
    assert all(monitor.observe_samples(step, point) == [] for step in range(50, 1000, 50))
    assert monitor.observe_samples(1000, point) == []
    assert [f.detector for f in monitor.observe_samples(1050, point)] == [MODE_COLLAPSE]
    # min_step wins when it is later than the warm-up
    assert HealthMonitor(HealthSpec(min_step=2000), "bce", _ring(256, 0), samples_from_step=1000).samples_from_step == 2000


def test_monitor_on_images_and_its_skips():
    real = torch.rand(64, 1, 8, 8) * 2 - 1
    monitor = HealthMonitor(HealthSpec(min_step=0, patience=1), "wgan-gp", real)
    assert DISCRIMINATOR_WON in monitor.skipped and monitor.modes is None
    assert monitor.observe_samples(10, torch.rand(64, 1, 8, 8) * 2 - 1) == []
    same = torch.rand(1, 1, 8, 8).expand(64, 1, 8, 8) + 0.001 * torch.randn(64, 1, 8, 8)
    assert [f.detector for f in monitor.observe_samples(20, same)] == [MODE_COLLAPSE]
    assert monitor.observe_steps(1, [1.0] * 1000, [1.0] * 1000) == []  # skipped for wgan-gp


# ---- the spec -----------------------------------------------------------------------------------
def test_health_spec_defaults_and_strictness():
    spec = JobSpec.model_validate({"name": "x", "dataset": {"name": "ring8"}})
    h = spec.train.health
    assert (h.enabled, h.stop, h.every, h.min_step, h.d_accuracy, h.d_window, h.samples, h.diversity_ratio,
            h.mode_drop, h.patience) == (True, None, 50, 500, 0.99, 500, 256, 0.2, 0.5, 3)
    for bad in ({"every": 0}, {"d_accuracy": 0.4}, {"stop": "yes"}, {"window": 10}, {"samples": 1},
                {"diversity_ratio": 1.0}):
        with pytest.raises(ValidationError):
            JobSpec.model_validate({"name": "x", "dataset": {"name": "ring8"}, "train": {"health": bad}})


# ---- the trainer --------------------------------------------------------------------------------
class _Collect(Callbacks):
    def __init__(self):
        self.findings: list[health.Finding] = []

    def on_health(self, step, findings):
        self.findings.extend(findings)


def _ring_spec(**train) -> JobSpec:
    return JobSpec.model_validate({
        "name": "h", "dataset": {"name": "ring8"}, "device": "cpu", "log_every": 1000, "sample_every": 1000,
        "checkpoint_every": 1000, "eval": {"at_end": False},
        "model": {"arch": "mlp", "latent_dim": 2, "hidden_g": [32, 32], "hidden_d": [32, 32], "g_batchnorm": False},
        "train": {"steps": 300, "batch_size": 64, **train}})


def test_trainer_stops_on_a_nan_within_one_health_interval():
    """Absurd learning rates: the first non-finite loss is caught at the next health check, long
    before the next log step (1000), and pinned to its step."""
    spec = _ring_spec(lr_d=1.0, lr_g=1.0, beta1=0.0, steps=1000, health={"every": 5})
    trainer = Trainer(spec)
    with torch.no_grad():  # weights so large that the logits overflow at once
        for p in trainer.state.discriminator.parameters():
            p.mul_(1e30)
    with pytest.raises(NonFiniteLossError) as caught:
        trainer.run()
    assert caught.value.step <= 5 and trainer.state.step == 5


def test_trainer_reports_a_discriminator_that_wins():
    """D trained hard, G barely: the detector fires on the trainer's own accuracy statistics."""
    spec = _ring_spec(lr_d=0.01, lr_g=1e-7, d_steps=3, steps=400,
                      health={"every": 20, "min_step": 100, "d_window": 100})
    cb = _Collect()
    Trainer(spec, callbacks=cb).run()
    assert DISCRIMINATOR_WON in [f.detector for f in cb.findings]


def test_trainer_health_off_reports_nothing():
    spec = _ring_spec(lr_d=0.01, lr_g=1e-7, d_steps=3, steps=300,
                      health={"enabled": False, "min_step": 0, "d_window": 50})
    cb = _Collect()
    trainer = Trainer(spec, callbacks=cb)
    trainer.run()
    assert trainer.health is None and cb.findings == []
    assert math.isfinite(trainer.state.step)


@pytest.mark.parametrize("ema_decay", [None, 0.99])
def test_trainer_waits_for_the_ema_before_judging_its_samples(ema_decay):
    """G barely trains (lr 1e-7), so its fixed batch stays the initial network's narrow cloud. Without
    an EMA that is reported as a collapse; with an EMA (decay 0.99: warm-up 299 steps) the run
    ends at step 250, before the sample checks start, and nothing is reported."""
    spec = JobSpec.model_validate({**_ring_spec(lr_g=1e-7, steps=250, health={"every": 10, "min_step": 0, "patience": 2,
                                                                              "diversity_ratio": 0.9}).model_dump(),
                                   "model": {**_ring_spec().model.model_dump(), "ema_decay": ema_decay}})
    cb = _Collect()
    trainer = Trainer(spec, callbacks=cb)
    trainer.run()
    collapses = [f for f in cb.findings if f.detector == MODE_COLLAPSE]
    if ema_decay is None:
        assert trainer.health.samples_from_step == 0 and collapses
    else:
        assert trainer.health.samples_from_step == 299 and not collapses
