"""Column batches into both sinks: the binary COPY encoding (decoded back here, no server),
the merge rules stated once, every table's round trip in PostgreSQL and SQLite, the direct
COPY path and its fallback, and all-or-nothing batches."""

from __future__ import annotations

import datetime as dt
import json
import logging
import struct
import uuid

import numpy as np
import pyarrow as pa
import pytest
import sqlalchemy as sa

from workbench.sinks import engine, open_sink, pgcopy, schema
from workbench.sinks.columns import ROW_LAYOUTS, WriteBatch, kind_of, prepare
from workbench.sinks.columns import encode as encode_column
from workbench.sinks.merge import RULES, insert_sql, latest
from workbench.sinks.pgcopy import encode
from workbench.sinks.postgres import connect, create_schema

T0 = 1_767_225_600_000  # 2026-01-01T00:00Z
SENSORS = ["temperature", "vibration", "pressure", "battery"]
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def objects(values) -> np.ndarray:
    """A one-dimensional object array (of texts, bytes, JSON values or None)."""
    values = list(values)
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = v
    return out


# -- a batch of every table, with NULLs of every kind -------------------------------------


def readings(run: str, seqs, machine: str = "m-1", value: float = 20.5) -> dict:
    seqs = np.asarray(seqs, dtype=np.int64)
    n = len(seqs)
    values = value + seqs * 0.25
    values[seqs % 7 == 3] = np.nan  # a dead sensor sends null
    return {
        "run_id": objects([run] * n),
        "machine_id": objects([machine] * n),
        "sensor_type": objects(SENSORS[s % 4] for s in seqs.tolist()),
        "seq": seqs,
        "ts": T0 + seqs * 1000,
        "value": values,
        "status_code": (seqs % 3).astype(np.int32),
        "late": seqs % 5 == 0,
        "score": np.where(seqs % 2 == 0, 0.5, np.nan),
        "rolling_1": values,
        "rolling_2": np.full(n, 1e-300),
    }


def full_batch(run: str) -> WriteBatch:
    return WriteBatch(
        readings=readings(run, range(40)),
        dead_letters={
            "topic": objects([f"raw-{run}"] * 3),
            "partition": np.array([0, 1, 1], np.int32),
            "offset": np.array([7, 8, 9]),
            "run_id": objects([run, "live", run]),
            "reason": objects(["undecodable", "unknown sensor ü", ""]),
            "key": objects([b"m-1", None, b""]),
            "payload": objects([b"\x00\xff\x00", b"x", b"\x00"]),  # trailing NUL bytes
        },
        window_stats={
            "run_id": objects([run] * 3),
            "machine_id": objects(["m-1", "m-1", "machine-22"]),
            "sensor_type": objects(["temperature"] * 3),
            "width_s": np.array([60, 300, 60], np.int32),
            "window_start": np.array([T0, T0, T0 + 60_000]),
            "window_end": np.array([T0 + 60_000, T0 + 300_000, T0 + 120_000]),
            "count": np.array([50, 250, 0], np.int32),
            "nulls": np.array([1, 3, 2], np.int32),
            "late": np.array([0, 2, 0], np.int32),
            "mean": np.array([20.0, 20.5, np.nan]),
            "min": np.array([19.0, -np.inf, np.nan]),
            "max": np.array([21.0, np.inf, np.nan]),
            "stddev": np.array([0.5, 0.25, np.nan]),
            "quantile": np.array([20.9, 21.0, np.nan]),
            "final": np.array([True, False, True]),
            "revision": np.array([0, -1, 2], np.int32),
        },
        alerts={
            "run_id": objects([run, run]),
            "alert_id": objects(["hot/m-1/temperature/0", "flat/m-2/-/0"]),
            "rule": objects(["hot", "flat"]),
            "kind": objects(["threshold", "flatline"]),
            "severity": objects(["critical", "warning"]),
            "state": objects(["closed", "open"]),
            "machine_id": objects(["m-1", "m-2"]),
            "sensor_type": objects(["temperature", None]),
            "start_ts": np.array([T0, T0 + 5000]),
            "opened_ts": np.array([T0 + 3000, T0 + 9000]),
            "updated_ts": np.array([T0 + 20_000, T0 + 9000]),
            "closed_ts": np.array([T0 + 20_000, np.nan]),  # NaN: NULL in a time column too
            "peak": np.array([31.5, np.nan]),
            "breaches": np.array([6, 3], np.int32),
            "detects": objects([["failure", "spike"], []]),
        },
        sensor_stats={
            "run_id": objects([run]),
            "machine_id": objects(["m-1"]),
            "sensor_type": objects(["temperature"]),
            "n": np.array([40]),
            "nulls": np.array([5]),
            "late": np.array([8]),
            "mean": np.array([25.0]),
            "std": np.array([np.nan]),
            "ewma": np.array([24.5]),
            "ewstd": np.array([0.1]),
            "quantile": np.array([29.0]),
            "baseline": np.array([25.0]),
            "score": np.array([0.3]),
            "drifts": np.array([1], np.int32),
            "last_ts": np.array([T0 + 39_000]),
        },
        chaos_events={
            "run_id": objects([run]),
            "event_id": np.array([1]),
            "kind": objects(["spike"]),
            "machine_id": objects(["m-1"]),
            "sensor_type": objects([None]),
            "start_ts": np.array([T0 - 86_400_000 * 365 * 31]),  # before 2000: negative in COPY
            "end_ts": np.array([T0 + 1000]),
            "magnitude": np.array([25.0]),
            "source": objects(["simulator"]),
            "detail": objects(['{"x": 1}']),
        },
        processor_state={
            "consumer_group": objects([f"g-{run}"]),
            "topic": objects(["raw"]),
            "partition": np.array([3], np.int32),
            "next_offset": np.array([41]),
            "state": objects([b"\x93NUMPY\x00"]),
        },
        processor_state_segments={
            "consumer_group": objects([f"g-{run}"] * 2),
            "topic": objects(["raw"] * 2),
            "partition": np.array([3, 3], np.int32),
            "segment": np.array([0, 7]),
            "data": objects([b"(\xb5/\xfd", b""]),
        },
    )


