"""Sweeps: the search state and the "next trial" decision, in the control plane.

A sweep's trials are ordinary jobs (same queue, leases, resume, retention, tenant and per-tenant
caps) with ``jobs.sweep_id`` set. ``advance(services, sweep_id)`` is the one decision step:

1. lock the sweep row (a conditional UPDATE first: a row lock on PostgreSQL, the write lock on
   SQLite), so concurrent callers run one after another;
2. bring each trial up to date with its job (succeeded: the objective from the job's final
   evaluation; cancelled after a prune: ``pruned``; failed or cancelled);
3. with early stopping, show the pruner each running trial's newest evaluation (series
   ``eval/<metric>``, written by ``lifecycle.record_evaluation`` every ``eval_every`` steps); a
   trial it rejects is cancelled through the normal cancel path with the reason ``pruned``;
4. ask Optuna for new trials while fewer than ``max_parallel`` are queued or running, fewer than
   ``trials`` exist and the tenant's caps allow, and queue them as jobs in the same transaction;
5. end the sweep once every planned trial has ended.

Every count comes from the rows under the lock, so the step is idempotent: calling it twice, or
from several processes at once, asks for the next trial exactly once per finished trial. It runs
when a trial's attempt ends on a worker (ganforge.worker.tasks), after each evaluation of a trial (the
pruner), when a sweep is submitted, and on every reconciler pass (a lost trigger is recovered).

Optuna's study is rebuilt in memory from the rows for each decision rather than kept in its
RDBStorage: that storage creates and migrates its own tables outside Alembic (this project's one
way to make a schema), and the rows here already hold everything a sampler or pruner reads
(parameters, states, objective values, intermediate values, and Optuna's per-trial system
attributes: a grid point's id, ASHA's rung values). The samplers are seeded per trial number, so
a sweep asks the same trials whatever process makes the decision.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gan_core.spec import HEALTH_REASONS, NO_LIMITS
from ganforge.jobs import lifecycle
from ganforge.jobs.db import Database
from ganforge.jobs.lifecycle import EVALUATION_SERIES, IdempotencyConflict, LifecycleError
from ganforge.jobs.models import Job, Metric, Sweep, SweepTrial, utcnow
from ganforge.jobs.queue import PRIORITY_NEW
from ganforge.jobs.sweep_spec import Choice, IntRange, LogUniform, SweepSpec, SweepSpecError, _key, trial_spec

log = logging.getLogger(__name__)

ACTIVE = ("queued", "running")
PRUNED = "pruned"


class SweepNotFound(LifecycleError):
    pass


class SweepFinished(LifecycleError):
    """The sweep has ended; it cannot be cancelled."""


def stored_spec(doc: dict[str, Any]) -> SweepSpec:
    """A stored sweep's spec (validated under the deployment's limits when it was accepted)."""
    return SweepSpec.model_validate(doc, context={**NO_LIMITS, "max_trials": 2**31})


# ---- submit -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Created:
    sweep_id: str
    created: bool  # False: a retry with the same Idempotency-Key and body
    admitted: Any = None


def submit(db: Database, spec: SweepSpec, tenant: str, idempotency_key: str | None = None,
           request_hash: str | None = None, admit: Callable[[Session], Any] | None = None) -> Created:
    """A new sweep (no trial yet: ``advance`` queues the first ones); with ``idempotency_key``,
    once per key and tenant (the same key with another body: IdempotencyConflict)."""
    admit = admit or (lambda session: None)
    for _ in range(2):
        if idempotency_key is not None:
            with db.read() as session:
                row = session.execute(select(Sweep.id, Sweep.request_hash).where(
                    Sweep.tenant == tenant, Sweep.idempotency_key == idempotency_key)).one_or_none()
            if row is not None:
                if row.request_hash != request_hash:
                    raise IdempotencyConflict(f"Idempotency-Key {idempotency_key!r} was used with a different request body")
                return Created(row.id, False)
        try:
            with db.session() as session:
                admitted = admit(session)
                notify_url = spec.notify.webhook_url if spec.notify is not None else None  # checked by the caller
                sweep = Sweep(tenant=tenant, name=spec.name, spec=spec.model_dump(mode="json"), status="queued",
                              planned_trials=spec.planned_trials(), idempotency_key=idempotency_key,
                              request_hash=request_hash, notify_url=notify_url,
                              notify_state="pending" if notify_url else None)
                session.add(sweep)
                session.flush()
                return Created(sweep.id, True, admitted)
        except IntegrityError:
            if idempotency_key is None:
                raise
            continue  # a racing request with the same key inserted first: read its sweep
    raise LifecycleError(f"could not submit with Idempotency-Key {idempotency_key!r}")


# ---- Optuna, rebuilt from rows ------------------------------------------------------------------
def _distribution(parameter) -> BaseDistribution:
    if isinstance(parameter, Choice):  # by index: Optuna's categories must be scalars, choices may be lists
        return CategoricalDistribution(tuple(range(len(parameter.values))))
    if isinstance(parameter, IntRange):
        return IntDistribution(parameter.low, parameter.high, step=parameter.step)
    return FloatDistribution(parameter.low, parameter.high, log=isinstance(parameter, LogUniform))


def _to_optuna(spec: SweepSpec, params: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for path, value in params.items():
        parameter = spec.space[path]
        if isinstance(parameter, Choice):
            keys = [_key(v) for v in parameter.values]
            value = keys.index(_key(value))
        out[path] = value
    return out


def _from_optuna(spec: SweepSpec, params: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for path in spec.space:  # in the space's order
        parameter, value = spec.space[path], params[path]
        out[path] = parameter.values[value] if isinstance(parameter, Choice) else value
    return out


def _seed(spec: SweepSpec, number: int) -> int:
    return (spec.seed * 1_000_003 + number) % 2**31


def _sampler(spec: SweepSpec, number: int) -> optuna.samplers.BaseSampler:
    seed = _seed(spec, number)
    if spec.method == "grid":
        space = {path: list(_distribution(p).choices) if isinstance(p, Choice) else
                 list(range(p.low, p.high + 1, p.step)) for path, p in spec.space.items()}
        # One seed for the whole sweep: the sampler shuffles the grid with it, and a grid id
        # (kept in each trial's system_attrs) must name the same point in every decision.
        return optuna.samplers.GridSampler(space, seed=spec.seed)
    if spec.method == "tpe":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # constant_liar
            # constant_liar: trials still running count as bad guesses, so parallel asks spread out
            return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    return optuna.samplers.RandomSampler(seed=seed)


def _pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    stopping = spec.early_stopping
    if stopping is None:
        return optuna.pruners.NopPruner()
    if stopping.method == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=stopping.min_steps,
                                                      reduction_factor=stopping.reduction_factor,
                                                      min_early_stopping_rate=0, bootstrap_count=0)
    return optuna.pruners.MedianPruner(n_startup_trials=stopping.startup_trials, n_warmup_steps=stopping.min_steps)


_STATES = {"queued": TrialState.RUNNING, "running": TrialState.RUNNING, "succeeded": TrialState.COMPLETE,
           PRUNED: TrialState.PRUNED, "failed": TrialState.FAIL, "cancelled": TrialState.FAIL}


def _study(spec: SweepSpec, trials: list[SweepTrial], curves: dict[str, dict[int, float]]) -> optuna.Study:
    """An in-memory study holding the sweep's trials in number order (study index == position)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=spec.objective.direction, pruner=_pruner(spec))
    distributions = {path: _distribution(p) for path, p in spec.space.items()}
    for trial in trials:
        state = _STATES[trial.status]
        study.add_trial(create_trial(
            state=state, value=trial.objective if state == TrialState.COMPLETE else None,
            params=_to_optuna(spec, trial.params), distributions=distributions,
            system_attrs=dict(trial.system_attrs or {}),
            intermediate_values=curves.get(trial.job_id, {}) if trial.job_id else {}))
    return study


