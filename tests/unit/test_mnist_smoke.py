"""A short MNIST run: the domain classifier is more confident on its samples than on the
untrained generator's (the GAN learned something digit-like)."""

import torch

from gan_core import quality
from gan_core.data import load_idx_split, load_test_images
from gan_core.evaluator import Evaluator
from gan_core.spec import JobSpec
from gan_core.trainer import Trainer


def test_short_mnist_run_raises_classifier_confidence(data_config):
    spec = JobSpec.model_validate({
        "name": "smoke", "dataset": {"name": "mnist"}, "model": {"arch": "mlp"},
        "train": {"steps": 1000, "batch_size": 64, "g_steps": 1, "seed": 0},
        "log_every": 100, "sample_every": 1000, "checkpoint_every": 1000, "eval": {"at_end": False},
    })
    images, labels = load_idx_split("mnist", "train", data_config)
    subset = slice(0, 10000)
    train = (torch.from_numpy(images[subset, None].copy()).float().div(127.5).sub(1), torch.from_numpy(labels[subset]))
    test_x, test_y = load_test_images(spec.dataset, data_config)
    classifier, meta = quality.get_classifier("smoke-subset", train, (test_x[:2000], test_y[:2000]),
                                                 data_config.cache_dir, epochs=2)
    assert meta["test_accuracy"] > 0.8  # a rough classifier (2 epochs on 10 000 images) is enough here

    trainer = Trainer(spec, data_config=data_config)
    evaluator = Evaluator(spec, trainer.data, data_config)

    def figures():
        samples, _ = evaluator._generate(trainer.state.sampling_generator, 1000, trainer.device)
        return quality.evaluate_images(samples, classifier, test_x[:2000])

    before = figures()
    trainer.run()
    after = figures()
    assert after["mean_confidence"] > before["mean_confidence"] + 0.05, (before, after)
    assert after["domain_fid"] < before["domain_fid"]
