"""Generator and discriminator networks, built from a ModelSpec (never from module globals).

Architectures (``model.arch`` / ``model.variant``):

* ``mlp``: with the default widths, exactly the classic Keras-tutorial MNIST GAN
  (G 100 -> 256 -> 512 -> 1024 -> 784, D 784 -> 512 -> 256 -> 1). For 2-D points the
  generator's output is linear (the mixtures live in [-4.2, 4.2]); for images it is tanh.
* ``dcgan`` / ``radford``: the pytorch/examples DCGAN, with 64, 32 and 28 pixel layouts.
* ``dcgan`` / ``keras``: the small Keras-tutorial DCGAN (28x28 only).

Conditioning: ``cgan`` (Mirza & Osindero) feeds a label embedding to both networks;
``acgan`` (Odena et al.) feeds it to G only and gives D a second head of class logits.

Discriminator options against mode collapse: spectral norm, minibatch standard deviation
(ProGAN) and packing (PacGAN). The discriminator always returns raw logits, never a sigmoid:
the losses in :mod:`gan_core.losses` work from logits for numerical stability.

:class:`EMA` keeps an exponential moving average of G's weights. When ``model.ema_decay`` is
set, the fixed-noise samples, the evaluation and the exported final model should come from
``EMA.module`` rather than from the generator being trained.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from gan_core.distributed import global_moments
from gan_core.spec import ModelSpec

logger = logging.getLogger(__name__)

DNorm = Literal["batch", "layer", "none"]

# Radford DCGAN layouts per image size: channel multipliers of G's stages (first stage made by
# a stride-1 ConvTranspose from the 1x1 latent), of D's strided convs, and the kernel of G's
# first / D's last layer (the side of the smallest feature map).
_RADFORD_LAYOUTS: dict[int, tuple[tuple[int, ...], tuple[int, ...], int]] = {
    128: ((16, 8, 4, 2, 1), (1, 2, 4, 8, 16), 4),  # 4 -> 8 -> 16 -> 32 -> 64 -> 128
    64: ((8, 4, 2, 1), (1, 2, 4, 8), 4),  # 4 -> 8 -> 16 -> 32 -> 64
    32: ((4, 2, 1), (1, 2, 4), 4),  # 4 -> 8 -> 16 -> 32
    28: ((4, 2), (1, 2), 7),  # 7 -> 14 -> 28
}
_KERAS_SIZE = 28
_KERAS_DROPOUT = 0.3
_MBSTD_EPS = 1e-8


class LatentPrior(nn.Module):
    """The distribution the latent z is drawn from.

    ``normal``: N(0, I), the usual prior. ``mixture``: a uniform mixture of ``components``
    Gaussians N(c_k, std^2 I) with fixed centres c_k ~ N(0, I), drawn once when the model is
    built and kept in its state (checkpoints carry them). A generator is continuous, so from a
    connected prior it must put some mass between the modes of a disconnected target (the
    low-quality samples of the 2-D mixture benchmarks); from a mixture prior it can map separate
    latent clusters to separate modes (Gurumurthy et al., DeLiGAN, 2017; Ben-Yosef & Weinshall,
    Gaussian mixture GANs, 2018).
    """

    def __init__(self, latent_dim: int, kind: str = "normal", components: int = 64, std: float = 0.1) -> None:
        super().__init__()
        self.latent_dim, self.kind, self.std = latent_dim, kind, std
        if kind == "mixture":
            self.register_buffer("centers", torch.randn(components, latent_dim))
        elif kind != "normal":
            raise ValueError(f"unknown latent prior {kind!r}")

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, latent_dim) on ``generator``'s device (the CPU without one)."""
        device = generator.device if generator is not None else torch.device("cpu")
        if self.kind == "normal":
            return torch.randn(n, self.latent_dim, generator=generator, device=device)
        which = torch.randint(0, self.centers.shape[0], (n,), generator=generator, device=device)
        noise = torch.randn(n, self.latent_dim, generator=generator, device=device)
        return self.centers.to(device)[which] + self.std * noise


