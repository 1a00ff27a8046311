"""Digests of a run's stored results: equal exactly when the results are equal.

The design promises that results are a function of the input stream alone: the same seeded
stream gives the same stored readings (with late flags), final windows, statistics,
alerts and predictions however it was processed (undisturbed, killed and restarted, by
several workers, fast or slow). :func:`digest` makes that checkable with one string per
table: the SHA-256 of the canonical JSON of the run's rows, leaving out what legitimately
differs between two processings of one stream:

- the run id (so two runs of one seed compare), and the wall-clock stamps
  (``ingested_at``, ``emitted_at``, ``updated_at``);
- windows: only FINAL windows count, without ``revision`` (how many corrections a window
  got depends on batch boundaries, its content does not);
- nothing depends on the order rows were written in: rows are taken in the order of their
  natural key (text compared as bytes, the same in PostgreSQL and SQLite).

A table's digest is ``sha256(json.dumps(rows, separators=(",", ":")))``, with rows as lists
of their values: text as JSON strings, NULL as ``null`` (never confused with a value),
floats in Python's shortest exact form (``repr``; -0.0 as 0.0), times as integer microseconds
since the epoch, JSON values as JSON. Anyone can recompute it from a query; PostgreSQL and a SQLite
edge file holding the same rows give the same digests.

>>> hashlib.sha256(b"[]").hexdigest() == EMPTY
True
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from workbench import sinks
from workbench.errors import DatabaseUnavailable, WorkbenchError
from workbench.sinks import schema

__all__ = ["DIGESTS", "EMPTY", "Digested", "RunDigest", "UnknownRun", "digest"]

#: The digest of no rows.
EMPTY = hashlib.sha256(b"[]").hexdigest()


class UnknownRun(WorkbenchError):
    """The database holds nothing of the run id asked for."""

    def __init__(self, run_id: str, url: str) -> None:
        self.run_id, self.url = run_id, url
        super().__init__(
            f"unknown run id {run_id!r}: {url} has no readings, windows, alerts or statistics of it"
        )


@dataclass(frozen=True)
class Digested:
    """What one digest covers: the table, its columns in order, the rows' order, and which
    rows (besides the run's)."""

    table: sa.Table
    columns: tuple[str, ...]
    order: tuple[str, ...]
    final_only: bool = False


_r, _w, _a, _s = schema.readings, schema.window_stats, schema.alerts, schema.sensor_stats

#: The digests of a run, by name.
DIGESTS = {
    "readings": Digested(
        _r,
        ("machine_id", "sensor_type", "seq", "ts", "value", "status_code", "late", "score",
         "rolling_1", "rolling_2"),
        ("machine_id", "sensor_type", "ts", "seq"),
    ),
    "windows": Digested(
        _w,
        ("machine_id", "sensor_type", "width_s", "window_start", "window_end", "count", "nulls",
         "late", "mean", "min", "max", "stddev", "quantile"),
        ("machine_id", "sensor_type", "width_s", "window_start"),
        final_only=True,
    ),
    "alerts": Digested(
        _a,
        ("alert_id", "rule", "kind", "severity", "state", "machine_id", "sensor_type",
         "start_ts", "opened_ts", "updated_ts", "closed_ts", "peak", "breaches", "detects"),
        ("alert_id",),
    ),
    "stats": Digested(
        _s,
        ("machine_id", "sensor_type", "n", "nulls", "late", "mean", "std", "ewma", "ewstd",
         "quantile", "baseline", "score", "drifts", "last_ts"),
        ("machine_id", "sensor_type"),
    ),
    "predictions": Digested(
        schema.predictions,
        ("machine_id", "window_start", "window_end", "model", "version", "kind", "score",
         "alarm", "features"),
        ("machine_id", "model", "window_start"),
    ),
}  # fmt: skip


@dataclass(frozen=True)
class RunDigest:
    """The digests of one run's stored results (``workbench db digest``), and how many of
    its readings are flagged late."""

    readings: str
    windows: str
    alerts: str
    stats: str
    predictions: str
    late: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def digest(database_url: str, run_id: str, chunk_rows: int = 20_000) -> RunDigest:
    """The digests of ``run_id``'s results in the PostgreSQL or SQLite database
    ``database_url`` names; :class:`UnknownRun` if it holds nothing of the run."""
    eng = sinks.engine(database_url)
    try:
        with eng.connect() as conn:
            present = set(sa.inspect(conn).get_table_names())
            if not _known(conn, present, run_id):
                raise UnknownRun(run_id, sinks.redact(database_url))
            sums = {
                name: _table_digest(conn, d, run_id, chunk_rows)
                if d.table.name in present
                else EMPTY
                for name, d in DIGESTS.items()
            }
            late = 0
            if "readings" in present:
                late_rows = sa.func.count().filter(_r.c.late)
                late = conn.execute(sa.select(late_rows).where(_r.c.run_id == run_id)).scalar_one()
    except sa.exc.OperationalError as exc:
        raise DatabaseUnavailable(sinks.redact(database_url), str(exc.orig).strip()) from None
    finally:
        eng.dispose()
    return RunDigest(late=late, **sums)


def _known(conn: sa.Connection, present: set[str], run_id: str) -> bool:
    tables = [t for t in (_r, _w, _a, _s, schema.runs) if t.name in present]
    return any(
        conn.execute(sa.select(sa.literal(1)).where(t.c.run_id == run_id).limit(1)).first()
        for t in tables
    )


def _table_digest(conn: sa.Connection, d: Digested, run_id: str, chunk_rows: int) -> str:
    postgres = conn.dialect.name == "postgresql"
    t = d.table
    columns = [_value(t.c[name], postgres) for name in d.columns]
    order = [_key(t.c[name], postgres) for name in d.order]
    where = [t.c.run_id == run_id] + ([t.c.final.is_(True)] if d.final_only else [])
    query = sa.select(*columns).where(*where).order_by(*order)
    query = query.execution_options(yield_per=chunk_rows)  # a server-side cursor on PostgreSQL
    result = conn.execute(query)
    return _sha256_json(result.partitions())


def _sha256_json(parts: Iterable[Iterable[Any]]) -> str:
    """``sha256(json.dumps(all rows))``, a part of the rows at a time.

    >>> whole = hashlib.sha256(b'[[1,null],[2.5,"x"]]').hexdigest()
    >>> _sha256_json([[(1, None)], [(2.5, "x")]]) == whole
    True
    """
    h = hashlib.sha256(b"[")
    sep = b""
    for part in parts:
        text = json.dumps([tuple(r) for r in part], separators=(",", ":"), sort_keys=True)
        h.update(sep + text[1:-1].encode())
        sep = b","
    h.update(b"]")
    return h.hexdigest()


def _value(c: sa.Column, postgres: bool) -> sa.ColumnElement:
    """The column as digested: times as integer microseconds since the epoch; floats plus
    0.0, which turns -0.0 into 0.0 (SQLite stores a whole REAL as an integer and reads back
    0.0 for -0.0, PostgreSQL keeps the sign)."""
    if isinstance(c.type, sa.Float):
        return (c + 0.0).label(c.name)
    if not isinstance(c.type, sa.DateTime):
        return c
    if postgres:
        return sa.cast(sa.extract("epoch", c) * 1_000_000, sa.BigInteger)
    # SQLite holds SQLAlchemy's text form, 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC): exact integers
    seconds = sa.cast(sa.func.strftime("%s", sa.func.substr(c, 1, 19)), sa.BigInteger)
    return seconds * 1_000_000 + sa.cast(sa.func.substr(c, 21, 6), sa.BigInteger)


def _key(c: sa.Column, postgres: bool) -> sa.ColumnElement:
    """An ordering column; text by its bytes (PostgreSQL's C collation, SQLite's default)."""
    return c.collate("C") if postgres and isinstance(c.type, sa.Text) else c
