"""Item 14: a job's notify.webhook_url, called once the job ends with an HMAC-SHA256-signed JSON
body, retried with backoff, under the dataset URLs' SSRF rules; each attempt is an event. The
receivers are real HTTP servers on loopback (allowed by GANFORGE_WEBHOOK_ALLOW_PRIVATE)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ganforge.jobs import notify
from ganforge.jobs.models import Job

from tests.api.test_api import SPEC

SECRET = "webhook-test-secret"


class Receiver:
    """A local HTTP server answering ``statuses`` in turn (the last one from then on)."""

    def __init__(self, *statuses: int):
        self.statuses, self.received = list(statuses), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.received.append((dict(self.headers), body))
                status = outer.statuses.pop(0) if len(outer.statuses) > 1 else outer.statuses[0]
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/ganforge?token=t"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def hooked(make_api):
    # finished_view_cache 0: the job view shows the delivery events at once (else within
    # GANFORGE_FINISHED_VIEW_SECONDS, as any change to an ended job)
    return make_api(webhook_secret=SECRET, webhook_allow_private=True, webhook_attempts=3,
                    webhook_backoff_seconds=0.05, finished_view_cache=0)


def submit(api, url):
    response = api.client.post("/v1/jobs", json={**SPEC, "notify": {"webhook_url": url}})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def events(api, job_id):
    return [e["message"] for e in api.client.get(f"/v1/jobs/{job_id}").get_json()["events"]]


def test_an_ended_job_calls_its_webhook_with_a_signed_body(hooked):
    receiver = Receiver(204)
    try:
        job_id = submit(hooked, receiver.url)
        assert notify.deliver_due(hooked.db, hooked.services.settings) == {}  # not ended yet: nothing is sent
        assert hooked.client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200  # queued -> cancelled
        assert notify.deliver_due(hooked.db, hooked.services.settings) == {job_id: "delivered"}
        assert notify.deliver_due(hooked.db, hooked.services.settings) == {}  # once
    finally:
        receiver.close()
    ((headers, body),) = receiver.received
    # what a receiver does: the HMAC of the raw body with the shared secret, compared in constant time
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Ganforge-Signature"], expected)
    document = json.loads(body)
    assert document["type"] == "job.ended" and document["job"]["id"] == job_id
    assert document["job"]["status"] == "cancelled"
    assert headers["X-Ganforge-Timestamp"] == str(document["sent_at"]) and abs(document["sent_at"] - time.time()) < 60
    assert headers["X-Ganforge-Delivery"] == document["delivery"] and headers["Content-Type"] == "application/json"
    tampered = body.replace(b"cancelled", b"succeeded")
    assert not hmac.compare_digest(headers["X-Ganforge-Signature"],
                                   "sha256=" + hmac.new(SECRET.encode(), tampered, hashlib.sha256).hexdigest())
    assert events(hooked, job_id)[-1] == "webhook delivered: HTTP 204 (attempt 1 of 3)"


def test_a_failing_receiver_is_retried_then_given_up(hooked):
    receiver = Receiver(500, 503, 200)  # two failures, then it would take it: retried, delivered
    flaky = submit(hooked, receiver.url)
    hooked.client.post(f"/v1/jobs/{flaky}/cancel")
    try:
        assert notify.deliver_due(hooked.db, hooked.services.settings) == {flaky: "delivered"}
        assert len(receiver.received) == 3
        # one delivery: the same id on every attempt, each attempt's body signed afresh
        assert len({h["X-Ganforge-Delivery"] for h, _ in receiver.received}) == 1
        messages = events(hooked, flaky)
        assert [m.split(" (")[0] for m in messages if m.startswith("webhook")] == [
            "webhook attempt 1 of 3 failed", "webhook attempt 2 of 3 failed", "webhook delivered: HTTP 200"]
        assert "HTTP 500" in messages[-3] and "HTTP 503" in messages[-2]

        receiver.statuses, receiver.received = [500], []
        broken = submit(hooked, receiver.url)
        hooked.client.post(f"/v1/jobs/{broken}/cancel")
        started = time.monotonic()
        assert notify.deliver_due(hooked.db, hooked.services.settings) == {broken: "failed"}
        assert len(receiver.received) == 3 and time.monotonic() - started >= 0.05 + 0.1  # backoff between tries
        assert events(hooked, broken)[-1] == "webhook gave up after 3 attempt(s): HTTP 500"
        with hooked.db.read() as session:
            assert session.get(Job, broken).notify_state == "failed"
            assert session.get(Job, flaky).notify_state == "delivered"
    finally:
        receiver.close()


def test_an_unreachable_receiver_is_given_up_with_one_reason(hooked):
    receiver = Receiver(204)
    url = receiver.url
    receiver.close()  # nothing listens there any more
    job_id = submit(hooked, url)
    hooked.client.post(f"/v1/jobs/{job_id}/cancel")
    assert notify.deliver_due(hooked.db, hooked.services.settings) == {job_id: "failed"}
    assert events(hooked, job_id)[-1] == "webhook gave up after 3 attempt(s): connection failed"


@pytest.mark.parametrize("url, problem", [
    ("http://127.0.0.1:9/hook", "the http:// scheme is not accepted"),
    ("https://127.0.0.1/hook", "non-public address"),
    ("https://169.254.169.254/latest/meta-data/", "non-public address"),
    ("https://[::ffff:10.0.0.1]/hook", "non-public address"),
    ("https://user:pw@example.com/hook", "credentials"),
    ("file:///etc/passwd", "file:// scheme"),
    ("not a url", "spaces"),
])
def test_ssrf_refused_webhooks_are_a_422_naming_the_field(make_api, url, problem):
    api = make_api(webhook_secret=SECRET)  # GANFORGE_WEBHOOK_ALLOW_PRIVATE off: the production rules
    response = api.client.post("/v1/jobs", json={**SPEC, "notify": {"webhook_url": url}})
    assert response.status_code == 422, response.get_json()
    (detail,) = response.get_json()["error"]["details"]
    assert detail["field"] == "notify.webhook_url" and problem in detail["problem"], detail
    assert api.queue.sent == []


def test_notify_without_a_deployment_secret_or_with_bad_shape_is_a_422(make_api):
    api = make_api()  # no GANFORGE_WEBHOOK_SECRET
    response = api.client.post("/v1/jobs", json={**SPEC, "notify": {"webhook_url": "https://example.com/h"}})
    assert response.status_code == 422
    assert response.get_json()["error"]["details"][0]["field"] == "notify.webhook_url"
    assert "GANFORGE_WEBHOOK_SECRET" in response.get_json()["error"]["details"][0]["problem"]
    api = make_api(webhook_secret=SECRET)
    for body, field in (({"webhook_url": 5}, "notify.webhook_url"), ({"url": "https://x"}, "notify.url"),
                        ("https://x", "notify")):
        response = api.client.post("/v1/jobs", json={**SPEC, "notify": body})
        assert response.status_code == 422
        assert field in {d["field"] for d in response.get_json()["error"]["details"]}, response.get_json()


# ---- per sweep ---------------------------------------------------------------------------------
def test_an_ended_sweep_calls_its_webhook_and_its_trials_do_not(hooked):
    from tests.api.test_sweeps import sweep

    receiver = Receiver(200)
    try:
        response = hooked.client.post("/v1/sweeps", json=sweep(notify={"webhook_url": receiver.url}))
        assert response.status_code == 201, response.get_json()
        sweep_id = response.get_json()["id"]
        assert hooked.client.post(f"/v1/sweeps/{sweep_id}/cancel").status_code == 200  # trials cancelled too
        assert notify.deliver_due(hooked.db, hooked.services.settings) == {sweep_id: "delivered"}
    finally:
        receiver.close()
    ((headers, body),) = receiver.received  # the sweep's, none for its trials
    assert headers["X-Ganforge-Signature"] == "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    document = json.loads(body)
    assert document["type"] == "sweep.ended" and document["sweep"]["id"] == sweep_id
    assert document["sweep"]["status"] == "cancelled"


def test_a_sweeps_ssrf_refused_webhook_is_a_422_naming_the_field(make_api):
    from tests.api.test_sweeps import sweep

    api = make_api(webhook_secret=SECRET)
    response = api.client.post("/v1/sweeps", json=sweep(notify={"webhook_url": "https://10.1.2.3/hook"}))
    assert response.status_code == 422 and response.get_json()["error"]["code"] == "invalid_sweep"
    (detail,) = response.get_json()["error"]["details"]
    assert detail["field"] == "notify.webhook_url" and "non-public address" in detail["problem"]
    assert api.queue.sent == []