class Generator(nn.Module):
    """Maps noise z (B, latent_dim) and, when conditional, labels y (B,) to samples (B, *data_shape).
    ``sample_latent`` draws z from the model's prior."""

    def __init__(
        self,
        net: nn.Module,
        *,
        latent_dim: int,
        data_shape: tuple[int, ...],
        num_classes: int | None,
        label_embed: nn.Embedding | None,
        prior: LatentPrior | None = None,
    ) -> None:
        super().__init__()
        self.net = net  # (B, latent_dim [+ E]) -> (B, *data_shape)
        self.label_embed = label_embed
        self.latent_dim = latent_dim
        self.data_shape = tuple(data_shape)
        self.num_classes = num_classes
        self.prior = prior or LatentPrior(latent_dim)

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.prior.sample(n, generator)

    @property
    def conditional(self) -> bool:
        return self.label_embed is not None

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        # y is ignored by an unconditional generator, so callers may always pass labels.
        if self.label_embed is not None:
            if y is None:
                raise ValueError("this generator is conditional: pass the labels y")
            z = torch.cat([z, self.label_embed(y).to(z.dtype)], dim=1)  # (B, latent_dim + E)
        return self.net(z)


class Discriminator(nn.Module):
    """Scores samples x (B, *data_shape): returns (logits (B//pack,), class_logits (B//pack, K) or None).

    With packing (PacGAN) groups of ``pack`` consecutive samples are judged together, so B must
    be a multiple of ``pack``. Labels y are used only by a ``cgan`` discriminator; the ``acgan``
    one predicts them instead (second head).
    """

    def __init__(
        self,
        *,
        trunk: nn.Module,
        head: nn.Module,
        class_head: nn.Module | None,
        data_shape: tuple[int, ...],
        num_classes: int | None,
        pack: int,
        flatten_input: bool,
        label_embed: nn.Embedding | None,
        minibatch_std: bool,
    ) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = head
        self.class_head = class_head
        self.label_embed = label_embed
        self.data_shape = tuple(data_shape)
        self.num_classes = num_classes
        self.pack = pack
        self.flatten_input = flatten_input
        self.minibatch_std = minibatch_std

    def forward(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        batch = x.shape[0]
        if batch % self.pack:
            raise ValueError(f"batch size {batch} is not a multiple of pack={self.pack}")
        groups = batch // self.pack
        if self.flatten_input:
            h = x.reshape(groups, -1)  # (B/m, m*prod(shape))
        else:
            c, height, width = x.shape[1:]
            h = x.reshape(groups, self.pack * c, height, width)  # (B/m, m*C, H, W)
        if self.label_embed is not None:
            if y is None:
                raise ValueError("this discriminator is conditional (cgan): pass the labels y")
            e = self.label_embed(y).to(h.dtype)  # (B, E); pack is 1 here
            if not self.flatten_input:
                e = e[:, :, None, None].expand(-1, -1, h.shape[2], h.shape[3])  # (B, E, H, W)
            h = torch.cat([h, e], dim=1)
        features = self.trunk(h)
        if self.minibatch_std:
            features = append_minibatch_std(features)
        logits = self.head(features).reshape(groups)
        class_logits = None
        if self.class_head is not None:
            class_logits = self.class_head(features).reshape(groups, -1)  # (B/m, K)
        return logits, class_logits


def append_minibatch_std(features: Tensor) -> Tensor:
    """ProGAN's minibatch standard deviation: one extra feature telling D how varied the batch is.

    The std over the batch of every feature, averaged to one scalar, is appended as one extra
    feature (B, F) -> (B, F+1), or one constant channel map (B, C, H, W) -> (B, C+1, H, W).
    A collapsed generator yields a batch with tiny std, which D can then detect.
    """
    # Over the global batch when training data-parallel (every rank's slice), else this batch.
    _, var, _ = global_moments(features.float(), (0,))
    std = torch.sqrt(var + _MBSTD_EPS).mean()
    extra = std.to(features.dtype).expand(features.shape[0], 1, *features.shape[2:])
    return torch.cat([features, extra], dim=1)


def resolve_d_norm(model: ModelSpec, loss: str) -> DNorm:
    """Normalisation of the radford DCGAN discriminator's hidden convs.

    'auto' picks none with spectral norm (SN already controls D), layer norm for wgan-gp (the
    gradient penalty is per sample, a batch-dependent critic breaks it), batch norm otherwise.
    """
    if model.d_norm != "auto":
        return model.d_norm
    if model.spectral_norm:
        return "none"
    if loss == "wgan-gp":
        return "layer"
    return "batch"


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (buffers such as BN running stats excluded)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def build_generator(model: ModelSpec, data_shape: tuple[int, ...], num_classes: int | None) -> Generator:
    data_shape = tuple(data_shape)
    embed_dim = _embed_dim(model, num_classes)
    in_dim = model.latent_dim + embed_dim
    if model.arch == "mlp":
        net = _mlp_generator(model, in_dim, data_shape)
        _glorot_init(net)
    elif model.variant == "radford":
        net = _radford_generator(model, in_dim, _image_shape(data_shape, _RADFORD_LAYOUTS))
        _radford_init(net)
    else:
        net = _keras_generator(in_dim, _image_shape(data_shape, (_KERAS_SIZE,)))
        _glorot_init(net)
    label_embed = nn.Embedding(num_classes, embed_dim) if embed_dim else None
    # After the weights: a mixture's centres take the next draws, the initial weights stay as they were.
    prior = LatentPrior(model.latent_dim, model.latent_prior, model.latent_components, model.latent_component_std)
    generator = Generator(
        net, latent_dim=model.latent_dim, data_shape=data_shape, num_classes=num_classes, label_embed=label_embed,
        prior=prior,
    )
    logger.debug("generator %s/%s: %d parameters", model.arch, model.variant, count_parameters(generator))
    return generator


def build_discriminator(
    model: ModelSpec, data_shape: tuple[int, ...], num_classes: int | None, loss: str
) -> Discriminator:
    data_shape = tuple(data_shape)
    if model.pack > 1 and model.conditioning != "none":
        raise ValueError("packing cannot be combined with conditioning")
    # Only cgan feeds labels to D; acgan's D must infer them.
    embed_dim = _embed_dim(model, num_classes) if model.conditioning == "cgan" else 0
    num_out_classes = num_classes if model.conditioning == "acgan" else None
    extra = 1 if model.minibatch_std else 0
    if model.arch == "mlp":
        in_dim = model.pack * math.prod(data_shape) + embed_dim
        trunk, head, class_head = _mlp_discriminator(model, in_dim, extra, num_out_classes)
        flatten_input = True
        init = _glorot_init
    elif model.variant == "radford":
        c, size, _ = _image_shape(data_shape, _RADFORD_LAYOUTS)
        in_ch = model.pack * c + embed_dim
        norm = resolve_d_norm(model, loss)
        trunk, head, class_head = _radford_discriminator(model, in_ch, size, norm, extra, num_out_classes)
        flatten_input = False
        init = _radford_init
    else:
        c, _, _ = _image_shape(data_shape, (_KERAS_SIZE,))
        in_ch = model.pack * c + embed_dim
        trunk, head, class_head = _keras_discriminator(in_ch, model.leaky_slope, extra, num_out_classes)
        flatten_input = False
        init = _glorot_init
    for part in (trunk, head, class_head):
        if part is not None:
            init(part)
    label_embed = nn.Embedding(num_classes, embed_dim) if embed_dim else None  # type: ignore[arg-type]
    discriminator = Discriminator(
        trunk=trunk,
        head=head,
        class_head=class_head,
        data_shape=data_shape,
        num_classes=num_classes,
        pack=model.pack,
        flatten_input=flatten_input,
        label_embed=label_embed,
        minibatch_std=model.minibatch_std,
    )
    if model.spectral_norm:
        # After the init: the parametrization normalises whatever weight it wraps.
        _apply_spectral_norm(discriminator)
    logger.debug("discriminator %s/%s: %d parameters", model.arch, model.variant, count_parameters(discriminator))
    return discriminator


class EMA:
    """Exponential moving average of a generator's weights (``module``: eval mode, no grad).

    ``update`` does ema = decay * ema + (1 - decay) * param for every parameter, and copies the
    buffers (BN running statistics) as they are. When enabled, samples, evaluation and the final
    model should come from ``module``. Pass the plain generator, not a ``torch.compile`` wrapper.
    """

    def __init__(self, generator: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), not {decay}")
        self.decay = decay
        self.module = copy.deepcopy(generator).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, generator: nn.Module) -> None:
        # Listed on every call: moving the module to another device may replace its tensors.
        ema_params = list(self.module.parameters())
        params = [p.detach() for p in generator.parameters()]
        if len(params) != len(ema_params):
            raise ValueError("the generator does not match the EMA copy")
        # lerp_(ema, p, w): ema += w * (p - ema), i.e. decay * ema + (1 - decay) * p.
        torch._foreach_lerp_(ema_params, params, 1.0 - self.decay)
        for ema_buffer, buffer in zip(self.module.buffers(), generator.buffers(), strict=True):
            ema_buffer.copy_(buffer)

    def state_dict(self) -> dict[str, Tensor]:
        """The averaged generator's own state dict: it loads straight into a fresh Generator."""
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.module.load_state_dict(state)

    def to(self, device: torch.device | str) -> EMA:
        self.module.to(device)
        return self


