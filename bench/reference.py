"""The seed article's Keras GAN beside ganforge's preset of the same configuration.

For each seed it trains the Keras reference (``bench/reference/``, tensorflow-cpu) and ganforge's
preset for the same number of steps, then scores both with ganforge's own evaluator on the same
number of samples: domain FID, classes covered and mean confidence of the domain classifier.
Prints one row per run and the mean per side.

    python bench/reference.py                          # MLP GAN, seeds 0 1 2, 12 000 steps, 1 worker
    python bench/reference.py --workers 2              # two runs at a time (one thread each)
    python bench/reference.py --model dcgan            # the Keras DCGAN vs presets/dcgan-keras-mnist.json
    python bench/reference.py --sides ganforge --set train.d_update=split --seeds 100   # screen a change
    python bench/reference.py --steps 50 --seeds 0 --samples 500                         # a quick check
    python bench/reference.py --reuse                  # score the finished runs in --out again

Needs tensorflow-cpu for the Keras side (``pip install -e '.[reference]'``) and the MNIST files
(``. scripts/env``). Runs go to ``--out`` (default runs/reference/).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from ganforge.resources import preset_text  # noqa: E402

# model -> (Keras script, ganforge preset)
MODELS = {
    "mlp": ("keras_mlp_gan.py", "classic-mlp-mnist"),
    "dcgan": ("keras_dcgan.py", "dcgan-keras-mnist"),
}
SIDES = ("keras", "ganforge")
INSTALL_HINT = "pip install -e '.[reference]'   (tensorflow-cpu, a bench-only extra)"


@dataclass
class Run:
    side: str
    seed: int
    path: Path  # the Keras samples (.npy) or ganforge's run directory
    seconds: float = 0.0
    figures: dict | None = None


def parse_set(items: list[str]) -> dict:
    """``--set train.d_update=split`` -> {"train": {"d_update": "split"}} (values read as JSON when they parse)."""
    overrides: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set takes KEY=VALUE (e.g. train.d_update=split), not {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = overrides
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return overrides


def merge(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        out[key] = merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def check_prerequisites(sides: list[str]) -> None:
    """Exit with one line (no traceback) naming what the run needs and is missing."""
    from bench.prerequisites import Needs

    needs = Needs("bench/reference.py").python("torch", "numpy")
    if "keras" in sides:
        needs.python("tensorflow", how=INSTALL_HINT)
    needs.mnist().check()


def single_thread_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONPATH": str(ROOT)}


def train_keras(run: Run, script: str, steps: int, samples: int, reuse: bool) -> Run:
    meta = run.path.with_suffix(".json")  # what the samples were made with: reused only if it matches
    wanted = {"script": script, "steps": steps, "seed": run.seed, "samples": samples}
    if reuse and run.path.exists() and meta.exists() and json.loads(meta.read_text()).get("run") == wanted:
        run.seconds = json.loads(meta.read_text())["seconds"]
        return run
    cmd = [sys.executable, str(ROOT / "bench" / "reference" / script), "--steps", str(steps), "--seed", str(run.seed),
           "--samples", str(samples), "--out", str(run.path), "--threads", "1"]
    _run(cmd, run, run.path.with_suffix(".log"))
    meta.write_text(json.dumps({"run": wanted, "seconds": run.seconds}))
    return run


def train_ganforge(run: Run, spec: dict, reuse: bool) -> Run:
    # The spec and the log sit beside the run's folder: `ganforge train` starts in an empty --out.
    spec_file = run.path.with_suffix(".spec.json")
    timing = run.path / "train-seconds.txt"
    final = run.path / "final" / "generator.pt"
    if reuse and final.exists() and timing.exists() and json.loads(spec_file.read_text()) == spec:
        run.seconds = float(timing.read_text())
        return run
    if run.path.exists():  # a stale or different run: start afresh (the CLI would refuse a used --out)
        shutil.rmtree(run.path)
    run.path.parent.mkdir(parents=True, exist_ok=True)
    spec_file.write_text(json.dumps(spec))
    cmd = [sys.executable, "-m", "gan_core.cli", "train", str(spec_file), "--out", str(run.path), "--quiet",
           "--device", "cpu"]
    _run(cmd, run, run.path.with_suffix(".log"))
    timing.write_text(f"{run.seconds:.1f}")
    return run


def _run(cmd: list[str], run: Run, log_file: Path) -> None:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log_file, "w") as log:
        done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=single_thread_env(), cwd=ROOT)
    run.seconds = time.perf_counter() - t0
    if done.returncode != 0:
        tail = log_file.read_text().strip().splitlines()[-5:]
        raise RuntimeError(f"{run.side} seed {run.seed} failed (exit {done.returncode}, log {log_file}):\n  "
                           + "\n  ".join(tail))


def evaluate(runs: list[Run], preset_spec, samples: int) -> None:
    import numpy as np
    import torch

    from gan_core.cli import data_config_from_env
    from gan_core.data import build_dataset
    from gan_core.evaluator import Evaluator
    from gan_core.sampling import load_generator

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    config = data_config_from_env()
    data = build_dataset(preset_spec.dataset, config)
    evaluator = Evaluator(preset_spec, data, config)
    for run in runs:
        if run.side == "keras":
            run.figures = evaluator.evaluate_samples(torch.from_numpy(np.load(run.path)))
        else:
            generator = load_generator(run.path / "final" / "generator.pt").module
            run.figures = evaluator.evaluate(generator, samples, torch.device("cpu"))


def table(runs: list[Run]) -> str:
    lines = ["| side | seed | domain FID | classes | confidence | train s |", "|:--|---:|---:|---:|---:|---:|"]
    for run in sorted(runs, key=lambda r: (SIDES.index(r.side), r.seed)):
        f = run.figures or {}
        lines.append(f"| {run.side} | {run.seed} | {f.get('domain_fid', float('nan')):.2f} | "
                     f"{f.get('classes_covered', 0)}/10 | {f.get('mean_confidence', float('nan')):.3f} | {run.seconds:.0f} |")
    means = {}
    for side in SIDES:
        mine = [r.figures for r in runs if r.side == side and r.figures and "domain_fid" in r.figures]
        if not mine:
            continue
        means[side] = statistics.fmean(f["domain_fid"] for f in mine)
        lines.append(f"| **{side} mean** | {len(mine)} seeds | {means[side]:.2f} | "
                     f"{statistics.fmean(f['classes_covered'] for f in mine):.1f}/10 | "
                     f"{statistics.fmean(f['mean_confidence'] for f in mine):.3f} | |")
    if len(means) == 2:
        lines.append(f"\nganforge / keras mean domain FID: {means['ganforge'] / means['keras']:.3f} "
                     f"({'ganforge at least as good' if means['ganforge'] <= means['keras'] else 'keras better'})")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=tuple(MODELS), default="mlp")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=12_000)
    parser.add_argument("--workers", type=int, default=1, help="runs at a time (each on one thread)")
    parser.add_argument("--samples", type=int, default=10_000, help="samples scored per run")
    parser.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a field of ganforge's preset (repeatable), e.g. train.d_update=split")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "reference")
    parser.add_argument("--reuse", action="store_true",
                        help="score finished runs in --out made with the same settings instead of training them again")
    args = parser.parse_args()
    if args.steps < 1 or args.workers < 1 or args.samples < 2:
        parser.error("--steps and --workers must be >= 1, --samples >= 2")
    check_prerequisites(args.sides)

    from pydantic import ValidationError

    from gan_core.spec import JobSpec, error_details

    script, preset = MODELS[args.model]
    base = json.loads(preset_text(preset))
    overrides = parse_set(args.overrides)
    specs = {}
    for seed in args.seeds:
        doc = merge(base, merge(overrides, {"train": {"steps": args.steps, "seed": seed}, "eval": {"at_end": False}}))
        try:
            specs[seed] = JobSpec.model_validate(doc)
        except ValidationError as exc:
            for item in error_details(exc):
                print(f"bench/reference.py: {item['field']}: {item['problem']}", file=sys.stderr)
            return 2

    print(f"{args.model}: Keras {script} vs presets/{preset}.json"
          + (f" with {json.dumps(overrides)}" if overrides else "")
          + f"; {args.steps} steps, seeds {args.seeds}, {args.samples} samples scored, {args.workers} worker(s)",
          flush=True)
    runs: list[Run] = []
    with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
        futures = []
        for seed in args.seeds:
            if "keras" in args.sides:
                run = Run("keras", seed, args.out / f"keras-{args.model}-{seed}.npy")
                futures.append(pool.submit(train_keras, run, script, args.steps, args.samples, args.reuse))
            if "ganforge" in args.sides:
                run = Run("ganforge", seed, args.out / f"ganforge-{preset}-{seed}")
                futures.append(pool.submit(train_ganforge, run, specs[seed].model_dump(mode="json"), args.reuse))
        try:
            for future in concurrent.futures.as_completed(futures):
                run = future.result()
                runs.append(run)
                print(f"  {run.side} seed {run.seed}: trained in {run.seconds:.0f} s", flush=True)
        except RuntimeError as exc:
            print(f"bench/reference.py: {exc}", file=sys.stderr)
            return 1
    evaluate(runs, specs[args.seeds[0]], args.samples)
    print(table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
