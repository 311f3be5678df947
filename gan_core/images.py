"""Pictures of a training run, drawn with Pillow and numpy only (no torchvision, no matplotlib).

* ``grid_png``: a batch of images in [-1, 1] tiled into one PNG (like torchvision's make_grid + save_image).
* ``scatter_png``: the "sample grid" of the 2-D mixtures: generated points over faint real points.
* ``line_plot_png``: loss curves against the step, with a legend and numbered axes.
* ``gif_bytes``: an animated GIF of PNG frames (the timeline of sample grids).
* ``png_to_array``: decode a PNG back to a numpy array (for tests and checks).

Every function returns the encoded file as ``bytes``; writing it anywhere is the caller's business.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Matplotlib's "tab10" colours: distinct, and familiar to anyone reading loss curves.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)
_BLACK = (0, 0, 0)
_WHITE = (255, 255, 255)
_GRID = (225, 225, 225)
_REAL_POINT = (190, 200, 230)  # faint blue-grey: real data stays behind the generated points
_CENTER = (235, 120, 120)
_FAKE_POINT = (20, 40, 140)

# Half-width of the square drawn for each 2-D mixture, fixed so that frames compare across steps.
MIXTURE_EXTENTS: dict[str, float] = {"ring8": 3.0, "grid25": 6.0}


def _as_numpy(images: Any) -> np.ndarray:
    """A numpy float array from a numpy array or a torch tensor (torch is not imported here)."""
    if hasattr(images, "detach"):  # a torch.Tensor, possibly on a GPU or needing grad
        images = images.detach().float().cpu().numpy()
    return np.asarray(images, dtype=np.float32)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Map [-1, 1] to 0..255, rounding as torchvision's save_image does (x * 255 + 0.5, clamped)."""
    scaled = (values + 1.0) * 0.5 * 255.0 + 0.5
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def png_to_jpeg(png: bytes, quality: int = 95) -> bytes:
    """The same picture as JPEG (which has no alpha: transparent parts become white)."""
    image = Image.open(io.BytesIO(png))
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        image = background
    elif image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def grid_png(images: Any, nrow: int = 8, padding: int = 2, pad_value: float = 1.0) -> bytes:
    """Tile N images of shape N×C×H×W (C is 1 or 3, values in [-1, 1]) into one PNG.

    ``nrow`` is the number of images per row, as in torchvision.utils.make_grid; images are laid
    out row-major, so a caller that orders samples class by class gets one class per row.
    ``pad_value`` is in the same [-1, 1] scale as the images (1.0 = white, -1.0 = black).
    N×H×W input is read as single-channel images. Grey images give an "L" PNG, colour an "RGB" one.
    """
    array = _as_numpy(images)
    if array.ndim == 3:
        array = array[:, None]
    if array.ndim != 4 or array.shape[1] not in (1, 3):
        raise ValueError(f"expected images of shape N×C×H×W with C 1 or 3, got {array.shape}")
    if array.shape[0] == 0:
        raise ValueError("no images to draw")
    if nrow < 1 or padding < 0:
        raise ValueError("nrow must be >= 1 and padding >= 0")
    count, channels, height, width = array.shape
    columns = min(nrow, count)
    rows = math.ceil(count / columns)
    cell_h, cell_w = height + padding, width + padding
    # The padding surrounds every image, including the outer border, as make_grid does.
    canvas = np.full(
        (rows * cell_h + padding, columns * cell_w + padding, channels), pad_value, dtype=np.float32
    )
    for index in range(count):
        row, col = divmod(index, columns)
        top, left = row * cell_h + padding, col * cell_w + padding
        canvas[top : top + height, left : left + width] = array[index].transpose(1, 2, 0)
    pixels = _to_uint8(canvas)
    image = Image.fromarray(pixels[..., 0], "L") if channels == 1 else Image.fromarray(pixels, "RGB")
    return _encode_png(image)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow built without FreeType: small bitmap font
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font: Any) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return int(right - left), int(bottom - top)


