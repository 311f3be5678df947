"""Shapes, parameter counts, init, options and EMA of the networks in gan_core.models."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gan_core.losses import g_loss
from gan_core.models import (
    EMA,
    LatentPrior,
    append_minibatch_std,
    build_discriminator,
    build_generator,
    count_parameters,
    resolve_d_norm,
)
from gan_core.spec import ModelSpec

torch.set_num_threads(1)

BATCH = 8
K = 10
MNIST = (1, 28, 28)
IMAGE_SHAPES = [MNIST, (1, 32, 32), (3, 64, 64)]
POINTS = (2,)
# Small widths keep the shape tests fast; the layouts are the same as with the defaults.
SMALL = {"ngf": 8, "ndf": 8, "hidden_g": [32, 64], "hidden_d": [64, 32]}


def small(**overrides) -> ModelSpec:
    return ModelSpec(**{**SMALL, **overrides})


def labels(n: int = BATCH) -> torch.Tensor:
    return torch.arange(n) % K


def check_pair(model: ModelSpec, shape: tuple[int, ...], loss: str = "bce") -> None:
    """G makes (B, *shape); D returns (B // pack,) logits and class logits for acgan only."""
    classes = K if model.conditioning != "none" else None
    g = build_generator(model, shape, classes)
    d = build_discriminator(model, shape, classes, loss)
    z = torch.randn(BATCH, model.latent_dim)
    y = labels() if classes else None
    x = g(z, y)
    assert x.shape == (BATCH, *shape)
    assert g.latent_dim == model.latent_dim
    logits, class_logits = d(x, y)
    assert logits.shape == (BATCH // model.pack,)
    assert torch.isfinite(logits).all()
    if model.conditioning == "acgan":
        assert class_logits is not None and class_logits.shape == (BATCH, K)
    else:
        assert class_logits is None


CONDITIONINGS = ["none", "cgan", "acgan"]


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
@pytest.mark.parametrize("shape", IMAGE_SHAPES)
def test_mlp_shapes_images(shape: tuple[int, ...], conditioning: str) -> None:
    check_pair(small(arch="mlp", conditioning=conditioning), shape)


def test_mlp_shapes_points() -> None:
    check_pair(small(arch="mlp", latent_dim=2), POINTS)


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
@pytest.mark.parametrize("shape", IMAGE_SHAPES)
def test_radford_shapes(shape: tuple[int, ...], conditioning: str) -> None:
    check_pair(small(arch="dcgan", variant="radford", conditioning=conditioning), shape)


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
def test_keras_dcgan_shapes(conditioning: str) -> None:
    check_pair(small(arch="dcgan", variant="keras", conditioning=conditioning), MNIST)


@pytest.mark.parametrize("pack", [2, 4])
@pytest.mark.parametrize(
    "arch,variant,shape",
    [
        ("mlp", "radford", MNIST),
        ("mlp", "radford", POINTS),
        ("dcgan", "radford", MNIST),
        ("dcgan", "radford", (1, 32, 32)),
        ("dcgan", "radford", (3, 64, 64)),
        ("dcgan", "keras", MNIST),
    ],
)
def test_options_shapes(arch: str, variant: str, shape: tuple[int, ...], pack: int) -> None:
    both = {"minibatch_std": True, "spectral_norm": True}
    for options in ({}, {"minibatch_std": True}, {"spectral_norm": True}, both):
        check_pair(small(arch=arch, variant=variant, pack=pack, **options), shape)


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
@pytest.mark.parametrize("arch,variant", [("mlp", "radford"), ("dcgan", "radford"), ("dcgan", "keras")])
def test_minibatch_std_and_spectral_norm_with_conditioning(arch: str, variant: str, conditioning: str) -> None:
    model = small(arch=arch, variant=variant, conditioning=conditioning, minibatch_std=True, spectral_norm=True)
    check_pair(model, MNIST)


@pytest.mark.parametrize("d_norm", ["auto", "batch", "layer", "none"])
@pytest.mark.parametrize("shape", IMAGE_SHAPES)
def test_radford_every_d_norm(shape: tuple[int, ...], d_norm: str) -> None:
    model = small(arch="dcgan", d_norm=d_norm)
    check_pair(model, shape, loss="wgan-gp")
    d = build_discriminator(model, shape, None, "wgan-gp")
    kinds = {type(m) for m in d.modules()}
    resolved = resolve_d_norm(model, "wgan-gp")
    assert (nn.BatchNorm2d in kinds) == (resolved == "batch")
    assert (nn.GroupNorm in kinds) == (resolved == "layer")


def test_resolve_d_norm() -> None:
    assert resolve_d_norm(ModelSpec(), "bce") == "batch"
    assert resolve_d_norm(ModelSpec(), "wgan-gp") == "layer"
    assert resolve_d_norm(ModelSpec(spectral_norm=True), "wgan-gp") == "none"
    assert resolve_d_norm(ModelSpec(spectral_norm=True), "hinge") == "none"
    assert resolve_d_norm(ModelSpec(d_norm="batch"), "wgan-gp") == "batch"
    assert resolve_d_norm(ModelSpec(d_norm="none"), "bce") == "none"


def test_default_mlp_parameter_counts_are_the_classic_ones() -> None:
    model = ModelSpec()  # latent 100, G 256-512-1024, D 512-256
    g = build_generator(model, MNIST, None)
    d = build_discriminator(model, MNIST, None, "bce")
    widths_g = [100, 256, 512, 1024, 784]
    linear_g = sum(a * b + b for a, b in zip(widths_g, widths_g[1:]))
    batchnorm_g = 2 * (256 + 512 + 1024)  # gamma and beta per feature
    # Keras' summary: 1,489,936 trainable; its total 1,493,520 adds the BN moving mean/variance,
    # which PyTorch keeps as buffers.
    assert count_parameters(g) == linear_g + batchnorm_g == 1_489_936
    running = sum(b.numel() for name, b in g.named_buffers() if "running" in name)
    assert count_parameters(g) + running == 1_493_520
    widths_d = [784, 512, 256, 1]
    assert count_parameters(d) == sum(a * b + b for a, b in zip(widths_d, widths_d[1:])) == 533_505


def test_mlp_generator_layer_order_and_batchnorm_settings() -> None:
    model = ModelSpec(bn_momentum=0.3, bn_eps=1e-3)
    g = build_generator(model, MNIST, None)
    kinds = [type(m) for m in g.net]
    # Linear -> LeakyReLU -> BatchNorm per hidden layer (Keras order), then Linear -> tanh.
    assert kinds[:3] == [nn.Linear, nn.LeakyReLU, nn.BatchNorm1d]
    assert kinds[-3:-1] == [nn.Linear, nn.Tanh]
    bns = [m for m in g.modules() if isinstance(m, nn.BatchNorm1d)]
    assert len(bns) == 3 and all(bn.momentum == 0.3 and bn.eps == 1e-3 for bn in bns)


def test_mlp_generator_without_batchnorm_treats_samples_independently() -> None:
    model = small(latent_dim=2, g_batchnorm=False, leaky_slope=0.0)
    g = build_generator(model, POINTS, None)
    kinds = [type(m) for m in g.net]
    # Linear -> activation per hidden layer and no BatchNorm anywhere (nor running buffers).
    assert kinds[:4] == [nn.Linear, nn.LeakyReLU, nn.Linear, nn.LeakyReLU]
    assert not any(isinstance(m, nn.BatchNorm1d) for m in g.modules())
    assert not list(g.buffers())
    widths = [2, *SMALL["hidden_g"], 2]
    assert count_parameters(g) == sum(a * b + b for a, b in zip(widths, widths[1:]))
    # Without batch statistics a sample's output does not depend on the rest of its batch,
    # and training mode gives the same output as eval mode.
    z = torch.randn(BATCH, 2)
    together = g(z)
    assert torch.allclose(together[:1], g(z[:1]))
    assert torch.allclose(together, g.eval()(z))
    # The default keeps the classic generator's batch norm.
    assert any(isinstance(m, nn.BatchNorm1d) for m in build_generator(small(latent_dim=2), POINTS, None).modules())


def test_mlp_init_is_glorot_uniform_with_zero_bias() -> None:
    g = build_generator(ModelSpec(), MNIST, None)
    for layer in (m for m in g.modules() if isinstance(m, nn.Linear)):
        bound = math.sqrt(6.0 / (layer.in_features + layer.out_features))
        assert layer.weight.abs().max() <= bound
        assert layer.weight.abs().max() > 0.9 * bound
        assert torch.count_nonzero(layer.bias) == 0


def test_image_output_is_tanh_and_points_output_is_linear() -> None:
    g_img = build_generator(small(), MNIST, None)
    g_pts = build_generator(small(latent_dim=2), POINTS, None)
    for g in (g_img, g_pts):
        last = [m for m in g.modules() if isinstance(m, nn.Linear)][-1]
        with torch.no_grad():  # output = 5 before the final activation, whatever the input
            last.weight.zero_()
            last.bias.fill_(5.0)
    x_img = g_img(torch.randn(BATCH, 100))
    x_pts = g_pts(torch.randn(BATCH, 2))
    assert x_img.abs().max() <= 1.0
    assert torch.allclose(x_pts, torch.full_like(x_pts, 5.0))  # linear output reaches the ring8/grid25 range beyond [-1, 1]


def test_radford_64_layout_matches_pytorch_examples() -> None:
    model = ModelSpec(arch="dcgan")
    g = build_generator(model, (3, 64, 64), None)
    d = build_discriminator(model, (3, 64, 64), None, "bce")
    g_convs = [m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    expected = [(100, 512), (512, 256), (256, 128), (128, 64), (64, 3)]
    assert [(c.in_channels, c.out_channels) for c in g_convs] == expected
    assert [c.kernel_size for c in g_convs] == [(4, 4)] * 5
    assert [c.stride for c in g_convs] == [(1, 1)] + [(2, 2)] * 4
    d_convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in d_convs] == [(3, 64), (64, 128), (128, 256), (256, 512), (512, 1)]
    assert all(c.bias is None for c in g_convs + d_convs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in d.modules()) == 3  # none after the first conv
    # pytorch/examples dcgan counts (nz=100, ngf=ndf=64, nc=3).
    assert count_parameters(g) == 3_576_704
    assert count_parameters(d) == 2_765_568


def test_radford_28_layout() -> None:
    model = ModelSpec(arch="dcgan")
    g = build_generator(model, MNIST, None)
    g_convs = [m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    expected = [(100, 256, 7), (256, 128, 4), (128, 1, 4)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0]) for c in g_convs] == expected
    d = build_discriminator(model, MNIST, None, "bce")
    head = d.head
    assert head.kernel_size == (7, 7) and head.in_channels == 128


def test_dcgan_init_statistics() -> None:
    torch.manual_seed(0)
    model = ModelSpec(arch="dcgan")
    for net in (build_generator(model, (3, 64, 64), None), build_discriminator(model, (3, 64, 64), None, "bce")):
        convs = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
        weights = torch.cat([m.weight.flatten() for m in convs])
        assert abs(weights.mean().item()) < 1e-3
        assert weights.std().item() == pytest.approx(0.02, rel=0.02)
        bn = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
        gammas = torch.cat([m.weight for m in bn])
        assert gammas.mean().item() == pytest.approx(1.0, abs=0.005)
        assert gammas.std().item() == pytest.approx(0.02, rel=0.2)
        assert all(torch.count_nonzero(m.bias) == 0 for m in bn)


def test_keras_dcgan_layout() -> None:
    g = build_generator(ModelSpec(arch="dcgan", variant="keras"), MNIST, None)
    kinds = [type(m) for m in g.net]
    upsample = [nn.ConvTranspose2d, nn.SELU, nn.BatchNorm2d, nn.ConvTranspose2d, nn.Tanh]
    assert kinds == [nn.Linear, nn.Unflatten, nn.BatchNorm2d, *upsample]
    assert g.net[0].out_features == 7 * 7 * 128
    d = build_discriminator(ModelSpec(arch="dcgan", variant="keras"), MNIST, None, "bce")
    drops = [m for m in d.modules() if isinstance(m, nn.Dropout)]
    assert len(drops) == 2 and all(m.p == 0.3 for m in drops)


def test_unsupported_shapes_are_refused() -> None:
    with pytest.raises(ValueError):
        build_generator(ModelSpec(arch="dcgan"), (1, 48, 48), None)
    with pytest.raises(ValueError):
        build_discriminator(ModelSpec(arch="dcgan", variant="keras"), (1, 32, 32), None, "bce")
    with pytest.raises(ValueError):
        build_generator(ModelSpec(arch="dcgan"), POINTS, None)
    with pytest.raises(ValueError):
        build_generator(ModelSpec(conditioning="cgan"), MNIST, None)  # classes unknown


def test_spectral_norm_wraps_every_discriminator_layer() -> None:
    for arch, variant in (("mlp", "radford"), ("dcgan", "radford"), ("dcgan", "keras")):
        model = small(arch=arch, variant=variant, spectral_norm=True, conditioning="acgan")
        d = build_discriminator(model, MNIST, K, "hinge")
        layers = [m for m in d.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        assert layers and all(nn.utils.parametrize.is_parametrized(m, "weight") for m in layers)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in d.modules())  # auto: no norm with SN


def test_spectral_norm_bounds_the_linear_layers() -> None:
    d = build_discriminator(ModelSpec(spectral_norm=True), MNIST, None, "bce")
    x = torch.randn(BATCH, *MNIST)
    for _ in range(20):  # power iteration converges over forward passes in train mode
        d(x)
    for layer in (m for m in d.modules() if isinstance(m, nn.Linear)):
        assert torch.linalg.matrix_norm(layer.weight, ord=2).item() == pytest.approx(1.0, abs=0.05)


def test_cgan_uses_labels_and_acgan_discriminator_ignores_them() -> None:
    torch.manual_seed(0)
    model = small(conditioning="cgan")
    g, d = build_generator(model, MNIST, K).eval(), build_discriminator(model, MNIST, K, "bce").eval()
    z = torch.randn(BATCH, model.latent_dim)
    x = g(z, labels())
    assert not torch.allclose(x, g(z, (labels() + 1) % K))
    assert not torch.allclose(d(x, labels())[0], d(x, (labels() + 1) % K)[0])
    with pytest.raises(ValueError):
        g(z)
    with pytest.raises(ValueError):
        d(x)
    ac = small(conditioning="acgan")
    d_ac = build_discriminator(ac, MNIST, K, "bce").eval()
    assert d_ac.label_embed is None
    out_a, cls_a = d_ac(x, labels())
    out_b, cls_b = d_ac(x, (labels() + 1) % K)
    assert torch.equal(out_a, out_b) and torch.equal(cls_a, cls_b)
    assert build_generator(ac, MNIST, K).label_embed is not None


def test_embed_dim_sets_the_label_embedding_width() -> None:
    model = small(conditioning="cgan", embed_dim=4)
    assert build_generator(model, MNIST, K).label_embed.embedding_dim == 4
    d = build_discriminator(small(arch="dcgan", conditioning="cgan", embed_dim=4), MNIST, K, "bce")
    assert d.trunk[0].in_channels == 1 + 4  # image channel + label maps
    assert build_generator(small(conditioning="cgan"), MNIST, K).label_embed.embedding_dim == K


def test_packing_judges_consecutive_groups() -> None:
    torch.manual_seed(0)
    d = build_discriminator(small(pack=2), MNIST, None, "bce")  # mlp D: no batch statistics
    assert d.trunk[0].in_features == 2 * 784
    x = torch.randn(BATCH, *MNIST)
    logits, _ = d(x)
    # Swapping whole groups swaps their logits; the groups are samples (0, 1), (2, 3), ...
    swapped = torch.cat([x[2:4], x[0:2], x[4:]])
    expected = logits[[1, 0, 2, 3]]
    assert torch.allclose(d(swapped)[0], expected, atol=1e-6)
    with pytest.raises(ValueError):
        d(x[:7])


def test_packed_conv_discriminator_takes_m_times_the_channels() -> None:
    d = build_discriminator(small(arch="dcgan", pack=4), (3, 32, 32), None, "bce")
    assert d.trunk[0].in_channels == 12


def test_minibatch_std_makes_d_see_the_batch() -> None:
    torch.manual_seed(0)
    x = torch.randn(BATCH, *MNIST)
    other = x.clone()
    other[1:] = 0.0  # same first sample, collapsed rest of the batch
    plain = build_discriminator(small(), MNIST, None, "bce")
    assert torch.allclose(plain(x)[0][0], plain(other)[0][0])
    mbstd = build_discriminator(small(minibatch_std=True), MNIST, None, "bce")
    assert mbstd.head.in_features == SMALL["hidden_d"][-1] + 1
    assert not torch.allclose(mbstd(x)[0][0], mbstd(other)[0][0])


def test_append_minibatch_std_values() -> None:
    flat = torch.tensor([[0.0, 1.0], [2.0, 5.0]])  # per-feature std (biased) 1 and 2 -> mean 1.5
    out = append_minibatch_std(flat)
    assert out.shape == (2, 3)
    assert torch.allclose(out[:, 2], torch.tensor([1.5, 1.5]), atol=1e-6)
    maps = torch.randn(4, 3, 5, 5)
    out = append_minibatch_std(maps)
    assert out.shape == (4, 4, 5, 5)
    expected = maps.var(dim=0, unbiased=False).sqrt().mean()
    assert torch.allclose(out[:, 3], expected.expand(4, 5, 5), atol=1e-5)
    assert torch.equal(out[:, :3], maps)


def test_ema_update_math_and_buffers() -> None:
    torch.manual_seed(0)
    g = build_generator(small(), MNIST, None)
    ema = EMA(g, decay=0.9)
    assert not ema.module.training
    assert all(not p.requires_grad for p in ema.module.parameters())
    before = [p.detach().clone() for p in ema.module.parameters()]
    with torch.no_grad():
        for p in g.parameters():
            p.add_(torch.randn_like(p))
    g.train()
    g(torch.randn(BATCH, 100))  # moves the BN running statistics
    ema.update(g)
    for old, new, avg in zip(before, g.parameters(), ema.module.parameters()):
        assert torch.allclose(avg, 0.9 * old + 0.1 * new, atol=1e-6)
    for ema_buffer, buffer in zip(ema.module.buffers(), g.buffers()):
        assert torch.equal(ema_buffer, buffer)
    assert any(torch.count_nonzero(b) for b in ema.module.buffers() if b.dtype == torch.long)  # num_batches_tracked
    # A second update keeps averaging: parameters geometrically approach the live ones.
    ema.update(g)
    for old, new, avg in zip(before, g.parameters(), ema.module.parameters()):
        assert torch.allclose(avg, 0.81 * old + 0.19 * new, atol=1e-6)


def test_ema_state_dict_round_trip_into_a_fresh_generator() -> None:
    model = small()
    g = build_generator(model, MNIST, None)
    ema = EMA(g, decay=0.5)
    with torch.no_grad():
        for p in g.parameters():
            p.mul_(2.0)
    ema.update(g)
    fresh = build_generator(model, MNIST, None)
    fresh.load_state_dict(ema.state_dict())
    fresh.eval()
    z = torch.randn(4, model.latent_dim)
    assert torch.allclose(fresh(z), ema.module(z))
    other = EMA(build_generator(model, MNIST, None), decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert torch.allclose(other.module(z), ema.module(z))
    with pytest.raises(ValueError):
        EMA(g, decay=1.0)


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
@pytest.mark.parametrize("arch,variant", [("mlp", "radford"), ("dcgan", "radford"), ("dcgan", "keras")])
def test_gradient_reaches_every_generator_parameter_through_d(arch: str, variant: str, conditioning: str) -> None:
    torch.manual_seed(0)
    model = small(arch=arch, variant=variant, conditioning=conditioning, minibatch_std=True)
    classes = K if conditioning != "none" else None
    g = build_generator(model, MNIST, classes)
    d = build_discriminator(model, MNIST, classes, "bce")
    y = labels() if classes else None
    logits, _ = d(g(torch.randn(BATCH, model.latent_dim), y), y)
    g_loss("bce", logits).backward()
    for name, p in g.named_parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) > 0, name


def test_the_normal_prior_draws_what_torch_randn_draws():
    # Seeds, fixed grids and checkpoints made before priors existed give the same latents.
    g = build_generator(small(latent_dim=5), MNIST, None)
    a = g.sample_latent(7, torch.Generator().manual_seed(3))
    assert torch.equal(a, torch.randn(7, 5, generator=torch.Generator().manual_seed(3)))
    assert not any(name.startswith("prior") for name in g.state_dict())


def test_a_mixture_prior_draws_tight_clusters_around_its_kept_centres():
    torch.manual_seed(0)
    g = build_generator(small(latent_dim=4, latent_prior="mixture", latent_components=6,
                              latent_component_std=0.05), POINTS, None)
    centers = g.state_dict()["prior.centers"]
    assert centers.shape == (6, 4)
    z = g.sample_latent(3000, torch.Generator().manual_seed(1))
    nearest = torch.cdist(z, centers).min(dim=1)
    # Each draw lies within a few std of one centre (0.05 x a chi with 4 dof, mean 1.88; over 6: p < 1e-6).
    assert nearest.values.max() < 0.3
    counts = torch.bincount(nearest.indices, minlength=6)
    assert counts.min() > 400  # uniform weights: 500 each on average
    assert torch.equal(z, g.sample_latent(3000, torch.Generator().manual_seed(1)))
    # A copy (the EMA generator) samples from the same centres.
    assert torch.equal(EMA(g, 0.9).module.sample_latent(5, torch.Generator().manual_seed(2)),
                       g.sample_latent(5, torch.Generator().manual_seed(2)))


def test_unknown_prior_is_refused():
    with pytest.raises(ValueError, match="latent prior"):
        LatentPrior(2, "uniform")
