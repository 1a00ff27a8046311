"""The PostgreSQL sink against the real embedded PostgreSQL."""

import uuid

import psycopg
import pytest
from conftest import assert_incremental_checkpoints

from workbench.processor.validate import Reading
from workbench.runs import RunRegistry
from workbench.sinks.postgres import PostgresSink, connect, create_schema


@pytest.fixture
def run_id():
    return f"test-{uuid.uuid4().hex[:8]}"


def rows(run_id, n, value=1.5):
    return [
        Reading(run_id, f"m-{i % 3}", "temperature", i, 1_767_225_600_000 + i, value, 0)
        for i in range(n)
    ]


def test_batch_lands_with_event_time_and_nulls(endpoints, settings, run_id):
    batch = [*rows(run_id, 100), Reading(run_id, "m-9", "pressure", 0, 1767225600123, None, 7)]
    with PostgresSink(endpoints.database_url) as sink:
        result = sink.write(batch)
    assert (result.readings_inserted, result.readings_duplicate) == (101, 0)
    with connect(endpoints.database_url) as conn:
        ts, value, status = conn.execute(
            "SELECT extract(epoch FROM ts) * 1000, value, status_code FROM readings "
            "WHERE run_id = %s AND machine_id = 'm-9'",
            (run_id,),
        ).fetchone()
    assert (int(ts), value, status) == (1_767_225_600_123, None, 7)


def test_writing_the_same_batch_twice_changes_nothing(endpoints, settings, run_id):
    batch = rows(run_id, 500)
    dead = [("raw", 0, 17, run_id, "not Avro", b"k", b"\x00")]
    with PostgresSink(endpoints.database_url) as sink:
        first = sink.write(batch, dead)
        second = sink.write(batch + batch[:10], dead)
    assert (first.readings_inserted, first.dead_letters_inserted) == (500, 1)
    assert (second.readings_inserted, second.readings_duplicate, second.dead_letters_inserted) == (
        0,
        510,
        0,
    )
    counts = RunRegistry(endpoints.database_url).counts(run_id)
    assert (counts.stored, counts.deadlettered) == (500, 1)


def test_a_failed_batch_leaves_nothing_behind(endpoints, settings, run_id):
    # the readings go in first; a dead letter without its reason then fails the batch
    no_reason = (settings.topic_raw, 0, 1, run_id, None, b"k", b"v")
    with PostgresSink(endpoints.database_url) as sink:
        with pytest.raises(Exception, match="null value"):
            sink.write(rows(run_id, 10), dead_letters=[no_reason])
        # the connection is usable again and the partial batch was rolled back
        assert sink.write(rows(run_id, 3)).readings_inserted == 3
    assert RunRegistry(endpoints.database_url).counts(run_id).stored == 3


def test_a_reading_the_database_refuses_is_a_dead_letter_and_the_rest_is_stored(endpoints, run_id):
    bad = [*rows(run_id, 10), Reading(run_id, None, "temperature", 99, 0, 1.0, 0)]  # NULL key
    with PostgresSink(endpoints.database_url) as sink:
        result = sink.write(bad)
    assert (result.readings_inserted, result.readings_duplicate, result.dead_letters_inserted) == (
        10,
        0,
        1,
    )
    with connect(endpoints.database_url) as conn:
        topic, reason = conn.execute(
            "SELECT topic, reason FROM dead_letters WHERE run_id = %s", (run_id,)
        ).fetchone()
    assert topic == "database:readings" and "null value" in reason, reason


def test_schema_creation_is_idempotent(endpoints):
    create_schema(endpoints.database_url)
    create_schema(endpoints.database_url)
    with connect(endpoints.database_url) as conn:
        tables = {
            r[0]
            for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
    assert {"runs", "readings", "dead_letters"} <= tables


def test_run_registry_records_parameters_and_outcome(endpoints, run_id):
    create_schema(endpoints.database_url)
    reg = RunRegistry(endpoints.database_url)
    reg.start(run_id, "run", 42, {"machines": 3})
    assert reg.get(run_id)["status"] == "running"
    reg.finish(run_id, "completed", produced=10, stored=10, deadlettered=0)
    row = reg.get(run_id)
    assert (row["seed"], row["params"], row["status"], row["produced"]) == (
        42,
        {"machines": 3},
        "completed",
        10,
    )
    assert row["finished_at"] >= row["started_at"]
    reg.close()


def test_time_columns_have_brin_indexes(endpoints):
    create_schema(endpoints.database_url)
    with connect(endpoints.database_url) as conn:
        found = dict(conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE indexname LIKE '%brin'"
        ).fetchall())  # fmt: skip
    assert "USING brin (ts)" in found["readings_ts_brin"]
    assert "USING brin (window_start)" in found["window_stats_start_brin"]


def test_the_reader_role_may_select_and_nothing_else(endpoints, run_id):
    url = endpoints.database_url
    create_schema(url, reader_password="s3cret-reader")
    create_schema(url, reader_password="s3cret-reader")  # idempotent, role included
    with PostgresSink(url) as sink:
        sink.write(rows(run_id, 3))
    host = url.split("@", 1)[1]
    reader_url = f"postgresql://workbench_reader:s3cret-reader@{host}"
    with connect(reader_url) as conn:
        count = conn.execute("SELECT count(*) FROM readings WHERE run_id = %s", (run_id,))
        assert count.fetchone()[0] == 3
        for statement in (
            "DELETE FROM readings",
            "INSERT INTO runs (run_id, kind, params) VALUES ('x', 'run', '{}')",
            "CREATE TABLE sneaky (x int)",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
            conn.rollback()


def test_checkpoints_are_stored_incrementally(endpoints, run_id):
    with PostgresSink(endpoints.database_url) as sink:
        assert_incremental_checkpoints(sink, run_id)
