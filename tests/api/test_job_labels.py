"""A job's labels: tags and notes set at submit and changed with PATCH, the list's ?tag= and ?q=
filters (and the indexes that keep them fast on PostgreSQL), and unknown query parameters refused
on every list endpoint. On SQLite and PostgreSQL (see conftest.py)."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, text

from ganforge.api.finished_views import FinishedViews
from ganforge.api.read_model import job_page
from ganforge.jobs import lifecycle
from ganforge.jobs.keys import create_key
from ganforge.jobs.models import Job
from tests.api.test_api import SPEC, assert_envelope, fields, running_job
from tests.api.test_security import bearer


def submit(client, **extra):
    response = client.post("/v1/jobs", json={**SPEC, **extra})
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def names(client, query: str) -> list[str]:
    response = client.get(f"/v1/jobs?{query}")
    assert response.status_code == 200, response.get_data(as_text=True)
    return [item["name"] for item in response.get_json()["items"]]


def test_tags_and_notes_at_submit_are_labels_not_spec(api):
    job = submit(api.client, tags=["baseline", "lr=2e-4", "baseline"], notes="first try\nwith the ring")
    assert job["tags"] == ["baseline", "lr=2e-4"]  # duplicates dropped, order kept
    assert job["notes"] == "first try\nwith the ring"
    assert "tags" not in job["spec"] and "notes" not in job["spec"]  # the recipe stays a valid JobSpec
    listed = api.client.get("/v1/jobs").get_json()["items"][0]
    assert listed["tags"] == ["baseline", "lr=2e-4"] and "notes" not in listed  # notes: the job view only
    plain = submit(api.client)
    assert (plain["tags"], plain["notes"]) == ([], "")


@pytest.mark.parametrize(("extra", "field"), [
    ({"tags": "baseline"}, "tags"),
    ({"tags": ["has space"]}, "tags"),
    ({"tags": ["-leading"]}, "tags"),
    ({"tags": ["x" * 65]}, "tags"),
    ({"tags": [f"t{i}" for i in range(17)]}, "tags"),
    ({"tags": [1]}, "tags.0"),
    ({"tags": ["ok"], "notes": 5}, "notes"),
    ({"notes": "n" * 4001}, "notes"),
    ({"tagz": ["a"]}, "tagz"),
])
def test_bad_labels_at_submit_are_422_naming_the_field(api, extra, field):
    error = assert_envelope(api.client.post("/v1/jobs", json={**SPEC, **extra}), 422, "invalid_spec")
    assert fields(error) == {field}
    assert api.client.get("/v1/jobs").get_json()["items"] == []


def test_patch_replaces_tags_and_notes_and_nothing_else(api):
    job_id = submit(api.client, tags=["a"], notes="n")["id"]
    response = api.client.patch(f"/v1/jobs/{job_id}", json={"tags": ["b", "c"]})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert (response.get_json()["tags"], response.get_json()["notes"]) == (["b", "c"], "n")  # notes kept
    view = api.client.patch(f"/v1/jobs/{job_id}", json={"notes": ""}).get_json()
    assert (view["tags"], view["notes"]) == (["b", "c"], "")
    assert api.client.get(f"/v1/jobs/{job_id}").get_json()["tags"] == ["b", "c"]
    assert names(api.client, "tag=c") == ["ring"] and names(api.client, "tag=a") == []

    for body, field in [({"name": "renamed"}, "name"), ({"tags": ["b"], "train": {"steps": 9}}, "train"),
                        ({"status": "succeeded"}, "status"), ({"tags": ["bad tag"]}, "tags"), ({}, "(root)")]:
        error = assert_envelope(api.client.patch(f"/v1/jobs/{job_id}", json=body), 422, "invalid_request")
        assert fields(error) == {field}, body
    error = assert_envelope(api.client.patch(f"/v1/jobs/{job_id}", json={"name": "x"}), 422, "invalid_request")
    assert error["details"][0]["problem"] == "cannot be changed; only tags and notes can"
    after = api.client.get(f"/v1/jobs/{job_id}").get_json()
    assert after["name"] == "ring" and after["tags"] == ["b", "c"] and after["spec"]["train"]["steps"] == 3
    assert_envelope(api.client.patch(f"/v1/jobs/{'0' * 32}", json={"tags": []}), 404, "not_found")
    assert_envelope(api.client.patch(f"/v1/jobs/{job_id}", data="x", content_type="text/plain"), 415,
                    "unsupported_media_type")


def test_patch_of_a_finished_job_shows_at_once_and_other_processes_catch_up(api):
    """A finished job's view is kept in memory; the labels are its one part that still changes."""
    job_id, token = running_job(api.db)
    lifecycle.finish(api.db, job_id, token, "succeeded", step=3)
    assert api.client.get(f"/v1/jobs/{job_id}").get_json()["tags"] == []  # now remembered
    assert api.client.patch(f"/v1/jobs/{job_id}", json={"tags": ["keeper"]}).status_code == 200
    assert api.client.get(f"/v1/jobs/{job_id}").get_json()["tags"] == ["keeper"]  # this process: at once

    now = [0.0]
    views = FinishedViews(max_age=5.0, clock=lambda: now[0])  # another process's memory
    views.put(job_id, "default", {"status": "succeeded", "tags": []})
    lifecycle.set_labels(api.db, job_id, None, {"tags": ["keeper"]})
    now[0] = 4.9
    assert views.get(job_id, "default", False)["tags"] == []  # within max_age: the old copy
    now[0] = 5.1
    assert views.get(job_id, "default", False) is None  # then read again


