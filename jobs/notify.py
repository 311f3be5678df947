"""Webhooks: a job's ``notify.webhook_url`` is called once the job ends, off the request and
training paths.

* **Checked at submit** (``check_url``) under the dataset URLs' SSRF rules
  (``ganforge.jobs.datasets.check_public_https``: https only, a host resolving to public addresses only,
  no credentials in the URL) and again before each delivery (DNS may answer differently); the
  connection goes to the address checked (no second lookup) and follows no redirect.
  ``GANFORGE_WEBHOOK_ALLOW_PRIVATE`` admits http:// and private hosts (a trusted network, tests).
* **Signed**: the raw JSON body's HMAC-SHA256 with ``GANFORGE_WEBHOOK_SECRET`` in
  ``X-Ganforge-Signature: sha256=<hex>``; ``X-Ganforge-Timestamp`` (Unix seconds) repeats the
  body's ``sent_at``, so a receiver that checks the signature and refuses old timestamps refuses
  replays; ``X-Ganforge-Delivery`` (also ``delivery`` in the body) is the same for every attempt
  of one delivery, to drop duplicates.
* **Delivered by a notifier thread** in every worker (``start``): it claims due deliveries
  (``notify_state`` pending on an ended job or sweep) with a conditional UPDATE, so one process sends each;
  a claim older than ``CLAIM_SECONDS`` (its process died) is taken again. Each delivery retries
  with exponential backoff (tenacity) for ``GANFORGE_WEBHOOK_ATTEMPTS`` attempts on a network
  error or a non-2xx answer, then gives up. Every attempt is an event of the job (a sweep, which
  has no event history, gets log lines).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StrictStr
from sqlalchemy import select, update
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from ganforge.jobs import datasets
from ganforge.jobs.db import Database
from ganforge.jobs.models import TERMINAL, Job, JobEvent, Sweep, utcnow
from ganforge.jobs.settings import Settings

log = logging.getLogger(__name__)

SIGNATURE_HEADER, TIMESTAMP_HEADER, DELIVERY_HEADER = "X-Ganforge-Signature", "X-Ganforge-Timestamp", "X-Ganforge-Delivery"
MAX_URL = 2048
CLAIM_SECONDS = 600  # a delivery claimed this long ago by a process that never finished it is sent again
_CONTROL = re.compile(r"[\x00-\x20\x7f\\]")


class Notify(BaseModel):
    """Whom to tell when a job or a sweep ends (the ``notify`` of a job's submit body and of a
    sweep spec)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    webhook_url: StrictStr = Field(max_length=MAX_URL, description=(
        "called with a signed JSON POST once it ends (succeeded, failed or cancelled): https:// on a public "
        "host (the rules of dataset URLs); X-Ganforge-Signature: sha256=<HMAC-SHA256 of the raw body with the "
        "deployment's webhook secret>, X-Ganforge-Timestamp (the body's sent_at), X-Ganforge-Delivery"))


class WebhookRefused(ValueError):
    """The URL may not be called (scheme, host, SSRF); the message says why."""


class DeliveryFailed(RuntimeError):
    """One attempt failed: a network error or a non-2xx answer (retried)."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str  # with the query
    addresses: tuple[str, ...]


def check_url(url: str, settings: Settings, resolver=datasets.resolve) -> Target:
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        raise WebhookRefused(f"must be a URL of 1 to {MAX_URL} characters")
    if _CONTROL.search(url):
        raise WebhookRefused("must not contain spaces, control characters or backslashes")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - a bad port raises here
    except ValueError as exc:
        raise WebhookRefused(f"not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if parts.fragment:
        raise WebhookRefused("must not have a #fragment")
    if settings.webhook_allow_private and scheme in ("http", "https"):
        host = (parts.hostname or "").lower()
        if not host or parts.username is not None or parts.password is not None:
            raise WebhookRefused("needs a host and no credentials")
        port = parts.port or (443 if scheme == "https" else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return Target(scheme, host, port, path, tuple(resolver(host, port)))
    if scheme != "https":
        raise WebhookRefused(f"the {scheme or 'empty'}:// scheme is not accepted: give an https:// URL")
    try:
        source = datasets.check_public_https(parts, (), resolver)
    except datasets.DatasetSourceError as exc:
        raise WebhookRefused(str(exc)) from None
    return Target("https", source.host, source.port, source.key, source.addresses)


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def payload(kind: str, row: Job | Sweep, delivery: str, sent_at: int) -> bytes:
    about: dict[str, Any] = {"id": row.id, "name": row.name, "status": row.status, "error": row.error,
                             "finished_at": row.finished_at.isoformat() if row.finished_at else None}
    if isinstance(row, Job):
        about.update(progress_step=row.progress_step, total_steps=row.total_steps, attempt=row.attempt,
                     tags=list(row.tags or []), sweep_id=row.sweep_id)
    else:
        about.update(planned_trials=row.planned_trials)
    document = {"type": f"{kind}.ended", "delivery": delivery, "sent_at": sent_at, kind: about}
    return json.dumps(document, separators=(",", ":")).encode()


def post(target: Target, body: bytes, headers: dict[str, str], timeout: float) -> int:
    """POST to the checked address (never a second lookup); a non-2xx answer or a network error
    is DeliveryFailed. Redirects are not followed (a 3xx fails)."""
    if not target.addresses:
        raise DeliveryFailed(f"{target.host} has no address")
    if target.scheme == "https":
        connection: http.client.HTTPConnection = datasets.PinnedHTTPS(target.host, target.addresses[0], target.port,
                                                                        timeout)
    else:
        connection = http.client.HTTPConnection(target.addresses[0], target.port, timeout=timeout)
    try:
        connection.request("POST", target.path, body=body, headers={
            "Host": target.host if target.port in (80, 443) else f"{target.host}:{target.port}",
            "Content-Type": "application/json", "User-Agent": "ganforge-webhook", **headers})
        response = connection.getresponse()
        response.read(64 * 1024)
        if not 200 <= response.status < 300:
            raise DeliveryFailed(f"HTTP {response.status}")
        return response.status
    except (OSError, http.client.HTTPException) as exc:
        # the tenant sees one reason (no errno: the worker must not become a probe); the log has more
        log.warning("webhook to %s:%d failed: %r", target.host, target.port, exc)
        raise DeliveryFailed("connection failed") from None
    finally:
        connection.close()


TABLES: dict[str, type[Job] | type[Sweep]] = {"job": Job, "sweep": Sweep}


def _record(db: Database, kind: str, row_id: str, message: str, state: str | None = None) -> None:
    """A delivery attempt: a job's event (a sweep has no event history: the worker's log line);
    with ``state``, the delivery's end."""
    table = TABLES[kind]
    with db.session() as session:
        if state is not None:
            session.execute(update(table).where(table.id == row_id).values(notify_state=state, notify_claimed_at=None))
        if kind == "job":
            status = session.scalar(select(Job.status).where(Job.id == row_id))
            session.add(JobEvent(job_id=row_id, from_status=status, to_status=status, message=message))
    log.info("%s %s: %s", kind, row_id, message, extra={"job_id": row_id} if kind == "job" else {"sweep_id": row_id})


