"""PostgreSQL sink: schema creation, health check, and the bulk COPY + merge write path.

Rows are streamed with binary ``COPY`` into a temporary staging table and merged into
the fact table with ``INSERT ... ON CONFLICT DO NOTHING`` in the same transaction, so a
batch is either stored whole or not at all, and storing it twice changes nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import psycopg.sql
import sqlalchemy as sa

from workbench.errors import DatabaseUnavailable
from workbench.sinks import schema
from workbench.sinks.timeseries import apply_timescale

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Staged:
    """A fact table written by binary COPY into a session-local staging table plus one
    INSERT ... SELECT that merges by natural key (in the caller's transaction)."""

    name: str
    columns: tuple[tuple[str, str], ...]  # (name, COPY binary type) in row order
    merge: str  # the INSERT ... SELECT ... FROM stage_<name> ... statement

    @property
    def stage(self) -> str:
        return f"stage_{self.name}"

    def create_stage(self) -> str:
        cols = ", ".join(f"{n} {_SQL_TYPES[t]}" for n, t in self.columns)
        return f"CREATE TEMP TABLE {self.stage} ({cols}) ON COMMIT DELETE ROWS"

    def write(self, cur: psycopg.Cursor, rows: Sequence[tuple[Any, ...]]) -> int:
        names = ", ".join(n for n, _ in self.columns)
        with cur.copy(f"COPY {self.stage} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types([t for _, t in self.columns])
            for row in rows:
                copy.write_row(row)
        cur.execute(self.merge)
        return cur.rowcount


_SQL_TYPES = {"text": "text", "int8": "bigint", "int4": "integer", "float8": "double precision",
              "bool": "boolean", "jsonb": "jsonb"}  # fmt: skip


def _ts(column: str) -> str:
    return f"timestamptz 'epoch' + {column} * interval '1 millisecond'"


#: readings: a reading's key never changes, so a second write of it does nothing.
READINGS = Staged(
    "readings",
    (("run_id", "text"), ("machine_id", "text"), ("sensor_type", "text"), ("seq", "int8"),
     ("ts_ms", "int8"), ("value", "float8"), ("status_code", "int4"), ("late", "bool"),
     ("score", "float8"), ("rolling_1", "float8"), ("rolling_2", "float8")),
    "INSERT INTO readings (run_id, machine_id, sensor_type, seq, ts, value, status_code, late, "
    f"score, rolling_1, rolling_2) SELECT run_id, machine_id, sensor_type, seq, {_ts('ts_ms')}, "
    "value, status_code, late, score, rolling_1, rolling_2 FROM stage_readings "
    "ON CONFLICT DO NOTHING",
)  # fmt: skip
READING_COLUMNS = tuple(n for n, _ in READINGS.columns)

#: window_stats: a later revision replaces an earlier one; a provisional result (revision
#: -1) never replaces a final one, so out-of-order writes cannot undo a final window.
WINDOWS = Staged(
    "window_stats",
    (("run_id", "text"), ("machine_id", "text"), ("sensor_type", "text"), ("width_s", "int4"),
     ("start_ms", "int8"), ("end_ms", "int8"), ("count", "int4"), ("nulls", "int4"),
     ("late", "int4"), ("mean", "float8"), ("min", "float8"), ("max", "float8"),
     ("stddev", "float8"), ("quantile", "float8"), ("final", "bool"), ("revision", "int4")),
    "INSERT INTO window_stats AS w (run_id, machine_id, sensor_type, width_s, window_start, "
    "window_end, count, nulls, late, mean, min, max, stddev, quantile, final, revision) "
    f"SELECT DISTINCT ON (run_id, machine_id, sensor_type, width_s, start_ms) run_id, "
    f"machine_id, sensor_type, width_s, {_ts('start_ms')}, {_ts('end_ms')}, count, nulls, late, "
    "mean, min, max, stddev, quantile, final, revision FROM stage_window_stats "
    "ORDER BY run_id, machine_id, sensor_type, width_s, start_ms, revision DESC "
    "ON CONFLICT (run_id, machine_id, sensor_type, width_s, window_start) DO UPDATE SET "
    "count = EXCLUDED.count, nulls = EXCLUDED.nulls, late = EXCLUDED.late, "
    "mean = EXCLUDED.mean, min = EXCLUDED.min, max = EXCLUDED.max, stddev = EXCLUDED.stddev, "
    "quantile = EXCLUDED.quantile, final = EXCLUDED.final, revision = EXCLUDED.revision, "
    "emitted_at = now() WHERE EXCLUDED.revision >= w.revision",
)  # fmt: skip
WINDOW_COLUMNS = tuple(n for n, _ in WINDOWS.columns)

#: sensor_stats: the newest statistics of a sensor win (more readings seen).
SENSOR_STATS = Staged(
    "sensor_stats",
    (("run_id", "text"), ("machine_id", "text"), ("sensor_type", "text"), ("n", "int8"),
     ("nulls", "int8"), ("late", "int8"), ("mean", "float8"), ("std", "float8"),
     ("ewma", "float8"), ("ewstd", "float8"), ("quantile", "float8"), ("baseline", "float8"),
     ("score", "float8"), ("drifts", "int4"), ("last_ms", "int8")),
    "INSERT INTO sensor_stats AS s (run_id, machine_id, sensor_type, n, nulls, late, mean, std, "
    "ewma, ewstd, quantile, baseline, score, drifts, last_ts) "
    "SELECT DISTINCT ON (run_id, machine_id, sensor_type) run_id, machine_id, sensor_type, n, "
    f"nulls, late, mean, std, ewma, ewstd, quantile, baseline, score, drifts, {_ts('last_ms')} "
    "FROM stage_sensor_stats ORDER BY run_id, machine_id, sensor_type, n DESC "
    "ON CONFLICT (run_id, machine_id, sensor_type) DO UPDATE SET n = EXCLUDED.n, "
    "nulls = EXCLUDED.nulls, late = EXCLUDED.late, mean = EXCLUDED.mean, std = EXCLUDED.std, "
    "ewma = EXCLUDED.ewma, ewstd = EXCLUDED.ewstd, quantile = EXCLUDED.quantile, "
    "baseline = EXCLUDED.baseline, score = EXCLUDED.score, drifts = EXCLUDED.drifts, "
    "last_ts = EXCLUDED.last_ts, updated_at = now() WHERE EXCLUDED.n >= s.n",
)  # fmt: skip
SENSOR_STATS_COLUMNS = tuple(n for n, _ in SENSOR_STATS.columns)

#: alerts: one row per alert, moved through its lifecycle; the opening time stays.
ALERTS = Staged(
    "alerts",
    (("run_id", "text"), ("alert_id", "text"), ("rule", "text"), ("kind", "text"),
     ("severity", "text"), ("state", "text"), ("machine_id", "text"), ("sensor_type", "text"),
     ("start_ms", "int8"), ("opened_ms", "int8"), ("updated_ms", "int8"), ("closed_ms", "int8"),
     ("peak", "float8"), ("breaches", "int4"), ("detects", "jsonb")),
    "INSERT INTO alerts AS a (run_id, alert_id, rule, kind, severity, state, machine_id, "
    "sensor_type, start_ts, opened_ts, updated_ts, closed_ts, peak, breaches, detects) "
    f"SELECT run_id, alert_id, rule, kind, severity, state, machine_id, sensor_type, "
    f"{_ts('start_ms')}, {_ts('opened_ms')}, {_ts('updated_ms')}, {_ts('closed_ms')}, peak, "
    "breaches, detects FROM stage_alerts "
    "ON CONFLICT (run_id, alert_id) DO UPDATE SET state = EXCLUDED.state, "
    "updated_ts = EXCLUDED.updated_ts, closed_ts = EXCLUDED.closed_ts, peak = EXCLUDED.peak, "
    "breaches = EXCLUDED.breaches WHERE EXCLUDED.updated_ts >= a.updated_ts",
)  # fmt: skip
ALERT_COLUMNS = tuple(n for n, _ in ALERTS.columns)

DEAD_LETTER_COLUMNS = ("topic", "partition", "offset", "run_id", "reason", "key", "payload")
CHAOS_EVENT_COLUMNS = (
    "run_id", "event_id", "kind", "machine_id", "sensor_type", "start_ts", "end_ts",
    "magnitude", "source", "detail",
)  # fmt: skip
CHECKPOINT_COLUMNS = ("consumer_group", "topic", "partition", "next_offset", "state")


def _insert_ignore(
    cur: psycopg.Cursor, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> int:
    """INSERT rows that are not there yet (by natural key): for small, infrequent batches."""
    names = ", ".join(f'"{c}"' for c in columns)
    marks = ", ".join(["%s"] * len(columns))
    cur.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks}) ON CONFLICT DO NOTHING", rows)
    return cur.rowcount


def _ms(epoch_ms: int) -> dt.datetime:
    return EPOCH + dt.timedelta(milliseconds=epoch_ms)


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def libpq_url(url: str) -> str:
    """The URL as libpq (psycopg) wants it: scheme ``postgresql``."""
    _scheme, rest = url.split("://", 1)
    return "postgresql://" + rest


def sqlalchemy_url(url: str) -> str:
    """The URL as SQLAlchemy wants it, pinned to the psycopg 3 driver."""
    _scheme, rest = url.split("://", 1)
    return "postgresql+psycopg://" + rest


def redact(url: str) -> str:
    """The URL with its password replaced, fit for logs and error messages.

    >>> redact("postgresql://grafana:s3cret@db:5432/workbench")
    'postgresql://grafana:***@db:5432/workbench'
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def connect(url: str, timeout_s: float = 5.0, **kwargs: Any) -> psycopg.Connection:
    """A psycopg connection, or :class:`DatabaseUnavailable` naming the URL and the reason."""
    try:
        return psycopg.connect(libpq_url(url), connect_timeout=max(1, round(timeout_s)), **kwargs)
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise DatabaseUnavailable(redact(url), reason) from None


def check_database(url: str, timeout_s: float = 5.0) -> str:
    """Connect and return the server version string; raise if the server does not answer."""
    with connect(url, timeout_s) as conn:
        return conn.execute("SHOW server_version").fetchone()[0]


def engine(url: str) -> sa.Engine:
    return sa.create_engine(sqlalchemy_url(url), pool_pre_ping=True)


#: The database role dashboards and notebooks read as: SELECT on the workbench's tables only.
READER_ROLE = "workbench_reader"


def create_schema(
    url: str,
    reader_password: str | None = None,
    timescale: str = "auto",
    rows_per_s: float = 1000.0,
) -> None:
    """Create every table and index that does not exist yet, and add the columns a newer
    version of the schema has to tables an older version made. A second call changes nothing.

    Also creates the read-only role :data:`READER_ROLE` (SELECT only, on every table now and
    later), able to log in when ``reader_password`` is given, when the connecting user may
    create roles; otherwise says so in the log and goes on. With TimescaleDB (``timescale``
    auto or on) the big tables become hypertables, see :mod:`workbench.sinks.timeseries`.
    """
    eng = engine(url)
    try:
        with eng.begin() as conn:
            # one creator at a time: processors starting together must not race on DDL
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(7316801)"))
            schema.metadata.create_all(conn, checkfirst=True)
            _add_missing_columns(conn)
            apply_timescale(conn, rows_per_s, timescale)
            _reader_role(conn, reader_password)
    finally:
        eng.dispose()


def _reader_role(conn: sa.Connection, password: str | None) -> None:
    may = conn.execute(
        sa.text("SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user")
    ).scalar()
    if not may:
        log.info("not creating the read-only role %s: this user may not create roles", READER_ROLE)
        return
    exists = conn.execute(
        sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": READER_ROLE}
    ).scalar()
    if not exists:
        conn.execute(sa.text(f"CREATE ROLE {READER_ROLE} NOLOGIN"))
        log.info("created the read-only role %s", READER_ROLE)
    if password is not None:
        literal = psycopg.sql.Literal(password).as_string(None)
        conn.execute(sa.text(f"ALTER ROLE {READER_ROLE} WITH LOGIN PASSWORD {literal}"))
    conn.execute(sa.text(f"GRANT USAGE ON SCHEMA public TO {READER_ROLE}"))
    conn.execute(sa.text(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {READER_ROLE}"))
    conn.execute(
        sa.text(
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {READER_ROLE}"
        )
    )


def _add_missing_columns(conn: sa.Connection) -> None:
    inspector = sa.inspect(conn)
    for table in schema.metadata.sorted_tables:
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            ddl = f'ALTER TABLE {table.name} ADD COLUMN IF NOT EXISTS "{column.name}" '
            ddl += column.type.compile(dialect=conn.dialect)
            if column.server_default is not None:
                default = column.server_default.arg
                text = (
                    default.text
                    if hasattr(default, "text")
                    else str(default.compile(dialect=conn.dialect))
                )
                ddl += f" DEFAULT {text}"
            if not column.nullable and column.server_default is not None:
                ddl += " NOT NULL"
            log.info("schema change: %s", ddl)
            conn.execute(sa.text(ddl))


@dataclass(frozen=True)
class WriteResult:
    """What one batch did to the database."""

    readings_inserted: int
    readings_duplicate: int
    dead_letters_inserted: int
    windows_written: int = 0
    alerts_written: int = 0


class PostgresSink:
    """Writes batches of facts in one transaction each; one instance holds one connection.

    >>> # with PostgresSink(url) as sink: sink.write(readings=rows, windows=windows)
    """

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url
        self._conn = connect(url, timeout_s)
        with self._conn.transaction():
            for staged in (READINGS, WINDOWS, ALERTS, SENSOR_STATS):
                self._conn.execute(staged.create_stage())

    def write(
        self,
        readings: Sequence[tuple[Any, ...]] = (),
        dead_letters: Sequence[tuple[Any, ...]] = (),
        windows: Sequence[tuple[Any, ...]] = (),
        alerts: Sequence[tuple[Any, ...]] = (),
        checkpoints: Sequence[tuple[Any, ...]] = (),
        sensor_stats: Sequence[tuple[Any, ...]] = (),
    ) -> WriteResult:
        """Store one batch in one transaction: all of it or, on any error, none of it.

        Rows follow :data:`READING_COLUMNS`, :data:`DEAD_LETTER_COLUMNS`,
        :data:`WINDOW_COLUMNS`, :data:`ALERT_COLUMNS`, :data:`CHECKPOINT_COLUMNS` and
        :data:`SENSOR_STATS_COLUMNS`
        (times in epoch ms). A checkpoint written with the batch it follows is why a
        restored partition state always matches the data already stored.
        """
        inserted = dead_inserted = windows_written = alerts_written = 0
        with self._conn.transaction(), self._conn.cursor() as cur:
            if readings:
                inserted = READINGS.write(cur, readings)
            if dead_letters:
                dead_inserted = _insert_ignore(
                    cur, "dead_letters", DEAD_LETTER_COLUMNS, dead_letters
                )
            if windows:
                windows_written = WINDOWS.write(cur, windows)
            if alerts:
                alerts_written = ALERTS.write(cur, alerts)
            if sensor_stats:
                SENSOR_STATS.write(cur, sensor_stats)
            if checkpoints:
                cur.executemany(
                    "INSERT INTO processor_state (consumer_group, topic, partition, "
                    "next_offset, state) VALUES (%s, %s, %s, %s, %s) ON CONFLICT "
                    "(consumer_group, topic, partition) DO UPDATE SET next_offset = "
                    "EXCLUDED.next_offset, state = EXCLUDED.state, saved_at = now()",
                    checkpoints,
                )
        return WriteResult(
            inserted, len(readings) - inserted, dead_inserted, windows_written, alerts_written
        )

    def checkpoint(self, group: str, topic: str, partition: int) -> tuple[int, bytes] | None:
        """The last checkpoint of a partition: (next offset, state), or None."""
        row = self._conn.execute(
            "SELECT next_offset, state FROM processor_state WHERE consumer_group = %s "
            "AND topic = %s AND partition = %s",
            (group, topic, partition),
        ).fetchone()
        self._conn.commit()
        return (row[0], bytes(row[1])) if row else None

    def write_chaos_events(self, events: Sequence[tuple[Any, ...]]) -> int:
        """Store ground-truth events (rows follow :data:`CHAOS_EVENT_COLUMNS`, times in epoch
        ms); return how many were new."""
        rows = [(*e[:5], _ms(e[5]), _ms(e[6]), *e[7:]) for e in events]
        with self._conn.transaction(), self._conn.cursor() as cur:
            return _insert_ignore(cur, "chaos_events", CHAOS_EVENT_COLUMNS, rows)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> PostgresSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
