"""image_folder loading speed against what training asks for: is the loader ever the bottleneck?

1. Makes a shapes archive (bench/shapes.py; 96 px PNGs, so every picture is resized).
2. Decodes it into the cache (a first job: cache miss) and finds it again (a second job: hit).
3. Samples batches from the memory-mapped cache entry as the trainer does (``PixelDataset``:
   random rows gathered, uint8 -> float in [-1, 1], moved to the device) for a few seconds.
4. Times the 64 px DCGAN's training step (batch 64, 1 D + 1 G update, presets/dcgan-64-folder.json's
   networks) on the same device, from the same dataset.

The demand is batch x d_steps / step time (real images per second the step consumes); the loader's
share of a step is its time per batch over the step time.

    python bench/data.py [--per-class 1000] [--device cpu|cuda] [--threads N] [--steps 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

if __name__ == "__main__":  # checked before the imports below: a missing package is one line, not a traceback
    from bench.prerequisites import Needs

    Needs("bench/data.py").python("torch", "numpy", "PIL").check()

import torch  # noqa: E402

from bench.shapes import shapes_archive  # noqa: E402
from gan_core.data import DataConfig, build_dataset  # noqa: E402
from gan_core.data.folder import prepare_folder  # noqa: E402
from gan_core.spec import JobSpec  # noqa: E402
from gan_core.trainer import Callbacks, Trainer, train_step_floats  # noqa: E402
from ganforge.resources import presets_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PRESET = presets_dir() / "dcgan-64-folder.json"


def loader_rate(data, batch: int, seconds: float, device: torch.device) -> float:
    """Images per second from ``data.sample`` (synchronised on CUDA)."""
    data.sample(batch)  # warm: page cache, pinned buffers
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        images, _ = data.sample(batch)
        count += images.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return count / (time.perf_counter() - started)


def step_seconds(spec: JobSpec, data, config: DataConfig, steps: int, device: torch.device) -> float:
    """Median seconds of one training step (after two warm-up steps)."""
    trainer = Trainer(spec, data_config=config, callbacks=Callbacks(), dataset=data, device=str(device))
    times = []
    for i in range(steps + 2):
        started = time.perf_counter()
        train_step_floats(trainer.state, trainer.data, trainer.noise, spec)  # .item(): the step has finished
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=1000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--steps", type=int, default=8, help="timed training steps")
    parser.add_argument("--seconds", type=float, default=3.0, help="how long the loader is timed")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    preset = json.loads(PRESET.read_text())

    with tempfile.TemporaryDirectory(prefix="ganforge-bench-data-") as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        archive = shapes_archive(tmp / "shapes.zip", args.per_class, size=96)
        made = time.perf_counter() - started
        archive_bytes = archive.stat().st_size
        n = args.per_class * 3
        config = DataConfig(cache_dir=tmp / "cache")
        started = time.perf_counter()
        miss = prepare_folder(archive, config.cache_dir, 64, 3, "none")
        decode = time.perf_counter() - started
        started = time.perf_counter()
        hit = prepare_folder(archive, config.cache_dir, 64, 3, "none")
        again = time.perf_counter() - started
        assert (miss.summary.cache, hit.summary.cache) == ("miss", "hit")

        doc = {**preset, "dataset": {**preset["dataset"], "path": str(hit.entry)}, "device": args.device}
        spec = JobSpec.model_validate(doc)
        data = build_dataset(spec.dataset, config, device=device)
        batch = spec.train.batch_size
        rate = loader_rate(data, batch, args.seconds, device)
        step = step_seconds(spec, data, config, args.steps, device)

    demand = batch * spec.train.d_steps / step
    per_batch = batch / rate
    print(f"device {device} ({torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs); "
          f"shapes archive: {n} PNGs at 96 px ({archive_bytes} bytes), made in {made:.1f} s")
    print(f"{'first job: decode into the cache (miss)':<52}{decode:8.2f} s  {n / decode:10.0f} images/s")
    print(f"{'second job: find the cache entry (hit)':<52}{again:8.2f} s  (sha256 of the archive, nothing decoded)")
    print(f"{'batches from the memory-mapped cache (64 px, b=' + str(batch) + ')':<52}{per_batch * 1e3:8.2f} ms {rate:10.0f} images/s")
    print(f"{'64 px DCGAN training step (b=' + str(batch) + ', 1 D + 1 G)':<52}{step * 1e3:8.1f} ms {demand:10.0f} images/s demanded")
    print(f"loader headroom: {rate / demand:.0f}x the step's demand; sampling is {100 * per_batch / step:.2f} % of a step")


if __name__ == "__main__":
    main()