# ---- the decision step --------------------------------------------------------------------------
def _lock(session: Session, sweep_id: str) -> Sweep:
    # Lock first, then read (as lifecycle._owned): the UPDATE takes the row lock on PostgreSQL and
    # the write lock on SQLite, which has no SELECT ... FOR UPDATE.
    if session.execute(update(Sweep).where(Sweep.id == sweep_id).values(updated_at=utcnow())
                       .execution_options(synchronize_session=False)).rowcount != 1:
        raise SweepNotFound(sweep_id)
    return session.execute(select(Sweep).where(Sweep.id == sweep_id)).scalar_one()


def _sync(spec: SweepSpec, trial: SweepTrial, job: Job | None) -> None:
    """A trial's status from its job's."""
    if trial.status not in ACTIVE:
        return
    if job is None:
        trial.status, trial.reason = "failed", "its job was deleted"
    elif job.status in ACTIVE:
        trial.status = job.status
        return
    elif job.status == "succeeded":
        value = (job.evaluation or {}).get(spec.objective.metric)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            trial.status, trial.objective = "succeeded", float(value)
        else:
            trial.status = "failed"
            trial.reason = f"the final evaluation has no finite {spec.objective.metric}"
    elif job.status == "cancelled":
        if trial.reason != PRUNED and job.stop_reason in HEALTH_REASONS:
            # Stopped by a GAN health detector (the worker, through the cancel path): a pruned
            # trial whose reason names the detector.
            trial.reason = job.stop_reason
        trial.status = PRUNED if trial.reason in (PRUNED, *HEALTH_REASONS) else "cancelled"
        trial.reason = trial.reason or "cancelled"
    else:
        trial.status, trial.reason = "failed", job.error or "failed"
    trial.finished_at = utcnow()


