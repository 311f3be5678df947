"""``ganforge datasets upload|list|show|delete`` against the real API over HTTP (werkzeug's server
on loopback, SQLite, a local store: ``serve_api`` of bench/dataset_upload.py): the archive streamed
from disk, the answers printed, the refusals as one message and an exit code, never a traceback."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from ganforge.cli import main

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from upload_archives import image_members, tar_bytes, zip_bomb, zip_bytes  # noqa: E402


@pytest.fixture()
def service(tmp_path):
    with _bench().serve_api(tmp_path) as (url, _settings):
        yield url


def _bench():
    spec = importlib.util.spec_from_file_location("ganforge_bench_dataset_upload", ROOT / "bench" / "dataset_upload.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    assert code == 1 and "cannot reach the ganforge service at http://127.0.0.1:9" in err and err.count("cannot reach") == 1
    assert "Traceback" not in err
