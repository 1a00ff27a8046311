"""How each table takes a row it may already hold: its merge rule, stated once for every
database.

Every fact has a natural key (the table's primary key), so a replayed or redelivered row
never makes a second one. What happens when the key is there already depends on the table:

- readings, dead letters, chaos events: nothing (a fact does not change);
- predictions: the one made last wins (a window's correction re-scores the minutes that
  depend on it: :mod:`workbench.processor.predict`);
- window_stats: the greater (or equal) ``revision`` wins, so a provisional result (-1)
  never replaces a final one (0) or a correction (>0), and out-of-order writes cannot
  undo a final window;
- sensor_stats: the statistics over more (or as many) readings, ``n``, win;
- alerts: the newer (or equal) ``updated_ts`` wins; what the alert is (rule, kind,
  severity, machine, sensor, start, opening, detects) stays as first stored;
- processor_state and its segments: the checkpoint written last always wins.

A winning row replaces every other column, stamps (``emitted_at``, ``updated_at``,
``saved_at``) included, which take their default (now). :func:`latest` picks the winner
inside one batch, so that one statement never touches a row twice (PostgreSQL refuses to);
:func:`insert_sql` writes the statement for PostgreSQL and SQLite alike.

>>> print(insert_sql(RULES["sensor_stats"], ["run_id", "machine_id", "sensor_type", "n"],
...                  "VALUES (?, ?, ?, ?)"))  # doctest: +NORMALIZE_WHITESPACE
INSERT INTO "sensor_stats" AS stored ("run_id", "machine_id", "sensor_type", "n")
VALUES (?, ?, ?, ?) ON CONFLICT ("run_id", "machine_id", "sensor_type") DO UPDATE SET
"n" = excluded."n", "nulls" = excluded."nulls", "late" = excluded."late",
"mean" = excluded."mean", "std" = excluded."std", "ewma" = excluded."ewma",
"ewstd" = excluded."ewstd", "quantile" = excluded."quantile",
"baseline" = excluded."baseline", "score" = excluded."score", "drifts" = excluded."drifts",
"last_ts" = excluded."last_ts", "updated_at" = excluded."updated_at"
WHERE excluded."n" >= stored."n"
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import sqlalchemy as sa

from workbench.sinks import schema
from workbench.sinks.columns import Prepared

__all__ = ["RULES", "MergeRule", "in_key_order", "insert_sql", "latest"]


@dataclass(frozen=True)
class MergeRule:
    """How one table merges a row whose natural key it holds already.

    Parameters
    ----------
    table : sqlalchemy.Table
        The table; its primary key is the natural key.
    update : bool
        False: keep the stored row. True: replace it by the new one when ``newer`` says so.
    newer : str or None
        The column whose greater-or-equal value wins; None: the later write always wins.
    keep : tuple of str
        Columns a replacement leaves as they were stored.
    """

    table: sa.Table
    update: bool = False
    newer: str | None = None
    keep: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.table.primary_key.columns)

    @property
    def replaced(self) -> tuple[str, ...]:
        """The columns a winning row sets: all but the key and the kept ones."""
        fixed = set(self.key) | set(self.keep)
        return tuple(c.name for c in self.table.columns if c.name not in fixed)


def _rules(*rules: MergeRule) -> Mapping[str, MergeRule]:
    return MappingProxyType({r.table.name: r for r in rules})


#: What an alert is: its lifecycle moves state, times, peak and breaches, never these.
_ALERT_IDENTITY = ("rule", "kind", "severity", "machine_id", "sensor_type", "start_ts",
                   "opened_ts", "detects")  # fmt: skip

#: The merge rule of every table a sink writes, by table name.
RULES: Mapping[str, MergeRule] = _rules(
    MergeRule(schema.readings),
    MergeRule(schema.dead_letters),
    MergeRule(schema.chaos_events),
    MergeRule(schema.predictions, update=True),
    MergeRule(schema.window_stats, update=True, newer="revision"),
    MergeRule(schema.sensor_stats, update=True, newer="n"),
    MergeRule(schema.alerts, update=True, newer="updated_ts", keep=_ALERT_IDENTITY),
    MergeRule(schema.processor_state, update=True),
    MergeRule(schema.processor_state_segments, update=True),
)


def _sort_keys(rule: MergeRule, rows: Prepared) -> list[np.ndarray]:
    """The key columns as arrays that sort like the values: text by the rank of its bytes."""
    keys = []
    for name in rule.key:
        col = rows.columns[name]
        if col.fixed:
            keys.append(col.values)
        else:
            by_bytes = np.argsort(np.array(col.uniques, dtype=object), kind="stable")
            rank = np.full(len(col.uniques) + 1, -1, dtype=np.int32)  # code -1 (NULL): first
            rank[by_bytes] = np.arange(len(by_bytes))
            keys.append(rank[col.values])
    return keys


def in_key_order(rule: MergeRule, rows: Prepared) -> Prepared:
    """The rows sorted by the natural key (text by its bytes), ties in arrival order."""
    if rows.rows < 2:
        return rows
    order = np.lexsort([np.arange(rows.rows), *reversed(_sort_keys(rule, rows))])
    return rows.take(order)


def latest(rule: MergeRule, rows: Prepared) -> Prepared:
    """One row per natural key: the greatest ``newer``, the last of equals (the latest
    written); as it arrived for a rule that never replaces (the database keeps the first)."""
    if not rule.update or rows.rows < 2:
        return rows
    keys = _sort_keys(rule, rows)
    arrival = np.arange(rows.rows)
    newer = [rows.columns[rule.newer].values] if rule.newer else []
    order = np.lexsort([arrival, *newer, *reversed(keys)])  # the last array sorts first
    changes = np.zeros(rows.rows, dtype=bool)
    changes[-1] = True  # the last row of the last key
    for k in keys:
        sorted_k = k[order]
        changes[:-1] |= sorted_k[1:] != sorted_k[:-1]
    return rows.take(order[changes])


def _q(name: str) -> str:
    return f'"{name}"'


def insert_sql(rule: MergeRule, columns: Sequence[str], source: str) -> str:
    """The INSERT that merges rows of ``columns`` from ``source`` (``SELECT ... FROM stage``
    or ``VALUES (...)``) into the rule's table; the same text for PostgreSQL and SQLite."""
    names = ", ".join(map(_q, columns))
    head = f"INSERT INTO {_q(rule.table.name)} AS stored ({names}) {source} ON CONFLICT"
    if not rule.update:
        return f"{head} DO NOTHING"
    sets = ", ".join(f"{_q(c)} = excluded.{_q(c)}" for c in rule.replaced)
    sql = f"{head} ({', '.join(map(_q, rule.key))}) DO UPDATE SET {sets}"
    if rule.newer:
        sql += f" WHERE excluded.{_q(rule.newer)} >= stored.{_q(rule.newer)}"
    return sql
