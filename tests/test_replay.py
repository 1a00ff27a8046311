"""CSV replay of the shared real data sets, against the real embedded broker and database.

Every expected number here (rows, label windows and blocks, time spans) is taken from
../shared/data/README.md, not from reading the files again: the test checks the replay
against what the data set is documented to be.
"""

import datetime as dt
import itertools
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import isolated_settings, read_topic
from test_cli import workbench

from workbench.processor.loop import Processor
from workbench.runs import RunRegistry
from workbench.schemas import READING
from workbench.simulator.csvsource import CsvSource
from workbench.simulator.labels import LabelBlocks, load_windows
from workbench.simulator.mapping import MappingError, Overrides, load_mapping, mapping_from_toml
from workbench.simulator.replay import ReplayOptions, replay
from workbench.sinks.postgres import connect

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NAB = DATA / "nab" / "machine_temperature_system_failure.csv"
SMOKE = DATA / "smoke" / "smoke_detection_iot.csv"


def ms(text: str) -> int:
    """README times (no zone given: UTC) as epoch milliseconds."""
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp() * 1000)


# README section 2: rows, span, the clock step back, and the four anomaly windows.
NAB_ROWS = 22_695
NAB_FIRST, NAB_LAST = ms("2013-12-02 21:15:00"), ms("2014-02-19 15:25:00")
NAB_WINDOWS = [  # (anomaly point, window start, window end)
    ("2013-12-11 06:00:00", "2013-12-10 06:25:00", "2013-12-12 05:35:00"),
    ("2013-12-16 17:25:00", "2013-12-15 17:50:00", "2013-12-17 17:00:00"),
    ("2014-01-28 13:55:00", "2014-01-27 14:20:00", "2014-01-29 13:30:00"),
    ("2014-02-08 14:30:00", "2014-02-07 14:55:00", "2014-02-09 14:05:00"),
]
# README section 3: rows per file and the anomaly=1 rows (0-based data rows).
SKAB_LABELLED = {
    "other/1.csv": (745, (557, 744)),
    "other/5.csv": (1155, (572, 981)),
    "other/7.csv": (1090, (572, 918)),
    "other/10.csv": (1327, (570, 1155)),
    "other/11.csv": (1190, (570, 1020)),
    "valve1/0.csv": (None, (573, 973)),
    "valve1/1.csv": (None, (572, 973)),
    "valve1/2.csv": (None, (566, 902)),
    "valve1/3.csv": (None, (573, 976)),
    "valve1/4.csv": (None, (573, 921)),
    "valve1/5.csv": (None, (577, 979)),
    "valve1/6.csv": (None, (576, 980)),
    "valve1/7.csv": (None, (578, 982)),
}
SKAB_ANOMALY_FREE_ROWS, SKAB_VALVE1_ROWS, SKAB_TOTAL_ROWS = 9_405, 9_012, 23_924
SKAB_SENSORS = 6  # the mapped columns of skab.toml
# README section 1: sessions (0-based rows, length, UTC start) and Fire Alarm blocks given
# as session rows (sessions 1-2: from 3178 to the end; 3: from 33; 4-5: rows 3-4).
SMOKE_ROWS, SMOKE_SENSORS = 62_630, 5
SMOKE_SESSIONS = [
    (24_994, "2022-06-09 00:08:51", (3178, 24_993)),
    (24_994, "2022-06-09 07:55:43", (3178, 24_993)),
    (1_154, "2022-06-10 23:16:45", (33, 1_153)),
    (5_744, "2022-06-08 18:16:27", (3, 4)),
    (5_744, "2022-06-13 12:45:08", (3, 4)),
]


