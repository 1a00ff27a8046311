"""The Grafana deliverables without a Grafana server: macro expansion as Grafana's
PostgreSQL data source does it, and every dashboard query run against the real embedded
PostgreSQL filled by a real short run (with chaos, so alerts, dead letters, late readings
and chaos events exist), as the read-only role Grafana uses, and through the CLI. The
Prometheus panels (no Prometheus here) are checked by the metric names their PromQL reads;
tests/test_metrics.py scrapes a live processor for the same names.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import WORKBENCH, cli_env, own_settings

from workbench import job
from workbench.bench import bench_predictor
from workbench.config import Settings
from workbench.grafana import check as checks
from workbench.grafana import dashboards as boards
from workbench.grafana.macros import (
    MacroError,
    TimeRange,
    auto_interval_ms,
    expand_macros,
    interpolate_variables,
    render,
)
from workbench.grafana.promql import metric_names
from workbench.metrics import exported_names
from workbench.models import registry
from workbench.simulator.spec import SimulationSpec
from workbench.sinks.postgres import READER_ROLE, connect, create_schema

T0 = dt.datetime(2026, 1, 1, 0, 0, 0, tzinfo=dt.UTC)
HOUR = TimeRange(T0, T0 + dt.timedelta(hours=1))
READER_PASSWORD = "grafana-test-reader"


# --- macros: exact SQL, as pkg/tsdb/grafana-postgresql-datasource/macros.go writes it ------


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("WHERE $__timeFilter(ts)",
         "WHERE ts BETWEEN '2026-01-01T00:00:00Z' AND '2026-01-01T01:00:00Z'"),
        ("$__timeFrom() < $__timeTo()", "'2026-01-01T00:00:00Z' < '2026-01-01T01:00:00Z'"),
        ("SELECT $__time(ts)", 'SELECT ts AS "time"'),
        ("SELECT $__timeEpoch(ts)", 'SELECT extract(epoch from ts) as "time"'),
        ("GROUP BY $__timeGroup(ts, '5m')", "GROUP BY floor(extract(epoch from ts)/300)*300"),
        ("SELECT $__timeGroupAlias(ts, 1m)",
         'SELECT floor(extract(epoch from ts)/60)*60 AS "time"'),
        ("SELECT $__timeGroupAlias(ts,500ms)",
         'SELECT floor(extract(epoch from ts)/0.5)*0.5 AS "time"'),
        # the pre-5.3 form: $__timeGroup followed by a comma gets the alias
        ("SELECT $__timeGroup(ts, 1m), v",
         'SELECT floor(extract(epoch from ts)/60)*60 AS "time", v'),
        ("WHERE $__unixEpochFilter(t)", "WHERE t >= 1767225600 AND t <= 1767229200"),
        ("SELECT $__unixEpochGroupAlias(t, 1h)", 'SELECT floor((t)/3600)*3600 AS "time"'),
    ],
)  # fmt: skip
def test_macros_expand_as_grafana_does(sql: str, expected: str) -> None:
    assert expand_macros(sql, HOUR) == expected


def test_timescaledb_data_source_groups_with_time_bucket() -> None:
    sql = "SELECT $__timeGroupAlias(ts, 5s)"
    assert expand_macros(sql, HOUR, timescaledb=True) == (
        "SELECT time_bucket('5.000s',ts) AS \"time\""
    )


def test_fractional_seconds_are_written_like_go_rfc3339nano() -> None:
    r = TimeRange(T0 + dt.timedelta(microseconds=250000), T0 + dt.timedelta(seconds=2))
    assert expand_macros("$__timeFilter(ts)", r) == (
        "ts BETWEEN '2026-01-01T00:00:00.25Z' AND '2026-01-01T00:00:02Z'"
    )


def test_bad_macros_fail_like_grafana() -> None:
    for sql in ("$__timeGroup(ts)", "$__timeGroup(ts, fortnight)", "$__nope(ts)"):
        with pytest.raises(MacroError):
            expand_macros(sql, HOUR)


def test_variables_and_interval() -> None:
    values = {"run": "r-1", "machine": "m'1"}
    sql = "a='$run' b='${run}' c='[[run]]' d=${machine:sqlstring} e=$other $__timeFilter(ts)"
    assert interpolate_variables(sql, values) == (
        "a='r-1' b='r-1' c='r-1' d='m''1' e=$other $__timeFilter(ts)"
    )
    assert auto_interval_ms(HOUR) == 5000  # 3600 s / 1000 points = 3.6 s, rounded to 5 s
    assert auto_interval_ms(TimeRange(T0, T0 + dt.timedelta(seconds=180)), min_ms=1000) == 1000
    assert render(
        "SELECT $__timeGroupAlias(ts, $__interval), count(*) * 1000.0 / $__interval_ms "
        "WHERE run_id = '$run'",
        HOUR,
        values,
    ) == (
        'SELECT floor(extract(epoch from ts)/5)*5 AS "time", count(*) * 1000.0 / 5000 '
        "WHERE run_id = 'r-1'"
    )


# --- the dashboards as files ---------------------------------------------------------------

#: the panels whose query is a "latest value" (no time macro needed): the gauges take the
#: newest reading inside $__timeFilter, but a health summary is of the whole run
LATEST_VALUE_PANELS: set[str] = {"Health summary"}


def test_provisioning_and_dashboards_load() -> None:
    provisioning = boards.load_provisioning()
    source = boards.workbench_datasource(provisioning)
    assert source["uid"] == "workbench-pg" and source["user"] == READER_ROLE
    (provider,) = provisioning["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    for board in boards.load_dashboards():
        data = board.data
        assert data["refresh"] == "5s" and data["schemaVersion"] >= 39
        assert [v["name"] for v in data["templating"]["list"]] == ["run", "machine", "sensor"]
        for q in board.queries:
            if q.shape in ("variable",) or q.panel in LATEST_VALUE_PANELS:
                continue
            assert any(m in q.sql for m in checks.TIME_MACROS), f"{q.panel} {q.ref_id}"
        for panel in data["panels"]:
            if panel["type"] == "row":
                continue
            uid = panel["datasource"]["uid"]
            assert uid in ("workbench-pg", "workbench-prom"), panel["title"]
            for t in panel.get("targets", []):
                assert t["datasource"]["uid"] == uid, panel["title"]
                if uid == "workbench-pg":
                    assert "time_bucket" not in t["rawSql"], "plain PostgreSQL has no time_bucket"
                else:
                    assert t["expr"] and "rawSql" not in t, panel["title"]
        types = {p["type"] for p in data["panels"]}
        assert {"gauge", "timeseries", "table"} <= types
        annotations = [a for a in data["annotations"]["list"] if "target" in a]
        assert "chaos_events" in annotations[0]["target"]["rawSql"]


def test_the_pipeline_health_row_reads_the_processor_metrics() -> None:
    (board,) = boards.load_dashboards()
    rows = [p for p in board.data["panels"] if p["type"] == "row"]
    assert [r["title"] for r in rows] == ["Pipeline health"]
    below = {q.panel for q in board.promql}
    assert below == {"Consumer lag", "Processor rates", "Latency", "Watermark delay",
                     "Processors up", "Gateway requests"}  # fmt: skip
    used = {n for q in board.promql for n in metric_names(q.expr)}
    p = "workbench_processor_"
    assert {f"{p}consumer_lag_messages", f"{p}consumed_total", f"{p}stored_total",
            f"{p}dead_lettered_total", f"{p}late_total", f"{p}watermark_delay_seconds",
            f"{p}end_to_end_latency_seconds_bucket",
            f"{p}batch_duration_seconds_bucket"} <= used  # fmt: skip
    g = "workbench_gateway_"
    assert {f"{g}requests_total", f"{g}readings_total", f"{g}request_seconds_bucket"} <= used
    # rates and quantiles are PromQL's: every counter under rate(), buckets by le
    for q in board.promql:
        if "_total" in q.expr:
            assert "rate(" in q.expr, q.expr
        if "_bucket" in q.expr:
            assert q.expr.startswith("histogram_quantile(") and "by (le" in q.expr, q.expr
    # the panels sit below the row, side by side within the grid's 24 columns
    top = rows[0]["gridPos"]["y"]
    for panel in board.data["panels"]:
        if panel["title"] in below:
            pos = panel["gridPos"]
            assert pos["y"] > top and pos["x"] + pos["w"] <= 24, panel["title"]


def test_prometheus_panels_are_checked_by_name() -> None:
    (board,) = boards.load_dashboards()
    provisioned = boards.prometheus_datasources(boards.load_provisioning())
    assert provisioned == {"workbench-prom"}
    results = checks.check_promql(board, exported_names(), provisioned)
    assert results and all(r.ok and r.checked == checks.BY_NAME for r in results), [
        r.to_dict() for r in results
    ]
    lag = next(r for r in results if r.panel == "Consumer lag")
    assert lag.metrics == ["workbench_processor_consumer_lag_messages"]
    assert lag.to_dict() == {"dashboard": "Machine health", "panel": "Consumer lag", "ok": True,
                             "checked": "metric names", "metrics": lag.metrics}  # fmt: skip
    assert "PromQL not run" in lag.text()

    # a misspelt metric, and a panel on a data source nobody provisioned: named failures
    q = board.promql[0]
    typo = dataclasses.replace(q, expr=q.expr.replace("lag_messages", "lag_msgs"))
    elsewhere = dataclasses.replace(board.promql[-1], datasource="somewhere")
    broken = dataclasses.replace(board, promql=[typo, elsewhere])
    failed = {r.panel: r.error for r in checks.check_promql(broken, exported_names(),
                                                            provisioned)}  # fmt: skip
    assert failed[q.panel] == (
        "A: not a metric the workbench exports: workbench_processor_consumer_lag_msgs"
    )
    assert "'somewhere' is not a provisioned Prometheus" in failed[elsewhere.panel]


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("rate(a_total[5m])", ["a_total"]),
        ('sum by (partition) (b{job="x", le=~"0.5|1"}) or on (partition) c', ["b", "c"]),
        ("max(d) without (instance) * 2e3 > bool 0.5", ["d"]),
        ('e offset 5m unless f @ end()', ["e", "f"]),
        ("histogram_quantile(0.99, sum(rate(g_bucket[$__rate_interval])) by (le))",
         ["g_bucket"]),
        ('label_replace(h, "dst", "$1", "src", "(.*)")', ["h"]),
        ("vector(1)", []),
    ],
)  # fmt: skip
def test_promql_metric_names(expr: str, names: list[str]) -> None:
    assert metric_names(expr) == names


# --- against a real run ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def filled(stack) -> Iterator[tuple[Settings, str]]:
    """One real short run with chaos, on the session stack; the reader role can log in."""
    base, endpoints = stack
    # a failure-precursor model of this test's own, promoted: the processor scores the run
    model = f"grafana-{uuid.uuid4().hex[:6]}"
    saved = registry.save(endpoints.database_url, model, "precursor", bench_predictor().model,
                          {"threshold": 0.5}, [], {})  # fmt: skip
    registry.promote(endpoints.database_url, model, saved.version)
    settings = own_settings(base, endpoints, reader_password=READER_PASSWORD, model=model)
    spec = SimulationSpec.build(machines=3, duration_s=180, seed=1,
        chaos={"spike": 0.01, "stuck": 0.2, "malformed": 0.01, "latency": 2.0})  # fmt: skip
    summary = job.run_experiment(settings, spec)
    assert summary.alerts > 0 and summary.deadlettered > 0 and summary.late > 0
    create_schema(endpoints.database_url, reader_password=READER_PASSWORD)
    yield settings, summary.run_id


def reader_url(admin_url: str) -> str:
    host = admin_url.split("@", 1)[1]
    return f"postgresql://{READER_ROLE}:{READER_PASSWORD}@{host}"


def wall_span(url: str, run_id: str) -> TimeRange:
    with connect(url) as conn:
        start, end = conn.execute(
            "SELECT started_at, finished_at FROM runs WHERE run_id = %s", (run_id,)
        ).fetchone()
    return TimeRange(start - dt.timedelta(seconds=5), end + dt.timedelta(seconds=5))


def test_every_panel_runs_as_the_reader_with_rows(filled, endpoints) -> None:
    _settings, run_id = filled
    url = reader_url(endpoints.database_url)
    with connect(url) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == READER_ROLE
    report = checks.check(url, run_id)
    by_name = {p.panel: p for p in report.panels}
    assert report.ok, [p.to_dict() for p in report.panels if not p.ok]
    assert report.run_id == run_id
    assert report.variables["Machine health"]["run"] == run_id
    # every SQL panel, annotation and variable has data over the run's event-time span
    for name, result in by_name.items():
        if result.checked == "sql":
            assert result.rows > 0, name
    # and the Prometheus panels are there, checked by name (not silently skipped)
    by_name_only = {n for n, r in by_name.items() if r.checked == checks.BY_NAME}
    assert by_name_only == {q.panel for q in boards.load_dashboards()[0].promql}
    assert "Prometheus panels checked by metric name only" in report.text()
    assert {"Condition now", "Latest temperature", "Raw vs processed", "Failure probability",
            "Alert history",
            "Late events and dead letters", "Pipeline throughput",
            "annotation: Chaos ground truth", "variable: run"} <= set(by_name)  # fmt: skip
    # dead letters are stamped with the wall clock: the run's wall-clock span has them
    late_dead = checks.check(url, run_id, wall_span(endpoints.database_url, run_id))
    assert {p.panel: p.ok for p in late_dead.panels}["Late events and dead letters"]
    with connect(url) as conn:
        dead = conn.execute(
            "SELECT count(*) FROM dead_letters WHERE run_id = %s", (run_id,)
        ).fetchone()[0]
    assert dead > 0


def test_time_series_panels_have_a_time_column_first(filled, endpoints) -> None:
    _settings, run_id = filled
    (board,) = boards.load_dashboards()
    url = endpoints.database_url
    report = checks.check(url, run_id)
    variables = report.variables[board.title]
    for q in board.queries:
        if q.shape != "time series":
            continue
        sql = render(q.sql, report.time_range, variables, interval_ms=5000)
        with connect(url) as conn:
            cur = conn.execute(sql)
            names = [d.name for d in cur.description]
            rows = cur.fetchall()
        assert names[0] == "time", q.panel
        times = [r[0] for r in rows]
        assert times == sorted(times) and len(times) == len(set(times)), q.panel
        start, end = report.time_range.start.timestamp(), report.time_range.end.timestamp()
        assert all(start - 5 <= float(t) <= end for t in times), q.panel


def test_the_health_panel_shows_health_all_worst_first(filled, endpoints) -> None:
    """`workbench run` saved the run's health; the panel shows it as health_all() computes it."""
    from workbench.models import health

    _settings, run_id = filled
    (board,) = boards.load_dashboards()
    (q,) = [q for q in board.queries if q.panel == "Health summary"]
    report = checks.check(reader_url(endpoints.database_url), run_id)
    assert {p.panel: p.rows for p in report.panels}["Health summary"] == 3
    with connect(reader_url(endpoints.database_url)) as conn:
        cur = conn.execute(render(q.sql, report.time_range, {"run": run_id}))
        names, rows = [d.name for d in cur.description], cur.fetchall()
    assert names[:6] == ["machine", "score", "worst indicator", "narrative", "run",
                         "recent (min)"]  # fmt: skip
    expected = [(h.machine_id, h.score, h.worst or "-", " ".join(h.narrative), run_id, 60.0)
                for h in health.health_all(endpoints.database_url, run_id)]  # fmt: skip
    assert [tuple(r[:6]) for r in rows] == expected


