"""The read model of /v1/jobs: the SQL behind the job view, the job list, artifact listings and
metric series (with downsampling). Plain rows in, plain rows out; the views add the caller's
tenant scope, URLs and serialisation."""

from __future__ import annotations

import json
from collections import namedtuple
from datetime import datetime, timezone
from typing import Any, NamedTuple, Sequence

from sqlalchemy import and_, bindparam, cast, exists, func, literal, literal_column, select, tuple_
from sqlalchemy.dialects.postgresql import JSONB, aggregate_order_by
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from ganforge.api.schemas import DETAIL_COLUMNS, SUMMARY_COLUMNS
from ganforge.jobs.models import Artifact, Job, JobEvent, Metric


# Built once, not per request (bench/README.md, "Job view statements").
_JOB_ROW = select(*DETAIL_COLUMNS).where(Job.id == bindparam("job_id"))
_OWNED_JOB_ROW = _JOB_ROW.where(Job.tenant == bindparam("tenant"))


# PostgreSQL: the event history rides along in the job's row as one JSON array (one round trip
# instead of two; times as epoch seconds, whatever the server's TimeZone).
_EVENTS_JSON = (
    select(func.coalesce(
        func.json_agg(aggregate_order_by(
            func.json_build_array(func.extract("epoch", JobEvent.at), JobEvent.from_status, JobEvent.to_status,
                                  JobEvent.attempt, JobEvent.message),
            JobEvent.id)),
        literal_column("'[]'::json")))
    .where(JobEvent.job_id == Job.id).correlate(Job).scalar_subquery().label("events_json")
)
_PG_JOB_ROW = select(*DETAIL_COLUMNS, _EVENTS_JSON).where(Job.id == bindparam("job_id"))
_PG_OWNED_JOB_ROW = _PG_JOB_ROW.where(Job.tenant == bindparam("tenant"))
_EVENTS = (select(JobEvent.at, JobEvent.from_status, JobEvent.to_status, JobEvent.attempt, JobEvent.message)
           .where(JobEvent.job_id == bindparam("job_id")).order_by(JobEvent.id))


class Event(NamedTuple):
    at: datetime
    from_status: str | None
    to_status: str
    attempt: int
    message: str


class _PgJobView:
    """The job view's statement on PostgreSQL, run on the pooled connection's own psycopg cursor as
    a server-side prepared statement, without SQLAlchemy's result machinery (a cursor description
    and row processors per execution), which cost more than the query (bench/README.md, "Job
    view statements")."""

    Row = namedtuple("Row", [column.key for column in DETAIL_COLUMNS] + ["events_json"])

    def __init__(self) -> None:
        self._sql: dict[tuple[int, bool], str] = {}

    def fetch(self, conn: Connection, admin: bool, params: dict[str, Any]) -> Row | None:
        key = (id(conn.dialect), admin)
        sql = self._sql.get(key)
        if sql is None:
            sql = self._sql[key] = str((_PG_JOB_ROW if admin else _PG_OWNED_JOB_ROW).compile(dialect=conn.dialect))
        with conn.connection.driver_connection.cursor() as cursor:
            cursor.execute(sql, params, prepare=True)
            row = cursor.fetchone()
        return None if row is None else self.Row._make(row)


_PG_JOB_VIEW = _PgJobView()


def job_row(conn: Connection, job_id: str, tenant: str | None) -> tuple[Any, list[Event]] | None:
    """The job's detail row and its event history; None if there is no such job (of ``tenant``,
    unless None: an admin's view)."""
    params = {"job_id": job_id, "tenant": tenant}
    if conn.dialect.name == "postgresql":
        job = _PG_JOB_VIEW.fetch(conn, tenant is None, params)
        if job is None:
            return None
        return job, [Event(datetime.fromtimestamp(float(at), timezone.utc), before, after, attempt, message)
                     for at, before, after, attempt, message in job.events_json]
    job = conn.execute(_JOB_ROW if tenant is None else _OWNED_JOB_ROW, params).one_or_none()
    if job is None:
        return None
    return job, list(conn.execute(_EVENTS, params))


def _like_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def has_tags(tags: Sequence[str], dialect: str):
    """The condition "the job has every one of ``tags``". PostgreSQL: jsonb containment
    (``tags @> '["a", "b"]'``), which the GIN index ix_jobs_tags answers; SQLite: one lookup in
    the row's array per tag (json_each)."""
    if dialect == "postgresql":
        return Job.tags.op("@>")(cast(literal(json.dumps(list(tags))), JSONB))
    conditions = []
    for tag in tags:
        each = func.json_each(Job.tags).table_valued("value")
        conditions.append(exists(select(1).select_from(each).where(each.c.value == tag)))
    return and_(*conditions)