def replay_json(settings, *args):
    proc = workbench(settings, "replay", *map(str, args), "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), proc.stderr


def chaos_rows(database_url, run_id):
    with connect(database_url) as conn:
        return conn.execute(
            "SELECT machine_id, kind, start_ts, end_ts, detail FROM chaos_events "
            "WHERE run_id = %s ORDER BY event_id",
            (run_id,),
        ).fetchall()


def epoch_ms(ts: dt.datetime) -> int:
    return round(ts.timestamp() * 1000)


def test_nab_replays_every_row_and_its_four_windows_as_ground_truth(settings, endpoints):
    summary, log = replay_json(settings, NAB)
    assert "shipped mapping 'nab'" in log
    assert (summary["rows"], summary["produced"], summary["bad_rows"]) == (NAB_ROWS, NAB_ROWS, 0)
    assert (summary["first_ts"], summary["last_ts"]) == (NAB_FIRST, NAB_LAST)
    # the 55-minute step back: one row goes back, and 12 timestamps occur a second time
    assert (summary["backwards_steps"], summary["rows_behind"]) == (1, 12)
    assert summary["labels"] == 4
    stored = chaos_rows(endpoints.database_url, summary["run_id"])
    got = [(epoch_ms(s), epoch_ms(e), json.loads(d)["anomaly_point_ts"]) for *_, s, e, d in stored]
    assert got == [(ms(start), ms(end), ms(point)) for point, start, end in NAB_WINDOWS]
    assert {(m, k) for m, k, *_ in stored} == {
        ("nab-machine_temperature_system_failure", "anomaly")
    }
    row = RunRegistry(endpoints.database_url).get(summary["run_id"])
    assert (row["kind"], row["status"], row["produced"], row["deadlettered"]) == (
        "replay", "completed", NAB_ROWS, 0,
    )  # fmt: skip
    assert row["params"]["mapping"]["name"] == "nab" and len(row["params"]["file_sha256"]) == 64


def test_smoke_replays_one_machine_per_session_with_one_label_block_each(settings, endpoints):
    summary, _ = replay_json(settings, SMOKE)
    assert (summary["rows"], summary["bad_rows"]) == (SMOKE_ROWS, 0)
    assert summary["produced"] == SMOKE_ROWS * SMOKE_SENSORS
    assert summary["machines"] == [f"smoke-s{n}" for n in range(1, 6)]
    assert summary["backwards_steps"] == 0  # UTC goes back between sessions, not within one
    assert summary["first_time"] == "2022-06-08T18:16:27Z"
    assert summary["last_time"] == "2022-06-13T14:20:51Z"
    assert summary["labels"] == 5
    events = summary["label_events"]
    for n, (event, (length, start, (first, last))) in enumerate(
        zip(events, SMOKE_SESSIONS, strict=True), 1
    ):
        assert event["machine_id"] == f"smoke-s{n}"
        assert event["detail"]["seq"] == [first, last]  # session rows = seq: 1 row per second
        assert (event["start_ts"], event["end_ts"]) == (ms(start) + first * 1000,
                                                        ms(start) + last * 1000)  # fmt: skip
        assert last < length
    assert len(chaos_rows(endpoints.database_url, summary["run_id"])) == 5
    print(
        f"smoke: {summary['rows_per_s']:,.0f} rows/s, {summary['readings_per_s']:,.0f} readings/s"
    )


def test_every_skab_file_replays_with_its_rows_and_its_fault_block(settings, endpoints):
    files = sorted((DATA / "skab").rglob("*.csv"))
    assert len(files) == 14

    def one(path):
        return path, replay(settings, endpoints, CsvSource.open(path))

    with ThreadPoolExecutor(7) as pool:  # each replay mostly waits for its acknowledgements
        results = dict(pool.map(one, files))
    total = 0
    for path, s in results.items():
        name = path.relative_to(DATA / "skab").as_posix()
        assert (s.bad_rows, s.produced, s.ok) == (0, s.rows * SKAB_SENSORS, True), name
        assert s.machines == [f"skab-{path.parent.name}-{path.stem}"]
        assert s.ignored_columns[:2] == ["Accelerometer2RMS", "Thermocouple"]
        total += s.rows
        if name == "anomaly-free/anomaly-free.csv":
            assert (s.rows, s.labels) == (SKAB_ANOMALY_FREE_ROWS, 0)
            continue
        rows, labelled = SKAB_LABELLED[name]
        if rows is not None:
            assert s.rows == rows, name
        else:
            assert 1_075 <= s.rows <= 1_154, name
        assert s.labels == 1, name
        assert s.label_events[0]["detail"]["rows"] == list(labelled), name
    assert sum(s.rows for p, s in results.items() if p.parent.name == "valve1") == SKAB_VALVE1_ROWS
    assert total == SKAB_TOTAL_ROWS


def test_round_trip_through_the_processor_stores_every_reading_and_the_label(settings, endpoints):
    rows, (first, last) = SKAB_LABELLED["other/1.csv"]
    summary, _ = replay_json(settings, DATA / "skab" / "other" / "1.csv")
    run_id = summary["run_id"]
    assert summary["produced"] == rows * SKAB_SENSORS and summary["labels"] == 1
    stats = Processor(settings, endpoints.broker, endpoints.database_url).run(
        idle_timeout_s=3, max_messages=summary["produced"]
    )
    assert stats.per_run == {run_id: rows * SKAB_SENSORS}
    counts = RunRegistry(endpoints.database_url).counts(run_id)
    assert (counts.stored, counts.deadlettered) == (summary["produced"], 0)
    with connect(endpoints.database_url) as conn:
        seq_ts = dict(
            conn.execute(
                "SELECT seq, ts FROM readings WHERE run_id = %s AND sensor_type = 'current' "
                "AND seq IN (%s, %s)",
                (run_id, first, last),
            ).fetchall()
        )
    # the file ends inside the fault: the event runs from its first to the last row
    ((machine, kind, start, end, detail),) = chaos_rows(endpoints.database_url, run_id)
    assert (machine, kind) == ("skab-other-1", "anomaly")
    assert (start, end) == (seq_ts[first], seq_ts[last])
    assert json.loads(detail)["rows"] == [first, last]


BAD_CSV = """\
time,temp,pres
2024-01-01 00:00:00,20.5,1.01
2024-01-01 00:00:01,twenty,1.02
2024-01-01 00:00:02,,1.03
2024-01-01 99:00:03,21.0,1.04
2024-01-01 00:00:04,21.5
2024-01-01 00:00:05,22.0,1.05
"""


def test_bad_rows_are_dead_lettered_with_their_lines_and_the_rest_is_replayed(
    settings, endpoints, tmp_path
):
    path = tmp_path / "bad.csv"
    path.write_text(BAD_CSV)
    summary, log = replay_json(
        settings, path, "--time-column", "time", "--sensor", "temp=temperature",
        "--sensor", "pres=pressure*1000", "--machine-id", "line-7",
    )  # fmt: skip
    assert (summary["rows"], summary["bad_rows"], summary["produced"]) == (6, 3, 6)
    assert [b["line"] for b in summary["bad_rows_sample"]] == [3, 5, 6]
    assert summary["null_values"] == 1 and "line 3: column 'temp'" in log

    raw = read_topic(settings, endpoints, settings.topic_raw, 6)
    readings = {(r["sensor_type"], r["seq"]): r for r in (READING.decode(m.value()) for m in raw)}
    assert len(readings) == 6
    assert readings["temperature", 1]["value"] is None  # the empty cell: a null reading
    assert readings["pressure", 1]["value"] == pytest.approx(1030.0)  # scaled
    assert readings["temperature", 2]["ts"] == ms("2024-01-01 00:00:05")  # after the bad rows

    with connect(endpoints.database_url) as conn:
        dead = conn.execute(
            'SELECT "offset", reason, key, payload FROM dead_letters WHERE run_id = %s '
            'ORDER BY "offset"',
            (summary["run_id"],),
        ).fetchall()
    assert [(o, k) for o, _, k, _ in dead] == [(3, b"line-7"), (5, b"line-7"), (6, b"line-7")]
    reasons = [r for _, r, _, _ in dead]
    assert reasons[0] == "line 3: column 'temp': 'twenty' is not a number"
    assert reasons[1].startswith("line 5: column 'time': '2024-01-01 99:00:03' is not a time")
    assert reasons[2] == "line 6: 2 fields, expected 3"
    assert dead[2][3] == b"2024-01-01 00:00:04,21.5"
    topic = read_topic(settings, endpoints, settings.topic_deadletter, 3)
    headers = sorted(dict(m.headers())["source"].decode() for m in topic)
    assert headers == ["bad.csv:3", "bad.csv:5", "bad.csv:6"]
    row = RunRegistry(endpoints.database_url).get(summary["run_id"])
    assert (row["status"], row["produced"], row["deadlettered"]) == ("completed", 6, 3)


def test_retimed_replay_starts_now_and_compresses_intervals_and_windows(settings, endpoints):
    before = time.time() * 1000
    summary, _ = replay_json(settings, NAB, "--timestamps", "now", "--speed", "60")
    after = time.time() * 1000
    first = summary["first_ts"]
    assert before <= first <= after
    assert summary["last_ts"] - first == pytest.approx((NAB_LAST - NAB_FIRST) / 60, abs=1)
    starts = [e["start_ts"] - first for e in summary["label_events"]]
    assert starts == [pytest.approx((ms(s) - NAB_FIRST) / 60, abs=1) for _, s, _ in NAB_WINDOWS]
    messages = read_topic(settings, endpoints, settings.topic_raw, NAB_ROWS)
    ts = sorted((r["seq"], r["ts"]) for r in (READING.decode(m.value()) for m in messages))
    steps = {b[1] - a[1] for a, b in itertools.pairwise(ts[:10_148])}  # before the step back
    assert steps == {5 * 60 * 1000 // 60}  # 5 minutes become 5 seconds


def test_realtime_paces_rows_to_their_retimed_event_time(settings, endpoints):
    options = ReplayOptions(timestamps="now", speed=3000, realtime=True, limit=13)
    summary = replay(settings, endpoints, CsvSource.open(NAB), options)
    assert summary.rows == 13 and summary.labels == 0  # no window in the first 13 rows
    assert summary.elapsed_s >= 12 * 300 / 3000  # 12 steps of 5 min, 3000 times faster


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["nowhere.csv"], "no such file: nowhere.csv"),
        ([NAB, "--mapping", "skab"], "mapping skab names column 'datetime', which the file"),
        ([NAB, "--sensor", "Value=temperature"], "names column 'Value', which the file"),
        ([NAB, "--mapping", "nothing"], "no mapping 'nothing'"),
    ],
)
def test_errors_are_one_line_before_anything_is_produced(tmp_path, args, complaint):
    # a state dir with no stack: the error comes before the stack is even started
    proc = workbench(isolated_settings(tmp_path / "state"), "replay", *map(str, args), timeout=30)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("workbench: error: ") and complaint in lines[-1]
    assert "Traceback" not in proc.stderr and not (tmp_path / "state").exists()