def test_tenants_cannot_label_each_others_jobs(make_api):
    h = make_api(auth="required")
    key_a, key_b = create_key(h.db, "a")[1], create_key(h.db, "b")[1]
    admin = create_key(h.db, "ops", is_admin=True)[1]
    job_id = h.client.post("/v1/jobs", json={**SPEC, "tags": ["mine"]}, headers=bearer(key_a)).get_json()["id"]
    assert_envelope(h.client.patch(f"/v1/jobs/{job_id}", json={"tags": ["theirs"]}, headers=bearer(key_b)),
                    404, "not_found")
    assert h.client.get("/v1/jobs?tag=mine", headers=bearer(key_b)).get_json()["items"] == []
    assert h.client.patch(f"/v1/jobs/{job_id}", json={"notes": "ops"}, headers=bearer(admin)).status_code == 200
    view = h.client.get(f"/v1/jobs/{job_id}", headers=bearer(key_a)).get_json()
    assert (view["tags"], view["notes"]) == (["mine"], "ops")


def test_list_filters_by_tags_and_name(api):
    submit(api.client, name="Ring baseline", tags=["ring", "baseline"])
    submit(api.client, name="ring wide_100%", tags=["ring", "wide"])
    submit(api.client, name="mnist dcgan", tags=["mnist", "baseline"])
    assert names(api.client, "tag=ring") == ["ring wide_100%", "Ring baseline"]
    assert names(api.client, "tag=ring&tag=baseline") == ["Ring baseline"]  # all of them
    assert names(api.client, "tag=Ring") == []  # tags are case-sensitive
    assert names(api.client, "q=RING") == ["ring wide_100%", "Ring baseline"]  # names are not
    assert names(api.client, "q=e_1") == ["ring wide_100%"]
    assert names(api.client, "q=%25") == ["ring wide_100%"]  # a literal %, not a wildcard
    assert names(api.client, "q=g_w") == []  # ... and _ is literal too ("g w" is in two names)
    assert names(api.client, "q=_") == ["ring wide_100%"]
    assert names(api.client, "q=base&tag=mnist") == []
    assert names(api.client, "q=dcgan&tag=baseline&status=queued") == ["mnist dcgan"]
    assert names(api.client, "tag=ring&limit=1") == ["ring wide_100%"]
    page = api.client.get("/v1/jobs?tag=ring&limit=1").get_json()
    nxt = api.client.get(f"/v1/jobs?tag=ring&limit=1&cursor={page['next_cursor']}").get_json()
    assert [i["name"] for i in nxt["items"]] == ["Ring baseline"] and nxt["next_cursor"] is None


