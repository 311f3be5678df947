"""Pictures: image grids, 2-D scatter frames, loss plots and GIF timelines (Pillow only)."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from gan_core.images import (
    PALETTE,
    format_ticks,
    gif_bytes,
    grid_png,
    line_plot_png,
    nice_ticks,
    png_to_array,
    scatter_png,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- grid_png


def test_grid_layout_padding_and_row_major_order() -> None:
    # 6 single-channel 4×4 images, image i filled with a distinct grey level.
    levels = np.linspace(-1.0, 0.6, 6, dtype=np.float32)
    images = np.broadcast_to(levels[:, None, None, None], (6, 1, 4, 4)).copy()
    data = grid_png(images, nrow=4, padding=2)
    assert data.startswith(PNG_MAGIC)
    pixels = png_to_array(data)
    # 4 columns, ceil(6/4) = 2 rows; padding around every image: 2 + 4 * (4 + 2) = 26 wide.
    assert pixels.shape == (2 + 2 * 6, 2 + 4 * 6)
    expected = np.clip((levels + 1) * 0.5 * 255 + 0.5, 0, 255).astype(np.uint8)
    for index in range(6):
        row, col = divmod(index, 4)  # row-major: one class per row when the caller orders them so
        top, left = 2 + row * 6, 2 + col * 6
        assert (pixels[top : top + 4, left : left + 4] == expected[index]).all()
    assert (pixels[0, :] == 255).all() and (pixels[:, 0] == 255).all()  # pad_value 1.0 = white
    assert (pixels[8:12, 14:18] == 255).all()  # the two unused cells of the last row are padding


def test_grid_colour_from_tensor_and_pad_value() -> None:
    images = torch.zeros(2, 3, 5, 5)
    images[0, 0] = 1.0  # red channel full, others mid-grey
    images[1] = -1.0
    pixels = png_to_array(grid_png(images, nrow=2, padding=1, pad_value=-1.0))
    assert pixels.shape == (7, 13, 3)
    assert tuple(pixels[1, 1]) == (255, 128, 128)
    assert tuple(pixels[1, 7]) == (0, 0, 0)
    assert tuple(pixels[0, 0]) == (0, 0, 0)  # pad_value -1 = black


def test_grid_clamps_out_of_range_values_and_accepts_nhw() -> None:
    pixels = png_to_array(grid_png(np.array([[[3.0, -7.0]]]), nrow=1, padding=0))
    assert pixels.tolist() == [[255, 0]]


@pytest.mark.parametrize("shape", [(2, 2, 4, 4), (4, 4), (0, 1, 4, 4)])
def test_grid_rejects_bad_shapes(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        grid_png(np.zeros(shape), nrow=2)


# ----------------------------------------------------------------------------- scatter_png


def _plot_box(pixels: np.ndarray) -> tuple[int, int, int, int]:
    """Rows and columns of the black axes box (the only fully black long lines)."""
    black = (pixels == 0).all(axis=2)
    rows = np.where(black.sum(axis=1) > black.shape[1] / 2)[0]
    cols = np.where(black.sum(axis=0) > black.shape[0] / 2)[0]
    return rows.min(), rows.max(), cols.min(), cols.max()


def test_scatter_places_points_in_a_fixed_extent() -> None:
    size = 201
    data = scatter_png(np.array([[0.0, 0.0], [2.9, 2.9]]), extent=3.0, size=size)
    pixels = png_to_array(data)
    top, bottom, left, right = _plot_box(pixels)
    assert bottom - top == size + 1 and right - left == size + 1  # the box frames the size×size plot area
    dark = (pixels.astype(int).sum(axis=2) < 300) & ~(pixels == 0).all(axis=2)
    ys, xs = np.nonzero(dark[top + 1 : bottom, left + 1 : right])
    # The point (0, 0) sits in the middle of the square, (2.9, 2.9) near the top-right corner.
    centre = size // 2
    assert ((abs(ys - centre) <= 1) & (abs(xs - centre) <= 1)).any()
    corner_y, corner_x = round((3 - 2.9) / 6 * (size - 1)), round((2.9 + 3) / 6 * (size - 1))
    assert ((abs(ys - corner_y) <= 1) & (abs(xs - corner_x) <= 1)).any()
    assert not ((ys > centre + 5) & (xs < centre - 5)).any()  # nothing in the empty lower-left


def test_scatter_extent_from_centres_and_points_outside_are_not_drawn() -> None:
    angles = np.arange(8) * 2 * math.pi / 8
    centres = 2.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    inside = png_to_array(scatter_png(np.array([[2.9, 0.0]]), centers=centres, size=120))
    outside = png_to_array(scatter_png(np.array([[3.5, 0.0]]), centers=centres, size=120))
    blue = lambda p: ((p[..., 2] > 100) & (p[..., 0] < 60)).sum()  # noqa: E731  generated points
    assert blue(inside) > 0
    assert blue(outside) == 0
    red_note = ((outside[..., 0] > 150) & (outside[..., 1] < 60)).sum()  # "1/1 outside" in red
    assert red_note > 0


def test_scatter_draws_real_points_faintly_behind() -> None:
    real = np.zeros((50, 2))
    fake = np.array([[1.0, 1.0]])
    pixels = png_to_array(scatter_png(fake, real=real, extent=2.0, size=100))
    faint = np.all(np.abs(pixels.astype(int) - (190, 200, 230)) < 3, axis=2)
    assert faint.any()


# ----------------------------------------------------------------------------- line_plot_png


def test_line_plot_draws_every_series_and_a_dashed_reference() -> None:
    steps = range(0, 1001, 50)
    series = {
        "loss_d": [(s, 1.0 - s / 2000) for s in steps],
        "loss_g": [(s, 0.2 + s / 1000) for s in steps],
        "d_acc": [(s, float("nan") if s == 500 else 0.6) for s in steps],  # a hole, not a crash
    }
    data = line_plot_png(series, "losses", size=(640, 320), hlines=[0.5])
    pixels = png_to_array(data)
    assert pixels.shape == (320, 640, 3)
    for index in range(3):
        colour = np.array(PALETTE[index])
        assert (np.abs(pixels.astype(int) - colour).sum(axis=2) < 10).sum() > 50
    grey = np.all(pixels == (110, 110, 110), axis=2)
    rows = np.nonzero(grey.sum(axis=1) > 100)[0]
    assert len(rows) >= 1  # the dashed line spans the plot ...
    line = grey[rows[0]]
    assert line.sum() < 0.75 * np.ptp(np.nonzero(line)[0]) + 1  # ... with gaps: dashed


def test_line_plot_handles_empty_and_constant_series() -> None:
    assert png_to_array(line_plot_png({}, "nothing yet")).shape == (400, 800, 3)
    assert png_to_array(line_plot_png({"x": [(5, 1.0)]}, "one point", y_range=(0, 2))).shape == (400, 800, 3)


def test_ticks_are_round_numbers() -> None:
    assert nice_ticks(0, 12000) == [0, 2000, 4000, 6000, 8000, 10000, 12000]
    assert format_ticks(nice_ticks(0, 12000)) == ["0", "2k", "4k", "6k", "8k", "10k", "12k"]
    assert format_ticks(nice_ticks(-0.07, 1.43)) == ["0.00", "0.25", "0.50", "0.75", "1.00", "1.25"]
    assert format_ticks(nice_ticks(-3, 3)) == ["-3", "-2", "-1", "0", "1", "2", "3"]


# ----------------------------------------------------------------------------- GIF and decoding


def test_gif_has_every_frame_with_its_duration() -> None:
    frames = [grid_png(np.full((4, 1, 8, 8), v, np.float32), nrow=2) for v in (-1.0, 0.0, 1.0)]
    frames.append(grid_png(np.zeros((1, 1, 5, 5)), nrow=1))  # another size: resized to the first
    data = gif_bytes(frames, duration_ms=150)
    with Image.open(io.BytesIO(data)) as gif:
        assert gif.format == "GIF" and gif.n_frames == 4
        assert gif.info["duration"] == 150 and gif.info["loop"] == 0
        sizes, greys = set(), []
        for index in range(gif.n_frames):
            gif.seek(index)
            frame = np.asarray(gif.convert("L"))
            sizes.add(frame.shape)
            greys.append(int(frame[5, 5]))
    assert sizes == {(22, 22)}
    assert greys[0] < greys[1] < greys[2]  # black, grey, white digits in order


def test_gif_needs_frames() -> None:
    with pytest.raises(ValueError):
        gif_bytes([])


def test_png_round_trip() -> None:
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array, "RGB").save(buffer, format="PNG")
    assert np.array_equal(png_to_array(buffer.getvalue()), array)