def test_a_file_with_unknown_columns_gets_a_list_of_them_and_how_to_map_them(tmp_path):
    path = tmp_path / "plant.csv"
    path.write_text("stamp|flow_lpm\n2024-01-01T00:00:00|3.5\n")
    with pytest.raises(MappingError, match=r"columns \('stamp', 'flow_lpm'\); give --mapping"):
        CsvSource.open(path)
    src = CsvSource.open(path, overrides=Overrides(time_column="stamp", sensors=["flow_lpm=flow"]))
    assert src.mapping.separator == "|" and src.machine_id == "plant"
    assert [r.values for r in src.rows()] == [[3.5]]


def test_nab_columns_separated_by_semicolons_are_recognised(tmp_path):
    path = tmp_path / "nab_semicolon.csv"
    path.write_text("timestamp;value\n2014-01-01 00:00:00;3.5\n2014-01-01 00:05:00;4.0\n")
    src = CsvSource.open(path, overrides=Overrides(labels_file=""))
    assert src.mapping.name == "nab" and src.mapping.separator == ";"
    assert [r.values for r in src.rows()] == [[3.5], [4.0]]


def test_absurd_lines_and_fields_are_one_line_errors_in_bounded_memory(tmp_path, monkeypatch):
    from workbench.simulator import csvsource

    monkeypatch.setattr(csvsource, "MAX_LINE", 4096)  # (1 MiB in use; a small file here)
    one_line = tmp_path / "sparse.csv"  # as a sparse or binary file reads: no newline at all
    one_line.write_bytes(b"\x00" * 10_000)
    with pytest.raises(MappingError, match="header line is longer than 4096"):
        CsvSource.open(one_line)
    long_row = tmp_path / "long_row.csv"
    long_row.write_text("timestamp,value\n2014-01-01 00:00:00,1\n" + "9" * 10_000 + "\n")
    src = CsvSource.open(long_row, overrides=Overrides(labels_file=""))
    with pytest.raises(MappingError, match="line 3 is longer than 4096"):
        list(src.rows())
    big_field = tmp_path / "big_field.csv"  # over csv's field limit (128 KiB), in one line
    big_field.write_text('timestamp,value\n2014-01-01 00:00:00,"' + "9" * 200_000 + '"\n')
    monkeypatch.setattr(csvsource, "MAX_LINE", 1 << 20)
    src = CsvSource.open(big_field, overrides=Overrides(labels_file=""))
    with pytest.raises(MappingError, match="line 2: field larger than field limit"):
        list(src.rows())