# --------------------------------------------------------------------------------------------
# Builders of the network bodies.


def _embed_dim(model: ModelSpec, num_classes: int | None) -> int:
    """Width of the label embedding (0 when unconditional)."""
    if model.conditioning == "none":
        return 0
    if not num_classes or num_classes < 2:
        raise ValueError(f"'{model.conditioning}' conditioning needs the number of classes (>= 2)")
    return model.embed_dim or num_classes


def _image_shape(data_shape: tuple[int, ...], sizes: dict[int, object] | tuple[int, ...]) -> tuple[int, int, int]:
    """Check that the data are square images of a size the conv architecture knows."""
    if len(data_shape) != 3 or data_shape[1] != data_shape[2] or data_shape[1] not in sizes:
        raise ValueError(f"dcgan needs square images of size {tuple(sizes)}, not data of shape {data_shape}")
    c, h, w = data_shape
    if c not in (1, 3):
        raise ValueError(f"dcgan makes 1 or 3 channel images, not {c}")
    return c, h, w


def _mlp_generator(model: ModelSpec, in_dim: int, data_shape: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = in_dim
    for hidden in model.hidden_g:
        # Activation THEN batch norm, as in the Keras tutorial.
        layers += [nn.Linear(width, hidden), nn.LeakyReLU(model.leaky_slope)]
        if model.g_batchnorm:
            layers.append(nn.BatchNorm1d(hidden, momentum=model.bn_momentum, eps=model.bn_eps))
        width = hidden
    layers.append(nn.Linear(width, math.prod(data_shape)))
    if len(data_shape) == 3:  # images in [-1, 1]; 2-D points stay linear
        layers.append(nn.Tanh())
    layers.append(nn.Unflatten(1, data_shape))
    return nn.Sequential(*layers)


def _mlp_discriminator(
    model: ModelSpec, in_dim: int, extra: int, num_classes: int | None
) -> tuple[nn.Module, nn.Module, nn.Module | None]:
    layers: list[nn.Module] = []
    width = in_dim
    for hidden in model.hidden_d:
        layers += [nn.Linear(width, hidden), nn.LeakyReLU(model.leaky_slope)]
        width = hidden
    head = nn.Linear(width + extra, 1)
    class_head = nn.Linear(width + extra, num_classes) if num_classes else None
    return nn.Sequential(*layers), head, class_head


def _radford_generator(model: ModelSpec, in_dim: int, shape: tuple[int, int, int]) -> nn.Sequential:
    c, size, _ = shape
    g_mults, _, start = _RADFORD_LAYOUTS[size]
    ngf = model.ngf
    layers: list[nn.Module] = [
        nn.Unflatten(1, (in_dim, 1, 1)),
        nn.ConvTranspose2d(in_dim, ngf * g_mults[0], start, 1, 0, bias=False),
        nn.BatchNorm2d(ngf * g_mults[0]),
        nn.ReLU(True),
    ]
    for prev, mult in zip(g_mults, g_mults[1:]):
        layers += [
            nn.ConvTranspose2d(ngf * prev, ngf * mult, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * mult),
            nn.ReLU(True),
        ]
    layers += [nn.ConvTranspose2d(ngf * g_mults[-1], c, 4, 2, 1, bias=False), nn.Tanh()]
    return nn.Sequential(*layers)


def _d_norm_layer(norm: DNorm, channels: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "layer":
        return nn.GroupNorm(1, channels)  # normalises over (C, H, W) of each sample
    return nn.Identity()


def _radford_discriminator(
    model: ModelSpec, in_ch: int, size: int, norm: DNorm, extra: int, num_classes: int | None
) -> tuple[nn.Module, nn.Module, nn.Module | None]:
    _, d_mults, last = _RADFORD_LAYOUTS[size]
    ndf, slope = model.ndf, model.leaky_slope
    layers: list[nn.Module] = [nn.Conv2d(in_ch, ndf * d_mults[0], 4, 2, 1, bias=False), nn.LeakyReLU(slope, True)]
    for prev, mult in zip(d_mults, d_mults[1:]):
        # Without a norm layer the conv needs its own bias (BN's beta would have provided it).
        layers += [
            nn.Conv2d(ndf * prev, ndf * mult, 4, 2, 1, bias=norm == "none"),
            _d_norm_layer(norm, ndf * mult),
            nn.LeakyReLU(slope, True),
        ]
    width = ndf * d_mults[-1] + extra
    head = nn.Conv2d(width, 1, last, 1, 0, bias=False)  # (B, 1, 1, 1)
    class_head = nn.Conv2d(width, num_classes, last, 1, 0) if num_classes else None
    return nn.Sequential(*layers), head, class_head


def _keras_generator(in_dim: int, shape: tuple[int, int, int]) -> nn.Sequential:
    c = shape[0]
    # "same" padding with stride 2 and kernel 5: padding 2 plus output_padding 1 doubles the size.
    return nn.Sequential(
        nn.Linear(in_dim, 7 * 7 * 128),
        nn.Unflatten(1, (128, 7, 7)),
        nn.BatchNorm2d(128),
        nn.ConvTranspose2d(128, 64, 5, 2, 2, output_padding=1),  # 7 -> 14
        nn.SELU(),
        nn.BatchNorm2d(64),
        nn.ConvTranspose2d(64, c, 5, 2, 2, output_padding=1),  # 14 -> 28
        nn.Tanh(),
    )


def _keras_discriminator(
    in_ch: int, slope: float, extra: int, num_classes: int | None
) -> tuple[nn.Module, nn.Module, nn.Module | None]:
    trunk = nn.Sequential(
        nn.Conv2d(in_ch, 64, 5, 2, 2),  # 28 -> 14
        nn.LeakyReLU(slope),
        nn.Dropout(_KERAS_DROPOUT),
        nn.Conv2d(64, 128, 5, 2, 2),  # 14 -> 7
        nn.LeakyReLU(slope),
        nn.Dropout(_KERAS_DROPOUT),
    )
    width = (128 + extra) * 7 * 7
    head = nn.Sequential(nn.Flatten(), nn.Linear(width, 1))
    class_head = nn.Sequential(nn.Flatten(), nn.Linear(width, num_classes)) if num_classes else None
    return trunk, head, class_head


def _radford_init(module: nn.Module) -> None:
    """weights_init of pytorch/examples dcgan: conv N(0, 0.02), batch norm N(1, 0.02) and 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def _glorot_init(module: nn.Module) -> None:
    """Keras' default init (glorot_uniform weights, zero biases), for the Keras-derived nets."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _apply_spectral_norm(module: nn.Module) -> None:
    for m in list(module.modules()):  # listed first: the parametrization adds modules
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            spectral_norm(m)
