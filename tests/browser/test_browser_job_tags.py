"""The jobs page shows each job's tags and filters the list by name search, by tag (typed, or a
click on a tag) and by status, with the filters kept in the page's URL; a bad tag shows the API's
422 message. In a real headless Chromium against `ganforge up` (see conftest.py)."""

from __future__ import annotations

RING = {"dataset": {"name": "ring8"}, "model": {"latent_dim": 2, "hidden_g": [16], "hidden_d": [16]},
        "train": {"steps": 5, "batch_size": 16}, "device": "cpu", "eval": {"at_end": False}}


def shown(page) -> list[str]:
    return page.eval_on_selector_all("#jobs-body tr[data-job-id] td:first-child a", "as => as.map(a => a.textContent)")


def wait_shown(page, names: list[str]) -> None:
    page.wait_for_function(
        "want => JSON.stringify([...document.querySelectorAll('#jobs-body tr[data-job-id] td:first-child a')]"
        ".map(a => a.textContent)) === JSON.stringify(want)", arg=names)


def test_tags_shown_and_the_list_filtered_by_name_and_tag(page, service, artifacts_dir):
    from ganforge.client import Client

    client = Client(service)
    for name, tags in [("Ring baseline", ["ring", "baseline"]), ("ring wide", ["ring", "wide"]),
                       ("mnist dcgan", ["mnist", "baseline"])]:
        client.submit({**RING, "name": name, "tags": tags})

    page.goto(service + "/")
    wait_shown(page, ["mnist dcgan", "ring wide", "Ring baseline"])
    row = page.locator("#jobs-body tr[data-job-id]", has_text="ring wide")
    assert row.locator("button.tag").all_inner_texts() == ["ring", "wide"]

    page.fill("#name-search", "RING")  # any case
    wait_shown(page, ["ring wide", "Ring baseline"])
    assert "q=RING" in page.url
    page.fill("#name-search", "")
    wait_shown(page, ["mnist dcgan", "ring wide", "Ring baseline"])

    page.locator("#jobs-body tr[data-job-id]", has_text="mnist dcgan").locator("button.tag[data-tag='baseline']").click()
    wait_shown(page, ["mnist dcgan", "Ring baseline"])
    assert page.input_value("#tag-filter") == "baseline" and "tag=baseline" in page.url
    page.fill("#name-search", "ring")  # both filters at once
    wait_shown(page, ["Ring baseline"])
    page.screenshot(path=artifacts_dir / "09-jobs-filtered-by-tag-and-name.png", full_page=True)

    page.reload()  # the filters live in the URL
    wait_shown(page, ["Ring baseline"])
    assert (page.input_value("#name-search"), page.input_value("#tag-filter")) == ("ring", "baseline")

    page.fill("#tag-filter", "not a tag")
    page.wait_for_selector("#jobs-error:not([hidden])")
    assert "tag" in page.inner_text("#jobs-error")
    assert page.js_errors == []


def test_the_job_page_shows_the_labels_and_downloads_the_bundle(page, service, tmp_path):
    import io
    import zipfile

    from ganforge.client import Client

    client = Client(service)
    job = client.submit({**RING, "name": "bundle me", "tags": ["zip"], "notes": "a note\non two lines"})
    client.wait(job, timeout=120)
    page.goto(f"{service}/jobs/{job.id}")
    page.wait_for_selector("#job-view:not([hidden])")
    assert page.inner_text("#job-tags") == "zip" and page.inner_text("#job-notes") == "a note\non two lines"
    with page.expect_download() as download:
        page.click("#download-bundle")
    assert download.value.suggested_filename == f"bundle-me-{job.id[:8]}.zip"
    path = tmp_path / "bundle.zip"
    download.value.save_as(path)
    names = zipfile.ZipFile(io.BytesIO(path.read_bytes())).namelist()
    assert names[:4] == ["job.json", "spec.json", "metrics.csv", "metrics.jsonl"] and "generator.pt" in names
    assert page.is_hidden("#job-error") and page.js_errors == []
    page.click("#job-tags a.tag")  # a tag leads to the jobs that have it
    page.wait_for_selector(f"#jobs-body tr[data-job-id='{job.id}']")
    assert page.input_value("#tag-filter") == "zip"
