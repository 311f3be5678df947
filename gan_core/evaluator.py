"""Evaluation of a job's generator: picks the right figures for the spec's dataset.

2-D mixtures: modes captured, high-quality %, reverse KL. Images with labels: domain FID, KID,
precision / recall / density / coverage, classes covered and confidence from a domain classifier
trained once per dataset (cached), plus label accuracy for conditional models. Stacked MNIST: modes
covered out of 1000 and the reverse KL, each channel read by the MNIST classifier, and the
feature-space figures of the three channels' features side by side.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from gan_core import quality, rejection, stacked_mnist
from gan_core.data import DataConfig, Dataset, dataset_fingerprint, load_test_images
from gan_core.spec import DatasetSpec, JobSpec

log = logging.getLogger(__name__)

EVAL_SEED = 12345  # evaluation noise is fixed, so figures at different steps compare


class Evaluator:
    def __init__(self, spec: JobSpec, data: Dataset, config: DataConfig):
        self.spec = spec
        self.data = data
        self.config = config
        self._classifier: quality.DomainClassifier | None = None
        self._classifier_meta: dict[str, Any] = {}
        self._test_images: torch.Tensor | None = None

    @torch.no_grad()
    def _generate(self, generator: nn.Module, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
        gen = torch.Generator().manual_seed(EVAL_SEED)
        k = self.data.num_classes if self.spec.conditional else None
        labels = torch.arange(n) % k if k else None
        was_training = generator.training
        generator.eval()
        out = []
        try:
            for start in range(0, n, 1000):
                size = min(1000, n - start)
                z = generator.sample_latent(size, gen).to(device)
                y = labels[start : start + size].to(device) if labels is not None else None
                out.append(generator(z, y).float().cpu())
        finally:
            generator.train(was_training)
        return torch.cat(out), labels

    def evaluate(
        self, generator: nn.Module, n: int, device: torch.device, rejector: rejection.Rejector | None = None
    ) -> dict[str, Any]:
        """Figures for ``n`` samples; with a rejector, for the samples it keeps (what ``generate``
        gives), with the raw generator's figures under ``raw`` and the share kept under ``rejection``."""
        samples, labels = self._generate(generator, n, device)
        if not torch.isfinite(samples).all():
            return {"n_samples": n, "error": "the generator produced non-finite values"}
        raw = self._figures(samples, labels)
        if rejector is None:
            return raw
        try:
            kept, acceptance = rejection.sample(generator, rejector, n, torch.Generator().manual_seed(EVAL_SEED), labels)
        except rejection.RejectionError as exc:
            return {**raw, "raw": dict(raw), "rejection": {"error": str(exc)}}
        results = self._figures(kept, labels)
        results["raw"] = raw
        results["rejection"] = {"method": "discriminator", "acceptance": acceptance, "threshold": rejector.threshold}
        return results

    def evaluate_samples(self, samples: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, Any]:
        """The same figures for samples made elsewhere (N, *data_shape), e.g. another library's
        generator; ``labels`` are the classes a conditional generator was asked for."""
        if tuple(samples.shape[1:]) != tuple(self.data.shape):
            raise ValueError(f"samples of shape {tuple(samples.shape[1:])} do not fit this dataset's {self.data.shape}")
        if not torch.isfinite(samples).all():
            return {"n_samples": len(samples), "error": "the samples hold non-finite values"}
        return self._figures(samples.float(), labels)

    def _figures(self, samples: torch.Tensor, labels: torch.Tensor | None) -> dict[str, Any]:
        n = len(samples)
        if self.data.kind == "points":
            return quality.evaluate_mixture(samples, self.data.centers.cpu(), self.data.sigma)
        if not self._ensure_classifier():
            return {"n_samples": n, "note": "no labels in this dataset: no domain classifier, no FID"}
        if self.spec.dataset.name == stacked_mnist.NAME:
            results = stacked_mnist.evaluate_stacked(samples, self._classifier, self._test_images)
            results["classifier_test_accuracy"] = self._classifier_meta.get("test_accuracy")
            return results
        results = quality.evaluate_images(
            samples, self._classifier, self._test_images, labels=labels, num_classes=self._classifier.num_classes
        )
        results["classifier_test_accuracy"] = self._classifier_meta.get("test_accuracy")
        return results

    def _ensure_classifier(self) -> bool:
        """Train (once per dataset, cached on disk) or load the domain classifier."""
        if self._classifier is not None:
            return True
        spec = self.spec.dataset
        if spec.name == stacked_mnist.NAME:  # the MNIST classifier reads each channel
            self._classifier, self._classifier_meta = classifier_for(DatasetSpec(name="mnist"), self.config)
            self._test_images = stacked_mnist.stacked_test_images(self.config)
            return True
        test = load_test_images(spec, self.config)
        if test is not None:  # built-in dataset: train split at native size, test split
            train = load_test_images(spec, self.config, split="train")
        elif getattr(self.data, "labels", None) is not None:  # labelled npz or image folder: its own images
            train = test = self.data.labelled_examples()
        else:
            return False
        self._classifier, self._classifier_meta = classifier_for(spec, self.config, train, test, self.data.num_classes)
        self._test_images = test[0]
        if spec.image_size is not None and spec.image_size != test[0].shape[-1]:
            # Samples of a resized dataset reach the classifier through a resize back to its native
            # size, which blurs; the real images they are compared with must make the same round
            # trip (native -> the job's size, as the training images did, -> native), or the blur
            # counts against the generator: MNIST's own training images at 32 px scored domain FID
            # 132 against the native test split, 1.5 against the round-tripped one (10 000 images).
            self._test_images = load_test_images(spec, self.config, image_size=spec.image_size)[0]
        return True


def classifier_for(
    spec: DatasetSpec,
    config: DataConfig,
    train: tuple[torch.Tensor, torch.Tensor] | None = None,
    test: tuple[torch.Tensor, torch.Tensor] | None = None,
    num_classes: int | None = None,
) -> tuple[quality.DomainClassifier, dict[str, Any]]:
    """The domain classifier of a dataset, from the cache (``<cache_dir>/classifiers``) or trained
    there with the fixed recipe of ``quality.get_classifier`` (seed 0, 2 epochs): the same data
    always gives the same classifier, which ``ganforge classifier train`` makes ahead of time.
    ``train`` / ``test`` default to a built-in dataset's splits at native size."""
    if train is None or test is None:
        test = load_test_images(spec, config)
        if test is None:
            raise ValueError(f"'{spec.name}' has no built-in labelled splits to train a classifier on")
        train = load_test_images(spec, config, split="train")
    native = spec.model_copy(update={"image_size": None, "limit": None})
    fingerprint = dataset_fingerprint(native, config)
    return quality.get_classifier(fingerprint, train, test, config.cache_dir / "classifiers", num_classes=num_classes)
