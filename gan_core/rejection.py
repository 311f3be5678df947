"""Discriminator rejection sampling (Azadi et al., "Discriminator Rejection Sampling", ICLR 2019).

A discriminator trained with the logistic loss approaches D*(x) = p_data / (p_data + p_g), whose
logit is log(p_data(x) / p_g(x)). Rejection sampling that keeps a generated x with probability
p_data(x) / (M p_g(x)) = exp(logit(x) - log M) gives samples of the data's distribution wherever
the bound M holds. The true bound would reject almost everything, so (as DRS does with its shift
gamma) the bound is put at a quantile of the logits instead: x is kept with probability
min(1, exp(logit(x) - t)), t = the ``quantile`` of the logits of ``BURN_IN`` generated samples.
Samples D finds at least that data-like are always kept, the others in proportion to their
estimated density ratio.

On the 2-D mixtures this removes most of what a continuous generator leaves on the bridges
between modes (bench/README.md). Only for a discriminator trained with the logistic loss (``bce``,
``minimax``): the output of an LSGAN, WGAN or hinge critic is not a log density ratio.
Everything here draws from its own ``torch.Generator``: the training RNG is never touched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

BURN_IN = 10_240  # generated samples whose logits set the threshold
BURN_IN_SEED = 20_190_501
MAX_DRAWS_PER_SAMPLE = 50  # give up when fewer than 1 in 50 candidates would be kept
SCORE_CHUNK = 1024  # candidates scored at once by a discriminator without minibatch statistics


class RejectionError(ValueError):
    """The discriminator keeps too few samples for rejection sampling to finish."""


@dataclass
class Rejector:
    """A discriminator (eval mode) and the logit at which a sample is always kept."""

    discriminator: nn.Module
    threshold: float
    chunk: int  # candidates are drawn and scored in groups of this size

    @torch.no_grad()
    def accept(self, x: Tensor, y: Tensor | None, rng: torch.Generator) -> Tensor:
        """Keep-or-not (CPU bool, one per row of ``x``; ``len(x)`` a multiple of ``chunk``)."""
        logits = score(self.discriminator, x, y, self.chunk).float().cpu()
        keep_probability = torch.exp(torch.clamp(logits - self.threshold, max=0.0))
        return torch.rand(len(logits), generator=rng) < keep_probability


def chunk_size(discriminator: nn.Module, batch_size: int) -> int:
    """Minibatch standard deviation makes a score depend on its batch: score in training-size batches."""
    if getattr(discriminator, "minibatch_std", False):
        return batch_size
    return max(batch_size, SCORE_CHUNK)


@torch.no_grad()
def score(discriminator: nn.Module, x: Tensor, y: Tensor | None, chunk: int) -> Tensor:
    """D's logits for ``x`` in batches of ``chunk``, in eval mode (the module's mode is restored)."""
    was_training = discriminator.training
    discriminator.eval()
    try:
        out = []
        for start in range(0, len(x), chunk):
            yb = y[start : start + chunk] if y is not None else None
            out.append(discriminator(x[start : start + chunk], yb)[0])
        return torch.cat(out)
    finally:
        discriminator.train(was_training)


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def _draw(generator: nn.Module, n: int, y: Tensor | None, rng: torch.Generator) -> Tensor:
    device = _device(generator)
    z = generator.sample_latent(n, rng).to(device)
    return generator(z, y.to(device) if y is not None else None).float()


@torch.no_grad()
def build_rejector(
    generator: nn.Module, discriminator: nn.Module, quantile: float, batch_size: int, num_classes: int | None
) -> Rejector:
    """A Rejector whose threshold is the ``quantile`` of D's logits over BURN_IN samples of G."""
    chunk = chunk_size(discriminator, batch_size)
    n = math.ceil(BURN_IN / chunk) * chunk
    rng = torch.Generator().manual_seed(BURN_IN_SEED)
    y = torch.arange(n) % num_classes if num_classes else None
    was_training = generator.training
    generator.eval()
    try:
        x = torch.cat([_draw(generator, chunk, y[i : i + chunk] if y is not None else None, rng)
                       for i in range(0, n, chunk)])
    finally:
        generator.train(was_training)
    device = _device(discriminator)
    logits = score(discriminator, x.to(device), y.to(device) if y is not None else None, chunk).float().cpu()
    if not torch.isfinite(logits).all():
        raise RejectionError("the discriminator gives non-finite scores; rejection sampling is impossible")
    return Rejector(discriminator, float(torch.quantile(logits, quantile)), chunk)


@torch.no_grad()
def sample(
    generator: nn.Module, rejector: Rejector, n: int, rng: torch.Generator, labels: Tensor | None = None
) -> tuple[Tensor, float]:
    """``n`` kept samples (CPU float32, in slot order; slot i has ``labels[i]``) and the share of
    candidates kept. Deterministic for a given ``rng`` state."""
    chunk = rejector.chunk
    device = _device(generator)
    out: Tensor | None = None
    filled = torch.zeros(n, dtype=torch.bool)
    drawn = kept = 0
    was_training = generator.training
    generator.eval()
    try:
        while not bool(filled.all()):
            if drawn >= MAX_DRAWS_PER_SAMPLE * n:
                raise RejectionError(
                    f"the discriminator kept {kept} of {drawn} candidates; too few for rejection sampling"
                )
            open_slots = (~filled).nonzero().squeeze(1)
            rounds = math.ceil(len(open_slots) / chunk)
            slots = open_slots[torch.arange(rounds * chunk) % len(open_slots)]
            for start in range(0, len(slots), chunk):
                part = slots[start : start + chunk]
                y = labels[part] if labels is not None else None
                x = _draw(generator, chunk, y, rng)
                keep = rejector.accept(x, y.to(device) if y is not None else None, rng)
                drawn += chunk
                kept += int(keep.sum())
                if not bool(keep.any()):
                    continue
                x_kept, slot_kept = x[keep.to(x.device)].cpu(), part[keep]
                # The first kept candidate of each still-open slot fills it.
                unique, first = (torch.from_numpy(a) for a in np.unique(slot_kept.numpy(), return_index=True))
                fresh = ~filled[unique]
                unique, first = unique[fresh], first[fresh]
                if out is None:
                    out = torch.empty((n, *x.shape[1:]), dtype=torch.float32)
                out[unique] = x_kept[first]
                filled[unique] = True
    finally:
        generator.train(was_training)
    assert out is not None
    return out, kept / drawn
