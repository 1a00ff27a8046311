"""Reading the archive back with ``pyarrow.dataset``: partition pruning by path (date, run),
then row-group pruning by event-time statistics.

What comes back has the database table's columns, ``run_id`` first, sorted by event time
and the natural key, so that it can be compared with a database query row for row.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.dataset as ds

from workbench.archive.fs import Location, open_location
from workbench.archive.tables import PARTITIONS, READINGS, TS_MS, WINDOWS, ArchivedTable
from workbench.archive.writer import check_period


def read(
    location: Location,
    spec: ArchivedTable,
    run_id: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> pa.Table:
    """The archived rows of ``spec`` for one run (or all) with event time in
    [``since``, ``until``)."""
    check_period(since, until)
    schema = pa.schema([*spec.schema, *PARTITIONS])
    if not location.files(location.path(spec.name), recursive=True):
        return _ordered(schema.empty_table(), spec)
    with location.reaching():
        dataset = ds.dataset(
            location.path(spec.name),
            filesystem=location.filesystem,
            format="parquet",
            schema=schema,
            partitioning=ds.partitioning(PARTITIONS, flavor="hive"),
        )
        t = ds.field(spec.time_column)
        where = ds.scalar(True)
        if run_id is not None:
            where &= ds.field("run_id") == run_id
        if since is not None:
            where &= (ds.field("date") >= since.astimezone(dt.UTC).date().isoformat()) & (
                t >= pa.scalar(since, TS_MS)
            )
        if until is not None:
            where &= (ds.field("date") <= until.astimezone(dt.UTC).date().isoformat()) & (
                t < pa.scalar(until, TS_MS)
            )
        table = dataset.to_table(filter=where)
    return _ordered(table, spec)


def _ordered(table: pa.Table, spec: ArchivedTable) -> pa.Table:
    table = table.select(list(spec.columns))
    return table.sort_by([("run_id", "ascending"), *((c, "ascending") for c in spec.order)])


def read_readings(
    where: str | Location,
    run_id: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> pa.Table:
    """The archived readings of a run and/or period from an archive URI or location.

    ``read_readings(default_uri(settings), run_id).to_pandas()`` in a notebook.
    """
    location = where if isinstance(where, Location) else open_location(where)
    return read(location, READINGS, run_id, since, until)


def read_windows(
    where: str | Location,
    run_id: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> pa.Table:
    """The archived window results of a run and/or period (by window start)."""
    location = where if isinstance(where, Location) else open_location(where)
    return read(location, WINDOWS, run_id, since, until)
