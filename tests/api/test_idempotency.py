"""Idempotent submit: a retried POST with the same Idempotency-Key returns the same job."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from ganforge.jobs.models import Job
from tests.api.test_api import SPEC, assert_envelope


def post(client, body, key):
    return client.post("/v1/jobs", json=body, headers={"Idempotency-Key": key} if key is not None else {})


def job_count(api) -> int:
    with api.db.read() as session:
        return session.scalar(select(func.count()).select_from(Job))


def test_a_retried_post_returns_the_same_job_and_enqueues_once(api):
    first = post(api.client, SPEC, "retry-me-1")
    again = post(api.client, dict(reversed(list(SPEC.items()))), "retry-me-1")  # same body, keys reordered
    assert first.status_code == again.status_code == 201
    assert first.get_json()["id"] == again.get_json()["id"]
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert job_count(api) == 1 and len(api.queue.sent) == 1


def test_the_same_key_with_another_body_is_409_and_changes_nothing(api):
    first = post(api.client, SPEC, "k-409")
    other = post(api.client, {**SPEC, "name": "another"}, "k-409")
    error = assert_envelope(other, 409, "idempotency_conflict")
    assert error["details"] == [{"field": "Idempotency-Key", "problem": "already used with a different request body"}]
    assert job_count(api) == 1 and api.queue.sent == [(first.get_json()["id"], "cpu")]


def test_other_keys_and_no_key_make_new_jobs(api):
    ids = {post(api.client, SPEC, key).get_json()["id"] for key in ("a", "b", None, None)}
    assert len(ids) == 4 and job_count(api) == 4


@pytest.mark.parametrize("key", ["", "x" * 256, "naïve", "has space"])
def test_malformed_keys_are_422_naming_the_header(api, key):
    error = assert_envelope(post(api.client, SPEC, key), 422, "invalid_header")
    assert error["details"][0]["field"] == "Idempotency-Key"
    assert job_count(api) == 0


def test_an_invalid_spec_with_a_key_is_still_422_and_does_not_burn_the_key(api):
    assert_envelope(post(api.client, {**SPEC, "train": {"steps": 0}}, "k-bad"), 422, "invalid_spec")
    assert post(api.client, SPEC, "k-bad").status_code == 201
    assert job_count(api) == 1


def test_racing_retries_make_one_job(api):
    """Eight clients send the same keyed request at the same moment: one job, eight equal answers."""
    barrier = threading.Barrier(8)
    answers: list[tuple[int, str]] = []
    lock = threading.Lock()

    def send() -> None:
        client = api.app.test_client()
        barrier.wait()
        response = post(client, SPEC, "race")
        with lock:
            answers.append((response.status_code, response.get_json().get("id")))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(answers) == 8 and {status for status, _ in answers} == {201}
    assert len({job_id for _, job_id in answers}) == 1
    assert job_count(api) == 1 and len(api.queue.sent) == 1
