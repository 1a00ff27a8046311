"""Time-series storage on top of the schema: TimescaleDB when the server has it, retention
either way.

**TimescaleDB.** When the extension is available, ``readings`` and ``window_stats`` become
hypertables on event time, with a chunk interval sized for the data rate, and compression
(segmented by machine and sensor, ordered by time) for chunks older than a day.
:func:`timescale_statements` generates the SQL; it is tested for what it generates, since
no TimescaleDB binary exists on the project's CI machines. Without the extension the tables
stay plain PostgreSQL, with btree (machine, time) and BRIN (time) indexes.

**Retention** is by *run age*, not by event time, on purpose: a seeded run is stamped at a
fixed event-time origin (2026-01-01) so that equal seeds give equal streams, and an
event-time policy (TimescaleDB's ``add_retention_policy``) would drop yesterday's seeded
run as eleven months old. :func:`prune` deletes the readings (and dead letters) of runs
recorded longer ago than the readings retention, and everything of runs older than the
windows retention; ``workbench prune`` runs it, ``--dry-run`` only counts.

>>> chunk_interval(rows_per_s=100)
datetime.timedelta(days=1, seconds=13600)
>>> chunk_interval(rows_per_s=50_000)
datetime.timedelta(seconds=3600)
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import sqlalchemy as sa

from workbench.errors import ConfigError
from workbench.sinks import schema

log = logging.getLogger(__name__)

#: Rows per chunk to aim at: chunk plus indexes well inside a quarter of a modest server's
#: memory (TimescaleDB's own sizing advice), at ~200 bytes per reading with its indexes.
ROWS_PER_CHUNK = 10_000_000
MIN_CHUNK = dt.timedelta(hours=1)
MAX_CHUNK = dt.timedelta(days=7)


@dataclass(frozen=True)
class Hypertable:
    table: str
    time_column: str
    segment_by: str
    order_by: str


HYPERTABLES = (
    Hypertable("readings", "ts", "machine_id, sensor_type", "ts DESC"),
    Hypertable("window_stats", "window_start", "machine_id, sensor_type, width_s",
               "window_start DESC"),
)  # fmt: skip


def chunk_interval(rows_per_s: float) -> dt.timedelta:
    """A chunk interval that holds about :data:`ROWS_PER_CHUNK` rows, within 1 h to 7 days."""
    seconds = ROWS_PER_CHUNK / max(rows_per_s, 1e-9)
    return max(MIN_CHUNK, min(MAX_CHUNK, dt.timedelta(seconds=round(seconds))))


def timescale_statements(
    rows_per_s: float, compress_after: dt.timedelta = dt.timedelta(days=1)
) -> list[str]:
    """The SQL that turns the workbench's tables into compressed hypertables (idempotent:
    every statement may run again on a database that already has it)."""
    chunk = chunk_interval(rows_per_s)
    out = ["CREATE EXTENSION IF NOT EXISTS timescaledb"]
    for h in HYPERTABLES:
        # window_stats gets far fewer rows than readings: one per window, not per reading
        interval = chunk if h.table == "readings" else min(MAX_CHUNK, chunk * 30)
        out += [
            f"SELECT create_hypertable('{h.table}', by_range('{h.time_column}', "
            f"INTERVAL '{int(interval.total_seconds())} seconds'), if_not_exists => TRUE, "
            "migrate_data => TRUE)",
            f"ALTER TABLE {h.table} SET (timescaledb.compress, "
            f"timescaledb.compress_segmentby = '{h.segment_by}', "
            f"timescaledb.compress_orderby = '{h.order_by}')",
            f"SELECT add_compression_policy('{h.table}', "
            f"INTERVAL '{int(compress_after.total_seconds())} seconds', if_not_exists => TRUE)",
        ]
    return out


def timescale_available(conn: sa.Connection) -> bool:
    return bool(
        conn.execute(
            sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
        ).scalar()
    )


def apply_timescale(conn: sa.Connection, rows_per_s: float, mode: str = "auto") -> bool:
    """Make hypertables if TimescaleDB is there (``mode`` auto), must be (on), or never
    (off). Returns whether it did; the choice is logged either way."""
    if mode == "off":
        log.debug("TimescaleDB: off by setting; plain PostgreSQL tables")
        return False
    if not timescale_available(conn):
        if mode == "on":
            raise ConfigError("WORKBENCH_TIMESCALE", mode, "auto or off: this server has no "
                              "timescaledb extension")  # fmt: skip
        # debug, not info: every command prepares the schema, and this is the common case
        log.debug("TimescaleDB: not available on this server; plain PostgreSQL tables with "
                  "btree (machine, time) and BRIN (time) indexes")  # fmt: skip
        return False
    for statement in timescale_statements(rows_per_s):
        conn.execute(sa.text(statement))
    log.info("TimescaleDB: readings and window_stats are compressed hypertables "
             "(readings chunk %s)", chunk_interval(rows_per_s))  # fmt: skip
    return True


@dataclass(frozen=True)
class PruneResult:
    """Rows deleted (or, in a dry run, that would be) per table, and the runs concerned."""

    rows: dict[str, int]
    runs: list[str]
    dry_run: bool


#: What goes after the readings retention: the bulky per-reading facts.
READING_TABLES = ("readings", "dead_letters")
#: What goes after the windows retention, with the run itself.
RUN_TABLES = ("window_stats", "sensor_stats", "alerts", "chaos_events", "predictions",
              "machine_health")  # fmt: skip


def prune(
    conn: sa.Connection,
    readings_after: dt.timedelta,
    windows_after: dt.timedelta,
    now: dt.datetime | None = None,
    dry_run: bool = False,
) -> PruneResult:
    """Delete what is older than the retention, by when each run was recorded."""
    now = now or dt.datetime.now(dt.UTC)
    runs = schema.runs
    old_readings = sa.select(runs.c.run_id).where(runs.c.started_at < now - readings_after)
    old_runs = sa.select(runs.c.run_id).where(runs.c.started_at < now - windows_after)
    rows: dict[str, int] = {}
    concerned = sorted(conn.execute(old_readings).scalars())
    plan = [(t, old_readings) for t in READING_TABLES] + [(t, old_runs) for t in RUN_TABLES]
    plan.append(("runs", old_runs))
    for name, which in plan:
        table = schema.metadata.tables[name]
        where = table.c.run_id.in_(which)
        if dry_run:
            count = sa.select(sa.func.count()).select_from(table).where(where)
            rows[name] = conn.execute(count).scalar_one()
        else:
            rows[name] = conn.execute(sa.delete(table).where(where)).rowcount
    verb = "would delete" if dry_run else "deleted"
    log.info("prune: %s %s", verb, ", ".join(f"{n} {t}" for t, n in rows.items() if n) or "nothing")
    return PruneResult(rows, concerned, dry_run)
