"""A small public-domain-like image set made on the spot: coloured shapes, one class folder each.

Each picture is a filled circle, square or triangle (the class) of a random saturated colour,
size, position and rotation on a random light background, drawn with Pillow at 4x and scaled down
(antialiased edges), saved as PNG in ``shapes/<class>/<n>.png`` inside a zip. Nothing is
downloaded; the same seed gives the same archive bytes.

    python bench/shapes.py OUT.zip [--per-class 1000] [--size 64] [--seed 0]
"""

from __future__ import annotations

import argparse
import colorsys
import io
import math
import random
import zipfile
import sys
from pathlib import Path

if __name__ == "__main__":  # checked before the imports below: a missing package is one line, not a traceback
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.prerequisites import Needs

    Needs("bench/shapes.py").python("PIL").check()

from PIL import Image, ImageDraw  # noqa: E402

CLASSES = ("circle", "square", "triangle")
# A fixed timestamp: zipfile would stamp "now" and the archive bytes (its sha256) would change.
_ZIP_TIME = (2020, 1, 1, 0, 0, 0)


def render(kind: str, size: int, rng: random.Random) -> Image.Image:
    """One picture of ``kind`` (size x size RGB)."""
    scale = 4
    big = size * scale
    hue = rng.random()
    background = tuple(int(255 * v) for v in colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.15), rng.uniform(0.85, 1.0)))
    colour = tuple(int(255 * v) for v in colorsys.hsv_to_rgb(hue, rng.uniform(0.7, 1.0), rng.uniform(0.6, 0.95)))
    image = Image.new("RGB", (big, big), background)
    draw = ImageDraw.Draw(image)
    radius = rng.uniform(0.22, 0.36) * big
    cx = rng.uniform(radius, big - radius)
    cy = rng.uniform(radius, big - radius)
    angle = rng.uniform(0, 2 * math.pi)
    if kind == "circle":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour)
    else:
        corners = 4 if kind == "square" else 3
        r = radius * (1.15 if kind == "square" else 1.25)
        points = [(cx + r * math.cos(angle + 2 * math.pi * k / corners), cy + r * math.sin(angle + 2 * math.pi * k / corners))
                  for k in range(corners)]
        draw.polygon(points, fill=colour)
    return image.resize((size, size), Image.Resampling.LANCZOS)


def shapes_archive(path: str | Path, per_class: int = 1000, size: int = 64, seed: int = 0) -> Path:
    """Write the zip; returns its path."""
    rng = random.Random(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for n in range(per_class):
            for kind in CLASSES:
                out = io.BytesIO()
                render(kind, size, rng).save(out, "PNG")
                archive.writestr(zipfile.ZipInfo(f"shapes/{kind}/{n:05d}.png", _ZIP_TIME), out.getvalue())
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--per-class", type=int, default=1000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    path = shapes_archive(args.out, args.per_class, args.size, args.seed)
    print(f"{path}: {args.per_class * len(CLASSES)} pictures ({', '.join(CLASSES)}), {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