def test_the_cli_checks_every_panel(filled, tmp_path: Path) -> None:
    settings, run_id = filled
    env = cli_env(settings)
    done = subprocess.run([WORKBENCH, "grafana", "check", "--json", "--run-id", run_id],
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["ok"] is True and out["run_id"] == run_id
    sql = [p for p in out["panels"] if "checked" not in p]
    promql = [p for p in out["panels"] if "checked" in p]
    assert sql and all(set(p) == {"dashboard", "panel", "rows", "ok"} for p in sql)
    assert promql and all(
        set(p) == {"dashboard", "panel", "ok", "checked", "metrics"} and p["metrics"]
        for p in promql
    )

    # a copy of the dashboard with one broken panel query: exit 1, naming the panel
    data = json.loads(boards.load_dashboards()[0].path.read_text())
    broken = next(p for p in data["panels"] if p["title"] == "Alert history")
    broken["targets"][0]["rawSql"] = (
        "SELECT no_such_column FROM alerts WHERE $__timeFilter(opened_ts)"
    )
    (tmp_path / "machine_health.json").write_text(json.dumps(data))
    done = subprocess.run([WORKBENCH, "grafana", "check", "--json", "--run-id", run_id,
                           "--dashboards", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 1, done.stderr
    out = json.loads(done.stdout)
    failed = [p for p in out["panels"] if not p["ok"]]
    assert [p["panel"] for p in failed] == ["Alert history"]
    assert "no_such_column" in failed[0]["error"]

    # an explicit range outside the run: every query runs, the panels are empty
    done = subprocess.run([WORKBENCH, "grafana", "check", "--run-id", run_id,
                           "--from", "2020-01-01T00:00:00Z", "--to", "2020-01-01T01:00:00Z"],
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Alert history: 0 rows" in done.stdout
    assert "Alert history" not in done.stderr  # each panel said once, not logged again


def test_no_runs_is_one_clear_line(tmp_path: Path, endpoints) -> None:
    """An empty database (a fresh one on the same server) gives a one-line error, exit 1."""
    import psycopg

    name = f"grafana_empty_{tmp_path.name[-8:].lower().replace('-', '_')}"
    with psycopg.connect(endpoints.database_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    base, _db = endpoints.database_url.rsplit("/", 1)
    empty = f"{base}/{name}"
    try:
        create_schema(empty)
        settings = dataclasses.replace(
            Settings.from_env({}, state_dir=tmp_path), database_url=empty
        )
        done = subprocess.run([WORKBENCH, "grafana", "check"], env=cli_env(settings),
                              capture_output=True, text=True, timeout=60)  # fmt: skip
    finally:
        with psycopg.connect(endpoints.database_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert [line for line in done.stderr.splitlines() if "error" in line] == [
        "workbench: error: the database has no runs: make one first (workbench run)"
    ]
