"""The Parquet archive against the real database: a processed run archived, read back with
pyarrow datasets and compared with PostgreSQL column by column; idempotence, periods,
compaction, the CLI, and the s3:// path against a local S3-compatible server (moto)."""

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import WORKBENCH, cli_env, own_settings

from workbench import archive, job
from workbench.archive import READINGS, WINDOWS
from workbench.processor.loop import Processor
from workbench.simulator.spec import SimulationSpec
from workbench.sinks.postgres import PostgresSink, connect

UTC = dt.UTC
#: The run crosses midnight, so it lands in two date partitions.
START = dt.datetime(2026, 1, 1, 23, 59, tzinfo=UTC)
MIDNIGHT = dt.datetime(2026, 1, 2, tzinfo=UTC)
READING_SQL = (
    "SELECT run_id, machine_id, sensor_type, seq, ts, value, status_code, late, score, "
    "rolling_1, rolling_2, ingested_at FROM readings WHERE run_id = %s "
    "AND ts >= %s AND ts < %s ORDER BY ts, machine_id, sensor_type, seq"
)
WINDOW_SQL = (
    "SELECT run_id, machine_id, sensor_type, width_s, window_start, window_end, count, nulls, "
    "late, mean, min, max, stddev, quantile, final, revision, emitted_at FROM window_stats "
    "WHERE run_id = %s ORDER BY window_start, machine_id, sensor_type, width_s"
)
EVER = (dt.datetime(1970, 1, 1, tzinfo=UTC), dt.datetime(9999, 1, 1, tzinfo=UTC))


@pytest.fixture(scope="module")
def run(stack):
    """One processed run of 3 machines over 2 minutes around midnight, with spikes and
    latency (late readings, scores), shared by the tests of this file (read only)."""
    base, endpoints = stack
    settings = own_settings(base, endpoints)
    run_id = f"arch-{uuid.uuid4().hex[:6]}"
    spec = SimulationSpec.build(
        machines=3,
        duration_s=120,
        seed=7,
        chaos={"spike": 0.02, "latency": 12.0},
        start_ms=int(START.timestamp() * 1000),
    )
    job.simulate(settings, endpoints, spec, run_id)
    Processor(settings, endpoints.broker, endpoints.database_url).run(idle_timeout_s=3)
    return settings, endpoints, run_id


def db_rows(url, sql, *params):
    with connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def as_rows(table):
    return [tuple(r.values()) for r in table.to_pylist()]


def test_round_trip_equals_the_database_column_by_column(run, tmp_path):
    _, endpoints, run_id = run
    location = archive.open_location(str(tmp_path / "lake"))
    report = archive.archive(location, endpoints.database_url, run_id, tables=(READINGS, WINDOWS))

    expected = db_rows(endpoints.database_url, READING_SQL, run_id, *EVER)
    assert len(expected) > 1000 and any(r[7] for r in expected)  # late readings are in it
    assert report.rows() == len(expected)
    readings_files = [f for f in report.files if f.table == "readings"]
    assert [(f.date, f.run_id) for f in readings_files] == [
        ("2026-01-01", run_id),
        ("2026-01-02", run_id),
    ]
    assert all("/readings/date=2026-01-0" in f.path for f in readings_files)
    back = archive.read_readings(location, run_id)
    assert back.column_names == list(READINGS.columns)
    assert as_rows(back) == expected

    windows = db_rows(endpoints.database_url, WINDOW_SQL, run_id)
    assert windows and report.rows("windows") == len(windows)
    assert as_rows(archive.read_windows(location, run_id)) == windows

    # the files themselves: zstd, event time as timestamp[ms, UTC], run_id in the path only
    meta = pq.ParquetFile(readings_files[0].path).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"
    schema = pq.read_schema(readings_files[0].path)
    assert str(schema.field("ts").type) == "timestamp[ms, tz=UTC]"
    assert "run_id" not in schema.names


def test_archiving_twice_gives_the_same_files_and_rows(run, tmp_path):
    _, endpoints, run_id = run
    location = archive.open_location(str(tmp_path / "lake"))
    first = archive.archive(location, endpoints.database_url, run_id)
    files = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    second = archive.archive(location, endpoints.database_url, run_id)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()) == files
    assert [(f.path, f.rows) for f in second.files] == [(f.path, f.rows) for f in first.files]
    assert all(f.replaced == 1 for f in second.files)
    assert archive.read_readings(location, run_id).num_rows == first.rows()


def test_periods_slices_and_compaction(run, tmp_path):
    _, endpoints, run_id = run
    url = endpoints.database_url
    location = archive.open_location(str(tmp_path / "lake"))
    t = [START + dt.timedelta(seconds=s) for s in (0, 30, 60, 90, 120)]
    # an hourly-job pattern: three slices, the middle one spanning midnight
    for since, until in [(t[0], t[1]), (t[1], t[3]), (t[3], t[4])]:
        archive.archive(location, url, run_id, since, until)
    day1 = tmp_path / "lake/readings/date=2026-01-01" / f"run_id={run_id}"
    day2 = tmp_path / "lake/readings/date=2026-01-02" / f"run_id={run_id}"
    assert sorted(p.name for p in day1.iterdir()) == [
        "part-235900000-235930000.parquet",
        "part-235930000-240000000.parquet",
    ]
    assert len(list(day2.iterdir())) == 2

    # a period read back is exactly the database's rows of that period
    since, until = START + dt.timedelta(seconds=17), START + dt.timedelta(seconds=77)
    part = archive.read_readings(location, run_id, since, until)
    assert as_rows(part) == db_rows(url, READING_SQL, run_id, since, until)

    # an overlapping slice widens to the files it touches and replaces them: no duplicates
    again = archive.archive(location, url, run_id, t[0] + dt.timedelta(seconds=15), t[1])
    assert [f.replaced for f in again.files] == [1]
    assert archive.read_readings(location, run_id).num_rows == len(
        db_rows(url, READING_SQL, run_id, *EVER)
    )

    done = archive.compact(location, run_id)
    assert sorted((c.date, c.inputs) for c in done) == [("2026-01-01", 2), ("2026-01-02", 2)]
    assert [p.name for p in day1.iterdir()] == ["part-235900000-240000000.parquet"]
    assert [p.name for p in day2.iterdir()] == ["part-000000000-000100000.parquet"]
    assert as_rows(archive.read_readings(location, run_id)) == db_rows(
        url, READING_SQL, run_id, *EVER
    )
    assert archive.compact(location, run_id) == []  # compacting twice changes nothing


