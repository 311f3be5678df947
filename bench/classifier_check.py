"""One-off check: train the MNIST domain classifier at full size and print its test accuracy and time.

    python bench/classifier_check.py [--threads 2] [--epochs 2]
    python bench/classifier_check.py --use-cache    # the classifier `ganforge classifier train mnist` cached

It reads the IDX files directly (no gan_core.data) and trains into a temporary cache directory,
so it never touches a service's real cache (``--use-cache`` reads that cache instead of training).
Besides accuracy it prints the reference figures of real data: domain FID, KID and precision /
recall / density / coverage of one test half against the other, and of uniform noise.
"""

from __future__ import annotations

import argparse
import gzip
import logging
import struct
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__":  # what may be missing, checked before it is imported
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.prerequisites import Needs

    Needs("bench/classifier_check.py").python("torch", "numpy").file("/work/shared/datasets/mnist/train-images-idx3-ubyte.gz", "MNIST", "this check reads the shared copy").check()

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gan_core.quality import evaluate_images, get_classifier  # noqa: E402

MNIST_DIR = Path("/work/shared/datasets/mnist")


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip) as a uint8 array: N×28×28 for images (magic 2051), N for labels (2049)."""
    with gzip.open(path, "rb") as handle:
        magic, count = struct.unpack(">ii", handle.read(8))
        if magic == 2051:
            rows, cols = struct.unpack(">ii", handle.read(8))
            return np.frombuffer(handle.read(count * rows * cols), np.uint8).reshape(count, rows, cols)
        if magic == 2049:
            return np.frombuffer(handle.read(count), np.uint8)
        raise ValueError(f"{path}: unknown IDX magic {magic}")


def load(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    images = read_idx(MNIST_DIR / f"{split}-images-idx3-ubyte.gz")
    labels = read_idx(MNIST_DIR / f"{split}-labels-idx1-ubyte.gz")
    x = torch.from_numpy(images.copy()).float().div(127.5).sub(1.0).unsqueeze(1)  # N×1×28×28 in [-1, 1]
    return x, torch.from_numpy(labels.astype(np.int64))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--use-cache", action="store_true",
                        help="load the cached MNIST classifier ($GANFORGE_CACHE_DIR) instead of training one")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)

    train, test = load("train"), load("t10k")
    if args.use_cache:
        from gan_core.cli import data_config_from_env
        from gan_core.evaluator import classifier_for
        from gan_core.spec import DatasetSpec

        model, meta = classifier_for(DatasetSpec(name="mnist"), data_config_from_env(), train, test)
        print(f"cached classifier: test accuracy {meta['test_accuracy']:.4f} (seed {meta['seed']}, {meta['epochs']} epochs)")
        print_reference_figures(model, test)
        return
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        model, meta = get_classifier("mnist-bench", train, test, Path(cache), epochs=args.epochs, seed=args.seed)
        total = time.perf_counter() - start
        start = time.perf_counter()
        _, again = get_classifier("mnist-bench", train, test, Path(cache), epochs=args.epochs, seed=args.seed)
        load_s = time.perf_counter() - start
    print(f"threads={args.threads} epochs={args.epochs} seed={args.seed}")
    print(f"test accuracy {meta['test_accuracy']:.4f}; training {meta['train_seconds']:.1f} s "
          f"(call {total:.1f} s, cached reload {load_s:.2f} s, cached accuracy {again['test_accuracy']:.4f})")
    print_reference_figures(model, test)


def print_reference_figures(model: torch.nn.Module, test: tuple[torch.Tensor, torch.Tensor]) -> None:
    half = len(test[0]) // 2
    split = evaluate_images(test[0][:half], model, test[0][half:], labels=test[1][:half])
    noise = evaluate_images(torch.rand(5000, 1, 28, 28) * 2 - 1, model, test[0][half:])
    print(f"domain FID test half vs other half {split['domain_fid']:.3f}; uniform noise vs test "
          f"{noise['domain_fid']:.1f}; label accuracy {split['label_accuracy']:.4f}; "
          f"classes covered by real {split['classes_covered']}, by noise {noise['classes_covered']}")
    for name, figures in (("test half vs other half", split), ("uniform noise vs test half", noise)):
        print(f"{name}: KID {figures['kid']:.4f} ± {figures['kid_std']:.4f}, precision {figures['precision']:.3f}, "
              f"recall {figures['recall']:.3f}, density {figures['density']:.3f}, coverage {figures['coverage']:.3f}")


if __name__ == "__main__":
    main()
