"""GAN health: detectors of the three ways a GAN run goes bad for good.

* ``diverged``: a loss became NaN or infinite (the trainer checks every step's losses at each
  read-back; see :func:`first_non_finite`), or the generator's samples did.
* ``discriminator_won``: D tells real from fake almost perfectly for a long window of steps. Its
  logits then sit deep in the saturated region and G's gradient carries little signal (Goodfellow
  et al. 2014, Arjovsky & Bottou 2017). Measured on D's own outputs for the real and the fake
  batch of every step: the share of real samples above the loss's decision threshold and of fake
  samples at or below it (``losses.decision_threshold``: the sigmoid's 0.5 for minimax/bce, 0.5
  for lsgan's targets 0 and 1, the sign for hinge). Skipped for wgan-gp: a critic has no decision
  threshold (its scores shift freely), and the gradient penalty keeps G's gradient informative
  however well the critic separates the two distributions, which is the point of WGAN.
* ``mode_collapse``: G's samples from a fixed noise batch lose their diversity. The mean
  pairwise distance of the batch falls below ``diversity_ratio`` times the real data's (measured
  once on a real batch of the same size), or, on the 2-D mixtures, the modes the batch covers
  (``quality.evaluate_mixture``) fall to ``mode_drop`` times the most it covered before.

The detectors are plain objects fed with numbers and tensors: no trainer, no service. Each
reports an episode once (when it starts), not at every check while it lasts.

The fixed batch comes from the network a job ships, the EMA of G when ``model.ema_decay`` is set.
That average starts from G's initial weights and forgets them only slowly (decay 0.998 still holds
30 % of them at step 600), so its batch looks collapsed early in every run: the sample checks
start once the initial weights weigh at most 5 % (:func:`ema_warmup_steps`), or at ``min_step``
if that is later. (Without this a grid25 sweep had its trials stopped as collapsed at step 600.)
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from gan_core import losses, quality
from gan_core.spec import HEALTH_REASONS as REASONS
from gan_core.spec import HealthSpec

DIVERGED, DISCRIMINATOR_WON, MODE_COLLAPSE = REASONS


@dataclass(frozen=True)
class Finding:
    """One detector firing: ``detector`` is also the reason a stopped job gives."""

    detector: str
    step: int
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def first_non_finite(values: Tensor) -> int | None:
    """Index of the first row of ``values`` (steps × quantities) holding a NaN or an infinity."""
    finite = torch.isfinite(values).all(dim=1)
    if bool(finite.all()):
        return None
    return int((~finite).nonzero()[0, 0])


def diverged(step: int, values: dict[str, float]) -> Finding:
    shown = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
    return Finding(DIVERGED, step, f"non-finite loss at step {step} ({shown})")


def mean_pairwise_distance(x: Tensor) -> float:
    """Mean Euclidean distance over all pairs of the rows of ``x`` (N, ...) flattened; NaN if non-finite."""
    flat = x.reshape(len(x), -1).float()
    if len(flat) < 2:
        raise ValueError("the mean pairwise distance needs at least 2 samples")
    return float(torch.pdist(flat).mean())


class DiscriminatorWon:
    """Fires when D's mean accuracy on real and on fake samples are both at least ``accuracy``
    over the last ``window`` steps (only steps from ``min_step`` on count)."""

    def __init__(self, loss: str, accuracy: float = 0.99, window: int = 500, min_step: int = 0):
        self.skip_reason = None
        if loss == "wgan-gp":
            self.skip_reason = ("wgan-gp: a critic has no decision threshold, and its gradient penalty keeps G's "
                                "gradient informative however well it separates real from fake")
        self.threshold = losses.decision_threshold(loss)
        self.accuracy, self.window, self.min_step = accuracy, window, min_step
        self._real: deque[float] = deque(maxlen=window)
        self._fake: deque[float] = deque(maxlen=window)
        self._sum_real = self._sum_fake = 0.0
        self.active = False

    def observe(self, first_step: int, acc_real: Sequence[float], acc_fake: Sequence[float]) -> Finding | None:
        """Per-step accuracies of steps ``first_step``, ``first_step + 1``, ...; a finding when an
        episode starts within them."""
        if self.skip_reason is not None:
            return None
        found = None
        for offset, (real, fake) in enumerate(zip(acc_real, acc_fake)):
            step = first_step + offset
            if step < self.min_step:
                continue
            if len(self._real) == self.window:  # running sums over the window (the deque drops the oldest)
                self._sum_real -= self._real[0]
                self._sum_fake -= self._fake[0]
            self._real.append(float(real))
            self._fake.append(float(fake))
            self._sum_real += float(real)
            self._sum_fake += float(fake)
            if len(self._real) < self.window:
                continue
            mean_real, mean_fake = self._sum_real / self.window, self._sum_fake / self.window
            won = mean_real >= self.accuracy and mean_fake >= self.accuracy
            if won and not self.active and found is None:
                found = Finding(DISCRIMINATOR_WON, step, (
                    f"D's accuracy over steps {step - self.window + 1}-{step}: {100 * mean_real:.1f} % on real, "
                    f"{100 * mean_fake:.1f} % on fake samples (threshold {100 * self.accuracy:g} %): "
                    "the generator gets almost no gradient signal"))
            self.active = won
        return found


class DiversityCollapse:
    """Fires when the mean pairwise distance of G's fixed batch stays below ``ratio`` times the
    real data's (``real_distance``) for ``patience`` consecutive checks from ``min_step`` on."""

    def __init__(self, real_distance: float, ratio: float = 0.2, patience: int = 3, min_step: int = 0):
        if not real_distance > 0:
            raise ValueError("the real data's mean pairwise distance must be positive")
        self.real_distance, self.ratio, self.patience, self.min_step = real_distance, ratio, patience, min_step
        self._low = 0
        self.active = False

    def observe(self, step: int, distance: float) -> Finding | None:
        if step < self.min_step:
            return None
        relative = distance / self.real_distance
        self._low = self._low + 1 if relative < self.ratio else 0
        collapsed = self._low >= self.patience
        found = None
        if collapsed and not self.active:
            found = Finding(MODE_COLLAPSE, step, (
                f"the generator's fixed batch has a mean pairwise distance of {distance:.4g}, "
                f"{100 * relative:.1f} % of the real data's {self.real_distance:.4g} (threshold "
                f"{100 * self.ratio:g} %) for {self._low} checks"))
        self.active = collapsed
        return found


