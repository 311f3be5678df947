"""The Keras DCGAN of the Fashion-MNIST article (Hands-On Machine Learning's Conv2DTranspose GAN),
with the training choices of ganforge's ``presets/dcgan-keras-mnist.json``.

Generator: Dense 7*7*128 -> Reshape (7, 7, 128) -> BatchNormalization -> Conv2DTranspose 64 (5x5,
stride 2, "same", selu) -> BatchNormalization -> Conv2DTranspose 1 (5x5, stride 2, "same", tanh):
28x28. Discriminator: Conv2D 64 (5x5, stride 2, "same", LeakyReLU 0.2) -> Dropout -> Conv2D 128
(same) -> Dropout -> Flatten -> Dense 1 sigmoid. Each step, as in the article: fakes from
``generator(noise)`` (inference mode), one ``discriminator.train_on_batch`` on fakes and reals
concatenated (labels 0 then 1), then one ``gan.train_on_batch(noise, ones)`` with the
discriminator frozen (``trainable`` toggled before each call, as the article does).

The same network as ganforge's ``model.variant: "keras"``. Where this script follows ganforge's
preset rather than the article (so that the bench compares like with like): Adam(2e-4, beta_1 0.5)
instead of the article's RMSprop, Dropout 0.3 instead of 0.4. Left as Keras has them (documented
differences from ganforge's variant): BatchNormalization's defaults (momentum 0.99, epsilon 1e-3;
ganforge's variant uses PyTorch's 0.1 = Keras 0.9, and 1e-5).

    python bench/reference/keras_dcgan.py --steps 5000 --seed 0 --out runs/reference/keras-dcgan-0.npy
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

LATENT_DIM = 100
BATCH = 32
DROPOUT = 0.3


def build_generator():
    from keras import Input, Sequential, layers

    return Sequential(
        [
            Input((LATENT_DIM,)),
            layers.Dense(7 * 7 * 128),
            layers.Reshape((7, 7, 128)),
            layers.BatchNormalization(),
            layers.Conv2DTranspose(64, kernel_size=5, strides=2, padding="same", activation="selu"),
            layers.BatchNormalization(),
            layers.Conv2DTranspose(1, kernel_size=5, strides=2, padding="same", activation="tanh"),
        ],
        name="generator",
    )


def build_discriminator():
    from keras import Input, Sequential, layers

    return Sequential(
        [
            Input((28, 28, 1)),
            layers.Conv2D(64, kernel_size=5, strides=2, padding="same"),
            layers.LeakyReLU(negative_slope=0.2),
            layers.Dropout(DROPOUT),
            layers.Conv2D(128, kernel_size=5, strides=2, padding="same"),
            layers.LeakyReLU(negative_slope=0.2),
            layers.Dropout(DROPOUT),
            layers.Flatten(),
            layers.Dense(1, activation="sigmoid"),
        ],
        name="discriminator",
    )


def train(x_train: np.ndarray, steps: int, log_every: int = 500):
    import keras
    from keras.optimizers import Adam

    x_train = x_train[..., None]  # (N, 28, 28, 1)
    generator, discriminator = build_generator(), build_discriminator()
    gan = keras.Sequential([generator, discriminator])
    discriminator.compile(loss="binary_crossentropy", optimizer=Adam(0.0002, 0.5))
    discriminator.trainable = False
    gan.compile(loss="binary_crossentropy", optimizer=Adam(0.0002, 0.5))
    y1 = np.array([[0.0]] * BATCH + [[1.0]] * BATCH, np.float32)
    y2 = np.ones((BATCH, 1), np.float32)
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        x_batch = x_train[np.random.randint(0, x_train.shape[0], BATCH)]
        noise = np.random.normal(0, 1, (BATCH, LATENT_DIM)).astype(np.float32)
        generated = generator(noise)  # training=False: batch norm's moving statistics
        discriminator.trainable = True
        d_loss = discriminator.train_on_batch(np.concatenate([generated, x_batch]), y1)
        noise = np.random.normal(0, 1, (BATCH, LATENT_DIM)).astype(np.float32)
        discriminator.trainable = False
        g_loss = gan.train_on_batch(noise, y2)
        if step % log_every == 0 or step == steps:
            print(f"step {step}: D loss {float(np.ravel(d_loss)[0]):.4f}, G loss {float(np.ravel(g_loss)[0]):.4f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return generator


if __name__ == "__main__":
    common.main(__doc__.split("\n\n")[0], train, LATENT_DIM)
