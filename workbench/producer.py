"""Avro records onto Kafka: the one path by which every source (simulator, replay, gateway)
publishes readings.

Messages are keyed by ``machine_id`` so that a machine's readings stay in order on one
partition; the run id travels as the ``run_id`` header. Nothing is lost without being
counted: the broker reports every failed delivery (librdkafka's
``delivery.report.only.error``), so once ``flush()`` has nothing left in flight, every
message that did not fail was acknowledged. Delivered messages cost no Python call.

A batch of messages travels as one buffer and the offsets of its messages
(:meth:`RecordProducer.send_many`), as the simulator's vectorised encoder makes them: the
digest of the stream is then computed once per batch, and the loop around
``produce()`` is all that is left per message.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np

from workbench import kafka
from workbench.errors import DeliveryError
from workbench.schemas import READING, AvroCodec, ReadingEncoder

log = logging.getLogger(__name__)

#: ``poll(0)`` after this many messages sent one by one (``send``/``send_raw``).
POLL_EVERY = 1000


@dataclass(frozen=True)
class ProduceReport:
    """What a producer handed to the broker and what the broker acknowledged."""

    sent: int
    delivered: int
    failed: int
    errors: dict[str, int] = field(default_factory=dict)
    #: SHA-256 over every (key, value) sent, in order: equal streams, equal digests.
    sha256: str = ""
    #: acknowledged, then lost by the broker before they were processed (an estimate; see
    #: kafka.TopicWatch)
    lost: int = 0
    #: refused by a gateway before they reached the broker (workbench.gateway.client)
    rejected: int = 0


class Flushing:
    """A sender used as a context manager: flushed when its block ends cleanly, closed
    whatever happens (subclasses give ``flush`` and ``close``)."""

    def flush(self) -> ProduceReport:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        try:
            if exc_type is None:
                self.flush()
        finally:
            self.close()


class RecordProducer(Flushing):
    """Encode records (readings by default) and produce them to ``topic``, keyed by machine.

    ``broker`` is the :class:`~workbench.kafka.Endpoint` to produce to (``Endpoints.broker``
    of a stack), which carries the ``WORKBENCH_KAFKA_*`` properties.

    >>> # with RecordProducer(endpoints.broker, "telemetry.raw", run_id="r1") as p:
    >>> #     p.send({"machine_id": "m-0001", ...})
    >>> #     p.send_many([b"m-0001", b"m-0002"], buffer, offsets)   # encoded in bulk
    >>> # p.report.delivered
    """

    def __init__(
        self,
        broker: kafka.Endpoint,
        topic: str,
        run_id: str,
        codec: AvroCodec = READING,
        processed_by: str | None = None,
        warn_held: int | None = None,
        **config: Any,
    ) -> None:
        self.topic = topic
        self.codec = codec
        # readings are the bulk of all traffic: they get the field-by-field encoder
        self._encode = ReadingEncoder(codec).encode if codec is READING else codec.encode
        self.headers = [("run_id", run_id.encode())]
        self._broker, self._config = kafka.require_endpoint(broker), config
        self._tracker = kafka.DeliveryTracker()
        self._ready = threading.Event()
        self._errors = kafka.BrokerDown(str(broker))
        idempotence = config.get("enable.idempotence", broker.properties.get("enable.idempotence"))
        self._idempotent = str(idempotence).lower() == "true"
        self._renewed = 0
        self._producer = self._make_producer()
        self._digest = hashlib.sha256()
        self._sent = 0
        self.report: ProduceReport | None = None
        # a lost topic is told at once (what the group ``processed_by`` had read of it is
        # not counted lost), and each ``warn_held`` more messages the topic holds
        self._watch = kafka.TopicWatch(
            broker, topic, processed_by, self._acknowledged, warn_held=warn_held
        )
        self._watch.start()

    def _make_producer(self) -> kafka.Producer:
        return kafka.make_producer(
            self._broker,
            failures=self._tracker,
            ready=self._ready,
            **({"error_cb": self._errors} | self._config),
        )

    def _renew_if_broken(self) -> None:
        """A producer that can send nothing more is replaced by a new one, and the messages
        it holds are reported failed at once (they would fail a minute later otherwise).

        librdkafka gives up for good on a fatal error. An idempotent producer also stalls
        for good when the broker forgets its producer id, which a memory broker does when
        it restarts (``UnknownProducerId``): the topic watch has seen a topic made anew.
        """
        lost_topic = self._idempotent and self._watch.losses > self._renewed
        if self._errors.fatal is None and not lost_topic:
            return
        reason = self._errors.fatal or "the broker lost the topic and the idempotent producer's id"
        old, held = self._producer, len(self._producer)
        old.purge()  # each purged message comes back as a failed delivery report
        old.flush(5.0)
        self._errors.fatal, self._renewed = None, self._watch.losses
        self._producer = self._make_producer()
        log.error(
            "producer to %s renewed (%s): %d messages it held failed", self.topic, reason, held
        )

    def _acknowledged(self) -> int:
        """Messages the broker acknowledged so far: neither failed nor in flight."""
        return self._sent - self._tracker.failed - len(self._producer)

    def problems(self) -> str:
        """What is wrong with delivery so far, for a progress line: messages waiting for an
        absent broker, failed, or lost by it; "" when nothing is.

        >>> # p.problems()
        >>> # '12,000 waiting for the broker, 310 failed'
        """
        said = []
        if not self._watch.answering and (waiting := len(self._producer)):
            said.append(f"{waiting:,} waiting for the broker, which does not answer")
        if self._tracker.failed:
            said.append(f"{self._tracker.failed:,} failed")
        if self._watch.lost:
            said.append(f"about {self._watch.lost:,} unprocessed lost by the broker")
        return ", ".join(said)

    def connect(self, timeout_s: float = 5.0) -> bool:
        """Wait until the broker can take messages; False if it could not in ``timeout_s``.

        Nobody has to: messages sent before wait in the producer's queue. The producer's
        first handshake (its idempotent producer id) takes librdkafka 0.05 to 1 s, so a
        benchmark calls this before its clock starts, to time producing and not the start.
        """
        deadline = time.monotonic() + timeout_s
        while not self._ready.is_set() and time.monotonic() < deadline:
            self._producer.poll(0.01)  # librdkafka's log lines, which tell, come with poll()
        return self._ready.is_set()

    def send(self, record: dict[str, Any]) -> None:
        self.send_raw(record["machine_id"].encode(), self._encode(record))

    def send_raw(self, key: bytes, value: bytes) -> None:
        """Produce already-encoded bytes (also how malformed messages are injected)."""
        self._digest.update(len(key).to_bytes(4, "big") + key)
        self._digest.update(len(value).to_bytes(4, "big") + value)
        try:
            # produce(topic, value, key, partition, callback, on_delivery, timestamp, headers),
            # positional because parsing keywords costs as much as the call itself: -1 lets
            # the partitioner pick by key, 0 stamps the time of sending, failures go to the
            # producer-wide callback (the tracker)
            self._producer.produce(self.topic, value, key, -1, None, None, 0, self.headers)
        except BufferError:
            self._produce_when_room(key, value)
        self._sent += 1
        if self._sent % POLL_EVERY == 0:
            self._producer.poll(0)
            self._renew_if_broken()

    def send_many(self, keys: Sequence[bytes], buffer: bytes, offsets: Sequence[int]) -> None:
        """Produce ``len(keys)`` messages, message ``i`` being ``buffer[offsets[i]:offsets[i+1]]``.

        The same messages as that many :meth:`send_raw` calls, in the same order, with the
        same digest; the digest is updated once for the batch.
        """
        n = len(keys)
        if n == 0:
            return
        offsets = np.asarray(offsets, dtype=np.int64)
        if len(offsets) != n + 1:
            raise ValueError(f"{n} keys need {n + 1} offsets, got {len(offsets)}")
        self._digest.update(frames(keys, buffer, offsets))
        bounds = offsets.tolist()
        produce, topic, headers = self._producer.produce, self.topic, self.headers
        for key, start, end in zip(keys, bounds, bounds[1:]):  # noqa: B905 (one longer)
            value = buffer[start:end]
            try:
                produce(topic, value, key, -1, None, None, 0, headers)  # as in send_raw
            except BufferError:
                self._produce_when_room(key, value)
        self._sent += n
        self._producer.poll(0)
        self._renew_if_broken()

    def _produce_when_room(self, key: bytes, value: bytes) -> None:
        """The local queue is full: serve the broker's acknowledgements until it has room."""
        while True:
            self._producer.poll(0.05)
            try:
                self._producer.produce(self.topic, value, key, -1, None, None, 0, self.headers)
                return
            except BufferError:
                continue

    def end_of_run(self, keys: Iterable[bytes], timeout_s: float = 30.0) -> set[int]:
        """Tell processors the run has no more data: one ``control: end-of-run`` message per
        key (not counted as a record, not in the digest). Returns the partitions reached.

        A processor then makes every window of the run on that partition final at once,
        as a stream processor does when a bounded input ends, instead of waiting for the
        idle timeout. The markers follow the run's data on every partition: the data is
        acknowledged first. They go through a producer of their own that reports every
        delivery (this one reports failures only), without idempotence: a marker that a
        retry writes twice ends the run twice, which changes nothing.
        """
        remaining = self._producer.flush(timeout_s)
        if remaining:
            raise DeliveryError(
                f"{remaining} messages to {self.topic} were not acknowledged within "
                f"{timeout_s:g}s; the end of the run is not sent before them"
            )
        reached: set[int] = set()

        def delivered(err: object, msg: Any) -> None:
            if err is None:
                reached.add(msg.partition())

        control = kafka.make_producer(
            self._broker, **({"enable.idempotence": False} | self._config)
        )
        headers = [*self.headers, ("control", b"end-of-run")]
        for key in keys:
            control.produce(self.topic, b"", key, headers=headers, on_delivery=delivered)
        control.flush(timeout_s)
        return reached

    def flush(self, timeout_s: float = 60.0) -> ProduceReport:
        """Wait until every message is acknowledged or failed; raise if some are neither."""
        deadline = time.monotonic() + timeout_s
        remaining = self._producer.flush(min(1.0, timeout_s))
        while remaining and time.monotonic() < deadline:
            self._renew_if_broken()
            remaining = self._producer.flush(min(1.0, max(0.1, deadline - time.monotonic())))
        self._watch.check()
        t = self._tracker
        # failures are reported one by one; what is neither failed nor in flight was delivered
        delivered = self._sent - t.failed - remaining
        self.report = ProduceReport(
            self._sent,
            delivered,
            t.failed,
            dict(t.errors),
            self._digest.hexdigest(),
            self._watch.lost,
        )
        if remaining:
            raise DeliveryError(
                f"{remaining} of {self._sent} messages to {self.topic} were not acknowledged "
                f"within {timeout_s:g}s; the broker may be down"
            )
        if t.failed:
            log.error("%d messages to %s failed: %s", t.failed, self.topic, t.errors)
        return self.report

    def close(self) -> None:
        """Stop watching the topic (see :class:`~workbench.kafka.TopicWatch`)."""
        self._watch.close()


