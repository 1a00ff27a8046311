"""SQLite sink: the edge path, through the same SQLAlchemy metadata as PostgreSQL.

A gateway or laptop without a database server keeps monitoring offline in one file:
``workbench process --sink sqlite:///edge.db``. The tables, keys and row layouts are
those of :mod:`workbench.sinks.schema`; the write semantics are those of
:class:`~workbench.sinks.postgres.PostgresSink`: the same column batches, merge rules and
``INSERT ... ON CONFLICT`` statements (:mod:`workbench.sinks.merge`), fed by
``executemany`` in place of PostgreSQL's COPY.

A batch is one ``BEGIN IMMEDIATE`` transaction (the write lock is taken up front, so two
processes never deadlock upgrading a read lock), in WAL mode so that readers (a notebook,
``workbench db counts``) do not block the writer. Times are stored as UTC text; SQLite has
no time zone type, so they read back as naive datetimes in UTC.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from workbench.errors import ConfigError, DatabaseUnavailable
from workbench.sinks import schema
from workbench.sinks.base import DROP_SEGMENT, SinkBase, StoredCheckpoint
from workbench.sinks.columns import Column, WriteBatch, prepare
from workbench.sinks.merge import RULES, insert_sql, latest

log = logging.getLogger(__name__)
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
    """Create every table and index of the shared metadata that the file lacks and drop the
    retired ones (idempotent); creates the file. Raises :class:`DatabaseUnavailable` when it
    cannot be written."""
    eng = engine(url)
    try:
        with eng.begin() as conn:
            schema.metadata.create_all(conn, checkfirst=True)
            # an older file's readings key has the same columns in another order: it refuses
            # the same duplicates, so it stays; an index no longer wanted goes
            for index in schema.RETIRED_INDEXES:
                conn.exec_driver_sql(f'DROP INDEX IF EXISTS "{index}"')
    except sa.exc.OperationalError as exc:
        raise DatabaseUnavailable(url, str(exc.orig)) from None
    finally:
        eng.dispose()


class SqliteSink(SinkBase):
    """Writes batches into one SQLite file, one transaction each, with the interface,
    merge rules (:mod:`workbench.sinks.merge`) and idempotency of
    :class:`~workbench.sinks.postgres.PostgresSink`.

    >>> # with SqliteSink("sqlite:///edge.db") as sink: sink.write(WriteBatch(readings=columns))
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

    def _store(self, batch: WriteBatch) -> dict[str, int]:
        stored: dict[str, int] = {}
        with self._conn.begin():
            for name, columns in batch.tables():
                rule = RULES[name]
                rows = latest(rule, prepare(name, columns))
                names = list(rows.columns)
                values = [_python(c) for c in rows.columns.values()]
                sql = insert_sql(rule, names, f"VALUES ({', '.join('?' * len(names))})")
                before = self._changes()
                self._conn.exec_driver_sql(sql, list(zip(*values, strict=True)))
                stored[name] = self._changes() - before
            if batch.dropped_segments:
                self._conn.exec_driver_sql(DROP_SEGMENT, list(batch.dropped_segments))
        return stored

    def checkpoint(self, group: str, topic: str, partition: int) -> StoredCheckpoint | None:
        """The last checkpoint of a partition, with its segments; None if it has none."""
        p, g = schema.processor_state, schema.processor_state_segments
        with self._conn.begin():
            row = self._conn.execute(
                sa.select(p.c.next_offset, p.c.state).where(
                    p.c.consumer_group == group, p.c.topic == topic, p.c.partition == partition
                )
            ).first()
            segments = self._conn.execute(
                sa.select(g.c.segment, g.c.data).where(
                    g.c.consumer_group == group, g.c.topic == topic, g.c.partition == partition
                )
            ).all()
        if row is None:
            return None
        return StoredCheckpoint(row[0], bytes(row[1]), {s: bytes(d) for s, d in segments})

    def close(self) -> None:
        self._conn.close()
        self._engine.dispose()


def _python(col: Column) -> list[Any]:
    """A column as SQLite parameters; times as SQLAlchemy stores a DateTime in SQLite
    (``YYYY-MM-DD HH:MM:SS.ffffff``, UTC), so that it reads them back as datetimes."""
    if col.kind != "timestamptz":
        return col.python()
    text = np.datetime_as_string(col.values.astype("datetime64[ms]"), unit="us")
    text = np.strings.replace(text, "T", " ").astype(object)
    if col.null is not None:
        text[col.null] = None
    return text.tolist()
