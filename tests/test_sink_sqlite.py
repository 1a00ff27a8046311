"""The SQLite edge sink: the PostgreSQL sink's idempotency on one file, and
`workbench process --sink sqlite:///...` end to end against the real broker."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import time

import pytest
import sqlalchemy as sa
from conftest import WORKBENCH, assert_incremental_checkpoints, cli_env, readings_in

from workbench.errors import ConfigError, DatabaseUnavailable
from workbench.job import simulate
from workbench.simulator.spec import SimulationSpec
from workbench.sinks import open_sink, schema
from workbench.sinks.sqlite import SqliteSink, engine

T0 = 1_767_225_600_000  # 2026-01-01T00:00Z


def reading(seq: int, value: float = 20.0, machine: str = "m-1") -> tuple:
    return ("r", machine, "temperature", seq, T0 + seq * 1000, value, 0, False, 0.5, 20.0, 20.0)


def window(revision: int, count: int, final: bool = True) -> tuple:
    return ("r", "m-1", "temperature", 60, T0, T0 + 60_000, count, 0, 0, 20.0, 19.0, 21.0,
            0.5, 20.9, final, revision)  # fmt: skip


def alert(state: str, updated_s: int, breaches: int) -> tuple:
    closed = T0 + updated_s * 1000 if state == "closed" else None
    return ("r", "hot/m-1/temperature/0", "hot", "threshold", "critical", state, "m-1",
            "temperature", T0, T0 + 3000, T0 + updated_s * 1000, closed, 31.5, breaches,
            ["failure"])  # fmt: skip


def stats(n: int) -> tuple:
    return ("r", "m-1", "temperature", n, 0, 0, 20.0, 0.5, 20.0, 0.4, 20.9, 20.0, 0.3, 0,
            T0 + n * 1000)  # fmt: skip


@pytest.fixture
def sink(tmp_path):
    with SqliteSink(f"sqlite:///{tmp_path / 'edge.db'}") as s:
        yield s


def rows(sink: SqliteSink, table: sa.Table, *columns: str) -> list[tuple]:
    eng = engine(sink.url, writer=False)
    try:
        with eng.connect() as conn:
            cols = [table.c[c] for c in columns] or [table]
            return [tuple(r) for r in conn.execute(sa.select(*cols).order_by(*table.primary_key))]
    finally:
        eng.dispose()


def test_the_same_batch_twice_leaves_the_same_rows(sink):
    batch = dict(
        readings=[reading(i) for i in range(50)] + [reading(3)],  # a duplicate inside the batch
        dead_letters=[("raw", 0, 7, "r", "undecodable", b"m-1", b"\x00\xff")],
        windows=[window(0, 50)],
        alerts=[alert("open", 5, 3)],
        checkpoints=[("g", "raw", 0, 51, b"state")],
        sensor_stats=[stats(50)],
    )
    first = sink.write(**batch)
    assert (first.readings_inserted, first.readings_duplicate) == (50, 1)
    assert first.dead_letters_inserted == 1
    tables = [schema.readings, schema.dead_letters, schema.window_stats, schema.alerts,
              schema.sensor_stats]  # fmt: skip
    before = [rows(sink, t) for t in tables]
    again = sink.write(**batch)
    assert (again.readings_inserted, again.readings_duplicate, again.dead_letters_inserted) == (
        0, 51, 0,
    )  # fmt: skip
    after = [rows(sink, t) for t in tables]
    # the same rows; only the emitted_at / updated_at stamps of upserts may move
    assert [len(t) for t in after] == [50, 1, 1, 1, 1]
    assert after[:2] == before[:2]
    assert sink.checkpoint("g", "raw", 0) == (51, b"state", {})
    assert sink.checkpoint("g", "raw", 1) is None


def test_row_layout_matches_the_postgres_sink(sink):
    sink.write(readings=[reading(1, value=None)], alerts=[alert("open", 5, 3)],
               dead_letters=[("raw", 2, 9, "r", "bad", None, b"\x01")])  # fmt: skip
    (r,) = rows(sink, schema.readings, "ts", "value", "late", "score")
    assert r[0].isoformat() == "2026-01-01T00:00:01"  # UTC, read back without a zone
    assert r[1:] == (None, False, 0.5)
    (a,) = rows(sink, schema.alerts, "detects", "opened_ts", "closed_ts")
    assert a == (["failure"], a[1], None) and a[1].second == 3  # JSON and times round-trip
    (d,) = rows(sink, schema.dead_letters, "key", "payload", "run_id")
    assert d == (None, b"\x01", "r")  # LargeBinary as BLOB
    with sqlite3.connect(sink.url.removeprefix("sqlite:///")) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_newer_window_revision_wins_and_an_older_never_replaces_it(sink):
    count = lambda: rows(sink, schema.window_stats, "count", "final", "revision")  # noqa: E731
    sink.write(windows=[window(-1, 10, final=False)])
    sink.write(windows=[window(-1, 20, final=False)])  # a later provisional result replaces
    assert count() == [(20, False, -1)]
    sink.write(windows=[window(0, 30)])
    assert count() == [(30, True, 0)]
    sink.write(windows=[window(-1, 25, final=False)])  # a provisional never undoes a final
    assert count() == [(30, True, 0)]
    sink.write(windows=[window(2, 32), window(1, 31)])  # in one batch, the newest wins
    assert count() == [(32, True, 2)]
    sink.write(windows=[window(1, 31)])
    assert count() == [(32, True, 2)]


def test_alert_lifecycle_is_one_row_and_an_older_transition_never_replaces_a_newer(sink):
    lifecycle = lambda: rows(sink, schema.alerts, "state", "breaches", "closed_ts")  # noqa: E731
    sink.write(alerts=[alert("open", 5, 3)])
    sink.write(alerts=[alert("open", 9, 6)])
    assert lifecycle() == [("open", 6, None)]
    sink.write(alerts=[alert("closed", 20, 6)])
    assert [(s, b) for s, b, _ in lifecycle()] == [("closed", 6)]
    sink.write(alerts=[alert("open", 9, 6)])  # a redelivered older transition
    (state, breaches, closed) = lifecycle()[0]
    assert (state, breaches, closed.second) == ("closed", 6, 20)
    (opened,) = rows(sink, schema.alerts, "opened_ts")[0]
    assert opened.second == 3  # the opening stays


def test_sensor_stats_over_more_readings_win(sink):
    sink.write(sensor_stats=[stats(10)])
    sink.write(sensor_stats=[stats(30), stats(20)])
    sink.write(sensor_stats=[stats(25)])
    assert rows(sink, schema.sensor_stats, "n") == [(30,)]


def test_chaos_events_are_stored_once(sink):
    event = ("r", 1, "spike", "m-1", "temperature", T0, T0 + 1000, 25.0, "simulator", None)
    assert sink.write_chaos_events([event]) == 1
    assert sink.write_chaos_events([event]) == 0


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("sqlite:///{tmp}/missing/edge.db", "does not exist"),
        ("sqlite:///{tmp}", "is a directory"),
        ("sqlite:///{tmp}/ro/edge.db", "is not writable"),
    ],
)
def test_a_sqlite_file_that_cannot_be_written_is_named(tmp_path, url, complaint):
    (tmp_path / "ro").mkdir(mode=0o555)
    if os.geteuid() == 0 and "ro" in url:
        pytest.skip("root writes anywhere")
    with pytest.raises(DatabaseUnavailable, match=complaint):
        open_sink(url.format(tmp=tmp_path))


def test_an_unknown_scheme_is_a_config_error():
    with pytest.raises(ConfigError, match="expected postgresql://"):
        open_sink("mongodb://localhost/edge")


# -- end to end: `workbench process --sink sqlite:///...` -------------------------------


def process(settings, db, *args, **popen):
    return subprocess.Popen(
        [WORKBENCH, "-q", "process", "--sink", f"sqlite:///{db}", *args],
        env=cli_env(settings, **popen.pop("env", {})),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def count(db, sql: str, *params) -> int:
    with sqlite3.connect(db, timeout=30) as conn:
        return conn.execute(sql, params).fetchone()[0]


def test_process_into_sqlite_stores_every_reading_and_final_windows(settings, endpoints, tmp_path):
    db = tmp_path / "edge.db"
    spec = SimulationSpec.build(machines=3, duration_s=130, seed=4)
    report = simulate(settings, endpoints, spec, "edge-a")  # ends with end-of-run markers
    # a state directory of its own, the session's broker as an external one: nothing but
    # the SQLite file may be needed, so no embedded PostgreSQL may start
    edge = dataclasses.replace(
        settings, state_dir=tmp_path / "state", bootstrap_servers=endpoints.bootstrap_servers
    )
    proc = process(edge, db, "--idle-timeout", "3", "--json")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert not (tmp_path / "state" / "postgres").exists()
    assert report.produced == readings_in(3, 130)
    n = readings_in(3, 130)
    assert json.loads(out)["stored"] == n
    assert count(db, "SELECT count(*) FROM readings WHERE run_id = ?", "edge-a") == n
    assert count(db, "SELECT count(DISTINCT seq) FROM readings WHERE machine_id = 'm-0001' "
                     "AND sensor_type = 'temperature'") == 130  # fmt: skip
    # 3 minutes of 1-minute windows and one 5-minute window per machine and sensor, all final
    # (the idle timeout closed them): 5 sensors x 3 machines x (3 + 1)
    assert count(db, "SELECT count(*) FROM window_stats WHERE final") == 5 * 3 * 4
    assert count(db, "SELECT count(*) FROM window_stats WHERE NOT final") == 0
    assert count(db, "SELECT sum(count) + sum(nulls) FROM window_stats WHERE width_s = 60") == n
    assert count(db, "SELECT count(*) FROM sensor_stats") == 5 * 3
    assert count(db, "SELECT count(*) FROM processor_state") == len(report.partitions)


def test_a_bad_sink_is_one_line_before_anything_starts(settings, tmp_path):
    for url, complaint in [
        ("ftp://edge", "--sink='ftp://edge' is not valid: expected postgresql://"),
        (f"sqlite:///{tmp_path}/nowhere/edge.db", f"folder {tmp_path}/nowhere does not exist"),
    ]:
        proc = subprocess.run(
            [WORKBENCH, "process", "--sink", url, "--idle-timeout", "1"],
            env=cli_env(settings), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert proc.returncode == 1 and proc.stdout == ""
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith("workbench: error: ") and complaint in line, line


def test_sqlite_process_killed_mid_run_then_restarted_loses_and_duplicates_nothing(
    settings, endpoints, tmp_path
):
    db = tmp_path / "edge.db"
    spec = SimulationSpec.build(machines=100, duration_s=100, seed=4)
    total = simulate(settings, endpoints, spec, "edge-kill").produced
    proc = process(settings, db, env={"WORKBENCH_BATCH_SIZE": "500"})
    try:
        deadline = time.monotonic() + 90
        stored = 0
        while stored < total // 4 and time.monotonic() < deadline:
            time.sleep(0.05)
            with contextlib.suppress(sqlite3.OperationalError):  # no file or table yet
                stored = count(db, "SELECT count(*) FROM readings")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    stored_at_kill = count(db, "SELECT count(*) FROM readings")
    assert 0 < stored_at_kill < total, "the kill must land mid-run for this test to mean anything"

    again = process(settings, db, "--idle-timeout", "3", "--json")
    out, err = again.communicate(timeout=180)
    assert again.returncode == 0, err
    stats = json.loads(out)
    assert count(db, "SELECT count(*) FROM readings") == total
    assert stats["stored"] == total - stored_at_kill  # only what was missing
    assert stats["duplicates"] < stored_at_kill  # resumed at its checkpoint, not from the start
    # the end-of-run markers made every window final; each counts each reading once
    assert count(db, "SELECT sum(count) + sum(nulls) FROM window_stats WHERE width_s = 60") == (
        total
    )
    assert count(db, "SELECT count(*) FROM window_stats WHERE NOT final") == 0


def test_checkpoints_are_stored_incrementally(sink):
    assert_incremental_checkpoints(sink, "g")
