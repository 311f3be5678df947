"""Data-parallel throughput: steps/s and images/s on 1..N devices, scaling efficiency, and on CUDA
bf16 / channels_last / torch.compile and the model FLOPs utilisation.

Every configuration is a real ``ganforge train --devices N`` run (torch's launcher, DDP, NCCL on
CUDA, gloo on CPU) at a fixed *global* batch; the figure is the median of the logged windows'
steps/s after the first (warm-up, compilation). Scaling efficiency = images/s at N / (N x
images/s at 1).

    python bench/distributed.py                 # CPU: 1 and 2 processes (one core each), gloo
    python bench/distributed.py --steps 400     # longer windows
    python bench/distributed.py --cuda          # every GPU count, fp32 / bf16+channels_last / +compile, MFU
    python bench/distributed.py --quality --seeds 100 101   # ring8/grid25 presets: modes, HQ on 1 vs 2

On CPU (2 cores here) the figure is informational: two processes share the machine's memory
bandwidth and the gloo all-reduce runs on the same cores that compute.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from ganforge.resources import preset_text  # noqa: E402

if __name__ == "__main__":  # what may be missing, checked before anything is imported
    from bench.prerequisites import Needs

    Needs("bench/distributed.py").python("torch", "numpy").mnist().check()

# Dense bf16 tensor-core peaks (FLOP/s) of one device, from the vendors' data sheets.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12,
             "RTX 4090": 165e12, "V100": 125e12}

# The CPU configuration: the DCGAN family at 32 px on MNIST, small enough for 2 cores.
CPU_SPEC = {"name": "bench-dcgan32", "dataset": {"name": "mnist", "image_size": 32, "limit": 8192},
            "model": {"arch": "dcgan", "ngf": 32, "ndf": 32}, "loss": "bce",
            "train": {"batch_size": 64}, "sample_every": 1_000_000, "checkpoint_every": 1_000_000,
            "eval": {"at_end": False}}
# The CUDA configuration: the 64 px DCGAN (Radford layout, ngf = ndf = 64) at global batch 256.
CUDA_SPEC = {"name": "bench-dcgan64", "dataset": {"name": "mnist", "image_size": 64},
             "model": {"arch": "dcgan", "ngf": 64, "ndf": 64}, "loss": "bce", "device": "cuda",
             "train": {"batch_size": 256}, "sample_every": 1_000_000, "checkpoint_every": 1_000_000,
             "eval": {"at_end": False}}


def run(spec: dict, devices: int, steps: int, log_every: int, threads: int) -> dict:
    """One `ganforge train` run; the median logged throughput after the first window."""
    with tempfile.TemporaryDirectory() as tmp:
        doc = {**spec, "train": {**spec["train"], "steps": steps}, "log_every": log_every}
        path = Path(tmp) / "spec.json"
        path.write_text(json.dumps(doc))
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
        done = subprocess.run([sys.executable, "-m", "gan_core.cli", "train", str(path), "--out", f"{tmp}/run",
                               "--quiet", "--devices", str(devices)], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"training on {devices} device(s) failed:\n{done.stderr[-3000:]}")
        rows = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    windows = rows[1:] or rows
    return {"steps_per_s": statistics.median(r["steps_per_s"] for r in windows),
            "images_per_s": statistics.median(r["images_per_s"] for r in windows)}


def step_flops(spec: dict) -> float:
    """FLOPs of one training step (forward and backward of every update), counted by
    torch.utils.flop_counter on the real train_step."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from gan_core.cli import data_config_from_env
    from gan_core.spec import JobSpec
    from gan_core.trainer import Trainer, train_step

    trainer = Trainer(JobSpec.model_validate({**spec, "train": {**spec["train"], "steps": 10}}),
                      data_config=data_config_from_env())
    train_step(trainer.state, trainer.data, trainer.noise, trainer.spec)  # warm-up
    with FlopCounterMode(display=False) as counter:
        train_step(trainer.state, trainer.data, trainer.noise, trainer.spec)
    torch.cuda.synchronize() if torch.cuda.is_available() else None
    return float(counter.get_total_flops())


def peak_flops() -> tuple[str, float | None]:
    import torch

    name = torch.cuda.get_device_name(0)
    for key, value in PEAK_BF16.items():
        if key.lower() in name.lower():
            return name, value
    return name, None


def table(rows: list[tuple], header: tuple) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for row in (header, *rows):
        print("  ".join(str(x).rjust(w) for x, w in zip(row, widths)))


