"""POST /v1/datasets over real HTTP: how long an archive of N pictures takes to be received,
inspected and stored, and how much of that is the inspection (gan_core.data.archive).

The API runs in-process on werkzeug's threaded server (SQLite, a local-directory store); the
client streams the file from disk (ganforge.client). Prints the archive's size, the upload's wall
time and MB/s, inspect_archive's share and images/s, and the API process's peak RSS growth.

    python bench/dataset_upload.py [--images 4000] [--size 64]
"""

from __future__ import annotations

import argparse
import io
import resource
import sys
import tempfile
import threading
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.prerequisites import Needs  # noqa: E402


def make_archive(path: Path, images: int, size: int) -> None:
    """``images`` PNGs of coloured noise (they do not compress: a realistic archive size) in 4 class folders."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:  # PNGs are compressed already
        for i in range(images):
            out = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(out, format="PNG")
            archive.writestr(f"class{i % 4}/{i:06d}.png", out.getvalue())


@contextmanager
def serve_api(tmp: Path) -> Iterator[tuple[str, Any]]:
    """The API on werkzeug's threaded server on a free loopback port, over a fresh SQLite file and
    a local store under ``tmp``: yields (base URL, settings). tests/unit/test_datasets_cli.py uses it too."""
    from sqlalchemy import create_engine
    from werkzeug.serving import make_server

    from ganforge.api import create_app
    from ganforge.jobs.db import Database
    from ganforge.jobs.models import Base
    from ganforge.jobs.queue import RecordingEnqueuer
    from ganforge.jobs.services import Services
    from ganforge.jobs.settings import Settings
    from ganforge.jobs.storage import LocalStorage

    url = f"sqlite:///{tmp / 'api.db'}"
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    engine.dispose()
    settings = Settings(data_dir=tmp / "home", database_url=url, broker_url="memory://",
                        storage_url=f"file://{tmp / 'store'}", signing_secret="in-process")
    db = Database(url)
    app = create_app(services=Services(settings, db, LocalStorage(tmp / "store"), RecordingEnqueuer()))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", settings
    finally:
        server.shutdown()
        thread.join(10)
        db.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--size", type=int, default=64, help="picture side in pixels")
    args = parser.parse_args(argv)
    Needs("bench/dataset_upload.py").python("flask", "sqlalchemy", "PIL", "numpy").check()
    import logging

    logging.disable(logging.CRITICAL)
    from gan_core.data.archive import inspect_archive
    from ganforge.client import Client

    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        archive = tmp / "pictures.zip"
        make_archive(archive, args.images, args.size)
        size = archive.stat().st_size
        with serve_api(tmp) as (url, settings):
            # The upload first: the peak RSS before it is this process's start-up, nothing of the archive.
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
            started = time.perf_counter()
            created = Client(url, timeout=600).upload_dataset(archive, "bench")
            upload_seconds = time.perf_counter() - started
            rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before

        started = time.perf_counter()
        summary = inspect_archive(archive, settings.archive_limits())
        inspect_seconds = time.perf_counter() - started
    assert created["images"] == summary.images == args.images, (created, summary)
    mb = size / 1e6
    print(f"archive:          {args.images} PNGs of {args.size} px, {mb:.1f} MB")
    print(f"upload:           {upload_seconds:.2f} s  ({mb / upload_seconds:.0f} MB/s: receive, inspect, store, row)")
    print(f"inspect alone:    {inspect_seconds:.2f} s  ({args.images / inspect_seconds:.0f} images/s, "
          f"{100 * inspect_seconds / upload_seconds:.0f} % of the upload)")
    print(f"peak RSS growth:  {rss_growth / 1024:.1f} MiB during the upload (client and server in this process)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