def expected(table: str, columns: dict) -> list[tuple]:
    """The rows a table should hold: Python values, None for NULL, times in epoch ms."""
    prepared = prepare(table, columns)
    values = []
    for col in prepared.columns.values():
        vals = col.python()
        if col.kind == "jsonb":
            vals = [None if v is None else json.loads(v) for v in vals]
        values.append(vals)
    return sorted(zip(*values, strict=True), key=repr)


def stored(url: str, table: str, names, where=None) -> list[tuple]:
    t = schema.metadata.tables[table]
    eng = engine(url)
    try:
        with eng.connect() as conn:
            query = sa.select(*[t.c[n] for n in names])
            if where is not None:
                query = query.where(where(t))
            rows = conn.execute(query).all()
    finally:
        eng.dispose()
    out = []
    for r in rows:
        out.append(tuple(_plain(v) for v in r))
    return sorted(out, key=repr)


def _plain(v):
    if isinstance(v, dt.datetime):
        v = v if v.tzinfo else v.replace(tzinfo=dt.UTC)
        return (v - EPOCH) // dt.timedelta(milliseconds=1)
    if isinstance(v, memoryview):
        return bytes(v)
    return v


def of_run(table: str, run: str):
    """A filter on the rows ``full_batch(run)`` wrote to ``table``."""
    if table.startswith("processor_state"):
        return lambda t: t.c.consumer_group == f"g-{run}"
    if table == "dead_letters":
        return lambda t: t.c.topic == f"raw-{run}"
    return lambda t: t.c.run_id == run