def nice_ticks(low: float, high: float, target: int = 6) -> list[float]:
    """Round tick values (1, 2, 2.5 or 5 times a power of ten) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return []
    if high <= low:
        high = low + 1.0
    raw_step = (high - low) / max(target, 1)
    magnitude = 10 ** math.floor(math.log10(raw_step))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw_step)
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(0.0 if abs(value) < step * 1e-9 else value)
        value = first + len(ticks) * step
    return ticks


def format_ticks(values: Sequence[float]) -> list[str]:
    """Labels for evenly spaced ticks, all with the same number of decimals (or all in thousands)."""
    if not values:
        return []
    step = values[1] - values[0] if len(values) > 1 else 1.0
    biggest = max(abs(v) for v in values)
    if biggest >= 10_000 and step >= 1000 and all(float(v / 1000).is_integer() for v in values):
        return [f"{v / 1000:g}k" if v else "0" for v in values]
    decimals = max(0, -math.floor(math.log10(step))) if step > 0 else 0
    # 2.5-type steps need one decimal more than their power of ten.
    if step > 0 and not math.isclose(round(step, decimals), step, rel_tol=1e-9):
        decimals += 1
    return [f"{v:.{decimals}f}" for v in values]


def scatter_png(
    points: Any,
    real: Any | None = None,
    centers: Any | None = None,
    size: int = 400,
    extent: float | tuple[float, float, float, float] | None = None,
    title: str | None = None,
) -> bytes:
    """Draw generated 2-D points (N×2) on a white square, real points and mode centres faintly behind.

    ``extent`` is a half-width (the square [-e, e]²) or (xmin, xmax, ymin, ymax). Pass a fixed value
    per dataset (see MIXTURE_EXTENTS) so that frames from different steps compare; when it is None it
    is 1.5 times the farthest centre (±3 for ring8, ±6 for grid25), else taken from the points.
    Points outside the extent are not drawn; their count is written in the corner.
    """
    fake = _as_numpy(points).reshape(-1, 2)
    real_points = None if real is None else _as_numpy(real).reshape(-1, 2)
    center_points = None if centers is None else _as_numpy(centers).reshape(-1, 2)
    xmin, xmax, ymin, ymax = _scatter_extent(extent, fake, real_points, center_points)

    margin_left, margin_bottom, margin_top, margin_right = 42, 28, 22 if title else 10, 10
    width, height = size + margin_left + margin_right, size + margin_top + margin_bottom
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)

    def to_pixels(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pixel columns and rows of the points inside the extent, and the mask of those points."""
        col = margin_left + (xy[:, 0] - xmin) / (xmax - xmin) * (size - 1)
        row = margin_top + (ymax - xy[:, 1]) / (ymax - ymin) * (size - 1)  # y grows upwards
        inside = np.isfinite(col) & np.isfinite(row)
        inside &= (xy[:, 0] >= xmin) & (xy[:, 0] <= xmax) & (xy[:, 1] >= ymin) & (xy[:, 1] <= ymax)
        return np.rint(col[inside]).astype(int), np.rint(row[inside]).astype(int), inside

    def stamp(xy: np.ndarray, color: tuple[int, int, int], radius: int) -> int:
        """Paint a (2r+1)-pixel square per point, vectorised; returns how many points fell outside."""
        cols, rows, inside = to_pixels(xy)
        for dy in range(-radius, radius + 1):
            for dx in range(-radius, radius + 1):
                rr = np.clip(rows + dy, margin_top, margin_top + size - 1)
                cc = np.clip(cols + dx, margin_left, margin_left + size - 1)
                canvas[rr, cc] = color
        return int((~inside).sum())

    if real_points is not None and len(real_points):
        stamp(real_points, _REAL_POINT, 1)
    image = Image.fromarray(canvas, "RGB")
    draw = ImageDraw.Draw(image)
    if center_points is not None:
        cols, rows, _ = to_pixels(center_points)
        for c, r in zip(cols, rows):
            draw.ellipse((c - 6, r - 6, c + 6, r + 6), outline=_CENTER, width=1)
    canvas[:] = np.asarray(image)
    outside = stamp(fake, _FAKE_POINT, 1) if len(fake) else 0
    image = Image.fromarray(canvas, "RGB")
    draw = ImageDraw.Draw(image)

    font = _font(11)
    box = (margin_left - 1, margin_top - 1, margin_left + size, margin_top + size)
    draw.rectangle(box, outline=_BLACK, width=1)
    x_ticks = nice_ticks(xmin, xmax, 6)
    for value, label in zip(x_ticks, format_ticks(x_ticks)):
        col = margin_left + (value - xmin) / (xmax - xmin) * (size - 1)
        draw.line((col, box[3], col, box[3] + 4), fill=_BLACK)
        tw, _ = _text_size(draw, label, font)
        draw.text((col - tw / 2, box[3] + 6), label, fill=_BLACK, font=font)
    y_ticks = nice_ticks(ymin, ymax, 6)
    for value, label in zip(y_ticks, format_ticks(y_ticks)):
        row = margin_top + (ymax - value) / (ymax - ymin) * (size - 1)
        draw.line((box[0] - 4, row, box[0], row), fill=_BLACK)
        tw, th = _text_size(draw, label, font)
        draw.text((box[0] - 6 - tw, row - th / 2 - 2), label, fill=_BLACK, font=font)
    if title:
        draw.text((margin_left, 4), title, fill=_BLACK, font=_font(12))
    if outside:
        note = f"{outside}/{len(fake)} outside"
        tw, _ = _text_size(draw, note, font)
        draw.text((box[2] - tw - 4, box[1] + 3), note, fill=(200, 0, 0), font=font)
    return _encode_png(image)


