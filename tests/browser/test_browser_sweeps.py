"""The sweep pages in a real headless Chromium against `ganforge up` (API + a real worker): a small
grid sweep of ring8 runs to its end with ASHA pruning; its page shows the trials table (sorted by
a click on each column), the objective against each parameter, every trial's learning curve on
one chart with the pruned ones grey, and the best trial's latest grid; a trial's job page links
to its sweep, the jobs list shows the sweep; another tenant's sweep is "not found".

Screenshots go to $GANFORGE_TEST_ARTIFACTS/browser (default tests/.artifacts/browser).
"""

from __future__ import annotations

import re
import secrets
import time

import pytest

from ganforge.client import APIError, Client
from tests.browser.test_browser_tenants import secured, use_key  # noqa: F401 - a fixture and a helper

STEPS, EVAL_EVERY, SAMPLE_EVERY = 200, 50, 100
BASE = {"name": "ring8-sweep", "dataset": {"name": "ring8"},
        "model": {"latent_dim": 2, "hidden_g": [64, 64], "hidden_d": [64, 64]},
        "train": {"steps": STEPS, "batch_size": 64, "lr_d": 1e-3},
        "log_every": 50, "sample_every": SAMPLE_EVERY, "checkpoint_every": STEPS, "eval_every": EVAL_EVERY,
        "eval": {"n_samples": 500}, "device": "cpu"}
# One at a time, so ASHA judges each trial against the ones before it at each rung (rung 0 at step
# 50, then 100): the trials are seeded and run alone on the worker, so the same ones are pruned
# every run (in 200 steps these small nets barely start to learn: which ones does not matter here).
SWEEP = {"name": "ring8-browser-sweep", "base": BASE, "method": "grid", "max_parallel": 1, "seed": 3,
         "space": {"train.lr_g": {"type": "choice", "values": [2e-3, 1e-6]},
                   "train.seed": {"type": "int", "low": 0, "high": 1}},
         "objective": {"metric": "hq_percent", "direction": "maximize"},
         "early_stopping": {"method": "asha", "min_steps": EVAL_EVERY, "reduction_factor": 2}}
GREY = "rgb(192, 196, 204)"  # sweep.js's colour of a pruned trial