@pytest.fixture(params=["postgresql", "sqlite"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'edge.db'}"
    database = request.getfixturevalue("endpoints").database_url
    create_schema(database)
    return database


@pytest.fixture
def run():
    return f"cols-{uuid.uuid4().hex[:8]}"


# -- no server: the encoding and the rules -------------------------------------------------


def decode_copy(data: bytes, names: list[str], table: str) -> list[tuple]:
    """PostgreSQL's binary COPY format, read back independently of the encoder."""
    t = schema.metadata.tables[table]
    assert data[:11] == b"PGCOPY\n\xff\r\n\x00" and data[11:19] == bytes(8)
    pos, rows = 19, []
    while True:
        (count,) = struct.unpack_from(">h", data, pos)
        pos += 2
        if count == -1:
            assert pos == len(data)
            return rows
        assert count == len(names)
        row = {}
        for name in names:
            (length,) = struct.unpack_from(">i", data, pos)
            pos += 4
            raw, pos = (None, pos) if length < 0 else (data[pos : pos + length], pos + length)
            row[name] = None if raw is None else _binary(kind_of(t.c[name]), raw)
        rows.append(tuple(row[c.name] for c in t.columns if c.name in row))


def _binary(kind: str, raw: bytes):
    if kind == "timestamptz":
        return struct.unpack(">q", raw)[0] // 1000 + 946_684_800_000
    fmt = {"int8": ">q", "int4": ">i", "float8": ">d", "bool": ">?"}.get(kind)
    if fmt:
        return struct.unpack(fmt, raw)[0]
    if kind == "jsonb":
        assert raw[:1] == b"\x01"
        return json.loads(raw[1:])
    return raw if kind == "bytea" else raw.decode()


@pytest.mark.parametrize("row_by_row", [False, True], ids=["layouts", "row-by-row"])
@pytest.mark.parametrize("table", ROW_LAYOUTS.keys())
def test_binary_copy_decodes_to_the_columns_of_every_table(table, row_by_row, monkeypatch):
    if row_by_row:  # no table of distinct texts is small enough: every row on its own
        monkeypatch.setattr(pgcopy, "MAX_TABLE_BYTES", 0)
    columns = getattr(full_batch("r-ü"), table)
    names, data = encode(prepare(table, columns))
    assert len(data) == 3 if row_by_row else len(data) >= 3
    rows = decode_copy(b"".join(data), names, table)
    assert sorted(rows, key=repr) == expected(table, columns)


@pytest.mark.parametrize(
    ("n", "words", "pieces"),
    [
        (20_000, ["a", "bb", "ü"], range(20, 60)),  # a structured array per layout
        (300, ["", "a", "bb", "ccc", "dddd", "ü", "машина"], [3]),  # too many: row by row
    ],
    ids=["layouts", "row-by-row"],
)
def test_binary_copy_of_many_row_layouts_keeps_every_row(n, words, pieces):
    rng = np.random.default_rng(3)
    cols = readings("run", np.arange(n))
    cols["machine_id"] = objects(rng.choice(words, n).tolist())
    cols["score"][rng.random(n) < 0.3] = np.nan
    names, data = encode(prepare("readings", cols))
    assert len(data) in pieces  # header, one piece per layout or all rows, trailer
    rows = decode_copy(b"".join(data), names, "readings")
    assert sorted(rows, key=repr) == expected("readings", cols)


@pytest.mark.parametrize(
    "column",
    [
        np.array([1.0, np.nan, 3.0, np.nan]),
        np.ma.masked_array([1, 0, 3, 0], mask=[False, True, False, True]),
        pa.array([1, None, 3, None], pa.int64()),
        [1, None, 3, None],
    ],
    ids=["nan", "masked", "arrow", "objects"],
)
def test_nulls_arrive_in_every_supported_form(column):
    assert encode_column("timestamptz", column).python() == [1, None, 3, None]
    assert encode_column("int4", column).python() == [1, None, 3, None]
    assert encode_column("float8", column).python() == [1.0, None, 3.0, None]
    assert encode_column("int8", column).null.tolist() == [False, True, False, True]
    text = pa.array(["a", None, "b", "a"]).dictionary_encode()
    assert encode_column("text", text).python() == ["a", None, "b", "a"]


def test_text_from_python_objects_is_coded_without_arrow():
    """The processor's path: object arrays, coded by first appearance; None and NaN are NULL."""
    col = encode_column("text", objects(["b", None, "a", float("nan"), "b"]))
    assert col.python() == ["b", None, "a", None, "b"]
    assert col.values.tolist() == [0, -1, 1, -1, 0] and col.uniques == (b"b", b"a")
    assert encode_column("bytea", objects([b"\x00", None])).python() == [b"\x00", None]
    assert encode_column("jsonb", objects([["failure"], None])).python() == ['["failure"]', None]


def test_a_dictionary_with_repeated_values_gives_equal_codes_for_equal_values():
    repeated = pa.DictionaryArray.from_arrays(pa.array([0, 1, 2, None]), pa.array(["x", "y", "x"]))
    col = encode_column("text", repeated)
    assert col.python() == ["x", "y", "x", None]
    assert col.values[0] == col.values[2]


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        ({"nope": np.zeros(3)}, "readings: no column named nope"),
        ({"machine_id": None}, "readings: missing column machine_id"),
        ({"seq": np.arange(2)}, "readings.seq: 2 values, expected 3"),
        ({"seq": np.array([1.5, 2.0, 3.0])}, "readings.seq: int8 values with a fraction"),
        ({"late": objects(["yes"] * 3)}, "readings.late: "),
        ({"machine_id": objects(["m-1", 5, "m-1"])}, "readings.machine_id: expected text, got int"),
        ({"value": objects([1.0, "x", None])}, "readings.value: expected float8 values, got str"),
    ],
)
def test_a_bad_batch_is_refused_naming_the_column(changes, complaint):
    columns = {k: v for k, v in (readings("r", range(3)) | changes).items() if v is not None}
    with pytest.raises(ValueError, match=complaint):
        prepare("readings", columns)


