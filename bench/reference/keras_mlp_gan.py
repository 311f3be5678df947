"""The seed article's MLP GAN on MNIST, in Keras, as the classic tutorial writes it.

Generator 100 -> 256 -> 512 -> 1024 -> 784 (Dense, LeakyReLU 0.2, BatchNormalization(momentum
0.7)), tanh; discriminator 784 -> 512 -> 256 -> 1 (LeakyReLU 0.2), sigmoid. Adam(2e-4, beta_1
0.5) for both, binary cross-entropy, batch 32. Each step: fakes from the generator in inference
mode (``predict``), ``discriminator.train_on_batch`` on the real batch (label 1) and then on the
fake batch (label 0) -- two discriminator updates -- and two ``combined.train_on_batch`` updates
of the generator with fresh noise (label 1), the discriminator frozen.

Run from the repository root (``. scripts/env`` sets GANFORGE_DATA_DIR; tensorflow-cpu comes with
``pip install -e .[reference]``)::

    python bench/reference/keras_mlp_gan.py --steps 12000 --seed 0 --out runs/reference/keras-mlp-0.npy

Where this departs from the letter of the 2018-era script, and why (none changes what is trained):

* ``discriminator.trainable`` is set to True before the discriminator's ``train_on_batch`` and to
  False before the combined model's. Keras 2 froze the discriminator inside ``combined`` by taking
  a snapshot of ``trainable`` at ``compile`` time; Keras 3 reads it when a model's train function
  is first traced, so the article's single ``discriminator.trainable = False`` before compiling
  ``combined`` would leave the discriminator untrained under Keras 3 (checked: its weights never
  move). Toggling reproduces the Keras 2 behaviour (as in the Keras DCGAN tutorial).
* One Adam per model (Keras 2 let ``discriminator`` and ``combined`` share one optimizer object,
  which Keras 3 refuses); the only trace of the sharing was a common step counter in Adam's bias
  correction.
* ``predict_on_batch`` instead of ``predict`` for the discriminator's fakes: the same inference-mode
  forward pass, without ``predict``'s per-call data pipeline (several times faster for 32 rows).
* The data come from the MNIST IDX files offline instead of ``mnist.load_data()``.
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
G_UPDATES = 2  # combined-model updates per step


def build_generator():
    from keras import Input, Sequential, layers

    return Sequential(
        [
            Input((LATENT_DIM,)),
            layers.Dense(256),
            layers.LeakyReLU(negative_slope=0.2),
            layers.BatchNormalization(momentum=0.7),
            layers.Dense(512),
            layers.LeakyReLU(negative_slope=0.2),
            layers.BatchNormalization(momentum=0.7),
            layers.Dense(1024),
            layers.LeakyReLU(negative_slope=0.2),
            layers.BatchNormalization(momentum=0.7),
            layers.Dense(28 * 28, activation="tanh"),
            layers.Reshape((28, 28, 1)),
        ],
        name="generator",
    )


def build_discriminator():
    from keras import Input, Sequential, layers

    return Sequential(
        [
            Input((28, 28, 1)),
            layers.Flatten(),
            layers.Dense(512),
            layers.LeakyReLU(negative_slope=0.2),
            layers.Dense(256),
            layers.LeakyReLU(negative_slope=0.2),
            layers.Dense(1, activation="sigmoid"),
        ],
        name="discriminator",
    )


def build(generator, discriminator):
    """Compile D, then the combined model z -> D(G(z)) with D frozen; returns the combined model."""
    from keras import Input, Model
    from keras.optimizers import Adam

    discriminator.compile(loss="binary_crossentropy", optimizer=Adam(0.0002, 0.5), metrics=["accuracy"])
    z = Input((LATENT_DIM,))
    discriminator.trainable = False
    combined = Model(z, discriminator(generator(z)))
    combined.compile(loss="binary_crossentropy", optimizer=Adam(0.0002, 0.5))
    return combined


def train(x_train: np.ndarray, steps: int, log_every: int = 1000) -> object:
    """Train for ``steps`` steps on ``x_train`` (N, 28, 28) in [-1, 1]; returns the generator."""
    x_train = x_train[..., None]  # (N, 28, 28, 1)
    generator, discriminator = build_generator(), build_discriminator()
    combined = build(generator, discriminator)
    valid, fake = np.ones((BATCH, 1), np.float32), np.zeros((BATCH, 1), np.float32)
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        imgs = x_train[np.random.randint(0, x_train.shape[0], BATCH)]
        noise = np.random.normal(0, 1, (BATCH, LATENT_DIM)).astype(np.float32)
        gen_imgs = generator.predict_on_batch(noise)

        discriminator.trainable = True
        d_loss_real = discriminator.train_on_batch(imgs, valid)
        d_loss_fake = discriminator.train_on_batch(gen_imgs, fake)
        d_loss = 0.5 * np.add(d_loss_real, d_loss_fake)

        discriminator.trainable = False
        for _ in range(G_UPDATES):
            noise = np.random.normal(0, 1, (BATCH, LATENT_DIM)).astype(np.float32)
            g_loss = combined.train_on_batch(noise, valid)
        if step % log_every == 0 or step == steps:
            print(f"step {step}: D loss {float(d_loss[0]):.4f} acc {100 * float(d_loss[1]):.1f} %, "
                  f"G loss {float(np.ravel(g_loss)[0]):.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return generator


if __name__ == "__main__":
    common.main(__doc__.split("\n\n")[0], train, LATENT_DIM)
