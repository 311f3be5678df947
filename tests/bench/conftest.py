"""Fixtures of the bench tests."""

import pytest


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory, data_dir):
    """A cache holding a quickly trained MNIST domain classifier under the name the evaluator looks
    for, so that a bench scores without training the full one (minutes) first."""
    from gan_core import quality
    from gan_core.data import DataConfig, dataset_fingerprint, load_test_images
    from gan_core.spec import DatasetSpec

    cache = tmp_path_factory.mktemp("cache")
    config = DataConfig(data_dir=data_dir, cache_dir=cache)
    spec = DatasetSpec(name="mnist")
    train_x, train_y = load_test_images(spec, config, split="train")
    test = load_test_images(spec, config)
    quality.get_classifier(dataset_fingerprint(spec, config), (train_x[:6000], train_y[:6000]), test,
                           cache / "classifiers", epochs=1, num_classes=10)
    return cache
