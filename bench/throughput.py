"""Steps/s of gan_core's Trainer against a bare PyTorch loop of the same MNIST MLP GAN, in one run.

The classic spec: G 100→256→512→1024→784, D 784→512→256→1, batch 32, 1 D + 2 G updates per step.
The Trainer runs with metrics every 100 steps, sample grids every 200 and checkpoints every 1000
(serialised to bytes, as the worker does before an upload). The variants run interleaved in
rounds and the median round counts, so background load shifts all of them alike.

    python bench/throughput.py [--steps 1000] [--rounds 3] [--threads N]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path

if __name__ == "__main__":  # what may be missing, checked before it is imported
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.prerequisites import Needs

    Needs("bench/throughput.py").python("torch", "numpy").mnist().check()

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gan_core.cli import data_config_from_env  # noqa: E402
from gan_core.data import build_dataset  # noqa: E402
from gan_core.spec import JobSpec  # noqa: E402
from gan_core.trainer import Callbacks, Trainer  # noqa: E402

SPEC = {
    "name": "classic-mlp-mnist", "dataset": {"name": "mnist"}, "model": {"arch": "mlp", "latent_dim": 100},
    "loss": "bce", "train": {"steps": 1_000_000, "batch_size": 32, "d_steps": 1, "g_steps": 2,
    "lr_d": 0.0002, "lr_g": 0.0002, "beta1": 0.5, "beta2": 0.999, "seed": 0},
    "log_every": 100, "sample_every": 200, "checkpoint_every": 1000, "eval": {"at_end": False},
}


def bare_networks() -> tuple[nn.Module, nn.Module]:
    """The same networks written out by hand, as a user would without gan_core."""
    def block(i, o):
        return [nn.Linear(i, o), nn.LeakyReLU(0.2), nn.BatchNorm1d(o, momentum=0.3, eps=1e-3)]

    G = nn.Sequential(*block(100, 256), *block(256, 512), *block(512, 1024), nn.Linear(1024, 784), nn.Tanh())
    D = nn.Sequential(nn.Linear(784, 512), nn.LeakyReLU(0.2), nn.Linear(512, 256), nn.LeakyReLU(0.2), nn.Linear(256, 1))
    return G, D


class BareLoop:
    """The textbook loop (pytorch/examples dcgan style, two G updates). ``tuned`` adds the same
    speed-ups gan_core uses: fused Adam, no graph for D's fake batch, no D weight grads in G's step."""

    def __init__(self, images: torch.Tensor, tuned: bool):
        torch.manual_seed(0)
        self.G, self.D = bare_networks()
        kw = {"fused": True} if tuned else {}
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=2e-4, betas=(0.5, 0.999), **kw)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=2e-4, betas=(0.5, 0.999), **kw)
        self.images = images.flatten(1)
        self.tuned = tuned
        self.gen = torch.Generator().manual_seed(1)

    def run(self, steps: int) -> None:
        G, D, b = self.G, self.D, 32
        ones, zeros = torch.ones(b, 1), torch.zeros(b, 1)
        for _ in range(steps):
            real = self.images[torch.randint(0, len(self.images), (b,), generator=self.gen)]
            z = torch.randn(b, 100, generator=self.gen)
            if self.tuned:
                with torch.no_grad():
                    fake = G(z)
            else:
                fake = G(z).detach()
            loss_d = F.binary_cross_entropy_with_logits(D(real), ones) + F.binary_cross_entropy_with_logits(D(fake), zeros)
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self.opt_d.step()
            if self.tuned:
                D.requires_grad_(False)
            for _ in range(2):
                z = torch.randn(b, 100, generator=self.gen)
                loss_g = F.binary_cross_entropy_with_logits(D(G(z)), ones)
                self.opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                self.opt_g.step()
            if self.tuned:
                D.requires_grad_(True)
        loss_d.item()  # one read at the end, as a logging loop would


class ServiceLikeCallbacks(Callbacks):
    """What a worker does with each output: keep metrics, keep PNG bytes, serialise checkpoints."""

    def __init__(self):
        self.metrics, self.grids, self.checkpoint_bytes = 0, 0, 0

    def on_metrics(self, step, metrics):
        self.metrics += 1

    def on_samples(self, step, png):
        self.grids += 1

    def on_checkpoint(self, step, checkpoint):
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        self.checkpoint_bytes = buffer.tell()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000, help="steps per round and variant (a multiple of 1000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    spec = JobSpec.model_validate(SPEC)
    config = data_config_from_env()
    data = build_dataset(spec.dataset, config, seed=1)
    callbacks = ServiceLikeCallbacks()
    trainer = Trainer(spec, data_config=config, callbacks=callbacks, dataset=data, device="cpu")
    eager, tuned = BareLoop(data.images, tuned=False), BareLoop(data.images, tuned=True)
    variants = {
        "bare eager (textbook loop)": eager.run,
        "bare tuned (fused Adam, no_grad fake, frozen D)": tuned.run,
        "gan_core Trainer (metrics/100, grids/200, ckpt/1000)": lambda n: trainer.run(trainer.state.step + n),
    }
    # Warm-up (allocator, first calls); the trainer's is a whole period so its rounds stay aligned.
    eager.run(100)
    tuned.run(100)
    trainer.run(1000)

    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, run in variants.items():
            t0 = time.perf_counter()
            run(args.steps)
            rates[name].append(args.steps / (time.perf_counter() - t0))

    print(f"MNIST MLP GAN, batch 32, 1 D + 2 G updates; {args.steps} steps x {args.rounds} rounds; "
          f"{args.threads} torch threads on {os.cpu_count()} CPUs; torch {torch.__version__}")
    medians = {name: statistics.median(r) for name, r in rates.items()}
    for name, median in medians.items():
        spread = ", ".join(f"{r:.1f}" for r in rates[name])
        print(f"  {name:55s} {median:8.1f} steps/s   (rounds: {spread})")
    names = list(variants)
    trainer_rate = medians[names[2]]
    print(f"  Trainer / bare eager: {trainer_rate / medians[names[0]]:.3f}x   "
          f"Trainer / bare tuned: {trainer_rate / medians[names[1]]:.3f}x   (target >= 0.97x)")
    print(f"  trainer outputs: {callbacks.metrics} metric rows, {callbacks.grids} grids, "
          f"checkpoint {callbacks.checkpoint_bytes / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