def test_latest_keeps_per_key_the_newest_and_the_last_of_equals():
    rng = np.random.default_rng(7)
    n = 2000
    machine = rng.choice(["m-1", "m-2", "m-3"], n)
    revision = rng.integers(-1, 3, n).astype(np.int32)
    start = T0 + 60_000 * rng.integers(0, 5, n)
    cols = {"run_id": objects(["r"] * n), "machine_id": objects(machine.tolist()),
            "sensor_type": objects(["temperature"] * n), "width_s": np.full(n, 60, np.int32),
            "window_start": start, "window_end": start + 60_000,
            "count": np.arange(n, dtype=np.int32),
            "nulls": np.zeros(n, np.int32), "late": np.zeros(n, np.int32),
            "final": revision >= 0, "revision": revision}  # fmt: skip
    picked = latest(RULES["window_stats"], prepare("window_stats", cols))
    reference = {}
    for i in range(n):  # the rule in plain Python: a greater or equal revision replaces
        key = (machine[i], start[i])
        if key not in reference or revision[i] >= revision[reference[key]]:
            reference[key] = i
    assert sorted(picked.columns["count"].values.tolist()) == sorted(reference.values())
    # a checkpoint: the last written wins
    state = {"consumer_group": objects(["g", "g", "h"]), "topic": objects(["raw"] * 3),
             "partition": np.array([0, 0, 0], np.int32), "next_offset": np.array([5, 3, 9]),
             "state": objects([b"a", b"b", b"c"])}  # fmt: skip
    kept = latest(RULES["processor_state"], prepare("processor_state", state))
    assert sorted(kept.columns["next_offset"].values.tolist()) == [3, 9]


def test_the_rules_are_one_statement_text_for_both_databases():
    rule = RULES["window_stats"]
    sql = insert_sql(rule, ["run_id", "revision"], "VALUES (?, ?)")
    assert sql.endswith('WHERE excluded."revision" >= stored."revision"')
    assert '"emitted_at" = excluded."emitted_at"' in sql and '"run_id" = excluded' not in sql
    alerts = insert_sql(RULES["alerts"], ["run_id"], "SELECT 1")
    assert '"state" = excluded."state"' in alerts and '"opened_ts" = excluded' not in alerts
    assert insert_sql(RULES["readings"], ["run_id"], "SELECT 1").endswith("DO NOTHING")
    assert "WHERE" not in insert_sql(RULES["processor_state"], ["topic"], "SELECT 1")


# -- both databases ------------------------------------------------------------------------


def test_every_table_round_trips_through_both_sinks(url, run):
    batch = full_batch(run)
    with open_sink(url) as sink:
        result = sink.write(batch)
    assert (result.readings_inserted, result.readings_duplicate) == (40, 0)
    assert result.dead_letters_inserted == 3
    assert (result.windows_written, result.alerts_written) == (3, 2)
    for table, columns in batch.tables():
        names = list(prepare(table, columns).columns)
        assert stored(url, table, names, of_run(table, run)) == expected(table, columns), table


