"""Archival: rows of a run and/or period out of PostgreSQL into Parquet, one file per
(table, day, run) slice.

The database is read in one REPEATABLE READ transaction, so the partitions, their counts
and the rows exported all come from one snapshot even while a processor keeps writing;
rows stream through a server-side cursor in event-time order, one row group at a time.

Safe to run twice: a slice is written under a name made of its bounds (see
:mod:`workbench.archive.tables`), so the same call writes the same files again. A new
slice that overlaps files already in its partition is widened to cover them and replaces
them; it must hold at least as many rows as the files it replaces, so archiving after the
database was pruned can never shrink the archive (it stops with an error instead).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, BinaryIO
from urllib.parse import unquote

import psycopg
import pyarrow as pa

from workbench.archive import parquet
from workbench.archive.fs import Location
from workbench.archive.tables import (
    DAY_MS,
    READINGS,
    TS_MS,
    TS_US,
    ArchivedTable,
    day_start,
    parse_slice,
    slice_name,
)
from workbench.errors import ArchiveError
from workbench.sinks.postgres import connect

log = logging.getLogger(__name__)

#: Open ends of a period, as database bounds.
BEGINNING = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
END = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class ArchivedFile:
    """One Parquet file written: where, what, and how many files it superseded."""

    table: str
    date: str
    run_id: str
    path: str
    rows: int
    bytes: int
    replaced: int = 0


@dataclass
class ArchiveReport:
    """What one ``workbench archive`` call did."""

    where: str
    run_id: str | None
    since: dt.datetime | None
    until: dt.datetime | None
    files: list[ArchivedFile] = field(default_factory=list)
    compacted: list[Any] = field(default_factory=list)
    seconds: float = 0.0

    def rows(self, table: str = "readings") -> int:
        return sum(f.rows for f in self.files if f.table == table)

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``workbench archive --json``: ``files`` and ``rows`` count the
        readings files and rows (``windows`` the same for windows, when archived)."""
        out: dict[str, Any] = {
            "where": self.where,
            "run_id": self.run_id,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
        }
        for table in ("readings", "windows"):
            files = [f for f in self.files if f.table == table]
            counts = {"files": len(files), "rows": sum(f.rows for f in files),
                      "bytes": sum(f.bytes for f in files),
                      "replaced": sum(f.replaced for f in files)}  # fmt: skip
            if table == "readings":
                out |= counts
            elif files:
                out["windows"] = counts
        out["paths"] = [f.path for f in self.files]
        out["compacted"] = [asdict(c) for c in self.compacted]
        out["seconds"] = round(self.seconds, 3)
        return out

    def text(self) -> str:
        """One line per file and per compaction, then the totals."""
        lines = [f"archive {self.where}"]
        for f in self.files:
            lines.append(f"  {f.table:<9}{f.date}  {f.run_id}  {f.rows:>10,} rows "
                         f"{f.bytes / 1e6:>9.2f} MB  {f.path.rsplit('/', 1)[1]}"
                         + (f" (replaced {f.replaced})" if f.replaced else ""))  # fmt: skip
        for c in self.compacted:
            lines.append(f"  compacted {c.table} {c.date} {c.run_id}: {c.inputs} files -> 1, "
                         f"{c.rows:,} rows")  # fmt: skip
        d = self.to_dict()
        lines.append(f"  {d['files']} readings files, {d['rows']:,} rows, "
                     f"{d['bytes'] / 1e6:.2f} MB in {self.seconds:.1f}s")  # fmt: skip
        if "windows" in d:
            w = d["windows"]
            lines.append(f"  {w['files']} windows files, {w['rows']:,} rows, "
                         f"{w['bytes'] / 1e6:.2f} MB")  # fmt: skip
        return "\n".join(lines)


def check_period(since: dt.datetime | None, until: dt.datetime | None) -> None:
    """A period must be in time-zone-aware datetimes and not run backwards."""
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise ArchiveError(f"--{name} {value.isoformat()} has no time zone")
    if since is not None and until is not None and since >= until:
        raise ArchiveError(
            f"--since {since.isoformat()} is not before --until {until.isoformat()}: "
            "the period is empty"
        )


def archive(
    location: Location,
    database_url: str,
    run_id: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    tables: Sequence[ArchivedTable] = (READINGS,),
    timeout_s: float = 5.0,
) -> ArchiveReport:
    """Archive the rows of ``run_id`` (every run when None) whose event time lies in
    [``since``, ``until``) (open ends when None) into Parquet at ``location``."""
    if run_id is None and since is None and until is None:
        raise ArchiveError("say what to archive: a run id, a period (since/until), or both")
    check_period(since, until)
    t0 = time.perf_counter()
    report = ArchiveReport(location.uri, run_id, since, until)
    lo, hi = since or BEGINNING, until or END
    with connect(database_url, timeout_s) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        with conn.transaction():
            if run_id is not None and not _known(conn, run_id):
                raise ArchiveError(
                    f"unknown run id {run_id!r}: the database has no readings, windows "
                    "or registry entry for it"
                )
            for spec in tables:
                params: tuple[Any, ...] = (lo, hi) + ((run_id,) if run_id is not None else ())
                partitions = conn.execute(spec.partitions_sql(run_id), params).fetchall()
                for run, day, _rows in partitions:
                    report.files.append(_partition(conn, location, spec, run, day, lo, hi))
    report.seconds = time.perf_counter() - t0
    log.info("archived %d files, %d readings rows to %s in %.1fs", len(report.files),
             report.rows(), location.uri, report.seconds)  # fmt: skip
    return report


