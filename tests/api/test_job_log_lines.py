"""Item 12: a job's log lines, captured on the worker by a logging handler, stored as chunks in
the artifact store and served by GET /v1/jobs/{id}/logs?since= (tenancy as every job endpoint)."""

from __future__ import annotations

import logging
import threading

from ganforge.jobs import job_logs
from ganforge.jobs.keys import create_key
from ganforge.worker.job_logs import capture

from tests.api.test_api import SPEC


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _job(api, headers=None) -> str:
    response = api.client.post("/v1/jobs", json=SPEC, headers=headers or {})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def test_lines_of_the_job_are_captured_chunked_and_served_from_a_cursor(make_api, caplog):
    caplog.set_level(logging.INFO)  # the worker's level (pytest's root logger drops INFO)
    api = make_api(job_log_chunk_lines=3, job_log_flush_seconds=60.0)
    job_id, other = _job(api), _job(api)
    log = logging.getLogger("ganforge.worker.runner")
    side: list[threading.Thread] = []
    with capture(api.services, job_id):
        for i in range(7):
            log.info("step %d of job", i)  # this thread runs the attempt: captured
        log.warning("an upload of %s failed", "https://s3.example/b/k.png?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA")
        log.info("another job's line", extra={"job_id": other})  # names another job: not captured
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("it failed")

        def elsewhere():
            log.info("a line from another thread")  # neither the job's thread nor naming it: not captured
            log.info("the uploader's line", extra={"job_id": job_id})  # names the job: captured

        side.append(threading.Thread(target=elsewhere))
        side[0].start()
        side[0].join()

    with api.services.db.read() as session:
        chunks = job_logs.chunks(session, job_id)
        assert not job_logs.chunks(session, other)
    # 10 lines, 3 a chunk (the buffer fills to 3 and wakes the writer; the rest at the end)
    assert [c.step for c in chunks][0] == 0 and sum(len(job_logs.decode(api.services.storage.get(c.key)))
                                                    for c in chunks) == 10
    assert all(c.kind == "log_lines" for c in chunks) and len(chunks) == 4  # at most 3 lines each

    body = api.client.get(f"/v1/jobs/{job_id}/logs").get_json()
    lines = body["lines"]
    assert [line["n"] for line in lines] == list(range(10)) and body["next"] == 10 and body["more"] is False
    messages = [line["message"] for line in lines]
    assert messages[:7] == [f"step {i} of job" for i in range(7)]
    assert messages[7] == "an upload of https://s3.example/b/k.png?… failed"  # no signature in the log
    assert "deadbeef" not in str(body) and "AKIA" not in str(body)
    assert messages[8].startswith("it failed\nTraceback") and "ValueError: boom" in messages[8]
    assert messages[9] == "the uploader's line"
    assert {line["level"] for line in lines} == {"INFO", "WARNING", "ERROR"}
    assert lines[0]["rank"] is None and lines[0]["logger"] == "ganforge.worker.runner" and lines[0]["time"].endswith("Z")

    body = api.client.get(f"/v1/jobs/{job_id}/logs?since=5&limit=2").get_json()
    assert [line["n"] for line in body["lines"]] == [5, 6] and body["next"] == 7 and body["more"] is True
    body = api.client.get(f"/v1/jobs/{job_id}/logs?since=10").get_json()
    assert body["lines"] == [] and body["next"] == 10 and body["more"] is False

    # a second attempt goes on numbering after the first one's lines
    with capture(api.services, job_id):
        log.info("attempt 2")
    body = api.client.get(f"/v1/jobs/{job_id}/logs?since=10").get_json()
    assert [(line["n"], line["message"]) for line in body["lines"]] == [(10, "attempt 2")]


def test_rank_lines_keep_their_rank_level_and_time(make_api):
    api = make_api()
    job_id = _job(api)
    with capture(api.services, job_id) as handler:
        handler.add_rank_line('[default1]:{"time": "2026-12-05T10:00:00.000Z", "level": "WARNING", '
                              '"logger": "ganforge.worker.runner", "message": "rank says hi", "rank": 1}', 0.0)
        handler.add_rank_line("[default0]:Traceback (most recent call last):", 0.0)
        handler.add_rank_line("", 0.0)
    lines = api.client.get(f"/v1/jobs/{job_id}/logs").get_json()["lines"]
    assert [(l["rank"], l["level"], l["message"]) for l in lines] == [
        (1, "WARNING", "rank says hi"), (0, "INFO", "Traceback (most recent call last):")]
    assert lines[0]["time"] == "2026-12-05T10:00:00.000Z"


def test_bad_cursors_are_422_naming_the_parameter(api):
    job_id = _job(api)
    for query, field in (("since=-1", "since"), ("since=x", "since"), ("limit=0", "limit"), ("limit=5001", "limit"),
                         ("from=3", "from")):
        response = api.client.get(f"/v1/jobs/{job_id}/logs?{query}")
        assert response.status_code == 422, query
        assert field in {d["field"] for d in response.get_json()["error"]["details"]}, (query, response.get_json())


def test_another_tenants_job_logs_are_not_found(make_api, caplog):
    caplog.set_level(logging.INFO)
    api = make_api(auth="required")
    key_a, key_b = create_key(api.db, "a")[1], create_key(api.db, "b")[1]
    job_id = _job(api, bearer(key_a))
    with capture(api.services, job_id):
        logging.getLogger("ganforge.worker.runner").info("secret of tenant a")
    assert api.client.get(f"/v1/jobs/{job_id}/logs", headers=bearer(key_a)).get_json()["lines"]
    response = api.client.get(f"/v1/jobs/{job_id}/logs", headers=bearer(key_b))
    assert response.status_code == 404 and "secret" not in response.get_data(as_text=True)
    assert api.client.get(f"/v1/jobs/{job_id}/logs").status_code == 401