def _curves(session: Session, spec: SweepSpec, job_ids: list[str]) -> dict[str, dict[int, float]]:
    if spec.early_stopping is None or not job_ids:
        return {}
    curves: dict[str, dict[int, float]] = {}
    name = EVALUATION_SERIES + spec.objective.metric
    for job_id, step, value in session.execute(select(Metric.job_id, Metric.step, Metric.value).where(
            Metric.job_id.in_(job_ids), Metric.name == name)):
        curves.setdefault(job_id, {})[step] = value
    return curves


def _judge(session: Session, spec: SweepSpec, trials: list[SweepTrial], jobs: dict[str, Job],
           curves: dict[str, dict[int, float]]) -> int:
    """Show the pruner each running trial's newest evaluation it has not seen; cancel (reason
    ``pruned``) the trials it stops. Returns how many it stopped.

    The trial is judged at its newest step only: evaluations are judged one by one as they land
    (record_evaluation → advance); only after a lost trigger does a step go unseen."""
    if spec.early_stopping is None:
        return 0
    study = None
    stopped = 0
    for index, trial in enumerate(trials):
        job = jobs.get(trial.job_id)
        if trial.status != "running" or job is None or job.status != "running" or job.cancel_requested:
            continue
        curve = curves.get(trial.job_id, {})
        newest = max(curve, default=0)
        if newest <= trial.judged_step:
            continue
        study = study or _study(spec, trials, curves)
        frozen = study.get_trials(deepcopy=False)[index]
        prune = study.pruner.prune(study, frozen)
        trial.system_attrs = dict(study.get_trials(deepcopy=False)[index].system_attrs)  # ASHA's rung values
        trial.judged_step = newest
        if prune:
            trial.reason = PRUNED
            lifecycle.cancel_locked(session, job, f"{PRUNED} at step {newest} ({spec.objective.metric} "
                                    f"{curve[newest]:.4g})")
            stopped += 1
            log.info("sweep %s: trial %d (job %s) pruned at step %d", trial.sweep_id, trial.number, job.id, newest)
    return stopped


