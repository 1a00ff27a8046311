"""Compaction: the small files of a (table, day, run) partition merged into one.

Small files come from archiving a long run in slices (an hourly job writes 24 files a
day). Compacting a day once it is over (daily), or every day of a month at its end
(monthly: the same merge over a longer period, catching late slices), leaves one file per
partition, which readers open once and whose row groups are full.

A partition's slices never overlap (the writer keeps them apart), and each is sorted by
event time, so the merge streams them in slice order into one file without sorting or
holding more than a row group. The merged file is named by the span of its inputs and
written atomically; the inputs are deleted only after the new file's footer shows exactly
as many rows as they held. A partition of one file is left alone, so compacting twice
changes nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from workbench.archive import parquet
from workbench.archive.fs import Location
from workbench.archive.tables import READINGS, ArchivedTable, parse_slice, slice_name
from workbench.archive.writer import check_period, partition_of
from workbench.errors import ArchiveError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Compaction:
    """One partition merged: its inputs, and the rows and file that replaced them."""

    table: str
    date: str
    run_id: str
    inputs: int
    rows: int
    path: str
    bytes: int


def compact(
    location: Location,
    run_id: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    tables: Sequence[ArchivedTable] = (READINGS,),
) -> list[Compaction]:
    """Merge the files of every partition of ``run_id`` (all runs when None) whose day
    overlaps [``since``, ``until``) (all days when None) into one file each."""
    check_period(since, until)
    done = []
    for spec in tables:
        by_partition: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
        for info in location.files(location.path(spec.name), recursive=True):
            covers = parse_slice(info.base_name)
            if covers is None:
                continue
            date, run = partition_of(info.path)
            if run_id is not None and run != run_id:
                continue
            if not _day_in(date, since, until):
                continue
            by_partition[info.path.rsplit("/", 1)[0]].append((*covers, info.path))
        for directory, files in sorted(by_partition.items()):
            if len(files) > 1:
                done.append(_merge(location, spec, directory, sorted(files)))
    return done


def _day_in(date: str, since: dt.datetime | None, until: dt.datetime | None) -> bool:
    day = dt.date.fromisoformat(date)
    first = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    last = first + dt.timedelta(days=1)
    return (since is None or last > since) and (until is None or first < until)


def _merge(
    location: Location, spec: ArchivedTable, directory: str, files: list[tuple[int, int, str]]
) -> Compaction:
    inputs = [path for _, _, path in files]
    expected = sum(parquet.num_rows(location, p) for p in inputs)
    path = f"{directory}/{slice_name(files[0][0], max(end for _, end, _ in files))}"
    if path in inputs:
        raise ArchiveError(f"{directory}: {path} overlaps the other files of its partition")

    def batches() -> Iterator[pa.Table]:
        for p in inputs:  # slices are disjoint and in order: concatenation stays sorted
            with location.open_input(p) as source:
                reader = pq.ParquetFile(source)
                for batch in reader.iter_batches(batch_size=parquet.ROW_GROUP_ROWS):
                    yield pa.Table.from_batches([batch]).cast(spec.schema)

    def write(out: BinaryIO) -> int:
        return parquet.write_groups(out, spec.schema, batches())

    rows = location.write_atomic(path, write)
    stored = parquet.num_rows(location, path)
    if not rows == stored == expected:
        location.delete(path)
        raise ArchiveError(
            f"compacting {directory}: {expected} rows in, {stored} in the merged file; "
            "kept the inputs"
        )
    for p in inputs:
        location.delete(p)
    date, run = partition_of(directory)
    log.info("compacted %s: %d files -> %s (%d rows)", directory, len(inputs), path, rows)
    return Compaction(spec.name, date, run, len(inputs), rows, path, location.size(path))
