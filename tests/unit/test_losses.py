"""Losses of gan_core.losses against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gan_core.losses import (
    LOSSES,
    aux_class_loss,
    d_loss,
    d_probability,
    decision_threshold,
    g_loss,
    gradient_penalty,
)
from gan_core.models import build_discriminator
from gan_core.spec import ModelSpec

torch.set_num_threads(1)

R = [2.0, -1.0]
F_ = [0.5, -3.0]


def sp(x: float) -> float:
    """softplus by hand."""
    return math.log(1.0 + math.exp(x))


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def t(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def test_minimax_and_bce_discriminator_loss() -> None:
    # -log sigmoid(r) = log(1 + e^-r); -log(1 - sigmoid(f)) = log(1 + e^f)
    expected = mean([math.log(1 + math.exp(-2.0)), math.log(1 + math.exp(1.0))]) + mean(
        [math.log(1 + math.exp(0.5)), math.log(1 + math.exp(-3.0))]
    )
    for name in ("minimax", "bce"):
        assert d_loss(name, t(R), t(F_)).item() == pytest.approx(expected, rel=1e-6)
    # Same as the textbook sigmoid + BCE where that is still accurate.
    reference = F.binary_cross_entropy(torch.sigmoid(t(R)), torch.ones(2)) + F.binary_cross_entropy(
        torch.sigmoid(t(F_)), torch.zeros(2)
    )
    assert d_loss("bce", t(R), t(F_)).item() == pytest.approx(reference.item(), rel=1e-5)


def test_generator_losses_by_hand() -> None:
    # minimax: minimise log(1 - sigmoid(f)) = -log(1 + e^f)
    assert g_loss("minimax", t(F_)).item() == pytest.approx(
        mean([-math.log(1 + math.exp(0.5)), -math.log(1 + math.exp(-3.0))]), rel=1e-6
    )
    # non-saturating: -log sigmoid(f) = log(1 + e^-f)
    assert g_loss("bce", t(F_)).item() == pytest.approx(
        mean([math.log(1 + math.exp(-0.5)), math.log(1 + math.exp(3.0))]), rel=1e-6
    )
    assert g_loss("lsgan", t(F_)).item() == pytest.approx(0.5 * mean([(0.5 - 1) ** 2, (-3.0 - 1) ** 2]))  # 4.0625
    assert g_loss("wgan-gp", t(F_)).item() == pytest.approx(1.25)
    assert g_loss("hinge", t(F_)).item() == pytest.approx(1.25)


def test_other_discriminator_losses_by_hand() -> None:
    lsgan = 0.5 * mean([(2.0 - 1) ** 2, (-1.0 - 1) ** 2]) + 0.5 * mean([0.5**2, (-3.0) ** 2])
    assert lsgan == pytest.approx(3.5625)
    assert d_loss("lsgan", t(R), t(F_)).item() == pytest.approx(lsgan)
    assert d_loss("wgan-gp", t(R), t(F_)).item() == pytest.approx(mean(F_) - mean(R))  # -1.75
    hinge = mean([max(0.0, 1 - 2.0), max(0.0, 1 + 1.0)]) + mean([max(0.0, 1 + 0.5), max(0.0, 1 - 3.0)])
    assert d_loss("hinge", t(R), t(F_)).item() == pytest.approx(hinge)  # 1.75


def test_one_sided_label_smoothing() -> None:
    s = 0.1
    # Real target 0.9: 0.9 * (-log sigmoid(r)) + 0.1 * (-log(1 - sigmoid(r))); fakes unchanged.
    real = mean([(1 - s) * sp(-r) + s * sp(r) for r in R])
    fake = mean([sp(f) for f in F_])
    assert d_loss("bce", t(R), t(F_), label_smoothing=s).item() == pytest.approx(real + fake, rel=1e-6)
    assert d_loss("minimax", t(R), t(F_), label_smoothing=s).item() == pytest.approx(real + fake, rel=1e-6)
    lsgan = 0.5 * mean([(r - 0.9) ** 2 for r in R]) + 0.5 * mean([f**2 for f in F_])
    assert d_loss("lsgan", t(R), t(F_), label_smoothing=s).item() == pytest.approx(lsgan)
    # Smoothing changes the loss: the minimum is no longer at r -> infinity.
    assert d_loss("bce", t([20.0]), t([-20.0]), label_smoothing=s).item() > 1.0
    for name in ("hinge", "wgan-gp"):
        with pytest.raises(ValueError):
            d_loss(name, t(R), t(F_), label_smoothing=s)
    with pytest.raises(ValueError):
        d_loss("bce", t(R), t(F_), label_smoothing=1.0)


@pytest.mark.parametrize("name", LOSSES)
def test_stable_at_huge_logits(name: str) -> None:
    real = torch.tensor([1000.0, -1000.0], requires_grad=True)
    fake = torch.tensor([-1000.0, 1000.0], requires_grad=True)
    smoothing = 0.1 if name in ("minimax", "bce", "lsgan") else 0.0
    loss_d = d_loss(name, real, fake, label_smoothing=smoothing)
    loss_g = g_loss(name, fake)
    assert torch.isfinite(loss_d) and torch.isfinite(loss_g)
    (loss_d + loss_g).backward()
    assert torch.isfinite(real.grad).all() and torch.isfinite(fake.grad).all()
    if name == "bce":
        # Confidently wrong on one sample of each: about 1000 / 2 per term, not inf.
        assert d_loss(name, real.detach(), fake.detach()).item() == pytest.approx(1000.0, rel=1e-6)
        assert g_loss(name, fake.detach()).item() == pytest.approx(500.0, rel=1e-6)


def test_losses_are_computed_in_float32_from_bf16_logits() -> None:
    real, fake = t(R).bfloat16(), t(F_).bfloat16()
    assert d_loss("bce", real, fake).dtype == torch.float32
    assert g_loss("hinge", fake).dtype == torch.float32


def test_unknown_loss_is_refused() -> None:
    with pytest.raises(ValueError):
        d_loss("wgan", t(R), t(F_))
    with pytest.raises(ValueError):
        g_loss("nope", t(F_))


class LinearCritic(nn.Module):
    """D(x) = w . flatten(x), optionally on packed groups of samples (like the real discriminator)."""

    def __init__(self, w: torch.Tensor, pack: int = 1) -> None:
        super().__init__()
        self.w = nn.Parameter(w)
        self.pack = pack

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        return x.reshape(x.shape[0] // self.pack, -1) @ self.w, None


def unit(n: int, seed: int) -> torch.Tensor:
    w = torch.randn(n, generator=torch.Generator().manual_seed(seed))
    return w / w.norm()


def test_gradient_penalty_of_linear_critics() -> None:
    real, fake = torch.randn(6, 1, 3, 3), torch.randn(6, 1, 3, 3)
    w = unit(9, 0)
    assert gradient_penalty(LinearCritic(w), real, fake).item() == pytest.approx(0.0, abs=1e-6)
    assert gradient_penalty(LinearCritic(3.0 * w), real, fake).item() == pytest.approx(4.0, rel=1e-5)
    assert gradient_penalty(LinearCritic(0.5 * w), real, fake).item() == pytest.approx(0.25, rel=1e-5)


def test_gradient_penalty_with_packing_uses_the_norm_over_each_group() -> None:
    real, fake = torch.randn(8, 2), torch.randn(8, 2)
    w = unit(4, 1)  # the critic sees 2 packed points: 4 inputs
    assert gradient_penalty(LinearCritic(w, pack=2), real, fake).item() == pytest.approx(0.0, abs=1e-6)
    assert gradient_penalty(LinearCritic(3.0 * w, pack=2), real, fake).item() == pytest.approx(4.0, rel=1e-5)


def test_gradient_penalty_trains_the_critic() -> None:
    # The penalty must be differentiable with respect to D's weights (create_graph=True).
    critic = LinearCritic(3.0 * unit(9, 2))
    penalty = gradient_penalty(critic, torch.randn(4, 9), torch.randn(4, 9))
    penalty.backward()
    # d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||: here 2 * 2 * unit direction, norm 4.
    assert critic.w.grad.norm().item() == pytest.approx(4.0, rel=1e-5)


def test_gradient_penalty_interpolates_between_real_and_fake() -> None:
    seen: list[torch.Tensor] = []

    class Spy(LinearCritic):
        def forward(self, x, y=None):
            seen.append(x.detach())
            return super().forward(x, y)

    real, fake = torch.zeros(64, 3), torch.ones(64, 3)
    gradient_penalty(Spy(unit(3, 3)), real, fake, rng=torch.Generator().manual_seed(0))
    x_hat = seen[0]
    # One mixing weight per sample: every row constant, the weights spread over (0, 1).
    assert torch.allclose(x_hat, x_hat[:, :1].expand(-1, 3))
    assert 0.0 <= x_hat.min() and x_hat.max() <= 1.0 and x_hat[:, 0].std() > 0.2


@pytest.mark.parametrize("model", [
    ModelSpec(arch="dcgan", ndf=8, d_norm="layer"),
    ModelSpec(arch="dcgan", ndf=8, pack=2, minibatch_std=True, spectral_norm=True),
    ModelSpec(hidden_d=[32], pack=4),
])
def test_gradient_penalty_on_real_discriminators(model: ModelSpec) -> None:
    d = build_discriminator(model, (1, 28, 28), None, "wgan-gp")
    real, fake = torch.randn(8, 1, 28, 28), torch.randn(8, 1, 28, 28)
    loss = d_loss("wgan-gp", *[d(x)[0] for x in (real, fake)]) + 10.0 * gradient_penalty(d, real, fake)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in d.parameters())


def test_aux_class_loss_is_cross_entropy() -> None:
    logits = t([2.0, 0.0, -1.0]).reshape(1, 3)
    expected = -math.log(math.exp(2.0) / (math.exp(2.0) + 1.0 + math.exp(-1.0)))
    assert aux_class_loss(logits, torch.tensor([0])).item() == pytest.approx(expected, rel=1e-6)
    expected_2 = -math.log(math.exp(-1.0) / (math.exp(2.0) + 1.0 + math.exp(-1.0)))
    both = aux_class_loss(torch.cat([logits, logits]), torch.tensor([0, 2]))
    assert both.item() == pytest.approx((expected + expected_2) / 2, rel=1e-6)


def test_decision_threshold_and_probability() -> None:
    assert [decision_threshold(name) for name in LOSSES] == [0.0, 0.0, 0.5, 0.0, 0.0]
    logits = t([0.0, 2.0, -1000.0])
    for name in ("minimax", "bce"):
        p = d_probability(name, logits)
        assert p.tolist() == pytest.approx([0.5, 1 / (1 + math.exp(-2.0)), 0.0])
    for name in ("lsgan", "wgan-gp", "hinge"):
        assert torch.equal(d_probability(name, logits), logits)


@pytest.mark.parametrize("name", ["minimax", "bce", "lsgan", "wgan-gp", "hinge"])
def test_discriminator_loss_is_its_real_part_plus_its_fake_part(name: str) -> None:
    from gan_core.losses import d_loss_fake, d_loss_real

    smoothing = 0.1 if name in ("minimax", "bce", "lsgan") else 0.0
    real, fake = d_loss_real(name, t(R), label_smoothing=smoothing), d_loss_fake(name, t(F_))
    assert d_loss(name, t(R), t(F_), label_smoothing=smoothing).item() == pytest.approx((real + fake).item())


def test_discriminator_loss_parts_by_hand() -> None:
    from gan_core.losses import d_loss_fake, d_loss_real

    # BCE: real part -log sigmoid(r), fake part -log(1 - sigmoid(f)).
    assert d_loss_real("bce", t(R)).item() == pytest.approx(mean([math.log(1 + math.exp(-r)) for r in R]), rel=1e-6)
    assert d_loss_fake("bce", t(F_)).item() == pytest.approx(mean([math.log(1 + math.exp(f)) for f in F_]), rel=1e-6)
    assert d_loss_real("hinge", t(R)).item() == pytest.approx(mean([max(0.0, 1 - r) for r in R]))
    assert d_loss_fake("wgan-gp", t(F_)).item() == pytest.approx(mean(F_))