def _room(session: Session, settings, tenant: str) -> int:
    """New jobs the tenant's caps (max_queued_per_tenant, max_active_per_tenant) allow now."""
    counts = dict(session.execute(select(Job.status, func.count()).where(Job.tenant == tenant, Job.status.in_(ACTIVE))
                                  .group_by(Job.status)).all())
    queued, running = counts.get("queued", 0), counts.get("running", 0)
    return max(0, min(settings.max_queued_per_tenant - queued, settings.max_active_per_tenant - queued - running))


def _ask(session: Session, services, sweep: Sweep, spec: SweepSpec, trials: list[SweepTrial],
         curves: dict[str, dict[int, float]]) -> list[Job]:
    active = sum(t.status in ACTIVE for t in trials)
    want = min(spec.max_parallel - active, sweep.planned_trials - len(trials), _room(session, services.settings, sweep.tenant))
    if want <= 0:
        return []
    study = _study(spec, trials, curves)
    distributions = {path: _distribution(p) for path, p in spec.space.items()}
    created: list[Job] = []
    while len(created) < want and len(trials) < sweep.planned_trials:
        number = len(trials)
        study.sampler = _sampler(spec, number)
        asked = study.ask(distributions)
        params = _from_optuna(spec, asked.params)
        row = SweepTrial(sweep_id=sweep.id, number=number, params=params, status="queued", judged_step=0,
                         system_attrs=dict(study.get_trials(deepcopy=False)[-1].system_attrs))
        try:
            job_spec = trial_spec(spec, params, f"{sweep.name}-{number}"[:120], services.settings.spec_limits)
        except SweepSpecError as exc:  # a sampled point the corner checks could not foresee
            study.tell(asked, state=TrialState.FAIL)
            row.status, row.reason, row.finished_at = "failed", f"invalid trial spec: {exc}", utcnow()
        else:
            job = lifecycle.submit(session, job_spec, tenant=sweep.tenant)
            job.sweep_id = sweep.id
            row.job_id = job.id
            created.append(job)
        session.add(row)
        trials.append(row)
    session.flush()
    return created


def _finish_if_done(sweep: Sweep, spec: SweepSpec, trials: list[SweepTrial]) -> None:
    if any(t.status in ACTIVE for t in trials):
        if sweep.status == "queued" and any(t.status != "queued" for t in trials):
            sweep.status = "running"
        return
    if sweep.status == "cancelled":
        sweep.finished_at = sweep.finished_at or utcnow()
        return
    if len(trials) < sweep.planned_trials:
        return  # waiting for room under the tenant's caps
    sweep.finished_at = utcnow()
    if any(t.status == "succeeded" for t in trials):
        sweep.status = "succeeded"
    else:
        sweep.status = "failed"
        reasons = sorted({t.reason or t.status for t in trials})
        sweep.error = "no trial succeeded: " + "; ".join(reasons)[:2000]


def advance(services, sweep_id: str) -> list[str]:
    """The decision step (see the module docstring). Returns the ids of the trial jobs it queued,
    already sent to the broker (a failed send is re-sent by the reconciler)."""
    with services.db.session() as session:
        sweep = _lock(session, sweep_id)
        if sweep.finished_at is not None:
            return []
        spec = stored_spec(sweep.spec)
        trials = list(session.scalars(select(SweepTrial).where(SweepTrial.sweep_id == sweep_id)
                                      .order_by(SweepTrial.number)))
        job_ids = [t.job_id for t in trials if t.job_id]
        jobs = {job.id: job for job in session.scalars(select(Job).where(Job.id.in_(job_ids)))} if job_ids else {}
        for trial in trials:
            _sync(spec, trial, jobs.get(trial.job_id) if trial.job_id else None)
        curves = _curves(session, spec, job_ids)
        _judge(session, spec, trials, jobs, curves)
        created = _ask(session, services, sweep, spec, trials, curves) if sweep.status in ("queued", "running") else []
        _finish_if_done(sweep, spec, trials)
        queued = [(job.id, job.queue) for job in created]
    for job_id, queue_name in queued:
        try:
            services.queue.enqueue(job_id, queue_name, PRIORITY_NEW)
        except Exception:  # the job is queued in the database: the reconciler re-sends it
            log.exception("sweep %s: trial job %s could not be enqueued; it stays queued", sweep_id, job_id)
    if queued:
        log.info("sweep %s: queued %d trial(s)", sweep_id, len(queued))
    return [job_id for job_id, _ in queued]