def test_mappings_reject_typos_and_colliding_sensor_types():
    with pytest.raises(MappingError, match="unknown key"):
        mapping_from_toml("x", {"time": {"column": "t", "fromat": "iso"}, "sensors": {"a": "flow"}})
    with pytest.raises(MappingError, match="both map to temperature"):
        load_mapping("skab").apply(Overrides(sensors=["Temperature=temperature",
                                                      "Thermocouple=temperature"]))  # fmt: skip


def test_nab_native_windows_file_and_label_blocks(tmp_path):
    native = tmp_path / "combined_windows.json"
    native.write_text(json.dumps({"realKnownCause/machine_temperature_system_failure.csv": [
        ["2013-12-10 06:25:00.000000", "2013-12-12 05:35:00.000000"]]}))  # fmt: skip
    (window,) = load_windows(native, NAB)
    assert (window.start_ts, window.end_ts) == (ms(NAB_WINDOWS[0][1]), ms(NAB_WINDOWS[0][2]))
    blocks = LabelBlocks()
    for i, (machine, label) in enumerate([("a", 1), ("b", 1), ("a", 1), ("b", 0), ("a", 0)]):
        closed = blocks.update(machine, bool(label), ts=i, row=i, line=i + 2, seq=i)
        if closed is not None:
            assert (closed.machine_id, closed.rows, closed.count) == (
                ("b", (1, 1), 1) if i == 3 else ("a", (0, 2), 2)
            )  # fmt: skip