def _scatter_extent(
    extent: float | tuple[float, float, float, float] | None,
    fake: np.ndarray,
    real: np.ndarray | None,
    centers: np.ndarray | None,
) -> tuple[float, float, float, float]:
    if extent is not None:
        if isinstance(extent, (int, float)):
            half = float(extent)
            bounds = (-half, half, -half, half)
        else:
            bounds = tuple(float(v) for v in extent)  # type: ignore[assignment]
            if len(bounds) != 4:
                raise ValueError("extent is a half-width or (xmin, xmax, ymin, ymax)")
    else:
        if centers is not None and len(centers):
            half = 1.5 * float(np.abs(centers).max())
        else:
            reference = real if real is not None and len(real) else fake
            finite = reference[np.isfinite(reference).all(axis=1)]
            half = 1.1 * float(np.abs(finite).max()) if len(finite) else 1.0
        half = half if half > 0 else 1.0
        bounds = (-half, half, -half, half)
    xmin, xmax, ymin, ymax = bounds
    if not (xmax > xmin and ymax > ymin):
        raise ValueError(f"empty extent {bounds}")
    return xmin, xmax, ymin, ymax


def line_plot_png(
    series: Mapping[str, Sequence[tuple[int, float]]],
    title: str,
    size: tuple[int, int] = (800, 400),
    hlines: Sequence[float] = (),
    y_range: tuple[float, float] | None = None,
    xlabel: str = "step",
) -> bytes:
    """Plot named series of (step, value) pairs as lines, with a legend, ticks and a title.

    ``hlines`` draws dashed grey reference lines (e.g. 0.5 for the discriminator's accuracy).
    ``y_range`` fixes the value axis; by default it spans all finite values and the reference lines.
    Non-finite values (a diverged loss) break the line instead of wrecking the scale.
    """
    width, height = size
    image = Image.new("RGB", (width, height), _WHITE)
    draw = ImageDraw.Draw(image)
    font, title_font = _font(12), _font(15)
    left, right, top, bottom = 64, width - 16, 34, height - 40

    clean: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, pairs in series.items():
        data = np.asarray(list(pairs), dtype=np.float64).reshape(-1, 2)
        clean[name] = (data[:, 0], data[:, 1])
    xs = np.concatenate([x for x, _ in clean.values()]) if clean else np.zeros(0)
    ys = np.concatenate([y for _, y in clean.values()]) if clean else np.zeros(0)
    xs, finite_ys = xs[np.isfinite(xs)], ys[np.isfinite(ys)]

    x_low, x_high = (float(xs.min()), float(xs.max())) if len(xs) else (0.0, 1.0)
    if x_high <= x_low:
        x_high = x_low + 1.0
    if y_range is not None:
        y_low, y_high = float(y_range[0]), float(y_range[1])
    else:
        candidates = np.concatenate([finite_ys, np.asarray(list(hlines), dtype=np.float64)])
        y_low, y_high = (float(candidates.min()), float(candidates.max())) if len(candidates) else (0.0, 1.0)
        span = y_high - y_low
        pad = 0.05 * span if span > 0 else max(abs(y_low) * 0.1, 0.5)
        y_low, y_high = y_low - pad, y_high + pad

    def px(x: float) -> float:
        return left + (x - x_low) / (x_high - x_low) * (right - left)

    def py(y: float) -> float:
        return bottom - (y - y_low) / (y_high - y_low) * (bottom - top)

    # Grid and ticks first, so that the curves are drawn over them.
    y_ticks = nice_ticks(y_low, y_high, 6)
    for value, label in zip(y_ticks, format_ticks(y_ticks)):
        row = py(value)
        draw.line((left, row, right, row), fill=_GRID)
        tw, th = _text_size(draw, label, font)
        draw.text((left - 8 - tw, row - th / 2 - 3), label, fill=_BLACK, font=font)
    x_ticks = nice_ticks(x_low, x_high, 8)
    for value, label in zip(x_ticks, format_ticks(x_ticks)):
        col = px(value)
        draw.line((col, top, col, bottom), fill=_GRID)
        draw.line((col, bottom, col, bottom + 4), fill=_BLACK)
        tw, _ = _text_size(draw, label, font)
        draw.text((col - tw / 2, bottom + 6), label, fill=_BLACK, font=font)
    for value in hlines:
        if y_low <= value <= y_high:
            _dashed_hline(draw, left, right, py(value), fill=(110, 110, 110))

    # Clip to the plot area: a value outside y_range is drawn at the border.
    for index, (name, (x, y)) in enumerate(clean.items()):
        color = PALETTE[index % len(PALETTE)]
        order = np.argsort(x, kind="stable")
        segment: list[tuple[float, float]] = []
        for xv, yv in zip(x[order], y[order]):
            if not (math.isfinite(xv) and math.isfinite(yv)):
                _draw_segment(draw, segment, color)
                segment = []
                continue
            segment.append((px(xv), min(max(py(yv), top), bottom)))
        _draw_segment(draw, segment, color)

    draw.rectangle((left, top, right, bottom), outline=_BLACK, width=1)
    tw, _ = _text_size(draw, title, title_font)
    draw.text(((width - tw) / 2, 8), title, fill=_BLACK, font=title_font)
    tw, _ = _text_size(draw, xlabel, font)
    draw.text(((left + right - tw) / 2, height - 18), xlabel, fill=_BLACK, font=font)
    _legend(draw, list(clean), right, top, font)
    return _encode_png(image)


