"""The Kafka client, behind one small module: producer, consumer and admin over confluent-kafka.

No other module imports ``confluent_kafka``; they get configured clients from here, so
client defaults (timeouts, batching, logging) are decided in one place and hold for the
embedded Tansu broker and for Apache Kafka alike.

Every client is made for an :class:`Endpoint`: the bootstrap servers and the librdkafka
properties the user set (``WORKBENCH_KAFKA_*``: TLS, SASL, tuning), so that a cloud
broker's credentials reach every producer, consumer and admin client alike. A client gets
the workbench's defaults for its kind, then the endpoint's properties (which may change
any of them), then what its caller asked for.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from workbench.errors import BrokerUnavailable, ConfigError, StackError
from workbench.kafka_properties import REDACTED, KafkaProperties, kafka_variable

__all__ = [
    "Consumer",
    "DeliveryTracker",
    "Endpoint",
    "KafkaError",
    "KafkaException",
    "Message",
    "Producer",
    "TopicPartition",
    "TopicWatch",
    "check_broker",
    "check_properties",
    "ensure_topics",
    "make_consumer",
    "make_producer",
    "make_reader",
    "require_endpoint",
]

log = logging.getLogger(__name__)


class _LibrdkafkaLogger(logging.Logger):
    """librdkafka's own log lines at DEBUG: its connection chatter is not for users.

    Every failure that matters reaches us as an exception, an error callback or a
    failed delivery report, and is reported there with its context.
    """

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        logging.getLogger("workbench.kafka.librdkafka").debug(msg, *args)


_RDKAFKA_LOGGER = _LibrdkafkaLogger("librdkafka")


class _HandshakeLogger(_LibrdkafkaLogger):
    """librdkafka's log lines as above, and ``ready`` set once the idempotent producer has
    its producer id: the handshake librdkafka has no other way to report."""

    def __init__(self, ready: threading.Event) -> None:
        super().__init__("librdkafka")
        self.ready = ready

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        # librdkafka logs "%s [%s] %s" % (facility, client, text)
        if args and args[0] == "IDEMPSTATE" and str(args[-1]).endswith("-> Assigned"):
            self.ready.set()
        super().log(level, msg, *args, **kwargs)


@dataclass(frozen=True)
class Endpoint:
    """A Kafka broker to talk to: its bootstrap servers and the librdkafka ``properties``
    every client of it gets (``Settings.kafka_properties``; secrets shown as ``***`` in the
    repr). ``str()`` is the bootstrap servers alone, fit for any message.

    The properties are checked with librdkafka when the endpoint is made: a property it
    does not know, a value it refuses or a file it cannot load (``ssl.ca.location``) is a
    :class:`~workbench.errors.ConfigError` naming the variable, before any client is made.

    >>> Endpoint("127.0.0.1:9092")
    Endpoint(bootstrap='127.0.0.1:9092', properties=KafkaProperties({}))
    >>> Endpoint("broker:9093", {"sasl.username": "me", "sasl.password": "s3cret"})
    Endpoint(bootstrap='broker:9093', properties=KafkaProperties({'sasl.password': '***', \
'sasl.username': 'me'}))
    >>> Endpoint("broker:9093", {"security.protocol": "SASL_TLS"})
    Traceback (most recent call last):
    ...
    workbench.errors.ConfigError: WORKBENCH_KAFKA_SECURITY_PROTOCOL='SASL_TLS' is not valid: \