def cpu_bench(args) -> None:
    # The same spec with per-rank batch norm shows what the synchronised statistics cost (each
    # batch-norm layer all-reduces its moments in every forward and backward).
    local_bn = {**CPU_SPEC, "train": {**CPU_SPEC["train"], "sync_batchnorm": False}}
    configs = [("1", CPU_SPEC, 1), ("2", CPU_SPEC, 2), ("2, per-rank BN", local_bn, 2)]
    rows, base = [], None
    for label, spec, n in configs:
        r = run(spec, n, args.steps, args.log_every, threads=1)
        base = base or r["images_per_s"]
        rows.append((label, f"{r['steps_per_s']:.2f}", f"{r['images_per_s']:.0f}", f"{r['images_per_s'] / (n * base):.1%}"))
    print(f"CPU, gloo, DCGAN 32 px MNIST, global batch {CPU_SPEC['train']['batch_size']}, one core per process, "
          f"{args.steps} steps, median of windows of {args.log_every}:")
    table(rows, ("processes", "steps/s", "images/s", "scaling"))


def cuda_bench(args) -> None:
    import torch

    if not torch.cuda.is_available():
        sys.exit("--cuda needs a CUDA device (torch.cuda.is_available() is False)")
    gpus = torch.cuda.device_count()
    name, peak = peak_flops()
    variants = {"fp32": {}, "bf16+channels_last": {"precision": "bf16", "memory_format": "channels_last"},
                "bf16+channels_last+compile": {"precision": "bf16", "memory_format": "channels_last", "compile": True}}
    flops = step_flops(CUDA_SPEC)
    print(f"{gpus} x {name}; DCGAN 64 px, global batch {CUDA_SPEC['train']['batch_size']}; "
          f"{flops / 1e9:.1f} GFLOP per step (flop_counter); peak bf16 {peak / 1e12 if peak else float('nan'):.0f} TFLOP/s")
    counts = [n for n in (1, 2, 4, 8) if n <= gpus]
    rows = []
    for label, extra in variants.items():
        spec = {**CUDA_SPEC, **extra}
        base = None
        for n in counts:
            r = run(spec, n, args.steps, args.log_every, threads=4)
            base = base or r["images_per_s"]
            mfu = flops * r["steps_per_s"] / (n * peak) if peak else float("nan")
            rows.append((label, n, f"{r['steps_per_s']:.2f}", f"{r['images_per_s']:.0f}",
                         f"{r['images_per_s'] / (n * base):.1%}", f"{mfu:.1%}"))
    table(rows, ("variant", "GPUs", "steps/s", "images/s", "scaling", "MFU"))


def quality_bench(args) -> None:
    """The 2-D presets on 1 and 2 processes (same seeds): modes and HQ of the final evaluation."""
    rows = []
    for preset in ("ring8-quality", "grid25-quality"):
        doc = json.loads(preset_text(preset))
        for seed in args.seeds:
            for n in (1, 2):
                spec = {**doc, "train": {**doc["train"], "seed": seed}, "sample_every": 10**9,
                        "checkpoint_every": 10**9, "log_every": 10**9}
                with tempfile.TemporaryDirectory() as tmp:
                    path = Path(tmp) / "spec.json"
                    path.write_text(json.dumps(spec))
                    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
                    done = subprocess.run([sys.executable, "-m", "gan_core.cli", "train", str(path), "--out",
                                           f"{tmp}/run", "--quiet", "--devices", str(n)],
                                          env=env, capture_output=True, text=True)
                    if done.returncode != 0:
                        sys.exit(f"{preset} seed {seed} on {n} process(es) failed:\n{done.stderr[-3000:]}")
                    ev = json.loads((Path(tmp) / "run" / "evaluation.json").read_text())
                rows.append((preset, seed, n, f"{ev['modes']}/{ev['n_modes']}", f"{ev['hq_percent']:.2f}"))
                print(*rows[-1], flush=True)
    table(rows, ("preset", "seed", "processes", "modes", "HQ %"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--cuda", action="store_true", help="the GPU benchmark (every GPU count, bf16, compile, MFU)")
    parser.add_argument("--quality", action="store_true",
                        help="the 2-D quality presets on 1 and 2 processes: modes and HQ (minutes per run)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[100], help="--quality: the seeds")
    parser.add_argument("--data-dir", help="folder holding mnist/ (default: $GANFORGE_DATA_DIR)")
    args = parser.parse_args()
    if args.data_dir:
        os.environ["GANFORGE_DATA_DIR"] = args.data_dir
    if args.quality:
        quality_bench(args)
    elif args.cuda:
        cuda_bench(args)
    else:
        cpu_bench(args)


if __name__ == "__main__":
    main()