def _known(conn: psycopg.Connection, run_id: str) -> bool:
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM readings WHERE run_id = %s) "
        "OR EXISTS (SELECT 1 FROM window_stats WHERE run_id = %s) "
        "OR EXISTS (SELECT 1 FROM runs WHERE run_id = %s)",
        (run_id, run_id, run_id),
    ).fetchone()
    return bool(row and row[0])


def _partition(
    conn: psycopg.Connection,
    location: Location,
    spec: ArchivedTable,
    run_id: str,
    day: dt.date,
    lo: dt.datetime,
    hi: dt.datetime,
) -> ArchivedFile:
    """Write the slice [lo, hi) of one (table, day, run) partition, replacing the files of
    that partition it overlaps."""
    midnight = day_start(day)
    start = max(0, _ms(lo - midnight))
    end = min(DAY_MS, _ms(hi - midnight))
    directory = location.path(spec.partition_dir(day, run_id))
    existing = {}
    for info in location.files(directory):
        covers = parse_slice(info.base_name)
        if covers is not None:
            existing[info.path] = covers
    overlapping: dict[str, tuple[int, int]] = {}
    while True:  # widen to every file the slice overlaps, until nothing more overlaps
        more = {p: c for p, c in existing.items() if c[0] < end and c[1] > start}
        start = min([start, *(c[0] for c in more.values())])
        end = max([end, *(c[1] for c in more.values())])
        if more.keys() == overlapping.keys():
            break
        overlapping = more
    old_rows = sum(parquet.num_rows(location, p) for p in overlapping)
    t_from = midnight + dt.timedelta(milliseconds=start)
    t_to = midnight + dt.timedelta(milliseconds=end)
    (count,) = conn.execute(
        f"SELECT count(*) FROM {spec.table} WHERE run_id = %s AND {spec.time_column} >= %s "
        f"AND {spec.time_column} < %s",
        (run_id, t_from, t_to),
    ).fetchone()
    if count < old_rows:
        raise ArchiveError(
            f"{spec.name} {day} {run_id}: the database has {count} rows for "
            f"{t_from.isoformat()}..{t_to.isoformat()} but the archive already holds "
            f"{old_rows}; not replacing them (was the database pruned?)"
        )
    path = f"{directory}/{slice_name(start, end)}"

    def write(out: BinaryIO) -> int:
        return parquet.write_groups(out, spec.schema, _export(conn, spec, run_id, t_from, t_to))

    rows = location.write_atomic(path, write)
    if rows != count:  # cannot happen in one snapshot; never let it pass silently
        raise ArchiveError(f"{path}: wrote {rows} rows, the database counted {count}")
    for old in overlapping:
        if old != path:
            location.delete(old)
    log.debug("%s: %d rows (replaced %d files)", path, rows, len(overlapping))
    return ArchivedFile(spec.name, day.isoformat(), run_id, path, rows, location.size(path),
                        len(overlapping))  # fmt: skip


def _ms(delta: dt.timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _export(
    conn: psycopg.Connection,
    spec: ArchivedTable,
    run_id: str,
    t_from: dt.datetime,
    t_to: dt.datetime,
) -> Iterator[pa.Table]:
    """The rows of one slice in event-time order, a row group at a time, through a
    server-side cursor (memory stays at one group however large the slice)."""
    with conn.cursor(name=f"archive_{uuid.uuid4().hex[:8]}") as cur:
        cur.itersize = parquet.ROW_GROUP_ROWS
        cur.execute(spec.select_sql(), (run_id, t_from, t_to))
        while rows := cur.fetchmany(parquet.ROW_GROUP_ROWS):
            yield to_arrow(rows, spec.schema)


def to_arrow(rows: Sequence[tuple[Any, ...]], schema: pa.Schema) -> pa.Table:
    """Database rows (times as integer epoch ms or us) as an Arrow table of ``schema``."""
    arrays = []
    for f, values in zip(schema, zip(*rows, strict=True), strict=True):
        if f.type in (TS_MS, TS_US):
            arrays.append(pa.array(values, pa.int64()).cast(f.type))
        else:
            arrays.append(pa.array(values, f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def partition_of(path: str) -> tuple[str, str]:
    """(date, run id) from a file path in the archive's hive layout."""
    parts = dict(p.split("=", 1) for p in path.split("/") if "=" in p)
    return parts.get("date", ""), unquote(parts.get("run_id", ""))
