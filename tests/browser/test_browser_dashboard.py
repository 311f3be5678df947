"""The dashboard in a real headless Chromium against `ganforge up` (API + a real worker): submit a
small ring8 job from the submit page, watch it succeed on its page, read the charts, move the
timeline, download the GIF, generate and interpolate; a spec error shows next to its field; an
unknown job is a "not found" page; a stored API key is sent as a Bearer token.

Screenshots go to $GANFORGE_TEST_ARTIFACTS/browser (default tests/.artifacts/browser).
"""

from __future__ import annotations

import io
import json
import re
import secrets

from PIL import Image

# Small enough to train in seconds on a busy 2-core machine, big enough to log 15 points,
# save 5 grids and 2 checkpoints.
STEPS, LOG_EVERY, SAMPLE_EVERY, CHECKPOINT_EVERY = 300, 20, 60, 150


def small_ring8(doc: dict) -> dict:
    doc = json.loads(json.dumps(doc))
    doc["name"] = "ring8-browser"
    doc["model"].update(hidden_g=[64, 64], hidden_d=[64, 64])
    doc["train"].update(steps=STEPS, batch_size=64)
    doc.update(log_every=LOG_EVERY, sample_every=SAMPLE_EVERY, checkpoint_every=CHECKPOINT_EVERY, device="cpu",
               eval={"n_samples": 500}, sampling={"rejection": "discriminator"})
    return doc


def choose_preset(page, service: str, name: str) -> dict:
    page.goto(f"{service}/submit")
    page.wait_for_selector(f"#preset option[value='{name}']", state="attached")
    page.select_option("#preset", name)
    return json.loads(page.input_value("#spec"))


def image_loaded(page, selector: str) -> None:
    page.wait_for_function(
        "s => { const i = document.querySelector(s); return i && !i.hidden && i.complete && i.naturalWidth > 0; }",
        arg=selector)


