"""The job lifecycle on PostgreSQL and SQLite, each migrated by Alembic: claims, leases, metrics,
terminal states and the transitions that must be refused."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import event, func, select, update

from gan_core.spec import JobSpec
from ganforge.jobs import lifecycle
from ganforge.jobs.db import Database
from ganforge.jobs.lifecycle import Claim, IllegalTransition, JobNotFound, LeaseLost
from ganforge.jobs.models import Artifact, Job, JobEvent, Metric, utcnow

LEASE = 60


@pytest.fixture(params=["postgresql", "sqlite"])
def db(request) -> Database:
    """A Database on a freshly migrated, empty database of each kind."""
    url = request.getfixturevalue("migrated_pg" if request.param == "postgresql" else "migrated_sqlite")
    database = Database(url)
    yield database
    database.dispose()


def make_spec(device: str = "auto") -> JobSpec:
    return JobSpec.model_validate({"name": "ring", "dataset": {"name": "ring8"}, "train": {"steps": 50},
                                   "device": device})


def submit(db: Database, **kwargs) -> str:
    with db.session() as session:
        return lifecycle.submit(session, make_spec(), **kwargs).id


def job_row(db: Database, job_id: str) -> Job:
    with db.session() as session:
        return lifecycle.get(session, job_id)


def events(db: Database, job_id: str) -> list[tuple[str | None, str, int]]:
    with db.session() as session:
        rows = session.execute(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)).scalars()
        return [(e.from_status, e.to_status, e.attempt) for e in rows]


def expire_lease(db: Database, job_id: str) -> None:
    """What the passing of time does to a worker that stopped heartbeating."""
    with db.session() as session:
        session.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=utcnow() - timedelta(seconds=1)))


# ---- submit and claim ---------------------------------------------------------------------------

def test_submit_makes_a_queued_job_with_an_event(db):
    job_id = submit(db, tenant="acme")
    job = job_row(db, job_id)
    assert (job.status, job.tenant, job.queue, job.total_steps, job.attempt) == ("queued", "acme", "cpu", 50, 0)
    assert JobSpec.model_validate(job.spec) == make_spec()
    assert job.created_at.tzinfo is not None and job.lease_token is None and not job.cancel_requested
    assert events(db, job_id) == [(None, "queued", 0)]

    with db.session() as session:
        assert lifecycle.submit(session, make_spec(device="cuda")).queue == "gpu"


def test_only_one_claim_wins(db):
    job_id = submit(db)
    first = lifecycle.claim(db, job_id, "w1", LEASE)
    assert isinstance(first, Claim) and first.attempt == 1 and first.worker_id == "w1" and len(first.token) == 32
    assert lifecycle.claim(db, job_id, "w2", LEASE) is None
    assert lifecycle.claim(db, job_id, "w1", LEASE) is None  # not even the holder claims twice

    job = job_row(db, job_id)
    assert (job.status, job.worker_id, job.lease_token, job.attempt) == ("running", "w1", first.token, 1)
    assert job.lease_expires_at > utcnow() + timedelta(seconds=LEASE - 10)
    assert job.started_at is not None
    assert events(db, job_id) == [(None, "queued", 0), ("queued", "running", 1)]

    with pytest.raises(JobNotFound):
        lifecycle.claim(db, "0" * 32, "w1", LEASE)


def test_concurrent_claims_from_threads(db):
    """Eight threads claim the same job at the same moment: exactly one gets it."""
    for _ in range(3):
        job_id = submit(db)
        barrier = threading.Barrier(8)
        results: list[Claim | None | BaseException] = []
        lock = threading.Lock()

        def worker(n: int) -> None:
            barrier.wait()
            try:
                outcome = lifecycle.claim(db, job_id, f"w{n}", LEASE)
            except BaseException as exc:  # collected: an exception in a thread would pass silently
                outcome = exc
            with lock:
                results.append(outcome)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert len(results) == 8
        assert not [r for r in results if isinstance(r, BaseException)], results
        winners = [r for r in results if r is not None]
        assert len(winners) == 1
        job = job_row(db, job_id)
        assert (job.attempt, job.lease_token, job.worker_id) == (1, winners[0].token, winners[0].worker_id)
        assert [e for e in events(db, job_id) if e[1] == "running"] == [("queued", "running", 1)]


def test_expired_lease_is_claimed_again_and_old_token_is_stale(db):
    job_id = submit(db)
    old = lifecycle.claim(db, job_id, "w1", LEASE)
    expire_lease(db, job_id)

    new = lifecycle.claim(db, job_id, "w2", LEASE)
    assert new is not None and new.attempt == 2 and new.token != old.token
    for stale_write in (
        lambda: lifecycle.heartbeat(db, job_id, old.token, LEASE),
        lambda: lifecycle.record_metrics(db, job_id, old.token, [(5, {"loss_d": 1.0})], LEASE),
        lambda: lifecycle.finish(db, job_id, old.token, "succeeded"),
    ):
        with pytest.raises(LeaseLost):
            stale_write()
    assert lifecycle.heartbeat(db, job_id, new.token, LEASE) is False
    job = job_row(db, job_id)
    assert (job.status, job.worker_id, job.attempt) == ("running", "w2", 2)
    # the lost attempt went back to the queue (with its reason recorded), then was claimed again
    assert events(db, job_id)[-2:] == [("running", "queued", 1), ("queued", "running", 2)]
    assert len(job.attempt_errors) == 1 and job.attempt_errors[0].startswith("attempt 1: worker w1")


def test_attempts_are_bounded_by_max_attempts(db):
    """A job whose worker keeps dying (its lease keeps expiring) is failed after max_attempts,
    not run forever."""
    job_id = submit(db)
    for attempt in range(1, 4):
        claim = lifecycle.claim(db, job_id, f"w{attempt}", LEASE)
        assert claim is not None and claim.attempt == attempt
        expire_lease(db, job_id)
    assert lifecycle.claim(db, job_id, "w4", LEASE) is None
    job = job_row(db, job_id)
    assert (job.status, job.attempt, job.lease_token) == ("failed", 3, None)
    assert "3 lost attempts" in job.error and job.finished_at is not None
    assert events(db, job_id)[-1] == ("running", "failed", 3)
    with pytest.raises(LeaseLost):
        lifecycle.heartbeat(db, job_id, claim.token, LEASE)


def test_a_lease_cannot_change_hands_during_a_write(db):
    """Worker A heartbeats just as worker B tries to take over A's expired lease. A's write is
    paused right after its first statement on the job: B must wait for A (and then find the
    lease renewed) rather than claim the job while A goes on writing as its owner."""
    job_id = submit(db)
    old = lifecycle.claim(db, job_id, "a", LEASE)
    expire_lease(db, job_id)

    a_started, release_a = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def pause_a(conn, cursor, statement, parameters, context, executemany):
        if threading.current_thread().name == "A" and "jobs" in statement and not a_started.is_set():
            a_started.set()
            release_a.wait(10)

    def run(name: str, call) -> None:
        try:
            outcome[name] = call()
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertions below
            outcome[name] = exc

    event.listen(db.engine, "after_cursor_execute", pause_a)
    try:
        thread_a = threading.Thread(name="A", target=run,
                                    args=("a", lambda: lifecycle.heartbeat(db, job_id, old.token, LEASE)))
        thread_a.start()
        assert a_started.wait(10)
        thread_b = threading.Thread(name="B", target=run, args=("b", lambda: lifecycle.claim(db, job_id, "b", LEASE)))
        thread_b.start()
        thread_b.join(1.0)  # B gets nowhere while A holds the row
        release_a.set()
        thread_a.join(20)
        thread_b.join(20)
    finally:
        release_a.set()
        event.remove(db.engine, "after_cursor_execute", pause_a)
    assert outcome == {"a": False, "b": None}
    job = job_row(db, job_id)
    assert (job.lease_token, job.worker_id, job.attempt) == (old.token, "a", 1)
    assert job.lease_expires_at > utcnow()


def test_release_requeues_a_running_job(db):
    job_id = submit(db)
    claim = lifecycle.claim(db, job_id, "w1", LEASE)
    lifecycle.release(db, job_id, claim.token, "worker shutting down")
    job = job_row(db, job_id)
    assert (job.status, job.lease_token, job.worker_id) == ("queued", None, None)
    with pytest.raises(LeaseLost):
        lifecycle.heartbeat(db, job_id, claim.token, LEASE)
    again = lifecycle.claim(db, job_id, "w2", LEASE)
    assert again is not None and again.attempt == 2


# ---- writes under a lease -----------------------------------------------------------------------

def test_stale_or_wrong_tokens_are_refused(db):
    job_id = submit(db)
    with pytest.raises(LeaseLost):  # queued: nobody holds a lease
        lifecycle.heartbeat(db, job_id, "0" * 32, LEASE)
    claim = lifecycle.claim(db, job_id, "w1", LEASE)
    for write in (
        lambda token: lifecycle.heartbeat(db, job_id, token, LEASE, step=3),
        lambda token: lifecycle.record_metrics(db, job_id, token, [(3, {"loss_d": 0.5})], LEASE),
        lambda token: lifecycle.record_artifact(db, job_id, token, kind="sample_grid", step=3, key="k", size=1,
                                                sha256="0" * 64, content_type="image/png"),
    ):
        with pytest.raises(LeaseLost):
            write("f" * 32)
        write(claim.token)
    with pytest.raises(JobNotFound):
        lifecycle.heartbeat(db, "0" * 32, claim.token, LEASE)


def test_heartbeat_extends_lease_records_progress_and_reports_cancel(db):
    job_id = submit(db)
    claim = lifecycle.claim(db, job_id, "w1", 5)
    before = job_row(db, job_id).lease_expires_at
    assert lifecycle.heartbeat(db, job_id, claim.token, LEASE, step=7) is False
    job = job_row(db, job_id)
    assert job.progress_step == 7 and job.lease_expires_at > before + timedelta(seconds=30)

    lifecycle.request_cancel(db, job_id)
    assert lifecycle.heartbeat(db, job_id, claim.token, LEASE) is True
    assert lifecycle.record_metrics(db, job_id, claim.token, [(8, {"loss_d": 1.0})], LEASE) is True
    assert lifecycle.is_cancel_requested(db, job_id) is True
    assert job_row(db, job_id).status == "running"  # still running until the worker finishes it


def metric_rows(db: Database, job_id: str) -> dict[tuple[str, int], float]:
    with db.session() as session:
        metrics = session.execute(select(Metric).where(Metric.job_id == job_id)).scalars()
        return {(m.name, m.step): m.value for m in metrics}


def test_record_metrics_is_idempotent_per_name_and_step(db):
    job_id = submit(db)
    claim = lifecycle.claim(db, job_id, "w1", LEASE)
    lifecycle.record_metrics(db, job_id, claim.token, [(10, {"loss_d": 1.0, "loss_g": 2.0})], LEASE)
    lifecycle.record_metrics(db, job_id, claim.token, [(10, {"loss_d": 1.5})], LEASE)  # retried write
    assert metric_rows(db, job_id) == {("loss_d", 10): 1.5, ("loss_g", 10): 2.0}

    # A batch of several steps, one (name, step) twice in it: the last value wins.
    lifecycle.record_metrics(db, job_id, claim.token,
                             [(20, {"loss_d": 0.1}), (30, {"loss_d": 0.2}), (30, {"loss_d": 0.3})], LEASE)
    rows = metric_rows(db, job_id)
    assert len(rows) == 4 and rows[("loss_d", 20)] == 0.1 and rows[("loss_d", 30)] == 0.3
    job = job_row(db, job_id)
    assert job.latest_metrics == {"step": 30, "loss_d": 0.3} and job.progress_step == 30

    lifecycle.record_metrics(db, job_id, claim.token, [(5, {"loss_d": 9.0})], LEASE)  # late: progress stays
    assert job_row(db, job_id).progress_step == 30
    lifecycle.record_metrics(db, job_id, claim.token, [], LEASE)  # nothing to write: only the lease
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Metric).where(Metric.job_id == job_id)) == 5


def test_non_finite_metric_values_do_not_break_the_write(db):
    """SQLite stores NaN as NULL and JSON has no NaN/Infinity: such values are dropped, the finite
    ones of the same batch are kept."""
    job_id = submit(db)
    claim = lifecycle.claim(db, job_id, "w1", LEASE)
    lifecycle.record_metrics(db, job_id, claim.token,
                             [(10, {"loss_d": 0.7, "grad_norm_d": float("nan"), "grad_norm_g": float("inf")})], LEASE)
    assert metric_rows(db, job_id) == {("loss_d", 10): 0.7}
    latest = job_row(db, job_id).latest_metrics
    assert latest["step"] == 10 and latest["loss_d"] == 0.7
    assert latest.get("grad_norm_d") is None and latest.get("grad_norm_g") is None


def test_record_artifact_replaces_per_kind_and_step(db):
    job_id = submit(db)
    claim = lifecycle.claim(db, job_id, "w1", LEASE)
    common = dict(kind="checkpoint", step=100, content_type="application/octet-stream")
    first = lifecycle.record_artifact(db, job_id, claim.token, key="a", size=10, sha256="1" * 64, **common)
    second = lifecycle.record_artifact(db, job_id, claim.token, key="b", size=20, sha256="2" * 64, **common)
    assert second.id == first.id
    with db.session() as session:
        rows = session.execute(select(Artifact).where(Artifact.job_id == job_id)).scalars().all()
    assert [(a.key, a.bytes, a.sha256) for a in rows] == [("b", 20, "2" * 64)]


# ---- ending a job -------------------------------------------------------------------------------

@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled"])
def test_finish(db, status):
    job_id = submit(db)
    claim = lifecycle.claim(db, job_id, "w1", LEASE)
    if status == "cancelled":
        lifecycle.request_cancel(db, job_id)
    lifecycle.finish(db, job_id, claim.token, status, f"the reason: {status}", evaluation={"fid": 1.5}, step=50)

    job = job_row(db, job_id)
    assert (job.status, job.progress_step, job.evaluation, job.lease_token, job.lease_expires_at) == (
        status, 50, {"fid": 1.5}, None, None)
    assert job.finished_at is not None and job.finished_at >= job.started_at >= job.created_at
    assert job.error == ("the reason: failed" if status == "failed" else None)
    expected = [(None, "queued", 0), ("queued", "running", 1)]
    if status == "cancelled":
        expected.append(("running", "running", 1))  # "cancellation requested"
    expected.append(("running", status, 1))
    assert events(db, job_id) == expected

    with pytest.raises(LeaseLost):  # the lease ended with the job
        lifecycle.heartbeat(db, job_id, claim.token, LEASE)
    with pytest.raises(LeaseLost):
        lifecycle.finish(db, job_id, claim.token, "succeeded")
    assert lifecycle.claim(db, job_id, "w2", LEASE) is None
    with pytest.raises(IllegalTransition):
        lifecycle.request_cancel(db, job_id)
    assert job_row(db, job_id).status == status


def test_illegal_transitions_are_refused(db):
    job_id = submit(db)
    with pytest.raises((LeaseLost, IllegalTransition)):
        lifecycle.finish(db, job_id, "0" * 32, "succeeded")
    with pytest.raises(ValueError):
        lifecycle.finish(db, job_id, "0" * 32, "running")
    assert job_row(db, job_id).status == "queued"
    assert events(db, job_id) == [(None, "queued", 0)]

    with pytest.raises(JobNotFound):
        lifecycle.request_cancel(db, "0" * 32)
    with pytest.raises(JobNotFound):  # another tenant's job looks like no job at all
        lifecycle.request_cancel(db, job_id, tenant="someone-else")


def test_cancel_of_a_queued_job_is_immediate(db):
    job_id = submit(db, tenant="acme")
    job = lifecycle.request_cancel(db, job_id, tenant="acme")
    assert job.status == "cancelled" and job.finished_at is not None
    assert events(db, job_id) == [(None, "queued", 0), ("queued", "cancelled", 0)]
    assert lifecycle.claim(db, job_id, "w1", LEASE) is None  # the message still in the broker does nothing
    assert job_row(db, job_id).status == "cancelled"
    with pytest.raises(IllegalTransition):
        lifecycle.request_cancel(db, job_id)


def test_cancel_of_a_running_job_is_requested_once(db):
    job_id = submit(db)
    lifecycle.claim(db, job_id, "w1", LEASE)
    assert lifecycle.request_cancel(db, job_id).status == "running"
    lifecycle.request_cancel(db, job_id)  # asking twice adds no second event
    assert events(db, job_id)[2:] == [("running", "running", 1)]
    assert job_row(db, job_id).cancel_requested is True


def test_deleting_a_job_cascades(db):
    job_id = submit(db)
    claim = lifecycle.claim(db, job_id, "w1", LEASE)
    lifecycle.record_metrics(db, job_id, claim.token, [(1, {"loss_d": 1.0})], LEASE)
    lifecycle.record_artifact(db, job_id, claim.token, kind="sample_grid", step=1, key="k", size=1, sha256="0" * 64,
                              content_type="image/png")
    with db.session() as session:
        session.delete(session.get(Job, job_id))
    with db.session() as session:
        for model in (JobEvent, Metric, Artifact):
            assert session.scalar(select(func.count()).select_from(model).where(model.job_id == job_id)) == 0


def test_submit_idempotent_admits_once_and_replays_a_retry(db):
    spec = make_spec()
    admitted: list[str] = []

    def admit(session):
        admitted.append("checked")
        return {"X-RateLimit-Remaining": "9"}

    plain = lifecycle.submit_idempotent(db, spec, "acme", admit=admit)
    assert plain.created and plain.queue == "cpu" and plain.admitted == {"X-RateLimit-Remaining": "9"}
    first = lifecycle.submit_idempotent(db, spec, "acme", "key-1", "hash-a", admit=admit)
    assert first.created and first.job_id != plain.job_id and len(admitted) == 2
    again = lifecycle.submit_idempotent(db, spec, "acme", "key-1", "hash-a", admit=admit)
    assert (again.job_id, again.created, again.admitted) == (first.job_id, False, None)
    assert len(admitted) == 2  # a retry spends no limit
    other_tenant = lifecycle.submit_idempotent(db, spec, "globex", "key-1", "hash-a")
    assert other_tenant.created and other_tenant.job_id != first.job_id
    with pytest.raises(lifecycle.IdempotencyConflict):
        lifecycle.submit_idempotent(db, spec, "acme", "key-1", "hash-b", admit=admit)
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 3


def test_submit_idempotent_makes_nothing_when_admit_refuses(db):
    class Refused(Exception):
        pass

    def refuse(session):
        raise Refused

    for key in (None, "key-2"):
        with pytest.raises(Refused):
            lifecycle.submit_idempotent(db, make_spec(), "acme", key, key and "hash", admit=refuse)
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0


def test_the_runners_reads_latest_checkpoint_and_metric_series(db):
    job_id = submit(db)
    claim = lifecycle.claim(db, job_id, "w1", LEASE)
    assert lifecycle.latest_artifact(db, job_id, "checkpoint") is None
    assert lifecycle.latest_checkpoint_step(db, job_id) == 0
    for step in (10, 30, 20):
        lifecycle.record_artifact(db, job_id, claim.token, kind="checkpoint", step=step, key=f"k/{step}", size=1,
                                  sha256="0" * 64, content_type="application/octet-stream")
    assert lifecycle.latest_artifact(db, job_id, "checkpoint").key == "k/30"
    assert lifecycle.latest_checkpoint_step(db, job_id) == 30
    lifecycle.record_metrics(db, job_id, claim.token, [(2, {"loss_d": 0.5, "acc_d": 1.0}), (1, {"loss_d": 0.7})], LEASE)
    assert lifecycle.metric_series(db, job_id, ("loss_d", "loss_g")) == {"loss_d": [(1, 0.7), (2, 0.5)], "loss_g": []}
