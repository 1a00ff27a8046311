"""TimescaleDB SQL (checked for what it generates: no TimescaleDB binary exists here), its
detection against the real PostgreSQL, and retention by run age."""

from __future__ import annotations

import datetime as dt
import json
import logging
import subprocess

import pytest
import sqlalchemy as sa
from conftest import WORKBENCH, cli_env

from workbench.errors import ConfigError
from workbench.processor.validate import Reading
from workbench.runs import RunRegistry
from workbench.sinks.postgres import PostgresSink, create_schema, engine
from workbench.sinks.timeseries import (
    MAX_CHUNK,
    MIN_CHUNK,
    apply_timescale,
    chunk_interval,
    prune,
    timescale_statements,
)


def test_chunk_interval_follows_the_data_rate_within_bounds():
    assert chunk_interval(1) == MAX_CHUNK
    assert chunk_interval(10**9) == MIN_CHUNK
    assert chunk_interval(1000) == dt.timedelta(seconds=10_000)
    assert chunk_interval(2000) < chunk_interval(1000)


def test_timescale_sql_makes_compressed_hypertables_idempotently():
    sql = timescale_statements(rows_per_s=1000)
    assert sql[0] == "CREATE EXTENSION IF NOT EXISTS timescaledb"
    readings = [s for s in sql if "'readings'" in s or "TABLE readings" in s]
    assert readings == [
        "SELECT create_hypertable('readings', by_range('ts', INTERVAL '10000 seconds'), "
        "if_not_exists => TRUE, migrate_data => TRUE)",
        "ALTER TABLE readings SET (timescaledb.compress, timescaledb.compress_segmentby = "
        "'machine_id, sensor_type', timescaledb.compress_orderby = 'ts DESC')",
        "SELECT add_compression_policy('readings', INTERVAL '86400 seconds', "
        "if_not_exists => TRUE)",
    ]
    assert any("create_hypertable('window_stats', by_range('window_start'" in s for s in sql)
    # every creating statement is guarded, so a second start changes nothing
    assert all("if_not_exists => TRUE" in s or "IF NOT EXISTS" in s or s.startswith("ALTER")
               for s in sql)  # fmt: skip
    # no event-time retention policy: seeded runs live at a fixed event-time origin
    assert not any("retention" in s for s in sql)


def test_plain_postgresql_is_detected_and_the_choice_logged(endpoints, caplog):
    eng = engine(endpoints.database_url)
    try:
        with caplog.at_level(logging.DEBUG, "workbench.sinks.timeseries"), eng.begin() as conn:
            assert apply_timescale(conn, 1000, "auto") is False
            assert apply_timescale(conn, 1000, "off") is False
            with pytest.raises(ConfigError, match="WORKBENCH_TIMESCALE"):
                apply_timescale(conn, 1000, "on")
    finally:
        eng.dispose()
    assert "not available on this server" in caplog.text
    assert "off by setting" in caplog.text


def _run(url: str, run_id: str, started: dt.datetime) -> None:
    with RunRegistry(url) as registry, registry.track(run_id, "run", 1, {}):
        pass
    t0 = 1_767_225_600_000
    readings = [Reading(run_id, "m-1", "pressure", i, t0 + i, 1.0, 0) for i in range(5)]
    window = (run_id, "m-1", "pressure", 60, t0, t0 + 60_000, 5, 0, 0, 1.0, 1.0, 1.0, 0.0, 1.0,
              True, 0)  # fmt: skip
    with PostgresSink(url) as sink:
        sink.write(readings, windows=[window])
    eng = engine(url)
    try:
        with eng.begin() as conn:
            conn.execute(sa.text("UPDATE runs SET started_at = :t WHERE run_id = :r"),
                         {"t": started, "r": run_id})  # fmt: skip
    finally:
        eng.dispose()


def _count(url: str, table: str, run_id: str) -> int:
    eng = engine(url)
    try:
        with eng.connect() as conn:
            return conn.execute(
                sa.text(f"SELECT count(*) FROM {table} WHERE run_id = :r"), {"r": run_id}
            ).scalar_one()
    finally:
        eng.dispose()


def test_prune_goes_by_run_age_and_a_dry_run_deletes_nothing(endpoints, settings):
    url = endpoints.database_url
    create_schema(url)
    now = dt.datetime.now(dt.UTC)
    _run(url, "prune-new", now - dt.timedelta(days=1))
    _run(url, "prune-mid", now - dt.timedelta(days=10))
    _run(url, "prune-old", now - dt.timedelta(days=100))
    week, quarter = dt.timedelta(days=7), dt.timedelta(days=90)
    eng = engine(url)
    try:
        with eng.begin() as conn:
            dry = prune(conn, week, quarter, dry_run=True)
        assert dry.dry_run and dry.rows["readings"] >= 10 and dry.rows["runs"] >= 1
        assert _count(url, "readings", "prune-mid") == 5  # nothing deleted
        with eng.begin() as conn:
            done = prune(conn, week, quarter)
    finally:
        eng.dispose()
    assert done.rows == dry.rows
    assert {"prune-mid", "prune-old"} <= set(done.runs)
    # the new run keeps everything; the 10-day-old one keeps its windows and run row
    assert (_count(url, "readings", "prune-new"), _count(url, "window_stats", "prune-new")) == (
        5,
        1,
    )
    assert (_count(url, "readings", "prune-mid"), _count(url, "window_stats", "prune-mid")) == (
        0,
        1,
    )
    assert _count(url, "runs", "prune-mid") == 1
    assert [_count(url, t, "prune-old") for t in ("readings", "window_stats", "runs")] == [0, 0, 0]


def test_prune_command_json(endpoints, settings):
    proc = subprocess.run(
        [WORKBENCH, "prune", "--readings", "3650d", "--windows", "7300d", "--dry-run", "--json"],
        env=cli_env(settings), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["dry_run"] is True and set(result["rows"]) >= {"readings", "runs"}
    bad = subprocess.run(
        [WORKBENCH, "prune", "--readings", "30d", "--windows", "7d"],
        env=cli_env(settings), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 1 and "--windows" in bad.stderr and len(bad.stderr.splitlines()) == 1
