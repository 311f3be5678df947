import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from gan_core import checkpoint as ckpt
from gan_core.cli import main
from gan_core.images import png_to_array
from gan_core.sampling import generate, interpolate, load_generator
from gan_core.spec import JobSpec
from gan_core.trainer import Trainer


def tiny(dataset="ring8", **model):
    doc = {"name": "s", "dataset": {"name": dataset}, "train": {"steps": 4, "batch_size": 8},
           "model": {"latent_dim": 4, "hidden_g": [16], "hidden_d": [16], **model}, "eval": {"at_end": False}}
    if dataset == "mnist":
        doc["dataset"]["limit"] = 64
    return JobSpec.model_validate(doc)


@pytest.fixture()
def ring_trainer():
    trainer = Trainer(tiny(ema_decay=0.5))
    trainer.run()
    return trainer


def test_generate_is_deterministic_in_data_space(ring_trainer):
    a = generate(ring_trainer.checkpoint(), 10, seed=1)
    b = generate(ring_trainer.generator_file(), 10, seed=1)
    assert a.shape == (10, 2) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)  # the final file holds the EMA, as the checkpoint's EMA
    assert not np.array_equal(a, generate(ring_trainer.checkpoint(), 10, seed=2))


def test_generate_conditional_images_with_labels(data_config):
    trainer = Trainer(tiny("mnist", conditioning="cgan"), data_config=data_config)
    trainer.run()
    out = generate(trainer.checkpoint(), 6, seed=0, labels=[0, 1, 2, 3, 4, 5])
    assert out.shape == (6, 1, 28, 28) and out.min() >= -1 and out.max() <= 1
    with pytest.raises(ValueError, match="labels must be integers"):
        generate(trainer.checkpoint(), 2, labels=[0, 10])
    with pytest.raises(ValueError, match="2 labels"):
        generate(trainer.checkpoint(), 3, labels=[0, 1])


def test_generate_uses_the_checkpoints_mixture_centres():
    trainer = Trainer(tiny(latent_prior="mixture", latent_components=5))
    trainer.run()
    saved = trainer.checkpoint()
    torch.manual_seed(12345)  # another process would build other centres: the checkpoint's must win
    loaded = load_generator(saved)
    assert torch.equal(loaded.module.prior.centers, trainer.state.generator.prior.centers)
    net = trainer.state.sampling_generator.eval()
    with torch.no_grad():
        expected = net(net.sample_latent(6, torch.Generator().manual_seed(4))).numpy()
    np.testing.assert_allclose(generate(saved, 6, seed=4), expected, atol=1e-6)


def test_interpolation_has_fixed_ends(ring_trainer):
    path = interpolate(ring_trainer.generator_file(), 1, 2, steps=5)
    assert path.shape == (5, 2)
    ends = generate(ring_trainer.generator_file(), 1, seed=1)
    np.testing.assert_allclose(path[0], ends[0], atol=1e-5)


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/ganforge-pwned",))


def test_foreign_pickle_is_refused(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"format": ckpt.TRAINING_FORMAT, "payload": Exploit()}, evil)
    with pytest.raises(ckpt.CheckpointError, match="refused"):
        ckpt.load(evil)
    assert not os.path.exists("/tmp/ganforge-pwned")
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ckpt.CheckpointError):
        ckpt.load(plain)


def test_corrupt_and_foreign_checkpoints_are_clear_errors(tmp_path, ring_trainer):
    good = ckpt.save(ring_trainer.checkpoint(), tmp_path / "good.pt")
    truncated = tmp_path / "trunc.pt"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(ckpt.CheckpointError, match="corrupt or truncated"):
        ckpt.load(truncated)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(ckpt.CheckpointError, match="not a ganforge checkpoint"):
        ckpt.load(other)
    with pytest.raises(ckpt.CheckpointError, match="no such"):
        ckpt.load(tmp_path / "missing.pt")
    with pytest.raises(ckpt.CheckpointError, match="expected"):
        ckpt.load(good, expect=ckpt.GENERATOR_FORMAT)


def test_checkpoint_roundtrip_through_bytes(ring_trainer):
    data = ckpt.load(ckpt.to_bytes(ring_trainer.checkpoint()))
    assert data["step"] == 4 and data["spec"]["name"] == "s"
    assert load_generator(data).num_classes is None


def test_cli_train_and_generate(tmp_path, capsys, data_dir):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"name": "c", "dataset": {"name": "ring8"}, "model": {"latent_dim": 2, "hidden_g": [16], "hidden_d": [16]},
                                "train": {"steps": 6, "batch_size": 8}, "log_every": 2, "sample_every": 3, "checkpoint_every": 3}))
    out = tmp_path / "run"
    assert main(["train", str(spec), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "final generator" in printed
    assert (out / "final" / "generator.pt").exists() and (out / "loss_plot.png").exists()
    assert (out / "interpolation.png").read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step-000003.png", "step-000006.png"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000003.pt", "step-000006.pt"]
    assert [json.loads(l)["step"] for l in (out / "metrics.jsonl").read_text().splitlines()] == [2, 4, 6]
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["n_samples"] == 2500 and 0 <= evaluation["modes"] <= 8

    npy = tmp_path / "s.npy"
    assert main(["generate", str(out / "final" / "generator.pt"), "--n", "7", "--out", str(npy)]) == 0
    assert np.load(npy).shape == (7, 2)
    png = tmp_path / "s.png"
    assert main(["generate", str(out / "checkpoints" / "step-000003.pt"), "--n", "7", "--out", str(png)]) == 0
    assert png_to_array(png.read_bytes()).ndim >= 2


def test_cli_bad_spec_is_one_screen_error(tmp_path, capsys):
    spec = tmp_path / "bad.json"
    spec.write_text(json.dumps({"name": "b", "dataset": {"name": "ring8"}, "model": {"arch": "dcgan"},
                                "train": {"batch_size": 0, "lr_g": -1}}))
    assert main(["train", str(spec), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "invalid spec" in err and "train.batch_size" in err and "train.lr_g" in err
    assert "Traceback" not in err and len(err.splitlines()) < 15
    (tmp_path / "broken.json").write_text("{not json")
    assert main(["validate", str(tmp_path / "broken.json")]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["validate", str(tmp_path / "missing.json")]) == 2
    assert main(["generate", str(spec), "--n", "2", "--out", str(tmp_path / "x.npy")]) == 1
    assert "ganforge: " in capsys.readouterr().err


def test_console_script_prints_schema():
    out = subprocess.run([sys.executable, "-m", "gan_core.cli", "schema"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and json.loads(out.stdout)["title"] == "JobSpec"