def test_dead_letters_of_two_runs_at_one_broker_position_are_both_kept(url, run):
    """A broker that keeps topics in memory numbers offsets from 0 again after a restart:
    the same (topic, partition, offset) in another run is another message."""

    def dead(run_id: str) -> WriteBatch:
        return WriteBatch.from_rows(dead_letters=[(f"raw-{run}", 0, 5, run_id, "bad", None,
                                                   b"x")])  # fmt: skip

    with open_sink(url) as sink:
        assert sink.write(dead(f"{run}-a")).dead_letters_inserted == 1
        assert sink.write(dead(f"{run}-b")).dead_letters_inserted == 1
        assert sink.write(dead(f"{run}-a")).dead_letters_inserted == 0  # a redelivery


def test_the_legacy_row_tuples_still_write(url, run):
    row = (run, "m-1", "pressure", 1, T0, None, 0, True, None, 2.0, 2.0)
    with open_sink(url) as sink:
        assert sink.write([row]).readings_inserted == 1
        assert sink.write(readings=[row]).readings_duplicate == 1
        assert sink.write_chaos_events([(run, 9, "loss", "m-1", None, T0, T0 + 1, None,
                                         "simulator", None)]) == 1  # fmt: skip
    assert stored(url, "readings", ["value", "late", "ts"], of_run("readings", run)) == [
        (None, True, T0)
    ]


def test_the_merge_rules_hold_in_both_databases(url, run):
    def window(revision, count):
        return {"run_id": objects([run]), "machine_id": objects(["m-1"]),
                "sensor_type": objects(["temperature"]), "width_s": np.array([60], np.int32),
                "window_start": np.array([T0]), "window_end": np.array([T0 + 60_000]),
                "count": np.array([count], np.int32), "nulls": np.zeros(1, np.int32),
                "late": np.zeros(1, np.int32), "final": np.array([revision >= 0]),
                "revision": np.array([revision], np.int32)}  # fmt: skip

    def windows():
        return stored(url, "window_stats", ["count", "revision"], of_run("window_stats", run))

    with open_sink(url) as sink:
        sink.write(WriteBatch(window_stats=window(-1, 10)))
        sink.write(WriteBatch(window_stats=window(-1, 20)))
        assert windows() == [(20, -1)]
        sink.write(WriteBatch(window_stats=window(0, 30)))
        assert sink.write(WriteBatch(window_stats=window(-1, 25))).windows_written == 0
        assert windows() == [(30, 0)]  # a provisional result never undoes a final one
        two = {k: np.concatenate([window(2, 32)[k], window(1, 31)[k]]) for k in window(0, 0)}
        sink.write(WriteBatch(window_stats=two))  # in one batch, the newest wins
        assert windows() == [(32, 2)]

        alerts = full_batch(run).alerts
        sink.write(WriteBatch(alerts=alerts))
        older = dict(alerts, updated_ts=alerts["updated_ts"] - 1000, state=objects(["open"] * 2),
                     opened_ts=alerts["opened_ts"] + 1)  # fmt: skip
        assert sink.write(WriteBatch(alerts=older)).alerts_written == 0
        newer = dict(older, updated_ts=alerts["updated_ts"] + 1000)
        assert sink.write(WriteBatch(alerts=newer)).alerts_written == 2
        got = stored(url, "alerts", ["state", "opened_ts"], of_run("alerts", run))
        assert got == sorted([("open", T0 + 3000), ("open", T0 + 9000)])  # the opening stays


