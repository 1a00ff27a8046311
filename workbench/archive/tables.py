"""What the archive holds and how it is laid out: one spec per archived table.

Layout (hive partitioning, so ``pyarrow.dataset``, DuckDB, Spark and Athena prune by path)::

    <root>/readings/date=2026-01-01/run_id=<run>/part-000000000-240000000.parquet
    <root>/windows/date=2026-01-01/run_id=<run>/part-120000000-130000000.parquet

``date`` is the UTC day of the row's event time; ``run_id`` is there because every
question in this lab is asked of a run, and because it makes re-archiving a run touch its
own files only. Machines and sensors are *not* path partitions: a 1,000-machine factory
would make thousands of tiny files a day. Rows are sorted by event time inside a file,
so the row groups' min/max statistics prune a time range within a day.

A file's name is the slice of the day it covers, ``part-<from>-<to>`` as HHMMSSmmm in UTC,
half-open (``240000000`` is midnight at the end): archiving the same slice again writes the
same name, so a second run replaces instead of duplicating.

>>> slice_name(0, DAY_MS)
'part-000000000-240000000.parquet'
>>> parse_slice("part-013000250-020000000.parquet")
(5400250, 7200000)
>>> parse_slice("notes.txt") is None
True
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from urllib.parse import quote

import pyarrow as pa

DAY_MS = 86_400_000
TS_MS = pa.timestamp("ms", tz="UTC")  # event time: milliseconds, as on the wire
TS_US = pa.timestamp("us", tz="UTC")  # database clocks (ingested_at, emitted_at): microseconds

#: Partition columns, in path order; they live in the path, not in the files.
PARTITIONS = pa.schema([("date", pa.string()), ("run_id", pa.string())])

_SLICE = re.compile(r"^part-(\d{9})-(\d{9})\.parquet$")


@dataclass(frozen=True)
class ArchivedTable:
    """A database table as the archive stores it.

    Attributes
    ----------
    name: the folder under the archive root.
    table: the database table.
    time_column: event time; its UTC day is the ``date`` partition and periods select on it.
    schema: the columns stored in the files (the database's, less ``run_id``), in order.
    order: the sort key inside a file: event time first, then the natural key.
    """

    name: str
    table: str
    time_column: str
    schema: pa.Schema
    order: tuple[str, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        """The database columns, ``run_id`` first, as :func:`read` returns them."""
        return ("run_id", *self.schema.names)

    def select_sql(self) -> str:
        """SELECT of the file columns, times as integer epoch units (exact, and far cheaper to
        turn into Arrow than datetime objects), for one run and a half-open period."""
        exprs = []
        for f in self.schema:
            if f.type == TS_MS:
                exprs.append(f"(extract(epoch from {f.name}) * 1000)::int8")
            elif f.type == TS_US:
                exprs.append(f"(extract(epoch from {f.name}) * 1000000)::int8")
            else:
                exprs.append(f'"{f.name}"')
        t = self.time_column
        return (
            f"SELECT {', '.join(exprs)} FROM {self.table} WHERE run_id = %s "
            f"AND {t} >= %s AND {t} < %s ORDER BY {', '.join(self.order)}"
        )

    def partitions_sql(self, run_id: str | None) -> str:
        """(run, UTC day, rows) of every partition with rows in a half-open period."""
        t = self.time_column
        where = f"{t} >= %s AND {t} < %s" + (" AND run_id = %s" if run_id is not None else "")
        return (
            f"SELECT run_id, ({t} AT TIME ZONE 'UTC')::date, count(*) FROM {self.table} "
            f"WHERE {where} GROUP BY 1, 2 ORDER BY 1, 2"
        )

    def partition_dir(self, day: dt.date, run_id: str) -> str:
        """``<name>/date=<day>/run_id=<run>``, the run id URI-encoded as pyarrow's hive
        partitioning expects (a run id may hold ``/`` or spaces)."""
        return f"{self.name}/date={day.isoformat()}/run_id={quote(run_id, safe='')}"


READINGS = ArchivedTable(
    "readings",
    "readings",
    "ts",
    pa.schema(
        [
            pa.field("machine_id", pa.string(), nullable=False),
            pa.field("sensor_type", pa.string(), nullable=False),
            pa.field("seq", pa.int64(), nullable=False),
            pa.field("ts", TS_MS, nullable=False),
            pa.field("value", pa.float64()),
            pa.field("status_code", pa.int32(), nullable=False),
            pa.field("late", pa.bool_(), nullable=False),
            pa.field("score", pa.float64()),
            pa.field("rolling_1", pa.float64()),
            pa.field("rolling_2", pa.float64()),
            pa.field("ingested_at", TS_US, nullable=False),
        ]
    ),
    ("ts", "machine_id", "sensor_type", "seq"),
)

WINDOWS = ArchivedTable(
    "windows",
    "window_stats",
    "window_start",
    pa.schema(
        [
            pa.field("machine_id", pa.string(), nullable=False),
            pa.field("sensor_type", pa.string(), nullable=False),
            pa.field("width_s", pa.int32(), nullable=False),
            pa.field("window_start", TS_MS, nullable=False),
            pa.field("window_end", TS_MS, nullable=False),
            pa.field("count", pa.int32(), nullable=False),
            pa.field("nulls", pa.int32(), nullable=False),
            pa.field("late", pa.int32(), nullable=False),
            pa.field("mean", pa.float64()),
            pa.field("min", pa.float64()),
            pa.field("max", pa.float64()),
            pa.field("stddev", pa.float64()),
            pa.field("quantile", pa.float64()),
            pa.field("final", pa.bool_(), nullable=False),
            pa.field("revision", pa.int32(), nullable=False),
            pa.field("emitted_at", TS_US, nullable=False),
        ]
    ),
    ("window_start", "machine_id", "sensor_type", "width_s"),
)

TABLES = {t.name: t for t in (READINGS, WINDOWS)}


def _hhmmss(ms: int) -> str:
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}{m:02d}{s:02d}{ms:03d}"


def slice_name(start_ms: int, end_ms: int) -> str:
    """The file name of the slice [start, end) of a day, in ms since its midnight."""
    return f"part-{_hhmmss(start_ms)}-{_hhmmss(end_ms)}.parquet"


def parse_slice(name: str) -> tuple[int, int] | None:
    """The slice a file name covers (ms since midnight), or None for a foreign file."""
    match = _SLICE.match(name)
    if not match:
        return None

    def ms(text: str) -> int:
        return (int(text[:2]) * 3600 + int(text[2:4]) * 60 + int(text[4:6])) * 1000 + int(text[6:])

    return ms(match[1]), ms(match[2])


def day_start(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
