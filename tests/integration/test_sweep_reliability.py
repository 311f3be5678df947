"""Sweeps sharing the service with other work, and surviving the loss of the API and the broker.

First the engine alone (PostgreSQL and SQLite; a pool of workers played through jobs.lifecycle,
served in the broker's order): two sweeps of two tenants and ordinary jobs of a third share three
workers; a sweep never holds more than its max_parallel trials queued or running (a pruned trial
still running until its next heartbeat included), and an ordinary job submitted mid-sweep starts
at the first free worker instead of behind the sweeps' remaining trials.

Then real worker processes over Redis and S3: the same fairness with two sweeps and another
tenant's jobs, and a sweep that outlives its API (killed, another started on the same database)
and a broker emptied mid-sweep (the reconciler re-sends the queued trials): no trial lost or
doubled, the count exact.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest
from sqlalchemy import func, select

from gan_core.spec import JobSpec
from jobs import lifecycle, sweeps
from jobs.models import Job, JobEvent, Sweep, SweepTrial
from tests.integration.test_sweep_runs import BASE, ROOT, engine_services, max_active, sweep_spec  # noqa: F401

TICKS_PER_JOB = 3  # a played job: an evaluation at steps 20 and 40 on its first two ticks, its end on the third


@dataclass
class Running:
    job_id: str
    token: str
    ticks: int = 0


def active_by_sweep(services) -> dict[str, int]:
    with services.db.read() as session:
        return dict(session.execute(select(Job.sweep_id, func.count()).where(
            Job.sweep_id.is_not(None), Job.status.in_(("queued", "running"))).group_by(Job.sweep_id)).all())


def submit_job(services, tenant: str, name: str) -> str:
    with services.db.session() as session:
        job = lifecycle.submit(session, JobSpec.model_validate({**BASE, "name": name}), tenant=tenant)
        job_id, queue = job.id, job.queue
    services.queue.enqueue(job_id, queue)
    return job_id


def test_two_sweeps_and_other_tenants_jobs_share_the_workers(engine_services):
    services = engine_services
    rng = random.Random(7)
    limits = {}
    a = sweeps.submit(services.db, sweep_spec(name="a", trials=6, max_parallel=2), "tenant-a").sweep_id
    b = sweeps.submit(services.db, sweep_spec(name="b", trials=4, max_parallel=1, early_stopping=None),
                      "tenant-b").sweep_id
    limits = {a: 2, b: 1}
    sweeps.advance(services, a)
    sweeps.advance(services, b)
    sent = services.queue.sent  # the broker: served in the order sent
    served = 0
    workers: list[Running | None] = [None, None, None]
    ordinary: dict[str, dict[str, int]] = {}  # job id -> {"submitted": tick, "started": tick}
    both_ran = False

    def check() -> None:
        for sweep_id, active in active_by_sweep(services).items():
            assert active <= limits[sweep_id], (sweep_id, active)

    for tick in range(200):
        if tick in (2, 5, 9):  # another tenant's jobs arrive while every worker is busy with trials
            ordinary[submit_job(services, "tenant-c", f"plain-{tick}")] = {"submitted": tick}
        # Busy workers train one tick: an evaluation (the pruner sees it), or the end.
        for slot, run in enumerate(workers):
            if run is None:
                continue
            run.ticks += 1
            if run.ticks < TICKS_PER_JOB:
                sweep_id = lifecycle.record_evaluation(services.db, run.job_id, run.token, 20 * run.ticks,
                                                       {"hq_percent": rng.uniform(0, 100)}, 30)
                sweeps.advance_quietly(services, sweep_id)
                check()
                if not lifecycle.is_cancel_requested(services.db, run.job_id):
                    continue
                # A pruned trial holds its worker until its next heartbeat: still counted as active.
                lifecycle.finish(services.db, run.job_id, run.token, "cancelled", "pruned", step=20 * run.ticks)
            else:
                lifecycle.finish(services.db, run.job_id, run.token, "succeeded", "done",
                                 evaluation={"hq_percent": rng.uniform(0, 100)}, step=60)
            sweeps.job_ended(services, run.job_id)
            workers[slot] = None
            check()
        # Free workers take the next message.
        for slot in range(len(workers)):
            while workers[slot] is None and served < len(sent):
                job_id = sent[served][0]
                served += 1
                claim = lifecycle.claim(services.db, job_id, f"w:{slot}", 30)
                if claim is not None:
                    workers[slot] = Running(job_id, claim.token)
                    if job_id in ordinary:
                        ordinary[job_id]["started"] = tick
        check()
        with services.db.read() as session:
            running = set(session.scalars(select(Job.sweep_id).where(Job.status == "running")))
            both_ran = both_ran or {a, b} <= running
            if all(session.get(Sweep, s).finished_at for s in (a, b)) and all(w is None for w in workers):
                break
    else:
        pytest.fail("the sweeps did not end")

    for sweep_id, planned in ((a, 6), (b, 4)):
        with services.db.read() as session:
            sweep = session.get(Sweep, sweep_id)
            trials = list(session.scalars(select(SweepTrial).where(SweepTrial.sweep_id == sweep_id)
                                          .order_by(SweepTrial.number)))
            jobs = list(session.scalars(select(Job).where(Job.sweep_id == sweep_id)))
        assert sweep.status == "succeeded"
        assert [t.number for t in trials] == list(range(planned)) and len({t.job_id for t in trials}) == planned
        assert len(jobs) == planned and {job.tenant for job in jobs} == {sweep.tenant}
        assert max_active(services, sweep_id) == limits[sweep_id]  # used its share, never more
    assert both_ran  # neither sweep waited for the other to end
    # Every ordinary job started on the first worker freed after it arrived (a worker is busy
    # TICKS_PER_JOB ticks at most), not behind the trials the sweeps asked for meanwhile.
    for job_id, times in ordinary.items():
        assert times["started"] - times["submitted"] <= TICKS_PER_JOB, times
    with services.db.read() as session:
        assert set(session.scalars(select(Job.status).where(Job.id.in_(list(ordinary))))) == {"succeeded"}
