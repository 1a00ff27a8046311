"""Round trips through the real embedded broker with confluent-kafka."""

import logging
import time

from workbench import kafka
from workbench.producer import RecordProducer
from workbench.schemas import READING
from workbench.simulator.physics import Factory, FactoryConfig


def consume_all(bootstrap, topic, group, expected, timeout_s=30):
    consumer = kafka.make_consumer(bootstrap, group, 6000)
    consumer.subscribe([topic])
    got, deadline = [], time.monotonic() + timeout_s
    try:
        while len(got) < expected and time.monotonic() < deadline:
            got += [m for m in consumer.consume(1000, 0.2) if m.error() is None]
    finally:
        consumer.close()
    return got


def test_readings_round_trip_keyed_by_machine_with_run_header(settings, endpoints):
    factory = Factory(FactoryConfig(machines=4, seed=1, start_ms=0))
    records = [r for tick in factory.ticks(5) for r in factory.records(tick)]
    with RecordProducer(endpoints.broker, settings.topic_raw, "run-a") as producer:
        for r in records:
            producer.send(r)
    report = producer.report
    assert (report.sent, report.delivered, report.failed) == (len(records), len(records), 0)

    messages = consume_all(endpoints.broker, settings.topic_raw, "rt", len(records))
    assert len(messages) == len(records)
    decoded = [READING.decode(m.value()) for m in messages]
    key = lambda r: (r["machine_id"], r["sensor_type"], r["seq"])  # noqa: E731
    assert sorted(decoded, key=key) == sorted(records, key=key)
    # one machine, one partition: its readings arrive in the order they were sent
    by_machine: dict[str, set[int]] = {}
    for m in messages:
        assert m.key().decode() == READING.decode(m.value())["machine_id"]
        assert dict(m.headers())["run_id"] == b"run-a"
        by_machine.setdefault(m.key().decode(), set()).add(m.partition())
    assert all(len(parts) == 1 for parts in by_machine.values())


def test_digest_is_equal_for_equal_streams(settings, endpoints):
    digests = []
    for _ in range(2):
        factory = Factory(FactoryConfig(machines=2, seed=9, start_ms=0))
        with RecordProducer(endpoints.broker, settings.topic_raw, "r") as p:
            for tick in factory.ticks(3):
                for r in factory.records(tick):
                    p.send(r)
        digests.append(p.report.sha256)
    assert digests[0] == digests[1]


def test_ensure_topics_is_idempotent_and_uses_the_partition_count(settings, endpoints):
    kafka.ensure_topics(endpoints.broker, settings.topics, settings.partitions)
    consumer = kafka.make_consumer(endpoints.broker, "meta", 6000)
    try:
        meta = consumer.list_topics(timeout=5).topics
    finally:
        consumer.close()
    for topic in settings.topics:
        assert len(meta[topic].partitions) == settings.partitions


def test_the_topic_watch_tells_how_much_the_broker_holds_and_when_a_topic_is_lost(
    settings, endpoints, caplog
):
    bootstrap = endpoints.broker
    with RecordProducer(bootstrap, settings.topic_raw, "held") as p:
        for i in range(25):  # one batch each: Tansu's ends count batches' first offsets
            p.send_raw(b"m-%d" % (i % 3), b"x")
            p._producer.flush(5)
    watch = kafka.TopicWatch(bootstrap, settings.topic_raw, warn_held=10)
    with caplog.at_level(logging.WARNING, "workbench.kafka"):
        watch.check()
        watch.check()  # no second warning until 10 more are held
    said = [r.getMessage() for r in caplog.records if "the broker holds" in r.getMessage()]
    assert len(said) == 1 and watch.held >= 20, (said, watch.held)
    assert watch.lost == watch.losses == 0
    # the topic deleted under the watch: found gone, and everything written since counted
    admin = kafka.AdminClient({"bootstrap.servers": bootstrap.bootstrap})
    admin.delete_topics([settings.topic_raw])[settings.topic_raw].result(10)
    watch.check()
    assert watch.losses == 1 and watch.lost == 0  # nothing written after the watch began
    watch.close()


def test_the_topic_watch_counts_as_lost_only_what_the_group_had_not_processed(endpoints):
    """The group's committed offsets come through a consumer that never joins the group
    (kafka.GroupOffsets), not through the admin client's coordinator requests, which
    can abort the process when a broker hangs and then goes away (librdkafka#4605)."""
    bootstrap, topic, group = endpoints.broker, "watch-group-offsets", "watch-group"
    kafka.ensure_topics(bootstrap, [topic], 1)
    watch = kafka.TopicWatch(bootstrap, topic, group=group)
    producer = kafka.Producer({"bootstrap.servers": bootstrap.bootstrap})
    for _ in range(10):  # one batch each: Tansu's ends count batches' first offsets
        producer.produce(topic, b"x", partition=0)
        producer.flush(5)
    committer = kafka.make_consumer(bootstrap, group, 6000)
    part = kafka.TopicPartition(topic, 0, 4)  # the group processed the first 4
    committer.assign([part])
    committer.commit(offsets=[part], asynchronous=False)
    committer.close()
    with kafka.GroupOffsets(bootstrap, group) as offsets:
        assert offsets.read([kafka.TopicPartition(topic, 0)], 5.0) == {0: 4}
        assert offsets.read([kafka.TopicPartition(topic, 1)], 5.0) == {}  # none there
    watch.check()  # sees the 4 processed
    admin = kafka.AdminClient({"bootstrap.servers": bootstrap.bootstrap})
    admin.delete_topics([topic])[topic].result(10)
    watch.check()
    watch.close()
    assert watch.losses == 1 and watch.lost == 6