def test_submit_watch_charts_timeline_generate(page, service, artifacts_dir, tmp_path):
    preset = choose_preset(page, service, "ring8")
    assert preset["dataset"]["name"] == "ring8"  # the editor is prefilled from presets/ring8.json
    page.fill("#spec", json.dumps(small_ring8(preset), indent=2))
    page.screenshot(path=artifacts_dir / "01-submit.png", full_page=True)
    page.click("#submit")
    page.wait_for_url(re.compile(r"/jobs/[0-9a-f]{32}$"))
    job_id = page.url.rsplit("/", 1)[1]

    # The status changes on the page by itself (polling): first queued or running, then succeeded.
    page.wait_for_selector("#job-status[data-status]")
    first = page.get_attribute("#job-status", "data-status")
    assert first in ("queued", "running"), first
    page.wait_for_selector("#job-status[data-status='succeeded']", timeout=120_000)
    page.wait_for_selector("#job[data-loaded='succeeded']")  # the last refresh drew everything
    assert "succeeded" in page.inner_text("#events")

    # Charts: uPlot canvases holding every logged point (15 = 300 / 20).
    expected = STEPS // LOG_EVERY
    for chart in ("chart-loss", "chart-dprob", "chart-acc", "chart-speed"):
        assert page.get_attribute(f"#{chart}", "data-points") == str(expected), chart
        assert page.locator(f"#{chart} canvas").count() >= 1, chart
    assert "50 %" in page.inner_text("#chart-acc")  # the 50 % line is a series of its own

    # Evaluation of the 2-D mixture: modes out of 8, % high quality.
    assert re.fullmatch(r"\d / 8", page.inner_text("#evaluation .figure[data-key='modes'] .figure-value"))
    assert page.inner_text("#evaluation .figure[data-key='hq_percent'] .figure-value").endswith("%")
    # The job samples through discriminator rejection: the share kept and the raw generator's HQ.
    for key in ("rejection_acceptance", "raw_hq_percent"):
        assert page.inner_text(f"#evaluation .figure[data-key='{key}'] .figure-value").endswith("%"), key

    # Timeline: at the newest grid; sliding to the first loads another picture.
    grids = STEPS // SAMPLE_EVERY
    assert page.get_attribute("#timeline-slider", "max") == str(grids - 1)
    image_loaded(page, "#timeline-image")
    assert page.get_attribute("#timeline-image", "data-step") == str(STEPS)
    last_src = page.get_attribute("#timeline-image", "src")
    last_shot = page.locator("#timeline-image").screenshot()
    page.screenshot(path=artifacts_dir / "02-job-succeeded.png", full_page=True)
    page.eval_on_selector("#timeline-slider", "s => { s.value = '0'; s.dispatchEvent(new Event('input')); }")
    page.wait_for_selector(f"#timeline-image[data-step='{SAMPLE_EVERY}']")
    image_loaded(page, "#timeline-image")
    assert page.get_attribute("#timeline-image", "src") != last_src
    assert page.locator("#timeline-image").screenshot() != last_shot  # a different grid is shown
    assert f"step {SAMPLE_EVERY}" in page.inner_text("#timeline-step")
    page.locator("#timeline-image").screenshot(path=artifacts_dir / "03-timeline-first.png")

    # The animated GIF of the timeline, downloaded through the API.
    with page.expect_download() as info:
        page.click("#gif-download")
    gif = Image.open(io.BytesIO(open(info.value.path(), "rb").read()))
    assert gif.format == "GIF" and gif.n_frames == grids

    # Checkpoints with working download links (signed URLs).
    steps = page.eval_on_selector_all("#checkpoints a", "as => as.map(a => a.dataset.step)")
    assert steps == [str(CHECKPOINT_EVERY), str(STEPS), "final"]
    href = page.get_attribute("#checkpoints a[data-step='final']", "href")
    assert page.request.get(href).status == 200

    # Generate panel: a grid from a chosen checkpoint, then an interpolation strip.
    page.select_option("#gen-checkpoint", str(CHECKPOINT_EVERY))
    page.fill("#gen-n", "200")
    page.fill("#gen-seed", "7")
    with page.expect_response(lambda r: r.url.endswith(f"/v1/jobs/{job_id}/generate")) as generated:
        page.click("#generate")
    assert generated.value.status == 200 and generated.value.headers["x-checkpoint-step"] == str(CHECKPOINT_EVERY)
    assert json.loads(generated.value.request.post_data) == {"n": 200, "seed": 7, "checkpoint": CHECKPOINT_EVERY}
    image_loaded(page, "#generate-image")
    page.fill("#interp-steps", "6")
    with page.expect_response(lambda r: r.url.endswith(f"/v1/jobs/{job_id}/interpolate")) as interpolated:
        page.click("#interpolate")
    assert interpolated.value.status == 200
    image_loaded(page, "#interp-image")
    # An out-of-range n is the API's 422, shown in the panel.
    page.fill("#gen-n", "0")
    page.click("#generate")
    page.wait_for_selector("#generate-error:not([hidden])")
    assert "n" in page.inner_text("#generate-error")
    page.screenshot(path=artifacts_dir / "04-generate.png", full_page=True)

    # The jobs page lists it as succeeded.
    page.goto(service + "/")
    row = page.locator(f"tr[data-job-id='{job_id}']")
    row.wait_for()
    assert row.locator(".badge").inner_text() == "succeeded"
    page.screenshot(path=artifacts_dir / "05-jobs.png", full_page=True)
    assert page.js_errors == []


def test_spec_errors_appear_next_to_their_field(page, service, artifacts_dir):
    doc = small_ring8(choose_preset(page, service, "ring8"))
    doc["train"]["batch_size"] = 0
    doc["model"]["colour"] = "red"
    text = json.dumps(doc, indent=2)
    lines = text.split("\n")
    batch_line = next(i for i, line in enumerate(lines, 1) if '"batch_size"' in line)
    colour_line = next(i for i, line in enumerate(lines, 1) if '"colour"' in line)
    page.fill("#spec", text)
    with page.expect_response(lambda r: r.url.endswith("/v1/jobs")) as response:
        page.click("#submit")
    assert response.value.status == 422
    problems = {d["field"]: d["problem"] for d in response.value.json()["error"]["details"]}
    assert set(problems) == {"train.batch_size", "model.colour"}
    note = page.locator(".note[data-field~='train.batch_size']")
    note.wait_for()
    assert note.get_attribute("data-line") == str(batch_line)
    assert problems["train.batch_size"] in note.inner_text()
    # Beside the line it is about: level with that line's number in the gutter, which is marked.
    gutter_line = page.locator(f"#spec-gutter [data-line='{batch_line}']")
    assert "error-line" in gutter_line.get_attribute("class")
    assert abs(note.bounding_box()["y"] - gutter_line.bounding_box()["y"]) <= 2
    assert page.locator(".note[data-field~='model.colour']").get_attribute("data-line") == str(colour_line)
    assert problems["model.colour"] in page.inner_text("#spec-error-list li[data-field='model.colour']")
    page.screenshot(path=artifacts_dir / "06-spec-error.png", full_page=True)
    assert page.url.endswith("/submit")  # nothing was submitted

    # Broken JSON is caught in the browser, at its line.
    page.fill("#spec", '{\n  "name": "x",\n  oops\n}')
    page.click("#submit")
    page.wait_for_selector(".note[data-line='3']")
    assert page.js_errors == []


