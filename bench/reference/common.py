"""What the two Keras reference scripts share: the data (the articles' ``mnist.load_data()``,
read here from the IDX files offline), seeding, threads and the samples export.

Imported by ``keras_mlp_gan.py`` and ``keras_dcgan.py`` only; nothing here imports torch.
"""

from __future__ import annotations

import argparse
import gzip
import os
import struct
from pathlib import Path

import numpy as np

IMAGES_FILE = "train-images-idx3-ubyte.gz"


def data_dir() -> Path:
    """Where ganforge looks for the IDX files (``GANFORGE_DATA_DIR``), as scripts/env sets it."""
    root = os.environ.get("GANFORGE_DATA_DIR")
    if not root:
        raise SystemExit("set GANFORGE_DATA_DIR to the folder holding mnist/ (`. scripts/env` does)")
    return Path(root)


def load_train_images(dataset: str = "mnist") -> np.ndarray:
    """The training split as float32 (N, 28, 28) in [-1, 1]: ``(x - 127.5) / 127.5`` as the articles do."""
    path = data_dir() / dataset / IMAGES_FILE
    if not path.exists():
        raise SystemExit(f"{path} is missing (the {dataset} training images, IDX gzip)")
    raw = gzip.decompress(path.read_bytes())
    count, rows, cols = struct.unpack(">3I", raw[4:16])
    images = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(count, rows, cols)
    return (images.astype(np.float32) - 127.5) / 127.5


def configure(seed: int, threads: int) -> None:
    """One seed for Python, NumPy and TensorFlow; a fixed number of CPU threads."""
    import keras
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    keras.utils.set_random_seed(seed)


def export_samples(generator, path: Path, n: int, latent_dim: int, seed: int) -> np.ndarray:
    """``n`` samples (float32 (n, 1, 28, 28) in [-1, 1]) from ``generator.predict`` (inference mode:
    batch norm with its moving statistics), saved as .npy for ganforge's evaluator."""
    noise = np.random.default_rng(seed + 10_000).normal(0.0, 1.0, (n, latent_dim)).astype(np.float32)
    samples = generator.predict(noise, batch_size=1000, verbose=0).reshape(n, 1, 28, 28).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, samples)
    return samples


def arguments(description: str, dataset: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12_000, help="training steps (default 12000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=10_000, help="samples to export")
    parser.add_argument("--out", type=Path, required=True, help="the .npy file the samples go to")
    parser.add_argument("--dataset", default=dataset, help=f"IDX dataset folder under GANFORGE_DATA_DIR ({dataset})")
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow CPU threads")
    args = parser.parse_args()
    if args.steps < 1 or args.samples < 2:
        parser.error("--steps must be >= 1 and --samples >= 2")
    return args


def main(description: str, train, latent_dim: int) -> None:
    """A reference script's command line: train with the seed's recipe, export samples."""
    args = arguments(description, "mnist")
    configure(args.seed, args.threads)
    generator = train(load_train_images(args.dataset), args.steps)
    export_samples(generator, args.out, args.samples, latent_dim, args.seed)
    print(f"wrote {args.samples} samples to {args.out}")