expected a value librdkafka accepts (Invalid value "SASL_TLS" for configuration property \
"security.protocol")
    """

    bootstrap: str
    properties: KafkaProperties = field(default_factory=KafkaProperties)

    def __post_init__(self) -> None:
        if not isinstance(self.bootstrap, str) or not self.bootstrap:
            raise TypeError(f"Endpoint needs the bootstrap servers as text, not {self.bootstrap!r}")
        if not isinstance(self.properties, KafkaProperties):
            object.__setattr__(self, "properties", KafkaProperties(self.properties))
        check_properties(self.properties)

    def __str__(self) -> str:
        return self.bootstrap


@functools.lru_cache(maxsize=8)
def check_properties(properties: KafkaProperties) -> None:
    """Raise :class:`ConfigError` naming the variable of a property librdkafka refuses, or
    of a file one names (``*.location``) that is not there.

    librdkafka checks names and values as they are set and loads files (certificates,
    keys) when a client is made: a producer made without bootstrap servers (it connects
    nowhere) does both. The culprit is the property the error names, or else the one
    refused on its own (an error may name ``linger.ms`` by its alias). Secret values stay
    out of the message, and so does the value of a property librdkafka does not know (a
    misspelt ``sasl.pasword`` may hold a password).
    """
    for prop, value in properties.items():
        if prop.endswith(".location") and value != "probe" and not os.path.exists(value):
            raise ConfigError(kafka_variable(prop), value, "a file or folder that exists")
    error = _refusal(properties) if properties else None
    if error is None:
        return
    spelt = re.sub(r"[\s_]+", ".", error.lower())  # "SASL mechanism" names sasl.mechanism
    culprit = next((p for p in properties if p in spelt), None) or next(
        (p for p in properties if _refusal({p: properties[p]}) is not None), None
    )
    reason = f"a value librdkafka accepts ({properties.redact(error)})"
    if culprit is None:
        raise ConfigError(", ".join(kafka_variable(p) for p in properties), "...", reason)
    if error.startswith("No such configuration property"):
        reason = f"a property librdkafka knows ({error}; see its CONFIGURATION.md)"
        raise ConfigError(kafka_variable(culprit), REDACTED, reason)
    raise ConfigError(kafka_variable(culprit), properties.shown(culprit), reason)


def _refusal(properties: Mapping[str, str]) -> str | None:
    """librdkafka's reason to refuse a client with ``properties``, or None."""
    try:
        Producer({**properties, "logger": _RDKAFKA_LOGGER})
    except KafkaException as exc:
        return str(exc.args[0].str()).removeprefix("Failed to create producer: ")
    return None


def require_endpoint(broker: object) -> Endpoint:
    """``broker`` if it is an :class:`Endpoint`; a TypeError saying what to pass if not (a
    bare bootstrap string would make a client without the ``WORKBENCH_KAFKA_*`` properties)."""
    if not isinstance(broker, Endpoint):
        raise TypeError(
            f"a Kafka client needs a workbench.kafka.Endpoint (Endpoints.broker), not "
            f"{broker!r}: bootstrap servers alone carry no WORKBENCH_KAFKA_* properties"
        )
    return broker


def _config(broker: Endpoint, connect_timeout_s: float, defaults: dict[str, Any]) -> dict[str, Any]:
    """A client's configuration: where the broker is, how long to wait for a connection,
    where librdkafka logs, then ``defaults`` for this kind of client, then the endpoint's
    properties, which may change any of them."""
    broker = require_endpoint(broker)
    return {
        "bootstrap.servers": broker.bootstrap,
        "socket.connection.setup.timeout.ms": max(1000, int(connect_timeout_s * 1000)),
        "logger": _RDKAFKA_LOGGER,
        **defaults,
        **broker.properties,
    }


def check_broker(broker: Endpoint, timeout_s: float = 5.0) -> list[str]:
    """Ask the broker for its metadata; raise :class:`BrokerUnavailable` if it does not answer.

    Returns the topic names it knows, which doubles as proof that it speaks Kafka. The
    reason given is librdkafka's first error report, which says what a failed metadata
    request does not: a refused connection, a TLS certificate that could not be verified,
    a SASL authentication the broker refused.
    """
    told: list[str] = []
    admin = AdminClient(_config(broker, timeout_s, {"error_cb": lambda e: told.append(e.str())}))
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        admin.poll(0)  # serves the error reports
        said = [_BROKER_PREFIX.sub("", e) for e in told if not _ALL_DOWN.search(e)]
        # the longest report is librdkafka's explanation; a shorter one may come first
        why = max(said, key=len) if said else exc.args[0].str()
        if "certificate verify failed" in why and "ssl.ca.location" not in why:
            why += "; the broker's CA goes in ssl.ca.location (WORKBENCH_KAFKA_SSL_CA_LOCATION)"
        reason = f"no answer within {timeout_s:g}s ({broker.properties.redact(why)})"
        raise BrokerUnavailable(broker.bootstrap, reason) from None
    return sorted(metadata.topics)