def _draw_segment(draw: ImageDraw.ImageDraw, points: list[tuple[float, float]], color: tuple[int, int, int]) -> None:
    if len(points) == 1:
        x, y = points[0]
        draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=color)
    elif len(points) > 1:
        draw.line(points, fill=color, width=2, joint="curve")


def _dashed_hline(draw: ImageDraw.ImageDraw, x0: float, x1: float, y: float, fill: tuple[int, int, int]) -> None:
    dash, gap = 8, 5
    x = x0
    while x < x1:
        draw.line((x, y, min(x + dash, x1), y), fill=fill, width=1)
        x += dash + gap


def _legend(draw: ImageDraw.ImageDraw, names: list[str], right: float, top: float, font: Any) -> None:
    if not names:
        return
    line_h = 16
    text_w = max(_text_size(draw, name, font)[0] for name in names)
    box_w, box_h = text_w + 36, line_h * len(names) + 8
    x0, y0 = right - box_w - 8, top + 8
    draw.rectangle((x0, y0, x0 + box_w, y0 + box_h), fill=_WHITE, outline=(160, 160, 160))
    for index, name in enumerate(names):
        color = PALETTE[index % len(PALETTE)]
        y = y0 + 4 + index * line_h + line_h / 2
        draw.line((x0 + 6, y, x0 + 24, y), fill=color, width=3)
        draw.text((x0 + 30, y - 8), name, fill=_BLACK, font=font)


def gif_bytes(frames: Sequence[bytes], duration_ms: int = 200, loop: int = 0) -> bytes:
    """An animated GIF of PNG frames, each shown ``duration_ms``; ``loop=0`` repeats forever.

    Frames of another size than the first are resized to it (nearest neighbour keeps pixels crisp).
    """
    if not frames:
        raise ValueError("a GIF needs at least one frame")
    images = [Image.open(io.BytesIO(data)).convert("RGB") for data in frames]
    first_size = images[0].size
    images = [im if im.size == first_size else im.resize(first_size, Image.Resampling.NEAREST) for im in images]
    buffer = io.BytesIO()
    images[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=max(int(duration_ms), 10),
        loop=loop,
        disposal=1,
        optimize=False,
    )
    return buffer.getvalue()


def png_to_array(data: bytes) -> np.ndarray:
    """Decode PNG (or GIF: its first frame) bytes: H×W uint8 for grey images, H×W×C otherwise."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        if image.mode not in ("L", "RGB", "RGBA"):
            image = image.convert("RGB")
        return np.asarray(image).copy()