def test_unknown_job_is_not_found_and_the_api_key_is_sent(page, service, artifacts_dir):
    response = page.goto(f"{service}/jobs/{secrets.token_hex(16)}")
    assert response.status == 200  # the shell; the API's 404 decides
    page.wait_for_selector("#not-found:not([hidden])")
    assert page.is_hidden("#job-view")
    assert "Job not found" in page.inner_text("#not-found")
    page.screenshot(path=artifacts_dir / "07-not-found.png", full_page=True)
    assert page.goto(f"{service}/jobs/not-an-id").status == 404
    page.wait_for_selector("#not-found:not([hidden])")

    # No key stored: no Authorization header. A saved key is sent as a Bearer token; cleared, none.
    page.goto(service + "/")
    page.wait_for_selector("#jobs-body tr")
    with page.expect_request(lambda r: "/v1/jobs?" in r.url) as request:
        page.select_option("#status-filter", "failed")
    assert "authorization" not in request.value.headers
    page.fill("#api-key", "gf_test_key")
    with page.expect_request(lambda r: "/v1/jobs?" in r.url) as request:
        page.click("#api-key-form button[type=submit]")
    assert request.value.headers["authorization"] == "Bearer gf_test_key"
    page.reload()
    with page.expect_request(lambda r: "/v1/jobs?" in r.url) as request:
        page.select_option("#status-filter", "succeeded")
    assert request.value.headers["authorization"] == "Bearer gf_test_key"  # kept for the tab
    with page.expect_request(lambda r: "/v1/jobs?" in r.url) as request:
        page.click("#api-key-clear")
    assert "authorization" not in request.value.headers
    assert page.js_errors == []


def test_cancel_button_and_paging_through_the_jobs(page, service, artifacts_dir):
    from ganforge.client import Client

    client = Client(service)
    spec = small_ring8({"dataset": {"name": "ring8"}, "model": {}, "train": {}})
    long = client.submit({**spec, "name": "long-one", "train": {"steps": 100_000, "batch_size": 64}})
    queued = client.submit({**spec, "name": "to-page"})
    client.cancel(queued["id"])

    page.goto(f"{service}/jobs/{long['id']}")
    page.wait_for_selector("#cancel:not([hidden])")
    with page.expect_response(lambda r: r.url.endswith(f"/v1/jobs/{long['id']}/cancel")) as cancelled:
        page.click("#cancel")
    assert cancelled.value.status == 200
    page.wait_for_selector("#job-status[data-status='cancelled']", timeout=60_000)
    assert page.is_hidden("#cancel")
    assert "cancelled" in page.inner_text("#events")

    # One job a page: newer → older → back, each page a different job.
    page.goto(f"{service}/?limit=1")
    first = page.locator("#jobs-body tr[data-job-id]")
    first.wait_for()
    first_id = first.get_attribute("data-job-id")
    assert first_id == queued["id"]  # newest first
    page.click("#page-next")
    page.wait_for_function("id => { const r = document.querySelector('#jobs-body tr[data-job-id]');"
                           " return r && r.dataset.jobId !== id; }", arg=first_id)
    assert page.get_attribute("#jobs-body tr[data-job-id]", "data-job-id") == long["id"]
    assert page.is_enabled("#page-prev")
    page.click("#page-prev")
    page.wait_for_selector(f"#jobs-body tr[data-job-id='{first_id}']")
    # The status filter keeps to one status.
    page.select_option("#status-filter", "cancelled")
    page.wait_for_function("() => location.search.includes('status=cancelled')")
    page.wait_for_selector(f"#jobs-body tr[data-job-id='{queued['id']}']")
    assert set(page.eval_on_selector_all("#jobs-body .badge", "bs => bs.map(b => b.dataset.status)")) == {"cancelled"}
    page.screenshot(path=artifacts_dir / "08-jobs-cancelled.png", full_page=True)
    assert page.js_errors == []
