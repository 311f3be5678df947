"""What the dashboard serves through Flask's test client: its pages and assets, /v1/presets,
the timeline GIF and the interpolation strip (the browser itself is tested in tests/browser)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ganforge.api.presets import FIRST, PRESETS_DIR, load_presets
from gan_core.images import grid_png
from gan_core.spec import JobSpec
from ganforge.jobs.storage import checkpoint_key, sample_key
from test_api import PNG_MAGIC, add_artifact, assert_envelope, fields, running_job, trained  # noqa: F401


# ---- pages -------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/", "/submit", "/jobs/" + "a" * 32, "/sweeps", "/sweeps/" + "c" * 32])
def test_pages_are_html_shells_whose_assets_are_served(api, path):
    response = api.client.get(path)
    assert response.status_code == 200 and response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
    assert any(a.endswith("dashboard.js") for a in assets) and any(a.endswith("dashboard.css") for a in assets)
    for asset in assets:  # nothing from a CDN: every script and stylesheet is ours
        assert api.client.get(asset).status_code == 200, asset
    assert not re.search(r'(?:src|href)="(?:https?:)?//', html)


def test_job_page_carries_the_id_and_a_malformed_id_is_404(api):
    job_id = "b" * 32
    html = api.client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert f'data-job-id="{job_id}"' in html and "vendor/uPlot.iife.min.js" in html
    response = api.client.get('/jobs/"><script>x')
    assert response.status_code == 404
    assert "<script>x" not in response.get_data(as_text=True)  # escaped by Jinja
    sweep_id = "d" * 32
    html = api.client.get(f"/sweeps/{sweep_id}").get_data(as_text=True)
    assert f'data-sweep-id="{sweep_id}"' in html and "vendor/uPlot.iife.min.js" in html
    assert api.client.get("/sweeps/nope").status_code == 404


def test_the_vendored_chart_library_comes_with_its_licence():
    vendor = Path(__file__).resolve().parents[2] / "api" / "static" / "vendor"
    assert "uPlot" in (vendor / "uPlot.iife.min.js").read_text()[:200]
    assert "MIT License" in (vendor / "uPlot.LICENSE").read_text()
    assert re.match(r"uplot \d+\.\d+\.\d+", (vendor / "VERSIONS").read_text())


# ---- presets -----------------------------------------------------------------------------------
def test_presets_lists_every_preset_file_with_the_common_ones_first(api):
    items = api.client.get("/v1/presets").get_json()["items"]
    names = [item["name"] for item in items]
    assert sorted(names) == sorted(p.stem for p in PRESETS_DIR.glob("*.json"))
    assert names[: len(FIRST)] == list(FIRST)
    for item in items:
        JobSpec.model_validate(item["spec"])  # each one submits as it is


def test_an_unreadable_preset_is_left_out(tmp_path):
    (tmp_path / "good.json").write_text(json.dumps({"name": "g"}))
    (tmp_path / "broken.json").write_text("{not json")
    assert load_presets(tmp_path) == [{"name": "good", "spec": {"name": "g"}}]
    assert load_presets(tmp_path / "missing") == []


# ---- the timeline GIF --------------------------------------------------------------------------
def _grid(step: int) -> bytes:
    rng = np.random.default_rng(step)
    return grid_png(rng.uniform(-1, 1, size=(4, 1, 8, 8)).astype(np.float32), nrow=2)


def test_samples_gif_has_one_frame_per_grid_bounded_and_revalidates(api):
    job_id, token = running_job(api.db)
    gif_url = f"/v1/jobs/{job_id}/samples.gif"
    assert_envelope(api.client.get(gif_url), 409, "no_samples")
    steps = list(range(100, 1100, 100))  # 10 grids
    for step in steps:
        add_artifact(api, job_id, token, "sample_grid", step, sample_key(job_id, step), _grid(step), "image/png")

    response = api.client.get(gif_url)
    assert response.status_code == 200 and response.mimetype == "image/gif"
    gif = Image.open(io.BytesIO(response.data))
    assert gif.n_frames == 10
    assert response.headers["X-Frame-Steps"] == ",".join(map(str, steps))
    assert "attachment" in response.headers["Content-Disposition"]
    frames = []
    for i in range(gif.n_frames):
        gif.seek(i)
        frames.append(np.asarray(gif.convert("L")))
    assert not np.array_equal(frames[0], frames[-1])  # the frames are the grids, in order

    few = api.client.get(gif_url + "?max_frames=4&frame_ms=100")
    assert Image.open(io.BytesIO(few.data)).n_frames == 4
    picked = [int(s) for s in few.headers["X-Frame-Steps"].split(",")]
    assert picked[0] == 100 and picked[-1] == 1000 and picked == sorted(set(picked))

    etag = response.headers["ETag"]
    assert api.client.get(gif_url, headers={"If-None-Match": etag}).status_code == 304
    assert few.headers["ETag"] != etag

    for query, field in (("?max_frames=1", "max_frames"), ("?max_frames=121", "max_frames"),
                         ("?frame_ms=5", "frame_ms"), ("?frame_ms=x", "frame_ms")):
        assert fields(assert_envelope(api.client.get(gif_url + query), 422, "invalid_request")) == {field}
    assert_envelope(api.client.get(f"/v1/jobs/{'0' * 32}/samples.gif"), 404, "not_found")
    assert_envelope(api.client.get("/v1/jobs/nope/samples.gif"), 404, "not_found")


def test_samples_gif_of_a_grid_that_is_not_an_image_is_409(api):
    job_id, token = running_job(api.db)
    add_artifact(api, job_id, token, "sample_grid", 1, sample_key(job_id, 1), b"not a png", "image/png")
    assert_envelope(api.client.get(f"/v1/jobs/{job_id}/samples.gif"), 409, "samples_unusable")


# ---- interpolation -----------------------------------------------------------------------------
def test_interpolate_draws_the_path_between_two_seeds(api, trained):
    job_id, token = running_job(api.db)
    post = lambda **body: api.client.post(f"/v1/jobs/{job_id}/interpolate", json=body)  # noqa: E731
    assert_envelope(post(), 409, "no_checkpoint")
    add_artifact(api, job_id, token, "checkpoint", 3, checkpoint_key(job_id, 3), trained["checkpoint"])

    strip = post(seed_a=1, seed_b=2, steps=5)
    assert strip.status_code == 200, strip.get_data(as_text=True)
    assert strip.mimetype == "image/png" and strip.data.startswith(PNG_MAGIC)
    assert strip.headers["X-Checkpoint-Step"] == "3"
    assert post(seed_a=1, seed_b=2, steps=5).data == strip.data  # deterministic
    assert post(seed_a=1, seed_b=3, steps=5).data != strip.data
    assert post(checkpoint=3).status_code == 200

    for body, field in (({"steps": 1}, "steps"), ({"steps": 65}, "steps"), ({"seed_a": -1}, "seed_a"),
                        ({"seed_b": "2"}, "seed_b"), ({"label": 1}, "label"), ({"checkpoint": 9}, "checkpoint"),
                        ({"colour": 1}, "colour")):
        error = assert_envelope(post(**body), 422, "invalid_request")
        assert field in fields(error), (body, error)
    assert_envelope(api.client.post(f"/v1/jobs/{job_id}/interpolate", data="[]", content_type="application/json"),
                    422, "invalid_request")
    assert_envelope(api.client.post(f"/v1/jobs/{'0' * 32}/interpolate", json={}), 404, "not_found")


@pytest.fixture(scope="module")
def conditional_checkpoint(tmp_path_factory) -> bytes:
    """A cGAN on 64 random 8×8 images of 3 classes, trained 2 steps."""
    from gan_core import checkpoint as ckpt
    from gan_core.trainer import Trainer

    path = tmp_path_factory.mktemp("npz") / "tiny.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.integers(0, 256, (64, 8, 8), dtype=np.uint8), y=np.arange(64) % 3)
    spec = JobSpec.model_validate({
        "name": "tiny-cgan", "dataset": {"name": "npz", "path": str(path)},
        "model": {"arch": "mlp", "latent_dim": 4, "hidden_g": [8], "hidden_d": [8], "conditioning": "cgan"},
        "train": {"steps": 2, "batch_size": 16}, "eval": {"at_end": False}, "device": "cpu"})
    trainer = Trainer(spec)
    trainer.run(2)
    return ckpt.to_bytes(trainer.checkpoint())


def test_interpolate_a_conditional_generator_is_one_row_of_one_class(api, conditional_checkpoint):
    from gan_core.images import png_to_array

    job_id, token = running_job(api.db)
    add_artifact(api, job_id, token, "checkpoint", 2, checkpoint_key(job_id, 2), conditional_checkpoint)
    post = lambda **body: api.client.post(f"/v1/jobs/{job_id}/interpolate", json=body)  # noqa: E731
    strip = post(seed_a=0, seed_b=1, steps=5, label=2)
    assert strip.status_code == 200, strip.get_data(as_text=True)
    # grid_png's layout with 2 px padding: 5 images of 8 px in one row.
    assert png_to_array(strip.data).shape[:2] == (8 + 2 * 2, 5 * (8 + 2) + 2)
    assert post(seed_a=0, seed_b=1, steps=5).data == post(seed_a=0, seed_b=1, steps=5, label=0).data  # class 0 by default
    assert post(seed_a=0, seed_b=1, steps=5, label=1).data != strip.data
    for label in (3, -1):
        assert fields(assert_envelope(post(label=label), 422, "invalid_request")) == {"label"}


# ---- downsampled metric series (the charts ask for max_points) ----------------------------------
def test_metrics_downsampled_in_the_database_pick_what_downsample_picks(api):
    from ganforge.api.read_model import downsample
    from ganforge.jobs import lifecycle

    job_id, token = running_job(api.db)
    rng = np.random.default_rng(1)
    series = {
        "regular": {step: float(step) / 7 for step in range(5, 5005, 5)},  # 1000 points, every 5 steps
        "gappy": {int(s): float(s) for s in np.sort(rng.choice(np.arange(1, 5001), 700, replace=False))},
        "short": {step: -float(step) for step in range(100, 3100, 100)},  # 30 points
    }
    # As many points over the same range as a progression of stride 2, but step 1000 is 1001.
    series["shifted"] = {step: float(step) for step in [*range(0, 1000, 2), 1001, *range(1002, 2002, 2)]}
    by_step: dict[int, dict[str, float]] = {}
    for name, points in series.items():
        for step, value in points.items():
            by_step.setdefault(step, {})[name] = value
    lifecycle.record_metrics(api.db, job_id, token, sorted(by_step.items()), 60)

    for max_points in (2, 3, 7, 30, 100, 699, 700, 999, 1000, 5000):
        for since in (None, 1234):
            query = f"?max_points={max_points}" + (f"&since_step={since}" if since is not None else "")
            got = api.client.get(f"/v1/jobs/{job_id}/metrics{query}").get_json()["series"]
            assert set(got) == set(series)
            for name, points in series.items():
                steps = [s for s in sorted(points) if since is None or s > since]
                want_steps, want_values = downsample(steps, [points[s] for s in steps], max_points)
                assert got[name]["steps"] == want_steps, (name, max_points, since)
                assert got[name]["values"] == pytest.approx(want_values)
                assert len(want_steps) == min(max_points, len(steps))
