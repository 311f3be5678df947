"""presets/dcgan-64-folder.json on rendered shapes: are the samples recognisable?

Makes a shapes archive (bench/shapes.py: circles, squares and triangles of random colours), trains
the preset on it unconditionally (its recipe: hinge loss, spectral norm in D, EMA of G, Adam 2e-4
for both networks), then judges the EMA generator's samples with a shape classifier trained on the
real pictures (gan_core's domain classifier on labelled class folders, seed 0, 2 epochs):
the share of samples it calls each shape, how many it is confident about (p >= 0.9), and, for
reference, the same figures for real held-out pictures. A collapsed generator puts nearly all
samples in one class; an unrecognisable one has few confident samples.

On a CPU the preset's width is too slow; ``--ngf/--ndf/--batch`` shrink it (the recipe stays).

    python bench/folder_preset.py [--steps 1500] [--ngf 32] [--ndf 32] [--batch 64] [--threads 1]
                                  [--device cuda] [--out runs/folder-preset]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

if __name__ == "__main__":  # checked before the imports below: a missing package is one line, not a traceback
    from bench.prerequisites import Needs

    needs = Needs("bench/folder_preset.py").python("torch", "numpy", "PIL")
    (needs.cuda() if "cuda" in sys.argv or "--device=cuda" in sys.argv else needs).check()

import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from bench.shapes import CLASSES, shapes_archive  # noqa: E402
from gan_core.data import DataConfig, build_dataset  # noqa: E402
from gan_core.data.folder import prepare_folder  # noqa: E402
from gan_core.quality import get_classifier  # noqa: E402
from gan_core.sampling import load_generator  # noqa: E402
from gan_core.spec import JobSpec  # noqa: E402
from gan_core.trainer import Callbacks, Trainer  # noqa: E402
from ganforge.resources import presets_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PRESET = presets_dir() / "dcgan-64-folder.json"


class Progress(Callbacks):
    def __init__(self, out: Path, started: float) -> None:
        self.out, self.started = out, started

    def on_metrics(self, step, metrics):
        print(f"step {step:5d}  {time.perf_counter() - self.started:7.0f} s  loss_d {metrics.get('loss_d', float('nan')):.3f}"
              f"  loss_g {metrics.get('loss_g', float('nan')):.3f}", flush=True)

    def on_samples(self, step, png):
        (self.out / f"samples-{step:05d}.png").write_bytes(png)


JUDGE_SIZE = 32  # the judge looks at 32 px: shapes stay clear, training it costs a quarter
JUDGE_EPOCHS = 12


def small(images: torch.Tensor) -> torch.Tensor:
    return F.interpolate(images, size=(JUDGE_SIZE, JUDGE_SIZE), mode="bilinear", antialias=True, align_corners=False)


def judged(classifier, images: torch.Tensor) -> dict[str, float]:
    with torch.no_grad():
        probs = torch.cat([classifier(small(images[i:i + 256])).softmax(1) for i in range(0, len(images), 256)])
    confidence, label = probs.max(1)
    shares = {name: round(100 * float((label == k).float().mean()), 1) for k, name in enumerate(CLASSES)}
    return {**shares, "confident_percent": round(100 * float((confidence >= 0.9).float().mean()), 1)}


def judge(generator: torch.nn.Module, archive: Path, config: DataConfig, spec: JobSpec, n: int) -> dict:
    """The shape classifier's view of ``n`` samples of ``generator`` and of held-out real pictures."""
    labelled = prepare_folder(archive, config.cache_dir, 64, 3, "folders")
    real = build_dataset(spec.dataset.model_copy(update={"path": str(labelled.entry), "labels": "folders"}), config)
    images, labels = real.labelled_examples()
    held_out = len(images) // 5
    classifier, meta = get_classifier(
        f"shapes-{labelled.summary.sha256[:16]}-{JUDGE_SIZE}px-{JUDGE_EPOCHS}ep",
        (small(images[held_out:]), labels[held_out:]), (small(images[:held_out]), labels[:held_out]),
        config.cache_dir / "classifiers", epochs=JUDGE_EPOCHS, num_classes=3)
    device = next(generator.parameters()).device
    with torch.no_grad():
        z = generator.sample_latent(n, torch.Generator().manual_seed(1)).to(device)
        samples = torch.cat([generator(z[i:i + 250]).cpu() for i in range(0, n, 250)]).clamp(-1, 1)
    return {"classifier_test_accuracy": round(meta["test_accuracy"], 4), "real": judged(classifier, images[:held_out]),
            "generated": judged(classifier, samples)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--ngf", type=int, default=None, help="default: the preset's")
    parser.add_argument("--ndf", type=int, default=None, help="default: the preset's")
    parser.add_argument("--batch", type=int, default=None, help="default: the preset's")
    parser.add_argument("--per-class", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=1500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--out", default=str(ROOT / "runs" / "folder-preset"))
    parser.add_argument("--judge", metavar="GENERATOR_PT", help="only judge a generator.pt of an earlier run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    preset = json.loads(PRESET.read_text())

    with tempfile.TemporaryDirectory(prefix="ganforge-folder-preset-") as tmp:
        archive = shapes_archive(Path(tmp) / "shapes.zip", args.per_class, size=64, seed=0)
        config = DataConfig(cache_dir=Path(tmp) / "cache")
        if args.judge:
            loaded = load_generator(args.judge)
            spec = loaded.spec.model_copy(update={"dataset": loaded.spec.dataset.model_copy(update={"path": str(archive)})})
            print(json.dumps(judge(loaded.module, archive, config, spec, args.samples)))
            return
        model = {**preset["model"], **{k: v for k, v in (("ngf", args.ngf), ("ndf", args.ndf)) if v}}
        train = {**preset["train"], "steps": args.steps, **({"batch_size": args.batch} if args.batch else {})}
        doc = {**preset, "dataset": {**preset["dataset"], "path": str(archive)}, "model": model, "train": train,
               "device": args.device, "log_every": 100, "sample_every": max(100, args.steps // 6),
               "checkpoint_every": args.steps, "eval": {"at_end": False}}
        spec = JobSpec.model_validate(doc)
        print(f"training {spec.name}: {args.per_class * 3} shapes, {json.dumps(model)}, {json.dumps(train)}", flush=True)
        started = time.perf_counter()
        trainer = Trainer(spec, data_config=config, callbacks=Progress(out, started))
        trainer.run()
        seconds = time.perf_counter() - started
        (out / "final.png").write_bytes(trainer.sample_grid())
        torch.save(trainer.generator_file(), out / "generator.pt")
        figures = {"steps": spec.train.steps, "train_seconds": round(seconds),
                   **judge(trainer.state.sampling_generator.eval(), archive, config, spec, args.samples)}
    (out / "figures.json").write_text(json.dumps(figures, indent=1))
    print(json.dumps(figures))
    print(f"sample grids in {out}/ (final.png: the EMA generator's fixed-noise grid)")


if __name__ == "__main__":
    main()
