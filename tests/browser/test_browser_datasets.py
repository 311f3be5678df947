"""Uploaded datasets in the dashboard, in a real headless Chromium against `ganforge up` (API and a
real worker): the submit page uploads an archive made here, lists it with its figures, refuses a
zip bomb with the reason, and puts the upload in the spec; a job trained on it shows what the
worker decoded (images, skipped, classes, size, decode cache miss, then hit for a second job);
with keys required, another tenant's upload is neither listed nor usable.

Screenshots go to $GANFORGE_TEST_ARTIFACTS/browser (default tests/.artifacts/browser).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from upload_archives import image_members, zip_bomb, zip_bytes  # noqa: E402

from tests.browser.test_browser_tenants import secured, use_key  # noqa: E402,F401 (secured: a fixture)


def upload_on_submit_page(page, service: str, path: Path):
    page.goto(f"{service}/submit")
    page.wait_for_selector("#dataset-pick option", state="attached")
    page.set_input_files("#upload-file", str(path))
    with page.expect_response(lambda r: r.url.split("?")[0].endswith("/v1/datasets") and r.request.method == "POST") as answer:
        page.click("#upload")
    return answer.value


def uploaded_id(answer) -> str:
    # From the Location header: Chromium may no longer hold the body of a response to an upload.
    return answer.headers["location"].rsplit("/", 1)[1]


def test_upload_pick_and_use_an_archive(page, service, artifacts_dir, tmp_path):
    archive = tmp_path / "shapes.zip"
    archive.write_bytes(zip_bytes(image_members()))
    answer = upload_on_submit_page(page, service, archive)
    assert answer.status == 201
    created = {"id": uploaded_id(answer)}
    # Listed and picked at once, with what the service found in it.
    page.wait_for_function("id => document.querySelector('#dataset-pick').value === id", arg=created["id"])
    info = page.inner_text("#dataset-info")
    assert "shapes: 9 images, 1 skipped of 10 files, 3 classes (blue, green, red)" in info and created["id"] in info
    page.screenshot(path=artifacts_dir / "datasets-01-uploaded.png", full_page=True)

    page.click("#dataset-use")
    spec = json.loads(page.input_value("#spec"))
    assert spec["dataset"] == {"name": "image_folder", "upload_id": created["id"], "image_size": 64, "channels": 3,
                               "labels": "none"}
    assert spec["model"]["arch"] == "dcgan"  # from presets/dcgan-64-folder.json: the ring8 model would not fit
    # A refused archive: the service's reason on the page, nothing added to the list.
    bomb = tmp_path / "bomb.zip"
    bomb.write_bytes(zip_bomb(16))
    assert upload_on_submit_page(page, service, bomb).status == 422
    error = page.locator("#upload-error")
    error.wait_for()
    assert "[zip_bomb]" in error.inner_text()
    page.wait_for_selector(f"#dataset-pick option[value='{created['id']}']", state="attached")
    assert page.locator("#dataset-pick option[value]:not([value=''])").count() == 1
    # Not an archive by its name: refused in the page, nothing sent.
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    page.set_input_files("#upload-file", str(notes))
    page.click("#upload")
    assert "not a .zip, .tar, .tar.gz or .tgz archive" in page.inner_text("#upload-error")
    page.screenshot(path=artifacts_dir / "datasets-02-refused.png", full_page=True)
    assert page.js_errors == []


def _train_on(page, service: str, upload_id: str) -> str:
    page.goto(f"{service}/submit")
    page.wait_for_selector(f"#dataset-pick option[value='{upload_id}']", state="attached")
    page.select_option("#dataset-pick", upload_id)
    page.click("#dataset-use")
    spec = json.loads(page.input_value("#spec"))
    spec["dataset"]["image_size"] = 32
    spec.update(name="shapes-browser", device="cpu", log_every=2, sample_every=4, checkpoint_every=4,
                eval={"at_end": False})
    spec["train"] = {"steps": 4, "batch_size": 8}
    page.fill("#spec", json.dumps(spec, indent=2))
    page.click("#submit")
    page.wait_for_url(re.compile(r"/jobs/[0-9a-f]{32}$"))
    page.wait_for_selector("#job-status[data-status='succeeded']", timeout=180_000)
    page.wait_for_selector("#dataset-card:not([hidden])")
    return page.url.rsplit("/", 1)[1]


def test_a_job_on_an_upload_shows_its_dataset_summary(page, service, artifacts_dir, tmp_path):
    archive = tmp_path / "train.zip"
    archive.write_bytes(zip_bytes(image_members(per_class=4)))
    created = {"id": uploaded_id(upload_on_submit_page(page, service, archive))}

    _train_on(page, service, created["id"])
    value = lambda key: page.inner_text(f"#dataset-summary .figure[data-key='{key}'] .figure-value")  # noqa: E731
    assert (value("images"), value("skipped"), value("files")) == ("12", "1", "13")
    assert value("cache").startswith("miss") and value("image_size") == "32 px, RGB"
    assert value("upload_id") == created["id"][:8]
    assert page.inner_text("#dataset-classes") == "3 class folders, not used as labels: blue, green, red"
    page.screenshot(path=artifacts_dir / "datasets-03-job-summary.png", full_page=True)

    _train_on(page, service, created["id"])  # the same archive again: decoded from the cache
    assert value("cache") == "hit"
    assert page.js_errors == []


def test_another_tenants_upload_is_neither_listed_nor_usable(page, secured, artifacts_dir, tmp_path):
    url, key_a, key_b = secured
    archive = tmp_path / "mine.zip"
    archive.write_bytes(zip_bytes(image_members(per_class=1, corrupt=0)))
    use_key(page, url, key_a)
    answer = upload_on_submit_page(page, url, archive)
    assert answer.status == 201
    upload_id = uploaded_id(answer)
    page.wait_for_function("id => document.querySelector('#dataset-pick').value === id", arg=upload_id)

    use_key(page, url, key_b)
    page.goto(f"{url}/submit")
    page.wait_for_selector("#dataset-pick option[value='']:text('none yet')", state="attached")
    assert page.locator(f"#dataset-pick option[value='{upload_id}']").count() == 0
    # Named by hand in tenant b's spec: the API's 422, shown beside dataset.upload_id.
    spec = {"name": "not-mine", "dataset": {"name": "image_folder", "upload_id": upload_id, "image_size": 32},
            "model": {"arch": "dcgan"}, "train": {"steps": 4, "batch_size": 8}}
    page.fill("#spec", json.dumps(spec, indent=2))
    with page.expect_response(lambda r: r.url.endswith("/v1/jobs")) as response:
        page.click("#submit")
    assert response.value.status == 422
    page.wait_for_selector(".note[data-field~='dataset.upload_id']")
    page.screenshot(path=artifacts_dir / "datasets-04-other-tenant.png", full_page=True)
    assert page.url.endswith("/submit") and page.js_errors == []
