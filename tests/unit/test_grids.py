"""Grids that show the model: RGB grids at the images' size, the per-job interpolation strip, one
row per class for conditional models; and the classifier command the evaluation relies on."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from gan_core import images
from gan_core.cli import main
from gan_core.data import ImageDataset
from gan_core.sampling import STRIP_ROWS, STRIP_STEPS, generate, interpolate, interpolation_png, load_generator
from gan_core.spec import JobSpec
from gan_core.trainer import Trainer

CELL = 28 + 2  # image + padding


def tile(picture: np.ndarray, row: int, col: int, size: int = 28, padding: int = 2) -> np.ndarray:
    top, left = padding + row * (size + padding), padding + col * (size + padding)
    return picture[top : top + size, left : left + size]


def to_pixels(sample: np.ndarray) -> np.ndarray:
    """C×H×W in [-1, 1] → H×W×C uint8, as grid_png rounds."""
    return np.clip((sample + 1.0) * 0.5 * 255.0 + 0.5, 0, 255).astype(np.uint8).transpose(1, 2, 0)


def test_rgb_grid_keeps_the_images_size_and_colours() -> None:
    samples = -np.ones((6, 3, 28, 28), np.float32)
    samples[:, 0] = 1.0  # pure red
    samples[1, :, 5:10, 5:10] = 1.0  # a white square in the second image
    picture = images.png_to_array(images.grid_png(samples, nrow=3))
    assert picture.shape == (2 * CELL + 2, 3 * CELL + 2, 3)
    assert (tile(picture, 0, 0) == [255, 0, 0]).all()
    assert (tile(picture, 0, 1)[5:10, 5:10] == 255).all() and (tile(picture, 0, 1)[0, 0] == [255, 0, 0]).all()


def image_trainer(conditional: bool, classes: int = 3) -> Trainer:
    gen = torch.Generator().manual_seed(0)
    data = ImageDataset(torch.rand(64, 3, 28, 28, generator=gen) * 2 - 1,
                        torch.arange(64) % classes if conditional else None, classes if conditional else None)
    spec = JobSpec.model_validate({
        "name": "grid", "dataset": {"name": "npz", "path": "unused.npz"}, "device": "cpu",
        "model": {"arch": "dcgan", "ngf": 8, "ndf": 8, "conditioning": "cgan" if conditional else "none"},
        "train": {"steps": 2, "batch_size": 8}, "eval": {"at_end": False}, "sample_count": 7,
    })
    trainer = Trainer(spec, dataset=data)
    trainer.run()
    return trainer


def test_the_interpolation_strip_walks_between_the_seeds_latents() -> None:
    trainer = image_trainer(conditional=False)
    file = trainer.generator_file()
    picture = images.png_to_array(interpolation_png(file))
    assert picture.shape == (STRIP_ROWS * CELL + 2, STRIP_STEPS * CELL + 2, 3)
    loaded = load_generator(file)
    # Row r runs from seed 2r's latent to seed 2r + 1's: its ends are those seeds' samples.
    for row in range(STRIP_ROWS):
        start = generate(loaded, 1, seed=2 * row)[0]
        end = generate(loaded, 1, seed=2 * row + 1)[0]
        assert np.array_equal(tile(picture, row, 0), to_pixels(start))
        assert np.array_equal(tile(picture, row, STRIP_STEPS - 1), to_pixels(end))
    path = interpolate(loaded, 0, 1, STRIP_STEPS)
    assert np.array_equal(tile(picture, 0, 4), to_pixels(path[4]))
    assert not np.array_equal(tile(picture, 0, 0), tile(picture, 1, 0))


def test_conditional_grids_and_strips_have_one_row_per_class() -> None:
    trainer = image_trainer(conditional=True, classes=3)
    # sample_count 7 over 3 classes: 3 per row (rounded up), row c all class c.
    assert trainer.grid_nrow == 3
    assert trainer.fixed_y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    picture = images.png_to_array(trainer.sample_grid())
    assert picture.shape == (3 * CELL + 2, 3 * CELL + 2, 3)
    generator = trainer.state.sampling_generator.eval()
    with torch.no_grad():
        for c in range(3):
            z = trainer.fixed_z[3 * c : 3 * c + 1]
            own = generator(z, torch.tensor([c])).numpy()[0]
            assert np.array_equal(tile(picture, c, 0), to_pixels(own))
    strip = images.png_to_array(interpolation_png(trainer.generator_file()))
    assert strip.shape == (3 * CELL + 2, STRIP_STEPS * CELL + 2, 3)
    loaded = load_generator(trainer.generator_file())
    for c in range(3):
        assert np.array_equal(tile(strip, c, 0), to_pixels(generate(loaded, 1, seed=0, labels=c)[0]))


def test_the_strip_of_a_2d_mixture_is_a_scatter_plot() -> None:
    spec = JobSpec.model_validate({"name": "r", "dataset": {"name": "ring8"}, "device": "cpu",
                                   "model": {"hidden_g": [16], "hidden_d": [16], "g_batchnorm": False},
                                   "train": {"steps": 2, "batch_size": 16}, "eval": {"at_end": False}})
    trainer = Trainer(spec)
    trainer.run()
    picture = images.png_to_array(interpolation_png(trainer.generator_file()))
    assert picture.ndim == 3 and picture.shape[2] == 3 and picture.shape[0] > 100


# ---- ganforge classifier train -----------------------------------------------------------------------


def test_classifier_train_refuses_an_unknown_dataset(capsys) -> None:
    assert main(["classifier", "train", "ring8"]) == 2
    assert "no built-in classifier for 'ring8'" in capsys.readouterr().err


def test_classifier_train_caches_the_classifier_the_evaluation_loads(data_dir, tmp_path, monkeypatch, capsys) -> None:
    from gan_core import data as data_module
    from gan_core import quality, evaluator
    from gan_core.data import DataConfig

    real_split = data_module.load_test_images

    def small_split(spec, config, split="test"):  # the same code path on 2000 / 500 digits: seconds, not a minute
        x, y = real_split(spec, config, split)
        n = 2000 if split == "train" else 500
        return x[:n], y[:n]

    monkeypatch.setattr(evaluator, "load_test_images", small_split)
    cache = tmp_path / "cache"
    assert main(["classifier", "train", "mnist", "--data-dir", str(data_dir), "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "mnist: domain classifier test accuracy" in out and "seed 0" in out
    files = list((cache / "classifiers").glob("domain-classifier-*.pt"))
    assert len(files) == 1

    def no_training(*args, **kwargs):
        raise AssertionError("the evaluation should load what the command trained")

    monkeypatch.setattr(quality, "_train", no_training)
    spec = JobSpec.model_validate({"name": "m", "dataset": {"name": "mnist"}})
    data = types.SimpleNamespace(kind="image", num_classes=10)
    ev = evaluator.Evaluator(spec, data=data, config=DataConfig(data_dir=data_dir, cache_dir=cache))
    assert ev._ensure_classifier() and ev._classifier_meta["n_train"] == 2000
    # A second run of the command reuses the cache.
    assert main(["classifier", "train", "mnist", "--data-dir", str(data_dir), "--cache-dir", str(cache)]) == 0
