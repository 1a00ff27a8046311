"""Database sinks, chosen by URL scheme: PostgreSQL (``postgresql://``) or SQLite
(``sqlite:///PATH``, the edge path). Both are built from the same metadata
(:mod:`workbench.sinks.schema`), take the same column batches
(:class:`~workbench.sinks.columns.WriteBatch`) and merge them by the same rules
(:mod:`workbench.sinks.merge`), so they give the same idempotency.

>>> sink_kind("sqlite:///edge.db"), sink_kind("postgresql://wb@db:5432/workbench")
('sqlite', 'postgresql')
>>> sink_kind("mysql://db/workbench")
Traceback (most recent call last):
...
workbench.errors.ConfigError: --sink='mysql://db/workbench' is not valid: expected \
postgresql://user@host:port/dbname or sqlite:///PATH
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import sqlalchemy as sa

from workbench.errors import ConfigError
from workbench.sinks.columns import WriteBatch, WriteResult

__all__ = [
    "Sink",
    "WriteBatch",
    "WriteResult",
    "create_schema",
    "engine",
    "is_sqlite",
    "open_sink",
    "redact",
    "sink_kind",
]

_SCHEMES = {
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "postgresql+psycopg": "postgresql",
    "sqlite": "sqlite",
    "sqlite+pysqlite": "sqlite",
}


class Sink(Protocol):
    """What the processor and the simulator need of a database sink."""

    url: str

    def write(self, batch: WriteBatch, /) -> WriteResult:
        """Store the batch in one transaction (the per-reading processor's row tuples are
        still taken too: see :meth:`workbench.sinks.base.SinkBase.write`)."""

    def checkpoint(self, group: str, topic: str, partition: int) -> tuple[int, bytes] | None: ...

    def write_chaos_events(self, events: Sequence[tuple[Any, ...]]) -> int: ...

    def close(self) -> None: ...


def sink_kind(url: str, name: str = "--sink") -> str:
    """``postgresql`` or ``sqlite`` for a database URL; :class:`ConfigError` naming the
    option ``name`` for anything else."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in _SCHEMES:
        raise ConfigError(name, url, "postgresql://user@host:port/dbname or sqlite:///PATH")
    return _SCHEMES[scheme]


def is_sqlite(url: str) -> bool:
    return sink_kind(url) == "sqlite"


def create_schema(url: str) -> None:
    """Create the tables the URL's database lacks (idempotent)."""
    if is_sqlite(url):
        from workbench.sinks import sqlite

        sqlite.create_schema(url)
    else:
        from workbench.sinks import postgres

        postgres.create_schema(url)


def engine(url: str) -> sa.Engine:
    """A SQLAlchemy engine for reading the database ``url`` names. A SQLite file must
    exist already: reading a mistyped path must not create an empty database."""
    if is_sqlite(url):
        from workbench.sinks import sqlite

        return sqlite.engine(url, writer=False)
    from workbench.sinks import postgres

    return postgres.engine(url)


def redact(url: str) -> str:
    """The URL fit for logs and messages: a PostgreSQL password replaced, a SQLite path as is."""
    if is_sqlite(url):
        return url
    from workbench.sinks import postgres

    return postgres.redact(url)


def open_sink(url: str, timeout_s: float = 5.0) -> Sink:
    """The sink for ``url``: :class:`~workbench.sinks.sqlite.SqliteSink` for ``sqlite:///``,
    :class:`~workbench.sinks.postgres.PostgresSink` for ``postgresql://``."""
    if is_sqlite(url):
        from workbench.sinks.sqlite import SqliteSink

        return SqliteSink(url, timeout_s)
    from workbench.sinks.postgres import PostgresSink

    return PostgresSink(url, timeout_s)
