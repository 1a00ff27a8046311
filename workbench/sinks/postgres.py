"""PostgreSQL sink: schema creation and migration, health check, and the write path.

A batch is one transaction: readings by binary ``COPY`` straight into their table (see
:class:`PostgresSink`), the other tables by COPY into a staging table and one merging
INSERT; so a batch is stored whole or not at all, and storing it twice changes nothing.

**The readings key, measured.** Index upkeep, not the client, sets the ingest rate. Binary
COPY of 500,000 readings (1,000 machines x 3 sensors in arrival order, 100,000 per
transaction) into an empty table of the embedded PostgreSQL, medians of 5 interleaved
trials on a shared 2-core machine, as ratios to the key and indexes of earlier versions:

==============================================================================  =====
(a) key (run_id, machine_id, sensor_type, seq, ts), btree (machine_id, ts), BRIN  1.00
(b) key (run_id, machine_id, sensor_type, seq, ts), BRIN (ts)                     1.6
(c) key (run_id, machine_id, sensor_type, ts, seq), BRIN (ts)                     1.7
(c) with each batch sorted by the key (what the sink does)                        2.5
(d) key (run_id, ts, machine_id, sensor_type, seq), BRIN (ts)                     3.0
no key, BRIN only (could not refuse a duplicate)                                  6.2
==============================================================================  =====

(d) appends at the right edge of its btree, but then a dashboard's query of one machine and
sensor over a time range reads every machine's rows of that range (170 ms against 0.6 ms on
(c), at 1M readings; growing with the machines). Every query of the workbench filters a run,
then a machine and sensor and a time range, which (c) serves; so the schema has (c) and no
second btree, and :class:`PostgresSink` sorts each batch by the key before the COPY, so that
each leaf page takes its new rows in one visit.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import psycopg
import psycopg.sql
import sqlalchemy as sa

from workbench.errors import DatabaseUnavailable
from workbench.sinks import pgcopy, schema
from workbench.sinks.base import BLOBS, DROP_SEGMENT, SinkBase, StoredCheckpoint, refusals
from workbench.sinks.columns import ROW_LAYOUTS, Prepared, WriteBatch, WriteResult, prepare
from workbench.sinks.merge import RULES, MergeRule, in_key_order, insert_sql, latest
from workbench.sinks.timeseries import apply_timescale

__all__ = ["READER_ROLE", "PostgresSink", "WriteBatch", "WriteResult", "check_database",
           "connect", "create_schema", "engine", "redact"]  # fmt: skip

log = logging.getLogger(__name__)


#: Row tuples of the per-reading processor, by table (see :meth:`SinkBase.write`).
READING_COLUMNS = ROW_LAYOUTS["readings"]
WINDOW_COLUMNS = ROW_LAYOUTS["window_stats"]
ALERT_COLUMNS = ROW_LAYOUTS["alerts"]
SENSOR_STATS_COLUMNS = ROW_LAYOUTS["sensor_stats"]
DEAD_LETTER_COLUMNS = ROW_LAYOUTS["dead_letters"]
CHAOS_EVENT_COLUMNS = ROW_LAYOUTS["chaos_events"]


def libpq_url(url: str) -> str:
    """The URL as libpq (psycopg) wants it: scheme ``postgresql``."""
    _scheme, rest = url.split("://", 1)
    return "postgresql://" + rest


def sqlalchemy_url(url: str) -> str:
    """The URL as SQLAlchemy wants it, pinned to the psycopg 3 driver."""
    _scheme, rest = url.split("://", 1)
    return "postgresql+psycopg://" + rest


def redact(url: str) -> str:
    """The URL with its passwords replaced, in the user part and in the query string,
    fit for logs and error messages.

    >>> redact("postgresql://grafana:s3cret@db:5432/workbench")
    'postgresql://grafana:***@db:5432/workbench'
    >>> redact("postgresql://db/workbench?user=a&password=s3cret&sslmode=disable")
    'postgresql://db/workbench?user=a&password=***&sslmode=disable'
    """
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":***@", 1)
    query = _QUERY_SECRET.sub(r"\1=***", parts.query)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


#: libpq's parameters that hold a secret, in a URL's query string
_QUERY_SECRET = re.compile(r"(?i)\b(password|sslpassword)=[^&]*")


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
            _migrate_keys(conn)
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


def _migrate_keys(conn: sa.Connection) -> None:
    """Give tables an earlier version made the primary keys the metadata says (same columns,
    another order), and drop :data:`~workbench.sinks.schema.RETIRED_INDEXES`. A key that
    cannot change (a compressed TimescaleDB hypertable) stays, with a warning: it holds the
    same columns, so it still refuses the same duplicates."""
    inspector = sa.inspect(conn)
    for table in schema.metadata.sorted_tables:
        have = inspector.get_pk_constraint(table.name)
        want = [c.name for c in table.primary_key.columns]
        if not have["constrained_columns"] or have["constrained_columns"] == want:
            continue
        columns = ", ".join(f'"{c}"' for c in want)
        ddl = (f'ALTER TABLE {table.name} DROP CONSTRAINT "{have["name"]}", '
               f'ADD CONSTRAINT "{table.primary_key.name}" PRIMARY KEY ({columns})')  # fmt: skip
        log.info("schema change: %s", ddl)
        try:
            with conn.begin_nested():
                conn.execute(sa.text(ddl))
        except sa.exc.DBAPIError as exc:
            log.warning("keeping the primary key (%s) of %s: %s",
                        ", ".join(have["constrained_columns"]), table.name, exc.orig)  # fmt: skip
    for index in schema.RETIRED_INDEXES:
        if conn.execute(sa.text("SELECT to_regclass(:i)"), {"i": index}).scalar() is not None:
            log.info("schema change: DROP INDEX %s", index)
            conn.execute(sa.text(f'DROP INDEX IF EXISTS "{index}"'))


class PostgresSink(SinkBase):
    """Writes batches in one transaction each; one instance holds one connection.

    Readings go by binary ``COPY`` straight into ``readings``, inside a savepoint. A
    reading stored already (a redelivery after a crash, which the processor cannot know
    about) makes that COPY fail on the key; the sink then rolls back to the savepoint and
    takes the slower way, COPY into a staging table and ``INSERT ... ON CONFLICT DO
    NOTHING``, still in the same transaction. Every other table goes by COPY into its
    staging table and one INSERT that merges by the table's rule
    (:mod:`workbench.sinks.merge`).

    >>> # with PostgresSink(url) as sink: sink.write(WriteBatch(readings=columns))
    """

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url
        self._conn = connect(url, timeout_s)
        with self._conn.transaction():
            for name in RULES:
                self._conn.execute(
                    f"CREATE TEMP TABLE IF NOT EXISTS {_stage(name)} (LIKE {name} "
                    "INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
                )

    def _store(self, batch: WriteBatch) -> dict[str, int]:
        stored: dict[str, int] = {}
        with self._conn.transaction(), self._conn.cursor() as cur:
            for name, columns in batch.tables():
                if name in BLOBS:  # a few big values: no columnar detour
                    stored[name] = self._blobs(cur, name, columns)
                    continue
                rows = prepare(name, columns)
                if name == "readings":
                    stored[name], refused = self._readings(cur, rows)
                    if refused:
                        stored["refused"] = self._merge(
                            cur, RULES["dead_letters"], refusals("readings", columns, refused)
                        )
                        cur.execute(f"DELETE FROM {_stage('dead_letters')}")  # used again
                else:
                    stored[name] = self._merge(cur, RULES[name], latest(RULES[name], rows))
            if batch.dropped_segments:
                cur.executemany(DROP_SEGMENT.replace("?", "%s"), list(batch.dropped_segments))
        return stored

    def _blobs(self, cur: psycopg.Cursor, name: str, columns: Mapping[str, Any]) -> int:
        """Checkpoints (or their segments) one statement each, the blob sent as a binary
        parameter: a checkpoint is megabytes, and every copy of it on the way costs
        memory."""
        names = ROW_LAYOUTS[name]
        sql = insert_sql(RULES[name], names, "VALUES (%s, %s, %s, %s, %b)")
        for row in zip(*(list(columns[n]) for n in names), strict=True):
            cur.execute(sql, (str(row[0]), str(row[1]), int(row[2]), int(row[3]), row[4]))
        return len(columns[names[-1]])

    def _readings(
        self, cur: psycopg.Cursor, rows: Prepared, top: bool = True
    ) -> tuple[int, dict[int, str]]:
        """Readings stored, and the rows the database refused with its reason, by index.

        A binary COPY in key order (each leaf page of the key's btree takes its new rows in
        one visit: the measurements in this module's docstring), in a savepoint; readings
        stored already (a redelivery) make it fail on the key, and the rows are merged
        instead, in a savepoint of their own.

        A row the database refuses whatever is tried (a value out of a type's range, a
        constraint an operator added) would fail its whole batch on every retry, and stop
        the processor for good: the rows are split in halves, each tried the same way, down
        to the rows refused alone (~2 log2 n tries for one bad row among n). The rest is
        stored; the refused rows become dead letters (:func:`refusals`).
        """
        names, data = pgcopy.encode(in_key_order(RULES["readings"], rows))
        try:
            try:
                with self._conn.transaction():
                    _copy(cur, "readings", names, data)
                return rows.rows, {}
            except psycopg.errors.UniqueViolation:
                log.debug("readings stored already in this batch of %d: merging", rows.rows)
            with self._conn.transaction():
                return self._merge(cur, RULES["readings"], rows, (names, data)), {}
        except _REFUSED as exc:
            if rows.rows == 1:
                return 0, {0: _first_line(exc)}
            if top:
                log.warning("the database refused a batch of %d readings (%s): finding the "
                            "rows it refuses", rows.rows, _first_line(exc))  # fmt: skip
        half = rows.rows // 2
        stored, refused = self._readings(cur, rows.take(np.arange(half)), top=False)
        more, refused_more = self._readings(cur, rows.take(np.arange(half, rows.rows)), False)
        return stored + more, refused | {half + i: why for i, why in refused_more.items()}

    def _merge(
        self,
        cur: psycopg.Cursor,
        rule: MergeRule,
        rows: Prepared,
        encoded: tuple[list[str], list[bytes]] | None = None,
    ) -> int:
        names, data = encoded or pgcopy.encode(rows)
        stage = _stage(rule.table.name)
        _copy(cur, stage, names, data)
        cols = ", ".join(f'"{n}"' for n in names)
        cur.execute(insert_sql(rule, names, f"SELECT {cols} FROM {stage}"))
        return cur.rowcount

    def checkpoint(self, group: str, topic: str, partition: int) -> StoredCheckpoint | None:
        """The last checkpoint of a partition, with its segments; None if it has none."""
        where = "WHERE consumer_group = %s AND topic = %s AND partition = %s"
        key = (group, topic, partition)
        with self._conn.transaction():  # one snapshot for both
            self._conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            row = self._conn.execute(
                f"SELECT next_offset, state FROM processor_state {where}", key
            ).fetchone()
            segments = self._conn.execute(
                f"SELECT segment, data FROM processor_state_segments {where}", key
            ).fetchall()
        if row is None:
            return None
        return StoredCheckpoint(row[0], bytes(row[1]), {s: bytes(d) for s, d in segments})

    def close(self) -> None:
        self._conn.close()


#: Errors of the data itself: the database refuses these rows however often they are sent.
_REFUSED = (psycopg.errors.DataError, psycopg.errors.IntegrityError)


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:500]


def _stage(table: str) -> str:
    return f"stage_{table}"


def _copy(cur: psycopg.Cursor, table: str, names: list[str], data: list[bytes]) -> None:
    cols = ", ".join(f'"{n}"' for n in names)
    with cur.copy(f"COPY {table} ({cols}) FROM STDIN (FORMAT BINARY)") as copy:
        for piece in data:
            copy.write(piece)