@pytest.mark.parametrize(("query", "field"), [
    ("tag=has%20space", "tag"), ("tag=" + "x" * 65, "tag"), ("&".join(f"tag=t{i}" for i in range(17)), "tag"),
    ("q=" + "x" * 121, "q"), ("stauts=queued", "stauts"), ("page=2", "page"), ("tags=a", "tags"),
])
def test_list_refuses_bad_filters_and_unknown_parameters(api, query, field):
    error = assert_envelope(api.client.get(f"/v1/jobs?{query}"), 422, "invalid_request")
    assert fields(error) == {field}


@pytest.mark.parametrize("path", ["/v1/sweeps?state=running", "/v1/presets?all=1", "/v1/datasets?page=2",
                                  f"/v1/sweeps/{'0' * 32}/curves?metric=fid", f"/v1/sweeps/{'0' * 32}/trials?n=1",
                                  "/v1/jobs/{job}/logs?after=0",
                                  "/v1/jobs/{job}/samples?step=3", "/v1/jobs/{job}/checkpoints?final=1",
                                  "/v1/jobs/{job}/metrics?name=loss_d", "/v1/jobs/{job}/samples.gif?frames=3"])
def test_every_list_endpoint_refuses_unknown_parameters(api, path):
    job_id = submit(api.client)["id"]
    url = path.format(job=job_id)
    error = assert_envelope(api.client.get(url), 422, "invalid_request")
    assert fields(error) == {url.rsplit("?", 1)[1].split("=")[0]}
    assert "unknown query parameter" in error["details"][0]["problem"]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # PostgreSQL's indexes only
def test_postgres_answers_the_filters_from_their_indexes(api):
    """The plans of the tag and name filters use ix_jobs_tags and ix_jobs_name_trgm once
    sequential scans are priced out: the indexes exist, and their operator classes match the
    SQL the list sends (a jsonb @> and an ILIKE; a json column, LIKE on lower(name) or a btree
    would not be usable)."""
    assert api.db.engine.dialect.name == "postgresql"  # (SQLite filters by scanning: embedded deployments are small)
    base = datetime(2025, 1, 1, tzinfo=timezone.utc)
    rows = [{"id": secrets.token_hex(16), "tenant": "default", "name": f"job-{i}", "spec": {}, "status": "succeeded",
             "queue": "cpu", "total_steps": 3, "tags": [f"t{i % 100}", "all"], "created_at": base + timedelta(seconds=i),
             "updated_at": base} for i in range(5000)]
    with api.db.session() as session:
        session.execute(insert(Job), rows)
        session.execute(text("ANALYZE jobs"))
    dialect = api.db.engine.dialect
    for stmt, index in [(job_page(lambda s: s, None, None, 50, tags=["t7"], dialect="postgresql"), "ix_jobs_tags"),
                        (job_page(lambda s: s, None, None, 50, q="B-123", dialect="postgresql"), "ix_jobs_name_trgm")]:
        compiled = stmt.compile(dialect=dialect, compile_kwargs={"literal_binds": True})
        with api.db.session() as session:
            session.execute(text("SET LOCAL enable_seqscan = off"))
            session.execute(text("SET LOCAL enable_indexscan = off"))  # not the created_at index walked in order
            plan = "\n".join(session.execute(text(f"EXPLAIN {compiled}")).scalars())
        assert index in plan, plan
    with api.db.read() as session:
        found = session.execute(job_page(lambda s: s, None, None, 50, tags=["t7", "all"], q="B-1",
                                         dialect="postgresql")).all()
    assert sorted(r.name for r in found) == sorted(f"job-{i}" for i in range(5000) if i % 100 == 7 and "b-1" in f"job-{i}")
