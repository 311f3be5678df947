import json
import os
import subprocess
import sys

import pytest
import torch

from gan_core import checkpoint as ckpt
from gan_core.spec import JobSpec
from gan_core.trainer import Callbacks, NonFiniteLossError, Trainer, train_step_floats


def ring_spec(**over):
    doc = {
        "name": "t", "dataset": {"name": "ring8"},
        "model": {"latent_dim": 2, "hidden_g": [32, 32], "hidden_d": [32, 32]},
        "train": {"steps": 20, "batch_size": 16, "seed": 3},
        "log_every": 5, "sample_every": 10, "checkpoint_every": 10, "eval": {"at_end": False},
    }
    for key, value in over.items():
        doc[key] = {**doc[key], **value} if isinstance(value, dict) and key in doc else value
    return JobSpec.model_validate(doc)


class Recorder(Callbacks):
    def __init__(self, stop_after=None):
        self.metrics, self.samples, self.checkpoints, self.evaluations = [], [], [], []
        self.polls = 0
        self.stop_after = stop_after

    def on_metrics(self, step, metrics):
        self.metrics.append((step, metrics))

    def on_samples(self, step, png):
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        self.samples.append(step)

    def on_checkpoint(self, step, checkpoint):
        assert checkpoint["step"] == step
        self.checkpoints.append(step)

    def on_evaluation(self, step, results):
        self.evaluations.append((step, results))

    def should_stop(self):
        self.polls += 1
        return self.stop_after is not None and self.polls > self.stop_after


@pytest.mark.parametrize("d_steps,g_steps", [(1, 1), (1, 2), (5, 1), (2, 3)])
def test_step_schedule_counts_updates_and_batches(d_steps, g_steps):
    spec = ring_spec(train={"steps": 7, "d_steps": d_steps, "g_steps": g_steps})
    trainer = Trainer(spec)
    counts = {"d": 0, "g": 0, "real": 0}
    for name, opt in (("d", trainer.state.opt_d), ("g", trainer.state.opt_g)):
        original = opt.step

        def counted(*a, _n=name, _orig=original, **k):
            counts[_n] += 1
            return _orig(*a, **k)

        opt.step = counted
    sample = trainer.data.sample

    def counted_sample(n):
        counts["real"] += 1
        return sample(n)

    trainer.data.sample = counted_sample
    trainer.run()
    assert counts == {"d": 7 * d_steps, "g": 7 * g_steps, "real": 7 * d_steps}


def test_callbacks_cadence_and_metrics_content():
    rec = Recorder()
    result = Trainer(ring_spec(), callbacks=rec).run()
    assert result.step == 20 and not result.stopped
    assert [s for s, _ in rec.metrics] == [5, 10, 15, 20]
    assert rec.samples == [10, 20] and rec.checkpoints == [10, 20]
    metrics = rec.metrics[-1][1]
    for key in ("loss_d", "loss_g", "d_real", "d_fake", "acc_real", "acc_fake", "acc_d",
                "grad_norm_d", "grad_norm_g", "steps_per_s", "images_per_s"):
        assert key in metrics and metrics[key] == metrics[key], key  # present and not NaN
    assert 0.0 <= metrics["d_real"] <= 1.0 and 0.0 <= metrics["acc_d"] <= 1.0


def test_should_stop_is_polled_every_step():
    rec = Recorder(stop_after=7)
    result = Trainer(ring_spec(), callbacks=rec).run()
    assert result.stopped and result.step == 7 and rec.polls == 8


def test_train_step_returns_floats_and_learns_something():
    spec = ring_spec()
    trainer = Trainer(spec)
    before = [p.detach().clone() for p in trainer.state.generator.parameters()]
    out = train_step_floats(trainer.state, trainer.data, trainer.noise, spec)
    assert all(isinstance(v, float) for v in out.values())
    after = list(trainer.state.generator.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after))


def test_non_finite_loss_raises_with_the_first_bad_step():
    spec = ring_spec(log_every=10)
    trainer = Trainer(spec)
    real_sample = trainer.data.sample
    calls = {"n": 0}

    def poisoned(n):
        calls["n"] += 1
        x, y = real_sample(n)
        return (x * float("nan"), y) if calls["n"] >= 4 else (x, y)

    trainer.data.sample = poisoned
    with pytest.raises(NonFiniteLossError) as info:
        trainer.run()
    assert info.value.step == 4