def test_direct_copy_then_the_fallback_for_rows_stored_already(endpoints, run, caplog):
    url = endpoints.database_url
    create_schema(url)
    caplog.set_level(logging.DEBUG, "workbench.sinks.postgres")
    with open_sink(url) as sink:
        first = sink.write(WriteBatch(readings=readings(run, range(100))))
        assert (first.readings_inserted, first.readings_duplicate) == (100, 0)
        assert "stored already" not in caplog.text  # the direct COPY took them
        again = sink.write(WriteBatch(readings=readings(run, range(100))))
        assert (again.readings_inserted, again.readings_duplicate) == (0, 100)
        assert "stored already" in caplog.text
        mixed = sink.write(WriteBatch(readings=readings(run, range(90, 130))))
        assert (mixed.readings_inserted, mixed.readings_duplicate) == (30, 10)
        inside = readings(run, [200, 201, 200])  # a duplicate inside one batch
        assert sink.write(WriteBatch(readings=inside)).readings_inserted == 2
    seqs = [seq for (seq,) in stored(url, "readings", ["seq"], of_run("readings", run))]
    assert sorted(seqs) == [*range(130), 200, 201]
    # the rows the fallback stored are the batch's, not a default
    assert stored(url, "readings", ["seq", "value"], lambda t: (t.c.run_id == run)
                  & (t.c.seq == 125)) == [(125, 20.5 + 125 * 0.25)]  # fmt: skip


def test_a_failing_batch_stores_nothing_of_any_table(url, run):
    bad = full_batch(run).window_stats | {"count": np.array([1, None, 3], dtype=object)}
    with open_sink(url) as sink:
        sink.write(WriteBatch(readings=readings(run, range(10))))
        batch = WriteBatch(readings=readings(run, range(5, 20)), alerts=full_batch(run).alerts,
                           window_stats=bad)  # fmt: skip
        with pytest.raises(Exception, match=r"(?i)not null|null value"):
            sink.write(batch)
        # the connection is usable again; the readings (fallback path) and alerts are gone
        assert sink.write(WriteBatch(readings=readings(run, [99]))).readings_inserted == 1
    assert len(stored(url, "readings", ["seq"], of_run("readings", run))) == 11
    assert stored(url, "alerts", ["alert_id"], of_run("alerts", run)) == []
    assert stored(url, "window_stats", ["count"], of_run("window_stats", run)) == []


@pytest.fixture
def new_database(endpoints):
    """The URL of a database of its own on the test server, dropped afterwards."""
    name = f"migrate_{uuid.uuid4().hex[:8]}"
    with connect(endpoints.database_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield endpoints.database_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with connect(endpoints.database_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_the_schema_migration_puts_the_run_into_the_dead_letters_key(new_database):
    create_schema(new_database)
    with connect(new_database) as conn:  # the key an earlier version made
        conn.execute(
            "ALTER TABLE dead_letters DROP CONSTRAINT dead_letters_pkey, ADD CONSTRAINT "
            'dead_letters_pkey PRIMARY KEY (topic, partition, "offset")'
        )
    create_schema(new_database)
    with connect(new_database) as conn:
        (key,) = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'dead_letters_pkey'"
        ).fetchone()
    assert '(run_id, topic, partition, "offset")' in key


def test_the_schema_migration_rekeys_an_older_readings_table_once(new_database, caplog):
    url = new_database
    create_schema(url)
    with connect(url) as conn:  # the keys and indexes an earlier version made
        conn.execute(
            "ALTER TABLE readings DROP CONSTRAINT readings_pkey, ADD CONSTRAINT "
            "readings_pkey PRIMARY KEY (run_id, machine_id, sensor_type, seq, ts)"
        )
        conn.execute("CREATE INDEX readings_machine_ts ON readings (machine_id, ts)")
    with open_sink(url) as sink:
        sink.write(WriteBatch(readings=readings("old", range(50))))
    caplog.set_level(logging.INFO, "workbench.sinks.postgres")
    create_schema(url)
    assert caplog.text.count("schema change") == 2
    with connect(url) as conn:
        indexes = dict(conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'readings'"
        ).fetchall())  # fmt: skip
    assert sorted(indexes) == ["readings_pkey", "readings_ts_brin"]
    assert "(run_id, machine_id, sensor_type, ts, seq)" in indexes["readings_pkey"]
    caplog.clear()
    create_schema(url)  # idempotent: nothing more to change
    assert "schema change" not in caplog.text
    with open_sink(url) as sink:  # the rows stayed, and the new key refuses them again
        again = sink.write(WriteBatch(readings=readings("old", range(40, 60))))
    assert (again.readings_inserted, again.readings_duplicate) == (10, 10)
