"""GET /v1/jobs/{id}: views of finished jobs come from the API process's memory (no database
read), views of live jobs never do, and the tenant rule holds for remembered views. On SQLite and
PostgreSQL (the latter reads through the pooled connection's psycopg cursor)."""

from __future__ import annotations

import pytest
from sqlalchemy import event

from ganforge.api.finished_views import FinishedViews
from ganforge.jobs import lifecycle
from ganforge.jobs.keys import create_key
from tests.api.test_security import SPEC, bearer


class ReadCounter:
    """Connections the API's read engine hands out (the job view's only way to the database)."""

    def __init__(self, db):
        self.n = 0
        event.listen(db.read_engine, "checkout", self._checkout)

    def _checkout(self, *_):
        self.n += 1


@pytest.fixture
def keyed(make_api):
    # Keys stay cached for the test, so the reads counted are the job view's own.
    h = make_api(auth="required", auth_cache_seconds=600)
    keys = {name: create_key(h.db, name)[1] for name in ("a", "b")}
    keys["admin"] = create_key(h.db, "ops", is_admin=True)[1]
    for key in keys.values():
        assert h.client.get("/v1/jobs", headers=bearer(key)).status_code == 200
    return h, keys


def submit(h, key) -> str:
    return h.client.post("/v1/jobs", json=SPEC, headers=bearer(key)).get_json()["id"]


def get(h, key, job_id):
    return h.client.get(f"/v1/jobs/{job_id}", headers=bearer(key))


def test_a_finished_jobs_view_is_read_once(keyed):
    h, keys = keyed
    job_id = submit(h, keys["a"])
    claim = lifecycle.claim(h.db, job_id, "test-worker", 60)
    reads = ReadCounter(h.db)  # (on SQLite the writes below share the engine: counted around GETs)

    def view():
        before = reads.n
        body = get(h, keys["a"], job_id).get_json()
        return body, reads.n - before

    assert [view()[1] for _ in range(2)] == [1, 1]  # a live job: read every time
    lifecycle.record_metrics(h.db, job_id, claim.token, [(3, {"loss_d": 0.25})], 60)
    assert view()[0]["latest_metrics"] == {"step": 3, "loss_d": 0.25}
    lifecycle.finish(h.db, job_id, claim.token, "succeeded", evaluation={"fid": 12.5}, step=3)
    first, n = view()
    assert n == 1 and first["status"] == "succeeded" and first["evaluation"] == {"fid": 12.5}
    again = [view() for _ in range(5)]
    assert [n for _, n in again] == [0] * 5  # no further reads
    assert all(body == first for body, _ in again)
    assert [e["to"] for e in first["events"]] == ["queued", "running", "succeeded"]


def test_a_remembered_view_keeps_the_tenant_rule(keyed):
    h, keys = keyed
    job_id = submit(h, keys["a"])
    h.client.post(f"/v1/jobs/{job_id}/cancel", headers=bearer(keys["a"]))  # queued -> cancelled
    assert get(h, keys["a"], job_id).get_json()["status"] == "cancelled"  # remembered for tenant a
    response = get(h, keys["b"], job_id)
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found"
    assert get(h, keys["admin"], job_id).get_json()["status"] == "cancelled"  # admins see all


def test_a_view_an_admin_read_is_not_served_to_a_tenant_from_memory(keyed):
    h, keys = keyed
    mine, theirs = submit(h, keys["a"]), submit(h, keys["b"])
    for job_id, key in ((mine, keys["a"]), (theirs, keys["b"])):
        h.client.post(f"/v1/jobs/{job_id}/cancel", headers=bearer(key))
    h.app.extensions["ganforge.finished_views"] = FinishedViews()  # empty again
    for job_id in (mine, theirs):
        assert get(h, keys["admin"], job_id).status_code == 200  # remembered without a known owner
    reads = ReadCounter(h.db)
    assert get(h, keys["a"], mine).status_code == 200 and reads.n == 1  # read again, then remembered
    assert get(h, keys["a"], theirs).status_code == 404 and reads.n == 2
    assert get(h, keys["a"], mine).status_code == 200 and reads.n == 2


def test_no_memory_when_the_setting_is_zero(make_api):
    h = make_api(finished_view_cache=0)
    job_id = h.client.post("/v1/jobs", json=SPEC).get_json()["id"]
    h.client.post(f"/v1/jobs/{job_id}/cancel")
    reads = ReadCounter(h.db)
    for _ in range(3):
        assert h.client.get(f"/v1/jobs/{job_id}").get_json()["status"] == "cancelled"
    assert reads.n == 3


def test_finished_views_are_bounded_and_keep_only_finished_jobs():
    views = FinishedViews(max_entries=2)
    views.put("live", "a", {"status": "running"})
    assert views.get("live", "a", False) is None and len(views) == 0
    for job_id in ("j1", "j2"):
        views.put(job_id, "a", {"status": "succeeded", "id": job_id})
    assert views.get("j1", "a", False)["id"] == "j1"  # j1 used last: j2 goes first
    views.put("j3", "a", {"status": "failed", "id": "j3"})
    assert len(views) == 2 and views.get("j2", "a", False) is None
    assert views.get("j1", "b", False) is None and views.get("j1", "b", True)["id"] == "j1"
