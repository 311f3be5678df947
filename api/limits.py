"""Per-tenant submission limits: a sliding-window rate and caps on queued and active jobs.

Both are counted from the jobs table (the ``(tenant, created_at, id)`` index), not from process
memory, so they hold across every API process and host with no shared cache. Two submissions
racing past the last free slot may both pass: the caps are soft by at most the number of
concurrent requests, which is fine for fairness (they are not a billing boundary).
"""

from __future__ import annotations

import math
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ganforge.api.errors import APIError
from ganforge.jobs.models import Job, utcnow
from ganforge.jobs.settings import Settings

WINDOW = timedelta(seconds=60)
CAP_RETRY_AFTER = 30  # seconds: a queue drains at training speed, there is no exact moment to name


def check_submission(session: Session, settings: Settings, tenant: str) -> dict[str, str]:
    """Raise 429 (with Retry-After) when ``tenant`` may not submit now; else the rate-limit
    headers for the response (the limit, and what is left of it after this submission)."""
    rate = settings.submit_rate_per_minute
    headers: dict[str, str] = {}
    if rate > 0:
        now = utcnow()
        # The newest `rate` submissions inside the window: if there are that many, the window is
        # full until the oldest of them leaves it.
        recent = session.scalars(
            select(Job.created_at).where(Job.tenant == tenant, Job.created_at > now - WINDOW)
            .order_by(Job.created_at.desc()).limit(rate)
        ).all()
        # Per 60 s window (X-RateLimit-Window), the tenant's submissions left after this one.
        headers = {"X-RateLimit-Limit": str(rate), "X-RateLimit-Window": "60",
                   "X-RateLimit-Remaining": str(max(0, rate - len(recent) - 1))}
        if len(recent) >= rate:
            wait = max(1, math.ceil((recent[-1] + WINDOW - now).total_seconds()))
            raise APIError(429, "rate_limited", f"at most {rate} submissions per minute per tenant; "
                           f"try again in {wait} s", headers={**headers, "X-RateLimit-Remaining": "0",
                                                               "Retry-After": str(wait)})
    counts = dict(session.execute(
        select(Job.status, func.count()).where(Job.tenant == tenant, Job.status.in_(("queued", "running")))
        .group_by(Job.status)
    ).all())
    queued, running = counts.get("queued", 0), counts.get("running", 0)
    # Refused by a cap, the tenant can submit nothing until Retry-After: Remaining says so (the
    # headers computed above counted this submission as accepted).
    refused = {**headers, "X-RateLimit-Remaining": "0"} if headers else {}
    if queued >= settings.max_queued_per_tenant:
        raise APIError(429, "too_many_queued", f"the tenant has {queued} queued jobs, the limit is "
                       f"{settings.max_queued_per_tenant}; wait for some to start or cancel some",
                       headers={**refused, "Retry-After": str(CAP_RETRY_AFTER)})
    if queued + running >= settings.max_active_per_tenant:
        raise APIError(429, "too_many_active", f"the tenant has {queued + running} queued or running jobs, the limit "
                       f"is {settings.max_active_per_tenant}", headers={**refused, "Retry-After": str(CAP_RETRY_AFTER)})
    return headers
