"""Item 14 with the real worker: its notifier thread calls an ended job's webhook (a local HTTP
receiver checking the signature), after the job's final status, off the training path."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

from ganforge.jobs import lifecycle
from ganforge.jobs.models import Job, JobEvent
from ganforge.jobs.services import Services
from ganforge.jobs.settings import Settings

from tests.api.test_job_webhooks import SECRET, Receiver
from tests.integration.test_worker import ring_spec


def test_the_worker_calls_the_webhook_of_a_job_that_succeeded(service_env, start_worker, tmp_path):
    env = {**service_env, "GANFORGE_WEBHOOK_SECRET": SECRET, "GANFORGE_WEBHOOK_ALLOW_PRIVATE": "1"}
    receiver = Receiver(204)
    svc = Services.from_settings(Settings.from_env(env))
    start_worker(env, tmp_path)
    try:
        with svc.db.session() as session:
            job_id = lifecycle.submit(session, ring_spec(steps=40), notify_url=receiver.url).id
        svc.queue.enqueue(job_id, "cpu")
        deadline = time.monotonic() + 120
        while not receiver.received and time.monotonic() < deadline:
            time.sleep(0.2)
        ((headers, body),) = receiver.received
        assert headers["X-Ganforge-Signature"] == "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        document = json.loads(body)
        assert document["job"]["id"] == job_id and document["job"]["status"] == "succeeded"
        assert document["job"]["progress_step"] == 40
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with svc.db.read() as session:
                if session.get(Job, job_id).notify_state == "delivered":
                    break
            time.sleep(0.2)
        with svc.db.read() as session:
            messages = [e.message for e in session.query(JobEvent).filter_by(job_id=job_id).order_by(JobEvent.id)]
        assert messages[-1] == "webhook delivered: HTTP 204 (attempt 1 of 5)", messages
    finally:
        receiver.close()
        svc.db.dispose()
