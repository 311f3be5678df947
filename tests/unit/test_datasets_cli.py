"""``ganforge datasets upload|list|show|delete`` against the real API over HTTP (werkzeug's server
on loopback, SQLite, a local store): the archive streamed from disk, the answers printed, the
refusals as one message and an exit code, never a traceback."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from werkzeug.serving import make_server

from ganforge.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from upload_archives import image_members, tar_bytes, zip_bomb, zip_bytes  # noqa: E402


@pytest.fixture()
def service(tmp_path):
    from api import create_app
    from jobs.db import Database
    from jobs.models import Base
    from jobs.queue import RecordingEnqueuer
    from jobs.services import Services
    from jobs.settings import Settings
    from jobs.storage import LocalStorage

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    engine.dispose()
    settings = Settings(data_dir=tmp_path / "home", database_url=url, broker_url="memory://",
                        storage_url=f"file://{tmp_path / 'store'}", signing_secret="cli-test")
    db = Database(url)
    app = create_app(services=Services(settings, db, LocalStorage(tmp_path / "store"), RecordingEnqueuer()))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)
        db.dispose()


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_upload_list_show_delete(service, tmp_path, capsys):
    archive = tmp_path / "shapes.tar.gz"
    archive.write_bytes(tar_bytes(image_members(), "w:gz"))
    code, out, err = run(capsys, "datasets", "upload", str(archive), "--url", service, "--json")
    assert code == 0, err
    created = json.loads(out)
    assert (created["name"], created["images"], created["skipped"], created["files"]) == ("shapes", 9, 1, 10)
    assert created["content_type"] == "application/gzip" and created["bytes"] == archive.stat().st_size

    zipped = tmp_path / "more.zip"
    zipped.write_bytes(zip_bytes(image_members(per_class=1, corrupt=0)))
    code, out, _ = run(capsys, "datasets", "upload", str(zipped), "--name", "three", "--url", service)
    assert code == 0
    second = out.split()[0]
    assert "three: 3 images, 0 skipped of 3 files, 3 classes" in out and f'"upload_id": "{second}"' in out

    code, out, _ = run(capsys, "datasets", "list", "--url", service)
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == [second, created["id"]]
    code, out, _ = run(capsys, "datasets", "list", "--url", service, "--limit", "1")
    assert code == 0 and "(more: --cursor " in out

    code, out, _ = run(capsys, "datasets", "show", created["id"], "--url", service)
    assert code == 0 and "classes: blue, green, red" in out and created["sha256"] in out

    code, out, _ = run(capsys, "datasets", "delete", created["id"], "--url", service)
    assert code == 0 and out.strip() == f"deleted {created['id']}"
    code, _, err = run(capsys, "datasets", "show", created["id"], "--url", service)
    assert code == 1 and "404 not_found" in err and "Traceback" not in err


def test_refusals_are_one_message_and_an_exit_code(service, tmp_path, capsys):
    bomb = tmp_path / "bomb.zip"
    bomb.write_bytes(zip_bomb())
    code, _, err = run(capsys, "datasets", "upload", str(bomb), "--url", service)
    assert code == 1 and "422 invalid_archive" in err and "body: zip_bomb" in err

    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    code, _, err = run(capsys, "datasets", "upload", str(notes), "--url", service)
    assert code == 2 and "not a .zip, .tar, .tar.gz or .tgz archive" in err

    code, _, err = run(capsys, "datasets", "upload", str(tmp_path / "missing.zip"), "--url", service)
    assert code == 2 and "no such file" in err

    code, _, err = run(capsys, "datasets", "list", "--url", "http://127.0.0.1:9")
    assert code == 1 and "cannot reach the service" in err
    assert "Traceback" not in err
