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
import sqlalchemy as sa

from workbench.errors import DatabaseUnavailable
from workbench.sinks import schema

log = logging.getLogger(__name__)

#: Column order of a reading row as handed to :meth:`PostgresSink.write`.
READING_COLUMNS = ("run_id", "machine_id", "sensor_type", "seq", "ts_ms", "value", "status_code")
DEAD_LETTER_COLUMNS = ("topic", "partition", "offset", "run_id", "reason", "key", "payload")
CHAOS_EVENT_COLUMNS = (
    "run_id", "event_id", "kind", "machine_id", "sensor_type", "start_ts", "end_ts",
    "magnitude", "source", "detail",
)  # fmt: skip


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


def create_schema(url: str) -> None:
    """Create every table and index that does not exist yet (a second call changes nothing)."""
    eng = engine(url)
    try:
        schema.metadata.create_all(eng, checkfirst=True)
    finally:
        eng.dispose()


@dataclass(frozen=True)
class WriteResult:
    """What one batch did to the database."""

    readings_inserted: int
    readings_duplicate: int
    dead_letters_inserted: int


class PostgresSink:
    """Writes batches of readings and dead letters; one instance holds one connection.

    >>> # sink = PostgresSink(url); sink.write(rows, dead_letters); sink.close()
    """

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url
        self._conn = connect(url, timeout_s)
        with self._conn.transaction():
            self._conn.execute(
                "CREATE TEMP TABLE stage_readings "
                "(run_id text, machine_id text, sensor_type text, seq bigint, ts_ms bigint, "
                "value double precision, status_code integer) ON COMMIT DELETE ROWS"
            )

    def write(
        self, readings: Sequence[tuple[Any, ...]], dead_letters: Sequence[tuple[Any, ...]] = ()
    ) -> WriteResult:
        """Store one batch in one transaction; return how many rows were new.

        ``readings`` rows follow :data:`READING_COLUMNS` (event time in epoch ms);
        ``dead_letters`` rows follow :data:`DEAD_LETTER_COLUMNS`.
        """
        inserted = dead_inserted = 0
        with self._conn.transaction(), self._conn.cursor() as cur:
            if readings:
                with cur.copy(
                    f"COPY stage_readings ({', '.join(READING_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(["text", "text", "text", "int8", "int8", "float8", "int4"])
                    for row in readings:
                        copy.write_row(row)
                cur.execute(
                    "INSERT INTO readings (run_id, machine_id, sensor_type, seq, ts, value, "
                    "status_code) SELECT run_id, machine_id, sensor_type, seq, "
                    "timestamptz 'epoch' + ts_ms * interval '1 millisecond', value, status_code "
                    "FROM stage_readings ON CONFLICT DO NOTHING"
                )
                inserted = cur.rowcount
            if dead_letters:
                dead_inserted = _insert_ignore(
                    cur, "dead_letters", DEAD_LETTER_COLUMNS, dead_letters
                )
        return WriteResult(inserted, len(readings) - inserted, dead_inserted)

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
