"""The alternating GAN loop: ``d_steps`` discriminator updates, then ``g_steps`` generator updates.

``train_step`` is the whole algorithm (Goodfellow et al., Algorithm 1, with the D-then-G step of
pytorch/examples' dcgan); ``Trainer`` is a thin driver around it that adds the fixed-noise sample
grids, checkpoints, evaluation and the callbacks a service plugs into.

Statistics stay on the device as 0-d tensors and are read with ``.item()`` once per flush (a log,
sample, checkpoint or evaluation step), so a CUDA run does not synchronise on every step. A
non-finite loss is still pinned to the exact step where it first appeared.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from gan_core import checkpoint as ckpt
from gan_core import distributed, health, losses
from gan_core.data import DataConfig, Dataset, build_dataset
from gan_core.distributed import SINGLE, Parallel
from gan_core.models import EMA, LatentPrior, build_discriminator, build_generator
from gan_core.rejection import Rejector, build_rejector
from gan_core.spec import JobSpec

log = logging.getLogger(__name__)

# Order of the per-step statistics kept on the device (one row per step in a window).
STEP_STATS = ("loss_d", "loss_g", "d_real", "d_fake", "acc_real", "acc_fake", "gp", "aux")
# Points plotted in a 2-D mixture's sample "grid" (a scatter): 64 dots would not show the modes.
POINT_GRID_SAMPLES = 1000


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; ``step`` is the first step where it happened."""

    def __init__(self, step: int, values: dict[str, float]):
        self.step = step
        self.values = values
        super().__init__(f"non-finite loss at step {step}: {values}")


class Callbacks:
    """Hooks the trainer calls; override what you need. All run on the training thread."""

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None: ...

    def on_samples(self, step: int, png: bytes) -> None: ...

    def on_checkpoint(self, step: int, checkpoint: dict[str, Any]) -> None: ...

    def on_evaluation(self, step: int, results: dict[str, Any]) -> None: ...

    def on_health(self, step: int, findings: list[health.Finding]) -> None:
        """GAN health detectors fired (see gan_core.health); a service may stop the job."""
        for finding in findings:
            log.warning("GAN health at step %d: %s: %s", step, finding.detector, finding.message)

    def should_stop(self) -> bool:
        return False

    def long_operation(self, name: str) -> contextlib.AbstractContextManager:
        """Wraps work that polls nothing for a while (evaluation: perhaps training the domain
        classifier first); a service keeps its lease alive in here."""
        return contextlib.nullcontext()


@dataclass
class GANState:
    generator: nn.Module
    discriminator: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    ema: EMA | None
    num_classes: int | None
    step: int = 0
    # The modules that take the updates: DistributedDataParallel wrappers of the two above when
    # training on several ranks, else the networks themselves (see gan_core.distributed.wrap).
    train_g: nn.Module | None = None
    train_d: nn.Module | None = None

    def __post_init__(self) -> None:
        self.train_g = self.generator if self.train_g is None else self.train_g
        self.train_d = self.discriminator if self.train_d is None else self.train_d

    @property
    def sampling_generator(self) -> nn.Module:
        """The network samples come from: the EMA when enabled, else G itself."""
        return self.ema.module if self.ema is not None else self.generator


@dataclass
class TrainResult:
    step: int
    stopped: bool
    metrics: dict[str, float] = field(default_factory=dict)
    evaluation: dict[str, Any] | None = None


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("the spec asks for device 'cuda' but no CUDA device is available")
    return torch.device(requested)


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """No weight gradients for ``module`` (gradients still flow through it to its input)."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def grad_norm(module: nn.Module) -> Tensor:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def make_optimizer(params, lr: float, betas: tuple[float, float], device: torch.device) -> torch.optim.Adam:
    # The fused kernel (one pass over all parameters) is the fastest Adam on both CPU and CUDA.
    try:
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr, betas=betas, foreach=True)


def build_state(spec: JobSpec, data_shape: tuple[int, ...], num_classes: int | None, device: torch.device) -> GANState:
    model = spec.model
    generator = build_generator(model, data_shape, num_classes).to(device)
    discriminator = build_discriminator(model, data_shape, num_classes, spec.loss).to(device)
    betas = (spec.train.beta1, spec.train.beta2)
    return GANState(
        generator=generator,
        discriminator=discriminator,
        opt_g=make_optimizer(generator.parameters(), spec.train.lr_g, betas, device),
        opt_d=make_optimizer(discriminator.parameters(), spec.train.lr_d, betas, device),
        ema=EMA(generator, model.ema_decay) if model.ema_decay else None,
        num_classes=num_classes,
    )


class NoiseSource:
    """Latent vectors and fake labels from the job's own generator (saved in checkpoints)."""

    def __init__(self, latent_dim: int, num_classes: int | None, device: torch.device, seed: int,
                 prior: LatentPrior | None = None):
        self.latent_dim = latent_dim
        self.prior = prior or LatentPrior(latent_dim)
        self.num_classes = num_classes
        self.device = device
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)

    def z(self, n: int) -> Tensor:
        return self.prior.sample(n, self.generator)

    def labels(self, n: int) -> Tensor | None:
        if not self.num_classes:
            return None
        return torch.randint(0, self.num_classes, (n,), device=self.device, generator=self.generator)


