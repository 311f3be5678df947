"""Adversarial losses, all computed from the discriminator's raw logits.

Never sigmoid followed by BCE: log(sigmoid(x)) = -softplus(-x) and log(1 - sigmoid(x)) =
-softplus(x), and softplus stays finite and accurate for logits of any size, where the sigmoid
saturates to exactly 0 or 1 and the log gives -inf.

Losses (``spec.loss``):

* ``minimax``: the original saturating game; G minimises log(1 - D(G(z))).
* ``bce``: the non-saturating variant (G maximises log D(G(z)), "flip the labels").
* ``lsgan``: least squares (Mao et al., a=0, b=1, c=1).
* ``wgan-gp``: Wasserstein critic; the caller adds ``gp_weight * gradient_penalty(...)``.
* ``hinge``: hinge loss (as in SN-GAN, BigGAN).

Every loss is a mean over the batch and computed in float32 (safe under bf16 autocast).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LOSSES = ("minimax", "bce", "lsgan", "wgan-gp", "hinge")
# Losses whose D objective has a "real" target that one-sided label smoothing can lower.
_SMOOTHABLE = ("minimax", "bce", "lsgan")
_GP_EPS = 1e-12  # keeps the norm's gradient finite where the input gradient is exactly zero


def _check(loss_name: str) -> None:
    if loss_name not in LOSSES:
        raise ValueError(f"unknown loss '{loss_name}'; expected one of {LOSSES}")


def d_loss(loss_name: str, real_logits: Tensor, fake_logits: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Discriminator loss (scalar): the sum of :func:`d_loss_real` and :func:`d_loss_fake`."""
    return d_loss_real(loss_name, real_logits, label_smoothing) + d_loss_fake(loss_name, fake_logits)


def d_loss_real(loss_name: str, real_logits: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """The real samples' part of the discriminator loss (scalar): every loss here is a sum of a
    term in the real logits and one in the fake logits, so D may also be updated on each alone.

    ``label_smoothing`` s is one-sided (Salimans et al.): the target of real samples becomes
    1 - s, fakes keep 0. It applies to minimax/bce (BCE target) and lsgan (target b = 1 - s);
    hinge and wgan-gp have no target to smooth, so a non-zero s is refused for them.
    """
    _check(loss_name)
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), not {label_smoothing}")
    if label_smoothing and loss_name not in _SMOOTHABLE:
        raise ValueError(f"label smoothing does not apply to the '{loss_name}' loss")
    r = real_logits.float()
    target = 1.0 - label_smoothing
    if loss_name in ("minimax", "bce"):
        # BCE with logits: -t log sigmoid(r) - (1 - t) log(1 - sigmoid(r)) = t sp(-r) + (1 - t) sp(r)
        return (target * F.softplus(-r) + (1.0 - target) * F.softplus(r)).mean()
    if loss_name == "lsgan":
        return 0.5 * (r - target).pow(2).mean()
    if loss_name == "wgan-gp":
        return -r.mean()
    return F.relu(1.0 - r).mean()  # hinge


def d_loss_fake(loss_name: str, fake_logits: Tensor) -> Tensor:
    """The generated samples' part of the discriminator loss (scalar); see :func:`d_loss_real`."""
    _check(loss_name)
    f = fake_logits.float()
    if loss_name in ("minimax", "bce"):
        return F.softplus(f).mean()  # BCE against target 0
    if loss_name == "lsgan":
        return 0.5 * f.pow(2).mean()
    if loss_name == "wgan-gp":
        return f.mean()
    return F.relu(1.0 + f).mean()  # hinge


def g_loss(loss_name: str, fake_logits: Tensor) -> Tensor:
    """Generator loss (scalar) from D's logits on generated samples."""
    _check(loss_name)
    f = fake_logits.float()
    if loss_name == "minimax":
        return -F.softplus(f).mean()  # log(1 - sigmoid(f)), minimised
    if loss_name == "bce":
        return F.softplus(-f).mean()  # -log sigmoid(f): BCE against the "real" label
    if loss_name == "lsgan":
        return 0.5 * (f - 1.0).pow(2).mean()
    return -f.mean()  # wgan-gp and hinge


def gradient_penalty(
    discriminator: nn.Module,
    real: Tensor,
    fake: Tensor,
    y: Tensor | None = None,
    rng: torch.Generator | None = None,
    alpha: Tensor | None = None,
) -> Tensor:
    """WGAN-GP penalty (Gulrajani et al.): mean over x_hat of (||grad_x D(x_hat)||_2 - 1)^2.

    x_hat is a random interpolation between each real sample and a generated one (one mixing
    weight per sample). With packing, D sees groups of samples; the norm is then taken over the
    whole packed input of each group, the quantity D is Lipschitz in. ``create_graph=True`` so
    that the penalty can be back-propagated into D. The gradient is taken with respect to the
    input x_hat only (DistributedDataParallel supports no double backward through parameters).
    ``alpha`` (B, 1, ...) gives the mixing weights (data-parallel training draws them for the global
    batch); else they are drawn here from ``rng``.
    """
    batch = real.shape[0]
    if alpha is None:
        alpha = torch.rand((batch,) + (1,) * (real.dim() - 1), device=real.device, dtype=real.dtype, generator=rng)
    x_hat = (alpha * real.detach() + (1.0 - alpha) * fake.detach()).requires_grad_(True)
    logits, _ = discriminator(x_hat, y)
    (grad,) = torch.autograd.grad(logits.sum(), x_hat, create_graph=True)
    grad = grad.float().reshape(logits.shape[0], -1)  # (B // pack, pack * prod(shape))
    norm = torch.sqrt(grad.pow(2).sum(dim=1) + _GP_EPS)
    return (norm - 1.0).pow(2).mean()


def aux_class_loss(class_logits: Tensor, y: Tensor) -> Tensor:
    """ACGAN auxiliary classification loss: cross-entropy of D's class logits (B, K) with labels (B,)."""
    return F.cross_entropy(class_logits.float(), y)


def decision_threshold(loss_name: str) -> float:
    """The logit above which D calls a sample real (for the discriminator-accuracy metric).

    0 for minimax/bce (sigmoid 0.5), hinge and wgan-gp (sign of the score); 0.5 for lsgan,
    halfway between its fake target 0 and real target 1.
    """
    _check(loss_name)
    return 0.5 if loss_name == "lsgan" else 0.0


def d_probability(loss_name: str, logits: Tensor) -> Tensor:
    """D(x) as reported in logs: a probability sigmoid(logits) for minimax/bce.

    The other losses have no probabilistic reading, so their raw scores are returned unchanged
    (compare them with :func:`decision_threshold`, not with 0.5).
    """
    _check(loss_name)
    if loss_name in ("minimax", "bce"):
        return torch.sigmoid(logits.float())
    return logits.float()