#: "ssl://127.0.0.1:9093/bootstrap: " (the broker librdkafka names) before its reason
_BROKER_PREFIX = re.compile(r"^\S+/\S+: ")
#: librdkafka's count of brokers down, which follows the reason
_ALL_DOWN = re.compile(r"\d+/\d+ brokers are down")


def unprocessed(broker: Endpoint, topic: str, group: str, timeout_s: float = 5.0) -> int:
    """Messages of ``topic`` past ``group``'s committed offsets (all of a partition it has
    not committed in); 0 when the topic does not exist.

    The embedded broker reports a partition's end short of the true one when its last
    record batch holds several records, so this may count a few too few, never too many.
    """
    admin = AdminClient(_config(broker, timeout_s, {}))
    try:
        parts = _partitions(admin, topic, timeout_s)
    except KafkaException as exc:
        if exc.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            return 0
        raise
    starts = _offsets(admin, parts, OffsetSpec.earliest(), timeout_s)
    ends = _offsets(admin, parts, OffsetSpec.latest(), timeout_s)
    with GroupOffsets(broker, group, timeout_s) as offsets:
        done = offsets.read(parts, timeout_s)
    return sum(max(0, end - max(done.get(p, 0), starts[p])) for p, end in ends.items())


def _partitions(admin: AdminClient, topic: str, timeout_s: float) -> list[TopicPartition]:
    """The topic's partitions (raises KafkaException, UNKNOWN_TOPIC_OR_PART without it)."""
    described = admin.describe_topics(TopicCollection([topic]), request_timeout=timeout_s)
    return [TopicPartition(topic, p.id) for p in described[topic].result().partitions]


def _offsets(
    admin: AdminClient, parts: list[TopicPartition], spec: OffsetSpec, timeout_s: float
) -> dict[int, int]:
    """Each partition's earliest or latest offset (``spec``)."""
    listed = admin.list_offsets(dict.fromkeys(parts, spec), request_timeout=timeout_s)
    return {tp.partition: future.result().offset for tp, future in listed.items()}


class GroupOffsets:
    """Reads the offsets a consumer group committed, without joining the group.

    Through a consumer that never subscribes, not the admin client: an admin request to
    a group's coordinator aborts the whole process when the coordinator's answer, or the
    failure of its connection, comes after the request timed out (an assertion in
    librdkafka's ``rd_kafka_admin_coord_response_parse``, confluentinc/librdkafka#4605).
    A broker that hangs for longer than the timeout and then goes away does just that:
    the embedded broker lingers ~5 s over open connections when told to stop. A
    consumer asks through its own group handle, which takes no such path.

    >>> # with GroupOffsets(endpoint, "workbench-processor") as offsets:
    >>> #     offsets.read([TopicPartition("telemetry.raw", 0)], timeout_s=5.0)
    >>> # {0: 1200}
    """

    def __init__(self, broker: Endpoint, group: str, connect_timeout_s: float = 5.0) -> None:
        self._consumer = Consumer(
            _config(broker, connect_timeout_s, {
                "group.id": group,
                "enable.auto.commit": False,
                # the caller (a producer, a watch) tells of an absent broker in its own words
                "error_cb": lambda e: log.debug("group offsets of %s: %s", group, e.str()),
            })
        )  # fmt: skip

    def read(self, parts: list[TopicPartition], timeout_s: float) -> dict[int, int]:
        """The committed offset of each partition the group committed in (raises
        KafkaException when the broker does not tell in ``timeout_s``)."""
        asked = [TopicPartition(tp.topic, tp.partition) for tp in parts]
        found = self._consumer.committed(asked, timeout=timeout_s)
        return {tp.partition: tp.offset for tp in found if tp.offset >= 0}

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> GroupOffsets:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def ensure_topics(
    broker: Endpoint, topics: Iterable[str], partitions: int, timeout_s: float = 10.0
) -> None:
    """Create the topics that do not exist yet; existing ones are left as they are.

    A topic that exists with fewer partitions than asked is reported, not altered:
    growing partitions moves keys to other partitions, which is the operator's call.
    Replicas are the broker's default (1 on a single node; Confluent Cloud refuses
    anything but its own 3).
    """
    admin = AdminClient(_config(broker, timeout_s, {}))
    existing = admin.list_topics(timeout=timeout_s).topics
    missing = [t for t in topics if t not in existing]
    for name in topics:
        if name in existing and len(existing[name].partitions) < partitions:
            log.warning(
                "topic %s has %d partitions, fewer than the %d configured; leaving it as it is",
                name,
                len(existing[name].partitions),
                partitions,
            )
    if not missing:
        return
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=partitions, replication_factor=-1) for t in missing],
        operation_timeout=timeout_s,
    )
    for name, future in futures.items():
        try:
            future.result(timeout_s)
            log.info("created topic %s with %d partitions", name, partitions)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise StackError(f"could not create topic {name} on {broker}: {exc}") from None


