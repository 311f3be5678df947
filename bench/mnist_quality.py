"""MNIST quality figures: domain FID, classes covered, confidence and (conditional) label accuracy.

For each preset it trains with ``ganforge train`` into ``runs/<preset>`` (or reuses a finished run
with ``--reuse``), then evaluates the final generator on 10 000 samples and, for reference, the
untrained generator of the same spec and the real test split.

    python bench/mnist_quality.py [--presets classic-mlp-mnist acgan-mlp-mnist] [--reuse] [--n 10000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

if __name__ == "__main__":  # what may be missing, checked before it is imported
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.prerequisites import Needs

    Needs("bench/mnist_quality.py").python("torch", "numpy").mnist().check()

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gan_core.cli import data_config_from_env  # noqa: E402
from gan_core.data import build_dataset  # noqa: E402
from gan_core.evaluator import Evaluator  # noqa: E402
from gan_core.sampling import load_generator  # noqa: E402
from gan_core.spec import load_spec  # noqa: E402
from gan_core.trainer import Trainer  # noqa: E402
from ganforge.resources import preset_text, presets_dir  # noqa: E402


def train(preset: str, out: Path) -> float:
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "gan_core.cli", "train", str(presets_dir() / f"{preset}.json"), "--out", str(out), "--quiet"]
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def row(label: str, figures: dict) -> str:
    acc = figures.get("label_accuracy")
    return (f"  {label:28s} FID {figures['domain_fid']:8.2f}  classes {figures['classes_covered']:2d}/10  "
            f"confidence {figures['mean_confidence']:.3f}" + (f"  label acc {acc * 100:6.2f} %" if acc is not None else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["classic-mlp-mnist", "acgan-mlp-mnist"])
    parser.add_argument("--reuse", action="store_true", help="evaluate runs/<preset> if it has a final generator")
    parser.add_argument("--n", type=int, default=10_000, help="samples to evaluate")
    args = parser.parse_args()
    config = data_config_from_env()

    for preset in args.presets:
        spec = load_spec(preset_text(preset))
        out = ROOT / "runs" / preset
        final = out / "final" / "generator.pt"
        seconds = None
        if not (args.reuse and final.exists()):
            seconds = train(preset, out)
        loaded = load_generator(final)
        data = build_dataset(spec.dataset, config)
        evaluator = Evaluator(spec, data, config)
        trained = evaluator.evaluate(loaded.module, args.n, torch.device("cpu"))
        untrained = evaluator.evaluate(Trainer(spec, dataset=data, data_config=config).state.generator, args.n, torch.device("cpu"))
        print(f"{preset}: {spec.train.steps} steps, batch {spec.train.batch_size}, "
              f"{spec.train.d_steps} D + {spec.train.g_steps} G updates per step"
              + (f", trained in {seconds:.0f} s" if seconds else " (reused run)"))
        print(f"  domain classifier test accuracy {trained['classifier_test_accuracy'] * 100:.2f} %")
        print(row("untrained generator", untrained))
        print(row(f"trained (step {loaded.step})", trained))
        print(f"  class histogram of the trained samples: {trained['class_histogram']}")


if __name__ == "__main__":
    main()
