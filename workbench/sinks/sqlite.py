"""SQLite sink: the edge path, through the same SQLAlchemy metadata as PostgreSQL.

A gateway or laptop without a database server keeps monitoring offline in one file:
``workbench process --sink sqlite:///edge.db``. The tables, keys and row layouts are
those of :mod:`workbench.sinks.schema`; the write semantics are those of
:class:`~workbench.sinks.postgres.PostgresSink`, with SQLite's ``INSERT ... ON CONFLICT``
(``sqlalchemy.dialects.sqlite.insert``) in place of PostgreSQL's COPY + merge:

- readings and dead letters: insert-ignore on the natural key;
- window_stats: a newer (or equal) revision replaces the stored one, an older never does;
- sensor_stats: statistics over more (or as many) readings win;
- alerts: the newer (or equal) ``updated_ts`` wins, the opening stays;
- processor_state: upsert of the partition's checkpoint.

A batch is one ``BEGIN IMMEDIATE`` transaction (the write lock is taken up front, so two
processes never deadlock upgrading a read lock), in WAL mode so that readers (a notebook,
``workbench db counts``) do not block the writer. Times are stored as UTC text; SQLite has
no time zone type, so they read back as naive datetimes in UTC.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import insert

from workbench.errors import ConfigError, DatabaseUnavailable
from workbench.sinks import schema
from workbench.sinks.postgres import (
    ALERT_COLUMNS,
    CHAOS_EVENT_COLUMNS,
    CHECKPOINT_COLUMNS,
    DEAD_LETTER_COLUMNS,
    READING_COLUMNS,
    SENSOR_STATS_COLUMNS,
    WINDOW_COLUMNS,
    WriteResult,
)

log = logging.getLogger(__name__)

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
#: How long a writer waits for another process's transaction before giving up.
BUSY_TIMEOUT_S = 30.0


def database_path(url: str, name: str = "--sink") -> Path:
    """The file a ``sqlite:///PATH`` URL names (relative to the working directory).

    >>> database_path("sqlite:////tmp/edge.db")
    PosixPath('/tmp/edge.db')
    >>> database_path("sqlite://")
    Traceback (most recent call last):
    ...
    workbench.errors.ConfigError: --sink='sqlite://' is not valid: expected sqlite:///PATH of a file
    """
    database = sa.engine.make_url(url).database
    if not database or database == ":memory:":  # would be lost when the process ends
        raise ConfigError(name, url, "sqlite:///PATH of a file")
    return Path(database).expanduser().absolute()


def _check_writable(url: str, path: Path) -> None:
    """One clear line when the file cannot be created or written, before SQLite says
    ``unable to open database file``."""
    folder = path.parent
    if path.is_dir():
        raise DatabaseUnavailable(url, f"{path} is a directory")
    if not folder.is_dir():
        raise DatabaseUnavailable(url, f"folder {folder} does not exist")
    # WAL mode keeps two files next to the database, so the folder must be writable too
    for target in (folder, path) if path.exists() else (folder,):
        if not os.access(target, os.W_OK):
            raise DatabaseUnavailable(url, f"{target} is not writable")


def engine(url: str, writer: bool = True) -> sa.Engine:
    """An engine on the file ``url`` names, in WAL mode with a busy timeout.

    A ``writer`` engine begins every transaction with ``BEGIN IMMEDIATE`` (the recipe in
    SQLAlchemy's SQLite dialect notes): the driver's own deferred ``BEGIN`` would let two
    processes that both read first deadlock when they upgrade to write.
    """
    path = database_path(url)
    if writer:
        _check_writable(url, path)
    elif not path.is_file():
        raise DatabaseUnavailable(url, f"no such file {path}")
    eng = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": BUSY_TIMEOUT_S})

    @sa.event.listens_for(eng, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: object) -> None:
        dbapi_conn.isolation_level = None  # no implicit BEGIN: ours below, or autocommit
        if writer:
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            dbapi_conn.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes

    @sa.event.listens_for(eng, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

    return eng


def create_schema(url: str) -> None:
    """Create every table and index of the shared metadata that the file lacks (idempotent);
    creates the file. Raises :class:`DatabaseUnavailable` when it cannot be written."""
    eng = engine(url)
    try:
        with eng.begin() as conn:
            schema.metadata.create_all(conn, checkfirst=True)
    except sa.exc.OperationalError as exc:
        raise DatabaseUnavailable(url, str(exc.orig)) from None
    finally:
        eng.dispose()


def _ms(epoch_ms: int | None) -> dt.datetime | None:
    return None if epoch_ms is None else EPOCH + dt.timedelta(milliseconds=epoch_ms)


def _latest(rows: Sequence[tuple[Any, ...]], key: int, order: int) -> list[tuple[Any, ...]]:
    """One row per natural key (the first ``key`` fields): the greatest ``order`` field,
    the last of equals; as PostgreSQL's ``DISTINCT ON ... ORDER BY ... DESC`` in the
    merge statements, so that one statement never touches a row twice."""
    best: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for row in rows:
        k = row[:key]
        if k not in best or row[order] >= best[k][order]:
            best[k] = row
    return list(best.values())


def _upsert(table: sa.Table, keys: Sequence[str], newer: str, keep: Sequence[str] = ()) -> Any:
    """``INSERT ... ON CONFLICT (keys) DO UPDATE`` every other column, only where the new
    row's ``newer`` column is >= the stored one; ``keep`` columns keep their stored value."""
    stmt = insert(table)
    stamp = {"emitted_at", "updated_at", "saved_at"}
    update: dict[str, Any] = {
        c.name: stmt.excluded[c.name]
        for c in table.columns
        if c.name not in keys and c.name not in keep and c.server_default is None
    }
    update |= {c: sa.func.now() for c in stamp if c in table.c}
    where = stmt.excluded[newer] >= table.c[newer] if newer else None
    return stmt.on_conflict_do_update(index_elements=list(keys), set_=update, where=where)


_WINDOW_KEY = ("run_id", "machine_id", "sensor_type", "width_s", "window_start")
_ALERT_KEY = ("run_id", "alert_id")
_STATS_KEY = ("run_id", "machine_id", "sensor_type")
_WINDOWS_UPSERT = _upsert(schema.window_stats, _WINDOW_KEY, "revision")
_SENSOR_STATS_UPSERT = _upsert(schema.sensor_stats, _STATS_KEY, "n")
#: the lifecycle moves state, times, peak and breaches; what the alert is stays
_ALERTS_UPSERT = _upsert(
    schema.alerts,
    _ALERT_KEY,
    "updated_ts",
    keep=("rule", "kind", "severity", "machine_id", "sensor_type", "start_ts", "opened_ts",
          "detects"),
)  # fmt: skip
_CHECKPOINT_UPSERT = _upsert(
    schema.processor_state, ("consumer_group", "topic", "partition"), newer=""
)


class SqliteSink:
    """Writes batches of facts into one SQLite file, one transaction each, with the
    interface and idempotency of :class:`~workbench.sinks.postgres.PostgresSink`.

    >>> # with SqliteSink("sqlite:///edge.db") as sink: sink.write(readings=rows)
    """

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url
        create_schema(url)
        self._engine = engine(url)
        try:
            self._conn = self._engine.connect()
        except sa.exc.OperationalError as exc:
            raise DatabaseUnavailable(url, str(exc.orig)) from None

    def _changes(self) -> int:
        """Rows inserted or updated on this connection so far (ignored conflicts do not
        count): the difference over a statement is what it stored."""
        return self._conn.exec_driver_sql("SELECT total_changes()").scalar_one()

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

        Rows follow the PostgreSQL sink's column tuples (:data:`READING_COLUMNS` and the
        others in :mod:`workbench.sinks.postgres`; times in epoch ms).
        """
        inserted = dead_inserted = windows_written = alerts_written = 0
        conn = self._conn
        with conn.begin():
            if readings:
                before = self._changes()
                conn.execute(insert(schema.readings).on_conflict_do_nothing(),
                             [_reading(r) for r in readings])  # fmt: skip
                inserted = self._changes() - before
            if dead_letters:
                before = self._changes()
                conn.execute(insert(schema.dead_letters).on_conflict_do_nothing(),
                             [dict(zip(DEAD_LETTER_COLUMNS, d, strict=True))
                              for d in dead_letters])  # fmt: skip
                dead_inserted = self._changes() - before
            if windows:
                before = self._changes()
                conn.execute(_WINDOWS_UPSERT, [_window(w) for w in _latest(windows, 5, 15)])
                windows_written = self._changes() - before
            if alerts:
                before = self._changes()
                conn.execute(_ALERTS_UPSERT, [_alert(a) for a in _latest(alerts, 2, 10)])
                alerts_written = self._changes() - before
            if sensor_stats:
                conn.execute(_SENSOR_STATS_UPSERT,
                             [_sensor_stats(s) for s in _latest(sensor_stats, 3, 3)])  # fmt: skip
            if checkpoints:
                conn.execute(_CHECKPOINT_UPSERT,
                             [dict(zip(CHECKPOINT_COLUMNS, c, strict=True))
                              for c in checkpoints])  # fmt: skip
        return WriteResult(
            inserted, len(readings) - inserted, dead_inserted, windows_written, alerts_written
        )

    def checkpoint(self, group: str, topic: str, partition: int) -> tuple[int, bytes] | None:
        """The last checkpoint of a partition: (next offset, state), or None."""
        p = schema.processor_state
        with self._conn.begin():
            row = self._conn.execute(
                sa.select(p.c.next_offset, p.c.state).where(
                    p.c.consumer_group == group, p.c.topic == topic, p.c.partition == partition
                )
            ).first()
        return (row[0], bytes(row[1])) if row else None

    def write_chaos_events(self, events: Sequence[tuple[Any, ...]]) -> int:
        """Store ground-truth events (rows follow :data:`CHAOS_EVENT_COLUMNS`, times in epoch
        ms); return how many were new."""
        rows = [
            dict(zip(CHAOS_EVENT_COLUMNS, (*e[:5], _ms(e[5]), _ms(e[6]), *e[7:]), strict=True))
            for e in events
        ]
        if not rows:
            return 0
        with self._conn.begin():
            before = self._changes()
            self._conn.execute(insert(schema.chaos_events).on_conflict_do_nothing(), rows)
            return self._changes() - before

    def close(self) -> None:
        self._conn.close()
        self._engine.dispose()

    def __enter__(self) -> SqliteSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reading(r: tuple[Any, ...]) -> dict[str, Any]:
    row = dict(zip(READING_COLUMNS, r, strict=True))
    row["ts"] = _ms(row.pop("ts_ms"))
    return row


def _window(w: tuple[Any, ...]) -> dict[str, Any]:
    row = dict(zip(WINDOW_COLUMNS, w, strict=True))
    row["window_start"] = _ms(row.pop("start_ms"))
    row["window_end"] = _ms(row.pop("end_ms"))
    return row


def _alert(a: tuple[Any, ...]) -> dict[str, Any]:
    row = dict(zip(ALERT_COLUMNS, a, strict=True))
    for name in ("start", "opened", "updated", "closed"):
        row[f"{name}_ts"] = _ms(row.pop(f"{name}_ms"))
    return row


def _sensor_stats(s: tuple[Any, ...]) -> dict[str, Any]:
    row = dict(zip(SENSOR_STATS_COLUMNS, s, strict=True))
    row["last_ts"] = _ms(row.pop("last_ms"))
    return row
