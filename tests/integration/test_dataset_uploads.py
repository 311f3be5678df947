"""Uploaded datasets on the production stack: migration 0008 up and down with rows in the tables,
an archive streamed through gunicorn (with a Content-Length, and chunked) into S3 (moto) under
PostgreSQL, found by the worker's ``upload_location``, and removed from the bucket on delete."""

from __future__ import annotations

import hashlib
import http.client
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, pool, text
from sqlalchemy.exc import IntegrityError

from ganforge.client import APIError, Client
from ganforge.jobs.db import make_engine
from ganforge.jobs.migrate import current_revision, downgrade, head_revision, upgrade

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from upload_archives import image_members, tar_bytes, zip_bomb, zip_bytes  # noqa: E402
from test_e2e_http import free_port, wait_http  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BELOW = "0007_datasets-1"  # the revision before this one, whatever the chain above it


@pytest.fixture(params=["postgresql", "sqlite"])
def migrated_url(request) -> str:
    return request.getfixturevalue("migrated_pg" if request.param == "postgresql" else "migrated_sqlite")


def _columns(url: str, table: str) -> set[str]:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        return {c["name"] for c in inspect(engine).get_columns(table)}
    finally:
        engine.dispose()


def test_migration_0008_goes_down_and_up_keeping_the_jobs(migrated_url):
    now = datetime.now(timezone.utc)
    engine = make_engine(migrated_url)  # the service's engine: SQLite enforces foreign keys there too
    try:
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO datasets (id, tenant, name, storage_key, content_type, sha256, bytes, files, images, "
                "skipped, classes, created_at) VALUES ('d1', 'a', 'faces', 'datasets/d1/archive.zip', "
                "'application/zip', :sha, 10, 3, 2, 1, '[\"x\"]', :now)"), {"sha": "0" * 64, "now": now})
            conn.execute(text(
                "INSERT INTO jobs (id, tenant, name, spec, status, queue, progress_step, total_steps, attempt, "
                "max_attempts, cancel_requested, runtime_seconds, divergences, dataset_id, created_at, updated_at) "
                "VALUES ('j1', 'a', 'n', '{}', 'succeeded', 'cpu', 0, 1, 0, 1, false, 0, 0, 'd1', :now, :now)"),
                {"now": now})
        # The foreign key holds: a job cannot name an upload that does not exist.
        with pytest.raises(IntegrityError):
            with engine.begin() as conn:
                conn.execute(text("UPDATE jobs SET dataset_id = 'nope' WHERE id = 'j1'"))
        # Deleting the upload keeps the finished job, without it.
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM datasets WHERE id = 'd1'"))
            assert conn.execute(text("SELECT dataset_id FROM jobs WHERE id = 'j1'")).scalar() is None
    finally:
        engine.dispose()

    downgrade(migrated_url, BELOW)
    assert current_revision(migrated_url) != head_revision()
    engine = create_engine(migrated_url, poolclass=pool.NullPool)
    try:
        assert "datasets" not in inspect(engine).get_table_names()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM jobs")).scalar() == 1
    finally:
        engine.dispose()
    assert "dataset_id" not in _columns(migrated_url, "jobs")

    upgrade(migrated_url)
    assert current_revision(migrated_url) == head_revision()
    assert "dataset_id" in _columns(migrated_url, "jobs")
    assert {"storage_key", "sha256", "files", "images", "skipped", "classes", "bytes"} <= _columns(migrated_url, "datasets")


def _chunked_upload(port: int, key: str, body: bytes, content_type: str) -> tuple[int, bytes]:
    """POST ``body`` with Transfer-Encoding: chunked (no Content-Length), in 64 KiB chunks."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        chunks = (body[i:i + 65536] for i in range(0, len(body), 65536))
        connection.request("POST", "/v1/datasets?name=chunked", body=chunks, encode_chunked=True,
                           headers={"Content-Type": content_type, "Authorization": f"Bearer {key}",
                                    "Transfer-Encoding": "chunked"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_uploads_through_gunicorn_into_s3(service_env, s3_client, s3_bucket, tmp_path):
    body = tar_bytes(image_members(per_class=4), "w:gz")
    limit = 200_000  # the archive, and its content uncompressed
    env = {**service_env, "GANFORGE_MAX_DATASET_BYTES": str(limit)}
    port = free_port()
    api_log = tmp_path / "api.log"
    api = subprocess.Popen([sys.executable, "-m", "ganforge.cli", "api", "--port", str(port), "--workers", "2"],
                           env=env, stdout=api_log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        keys = {}
        for tenant in ("acme", "other"):
            made = subprocess.run([sys.executable, "-m", "ganforge.cli", "keys", "create", "--tenant", tenant],
                                  env=env, cwd=ROOT, capture_output=True, text=True, check=True)
            keys[tenant] = made.stdout.strip().splitlines()[-1]
        client = Client(f"http://127.0.0.1:{port}", api_key=keys["acme"])
        other = Client(f"http://127.0.0.1:{port}", api_key=keys["other"])
        wait_http(client, api, api_log)

        archive = tmp_path / "shapes.tar.gz"
        archive.write_bytes(body)
        created = client.upload_dataset(archive, "shapes", idempotency_key="k1")
        assert (created["images"], created["skipped"], created["classes"]) == (12, 1, ["blue", "green", "red"])
        assert client.upload_dataset(archive, "shapes", idempotency_key="k1")["id"] == created["id"]  # replayed

        # In the bucket, whole, under the deployment's prefix; where the worker will look.
        bucket, prefix = s3_bucket.removeprefix("s3://").split("/", 1)
        stored = s3_client.get_object(Bucket=bucket, Key=f"{prefix}/datasets/{created['id']}/archive.tar.gz")["Body"].read()
        assert hashlib.sha256(stored).hexdigest() == created["sha256"] == hashlib.sha256(body).hexdigest()
        from ganforge.jobs import datasets
        from ganforge.jobs.db import Database

        db = Database(env["GANFORGE_DATABASE_URL"])
        try:
            with db.read() as session:
                assert datasets.upload_location(session, "acme", created["id"]) == (
                    f"datasets/{created['id']}/archive.tar.gz", created["sha256"])
        finally:
            db.dispose()

        # Chunked: no Content-Length; accepted within the limit, a 413 past it (counted while streamed).
        status, answer = _chunked_upload(port, keys["acme"], zip_bytes(image_members()), "application/zip")
        assert status == 201, answer
        status, answer = _chunked_upload(port, keys["acme"], os.urandom(limit + 1), "application/gzip")
        assert status == 413 and b"GANFORGE_MAX_DATASET_BYTES" in answer
        with pytest.raises(APIError) as refused:
            bomb = tmp_path / "bomb.zip"
            bomb.write_bytes(zip_bomb(16))
            client.upload_dataset(bomb)
        assert refused.value.status == 422 and refused.value.details[0]["problem"].startswith("zip_bomb")

        with pytest.raises(APIError) as hidden:
            other.dataset(created["id"])
        assert hidden.value.status == 404
        assert other.datasets()["items"] == []
        assert len(client.datasets()["items"]) == 2

        client.delete_dataset(created["id"])
        listed = s3_client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/datasets/{created['id']}/")
        assert listed.get("KeyCount", 0) == 0
    finally:
        api.terminate()
        api.wait(20)