def train_step(state: GANState, data: Dataset, noise: NoiseSource, spec: JobSpec, with_grad_norms: bool = False,
               parallel: Parallel = SINGLE) -> dict[str, Tensor]:
    """One step of the alternating algorithm; returns detached 0-d tensors (see STEP_STATS).

    D sees real data and a fake batch made without building G's graph (the effect of
    ``detach()``); each network has its own optimizer and ``zero_grad``. Every update draws fresh
    noise and a fresh real batch.

    Data-parallel (``parallel`` with several ranks): every draw is of the global batch, from the
    same streams as one process, and this rank keeps its slice; ``state.train_d`` /
    ``state.train_g`` are DDP wrappers that average the ranks' gradients. The D update's extra
    forwards run under ``no_sync`` (one backward, one all-reduce). The G update calls D's plain
    module with D's weights frozen (``requires_grad`` off): no D weight gradient is computed at
    all, so there is nothing to all-reduce; ``no_sync`` alone would still compute D's gradients
    and leave them to leak into the next D update.
    """
    G, D = state.generator, state.discriminator
    D_train, G_train = state.train_d, state.train_g
    cfg, loss = spec.train, spec.loss
    batch = cfg.batch_size  # the global batch
    local = parallel.local
    acgan = spec.model.conditioning == "acgan"
    wgan_gp = loss == "wgan-gp"
    threshold = losses.decision_threshold(loss)
    zero = torch.zeros((), device=noise.device)
    gp = aux = zero

    for _ in range(cfg.d_steps):
        real, real_y = data.sample(batch)
        real, real_y = local(real), local(real_y)
        fake_y = local(noise.labels(batch))
        fake = make_d_fakes(G, local(noise.z(batch)), fake_y, cfg.d_fake_mode)
        if cfg.d_update == "split":
            loss_d, aux, real_logits, fake_logits = split_d_update(state, real, real_y, fake, fake_y, spec)
            continue
        with parallel.no_sync(D_train):
            real_logits, real_cls = D_train(real, real_y)
        with parallel.no_sync(D_train) if wgan_gp else contextlib.nullcontext():
            fake_logits, fake_cls = D_train(fake, fake_y)
        loss_d = losses.d_loss(loss, real_logits, fake_logits, label_smoothing=cfg.label_smoothing)
        if wgan_gp:
            # The mixing weights of the global batch from the global RNG (as one process draws them).
            alpha = local(torch.rand((batch,) + (1,) * (real.dim() - 1), device=real.device, dtype=real.dtype))
            gp = losses.gradient_penalty(D_train, real, fake, real_y, alpha=alpha)
            loss_d = loss_d + cfg.gp_weight * gp
        if acgan:
            aux = losses.aux_class_loss(real_cls, real_y) + losses.aux_class_loss(fake_cls, fake_y)
            loss_d = loss_d + cfg.aux_weight * aux
        state.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        state.opt_d.step()

    norm_d = grad_norm(D) if with_grad_norms else zero
    with frozen(D):
        for _ in range(cfg.g_steps):
            fake_y = local(noise.labels(batch))
            fake_logits_g, fake_cls_g = D(G_train(local(noise.z(batch)), fake_y), fake_y)
            loss_g = losses.g_loss(loss, fake_logits_g)
            if acgan:
                loss_g = loss_g + cfg.aux_weight * losses.aux_class_loss(fake_cls_g, fake_y)
            state.opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            state.opt_g.step()
            if state.ema is not None:
                state.ema.update(G)
    norm_g = grad_norm(G) if with_grad_norms else zero

    real_logits, fake_logits = real_logits.detach(), fake_logits.detach()
    stats = {
        "loss_d": loss_d.detach(),
        "loss_g": loss_g.detach(),
        # D(x) and D(G(z)) of the last D update, as pytorch/examples' D_x and D_G_z1.
        "d_real": losses.d_probability(loss, real_logits).mean(),
        "d_fake": losses.d_probability(loss, fake_logits).mean(),
        "acc_real": (real_logits > threshold).float().mean(),
        "acc_fake": (fake_logits <= threshold).float().mean(),
        "gp": gp.detach(),
        "aux": aux.detach(),
    }
    if with_grad_norms:
        stats["grad_norm_d"] = norm_d
        stats["grad_norm_g"] = norm_g
    return stats