def make_producer(
    broker: Endpoint,
    failures: DeliveryTracker | None = None,
    ready: threading.Event | None = None,
    **overrides: Any,
) -> Producer:
    """A producer that waits for the broker's acknowledgement of every message.

    One request in flight per connection keeps a partition's messages in order even when
    a request is retried; a retry may write a message twice, which the processor absorbs
    (it drops a reading whose sequence number its key has seen). Idempotence would prevent
    the second copy, but on the embedded broker (Tansu 0.6) an idempotent producer that is
    not flushed after each burst holds a large share of its messages for about a second
    (measured at 10,000 readings/s: p90 1.0 s from produce to consume, against 0.17 s
    without it), and the consumers' latency with it. lz4 and a short linger batch small
    telemetry records efficiently.

    With ``failures``, the broker's delivery reports come back for failed messages only
    and go to that tracker, so a delivered message costs no Python call: the caller
    counts what it sent, and once ``flush()`` returns 0 whatever did not fail was
    delivered. Without it, pass ``on_delivery`` per message as before.

    ``ready`` is set, from ``poll()``, when the producer can send: an idempotent producer
    first asks the broker for its producer id, which librdkafka does 0.05 to 1 s after it
    starts; messages produced before wait for it. It is set at once when there is nothing
    to wait for (no idempotence) or no way to tell (a ``logger`` of the caller's own).
    """
    config = _config(broker, 5.0, {
        "acks": "all",
        "enable.idempotence": False,
        "max.in.flight.requests.per.connection": 1,
        "linger.ms": 20,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 500_000,
    })  # fmt: skip
    if failures is not None:
        config |= {"delivery.report.only.error": True, "on_delivery": failures.callback}
    config |= {"error_cb": BrokerDown(broker.bootstrap)}
    config |= overrides
    if ready is not None:
        if str(config["enable.idempotence"]).lower() == "true" and "logger" not in overrides:
            debug = [d for d in str(config.get("debug", "")).split(",") if d]
            config |= {"logger": _HandshakeLogger(ready), "debug": ",".join([*debug, "eos"])}
        else:
            ready.set()
    return Producer(config)


