"""Read stored runs back for notebooks, as pandas DataFrames (or pyarrow Tables).

Filtering and downsampling happen in SQL, so a notebook pulls only the rows it plots:
``readings(url, run_id, bucket="10s")`` returns one row per machine, sensor and 10-second
bucket (mean, min, max, count) however many readings the run has. A raw query that would
return more than ``max_rows`` rows stops with an error that says to bucket it, instead of
filling the notebook's memory.

>>> # readings(url, run_id, sensor_type="temperature", bucket="1m")
>>> # windows(url, run_id, width_s=60); alerts(url, run_id); ground_truth(url, run_id)
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from workbench.errors import WorkbenchError
from workbench.simulator.control import parse_duration_s
from workbench.sinks import schema
from workbench.sinks.postgres import engine

#: Raw (not bucketed) queries return at most this many rows unless told otherwise.
MAX_ROWS = 1_000_000
_ORIGIN = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


class TooManyRows(WorkbenchError):
    """A raw query would return more rows than a notebook should hold."""


def readings(
    database_url: str,
    run_id: str,
    sensor_type: str | None = None,
    machine_ids: list[str] | None = None,
    since: dt.datetime | str | None = None,
    until: dt.datetime | str | None = None,
    bucket: str | float | None = None,
    max_rows: int = MAX_ROWS,
    arrow: bool = False,
) -> pd.DataFrame | pa.Table:
    """The readings of one run in event-time order, optionally of one sensor type, some
    machines and an event-time range ``[since, until)``.

    With ``bucket`` (seconds, or a duration such as ``"10s"``, ``"1m"``), one row per
    machine, sensor and time bucket: ``bucket`` (its start), ``mean``, ``min``, ``max``,
    ``count`` (non-null values) and ``nulls``, computed by PostgreSQL (``date_bin``).
    """
    r = schema.readings
    where = _where(r, r.c.ts, run_id, sensor_type, machine_ids, since, until)
    if bucket is None:
        query = sa.select(r.c.machine_id, r.c.sensor_type, r.c.ts, r.c.seq, r.c.value,
                          r.c.status_code, r.c.late, r.c.score, r.c.rolling_1,
                          r.c.rolling_2)  # fmt: skip
        query = query.where(*where).order_by(r.c.ts, r.c.machine_id, r.c.sensor_type)
        return _fetch(database_url, query, max_rows, arrow)
    seconds = parse_duration_s(bucket, "bucket")
    if seconds <= 0:
        raise WorkbenchError(f"bucket={bucket!r} is not valid: expected a duration > 0")
    start = sa.func.date_bin(
        sa.cast(sa.literal(f"{seconds} seconds"), postgresql.INTERVAL), r.c.ts, _ORIGIN
    ).label("bucket")
    query = (
        sa.select(
            r.c.machine_id,
            r.c.sensor_type,
            start,
            sa.func.avg(r.c.value).label("mean"),
            sa.func.min(r.c.value).label("min"),
            sa.func.max(r.c.value).label("max"),
            sa.func.count(r.c.value).label("count"),
            (sa.func.count() - sa.func.count(r.c.value)).label("nulls"),
        )
        .where(*where)
        .group_by(r.c.machine_id, r.c.sensor_type, start)
        .order_by(start, r.c.machine_id, r.c.sensor_type)
    )
    return _fetch(database_url, query, max_rows, arrow)


def windows(
    database_url: str,
    run_id: str,
    width_s: int | None = None,
    sensor_type: str | None = None,
    machine_ids: list[str] | None = None,
    since: dt.datetime | str | None = None,
    until: dt.datetime | str | None = None,
    final_only: bool = True,
    max_rows: int = MAX_ROWS,
    arrow: bool = False,
) -> pd.DataFrame | pa.Table:
    """Window results of one run (final ones only, unless ``final_only=False``)."""
    w = schema.window_stats
    where = _where(w, w.c.window_start, run_id, sensor_type, machine_ids, since, until)
    if width_s is not None:
        where.append(w.c.width_s == width_s)
    if final_only:
        where.append(w.c.final.is_(True))
    query = sa.select(*[c for c in w.c if c.name != "run_id"]).where(*where)
    query = query.order_by(w.c.window_start, w.c.machine_id, w.c.sensor_type, w.c.width_s)
    return _fetch(database_url, query, max_rows, arrow)


def alerts(database_url: str, run_id: str, arrow: bool = False) -> pd.DataFrame | pa.Table:
    """Every alert of one run, in the order they began."""
    a = schema.alerts
    query = sa.select(*[c for c in a.c if c.name != "run_id"]).where(a.c.run_id == run_id)
    return _fetch(database_url, query.order_by(a.c.start_ts, a.c.alert_id), MAX_ROWS, arrow)


def ground_truth(database_url: str, run_id: str, arrow: bool = False) -> pd.DataFrame | pa.Table:
    """The faults chaos injected into one run (or a replay's labels), in the order they began."""
    c = schema.chaos_events
    query = sa.select(*[col for col in c.c if col.name != "run_id"]).where(c.c.run_id == run_id)
    return _fetch(database_url, query.order_by(c.c.start_ts, c.c.event_id), MAX_ROWS, arrow)


def sensor_stats(database_url: str, run_id: str, arrow: bool = False) -> pd.DataFrame | pa.Table:
    """The processor's online statistics of every sensor of one run."""
    s = schema.sensor_stats
    query = sa.select(*[col for col in s.c if col.name != "run_id"]).where(s.c.run_id == run_id)
    return _fetch(database_url, query.order_by(s.c.machine_id, s.c.sensor_type), MAX_ROWS, arrow)


def runs(database_url: str, limit: int = 20) -> pd.DataFrame:
    """The ``limit`` most recent runs with their parameters and accounting (a database with
    more runs is not an error: the older ones are left out)."""
    query = sa.select(schema.runs).order_by(schema.runs.c.started_at.desc()).limit(limit)
    return read_frame(database_url, query)


def _where(
    table: sa.Table,
    time_column: sa.Column,
    run_id: str,
    sensor_type: str | None,
    machine_ids: list[str] | None,
    since: dt.datetime | str | None,
    until: dt.datetime | str | None,
) -> list[Any]:
    where: list[Any] = [table.c.run_id == run_id]
    if sensor_type is not None:
        where.append(table.c.sensor_type == sensor_type)
    if machine_ids:
        where.append(table.c.machine_id.in_(machine_ids))
    if since is not None:
        where.append(time_column >= _instant(since, "since"))
    if until is not None:
        where.append(time_column < _instant(until, "until"))
    return where


def _instant(value: dt.datetime | str, name: str) -> dt.datetime:
    """A timezone-aware instant; naive times and ISO strings without an offset are UTC."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise WorkbenchError(
                f"{name}={value!r} is not valid: expected an ISO-8601 time, "
                "e.g. 2026-01-01T00:05:00Z"
            ) from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def read_frame(database_url: str, query: sa.Select) -> pd.DataFrame:
    """The rows of ``query`` as a DataFrame, on a connection opened for it and closed after."""
    eng = engine(database_url)
    try:
        with eng.connect() as conn:
            return pd.read_sql(query, conn)
    finally:
        eng.dispose()


def _fetch(
    database_url: str, query: sa.Select, max_rows: int, arrow: bool
) -> pd.DataFrame | pa.Table:
    frame = read_frame(database_url, query.limit(max_rows + 1))
    if len(frame) > max_rows:
        raise TooManyRows(
            f"the query returns more than {max_rows:,} rows; pass bucket= (e.g. '10s') to "
            "downsample in the database, narrow it with since/until, sensor_type or "
            "machine_ids, or raise max_rows"
        )
    return pa.Table.from_pandas(frame, preserve_index=False) if arrow else frame