@torch.no_grad()
def make_d_fakes(G: nn.Module, z: Tensor, y: Tensor | None, mode: str) -> Tensor:
    """The discriminator step's fakes, without G's graph (``train.d_fake_mode``).

    'train': G as it is (in training: batch statistics, and batch norm's running statistics
    move); 'eval': batch norm's running statistics, which stay as they were (Keras'
    ``generator.predict``). G's mode is restored after.
    """
    if mode == "train" or not G.training:
        return G(z, y)
    G.eval()
    try:
        return G(z, y)
    finally:
        G.train()


def split_d_update(
    state: GANState, real: Tensor, real_y: Tensor | None, fake: Tensor, fake_y: Tensor | None, spec: JobSpec
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``train.d_update`` 'split': one D optimizer step on the real batch, then one on the fakes
    (the Keras tutorial's two ``train_on_batch`` calls). Returns the summed loss, the summed
    acgan loss (0 otherwise), and the logits of the real and of the fake batch (no grad). Each of
    the two updates goes through ``state.train_d``: data-parallel, each all-reduces its gradients."""
    D, cfg, loss = state.train_d, spec.train, spec.loss
    acgan = spec.model.conditioning == "acgan"
    total = aux_total = torch.zeros((), device=real.device)
    logits_seen = []
    for x, y, is_real in ((real, real_y, True), (fake, fake_y, False)):
        logits, cls = D(x, y)
        if is_real:
            part = losses.d_loss_real(loss, logits, label_smoothing=cfg.label_smoothing)
        else:
            part = losses.d_loss_fake(loss, logits)
        if acgan:
            aux = losses.aux_class_loss(cls, y)
            part = part + cfg.aux_weight * aux
            aux_total = aux_total + aux.detach()
        state.opt_d.zero_grad(set_to_none=True)
        part.backward()
        state.opt_d.step()
        total = total + part.detach()
        logits_seen.append(logits.detach())
    return total, aux_total, logits_seen[0], logits_seen[1]


def lr_factor(train, step: int) -> float:
    """Multiplier of the base learning rates for the update at ``step`` (1-based)."""
    if train.lr_decay == "none":
        return 1.0
    start = train.lr_decay_start * train.steps
    if step <= start:
        return 1.0
    return max(0.0, (train.steps - step + 1) / (train.steps - start + 1))


def set_learning_rates(state: GANState, train, step: int, scale: float = 1.0) -> None:
    factor = lr_factor(train, step) * scale
    for group in state.opt_d.param_groups:
        group["lr"] = train.lr_d * factor
    for group in state.opt_g.param_groups:
        group["lr"] = train.lr_g * factor


def train_step_floats(state: GANState, data: Dataset, noise: NoiseSource, spec: JobSpec) -> dict[str, float]:
    """``train_step`` read back as Python floats (one synchronisation), for tests and notebooks."""
    return {k: v.item() for k, v in train_step(state, data, noise, spec, with_grad_norms=True).items()}


class Trainer:
    """Drives ``train_step`` for ``spec.train.steps`` steps with sampling, checkpoints and evaluation."""

    def __init__(
        self,
        spec: JobSpec,
        *,
        data_config: DataConfig | None = None,
        callbacks: Callbacks | None = None,
        resume_from: dict[str, Any] | None = None,
        device: str | None = None,
        npz_file=None,
        dataset: Dataset | None = None,
        parallel: Parallel = SINGLE,
    ):
        """``parallel``: this process's rank in a data-parallel job (see gan_core.distributed);
        every rank builds the same Trainer, rank 0 alone calls the callbacks."""
        self.spec = spec
        self.parallel = parallel
        self.callbacks = callbacks or Callbacks()
        self.data_config = data_config or DataConfig()
        self.device = resolve_device(device or spec.device)
        seed = spec.train.seed
        torch.manual_seed(seed)
        self.data = dataset or build_dataset(
            spec.dataset, self.data_config, device=self.device, seed=seed + 1, npz_file=npz_file
        )
        if spec.conditional and not self.data.num_classes:
            raise ValueError("model.conditioning needs labels, but this dataset has none ('y' in the npz)")
        num_classes = self.data.num_classes if spec.conditional else None
        self.state = build_state(spec, self.data.shape, num_classes, self.device)
        self.noise = NoiseSource(spec.model.latent_dim, num_classes, self.device, seed + 2, self.state.generator.prior)
        self.fixed_z, self.fixed_y, self.grid_nrow = self._fixed_noise()
        self._autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if spec.precision == "bf16" and self.device.type == "cuda"
            else contextlib.nullcontext()
        )
        self._evaluator = None
        self.health = self._health_monitor()
        self._rejector: tuple[int, Rejector] | None = None  # (step it was built at, rejector)
        # Multiplies the learning rates; a service halves it after rolling back a divergence.
        self.lr_scale = 1.0
        if resume_from is not None:
            self.load_checkpoint(resume_from)
        if spec.memory_format == "channels_last":
            for net in (self.state.generator, self.state.discriminator):
                net.to(memory_format=torch.channels_last)
            if hasattr(self.data, "images"):
                self.data.images = self.data.images.contiguous(memory_format=torch.channels_last)
        self.sync_batchnorm = self._sync_batchnorm()
        if self.sync_batchnorm:
            for net in (self.state.generator, self.state.discriminator):
                distributed.convert_sync_batchnorm(net, self.device)
        if spec.compile:
            self._compile()
        self.state.train_g = distributed.wrap(self.state.generator, parallel, self.device, self.sync_batchnorm)
        self.state.train_d = distributed.wrap(self.state.discriminator, parallel, self.device, self.sync_batchnorm)

    # ---- setup ---------------------------------------------------------------------------
    def _fixed_noise(self) -> tuple[Tensor, Tensor | None, int]:
        """Per-job fixed noise for the sample grids: same seed, same grid, across resumes."""
        spec, k = self.spec, self.state.num_classes
        gen = torch.Generator().manual_seed(spec.train.seed + 1_000_003)
        if self.data.kind == "points":
            count, nrow, labels = POINT_GRID_SAMPLES, 0, None
        elif k:  # one class per row
            per_row = max(1, math.ceil(spec.sample_count / k))
            count, nrow = per_row * k, per_row
            labels = torch.arange(k).repeat_interleave(per_row)
        else:
            count, nrow, labels = spec.sample_count, max(1, round(math.sqrt(spec.sample_count))), None
        z = self.state.generator.sample_latent(count, gen).to(self.device)
        return z, (labels.to(self.device) if labels is not None else None), nrow

    def _health_monitor(self) -> health.HealthMonitor | None:
        """The GAN health detectors (rank 0 alone reports), with their own fixed noise batch."""
        config = self.spec.train.health
        if not config.enabled or not self.parallel.is_main:
            return None
        n, k = config.samples, self.state.num_classes
        gen = torch.Generator().manual_seed(self.spec.train.seed + 2_000_003)
        self.health_z = self.state.generator.sample_latent(n, gen).to(self.device)
        self.health_y = (torch.arange(n) % k).to(self.device) if k else None
        real, _ = self.data.real_batch(n, seed=1)
        centers = self.data.centers if self.data.kind == "points" else None
        ema = self.spec.model.ema_decay  # the fixed batch comes from the EMA network when there is one
        monitor = health.HealthMonitor(config, self.spec.loss, real.float().cpu(), centers,
                                       getattr(self.data, "sigma", None), health.ema_warmup_steps(ema))
        for detector, why in monitor.skipped.items():
            log.info("GAN health: %s is not checked (%s)", detector, why)
        if monitor.samples_from_step > config.min_step:
            log.info("GAN health: the checks of G's fixed batch start at step %d (the EMA of G, decay %g, "
                     "then holds at most 5 %% of its initial weights)", monitor.samples_from_step, ema)
        return monitor

    def _sync_batchnorm(self) -> bool:
        """Whether batch norm takes its statistics over the global batch (several ranks only)."""
        if not self.parallel.enabled:
            return False
        wanted = self.spec.train.sync_batchnorm
        has_bn = any(distributed.has_batchnorm(net) for net in (self.state.generator, self.state.discriminator))
        return has_bn and (wanted if wanted is not None else True)

    def _compile(self) -> None:
        if self.device.type != "cuda":
            log.warning("compile is for CUDA; running eagerly on %s", self.device)
            return
        self.state.generator = torch.compile(self.state.generator)
        self.state.discriminator = torch.compile(self.state.discriminator)

    # ---- the loop ------------------------------------------------------------------------
    def run(self, steps: int | None = None) -> TrainResult:
        """Train until ``steps`` (default: the spec's) or until ``should_stop()`` says so."""
        spec, state, cb = self.spec, self.state, self.callbacks
        total = steps if steps is not None else spec.train.steps
        window: list[dict[str, Tensor]] = []
        window_start, t0 = state.step, time.perf_counter()
        seen = 0  # rows of the window the health check has read
        health_every = spec.train.health.every if spec.train.health.enabled else 0
        last_metrics: dict[str, float] = {}
        evaluation = None
        stopped = False
        state.generator.train()
        state.discriminator.train()
        if spec.train.lr_decay == "none":
            set_learning_rates(state, spec.train, state.step + 1, self.lr_scale)
        par = self.parallel
        while state.step < total:
            # Rank 0 decides (cancel, drain, runtime, lease); the others learn it here.
            if par.decide_stop(cb.should_stop() if par.is_main else False):
                stopped = True
                break
            step = state.step + 1
            log_now = step % spec.log_every == 0 or step == total
            if spec.train.lr_decay != "none":
                set_learning_rates(state, spec.train, step, self.lr_scale)
            with self._autocast, distributed.sync_statistics(par):
                stats = train_step(state, self.data, self.noise, spec, with_grad_norms=log_now, parallel=par)
            window.append(stats)
            state.step = step
            sample_now = step % spec.sample_every == 0 or step == total
            ckpt_now = step % spec.checkpoint_every == 0 or step == total
            eval_now = bool(spec.eval_every) and step % spec.eval_every == 0
            flush_now = log_now or sample_now or ckpt_now or eval_now
            if health_every and step % health_every == 0:
                # Every health step reads the window's new rows back (one sync) and checks them,
                # so a NaN stops training within ``every`` steps, not only at the next log.
                self._check_health(window, window_start, seen, step)
                seen = len(window)
            if flush_now:
                metrics = self._flush(window, window_start, time.perf_counter() - t0)
                if self.health is not None and seen < len(window):  # the rows _flush read, no second sync
                    self._observe_steps(window, window_start, seen, self._flushed_rows[seen:])
                seen = 0
                if not par.is_main:  # rank 0 alone reports, samples, evaluates and checkpoints
                    window, window_start, t0 = [], step, time.perf_counter()
                    continue
                if log_now:
                    cb.on_metrics(step, metrics)
                    last_metrics = metrics
                if sample_now:
                    cb.on_samples(step, self.sample_grid())
                if eval_now and step != total:
                    with cb.long_operation("evaluation"):
                        results = self.evaluate()
                    cb.on_evaluation(step, results)
                if ckpt_now:
                    cb.on_checkpoint(step, self.checkpoint())
                window, window_start, t0 = [], step, time.perf_counter()
        if window:  # stopped early: no loss of the partial window's finiteness check
            self._flush(window, window_start, time.perf_counter() - t0)
        if not stopped and state.step >= spec.train.steps and spec.eval.at_end and par.is_main:
            with cb.long_operation("evaluation"):
                evaluation = self.evaluate()
            cb.on_evaluation(state.step, evaluation)
        return TrainResult(step=state.step, stopped=stopped, metrics=last_metrics, evaluation=evaluation)

    def _read_rows(self, window: list[dict[str, Tensor]], window_start: int, first: int = 0) -> Tensor:
        """Statistics of the window's steps from row ``first`` on, read back (one sync) and
        checked: a non-finite loss raises NonFiniteLossError naming its step."""
        # The mean over the ranks: each rank's statistics are of its slice (one collective).
        part = window[first:]
        rows = self.parallel.mean(torch.stack([torch.stack([s[k] for k in STEP_STATS]) for s in part]).float()).cpu()
        bad = health.first_non_finite(rows[:, :2])
        if bad is not None:
            raise NonFiniteLossError(
                window_start + first + bad + 1, {k: float(rows[bad, i]) for i, k in enumerate(STEP_STATS[:2])}
            )
        return rows

    def _observe_steps(self, window: list[dict[str, Tensor]], window_start: int, first: int,
                       rows: Tensor | None = None) -> list[health.Finding]:
        rows = self._read_rows(window, window_start, first) if rows is None else rows
        real, fake = STEP_STATS.index("acc_real"), STEP_STATS.index("acc_fake")
        found = self.health.observe_steps(window_start + first + 1, rows[:, real].tolist(), rows[:, fake].tolist())
        if found:
            self.callbacks.on_health(window_start + first + len(rows), found)
        return found

    def _check_health(self, window: list[dict[str, Tensor]], window_start: int, first: int, step: int) -> None:
        """The GAN health check at ``step``: the new step statistics, then G's fixed batch."""
        if first >= len(window):
            return
        rows = self._read_rows(window, window_start, first)  # every rank: a collective
        if self.health is None:
            return
        self._observe_steps(window, window_start, first, rows)
        found = self.health.observe_samples(step, self.generate(self.health_z, self.health_y))
        if found:
            self.callbacks.on_health(step, found)

    def _flush(self, window: list[dict[str, Tensor]], window_start: int, seconds: float) -> dict[str, float]:
        """Read a window's statistics back (one sync), check them, average them."""
        rows = self._flushed_rows = self._read_rows(window, window_start)
        means = rows.mean(dim=0)
        metrics = {k: float(means[i]) for i, k in enumerate(STEP_STATS)}
        if self.spec.loss != "wgan-gp":
            metrics.pop("gp")
        if self.spec.model.conditioning != "acgan":
            metrics.pop("aux")
        metrics["acc_d"] = (metrics["acc_real"] + metrics["acc_fake"]) / 2
        last = window[-1]
        for key in ("grad_norm_d", "grad_norm_g"):
            if key in last:
                metrics[key] = float(last[key])
        steps_per_s = len(window) / seconds if seconds > 0 else float("nan")
        metrics["steps_per_s"] = steps_per_s
        # Real examples the discriminator consumed per second.
        metrics["images_per_s"] = steps_per_s * self.spec.train.batch_size * self.spec.train.d_steps
        metrics["images_per_s_per_device"] = metrics["images_per_s"] / self.parallel.world_size
        metrics["lr_d"] = self.state.opt_d.param_groups[0]["lr"]
        metrics["lr_g"] = self.state.opt_g.param_groups[0]["lr"]
        return metrics

    # ---- outputs -------------------------------------------------------------------------
    def generate_fixed(self) -> Tensor:
        """Samples from the fixed noise, in eval mode (batch-norm running statistics)."""
        return self.generate(self.fixed_z, self.fixed_y)

    @torch.no_grad()
    def generate(self, z: Tensor, y: Tensor | None) -> Tensor:
        """The sampling network's output for ``z`` (and labels ``y``) in eval mode, on the CPU."""
        G = self.state.sampling_generator
        was_training = G.training
        G.eval()
        try:
            with self._autocast:
                out = G(z, y)
        finally:
            G.train(was_training)
        return out.float().cpu()

    def sample_grid(self) -> bytes:
        from gan_core import images

        samples = self.generate_fixed().numpy()
        if self.data.kind == "points":
            real, _ = self.data.real_batch(POINT_GRID_SAMPLES, seed=0)
            return images.scatter_png(samples, real=real.cpu().numpy(), centers=self.data.centers.cpu().numpy())
        return images.grid_png(samples, nrow=self.grid_nrow)

    def evaluate(self, n: int | None = None) -> dict[str, Any]:
        from gan_core.evaluator import Evaluator

        if self._evaluator is None:
            self._evaluator = Evaluator(self.spec, self.data, self.data_config)
        return self._evaluator.evaluate(
            self.state.sampling_generator, n or self.spec.eval_samples(), self.device, rejector=self.rejector()
        )

    def rejector(self) -> Rejector | None:
        """Discriminator rejection sampling with the current D (``sampling.rejection``), or None."""
        if self.spec.sampling.rejection == "none":
            return None
        cached = self._rejector
        if cached is None or cached[0] != self.state.step:
            built = build_rejector(
                self.state.sampling_generator, _unwrap(self.state.discriminator), self.spec.sampling.rejection_quantile,
                self.spec.train.batch_size, self.state.num_classes,
            )
            cached = self._rejector = (self.state.step, built)
        return cached[1]

    # ---- checkpoints ---------------------------------------------------------------------
    def checkpoint(self) -> dict[str, Any]:
        s = self.state
        return {
            "format": ckpt.TRAINING_FORMAT,
            "version": ckpt.FORMAT_VERSION,
            "spec": self.spec.model_dump(mode="json"),
            "step": s.step,
            "data_shape": list(self.data.shape),
            "num_classes": s.num_classes,
            "generator": _plain_state(s.generator),
            "discriminator": _plain_state(s.discriminator),
            "ema": s.ema.state_dict() if s.ema is not None else None,
            "opt_g": s.opt_g.state_dict(),
            "opt_d": s.opt_d.state_dict(),
            "rng": {**ckpt.capture_rng(), "noise": self.noise.generator.get_state(), "sampler": self.data.state_dict()},
        }

    def load_checkpoint(self, data: dict[str, Any]) -> None:
        if data.get("format") != ckpt.TRAINING_FORMAT:
            raise ckpt.CheckpointError("resuming needs a training checkpoint, not a generator file")
        self._check_compatible(data["spec"])
        s = self.state
        try:
            _unwrap(s.generator).load_state_dict(data["generator"])
            _unwrap(s.discriminator).load_state_dict(data["discriminator"])
            s.opt_g.load_state_dict(data["opt_g"])
            s.opt_d.load_state_dict(data["opt_d"])
            if s.ema is not None:
                s.ema.load_state_dict(data["ema"])
        except (KeyError, RuntimeError) as exc:
            raise ckpt.CheckpointError(f"checkpoint does not fit this model: {exc}") from None
        s.step = int(data["step"])
        self._rejector = None
        rng = data["rng"]
        ckpt.restore_rng(rng)
        self.noise.generator.set_state(rng["noise"])
        self.data.load_state_dict(rng["sampler"])

    def _check_compatible(self, saved: dict[str, Any]) -> None:
        """Only the length of training may change on resume; the model and data may not."""
        mine = self.spec.model_dump(mode="json")
        for key in ("dataset", "model", "loss"):
            if saved.get(key) != mine.get(key):
                raise ckpt.CheckpointError(f"checkpoint was trained with a different '{key}'")

    def generator_file(self) -> dict[str, Any]:
        """What ``final/generator.pt`` holds: the sampling network (EMA if enabled) and its spec."""
        data = {
            "format": ckpt.GENERATOR_FORMAT,
            "version": ckpt.FORMAT_VERSION,
            "spec": self.spec.model_dump(mode="json"),
            "step": self.state.step,
            "data_shape": list(self.data.shape),
            "num_classes": self.state.num_classes,
            "generator": _plain_state(self.state.sampling_generator),
            "ema": self.state.ema is not None,
        }
        rejector = self.rejector()
        if rejector is not None:  # the discriminator that sampling rejects with, and its threshold
            data["rejection"] = {"discriminator": _plain_state(self.state.discriminator), "threshold": rejector.threshold}
        return data


def _unwrap(module: nn.Module) -> nn.Module:
    """The module behind torch.compile's wrapper (whose state_dict keys carry a prefix)."""
    return getattr(module, "_orig_mod", module)


def _plain_state(module: nn.Module) -> dict[str, Tensor]:
    # Live tensors, not copies: a callback must serialise the checkpoint before it returns.
    return _unwrap(module).state_dict()