class ModeDrop:
    """2-D mixtures: fires when the modes G's fixed batch covers stay at most ``drop`` times the
    most it covered at an earlier check (and fewer than all) for ``patience`` consecutive checks,
    once that most is at least half of the modes. Before then the batch is still finding the modes
    and its count swings: grid25 runs that ended with 25/25 went from 6-8 covered modes to 2-4 and
    back between steps 1400 and 1850 (a total collapse is the diversity check's to catch)."""

    def __init__(self, n_modes: int, drop: float = 0.5, patience: int = 3, min_step: int = 0):
        self.n_modes, self.drop, self.patience, self.min_step = n_modes, drop, patience, min_step
        self.best = 0
        self._low = 0
        self.active = False

    def observe(self, step: int, modes: int) -> Finding | None:
        if step < self.min_step:
            return None
        dropped = 2 * self.best >= self.n_modes and modes < self.n_modes and modes <= self.drop * self.best
        self._low = self._low + 1 if dropped else 0
        self.best = max(self.best, modes)
        collapsed = self._low >= self.patience
        found = None
        if collapsed and not self.active:
            found = Finding(MODE_COLLAPSE, step, (
                f"the generator's fixed batch covers {modes} of {self.n_modes} modes, down from {self.best} "
                f"(threshold {100 * self.drop:g} % of the best) for {self._low} checks"))
        self.active = collapsed
        return found


def ema_warmup_steps(decay: float | None, remaining: float = 0.05) -> int:
    """Steps after which an EMA of the weights with this ``decay`` (no bias correction) holds at
    most ``remaining`` of its initial weights: 1497 for 0.998, 2995 for 0.999; 0 without an EMA."""
    if not decay:
        return 0
    return math.ceil(math.log(remaining) / math.log(decay))


class HealthMonitor:
    """The detectors of one run, configured by ``train.health``.

    ``real`` is a real batch of ``spec.samples`` examples (the diversity reference); ``centers``
    and ``sigma`` the mode centres of a 2-D mixture (None for images). The checks of G's fixed
    batch start at ``samples_from_step`` (the EMA's warm-up) or ``spec.min_step``, whichever is later.
    """

    def __init__(self, spec: HealthSpec, loss: str, real: Tensor, centers: Tensor | None = None,
                 sigma: float | None = None, samples_from_step: int = 0):
        self.spec = spec
        self.d_won = DiscriminatorWon(loss, spec.d_accuracy, spec.d_window, spec.min_step)
        self.real_distance = mean_pairwise_distance(real)
        self.samples_from_step = max(spec.min_step, samples_from_step)
        self.diversity = DiversityCollapse(self.real_distance, spec.diversity_ratio, spec.patience,
                                           self.samples_from_step)
        self.centers, self.sigma = (centers.cpu(), sigma) if centers is not None else (None, None)
        self.modes = (ModeDrop(len(centers), spec.mode_drop, spec.patience, self.samples_from_step)
                      if centers is not None else None)
        self._samples_diverged = False

    @property
    def skipped(self) -> dict[str, str]:
        """Detectors that do not apply to this run, with the reason."""
        return {DISCRIMINATOR_WON: self.d_won.skip_reason} if self.d_won.skip_reason else {}

    def observe_steps(self, first_step: int, acc_real: Sequence[float], acc_fake: Sequence[float]) -> list[Finding]:
        found = self.d_won.observe(first_step, acc_real, acc_fake)
        return [found] if found else []

    def observe_samples(self, step: int, samples: Tensor) -> list[Finding]:
        """Checks on G's fixed batch (N, *data_shape) at ``step``."""
        samples = samples.detach().float().cpu()
        if not bool(torch.isfinite(samples).all()):
            if self._samples_diverged:
                return []
            self._samples_diverged = True
            return [Finding(DIVERGED, step, f"the generator's samples hold non-finite values at step {step}")]
        self._samples_diverged = False
        findings = []
        distance = mean_pairwise_distance(samples)
        if math.isfinite(distance):
            found = self.diversity.observe(step, distance)
            if found:
                findings.append(found)
        if self.modes is not None:
            modes = quality.evaluate_mixture(samples, self.centers, self.sigma)["modes"]
            found = self.modes.observe(step, modes)
            if found and not self.diversity.active:  # one collapse, one finding
                findings.append(found)
        return findings