@pytest.mark.parametrize("loss", ["minimax", "bce", "lsgan", "wgan-gp", "hinge"])
def test_every_loss_trains_finitely(loss):
    rec = Recorder()
    spec = ring_spec(loss=loss, train={"steps": 10, "d_steps": 2})
    Trainer(spec, callbacks=rec).run()
    assert all(torch.isfinite(torch.tensor(m["loss_d"])) for _, m in rec.metrics)
    if loss == "wgan-gp":
        assert "gp" in rec.metrics[-1][1]


RESUME_SPECS = {
    "mlp-ring-mixture-prior": {
        "name": "m", "dataset": {"name": "ring8"},
        "model": {"latent_dim": 3, "hidden_g": [16], "hidden_d": [16], "g_batchnorm": False,
                  "latent_prior": "mixture", "latent_components": 8, "latent_component_std": 0.2},
        "train": {"steps": 8, "batch_size": 16, "seed": 3}, "checkpoint_every": 4,
        "sample_every": 2, "log_every": 2, "eval": {"at_end": False},
    },
    "mlp-ring-ema": {
        "name": "r", "dataset": {"name": "ring8"},
        "model": {"latent_dim": 2, "hidden_g": [32, 32], "hidden_d": [32], "ema_decay": 0.9, "minibatch_std": True},
        "train": {"steps": 12, "batch_size": 16, "g_steps": 2, "seed": 5}, "checkpoint_every": 6,
        "sample_every": 3, "log_every": 3, "eval": {"at_end": False},
    },
    "keras-dcgan-acgan-mnist": {
        "name": "k", "dataset": {"name": "mnist", "limit": 256},
        "model": {"arch": "dcgan", "variant": "keras", "latent_dim": 16, "conditioning": "acgan", "spectral_norm": True},
        "train": {"steps": 8, "batch_size": 8, "seed": 7}, "checkpoint_every": 4, "sample_every": 2,
        "log_every": 2, "eval": {"at_end": False},
    },
}


def _cli(*args, env_data_dir):
    cmd = [sys.executable, "-m", "gan_core.cli", "train", *args, "--quiet", "--data-dir", str(env_data_dir)]
    # One thread: bit-exactness compares two runs' sums, and MKL may give a busy machine's run
    # fewer threads (MKL_DYNAMIC), which splits the sums differently.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    return out


