"""Data quality of a stored run, measured from what the database holds.

A reliability engineer wants to know what the network and the devices did to the data
before trusting any chart of it. Everything here is measured downstream, the way a real
pipeline has to, and can then be set against what chaos injected:

- **loss** from ``seq`` gaps: each (machine, sensor) numbers its samples 0, 1, 2, ...; a
  number missing from the stored readings was lost on the way or dead-lettered. A loss
  at the very end of a series leaves no gap and is invisible this way (as in any
  sequence-number scheme); the run's books (:func:`accounting`) still count it.
- **duplicates** in the database (stored rows with a ``seq`` already stored: must be 0,
  the processor absorbs re-deliveries and chaos copies by sequence number),
- **late** readings (behind their partition's watermark on arrival) and **nulls** (a dead
  sensor sends no value),
- **dead letters** by reason, and range violations by sensor type,
- **the books** of each run: produced = stored + dead-lettered + dropped.

Counting happens in SQL (one GROUP BY per question), so a run of millions of readings
costs a few queries, not a DataFrame of millions of rows.

>>> reason_category("temperature 900.0 is outside its physical range [-50.0, 250.0]")
'outside physical range'
>>> reason_category("corrupt reading body: EOFError: ")
'not a valid Avro reading'
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd
import sqlalchemy as sa

from workbench.lab.queries import read_frame
from workbench.sinks import schema

#: Dead-letter reasons grouped by what went wrong (the full reason keeps the detail).
_CATEGORIES = (
    (re.compile(r"outside its physical range"), "outside physical range"),
    (re.compile(r"event time .* not plausible"), "implausible event time"),
    (
        re.compile(r"not Avro single-object|corrupt \w+ body|wrong schema"),
        "not a valid Avro reading",
    ),
    (re.compile(r"does not match machine_id"), "key does not match machine"),
    (re.compile(r"unknown sensor type"), "unknown sensor type"),
    (re.compile(r"^line \d+:"), "bad row in the replayed file"),
)
_RANGE = re.compile(r"^(\w+) (\S+) is outside its physical range")


def reason_category(reason: str) -> str:
    """The kind of problem a dead letter's reason describes."""
    for pattern, category in _CATEGORIES:
        if pattern.search(reason):
            return category
    return "other"


def series_quality(database_url: str, run_id: str) -> pd.DataFrame:
    """Per machine and sensor: readings stored, ``seq`` range, gaps, duplicates, nulls, late.

    ``expected`` is ``max(seq) + 1`` (sequences start at 0); ``gaps`` = expected - distinct
    sequence numbers stored; ``loss_rate`` = gaps / expected.
    """
    r = schema.readings
    count = sa.func.count()
    query = (
        sa.select(
            r.c.machine_id,
            r.c.sensor_type,
            count.label("stored"),
            sa.func.count(sa.distinct(r.c.seq)).label("distinct_seq"),
            sa.func.max(r.c.seq).label("max_seq"),
            (count - sa.func.count(r.c.value)).label("nulls"),
            count.filter(r.c.late).label("late"),
        )
        .where(r.c.run_id == run_id)
        .group_by(r.c.machine_id, r.c.sensor_type)
        .order_by(r.c.machine_id, r.c.sensor_type)
    )
    df = read_frame(database_url, query)
    df["expected"] = df["max_seq"] + 1
    df["gaps"] = df["expected"] - df["distinct_seq"]
    df["duplicates"] = df["stored"] - df["distinct_seq"]
    df["loss_rate"] = (df["gaps"] / df["expected"]).where(df["expected"] > 0, 0.0)
    return df


def dead_letters(database_url: str, run_id: str) -> pd.DataFrame:
    """Dead letters of a run grouped by reason: ``category``, ``reason``, ``count``, and for a
    range violation the ``sensor_type`` it was about."""
    d = schema.dead_letters
    query = (
        sa.select(d.c.reason, sa.func.count().label("count"))
        .where(d.c.run_id == run_id)
        .group_by(d.c.reason)
        .order_by(sa.func.count().desc())
    )
    df = read_frame(database_url, query)
    df.insert(0, "category", [reason_category(r) for r in df["reason"]])
    df["sensor_type"] = [m[1] if (m := _RANGE.match(r)) else None for r in df["reason"]]
    return df


