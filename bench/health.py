"""What GAN health (gan_core.health) costs a training run.

For each preset (the 2-D ring8-quality, and MNIST with the classic MLP and the DCGAN): the time
of one training step, the time of one health check (the step statistics read back, the fixed
batch generated, its mean pairwise distance and, on a mixture, its mode count), and the share of
training time the checks take at the default interval (``train.health.every``). Then the same
short run with the detectors on and off, alternated, for the end-to-end figure.

On the CPU the clock is this process's CPU time (``time.process_time``), on one torch thread:
on a shared, busy machine wall time measures the neighbours; CPU time measures the work. On CUDA
it is wall time after a synchronisation.

    python bench/health.py [--steps 200] [--rounds 3] [--threads 1] [--presets ring8-quality classic-mlp-mnist]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.prerequisites import Needs  # noqa: E402


def load(preset: str, steps: int, enabled: bool, device: str):
    from gan_core.spec import JobSpec

    doc = json.loads((ROOT / "presets" / f"{preset}.json").read_text())
    doc["train"]["steps"] = steps
    doc["train"]["health"] = {"enabled": enabled}
    doc.update(device=device, log_every=steps, sample_every=10**6, checkpoint_every=10**6, eval={"at_end": False})
    doc.pop("eval_every", None)
    return JobSpec.model_validate(doc)


def main() -> None:
    Needs("bench/health.py").python("torch", "numpy").check()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--presets", nargs="+", default=["ring8-quality", "classic-mlp-mnist", "dcgan-mnist"])
    args = parser.parse_args()

    import torch

    from gan_core.data import DataConfig
    from gan_core.trainer import Trainer, train_step

    torch.set_num_threads(args.threads)
    clock = time.process_time if args.device == "cpu" else time.perf_counter
    data_config = DataConfig(data_dir=ROOT.parent / "shared" / "datasets")
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, clock {clock.__name__}, "
          f"{args.steps} steps x {args.rounds} rounds")
    for preset in args.presets:
        spec = load(preset, args.steps, True, args.device)
        trainer = Trainer(spec, data_config=data_config)
        state, every = trainer.state, spec.train.health.every
        sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
        for _ in range(5):  # warm-up
            train_step(state, trainer.data, trainer.noise, spec)
        sync()
        t0 = clock()
        for _ in range(20):
            train_step(state, trainer.data, trainer.noise, spec)
        sync()
        step_ms = (clock() - t0) / 20 * 1e3
        window = [train_step(state, trainer.data, trainer.noise, spec) for _ in range(every)]
        checks = []
        for i in range(10):
            t0 = clock()
            trainer._check_health(window, 0, 0, 1000 + i * every)
            checks.append(clock() - t0)
        check_ms = statistics.median(checks) * 1e3
        share = check_ms / (check_ms + every * step_ms) * 100
        print(f"{preset}: step {step_ms:.2f} ms, health check {check_ms:.2f} ms "
              f"({spec.train.health.samples} samples), every {every} steps: {share:.2f} % of training time")

        rates = {True: [], False: []}
        for _ in range(args.rounds):
            for enabled in (False, True):
                run = Trainer(load(preset, args.steps, enabled, args.device), data_config=data_config,
                              dataset=trainer.data)
                t0 = clock()
                run.run()
                sync()
                rates[enabled].append(args.steps / (clock() - t0))
        off, on = statistics.median(rates[False]), statistics.median(rates[True])
        print(f"  end to end: {off:.1f} steps/s off, {on:.1f} steps/s on ({(on / off - 1) * 100:+.1f} %), "
              f"rounds off {[round(r, 1) for r in rates[False]]} on {[round(r, 1) for r in rates[True]]}")


if __name__ == "__main__":
    main()