def make_consumer(
    broker: Endpoint, group_id: str, session_timeout_ms: int, **overrides: Any
) -> Consumer:
    """A consumer in ``group_id`` that never commits by itself.

    Offsets are committed by the caller once the sinks have the data (at-least-once),
    and a new group starts from the earliest offset so no produced event is skipped.
    """
    config = _config(broker, 5.0, {
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": session_timeout_ms,
        "heartbeat.interval.ms": max(100, session_timeout_ms // 10),
        "fetch.wait.max.ms": 100,
        "error_cb": _log_consumer_error,
    })  # fmt: skip
    return Consumer(config | overrides)


def make_reader(
    broker: Endpoint, topic: str, from_beginning: bool, timeout_s: float = 5.0
) -> tuple[Consumer, list[int]]:
    """A consumer of every partition of ``topic`` that no one else notices: it joins no
    group and commits nothing; returns it with the partition numbers.

    Partitions are assigned, not subscribed to, so the consumer never joins a group and no
    rebalance of the processors' group happens because someone is looking. librdkafka
    wants a ``group.id`` all the same; with ``assign()`` and no commit it is never sent
    to the broker, and a name of its own per reader keeps even that apart from every real
    group. Each partition is read from its first offset (``from_beginning``) or its end,
    and reports reaching its end (``enable.partition.eof``), so the caller can tell what
    was there before it started from what arrived after.
    """
    config = _config(broker, timeout_s, {
        "group.id": f"workbench-reader-{uuid.uuid4().hex[:12]}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "fetch.wait.max.ms": 100,
        "error_cb": _log_consumer_error,
    })  # fmt: skip
    consumer = Consumer(config)
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics[topic]
    except KafkaException as exc:
        consumer.close()
        raise BrokerUnavailable(str(broker), f"no answer within {timeout_s:g}s ({exc})") from None
    if metadata.error is not None or not metadata.partitions:
        consumer.close()
        reason = metadata.error.str() if metadata.error is not None else "no partitions"
        raise StackError(f"cannot read topic {topic} on {broker}: {reason}")
    partitions = sorted(metadata.partitions)
    start = OFFSET_BEGINNING if from_beginning else OFFSET_END
    consumer.assign([TopicPartition(topic, p, start) for p in partitions])
    return consumer, partitions


#: Consumer settings for reading at full speed. librdkafka (2.x) stops fetching a partition
#: for ``fetch.queue.backoff.ms`` (default 1000 ms) whenever its local queue holds
#: ``queued.min.messages``: a consumer faster than ~180k messages/s then idles half the time.
#: Larger fetches cut round trips to the broker.
FAST_CONSUMER: dict[str, Any] = {
    "fetch.queue.backoff.ms": 10,
    # The prefetch: librdkafka counts payload bytes, but holds ~350 bytes of its own per
    # message (a 60-byte reading: 6x its payload). A few batches ahead are enough to keep
    # up (~200k readings/s here); 8 MB fetches and a 16 MB queue held ~110 MB resident.
    "fetch.max.bytes": 1024 * 1024,
    "max.partition.fetch.bytes": 512 * 1024,
    "queued.max.messages.kbytes": 2 * 1024,
    "queued.min.messages": 10_000,
    # an empty fetch returns after 10 ms, not 100: data that arrives meanwhile (the embedded
    # broker does not answer a waiting fetch early) waits less (p50 95 -> 62 ms end to end)
    "fetch.wait.max.ms": 10,
}


class BrokerDown:
    """A producer's ``error_cb``: says at once, as a warning, that the broker stopped
    answering (librdkafka keeps the messages and retries; without this, a producer learns of
    it only when they time out, a minute or more later). At most one warning a minute.

    A fatal error (an idempotent producer's state lost: no message can go out any more) is
    kept in ``fatal`` for the producer's owner to act on."""

    def __init__(self, bootstrap: str, every_s: float = 60.0) -> None:
        self.bootstrap, self.every_s, self.last = bootstrap, every_s, -every_s
        self.fatal: str | None = None

    def __call__(self, err: KafkaError) -> None:
        if err.fatal():
            self.fatal = err.str()
        if err.code() not in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            log.debug("producer error: %s", err.str())
            return
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            log.warning("the broker at %s does not answer (%s): messages wait to be sent, "
                        "and are reported lost if it is not back in time",
                        self.bootstrap, err.str())  # fmt: skip


def _log_consumer_error(err: KafkaError) -> None:
    if err.fatal():
        log.error("consumer error: %s", err.str())
    else:
        log.debug("consumer transient error: %s", err.str())


@dataclass
class DeliveryTracker:
    """Counts delivery reports so that no produced message can be lost silently.

    Pass :meth:`callback` as ``on_delivery``; after ``flush()``, ``delivered + failed``
    equals the number of messages handed to the producer. Given to
    :func:`make_producer` as ``failures``, it hears of failed messages only (``delivered``
    stays 0): delivered is then what was sent less ``failed``, once ``flush()`` returns 0.
    """

    delivered: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def callback(self, err: KafkaError | None, _msg: Message) -> None:
        with self._lock:
            if err is None:
                self.delivered += 1
            else:
                self.failed += 1
                reason = err.str()
                self.errors[reason] = self.errors.get(reason, 0) + 1


#: The topic watch's admin requests: far above an answering broker's round trip, so that
#: they do not time out (see TopicWatch._look).
ADMIN_TIMEOUT_S = 5.0


class TopicWatch(threading.Thread):
    """Notices, within seconds, that the broker lost the messages of a topic it acknowledged.

    A broker on memory storage (the embedded one) forgets every topic when it restarts,
    and a topic can be deleted under a running producer: the producer hears nothing (its
    later messages go to the topic made anew), and the loss would surface only when a
    processor finds fewer messages than were sent. The watch asks the broker, every
    ``every_s``, for the topic's id, the end of each partition and, given a consumer
    ``group``, the offsets that group committed (what it has processed). A new id, or no
    topic, means the topic that held the messages is gone, and it says so at once. ``lost``
    estimates what went with it: the messages written since the watch began that the group
    had not processed at the last look (all of them without a group), or, from the
    writer's own count (``acknowledged``), what it had acknowledged less what is in the
    topic made anew and what was processed, whichever is more. An estimate: it is exact for
    a topic's only writer with no consumer, and the run's books, counted downstream, give
    the exact figure in every case.

    >>> # with TopicWatch(endpoint, "telemetry.raw", group="workbench-processor") as watch:
    >>> #     ...produce...
    >>> # watch.lost
    """

    def __init__(
        self,
        broker: Endpoint,
        topic: str,
        group: str | None = None,
        acknowledged: Callable[[], int] | None = None,
        every_s: float = 2.0,
        warn_held: int | None = None,
    ) -> None:
        super().__init__(name=f"watch {topic}", daemon=True)
        self.broker, self.topic, self.group, self.every_s = broker, topic, group, every_s
        self._acknowledged = acknowledged or (lambda: 0)
        self._acked_base = 0
        self.warn_held, self._warned_at = warn_held, 0
        #: messages the topic holds (end less start of each partition), at the last look
        self.held = 0
        self.lost = 0
        #: times the topic was found gone or made anew
        self.losses = 0
        #: whether the broker answered the last look
        self.answering = True
        self._admin = AdminClient(_config(self.broker, 1.0, {}))
        self._offsets = GroupOffsets(self.broker, group, 1.0) if group is not None else None
        self._id: str | None = None
        self._start: dict[int, int] = {}
        self._ends: dict[int, int] = {}
        self._read: dict[int, int] = {}
        self._lock = threading.Lock()
        self._done = threading.Event()
        self.check()  # before the caller's first message

    def __enter__(self) -> TopicWatch:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop watching (call :meth:`check` first for a last look: a producer's ``flush``
        does, so that a loss in the last seconds is in its report)."""
        self._done.set()
        if self.is_alive():
            self.join()
        if self._offsets is not None:
            self._offsets.close()
            self._offsets = None

    def run(self) -> None:
        while not self._done.wait(self.every_s):
            self.check()

    def check(self) -> int:
        """Look once; returns the messages newly found lost (0 when the broker does not
        answer: it is down, and a producer's error callback says so)."""
        seen = self._look()
        self.answering = seen is not None
        if seen is None:
            return 0
        topic_id, ends, read, held = seen
        self._say_held(held)
        with self._lock:
            before, self._id = self._id, topic_id
            if before is None:  # the first answer: what follows is the caller's
                self._start = dict(ends)
            if topic_id == before or before is None:
                self._ends, self._read = ends, read
                return 0
            start, read = self._start, self._read
            lost = sum(
                max(0, end - max(start.get(p, 0), read.get(p, 0))) for p, end in self._ends.items()
            )
            # the caller's own count says more when it is the topic's only writer: what it
            # had acknowledged, less what is in the topic made anew, less what was processed
            acked, anew = self._acknowledged(), sum(ends.values())
            processed = sum(max(0, r - start.get(p, 0)) for p, r in read.items())
            lost = max(lost, acked - self._acked_base - anew - processed)
            # a topic made anew starts at offset 0: all of it came after the watch began
            self._start, self._ends, self._read = dict.fromkeys(ends, 0), ends, {}
            self._acked_base = acked - anew
            if before == "":  # the topic is back after it was found gone: counted then
                return 0
            self.lost += lost
            self.losses += 1
        log.log(
            logging.ERROR if lost else logging.WARNING,
            "the broker at %s lost topic %s (restarted on memory storage, or the topic was "
            "deleted): %s",
            self.broker, self.topic,
            f"about {lost} acknowledged messages written to it since this run began, and "
            "not yet processed, are gone" if lost else "no unprocessed message written to "
            "it since this run began is known to have been in it",
        )  # fmt: skip
        return lost

    def _say_held(self, held: int) -> None:
        """Warn each time the topic passes another ``warn_held`` messages held: a broker
        that keeps everything (the embedded one) grows until it is emptied."""
        self.held = held
        if self.warn_held and held >= self._warned_at + self.warn_held:
            self._warned_at = held - held % self.warn_held
            log.warning(
                "the broker holds %s messages of %s (the embedded broker keeps "
                "every message in memory, ~50 MB per million, and answers fetches more "
                "slowly as it fills; `workbench down` and `up` empty it once everything is "
                "processed)",
                f"{held:,}", self.topic,
            )  # fmt: skip

    def _look(self) -> tuple[str, dict[int, int], dict[int, int], int] | None:
        """The topic's id, the end offset of each partition, the group's committed offsets
        and the messages the topic holds; ``("", {}, {}, 0)`` when the topic does not
        exist, None when the broker does not answer.

        The group's offsets come through :class:`GroupOffsets`, not the admin client,
        whose coordinator requests can abort the process. Destroying an admin client that
        has requests out can hang, so one client serves every look, a metadata request
        asks first whether the broker answers at all, and the admin requests that follow
        get a timeout far above an answering broker's round trip.
        """
        try:
            if self.topic not in self._admin.list_topics(timeout=1.0).topics:
                return "", {}, {}, 0
            described = self._admin.describe_topics(
                TopicCollection([self.topic]), request_timeout=ADMIN_TIMEOUT_S
            )[self.topic].result()
            parts = [TopicPartition(self.topic, p.id) for p in described.partitions]
            ends = _offsets(self._admin, parts, OffsetSpec.latest(), ADMIN_TIMEOUT_S)
            starts = _offsets(self._admin, parts, OffsetSpec.earliest(), ADMIN_TIMEOUT_S)
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                return "", {}, {}, 0
            log.debug("topic watch: %s", exc)
            return None
        held = sum(max(0, end - starts.get(p, 0)) for p, end in ends.items())
        return str(described.topic_id), ends, self._processed(parts), held

    def _processed(self, parts: list[TopicPartition]) -> dict[int, int]:
        """The group's committed offsets; those of the last look when it cannot tell (the
        group is rebalancing, or has none)."""
        if self._offsets is None:
            return {}
        try:
            return self._offsets.read(parts, ADMIN_TIMEOUT_S) or self._read
        except KafkaException as exc:
            log.debug("topic watch: offsets of %s: %s", self.group, exc)
            return self._read