def test_an_archive_is_never_shrunk_by_a_pruned_database(stack, tmp_path):
    _, endpoints = stack
    run_id = f"prune-{uuid.uuid4().hex[:6]}"
    ms = int(START.timestamp() * 1000)
    rows = [(run_id, "m-1", "temperature", i, ms + i * 1000, 20.0 + i, 0, False, None, None, None)
            for i in range(10)]  # fmt: skip
    with PostgresSink(endpoints.database_url) as sink:
        sink.write(readings=rows)
    location = archive.open_location(str(tmp_path / "lake"))
    first = archive.archive(location, endpoints.database_url, run_id)
    assert first.rows() == 10
    with connect(endpoints.database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM readings WHERE run_id = %s AND seq < 3", (run_id,))
    with pytest.raises(archive.ArchiveError, match=r"database has 7 rows .* already holds 10"):
        archive.archive(location, endpoints.database_url, run_id)
    assert archive.read_readings(location, run_id).num_rows == 10


def workbench(settings, *args, **env):
    return subprocess.run([WORKBENCH, *args], env=cli_env(settings, **env), capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_cli_archive_json_rows_equal_the_database(run, tmp_path):
    settings, endpoints, run_id = run
    env = {"WORKBENCH_ARCHIVE_URI": str(tmp_path / "lake")}
    proc = workbench(settings, "archive", "--run-id", run_id, "--json", **env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    (count,) = db_rows(endpoints.database_url, "SELECT count(*) FROM readings WHERE run_id = %s",
                       run_id)[0]  # fmt: skip
    assert (out["files"], out["rows"]) == (2, count)
    assert out["where"] == str(tmp_path / "lake") and out["bytes"] > 0
    assert all(Path(p).is_file() for p in out["paths"])

    text = workbench(settings, "archive", "--run-id", run_id, "--windows", "--compact", **env)
    assert text.returncode == 0, text.stderr
    assert f"2 readings files, {count:,} rows" in text.stdout and "windows files" in text.stdout


@pytest.mark.parametrize(
    ("args", "env", "complaint"),
    [
        (["--run-id", "no-such-run"], {}, "unknown run id 'no-such-run'"),
        (["--since", "2026-01-02", "--until", "2026-01-01"], {}, "is not before --until"),
        ([], {}, "give --run-id, --since/--until, or both"),
        (
            ["--run-id", "x"],
            {"WORKBENCH_ARCHIVE_URI": "s3://lake/wb?endpoint_override=127.0.0.1:1&scheme=http",
             "WORKBENCH_CONNECT_TIMEOUT_S": "1"},
            "cannot use the archive at s3://lake/wb?endpoint_override=127.0.0.1:1",
        ),
    ],
)  # fmt: skip
def test_cli_bad_input_is_one_line(run, tmp_path, args, env, complaint):
    settings = run[0]
    env = {"WORKBENCH_ARCHIVE_URI": str(tmp_path / "lake"), "AWS_ACCESS_KEY_ID": "x",
           "AWS_SECRET_ACCESS_KEY": "x", **env}  # fmt: skip
    proc = workbench(settings, "archive", *args, **env)
    assert proc.returncode == 1
    assert proc.stderr.startswith("workbench: error: ") and complaint in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.fixture
def s3_server(tmp_path, monkeypatch):
    """moto's S3-compatible server on a free loopback port, stopped by its pid."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path / "moto.log", "wb")  # noqa: SIM115
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, "moto did not start"
            time.sleep(0.1)
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_EC2_METADATA_DISABLED": "true"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    yield f"127.0.0.1:{port}"
    os.kill(server.pid, 15)
    server.wait(10)
    log.close()


def test_s3_round_trip_through_a_local_s3_server(run, s3_server):
    _, endpoints, run_id = run
    uri = f"s3://lake/workbench?endpoint_override={s3_server}&scheme=http"
    location = archive.open_location(uri)
    assert location.kind == "s3"
    half = START + dt.timedelta(seconds=45)
    archive.archive(location, endpoints.database_url, run_id, until=half)
    archive.archive(location, endpoints.database_url, run_id, since=half)
    first = archive.archive(location, endpoints.database_url, run_id, since=half)  # twice
    assert all(f.replaced == 1 for f in first.files)
    assert [c.inputs for c in archive.compact(location, run_id)] == [2]  # day 1 had 2 slices
    expected = db_rows(endpoints.database_url, READING_SQL, run_id, *EVER)
    assert as_rows(archive.read_readings(uri, run_id)) == expected
    paths = [f.path for f in location.files(location.path("readings"), recursive=True)]
    assert paths == [
        f"lake/workbench/readings/date=2026-01-01/run_id={run_id}/part-000000000-240000000.parquet",
        f"lake/workbench/readings/date=2026-01-02/run_id={run_id}/part-000000000-240000000.parquet",
    ]
