"""`workbench tail`: the topics decoded, against the real shared stack.

One module fixture runs the pipeline twice into topics of its own: run A with malformed
readings and spikes (so the dead-letter, alert and chaos topics have messages) and a
small clean run B. The tests read those topics with the `workbench tail` command, and
compare what it prints with the messages themselves.
"""

from __future__ import annotations

import json
import selectors
import signal
import subprocess
import time
import uuid

import pytest
from conftest import WORKBENCH, cli_env, own_settings, read_topic, readings_in
from test_cli import workbench

from workbench import kafka
from workbench.schemas import CleanReadingEncoder, ReadingEncoder, codec_for, sensor_types
from workbench.tail import PEEK


def run_id(name: str) -> str:
    return f"tail-{name}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def pipeline(stack):
    """Topics of their own with run A (chaos) and run B (1 machine, 5 s) processed into
    them, clean readings published one Avro message each."""
    settings = own_settings(*stack, publish_clean="reading")
    runs = {"a": run_id("a"), "b": run_id("b")}
    proc = workbench(settings, "run", "--machines", "2", "--duration", "60", "--seed", "0",
                     "--chaos", "malformed=0.02,spike=0.02", "--run-id", runs["a"],
                     "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary_a = json.loads(proc.stdout)
    assert summary_a["deadlettered"] > 0 and summary_a["alerts"] > 0
    proc = workbench(settings, "run", "--machines", "1", "--duration", "5", "--run-id",
                     runs["b"], "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary_a["raw_messages"] = summary_a["sent"] + json.loads(proc.stdout)["sent"]
    return settings, stack[1], runs, summary_a


def tail(settings, *args):
    proc = workbench(settings, "tail", *args, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def tail_json(settings, *args):
    return [json.loads(line) for line in tail(settings, *args, "--json")]


def produce(settings, endpoints, topic, messages):
    """(key, value, headers) messages to ``topic``, acknowledged."""
    producer = kafka.make_producer(endpoints.broker)
    for key, value, headers in messages:
        producer.produce(topic, key=key, value=value, headers=headers)
    assert producer.flush(30) == 0


def test_raw_from_beginning_shows_the_readings_decoded(pipeline):
    settings, endpoints, runs, summary = pipeline
    n = readings_in(1, 5)
    got = tail_json(settings, "raw", "--from-beginning", "--run", runs["b"], "--max", str(n))
    assert len(got) == n  # --max ended it, with status 0
    # each line is the message at its position, decoded
    messages = {(m.partition(), m.offset()): m for m in read_topic(
        settings, endpoints, settings.topic_raw, summary["raw_messages"])}  # fmt: skip
    for record in got:
        msg = messages[record["partition"], record["offset"]]
        assert dict(msg.headers())["run_id"].decode() == runs["b"] == record["run_id"]
        body = {k: record[k] for k in ReadingEncoder.FIELDS}
        assert body == codec_for("reading").decode(msg.value())
    # the whole run: every sensor's readings, each once
    assert {r["machine_id"] for r in got} == {"m-0001"}
    assert len({(r["sensor_type"], r["seq"]) for r in got}) == n


def test_filters_keep_only_the_machine_sensor_and_run_asked_for(pipeline):
    settings, _, runs, _ = pipeline
    got = tail_json(settings, "raw", "--from-beginning", "--machine", "m-0002", "--sensor",
                    "pressure", "--max", "20")  # fmt: skip
    assert len(got) == 20
    assert {(r["run_id"], r["machine_id"], r["sensor_type"]) for r in got} == {
        (runs["a"], "m-0002", "pressure")
    }
    lines = tail(settings, "raw", "--from-beginning", "--run", runs["a"], "--sensor",
                 "vibration", "--max", "3")  # fmt: skip
    assert len(lines) == 3
    assert all(f"  {runs['a']}  m-000" in line and " vibration " in line for line in lines)


def test_a_dead_letter_shows_its_reason_and_first_bytes(pipeline):
    settings, endpoints, runs, summary = pipeline
    n = summary["deadlettered"]
    got = tail_json(settings, "deadletter", "--from-beginning", "--run", runs["a"], "--max",
                    str(n))  # fmt: skip
    letters = {(m.partition(), m.offset()): m for m in read_topic(
        settings, endpoints, settings.topic_deadletter, n)  # the run's come first
        if dict(m.headers())["run_id"] == runs["a"].encode()}  # fmt: skip
    assert len(got) == len(letters) == n
    for record in got:
        msg = letters[record["partition"], record["offset"]]
        headers = {k: v.decode() for k, v in msg.headers()}
        assert record["reason"] == headers["reason"] and record["reason"]
        assert record["source"] == headers["source"]
        assert bytes.fromhex(record["payload"]) == msg.value()[:PEEK]
        assert record["size"] == len(msg.value())
    line = tail(settings, "deadletter", "--from-beginning", "--run", runs["a"], "--max", "1")[0]
    assert "DEAD LETTER " in line and f"(from {settings.topic_raw}/" in line
    assert any(r["reason"] in line and f"{r['size']} bytes " in line for r in got)


def test_a_dead_letter_of_text_or_of_a_refused_reading(pipeline):
    """A replayed file's bad row is dead-lettered as its line of text, shown as text; a
    well-formed reading the processor refused (out of range) is shown decoded too."""
    settings, endpoints, *_ = pipeline
    run = run_id("letters")
    reading = {"machine_id": "m-7", "ts": 1_767_225_600_000, "sensor_type": "temperature",
               "value": 5000.0, "status_code": 0, "seq": 3}  # fmt: skip
    value = codec_for("reading").encode(reading)
    assert len(value) == PEEK
    produce(settings, endpoints, settings.topic_deadletter, [  # one key: one partition
        (b"m-7", b"2024-01-01 00:00:00,12.5,abc", [("reason", b"line 3: column value: abc"),
                                                   ("run_id", run.encode()),
                                                   ("source", b"x.csv:3")]),
        (b"m-7", value, [("reason", b"temperature 5000.0 is out of range"),
                         ("run_id", run.encode()), ("source", b"telemetry.raw/1/9")]),
    ])  # fmt: skip
    text, refused = tail(settings, "deadletter", "--from-beginning", "--run", run, "--max", "2")
    assert text.endswith(
        f"  {run}  m-7  DEAD LETTER line 3: column value: abc (from x.csv:3)  "
        "28 bytes b'2024-01-01 00:00:00,12.5,abc'"
    )
    assert f"  2026-01-01 00:00:00.000  {run}  m-7  temperature       5000  DEAD LETTER " in (
        refused
    ) and refused.endswith(f"  {len(value)} bytes {value.hex()}")  # all 32 of them
    got = tail_json(settings, "deadletter", "--from-beginning", "--run", run, "--max", "2")
    assert got[0]["reading"] is None and got[0]["sensor_type"] is None
    assert got[1]["reading"] == reading and got[1]["sensor_type"] == "temperature"


def test_alerts_and_chaos_events_decode(pipeline):
    settings, _, runs, summary = pipeline
    alerts = tail_json(settings, "alerts", "--from-beginning", "--run", runs["a"], "--max", "2")
    assert len(alerts) == 2
    for a in alerts:
        assert a["state"] in ("opened", "updated", "closed") and a["rule"] and a["alert_id"]
        assert a["machine_id"].startswith("m-") and a["event_ts"] >= a["start_ts"]
    faults = sum(summary["chaos"].values())
    chaos = tail_json(settings, "chaos", "--from-beginning", "--run", runs["a"], "--max",
                      str(faults))  # fmt: skip
    assert len(chaos) == faults
    assert {c["kind"] for c in chaos} == set(summary["chaos"])
    assert sorted(c["event_id"] for c in chaos) == list(range(faults))
    [line] = tail(settings, "chaos", "--from-beginning", "--run", runs["a"], "--max", "1")
    assert f"  {runs['a']}  m-000" in line and " until " in line and "source=" in line


def test_clean_readings_one_avro_message_each(pipeline):
    settings, _, runs, _ = pipeline
    got = tail_json(settings, "clean", "--from-beginning", "--run", runs["b"], "--max", "5")
    assert len(got) == 5
    assert set(got[0]) == {"partition", "offset", *CleanReadingEncoder.FIELDS}
    assert all(r["run_id"] == runs["b"] and r["sensor_type"] in sensor_types() for r in got)
    line = tail(settings, "clean", "--from-beginning", "--run", runs["b"], "--max", "1")[0]
    assert f"  {runs['b']}  m-0001  " in line and " rolling_1=" in line


def test_clean_readings_in_arrow_batches_one_line_per_reading(stack):
    settings = own_settings(*stack, publish_clean="batch")
    run = run_id("arrow")
    proc = workbench(settings, "run", "--machines", "2", "--duration", "5", "--run-id", run)
    assert proc.returncode == 0, proc.stderr
    n = readings_in(2, 5)
    got = tail_json(settings, "clean", "--from-beginning", "--max", str(n))
    assert len(got) == n
    assert len({(r["machine_id"], r["sensor_type"], r["seq"]) for r in got}) == n
    assert {r["run_id"] for r in got} == {run}
    assert list(got[0])[2:] == list(CleanReadingEncoder.FIELDS)  # the schema's field order
    # fewer messages than readings: batches, each line at its batch's position
    assert len({(r["partition"], r["offset"]) for r in got}) < n


def test_a_message_that_cannot_be_decoded_is_shown_and_tail_goes_on(pipeline):
    settings, endpoints, *_ = pipeline
    run = run_id("bad")
    good = CleanReadingEncoder().encode(run, "m-9", 1_767_225_600_000, "pressure", 2.5, 0, 0,
                                        False, None, 2.5, 2.5)  # fmt: skip
    arrow = [("run_id", run.encode()), ("content-type", b"application/vnd.apache.arrow.stream")]
    produce(settings, endpoints, settings.topic_clean, [  # one key: one partition, in order
        (b"m-9", b"\x00junk", [("run_id", run.encode())]),
        (b"m-9", b"junk", arrow),
        (b"m-9", good, [("run_id", run.encode())]),
    ])  # fmt: skip
    got = tail_json(settings, "clean", "--from-beginning", "--run", run, "--max", "3")
    assert got[0]["error"] == "not Avro single-object encoding (no C3 01 marker)"
    assert (got[0]["payload"], got[0]["size"], got[0]["machine_id"]) == ("006a756e6b", 5, "m-9")
    assert got[1]["error"].startswith("not an Arrow IPC stream")
    assert got[2]["value"] == 2.5 and "error" not in got[2]
    line = tail(settings, "clean", "--from-beginning", "--run", run, "--max", "1")[0]
    assert line.endswith(f"{run}  m-9  UNDECODABLE not Avro single-object encoding "
                         "(no C3 01 marker)  5 bytes 006a756e6b")  # fmt: skip


def test_an_unknown_topic_is_a_one_line_error(pipeline):
    settings, *_ = pipeline
    proc = workbench(settings, "tail", "telemetry.nope")
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "workbench: error: TOPIC='telemetry.nope' is not valid: expected one of raw, clean, "
        f"alerts, deadletter, chaos, or a topic name ({settings.topic_raw}, ...)"
    ]
    assert proc.stdout == ""


def started_tail(settings, *args) -> subprocess.Popen:
    """`workbench tail` in the background, returned once it has read to the end of every
    partition (what arrives from then on is new)."""
    proc = subprocess.Popen([WORKBENCH, "tail", *args], env=cli_env(settings), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    selector = selectors.DefaultSelector()
    selector.register(proc.stderr, selectors.EVENT_READ)
    deadline, seen = time.monotonic() + 60, []
    while not any("waiting for new messages" in line for line in seen):
        assert time.monotonic() < deadline and proc.poll() is None, (
            "tail ended, or took a minute, before it reached the end of every partition: "
            + "".join(seen)
        )
        if selector.select(1.0):
            seen.append(proc.stderr.readline())
    return proc


def test_latest_by_default_shows_only_what_arrives_after_it_started(pipeline):
    """The chaos topic holds run A's ground truth; only run C's, produced once tail is at
    the end, is shown. (The embedded broker reports a partition's end at the start of its
    last batch: read from there, A's last events would come first.) Tail joins no consumer
    group while it reads."""
    settings, endpoints, *_ = pipeline
    run = run_id("c")
    proc = started_tail(settings, "chaos", "--json", "--max", "3")
    try:
        admin = kafka.AdminClient({"bootstrap.servers": endpoints.bootstrap_servers})
        groups = admin.list_consumer_groups(request_timeout=10).result().valid
        assert settings.consumer_group in {g.group_id for g in groups}  # the processor's
        assert not [g.group_id for g in groups if g.group_id.startswith("workbench-reader")]
        codec = codec_for("chaos_event")
        produce(settings, endpoints, settings.topic_chaos, [
            (b"m-0001", codec.encode({"run_id": run, "event_id": i, "kind": "spike",
                                      "machine_id": "m-0001", "sensor_type": "flow",
                                      "start_ts": 1_767_225_600_000, "magnitude": 1.0,
                                      "end_ts": 1_767_225_600_000, "source": "test"}),
             [("run_id", run.encode())])
            for i in range(3)
        ])  # fmt: skip
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    got = [json.loads(line) for line in out.splitlines()]
    assert [(r["run_id"], r["event_id"]) for r in got] == [(run, 0), (run, 1), (run, 2)]


def test_ctrl_c_ends_tail_quietly(pipeline):
    settings, *_ = pipeline
    proc = started_tail(settings, "alerts")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "Traceback" not in err and "interrupted" not in err and "error" not in err
    assert out == ""