@pytest.fixture(scope="module")
def finished_sweep(service) -> dict:
    client = Client(service)
    sweep_id = client.submit_sweep(SWEEP)["id"]
    deadline = time.monotonic() + 300
    while (view := client.sweep(sweep_id))["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, view
        time.sleep(1.0)
    assert view["status"] == "succeeded", view
    return {"view": view, "trials": client.sweep_trials(sweep_id)["items"], "curves": client.sweep_curves(sweep_id)}


def column_values(page, key: str) -> list[str]:
    index = page.eval_on_selector_all("#trials-head th", "ths => ths.map(th => th.dataset.key)").index(key)
    return page.eval_on_selector_all("#trials-body tr", f"rs => rs.map(r => r.children[{index}].textContent)")


def test_the_sweep_page_shows_trials_curves_scatters_and_the_best_grid(page, service, finished_sweep, artifacts_dir):
    view, trials, curves = finished_sweep["view"], finished_sweep["trials"], finished_sweep["curves"]
    sweep_id = view["id"]
    assert len(trials) == 4 and view["counts"]["pruned"] >= 1, trials  # the fixture's sweep pruned a trial
    pruned = sorted(t["number"] for t in trials if t["status"] == "pruned")

    # The sweeps list links to the sweep's page.
    page.goto(f"{service}/sweeps")
    row = page.locator(f"tr[data-sweep-id='{sweep_id}']")
    row.wait_for()
    assert row.locator(".badge").inner_text() == "succeeded"
    page.screenshot(path=artifacts_dir / "sweeps-01-list.png", full_page=True)
    row.locator("a").click()
    page.wait_for_url(f"{service}/sweeps/{sweep_id}")
    page.wait_for_selector("#sweep[data-loaded='succeeded']")
    assert page.inner_text("#sweep-name") == SWEEP["name"]
    assert "4 of 4 trials ended" in page.inner_text("#sweep-progress-text")

    # The trials table: one row a trial, in number order, sortable by each column.
    assert page.eval_on_selector_all("#trials-body tr", "rs => rs.map(r => +r.dataset.number)") == [0, 1, 2, 3]
    assert [s for s in page.eval_on_selector_all("#trials-body tr", "rs => rs.map(r => r.dataset.status)")] == [
        t["status"] for t in trials]
    page.click("#trials-head th[data-key='objective']")  # maximize: best first, empty (pruned) last
    assert page.get_attribute("#trials-head th[data-key='objective']", "aria-sort") == "descending"
    succeeded = sorted((t["objective"] for t in trials if t["status"] == "succeeded"), reverse=True)
    shown = page.eval_on_selector_all("#trials-body tr", "rs => rs.map(r => r.children[2].dataset.value)")
    assert [float(v) for v in shown[:len(succeeded)]] == succeeded and set(shown[len(succeeded):]) <= {""}
    assert page.get_attribute("#trials-body tr:first-child", "data-number") == str(view["best_trial"]["number"])
    page.click("#trials-head th[data-key='objective']")
    assert page.get_attribute("#trials-head th[data-key='objective']", "aria-sort") == "ascending"
    shown = page.eval_on_selector_all("#trials-body tr", "rs => rs.map(r => r.children[2].dataset.value)")
    assert [float(v) for v in shown[:len(succeeded)]] == succeeded[::-1]
    page.click("#trials-head th[data-key='param:train.lr_g']")
    lr = [float(v) for v in column_values(page, "param:train.lr_g")]
    assert lr == sorted(lr) and lr[0] == 1e-6
    page.click("#trials-head th[data-key='status']")
    statuses = column_values(page, "status")
    assert statuses == sorted(statuses)
    page.click("#trials-head th[data-key='number']")
    assert column_values(page, "number") == ["0", "1", "2", "3"]

    # Learning curves: every trial's eval/hq_percent series on one chart, the pruned ones grey.
    chart = page.locator("#chart-curves")
    with_points = [c for c in curves["items"] if c["steps"]]
    assert chart.get_attribute("data-series") == str(len(with_points)) == "4"
    assert chart.get_attribute("data-points") == str(sum(len(c["steps"]) for c in with_points))
    assert chart.get_attribute("data-pruned") == ",".join(map(str, pruned))
    assert chart.locator("canvas").count() >= 1
    markers = page.eval_on_selector_all(
        "#chart-curves .u-legend tr.u-series", "rs => rs.map(r => [r.querySelector('.u-label').textContent,"
        " getComputedStyle(r.querySelector('.u-marker')).borderColor])")
    colours = {int(re.match(r"#(\d+)", label).group(1)): colour for label, colour in markers if label.startswith("#")}
    assert sorted(colours) == [0, 1, 2, 3]
    for number, colour in colours.items():
        assert (colour == GREY) == (number in pruned), (number, colour)

    # Objective against each parameter: one scatter a parameter, a point a succeeded trial.
    params = page.eval_on_selector_all("#scatters .scatter", "ns => ns.map(n => [n.dataset.param, n.dataset.points])")
    assert params == [["train.lr_g", str(len(succeeded))], ["train.seed", str(len(succeeded))]]
    assert page.locator("#scatters canvas").count() >= 2

    # The best trial: its link, its figure and its newest grid (the last of its sample grids).
    best = view["best_trial"]
    assert page.get_attribute("#best-link", "data-job-id") == best["job_id"]
    page.wait_for_function("() => { const i = document.querySelector('#best-grid');"
                           " return i && !i.hidden && i.complete && i.naturalWidth > 0; }")
    assert page.get_attribute("#best-grid", "data-step") == str(STEPS)
    page.screenshot(path=artifacts_dir / "sweeps-02-sweep.png", full_page=True)

    # A trial's job page links back to its sweep.
    page.click("#best-link")
    page.wait_for_selector("#job-sweep:not([hidden])")
    assert page.get_attribute("#job-sweep-link", "href") == f"/sweeps/{sweep_id}"
    page.click("#job-sweep-link")
    page.wait_for_selector("#sweep[data-loaded='succeeded']")

    # The jobs list shows which sweep each trial belongs to.
    page.goto(service + "/")
    link = page.locator(f"tr[data-job-id='{best['job_id']}'] a.sweep-link")
    link.wait_for()
    assert link.get_attribute("href") == f"/sweeps/{sweep_id}"
    page.screenshot(path=artifacts_dir / "sweeps-03-jobs.png", full_page=True)
    assert page.js_errors == []


def test_an_unknown_sweep_is_not_found(page, service):
    response = page.goto(f"{service}/sweeps/{secrets.token_hex(16)}")
    assert response.status == 200  # the shell; the API's 404 decides
    page.wait_for_selector("#not-found:not([hidden])")
    assert page.is_hidden("#sweep-view") and "Sweep not found" in page.inner_text("#not-found")
    assert page.goto(f"{service}/sweeps/not-an-id").status == 404
    page.wait_for_selector("#not-found:not([hidden])")
    assert page.js_errors == []


def test_another_tenants_sweep_is_not_found(page, secured, artifacts_dir):  # noqa: F811 - the imported fixture
    url, key_a, key_b = secured
    doc = {**SWEEP, "name": "tenant-a-sweep", "base": {**BASE, "train": {**BASE["train"], "steps": 60}, "eval_every": 20,
                                                         "sample_every": 60, "checkpoint_every": 60},
           "early_stopping": None}
    sweep_id = Client(url, api_key=key_a).submit_sweep(doc)["id"]
    with pytest.raises(APIError) as refused:
        Client(url, api_key=key_b).sweep(sweep_id)
    assert refused.value.status == 404

    use_key(page, url, key_b)
    page.goto(f"{url}/sweeps/{sweep_id}")
    page.wait_for_selector("#not-found:not([hidden])")
    assert page.is_hidden("#sweep-view")
    page.goto(f"{url}/sweeps")
    page.wait_for_selector("#sweeps-body tr")
    page.wait_for_load_state("networkidle")
    assert sweep_id not in page.content() and "No sweeps." in page.inner_text("#sweeps-body")

    use_key(page, url, key_a)
    page.goto(f"{url}/sweeps/{sweep_id}")
    page.wait_for_selector("#sweep-view:not([hidden])")
    assert page.inner_text("#sweep-name") == "tenant-a-sweep" and page.is_hidden("#not-found")
    page.screenshot(path=artifacts_dir / "sweeps-04-owner-sees-the-sweep.png", full_page=True)
    assert page.js_errors == []
