"""Discriminator rejection sampling: the acceptance law, slots and labels, and the trainer/file/CLI wiring."""

import json

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from gan_core import checkpoint as ckpt
from gan_core.cli import main
from gan_core.rejection import RejectionError, Rejector, build_rejector, chunk_size, sample
from gan_core.sampling import generate, load_generator
from gan_core.spec import JobSpec, error_details
from gan_core.trainer import Trainer


class PointGenerator(nn.Module):
    """z ~ N(0, I) in 2-D, x = z; with labels, x = (label, z0)."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def sample_latent(self, n, generator=None):
        return torch.randn(n, 2, generator=generator)

    def forward(self, z, y=None):
        if y is None:
            return z
        return torch.stack([y.float(), z[:, 0]], dim=1)


class RuleDiscriminator(nn.Module):
    """Logit ``inside`` where x[:, column] > 0, else ``outside`` (or logit = x[:, column] when linear)."""

    minibatch_std = False

    def __init__(self, inside=0.0, outside=0.0, column=0, linear=False):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))
        self.inside, self.outside, self.column, self.linear = inside, outside, column, linear

    def forward(self, x, y=None):
        v = x[:, self.column]
        if self.linear:
            return v, None
        return torch.where(v > 0, torch.tensor(self.inside), torch.tensor(self.outside)), None


def test_samples_are_kept_in_proportion_to_the_density_ratio():
    # Right half: logit 0 = the threshold (always kept); left half: log 0.25 (kept 1 in 4).
    rejector = Rejector(RuleDiscriminator(0.0, float(np.log(0.25))), threshold=0.0, chunk=256)
    kept, acceptance = sample(PointGenerator(), rejector, 8000, torch.Generator().manual_seed(0))
    left = float((kept[:, 0] < 0).float().mean())
    assert left == pytest.approx(0.25 / 1.25, abs=0.02)
    assert acceptance == pytest.approx(0.5 * 1 + 0.5 * 0.25, abs=0.02)
    # Logits above the threshold are capped at "always kept": nothing is over-represented.
    capped = Rejector(RuleDiscriminator(5.0, 0.0), threshold=0.0, chunk=256)
    kept, acceptance = sample(PointGenerator(), capped, 8000, torch.Generator().manual_seed(0))
    assert float((kept[:, 0] < 0).float().mean()) == pytest.approx(0.5, abs=0.02) and acceptance == 1.0


def test_kept_samples_fill_their_label_slots_and_repeat_for_a_seed():
    rejector = Rejector(RuleDiscriminator(0.0, -50.0, column=1), threshold=0.0, chunk=64)
    labels = torch.arange(150) % 7
    a, acceptance = sample(PointGenerator(), rejector, 150, torch.Generator().manual_seed(3), labels)
    assert torch.equal(a[:, 0], labels.float())  # slot i carries label i
    assert bool((a[:, 1] > 0).all()) and acceptance == pytest.approx(0.5, abs=0.1)
    b, _ = sample(PointGenerator(), rejector, 150, torch.Generator().manual_seed(3), labels)
    c, _ = sample(PointGenerator(), rejector, 150, torch.Generator().manual_seed(4), labels)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_a_discriminator_that_keeps_nothing_is_a_clear_error():
    rejector = Rejector(RuleDiscriminator(-1e4, -1e4), threshold=0.0, chunk=64)
    with pytest.raises(RejectionError, match="too few"):
        sample(PointGenerator(), rejector, 10, torch.Generator().manual_seed(0))


def test_threshold_is_the_quantile_of_generated_logits():
    rejector = build_rejector(PointGenerator(), RuleDiscriminator(linear=True), 0.9, batch_size=64, num_classes=None)
    assert rejector.threshold == pytest.approx(1.2816, abs=0.05)  # the 90th percentile of N(0, 1)
    assert rejector.chunk == 1024

    class MinibatchStd(RuleDiscriminator):
        minibatch_std = True

    assert chunk_size(MinibatchStd(), 48) == 48  # scores depend on the batch: training-size batches


def _ring_spec(rejection="discriminator", **extra):
    doc = {"name": "drs", "dataset": {"name": "ring8"}, "loss": "bce",
           "model": {"latent_dim": 2, "hidden_g": [64, 64], "hidden_d": [64, 64], "g_batchnorm": False,
                     "leaky_slope": 0.0},
           "train": {"steps": 1000, "batch_size": 128, "lr_d": 1e-3, "lr_g": 1e-3, "seed": 3, "lr_decay": "linear"},
           "sampling": {"rejection": rejection}, "eval": {"n_samples": 2000}, "device": "cpu", **extra}
    return JobSpec.model_validate(doc)


@pytest.fixture(scope="module")
def ring_run():
    trainer = Trainer(_ring_spec())
    result = trainer.run()
    return trainer, result


def test_rejection_raises_the_share_of_high_quality_samples(ring_run):
    _, result = ring_run
    ev = result.evaluation
    assert ev["rejection"]["method"] == "discriminator" and 0.2 < ev["rejection"]["acceptance"] < 1.0
    assert ev["n_samples"] == 2000 and ev["raw"]["n_samples"] == 2000
    # A briefly trained generator leaves many samples between the modes; its D sees them
    # (measured: 16.0 % HQ raw, 22.9 % kept).
    assert ev["hq_percent"] > 1.25 * ev["raw"]["hq_percent"] > 10, (ev["hq_percent"], ev["raw"]["hq_percent"])


def test_rejection_removes_samples_far_from_every_mode(ring_run):
    trainer, _ = ring_run
    final = trainer.generator_file()
    centers, sigma = trainer.data.centers.cpu().numpy(), trainer.data.sigma

    def far_share(points):
        distance = np.linalg.norm(points[:, None, :] - centers[None], axis=2).min(axis=1)
        return float((distance > 10 * sigma).mean())

    raw, kept = far_share(generate(final, 4000, seed=1, rejection=False)), far_share(generate(final, 4000, seed=1))
    assert kept < 0.8 * raw, (kept, raw)  # measured: 37 % kept vs 53 % raw beyond 10 sigma


def test_generator_file_carries_the_discriminator_and_samples_as_the_checkpoint(ring_run, tmp_path):
    trainer, _ = ring_run
    final, training = trainer.generator_file(), trainer.checkpoint()
    assert set(final["rejection"]) == {"discriminator", "threshold"}
    loaded = load_generator(ckpt.load(ckpt.to_bytes(final)))
    assert loaded.rejector.threshold == pytest.approx(load_generator(training).rejector.threshold, abs=1e-6)
    a = generate(final, 300, seed=9)
    np.testing.assert_array_equal(a, generate(training, 300, seed=9))
    raw = generate(final, 300, seed=9, rejection=False)
    assert not np.array_equal(a, raw)
    # Without rejection the raw path draws exactly what a spec without rejection draws.
    plain = {**final, "spec": {**final["spec"], "sampling": {"rejection": "none"}}}
    plain.pop("rejection")
    np.testing.assert_array_equal(raw, generate(plain, 300, seed=9))

    path = tmp_path / "generator.pt"
    ckpt.save(final, path)
    assert main(["generate", str(path), "--n", "300", "--seed", "9", "--out", str(tmp_path / "kept.npy")]) == 0
    assert main(["generate", str(path), "--n", "300", "--seed", "9", "--no-rejection",
                 "--out", str(tmp_path / "raw.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "kept.npy"), a)
    np.testing.assert_array_equal(np.load(tmp_path / "raw.npy"), raw)


def test_cli_train_prints_the_raw_generators_figures_too(tmp_path, capsys):
    spec = _ring_spec(train={"steps": 30, "batch_size": 32}, eval={"n_samples": 200})
    path = tmp_path / "spec.json"
    path.write_text(spec.model_dump_json())
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "raw generator:" in out and "rejection sampling kept" in out
    saved = json.loads((tmp_path / "run" / "evaluation.json").read_text())
    assert saved["raw"]["n_samples"] == 200 and 0 < saved["rejection"]["acceptance"] <= 1


def test_a_file_without_its_discriminator_is_refused(ring_run):
    trainer, _ = ring_run
    final = trainer.generator_file()
    final.pop("rejection")
    with pytest.raises(ckpt.CheckpointError, match="no discriminator"):
        load_generator(final)


def test_evaluating_with_rejection_leaves_training_untouched():
    def weights(spec):
        trainer = Trainer(spec)
        trainer.run()
        return trainer.state.generator.state_dict()

    train = {"steps": 20, "batch_size": 32, "seed": 5}
    with_eval = weights(_ring_spec(train=train, eval_every=7, eval={"n_samples": 100}))
    without = weights(_ring_spec(rejection="none", train=train, eval={"at_end": False}))
    for key in without:
        assert torch.equal(with_eval[key], without[key]), key


@pytest.mark.parametrize("change, problem", [
    ({"loss": "wgan-gp"}, "logistic discriminator"),
    ({"loss": "hinge"}, "logistic discriminator"),
    ({"model": {"pack": 2}}, "packing"),
])
def test_spec_refuses_rejection_where_the_logit_is_no_density_ratio(change, problem):
    doc = {"name": "x", "dataset": {"name": "ring8"}, "sampling": {"rejection": "discriminator"}, **change}
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate(doc)
    details = error_details(info.value)
    assert details[0]["field"] == "sampling.rejection" and problem in details[0]["problem"]
    with pytest.raises(ValidationError):
        JobSpec.model_validate({"name": "x", "dataset": {"name": "ring8"}, "sampling": {"rejection_quantile": 1.0}})
