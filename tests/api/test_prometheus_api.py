"""Item 11, in one process: /metrics counts requests by route (the URL rule, never the raw path)
and status, times them, reads jobs by state and queue depth at each scrape; admin-only when keys
are required. (tests/integration/test_prometheus_metrics.py: under gunicorn, and the worker's.)"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from ganforge.jobs.keys import create_key

from tests.api.test_api import SPEC


def scrape(client, headers=None) -> dict:
    response = client.get("/metrics", headers=headers or {})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.get_data(as_text=True)) for s in family.samples}


def value(found, name, **labels) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def test_requests_by_route_and_status_jobs_by_state_and_queue_depth(api):
    before = scrape(api.client)
    ids = [api.client.post("/v1/jobs", json={**SPEC, "resources": {"devices": d}}).get_json()["id"] for d in (1, 1, 2)]
    for job_id in ids:
        assert api.client.get(f"/v1/jobs/{job_id}").status_code == 200
    assert api.client.get("/v1/jobs/" + "0" * 32).status_code == 404
    assert api.client.get("/v1/no-such-thing").status_code == 404
    after = scrape(api.client)
    route = "/v1/jobs/<job_id>"
    delta = lambda name, **labels: value(after, name, **labels) - value(before, name, **labels)  # noqa: E731
    assert delta("ganforge_http_requests_total", method="GET", route=route, status="200") == 3
    assert delta("ganforge_http_requests_total", method="GET", route=route, status="404") == 1
    assert delta("ganforge_http_requests_total", method="POST", route="/v1/jobs", status="201") == 3
    assert delta("ganforge_http_requests_total", method="GET", route="(unmatched)", status="404") == 1
    assert delta("ganforge_http_request_duration_seconds_count", method="GET", route=route) == 4
    assert not any(job_id in str(labels) for _, labels in after for job_id in ids)
    assert value(after, "ganforge_jobs", state="queued") == 3 and value(after, "ganforge_jobs", state="running") == 0
    assert value(after, "ganforge_queued_jobs", queue="cpu") == 2 and value(after, "ganforge_queued_jobs", queue="cpu-x2") == 1
    assert value(after, "ganforge_queue_depth", queue="cpu") == 2  # the broker's messages (the test's recorder)
    api.client.post(f"/v1/jobs/{ids[0]}/cancel")
    assert value(scrape(api.client), "ganforge_jobs", state="cancelled") == 1


def test_metrics_need_an_admin_key_when_keys_are_required(make_api):
    api = make_api(auth="required")
    tenant, admin = create_key(api.db, "a")[1], create_key(api.db, "ops", is_admin=True)[1]
    assert api.client.get("/metrics").status_code == 401
    refused = api.client.get("/metrics", headers={"Authorization": f"Bearer {tenant}"})
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "forbidden"
    found = scrape(api.client, {"Authorization": f"Bearer {admin}"})
    assert value(found, "ganforge_http_requests_total", method="GET", route="/metrics", status="403") >= 1