def frames(keys: Sequence[bytes], buffer: bytes, offsets: np.ndarray) -> np.ndarray:
    """The batch as the digest reads it: per message, the key's length (4 bytes, big-endian),
    the key, the value's length, the value.

    Built with array operations: each message's head (lengths and key) goes before its
    value. When all keys and all values have one length each (a tick of readings, mostly),
    heads and values are two matrices side by side.

    >>> frames([b"k", b"kk"], b"abcde", np.array([0, 2, 5])).tobytes()
    b'\\x00\\x00\\x00\\x01k\\x00\\x00\\x00\\x02ab\\x00\\x00\\x00\\x02kk\\x00\\x00\\x00\\x03cde'
    """
    n = len(keys)
    if n == 0:
        return np.zeros(0, dtype=np.uint8)
    key_len = np.fromiter(map(len, keys), dtype=np.int64, count=n)
    value_len = offsets[1:] - offsets[:-1]
    start, end = int(offsets[0]), int(offsets[-1])
    values = np.frombuffer(buffer, dtype=np.uint8, count=end - start, offset=start)
    widest = int(key_len.max())
    head = np.zeros((n, 8 + widest), dtype=np.uint8)
    head[:, :4] = key_len.astype(">u4").view(np.uint8).reshape(n, 4)
    head[:, 4 + widest :] = value_len.astype(">u4").view(np.uint8).reshape(n, 4)
    joined = np.frombuffer(b"".join(keys), dtype=np.uint8)
    if (key_len == widest).all():
        head[:, 4 : 4 + widest] = joined.reshape(n, widest)
        if (value_len == value_len[0]).all():
            return np.concatenate((head, values.reshape(n, -1)), axis=1).ravel()
        head_bytes = head.ravel()
    else:  # keys of several lengths: pad them to the widest, then drop the padding
        used = np.arange(widest) < key_len[:, None]
        head[:, 4 : 4 + widest][used] = joined
        mask = np.ones(head.shape, dtype=bool)
        mask[:, 4 : 4 + widest] = used
        head_bytes = head[mask]
    # head byte j of message i lands at its value's start + the head bytes before it
    at = np.repeat(offsets[:-1] - start, 8 + key_len) + np.arange(len(head_bytes))
    out = np.empty(end - start + len(head_bytes), dtype=np.uint8)
    out[at] = head_bytes
    rest = np.ones(len(out), dtype=bool)
    rest[at] = False
    out[rest] = values
    return out