@pytest.mark.parametrize("name", sorted(RESUME_SPECS))
def test_resume_in_a_new_process_is_bit_exact(name, tmp_path, data_dir):
    # Half-way is a multiple of every period, so both runs log, sample and save at the same steps.
    doc = RESUME_SPECS[name]
    total = doc["train"]["steps"]
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(doc))
    straight, halves = tmp_path / "straight", tmp_path / "halves"
    _cli(str(spec_file), "--out", str(straight), env_data_dir=data_dir)
    _cli(str(spec_file), "--out", str(halves), "--steps", str(total // 2), env_data_dir=data_dir)
    _cli(str(spec_file), "--out", str(halves), "--resume", env_data_dir=data_dir)

    a = ckpt.load(straight / "checkpoints" / f"step-{total:06d}.pt")
    b = ckpt.load(halves / "checkpoints" / f"step-{total:06d}.pt")
    for part in ("generator", "discriminator", "ema"):
        if a[part] is None:
            continue
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key} differs"
    for opt in ("opt_g", "opt_d"):
        for pid, state in a[opt]["state"].items():
            for key, value in state.items():
                assert torch.equal(value, b[opt]["state"][pid][key]), f"{opt}.{pid}.{key} differs"
    assert torch.equal(a["rng"]["noise"], b["rng"]["noise"])
    # Metrics: the same steps, each once, and the same values where training is identical.
    rows_a = [json.loads(l) for l in (straight / "metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(l) for l in (halves / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b]
    assert [r["loss_d"] for r in rows_a] == [r["loss_d"] for r in rows_b]
    assert sorted(p.name for p in (straight / "samples").iterdir()) == sorted(p.name for p in (halves / "samples").iterdir())


def test_resume_refuses_a_checkpoint_of_another_model():
    trainer = Trainer(ring_spec())
    trainer.run(4)
    saved = trainer.checkpoint()
    other = ring_spec(model={"hidden_g": [16]})
    with pytest.raises(ckpt.CheckpointError, match="model"):
        Trainer(other, resume_from=saved)


def test_linear_lr_decay_reaches_zero_at_the_last_step():
    spec = ring_spec(train={"steps": 10, "lr_decay": "linear", "lr_decay_start": 0.5, "lr_d": 1e-3, "lr_g": 2e-3})
    trainer = Trainer(spec)
    seen = []
    original = trainer.state.opt_g.step

    def record(*a, **k):
        seen.append(trainer.state.opt_g.param_groups[0]["lr"])
        return original(*a, **k)

    trainer.state.opt_g.step = record
    trainer.run()
    assert seen[:5] == [2e-3] * 5
    assert all(a > b for a, b in zip(seen[4:], seen[5:]))
    assert seen[-1] == pytest.approx(2e-3 / 6) and seen[-1] > 0
    assert trainer.state.opt_d.param_groups[0]["lr"] == pytest.approx(1e-3 / 6)


def test_d_fake_mode_eval_uses_and_keeps_the_running_statistics():
    from gan_core.trainer import make_d_fakes

    trainer = Trainer(ring_spec(train={"steps": 5}))
    trainer.run()  # running statistics away from their initial values
    G = trainer.state.generator
    bn = next(m for m in G.modules() if isinstance(m, torch.nn.BatchNorm1d))
    z = torch.randn(16, 2)
    before = bn.running_mean.clone()

    fakes = make_d_fakes(G, z, None, "eval")
    assert G.training, "G's mode must be restored"
    assert torch.equal(bn.running_mean, before)
    G.eval()
    with torch.no_grad():
        assert torch.equal(fakes, G(z))  # running statistics, as Keras' generator.predict
    G.train()
    assert not fakes.requires_grad

    train_fakes = make_d_fakes(G, z, None, "train")
    assert not torch.equal(bn.running_mean, before)  # batch statistics, and the running ones move
    assert not torch.allclose(train_fakes, fakes)


def test_split_d_update_is_a_step_on_the_reals_then_one_on_the_fakes():
    import copy

    from gan_core import losses
    from gan_core.trainer import split_d_update

    spec = ring_spec(train={"d_update": "split"})
    trainer = Trainer(spec)
    state = trainer.state
    D_ref = copy.deepcopy(state.discriminator)
    opt_ref = torch.optim.Adam(D_ref.parameters(), lr=spec.train.lr_d, betas=(spec.train.beta1, spec.train.beta2))
    real, _ = trainer.data.sample(16)
    fake = torch.randn(16, 2)

    loss, aux, real_logits, fake_logits = split_d_update(state, real, None, fake, None, spec)

    ref_real = D_ref(real)[0]
    opt_ref.zero_grad()
    losses.d_loss_real("bce", ref_real).backward()
    opt_ref.step()
    ref_fake = D_ref(fake)[0]  # after the first update, as Keras' second train_on_batch sees it
    opt_ref.zero_grad()
    losses.d_loss_fake("bce", ref_fake).backward()
    opt_ref.step()

    for p, q in zip(state.discriminator.parameters(), D_ref.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    torch.testing.assert_close(real_logits, ref_real.detach())
    torch.testing.assert_close(fake_logits, ref_fake.detach())
    expected = losses.d_loss_real("bce", ref_real) + losses.d_loss_fake("bce", ref_fake)
    assert loss.item() == pytest.approx(expected.item())
    assert aux.item() == 0.0


def test_split_d_update_takes_two_discriminator_steps_per_d_step():
    trainer = Trainer(ring_spec(train={"steps": 3, "d_steps": 2, "d_update": "split", "d_fake_mode": "eval"}))
    calls = []
    original = trainer.state.opt_d.step
    trainer.state.opt_d.step = lambda *a, **k: (calls.append(1), original(*a, **k))[1]
    trainer.run()
    assert len(calls) == 3 * 2 * 2
    assert all(torch.isfinite(p).all() for p in trainer.state.discriminator.parameters())