def test_values_outside_their_types_range_are_counted_and_said_loudly(settings, tmp_path):
    """A series of unknown unit mapped to a physical type (NAB's taxi passengers called
    temperature) is mostly dead letters: the replay says so, and --strict fails."""
    path = tmp_path / "taxi.csv"
    lines = [f"2014-07-01 00:{m // 60:02d}:{m % 60:02d},{10_000 + m}" for m in range(100)]
    path.write_text("timestamp,value\n" + "\n".join(lines[:90]) + "\n"
                    + "\n".join(f"{line.split(',')[0]},{20 + i}" for i, line in
                                enumerate(lines[90:])) + "\n")  # fmt: skip
    as_temperature = ("--mapping", "nab", "--sensor", "value=temperature")
    summary, log = replay_json(settings, path, *as_temperature)
    assert summary["out_of_range"] == {"value": 90} and summary["deadlettered"] == 90
    assert summary["warnings"] and "90 of the file's readings (90%)" in summary["warnings"][0]
    assert "--sensor value=generic" in summary["warnings"][1]
    assert "is it really temperature?" in log
    strict = workbench(settings, "replay", str(path), *as_temperature, "--strict", "--json")
    assert strict.returncode == 1 and json.loads(strict.stdout)["deadlettered"] == 90
    # the nab mapping itself calls it a value of unknown unit: nothing out of range
    summary, _ = replay_json(settings, path)
    assert summary["sensors"] == {"value": "generic"}
    assert (summary["deadlettered"], summary["warnings"]) == (0, [])
