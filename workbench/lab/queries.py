"""Read stored runs back as pandas DataFrames for notebooks.

Filtering happens in SQL, so a notebook pulls only the rows it plots.
"""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa

from workbench.sinks import schema
from workbench.sinks.postgres import engine


def readings(
    database_url: str,
    run_id: str,
    sensor_type: str | None = None,
    machine_ids: list[str] | None = None,
) -> pd.DataFrame:
    """The readings of one run in event-time order, optionally of one sensor type and machines."""
    r = schema.readings
    query = sa.select(r.c.machine_id, r.c.sensor_type, r.c.ts, r.c.seq, r.c.value, r.c.status_code)
    query = query.where(r.c.run_id == run_id)
    if sensor_type is not None:
        query = query.where(r.c.sensor_type == sensor_type)
    if machine_ids:
        query = query.where(r.c.machine_id.in_(machine_ids))
    query = query.order_by(r.c.ts, r.c.machine_id, r.c.sensor_type)
    return _frame(database_url, query)


def runs(database_url: str, limit: int = 20) -> pd.DataFrame:
    """The most recent runs with their parameters and accounting."""
    query = sa.select(schema.runs).order_by(schema.runs.c.started_at.desc()).limit(limit)
    return _frame(database_url, query)


def _frame(database_url: str, query: sa.Select) -> pd.DataFrame:
    eng = engine(database_url)
    try:
        with eng.connect() as conn:
            return pd.read_sql(query, conn)
    finally:
        eng.dispose()
