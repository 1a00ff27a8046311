"""The run registry: every experiment run recorded with its parameters, seed and accounting.

A run id names one experiment; every reading, dead letter (and later window, alert and
chaos event) carries it, so a notebook or dashboard can filter by it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from workbench import sinks
from workbench.errors import DatabaseUnavailable
from workbench.sinks import schema
from workbench.sinks.postgres import engine


def new_run_id() -> str:
    """A sortable, readable, unique id: UTC time plus random suffix.

    >>> len(new_run_id()), new_run_id()[8]
    (22, 'T')
    """
    now = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    return f"{now}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class RunCounts:
    """What the database holds for one run."""

    stored: int
    deadlettered: int
    late: int = 0
    alerts: int = 0
    windows_final: int = 0
    windows_open: int = 0


#: The tables :func:`table_counts` counts, each by its ``run_id`` column.
COUNTED_TABLES = (
    "runs", "readings", "window_stats", "sensor_stats", "alerts", "chaos_events", "dead_letters",
    "predictions", "machine_health",
)  # fmt: skip


@dataclass(frozen=True)
class TableCounts:
    """Rows of one run in each table (``workbench db counts``); a table the database does
    not have counts 0."""

    run_id: str
    tables: dict[str, int]

    @property
    def found(self) -> bool:
        """Whether any table holds a row of the run (a run processed on the edge path has
        rows but no ``runs`` entry: the processor does not register runs)."""
        return any(self.tables.values())

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "found": self.found, "tables": dict(self.tables)}


def table_counts(database_url: str, run_id: str) -> TableCounts:
    """Count the rows of ``run_id`` in every table of :data:`COUNTED_TABLES`, in the
    PostgreSQL or SQLite database ``database_url`` names (a notebook can call this too).

    Counts are of rows, so they are what idempotency promises: the same run stored twice
    gives the same counts. An unknown run id gives zeros (see :attr:`TableCounts.found`).
    """
    eng = sinks.engine(database_url)
    try:
        with eng.connect() as conn:
            present = set(sa.inspect(conn).get_table_names())
            tables = {}
            for name in COUNTED_TABLES:
                table = schema.metadata.tables[name]
                query = sa.select(sa.func.count()).where(table.c.run_id == run_id)
                tables[name] = conn.execute(query).scalar_one() if name in present else 0
    except sa.exc.OperationalError as exc:
        raise DatabaseUnavailable(sinks.redact(database_url), str(exc.orig).strip()) from None
    finally:
        eng.dispose()
    return TableCounts(run_id, tables)


class RunRegistry:
    """Reads and writes the ``runs`` table and counts a run's rows."""

    def __init__(self, database_url: str) -> None:
        self.engine = engine(database_url)

    def start(self, run_id: str, kind: str, seed: int | None, params: dict[str, Any]) -> None:
        """Record a run as running; starting an existing run id again resets its outcome.

        It also forgets the run's dead letters. Every other fact of a run is keyed by its
        content (a reading by machine, sensor, sequence number and time), so producing the
        run again stores nothing new; a dead letter is keyed by where the message sat in
        Kafka (topic, partition, offset), and a run produced again puts its malformed
        messages at new offsets. Without this, each repetition of a run would add its dead
        letters once more and its books would no longer close.
        """
        row = {"run_id": run_id, "kind": kind, "seed": seed, "params": params, "status": "running"}
        stmt = insert(schema.runs).values(**row)
        stmt = stmt.on_conflict_do_update(
            index_elements=["run_id"],
            set_={**row, "started_at": sa.func.now(), "finished_at": None},
        )
        dead = schema.dead_letters
        with self.engine.begin() as conn:
            conn.execute(stmt)
            conn.execute(dead.delete().where(dead.c.run_id == run_id))

    @contextlib.contextmanager
    def track(
        self, run_id: str, kind: str, seed: int | None, params: dict[str, Any]
    ) -> Iterator[None]:
        """Record the run as running for the block; if the block fails, mark it failed.

        The block calls :meth:`finish` with the outcome when it succeeds.
        """
        self.start(run_id, kind, seed, params)
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):  # the database may be what failed
                self.finish(run_id, "failed")
            raise

    def finish(self, run_id: str, status: str, **outcome: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                schema.runs.update()
                .where(schema.runs.c.run_id == run_id)
                .values(status=status, finished_at=sa.func.now(), **outcome)
            )

    def counts(self, run_id: str, full: bool = False) -> RunCounts:
        """Rows of the run: stored readings and dead letters; with ``full``, also late
        readings, alerts and final/open windows."""
        r, d, a, w = schema.readings, schema.dead_letters, schema.alerts, schema.window_stats
        count = sa.func.count()
        with self.engine.connect() as conn:
            if not full:
                stored = conn.execute(
                    sa.select(count).select_from(r).where(r.c.run_id == run_id)
                ).scalar_one()
                late = 0
            else:
                stored, late = conn.execute(
                    sa.select(count, count.filter(r.c.late)).where(r.c.run_id == run_id)
                ).one()
            dead = conn.execute(
                sa.select(count).select_from(d).where(d.c.run_id == run_id)
            ).scalar_one()
            if not full:
                return RunCounts(stored, dead)
            alerts = conn.execute(
                sa.select(count).select_from(a).where(a.c.run_id == run_id)
            ).scalar_one()
            final, open_ = conn.execute(
                sa.select(count.filter(w.c.final), count.filter(~w.c.final)).where(
                    w.c.run_id == run_id
                )
            ).one()
        return RunCounts(stored, dead, late, alerts, final, open_)

    def predictions(self, run_id: str) -> list[dict[str, Any]]:
        """The run's predictions per model and version: machine-minutes scored, alarms."""
        p = schema.predictions
        query = (
            sa.select(p.c.model, p.c.version, sa.func.count(),
                      sa.func.count().filter(p.c.alarm))
            .where(p.c.run_id == run_id)
            .group_by(p.c.model, p.c.version)
            .order_by(p.c.model, p.c.version)
        )  # fmt: skip
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table(p.name):
                return []
            rows = conn.execute(query).all()
        return [{"model": m, "version": v, "minutes": n, "alarms": k} for m, v, n, k in rows]

    def get(self, run_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(sa.select(schema.runs).where(schema.runs.c.run_id == run_id))
                .mappings()
                .first()
            )
        return dict(row) if row else None

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> RunRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