def range_violations(database_url: str, run_id: str) -> pd.DataFrame:
    """Readings dead-lettered for a value outside the sensor's physical range, per sensor."""
    df = dead_letters(database_url, run_id)
    df = df[df["category"] == "outside physical range"]
    out = df.groupby("sensor_type", as_index=False)["count"].sum()
    return out.rename(columns={"count": "violations"})


def accounting(
    database_url: str, run_ids: list[str] | None = None, limit: int = 20
) -> pd.DataFrame:
    """The books of runs (the given ones, else the ``limit`` most recent finished ones):
    what the source says it produced and dropped, what the database holds now, and whether
    they close.

    For a simulated run: produced = stored + dead-lettered + dropped (by chaos ``loss``).
    For a replay: produced (readings sent) + the file's bad rows (dead-lettered by the
    source before sending) = stored + dead-lettered.
    """
    runs, r, d = schema.runs, schema.readings, schema.dead_letters
    stored = sa.select(sa.func.count()).where(r.c.run_id == runs.c.run_id).scalar_subquery()
    dead = sa.select(sa.func.count()).where(d.c.run_id == runs.c.run_id).scalar_subquery()
    query = sa.select(
        runs.c.run_id,
        runs.c.kind,
        runs.c.status,
        runs.c.started_at,
        runs.c.produced,
        runs.c.dropped,
        runs.c.deadlettered.label("source_deadlettered"),
        stored.label("stored"),
        dead.label("deadlettered"),
    ).where(runs.c.produced.is_not(None))
    if run_ids is not None:
        query = query.where(runs.c.run_id.in_(run_ids))
    else:
        query = query.where(runs.c.kind != "simulate").order_by(runs.c.started_at.desc())
        query = query.limit(limit)
    df = read_frame(database_url, query)
    dropped = df["dropped"].fillna(0).astype("int64")
    replay = df["kind"] == "replay"
    source_dead = df["source_deadlettered"].fillna(0).astype("int64")
    df["dropped"] = dropped
    df["accounted"] = df["stored"] + df["deadlettered"] + dropped.where(~replay, 0)
    df["expected"] = df["produced"] + source_dead.where(replay, 0)
    df["closes"] = df["accounted"] == df["expected"]
    return df.drop(columns=["source_deadlettered"])


def summary(database_url: str, run_id: str, run: Any | None = None) -> dict[str, Any]:
    """The run's data quality in a few numbers, with what was injected beside what was
    measured when ``run`` (the :class:`~workbench.job.RunSummary`) is given."""
    series = series_quality(database_url, run_id)
    dead = dead_letters(database_url, run_id)
    expected = int(series["expected"].sum())
    gaps = int(series["gaps"].sum())
    books = accounting(database_url, [run_id])
    out: dict[str, Any] = {
        "series": len(series),
        "stored": int(series["stored"].sum()),
        "seq_gaps": gaps,
        "measured_loss_rate": round(gaps / expected, 6) if expected else 0.0,  # (no 0.0095000001)
        "duplicates_in_database": int(series["duplicates"].sum()),
        "late": int(series["late"].sum()),
        "nulls": int(series["nulls"].sum()),
        "deadlettered": int(dead["count"].sum()),
        "deadlettered_by_category": {
            str(k): int(v) for k, v in dead.groupby("category")["count"].sum().items()
        },
        "books_close": bool(books["closes"].all()) if len(books) else None,
    }
    if run is not None:
        out |= {
            "produced": run.produced,
            "dropped": run.dropped,
            "injected_loss_rate": round(run.dropped / run.produced, 6) if run.produced else 0.0,
            "duplicates_absorbed": run.duplicates_absorbed,
        }
    return out
