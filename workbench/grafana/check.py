"""Run every dashboard query against the workbench database and check its shape.

Why: a dashboard whose SQL fails or returns the wrong shape shows "No data" or an error
in Grafana, and no Grafana runs on the project's machines. This runs, for each dashboard,
the template-variable queries (choosing real values: the newest run, its first machine
and sensor), the annotation queries and every panel target, expanded by
:mod:`workbench.grafana.macros` for a time range, and checks each result:

- time series: first column named ``time`` (a timestamp or epoch number), one numeric
  column at least;
- gauge / stat: one numeric column at least;
- table: columns;
- annotation: ``time`` first and a ``text`` column;
- variable: one column of values.

Panels of the Prometheus data source cannot run here (no Prometheus on these machines):
they are checked by name instead, and reported as such: the data source must be a
provisioned Prometheus one, and every metric the PromQL reads must be one the workbench
exports (:func:`workbench.metrics.exported_names`).

Queries run in a read-only transaction with a statement timeout: the check can be
pointed at a production database.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

from workbench.errors import WorkbenchError
from workbench.grafana import dashboards as boards
from workbench.grafana.macros import TimeRange, auto_interval_ms, parse_interval, render
from workbench.grafana.promql import metric_names
from workbench.sinks.postgres import connect, redact

log = logging.getLogger(__name__)

#: PostgreSQL type OIDs: timestamps and numbers
TIME_OIDS = {1082, 1114, 1184}  # date, timestamp, timestamptz
NUMBER_OIDS = {20, 21, 23, 700, 701, 1700}  # int8, int2, int4, float4, float8, numeric
#: macros that tie a query to the dashboard's time range
TIME_MACROS = ("$__timeFilter(", "$__timeFrom()", "$__timeTo()", "$__unixEpochFilter(")


class NoRuns(WorkbenchError):
    """The database has no run to show (or not the one asked for)."""


#: how a Prometheus panel is checked
BY_NAME = "metric names"


@dataclasses.dataclass
class PanelResult:
    """The outcome of one panel (all its targets), annotation or variable. ``checked`` says
    how: ``sql`` (run against the database, ``rows`` returned) or :data:`BY_NAME` (PromQL,
    not run: ``metrics`` are the names it reads, each exported by the workbench)."""

    dashboard: str
    panel: str
    rows: int = 0
    ok: bool = True
    error: str | None = None
    checked: str = "sql"
    metrics: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"dashboard": self.dashboard, "panel": self.panel, "ok": self.ok}
        if self.checked == BY_NAME:
            d |= {"checked": self.checked, "metrics": self.metrics}
        else:
            d["rows"] = self.rows
        if self.error:
            d["error"] = self.error
        return d

    def text(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        if self.checked == BY_NAME:
            what = f"PromQL not run, its metrics exported: {', '.join(self.metrics) or 'none'}"
        else:
            what = f"{self.rows} rows"
        return f"  {mark} {self.dashboard} / {self.panel}: {what}" + (
            f"  ({self.error})" if self.error else ""
        )


@dataclasses.dataclass
class CheckReport:
    """Every result of one check, with the run, range and variables it used."""

    run_id: str
    time_range: TimeRange
    timescaledb: bool
    variables: dict[str, dict[str, str]]
    panels: list[PanelResult]

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.panels)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "run_id": self.run_id,
            "from": self.time_range.start.isoformat(),
            "to": self.time_range.end.isoformat(),
            "timescaledb": self.timescaledb,
            "variables": self.variables,
            "panels": [p.to_dict() for p in self.panels],
        }

    def text(self) -> str:
        lines = [f"run {self.run_id}, {self.time_range.start:%Y-%m-%d %H:%M:%S} .. "
                 f"{self.time_range.end:%Y-%m-%d %H:%M:%S} UTC"]  # fmt: skip
        lines += [p.text() for p in self.panels]
        by_name = sum(p.checked == BY_NAME for p in self.panels)
        lines.append(("all panels ok" if self.ok else "some panels failed")
                     + (f" ({by_name} Prometheus panels checked by metric name only: no "
                        "Prometheus here)" if by_name else ""))  # fmt: skip
        return "\n".join(lines)


def shape_error(
    shape: str, columns: Sequence[tuple[str, int]], rows: Sequence[tuple]
) -> str | None:
    """Why a result of ``columns`` (name, type OID) and ``rows`` does not fit ``shape``, or
    None when it does."""
    names = [c[0] for c in columns]
    numeric = [n for n, oid in columns[1:] if oid in NUMBER_OIDS]
    if not columns:
        return "no columns"
    if shape in ("time series", "annotation"):
        if names[0] not in ("time", "time_sec") or columns[0][1] not in TIME_OIDS | NUMBER_OIDS:
            return f"first column must be a time named time, got {names[0]!r}"
        if any(r[0] is None for r in rows):
            return "NULL in the time column"
        if shape == "time series" and not numeric:
            return f"no numeric value column in {names}"
        if shape == "annotation" and "text" not in names:
            return f"an annotation needs a text column, got {names}"
    elif shape == "value":
        if not [n for n, oid in columns if oid in NUMBER_OIDS]:
            return f"no numeric column in {names}"
    elif shape == "variable" and len(columns) != 1 and not {"__text", "__value"} <= set(names):
        return f"a variable query needs one column, got {names}"
    return None


def _run_query(cur: psycopg.Cursor, sql: str) -> tuple[list[tuple[str, int]], list[tuple]]:
    cur.execute(sql)  # type: ignore[arg-type]  # expanded SQL, as Grafana sends it
    columns = [(d.name, d.type_code) for d in cur.description or []]
    return columns, cur.fetchall()


def _has_time_bucket(cur: psycopg.Cursor) -> bool:
    cur.execute("SELECT EXISTS (SELECT 1 FROM pg_proc WHERE proname = 'time_bucket')")
    row = cur.fetchone()
    return bool(row and row[0])


def choose_run(cur: psycopg.Cursor, run_id: str | None) -> str:
    """``run_id`` if the runs table has it, else the newest run; :class:`NoRuns` if none."""
    if run_id:
        cur.execute("SELECT run_id FROM runs WHERE run_id = %s", (run_id,))
    else:
        cur.execute("SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1")
    row = cur.fetchone()
    if row is None:
        raise NoRuns(
            f"run {run_id} is not in the database"
            if run_id
            else "the database has no runs: make one first (workbench run)"
        )
    return str(row[0])


def run_span(cur: psycopg.Cursor, run_id: str) -> TimeRange:
    """The event-time span of a run's readings (its wall-clock span if it has none),
    widened by a second each side so the newest reading is inside ``BETWEEN``."""
    cur.execute("SELECT min(ts), max(ts) FROM readings WHERE run_id = %s", (run_id,))
    start, end = cur.fetchone() or (None, None)
    if start is None:
        cur.execute("SELECT started_at, coalesce(finished_at, now()) FROM runs WHERE run_id = %s",
                    (run_id,))  # fmt: skip
        start, end = cur.fetchone()
    second = dt.timedelta(seconds=1)
    return TimeRange(start - second, end + second)


def check(
    url: str,
    run_id: str | None = None,
    time_range: TimeRange | None = None,
    folder: Path | None = None,
    grafana_root: Path | None = None,
    timeout_s: float = 10.0,
    known: set[str] | None = None,
) -> CheckReport:
    """Check every dashboard in ``folder`` (default ``grafana/dashboards``) against the
    PostgreSQL database at ``url``, for ``run_id`` (default the newest) over
    ``time_range`` (default the run's event-time span).

    The data source's TimescaleDB switch (from the provisioning under ``grafana_root``)
    decides whether ``$__timeGroup`` becomes ``time_bucket``; on a server without
    TimescaleDB the queries are expanded as a plain-PostgreSQL data source would, since
    the dashboards must work there too. Prometheus panels are checked against ``known``
    metric names (default: every name the workbench exports).
    """
    if known is None:
        from workbench.metrics import exported_names  # prometheus_client: only here

        known = exported_names()
    provisioning = boards.load_provisioning(grafana_root)
    source = boards.workbench_datasource(provisioning)
    prometheus = boards.prometheus_datasources(provisioning)
    if not provisioning["providers"]:
        raise ValueError("no dashboard provider in grafana/provisioning/dashboards")
    dashboards = boards.load_dashboards(folder)
    with connect(url, options=f"-c statement_timeout={int(timeout_s * 1000)}") as conn:
        conn.read_only = True
        with conn.cursor() as cur:
            timescaledb = bool(source.get("jsonData", {}).get("timescaledb"))
            if timescaledb and not _has_time_bucket(cur):
                log.debug(
                    "%s has no TimescaleDB: expanding macros as plain PostgreSQL", redact(url)
                )
                timescaledb = False
            chosen = choose_run(cur, run_id)
            time_range = time_range or run_span(cur, chosen)
            conn.rollback()
            report = CheckReport(chosen, time_range, timescaledb, {}, [])
            for board in dashboards:
                report.panels += _check_dashboard(conn, board, report)
                report.panels += check_promql(board, known, prometheus)
    for p in report.panels:  # the caller shows report.text(); the log repeats it at DEBUG only
        log.debug("%s", p.text().strip())
    return report


def check_promql(board: boards.Dashboard, known: set[str], sources: set[str]) -> list[PanelResult]:
    """Each Prometheus panel of ``board``, by name: its data source is one of ``sources``
    (provisioned Prometheus uids) and every metric its expressions read is in ``known``."""
    results: dict[str, PanelResult] = {}
    for q in board.promql:
        result = results.setdefault(q.panel, PanelResult(board.title, q.panel, checked=BY_NAME))
        if not result.ok:
            continue
        names = metric_names(q.expr)
        unknown = [n for n in names if n not in known]
        if q.datasource not in sources:
            result.error = (
                f"{q.ref_id}: data source {q.datasource!r} is not a provisioned Prometheus"
            )
        elif not names:
            result.error = f"{q.ref_id}: no metric name in {q.expr!r}"
        elif unknown:
            result.error = f"{q.ref_id}: not a metric the workbench exports: {', '.join(unknown)}"
        result.ok = result.error is None
        result.metrics += [n for n in names if n not in result.metrics]
    return list(results.values())


def _check_dashboard(
    conn: psycopg.Connection, board: boards.Dashboard, report: CheckReport
) -> list[PanelResult]:
    """Variables first (each may use the earlier ones), then annotations and panels."""
    variables: dict[str, str] = {}
    results: dict[str, PanelResult] = {}
    for q in board.queries:
        result = results.setdefault(q.panel, PanelResult(board.title, q.panel))
        if not result.ok:
            continue
        if q.shape == "variable" and q.ref_id == "run":
            variables["run"] = report.run_id  # the run asked for, not only the newest
        min_ms = int(parse_interval(q.interval) * 1000) if q.interval else 1
        interval_ms = auto_interval_ms(report.time_range, min_ms=min_ms)
        try:
            sql = render(q.sql, report.time_range, variables, report.timescaledb, interval_ms)
            with conn.cursor() as cur:
                columns, rows = _run_query(cur, sql)
            conn.rollback()
        except (psycopg.Error, ValueError) as exc:
            conn.rollback()
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            result.ok, result.error = False, f"{q.ref_id}: {message}"
            continue
        result.rows += len(rows)
        problem = shape_error(q.shape, columns, rows)
        if problem:
            result.ok, result.error = False, f"{q.ref_id}: {problem}"
        elif q.shape == "variable" and q.ref_id != "run":
            if rows:
                variables[q.ref_id] = str(rows[0][0])
            else:
                result.ok, result.error = False, f"no values for ${q.ref_id}"
    report.variables[board.title] = dict(variables)
    return list(results.values())