def job_page(scope, status: str | None, after: tuple[datetime, str] | None, limit: int,
             tags: Sequence[str] = (), q: str | None = None, dialect: str = "sqlite"):
    """The statement of one page of the job list, newest first, at most ``limit + 1`` rows (one
    more tells whether another page follows); ``scope`` adds the caller's tenant filter. ``tags``:
    jobs with all of them; ``q``: jobs whose name holds it, in any case (ILIKE, which the trigram
    index ix_jobs_name_trgm serves on PostgreSQL)."""
    stmt = scope(select(*SUMMARY_COLUMNS))
    if status is not None:
        stmt = stmt.where(Job.status == status)
    if tags:
        stmt = stmt.where(has_tags(tags, dialect))
    if q:
        stmt = stmt.where(Job.name.ilike(f"%{_like_escaped(q)}%", escape="\\"))
    if after is not None:
        created_at, last_id = after
        # A row-value comparison: PostgreSQL (and SQLite) turn it into one range of the
        # (status, created_at, id) index; the equivalent OR of two conditions filters row by row.
        stmt = stmt.where(tuple_(Job.created_at, Job.id) < tuple_(created_at, last_id))
    # Newest first; the id breaks ties so the order (and the keyset) is total.
    return stmt.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)


def artifacts(session: Session, job_id: str, kind: str) -> list[Artifact]:
    return list(session.scalars(
        select(Artifact).where(Artifact.job_id == job_id, Artifact.kind == kind).order_by(Artifact.step, Artifact.id)
    ))


def downsample(steps: Sequence[int], values: Sequence[Any], max_points: int | None) -> tuple[list[int], list[Any]]:
    """At most ``max_points`` evenly strided points, always keeping the first and the last."""
    n = len(steps)
    if max_points is None or n <= max_points:
        return list(steps), list(values)
    picks = _picks(n, max_points)
    return [steps[i] for i in picks], [values[i] for i in picks]


def _picks(n: int, m: int) -> list[int]:
    """Indices of ``m`` of ``n > m`` points: ceil(i·(n-1)/(m-1)) for i in 0..m-1, strictly
    increasing (the stride exceeds 1), from the first point to the last."""
    return [(i * (n - 1) + m - 2) // (m - 1) for i in range(m)]


def metric_rows(session: Session, job_id: str, names: list[str] | None, since_step: int | None,
                 max_points: int | None) -> list[Any]:
    """(name, step, value) rows ordered by name and step, at most ``max_points`` per series.

    Downsampling reads only the rows it keeps: a 12 000-step job would otherwise send every row
    of every series through Python to keep one in twenty. Series are logged every ``log_every``
    steps, so a series of n points from step lo to hi is usually the progression lo + k·stride
    and its picks can be asked for by step (one query for all the series logged together); a
    series with other steps (a resumed run, a changed log_every, a non-finite value left out)
    is read whole and picked here.
    """
    where = [Metric.job_id == job_id]
    if since_step is not None:
        where.append(Metric.step > since_step)
    columns = (Metric.name, Metric.step, Metric.value)
    if max_points is None:
        if names is not None:
            where.append(Metric.name.in_(names))
        return list(session.execute(select(*columns).where(*where).order_by(Metric.name, Metric.step)))
    # Core rows straight from the connection: a little cheaper than the ORM's result machinery.
    connection = session.connection()
    if names is None:
        names = list(connection.scalars(select(Metric.name).where(Metric.job_id == job_id).distinct()))
    names = sorted(names)
    if not names:
        return []
    m = max_points

    # First step, last step and count of every series in one statement; a min and a max each
    # alone, so the database seeks to an end of the (job, name, step) index.
    def series_stats(name: str) -> list[Any]:
        in_series = (*where, Metric.name == name)
        return [select(func.min(Metric.step)).where(*in_series).scalar_subquery(),
                select(func.max(Metric.step)).where(*in_series).scalar_subquery(),
                select(func.count()).where(*in_series).scalar_subquery()]

    stats = connection.execute(select(*[col for name in names for col in series_stats(name)])).one()
    kept: dict[str, list[Any]] = {}
    short: list[str] = []
    irregular: list[str] = []
    progressions: dict[tuple[int, int, int], list[str]] = {}
    for i, name in enumerate(names):
        lo, hi, n = stats[3 * i: 3 * i + 3]
        if not n:
            continue
        if n <= m:
            short.append(name)
            continue
        stride, rest = divmod(hi - lo, n - 1)
        (irregular if rest else progressions.setdefault((lo, stride, n), [])).append(name)
    if short:
        for row in connection.execute(select(*columns).where(*where, Metric.name.in_(short))
                                      .order_by(Metric.name, Metric.step)):
            kept.setdefault(row.name, []).append(row)
    for (lo, stride, n), group in progressions.items():
        # m look-ups by step (measured faster than scanning with the pick rule as a condition).
        wanted = [lo + k * stride for k in _picks(n, m)]
        found: dict[str, list[Any]] = {name: [] for name in group}
        for row in connection.execute(select(*columns).where(*where, Metric.name.in_(group), Metric.step.in_(wanted))
                                      .order_by(Metric.name, Metric.step)):
            found[row.name].append(row)
        for name, picked in found.items():
            if len(picked) == m:
                kept[name] = picked
            else:  # the right count and range, but not every step of the progression
                irregular.append(name)
    for name in irregular:
        whole = connection.execute(select(*columns).where(*where, Metric.name == name).order_by(Metric.step)).all()
        kept[name] = [whole[i] for i in _picks(len(whole), m)]
    return [row for name in names for row in kept.get(name, ())]
