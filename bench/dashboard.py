"""Load time of a job's dashboard page for a job with 12 000 logged steps.

    python bench/dashboard.py                     # a temporary SQLite file
    python bench/dashboard.py --postgres postgresql://postgres@127.0.0.1:5432/postgres
    python bench/dashboard.py --no-browser        # only the HTTP requests

Seeds one finished job with 12 000 steps × 8 metric series (96 000 metric rows), 40 sample grids
and 4 checkpoints in the local store, serves the app over HTTP on loopback (werkzeug, threaded,
as `ganforge up` does) and measures:

* each request the job page makes, over HTTP: the HTML shell, its scripts and stylesheets, the
  job, the metric series downsampled on the server (``max_points=600``), the sample and
  checkpoint listings; their sum is the page's cost when made one after another (a browser makes
  the last three in parallel);
* the same metric request without ``max_points`` (all 96 000 points), for comparison;
* with Chromium (Debian's /usr/bin/chromium driven by Playwright, a fresh context each time so
  nothing is cached): from navigation start to the moment the page has drawn its charts,
  timeline, checkpoints and events (``#job[data-loaded]``), read from the page's own clock.

Prints medians and 95th percentiles in milliseconds. The target is < 300 ms for the page.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.api_list import database  # noqa: E402  (the temporary SQLite / PostgreSQL database)
from bench.prerequisites import Needs  # noqa: E402

STEPS = 12_000
SERIES = ("loss_d", "loss_g", "d_real", "d_fake", "acc_real", "acc_fake", "acc_d", "images_per_s")
GRIDS, CHECKPOINTS = 40, 4
METRIC_QUERY = "names=" + ",".join(SERIES) + "&max_points=600"  # what api/static/job.js asks for
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def seed(db, storage) -> str:
    """One succeeded job with its metrics, grids, checkpoints and events; returns its id."""
    import numpy as np
    from sqlalchemy import insert, text

    from gan_core.images import scatter_png
    from gan_core.spec import JobSpec
    from ganforge.jobs.models import Artifact, Job, JobEvent, Metric
    from ganforge.jobs.storage import checkpoint_key, sample_key

    job_id = secrets.token_hex(16)
    spec = JobSpec.model_validate({"name": "bench-dashboard", "dataset": {"name": "ring8"},
                                   "train": {"steps": STEPS}, "log_every": 1}).model_dump(mode="json")
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    end = start + timedelta(minutes=30)
    latest = {name: 0.5 for name in SERIES}
    with db.session() as session:
        session.execute(insert(Job), [{
            "id": job_id, "tenant": "default", "name": "bench-dashboard", "spec": spec, "status": "succeeded",
            "queue": "cpu", "progress_step": STEPS, "total_steps": STEPS, "attempt": 1, "max_attempts": 3,
            "cancel_requested": False, "latest_metrics": {"step": STEPS, **latest},
            "evaluation": {"modes": 8, "modes_min10": 8, "hq_percent": 97.4, "reverse_kl": 0.01, "n_samples": 2500,
                           "n_modes": 8, "mode_counts": [300] * 8},
            "created_at": start, "updated_at": end, "started_at": start, "finished_at": end}])
        session.execute(insert(JobEvent), [
            {"job_id": job_id, "at": start, "from_status": None, "to_status": "queued", "attempt": 0, "message": "submitted"},
            {"job_id": job_id, "at": start, "from_status": "queued", "to_status": "running", "attempt": 1, "message": "claimed"},
            {"job_id": job_id, "at": end, "from_status": "running", "to_status": "succeeded", "attempt": 1,
             "message": f"finished {STEPS} steps"}])
        rows = [{"job_id": job_id, "name": name, "step": step, "value": math.sin(step / 500 + i) * 0.3 + 0.6}
                for i, name in enumerate(SERIES) for step in range(1, STEPS + 1)]
        for chunk in range(0, len(rows), 20_000):
            session.execute(insert(Metric), rows[chunk:chunk + 20_000])
        rng = np.random.default_rng(0)
        artifacts = []
        for i in range(1, GRIDS + 1):
            step = i * STEPS // GRIDS
            stored = storage.put(sample_key(job_id, step), scatter_png(rng.normal(size=(500, 2)), extent=3.0), "image/png")
            artifacts.append({"id": secrets.token_hex(16), "job_id": job_id, "kind": "sample_grid", "step": step,
                              "key": stored.key, "bytes": stored.size, "sha256": stored.sha256, "content_type": "image/png"})
        for i in range(1, CHECKPOINTS + 1):
            step = i * STEPS // CHECKPOINTS
            stored = storage.put(checkpoint_key(job_id, step), secrets.token_bytes(1000), "application/octet-stream")
            artifacts.append({"id": secrets.token_hex(16), "job_id": job_id, "kind": "checkpoint", "step": step,
                              "key": stored.key, "bytes": stored.size, "sha256": stored.sha256,
                              "content_type": "application/octet-stream"})
        session.execute(insert(Artifact), artifacts)
    if db.engine.dialect.name == "postgresql":
        # What autovacuum does after this many inserts: planner statistics and the visibility
        # map (without it the counts of the series' index ranges must visit the table too).
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE"))
    else:
        with db.engine.begin() as connection:  # fresh planner statistics, as a live database would have
            connection.execute(text("ANALYZE"))
    return job_id


@contextmanager
def serve(app) -> Iterator[str]:
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


def fetch_ms(url: str) -> tuple[float, int]:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as response:
        body = response.read()
        assert response.status == 200, url
    return (time.perf_counter() - start) * 1000, len(body)


def summary(times: list[float]) -> str:
    p95 = statistics.quantiles(times, n=20)[-1] if len(times) >= 2 else times[0]
    return f"median {statistics.median(times):7.1f} ms   p95 {p95:7.1f} ms   min {min(times):7.1f} ms"


def load_average() -> str:
    # The figures scale with what else runs: say how busy the machine was.
    try:
        return "load average " + " ".join(Path("/proc/loadavg").read_text().split()[:3]) + f" on {os.cpu_count()} CPUs"
    except OSError:
        return "load average unknown"


def http_figures(base: str, job_id: str, repeats: int) -> None:
    requests = {
        "page /jobs/{id}": f"/jobs/{job_id}",
        "static (css, js, uPlot)": None,
        "GET job": f"/v1/jobs/{job_id}",
        "GET metrics (max_points=600)": f"/v1/jobs/{job_id}/metrics?{METRIC_QUERY}",
        "GET samples": f"/v1/jobs/{job_id}/samples",
        "GET checkpoints": f"/v1/jobs/{job_id}/checkpoints",
    }
    statics = ["/static/dashboard.css", "/static/vendor/uPlot.min.css", "/static/dashboard.js",
               "/static/vendor/uPlot.iife.min.js", "/static/job.js"]
    for _ in range(3):  # warm-up: imports, connections, the OS page cache
        for path in [p for p in requests.values() if p] + statics:
            fetch_ms(base + path)
    results: dict[str, list[float]] = {label: [] for label in requests}
    totals, sizes = [], {}
    for _ in range(repeats):
        total = 0.0
        for label, path in requests.items():
            if path is None:
                ms = sum(fetch_ms(base + p)[0] for p in statics)
            else:
                ms, sizes[label] = fetch_ms(base + path)
            results[label].append(ms)
            total += ms
        totals.append(total)
    for label, times in results.items():
        size = f"  {sizes[label] / 1024:7.1f} KiB" if label in sizes else ""
        print(f"  {label:32s} {summary(times)}{size}")
    print(f"  {'all of them, one after another':32s} {summary(totals)}")
    full = [fetch_ms(f"{base}/v1/jobs/{job_id}/metrics?names={','.join(SERIES)}") for _ in range(max(3, repeats // 4))]
    print(f"  {'GET metrics, all 96 000 points':32s} {summary([t for t, _ in full])}  {full[0][1] / 1024:7.1f} KiB"
          "  (for comparison: no downsampling)")


def browser_figures(base: str, job_id: str, repeats: int, chromium: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            times, points = [], None
            for i in range(repeats + 2):
                context = browser.new_context(viewport={"width": 1280, "height": 1000})  # a cold cache each time
                page = context.new_page()
                page.goto(f"{base}/jobs/{job_id}")
                page.wait_for_selector("#job[data-loaded='succeeded']", timeout=30_000)
                # From navigation start to the charts drawn, on the page's own clock (job.js
                # marks "ganforge:loaded" when its first full refresh is done).
                ms = page.evaluate("performance.getEntriesByName('ganforge:loaded')[0].startTime")
                points = page.get_attribute("#chart-loss", "data-points")
                context.close()
                if i >= 2:  # the first loads warm up the server and the browser
                    times.append(ms)
        finally:
            browser.close()
    print(f"  {'Chromium: navigation → charts drawn':32s} {summary(times)}  ({points} points per series, cold cache)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", metavar="ADMIN_DSN", help="benchmark PostgreSQL (a temporary database)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium measurement")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args(argv)
    needs = Needs("bench/dashboard.py").python("flask", "sqlalchemy", "torch")
    if args.postgres:
        dsn = urlsplit(args.postgres)
        needs.python("psycopg").postgres(dsn.hostname or "127.0.0.1", dsn.port or 5432)
    if not args.no_browser:
        needs.python("playwright", how="pip install -e .[test]")
        needs.file(args.chromium, "Chromium", "apt-get install -y chromium, or pass --no-browser")
    needs.check()
    logging.basicConfig(level=logging.WARNING)
    for noisy in ("api.access", "werkzeug"):  # one line per request would drown the figures
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from ganforge.api import create_app
    from ganforge.jobs.db import Database
    from ganforge.jobs.models import Base
    from ganforge.jobs.queue import RecordingEnqueuer
    from ganforge.jobs.services import Services
    from ganforge.jobs.settings import Settings
    from ganforge.jobs.storage import LocalStorage

    with tempfile.TemporaryDirectory() as tmp, database(args.postgres, Path(tmp)) as url:
        db = Database(url)
        Base.metadata.create_all(db.engine)
        storage = LocalStorage(Path(tmp) / "artifacts")
        started = time.perf_counter()
        job_id = seed(db, storage)
        backend = "postgresql" if args.postgres else "sqlite"
        print(f"{backend}: one job, {STEPS} steps × {len(SERIES)} series = {STEPS * len(SERIES)} metric rows, "
              f"{GRIDS} grids, {CHECKPOINTS} checkpoints (seeded in {time.perf_counter() - started:.1f} s)")
        settings = Settings(data_dir=Path(tmp), database_url=url, signing_secret="bench", log_json=True)
        app = create_app(services=Services(settings, db, storage, RecordingEnqueuer()))
        print(f"before: {load_average()}")
        with serve(app) as base:
            http_figures(base, job_id, args.repeats)
            if not args.no_browser:
                browser_figures(base, job_id, max(5, args.repeats // 2), args.chromium)
        print(f"after: {load_average()}")
        db.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
