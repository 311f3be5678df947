"""GET /metrics: Prometheus' text format (prometheus-client).

Every request is counted by method, route (Flask's URL rule such as ``/v1/jobs/<job_id>``, never
the raw path: one series per route, not per job id) and status, with a latency histogram. At each
scrape the database gives the jobs by state and the queued jobs per queue, and the broker the
messages waiting per queue. Under gunicorn the process answering sums every process's counters
(``ganforge.jobs.telemetry``: PROMETHEUS_MULTIPROC_DIR).

Access: with API keys required, an admin key only (``Authorization: Bearer``, which Prometheus'
scrape config sends); the counts span every tenant. One listener for everything: no second port
to secure, publish or forget in a firewall.
"""

from __future__ import annotations

import time

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select

from ganforge.api.auth import principal
from ganforge.api.errors import APIError
from ganforge.api.state import services
from ganforge.jobs import telemetry
from ganforge.jobs.models import STATUSES, Job

bp = Blueprint("metrics", __name__)


class _ControlPlane:
    """Figures read at scrape time: the database's jobs by state and queued jobs per queue, the
    broker's waiting messages per queue."""

    def collect(self):
        svc = services()
        with svc.db.read() as session:
            by_status = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
            queued = dict(session.execute(select(Job.queue, func.count()).where(Job.status == "queued")
                                          .group_by(Job.queue)).all())
        jobs = GaugeMetricFamily("ganforge_jobs", "jobs by state", labels=["state"])
        for status in STATUSES:
            jobs.add_metric([status], by_status.get(status, 0))
        yield jobs
        waiting = GaugeMetricFamily("ganforge_queued_jobs", "queued jobs per queue (database)", labels=["queue"])
        depth = GaugeMetricFamily("ganforge_queue_depth", "messages waiting in each broker queue", labels=["queue"])
        for queue in sorted(queued):
            waiting.add_metric([queue], queued[queue])
            messages = svc.queue.depth(queue)
            if messages is not None:
                depth.add_metric([queue], messages)
        yield waiting
        yield depth


@bp.get("/metrics")
def scrape():
    if not principal().is_admin:
        raise APIError(403, "forbidden", "/metrics needs an admin API key (the figures span every tenant)")
    control = CollectorRegistry(auto_describe=True)
    control.register(_ControlPlane())
    body = generate_latest(telemetry.registry()) + generate_latest(control)
    return Response(body, mimetype=None, content_type=CONTENT_TYPE_LATEST)


def _begin() -> None:
    g.metrics_started = time.perf_counter()


def _end(response: Response) -> Response:
    started = g.pop("metrics_started", None)
    rule = request.url_rule.rule if request.url_rule is not None else "(unmatched)"
    telemetry.HTTP_REQUESTS.labels(request.method, rule, str(response.status_code)).inc()
    if started is not None:
        telemetry.HTTP_LATENCY.labels(request.method, rule).observe(time.perf_counter() - started)
    return response


def init_app(app: Flask) -> None:
    app.before_request(_begin)
    app.after_request(_end)
    app.register_blueprint(bp)
