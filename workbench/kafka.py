"""The Kafka client, behind one small module: producer, consumer and admin over confluent-kafka.

No other module imports ``confluent_kafka``; they get configured clients from here, so
client defaults (timeouts, batching, logging) are decided in one place and hold for the
embedded Tansu broker and for Apache Kafka alike.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from workbench.errors import BrokerUnavailable, StackError

__all__ = [
    "Consumer",
    "DeliveryTracker",
    "KafkaError",
    "KafkaException",
    "Message",
    "Producer",
    "TopicPartition",
    "check_broker",
    "ensure_topics",
    "make_consumer",
    "make_producer",
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


def _base_config(bootstrap: str, connect_timeout_s: float) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "socket.connection.setup.timeout.ms": max(1000, int(connect_timeout_s * 1000)),
        "logger": _RDKAFKA_LOGGER,
    }


def check_broker(bootstrap: str, timeout_s: float = 5.0) -> list[str]:
    """Ask the broker for its metadata; raise :class:`BrokerUnavailable` if it does not answer.

    Returns the topic names it knows, which doubles as proof that it speaks Kafka.
    """
    admin = AdminClient(_base_config(bootstrap, timeout_s))
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        reason = f"no answer within {timeout_s:g}s ({exc.args[0].str()})"
        raise BrokerUnavailable(bootstrap, reason) from None
    return sorted(metadata.topics)


def ensure_topics(
    bootstrap: str, topics: Iterable[str], partitions: int, timeout_s: float = 10.0
) -> None:
    """Create the topics that do not exist yet; existing ones are left as they are.

    A topic that exists with fewer partitions than asked is reported, not altered:
    growing partitions moves keys to other partitions, which is the operator's call.
    """
    admin = AdminClient(_base_config(bootstrap, timeout_s))
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
        [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in missing],
        operation_timeout=timeout_s,
    )
    for name, future in futures.items():
        try:
            future.result(timeout_s)
            log.info("created topic %s with %d partitions", name, partitions)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise StackError(f"could not create topic {name} on {bootstrap}: {exc}") from None


def make_producer(bootstrap: str, **overrides: Any) -> Producer:
    """A producer that waits for the broker's acknowledgement of every message.

    Idempotence keeps retries from writing a message twice; lz4 and a short linger
    batch small telemetry records efficiently.
    """
    config = _base_config(bootstrap, 5.0) | {
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 20,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 500_000,
    }
    return Producer(config | overrides)


def make_consumer(
    bootstrap: str, group_id: str, session_timeout_ms: int, **overrides: Any
) -> Consumer:
    """A consumer in ``group_id`` that never commits by itself.

    Offsets are committed by the caller once the sinks have the data (at-least-once),
    and a new group starts from the earliest offset so no produced event is skipped.
    """
    config = _base_config(bootstrap, 5.0) | {
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": session_timeout_ms,
        "heartbeat.interval.ms": max(100, session_timeout_ms // 10),
        "fetch.wait.max.ms": 100,
        "error_cb": _log_consumer_error,
    }
    return Consumer(config | overrides)


def _log_consumer_error(err: KafkaError) -> None:
    if err.fatal():
        log.error("consumer error: %s", err.str())
    else:
        log.debug("consumer transient error: %s", err.str())


@dataclass
class DeliveryTracker:
    """Counts delivery reports so that no produced message can be lost silently.

    Pass :meth:`callback` as ``on_delivery``; after ``flush()``, ``delivered + failed``
    equals the number of messages handed to the producer.
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