def deliver(db: Database, settings: Settings, kind: str, row_id: str, resolver=datasets.resolve) -> str:
    """Send one claimed webhook (``kind`` job or sweep), with retries: ``delivered`` or ``failed``."""
    with db.read() as session:
        row = session.get(TABLES[kind], row_id)
        url = row.notify_url
        session.expunge(row)
    delivery = uuid.uuid4().hex
    attempts = settings.webhook_attempts
    number = 0

    def attempt() -> int:
        nonlocal number
        number += 1
        try:
            target = check_url(url, settings, resolver)  # again: DNS may answer differently now
        except WebhookRefused as exc:
            raise DeliveryFailed(f"refused: {exc}") from None
        sent_at = int(time.time())
        body = payload(kind, row, delivery, sent_at)
        return post(target, body, {SIGNATURE_HEADER: sign(settings.webhook_secret, body),
                                   TIMESTAMP_HEADER: str(sent_at), DELIVERY_HEADER: delivery},
                    settings.webhook_timeout_seconds)

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        _record(db, kind, row_id, f"webhook attempt {number} of {attempts} failed ({exc}); retrying in "
                                  f"{state.upcoming_sleep:.1f} s")

    retrying = Retrying(retry=retry_if_exception_type(DeliveryFailed), stop=stop_after_attempt(attempts),
                        wait=wait_exponential(multiplier=settings.webhook_backoff_seconds, max=60.0),
                        before_sleep=before_sleep, reraise=True)
    try:
        status = retrying(attempt)
    except DeliveryFailed as exc:
        _record(db, kind, row_id, f"webhook gave up after {number} attempt(s): {exc}", "failed")
        return "failed"
    _record(db, kind, row_id, f"webhook delivered: HTTP {status} (attempt {number} of {attempts})", "delivered")
    return "delivered"


def claim_due(db: Database, limit: int = 20) -> list[tuple[str, str]]:
    """The ended jobs and sweeps whose webhook is due, as (kind, id), each claimed for this
    process (a conditional UPDATE: one process wins each)."""
    now = utcnow()
    claimed: list[tuple[str, str]] = []
    for kind, table in TABLES.items():
        with db.session() as session:
            session.execute(update(table).where(table.notify_state == "sending",
                                                table.notify_claimed_at < now - timedelta(seconds=CLAIM_SECONDS))
                            .values(notify_state="pending"))
            due = list(session.scalars(select(table.id).where(table.notify_state == "pending",
                                                              table.status.in_(TERMINAL))
                                       .order_by(table.finished_at).limit(limit)))
        for row_id in due:
            with db.session() as session:
                won = session.execute(update(table).where(table.id == row_id, table.notify_state == "pending")
                                      .values(notify_state="sending", notify_claimed_at=now)).rowcount
            if won:
                claimed.append((kind, row_id))
    return claimed


def deliver_due(db: Database, settings: Settings, resolver=datasets.resolve) -> dict[str, str]:
    """Claim and send every due webhook, one after the other (tests; ``start`` runs them in
    parallel): {id: delivered | failed}."""
    return {row_id: deliver(db, settings, kind, row_id, resolver) for kind, row_id in claim_due(db)}


def start(db: Database, settings: Settings, interval_seconds: float = 1.0, stop: threading.Event | None = None,
          parallel: int = 4) -> threading.Thread:
    """The notifier: every ``interval_seconds``, claim due webhooks and send them on a small pool
    (a slow receiver's retries hold one of its threads, not the others' deliveries)."""
    stop = stop or threading.Event()
    pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="webhook")
    busy = threading.Semaphore(parallel)

    def send(kind: str, row_id: str) -> None:
        try:
            deliver(db, settings, kind, row_id)
        except Exception:  # the database away: the claim ages out and the delivery is retried later
            log.exception("webhook of %s %s", kind, row_id)
        finally:
            busy.release()

    def loop() -> None:
        while not stop.wait(interval_seconds):
            try:
                for kind, row_id in claim_due(db, limit=parallel):
                    busy.acquire()
                    pool.submit(send, kind, row_id)
            except Exception:
                log.exception("notifier pass failed")

    thread = threading.Thread(target=loop, name="notifier", daemon=True)
    thread.start()
    return thread