def advance_quietly(services, sweep_id: str | None) -> None:
    """``advance`` from a hook (a trial's attempt ended, an evaluation landed): a failure is logged
    and left to the reconciler's next pass."""
    if sweep_id is None:
        return
    try:
        advance(services, sweep_id)
    except Exception:
        log.exception("sweep %s: advancing failed; the reconciler will retry", sweep_id)


def job_ended(services, job_id: str) -> None:
    """After a worker's attempt at ``job_id`` (whatever its end): advance the job's sweep, if any."""
    try:
        with services.db.read() as session:
            sweep_id = session.scalar(select(Job.sweep_id).where(Job.id == job_id))
    except Exception:
        log.exception("job %s: could not read its sweep; the reconciler will advance it", job_id)
        return
    advance_quietly(services, sweep_id)


def reconcile(services) -> int:
    """Advance every sweep that has not ended (the reconciler's pass); returns how many."""
    with services.db.read() as session:
        open_sweeps = list(session.scalars(select(Sweep.id).where(Sweep.finished_at.is_(None))))
    for sweep_id in open_sweeps:
        advance_quietly(services, sweep_id)
    return len(open_sweeps)


def cancel(services, sweep_id: str, tenant: str | None = None) -> None:
    """Cancel a sweep: no new trial; queued trials cancelled at once, running ones asked to stop
    (their jobs end ``cancelled`` through the normal path). A finished sweep: SweepFinished."""
    with services.db.session() as session:
        sweep = _lock(session, sweep_id)
        if tenant is not None and sweep.tenant != tenant:
            raise SweepNotFound(sweep_id)
        if sweep.status in ("succeeded", "failed", "cancelled"):
            raise SweepFinished(f"sweep {sweep_id} is {sweep.status}; it cannot be cancelled")
        sweep.status = "cancelled"
        for job in session.scalars(select(Job).where(Job.sweep_id == sweep_id, Job.status.in_(ACTIVE))
                                   .with_for_update()):
            lifecycle.cancel_locked(session, job, "its sweep was cancelled")
    advance(services, sweep_id)


# ---- reading ------------------------------------------------------------------------------------
def trial_rows(session: Session, sweep_id: str) -> list[tuple[SweepTrial, str | None]]:
    """(trial, its job's live status) in number order."""
    return list(session.execute(select(SweepTrial, Job.status).outerjoin(Job, Job.id == SweepTrial.job_id)
                                .where(SweepTrial.sweep_id == sweep_id).order_by(SweepTrial.number)).all())


def live_status(trial: SweepTrial, job_status: str | None) -> str:
    """A trial's status with its job's newest state (rows catch up at the next decision step)."""
    if trial.status in ACTIVE and job_status in ACTIVE:
        return job_status
    return trial.status


def best(spec: SweepSpec, trials: list[SweepTrial]) -> SweepTrial | None:
    done = [t for t in trials if t.status == "succeeded" and t.objective is not None]
    if not done:
        return None
    sign = 1 if spec.objective.direction == "minimize" else -1
    return min(done, key=lambda t: (sign * t.objective, t.number))

