"""Stacked MNIST: the data, its mode counting, the spec's checks and the job evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from gan_core import quality, evaluator, stacked_mnist
from gan_core.data import DataConfig, build_dataset, dataset_fingerprint, load_idx_split
from gan_core.quality import get_classifier
from gan_core.spec import DatasetSpec, JobSpec, error_details
from gan_core.stacked_mnist import evaluate_stacked, load_stacked, mode_figures, stack_digits


@pytest.fixture(scope="module")
def config(data_dir, tmp_path_factory) -> DataConfig:
    return DataConfig(data_dir=data_dir, cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def classifier(config):
    """An MNIST classifier on 12 000 training digits, 1 epoch (~97 %): enough to read the channels."""
    images, labels = load_idx_split("mnist", "train", config)
    x = torch.from_numpy(images[:12000].copy()).float().div(127.5).sub(1.0).unsqueeze(1)
    y = torch.from_numpy(labels[:12000].astype(np.int64))
    test_images, test_labels = load_idx_split("mnist", "test", config)
    tx = torch.from_numpy(test_images[:2000].copy()).float().div(127.5).sub(1.0).unsqueeze(1)
    ty = torch.from_numpy(test_labels[:2000].astype(np.int64))
    model, meta = get_classifier("mnist-12k", (x, y), (tx, ty), config.cache_dir / "classifiers", epochs=1, seed=0)
    assert meta["test_accuracy"] > 0.93
    return model


def to_model_range(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).float().div(127.5).sub(1.0)


# ---- data -------------------------------------------------------------------------------------------


def test_stacking_is_deterministic_from_the_seed_and_labels_each_channel() -> None:
    images = np.arange(10, dtype=np.uint8)[:, None, None].repeat(4, 1).repeat(4, 2)  # image i is all i
    labels = np.arange(10)
    a, modes = stack_digits(images, labels, 500, seed=7)
    b, same = stack_digits(images, labels, 500, seed=7)
    c, other = stack_digits(images, labels, 500, seed=8)
    assert a.shape == (500, 3, 4, 4) and a.dtype == np.uint8
    assert np.array_equal(a, b) and np.array_equal(modes, same) and not np.array_equal(modes, other)
    # Each channel is a whole digit image, and the mode is the digits read as a 3-digit number.
    digits = a[:, :, 0, 0].astype(int)
    assert np.array_equal(modes, digits[:, 0] * 100 + digits[:, 1] * 10 + digits[:, 2])
    assert (a == a[:, :, :1, :1]).all()


def test_the_dataset_is_three_channels_of_mnist_and_limit_caps_it(config) -> None:
    data = build_dataset(DatasetSpec(name="stacked-mnist", limit=2000), config, seed=0)
    assert data.shape == (3, 28, 28) and len(data) == 2000 and data.num_classes is None
    assert data.images.min() >= -1.0 and data.images.max() <= 1.0
    x, modes = load_stacked("train", config, 2000)
    assert torch.equal(data.images, to_model_range(x)) and torch.equal(data.labels, torch.from_numpy(modes))
    big = build_dataset(DatasetSpec(name="stacked-mnist", limit=2000, image_size=32), config, seed=0)
    assert big.shape == (3, 32, 32)
    # The channels are different digits (not one image copied): they differ in most images.
    assert (x[:, 0] != x[:, 1]).any(axis=(1, 2)).mean() > 0.99
    # The test split is stacked from the test digits with its own stream.
    test, test_modes = load_stacked("test", config)
    assert test.shape == (10_000, 3, 28, 28) and not np.array_equal(test_modes[:2000], modes)


def test_fingerprint_names_the_stacked_data(config) -> None:
    stacked = dataset_fingerprint(DatasetSpec(name="stacked-mnist"), config)
    assert stacked == dataset_fingerprint(DatasetSpec(name="stacked-mnist"), config)
    assert stacked != dataset_fingerprint(DatasetSpec(name="mnist"), config)


# ---- mode counting -----------------------------------------------------------------------------------


def test_mode_figures_from_counts() -> None:
    uniform = mode_figures(torch.arange(1000).repeat(3))
    assert uniform["modes"] == 1000 and uniform["n_modes"] == 1000 and uniform["reverse_kl"] == pytest.approx(0.0)
    one = mode_figures(torch.full((500,), 123))
    assert one["modes"] == 1 and one["reverse_kl"] == pytest.approx(math.log(1000))
    ten = mode_figures(torch.arange(10).repeat(50) * 111)  # 000, 111, ..., 999 equally
    assert ten["modes"] == 10 and ten["reverse_kl"] == pytest.approx(math.log(100))


def test_real_stacked_data_covers_the_1000_modes(config, classifier) -> None:
    # The standard protocol: 26 000 samples, uniform over the modes, so a mode is empty with
    # probability e^-26 and ~26 misread digits would be needed to empty one. KL from the finite
    # sample alone is about (K - 1) / 2N = 0.02.
    real, true_modes = load_stacked("train", config, n=stacked_mnist.STANDARD_EVAL_SAMPLES)
    assert mode_figures(true_modes)["modes"] == 1000  # the labels themselves
    _, digits = stacked_mnist.channel_predictions(to_model_range(real), classifier)
    figures = mode_figures(stacked_mnist.mode_of(digits))
    assert figures["modes"] == 1000
    assert figures["reverse_kl"] < 0.05


def test_a_generator_that_copies_one_digit_scores_at_most_ten_modes(config, classifier) -> None:
    test, _ = load_stacked("test", config, n=3000)
    copied = to_model_range(test[:, :1].repeat(3, axis=1))  # channel 0 in all three channels
    _, digits = stacked_mnist.channel_predictions(copied, classifier)
    figures = mode_figures(stacked_mnist.mode_of(digits))
    assert 1 <= figures["modes"] <= 10 and figures["modes"] >= 8  # ddd only; all ten digits appear
    assert figures["reverse_kl"] == pytest.approx(math.log(100), abs=0.15)
    fixed = to_model_range(np.repeat(test[:1], 500, axis=0))  # one fixed image
    single = evaluate_stacked(fixed, classifier, to_model_range(test[:1000]))
    assert single["modes"] == 1 and single["reverse_kl"] == pytest.approx(math.log(1000))
    assert single["coverage"] < 0.05 and single["kid"] > 0


def test_evaluate_stacked_scores_real_data_well(config, classifier) -> None:
    test, _ = load_stacked("test", config)
    real = to_model_range(test)
    good = evaluate_stacked(real[:3000], classifier, real[5000:])
    noise = evaluate_stacked(torch.rand(3000, 3, 28, 28) * 2 - 1, classifier, real[5000:])
    assert good["n_modes"] == 1000 and good["modes"] > 900 and good["n_samples"] == 3000
    assert good["domain_fid"] < noise["domain_fid"] / 10
    assert good["precision"] > 0.6 and good["recall"] > 0.6 and good["coverage"] > 0.8
    assert good["kid"] < noise["kid"] and noise["coverage"] < 0.1
    # 32×32 samples (the 32 px DCGAN) are brought back to the classifier's 28×28.
    upscaled = torch.nn.functional.interpolate(real[:1000], size=(32, 32), mode="bilinear", align_corners=False)
    assert evaluate_stacked(upscaled, classifier, real[5000:])["modes"] > 500
    with pytest.raises(ValueError):
        evaluate_stacked(real[:10, :1], classifier, real[5000:])


def test_a_job_on_stacked_mnist_is_evaluated_with_the_mnist_classifier(config, classifier, monkeypatch) -> None:
    from gan_core.trainer import Trainer

    asked = []

    def fake_classifier_for(spec, data_config, *args, **kwargs):
        asked.append(spec.name)
        return classifier, {"test_accuracy": 0.97}

    monkeypatch.setattr(evaluator, "classifier_for", fake_classifier_for)
    spec = JobSpec.model_validate({
        "name": "stacked", "dataset": {"name": "stacked-mnist", "limit": 256},
        "model": {"arch": "dcgan", "ngf": 8, "ndf": 8, "pack": 2}, "device": "cpu",
        "train": {"steps": 2, "batch_size": 16}, "eval": {"n_samples": 600}, "log_every": 1,
    })
    results = Trainer(spec, data_config=config).run().evaluation
    assert asked == ["mnist"]
    assert results["n_modes"] == 1000 and 1 <= results["modes"] <= 600 and results["n_samples"] == 600
    for key in ("reverse_kl", "domain_fid", "kid", "kid_std", "precision", "recall", "density", "coverage"):
        assert isinstance(results[key], float), key
    assert results["classifier_test_accuracy"] == 0.97


# ---- the spec ----------------------------------------------------------------------------------------


def stacked_doc(**model) -> dict:
    return {"name": "s", "dataset": {"name": "stacked-mnist"}, "model": {"arch": "dcgan", **model}}


def test_the_spec_accepts_stacked_mnist_with_the_dcgan_family() -> None:
    spec = JobSpec.model_validate(stacked_doc(pack=2))
    assert spec.image_size == 28 and spec.dataset.is_image and spec.eval_samples() == 26_000
    assert JobSpec.model_validate({**stacked_doc(), "dataset": {"name": "stacked-mnist", "image_size": 32}}).image_size == 32
    JobSpec.model_validate(stacked_doc(variant="keras"))
    JobSpec.model_validate({**stacked_doc(), "dataset": {"name": "stacked-mnist", "channels": 3}})
    assert JobSpec.model_validate({**stacked_doc(), "eval": {"n_samples": 1000}}).eval_samples() == 1000


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({**stacked_doc(conditioning="cgan")}, "model.conditioning"),
        ({**stacked_doc(conditioning="acgan")}, "model.conditioning"),
        ({**stacked_doc(), "dataset": {"name": "stacked-mnist", "channels": 1}}, "dataset.channels"),
        ({**stacked_doc(), "dataset": {"name": "stacked-mnist", "image_size": 48}}, "dataset.image_size"),
        ({**stacked_doc(variant="keras"), "dataset": {"name": "stacked-mnist", "image_size": 32}}, "dataset.image_size"),
        ({**stacked_doc(), "dataset": {"name": "stacked-mnist", "path": "x.npz"}}, "dataset.path"),
        ({**stacked_doc(pack=2), "train": {"batch_size": 63}}, "train.batch_size"),
    ],
)
def test_the_spec_refuses_nonsense_with_stacked_mnist(doc: dict, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        JobSpec.model_validate(doc)
    assert field in [d["field"] for d in error_details(caught.value)]


def test_a_conditional_stacked_mnist_job_is_refused_naming_the_field_and_why() -> None:
    """What the API turns into a 422 detail (it maps every ValidationError through error_details)."""
    with pytest.raises(ValidationError) as caught:
        JobSpec.model_validate(stacked_doc(conditioning="cgan"))
    (detail,) = error_details(caught.value)
    assert detail["field"] == "model.conditioning" and "unconditional" in detail["problem"]
