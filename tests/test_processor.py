"""The consume loop against the real broker and database: storage, dead letters, offsets,
crashes."""

import dataclasses
import logging
import os
import signal
import subprocess
import time

from conftest import WORKBENCH, cli_env, read_topic, readings_in

from workbench import kafka
from workbench.processor.loop import Processor
from workbench.producer import RecordProducer
from workbench.runs import RunRegistry
from workbench.schemas import READING
from workbench.simulator.physics import Factory, FactoryConfig


def produce(endpoints, settings, run_id, machines, seconds, extra_raw=()):
    factory = Factory(FactoryConfig(machines=machines, seed=4, start_ms=1_767_225_600_000))
    with RecordProducer(endpoints.broker, settings.topic_raw, run_id) as p:
        for tick in factory.ticks(seconds):
            for record in factory.records(tick):
                p.send(record)
        for key, value in extra_raw:
            p.send_raw(key, value)
    return p.report


def committed(endpoints, settings, expected):
    """The group's committed offsets, and the true end of each partition.

    The end is found by reading the topic, not from the broker's high watermark:
    Tansu reports the base offset of the last record batch + 1 as the high watermark,
    which is short of the true end when a batch holds several records.
    """
    consumer = kafka.make_consumer(endpoints.broker, settings.consumer_group, 6000)
    try:
        parts = [kafka.TopicPartition(settings.topic_raw, p) for p in range(settings.partitions)]
        offsets = {
            tp.partition: tp.offset
            for tp in consumer.committed(parts, timeout=10)
            if tp.offset >= 0
        }
    finally:
        consumer.close()
    ends: dict[int, int] = {}
    for m in read_topic(settings, endpoints, settings.topic_raw, expected):
        ends[m.partition()] = max(ends.get(m.partition(), 0), m.offset() + 1)
    return offsets, ends


def test_valid_readings_are_stored_and_bad_ones_dead_lettered_with_reasons(settings, endpoints):
    good = READING.encode(
        {
            "machine_id": "m-x",
            "ts": 0,
            "sensor_type": "unknown",
            "value": 1.0,
            "status_code": 0,
            "seq": 0,
        }
    )
    bad = [
        (b"m-0001", b"\x00garbage"),
        (b"m-0001", b"\xc3\x01" + bytes(8) + b"\x02"),
        (b"m-x", good),
        (b"m-other", READING.encode({"machine_id": "m-y", "ts": 0, "sensor_type": "pressure",
                                     "value": 1.0, "status_code": 0, "seq": 0})),
    ]  # fmt: skip
    report = produce(endpoints, settings, "proc-a", machines=3, seconds=20, extra_raw=bad)
    assert report.delivered == readings_in(3, 20) + 4

    stats = Processor(settings, endpoints.broker, endpoints.database_url).run(idle_timeout_s=3)
    n = readings_in(3, 20)
    assert (stats.consumed, stats.stored, stats.deadlettered) == (n + 4, n, 4)
    counts = RunRegistry(endpoints.database_url).counts("proc-a")
    assert (counts.stored, counts.deadlettered) == (n, 4)

    dead = read_topic(settings, endpoints, settings.topic_deadletter, 4)
    reasons = sorted(dict(m.headers())["reason"].decode() for m in dead)
    assert [r.split(" ")[0] for r in reasons] == ["key", "not", "unknown", "wrong"]
    assert {m.value() for m in dead} == {value for _, value in bad}  # original bytes kept

    offsets, ends = committed(endpoints, settings, n + 4)
    assert offsets == ends  # everything stored, everything committed


def test_a_second_run_of_the_processor_rereads_nothing(settings, endpoints):
    produce(endpoints, settings, "proc-b", machines=2, seconds=10)
    first = Processor(settings, endpoints.broker, endpoints.database_url).run(idle_timeout_s=2)
    second = Processor(settings, endpoints.broker, endpoints.database_url).run(idle_timeout_s=2)
    assert (first.consumed, second.consumed) == (readings_in(2, 10), 0)


def test_kill_9_mid_run_then_restart_loses_nothing_and_duplicates_nothing(settings, endpoints):
    report = produce(endpoints, settings, "proc-kill", machines=100, seconds=100)
    total = report.delivered
    env = cli_env(settings, WORKBENCH_BATCH_SIZE="500")
    proc = subprocess.Popen(
        [WORKBENCH, "-q", "process"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    registry = RunRegistry(endpoints.database_url)
    try:
        deadline = time.monotonic() + 60
        while registry.counts("proc-kill").stored < total // 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    stored_at_kill = registry.counts("proc-kill").stored
    assert 0 < stored_at_kill < total, "the kill must land mid-run for this test to mean anything"

    stats = Processor(settings, endpoints.broker, endpoints.database_url).run(idle_timeout_s=3)
    assert registry.counts("proc-kill").stored == total
    # the restarted processor re-read only what was not committed, and stored only what was missing
    assert stats.stored == total - stored_at_kill
    assert stats.consumed == stats.stored + stats.duplicates
    registry.close()


def test_process_command_stops_cleanly_on_sigterm(settings, endpoints):
    produce(endpoints, settings, "proc-term", machines=2, seconds=5)
    proc = subprocess.Popen(
        [WORKBENCH, "process", "--json"],
        env=cli_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    registry = RunRegistry(endpoints.database_url)
    deadline = time.monotonic() + 30
    while registry.counts("proc-term").stored < readings_in(2, 5) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    import json

    assert json.loads(out)["stored"] == readings_in(2, 5)
    offsets, ends = committed(endpoints, settings, readings_in(2, 5))
    assert offsets == ends


def test_a_broker_slower_than_the_fetch_wait_does_not_starve_the_processor(
    settings, endpoints, caplog
):
    """Tansu answers a fetch with nothing when it cannot find the messages within the
    fetch's wait, and it takes longer as it fills: with 10 ms, a processor fetched nothing
    more once the broker held ~2.6 million messages, while 2 million waited. A wait of 0
    starves on any broker: the processor must notice and wait longer, and lose nothing."""
    s = dataclasses.replace(settings, fetch_wait_ms=0)
    produce(endpoints, s, "starved", 3, 20)
    expected = readings_in(3, 20)
    processor = Processor(s, endpoints.broker, endpoints.database_url)
    with caplog.at_level(logging.WARNING, "workbench.processor.loop"):
        stats = processor.run(idle_timeout_s=60, max_messages=expected)
    assert stats.consumed == stats.stored == expected
    said = [r.getMessage() for r in caplog.records if "answered every fetch" in r.getMessage()]
    assert said and "fetching with 1 ms from now on" in said[0], said
    assert RunRegistry(endpoints.database_url).counts("starved").stored == expected
