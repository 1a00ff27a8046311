"""Avro records onto Kafka: the one path by which every source (simulator, replay, gateway)
publishes readings.

Messages are keyed by ``machine_id`` so that a machine's readings stay in order on one
partition; the run id travels as the ``run_id`` header. Every delivery report is
counted, so the caller always knows how many messages the broker acknowledged: nothing
is lost without being counted.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from workbench import kafka
from workbench.errors import DeliveryError
from workbench.schemas import READING, AvroCodec, ReadingEncoder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProduceReport:
    """What a producer handed to the broker and what the broker acknowledged."""

    sent: int
    delivered: int
    failed: int
    errors: dict[str, int] = field(default_factory=dict)
    #: SHA-256 over every (key, value) sent, in order: equal streams, equal digests.
    sha256: str = ""


class RecordProducer:
    """Encode records (readings by default) and produce them to ``topic``, keyed by machine.

    >>> # with RecordProducer(bootstrap, "telemetry.raw", run_id="r1") as p:
    >>> #     p.send({"machine_id": "m-0001", ...})
    >>> # p.report.delivered
    """

    def __init__(
        self, bootstrap: str, topic: str, run_id: str, codec: AvroCodec = READING, **config: Any
    ) -> None:
        self.topic = topic
        self.codec = codec
        # readings are the bulk of all traffic: they get the field-by-field encoder
        self._encode = ReadingEncoder(codec).encode if codec is READING else codec.encode
        self.headers = [("run_id", run_id.encode())]
        self._producer = kafka.make_producer(bootstrap, **config)
        self._tracker = kafka.DeliveryTracker()
        self._digest = hashlib.sha256()
        self._sent = 0
        self.report: ProduceReport | None = None

    def send(self, record: dict[str, Any]) -> None:
        self.send_raw(record["machine_id"].encode(), self._encode(record))

    def send_raw(self, key: bytes, value: bytes) -> None:
        """Produce already-encoded bytes (also how malformed messages are injected)."""
        self._digest.update(len(key).to_bytes(4, "big") + key)
        self._digest.update(len(value).to_bytes(4, "big") + value)
        while True:
            try:
                self._producer.produce(
                    self.topic,
                    value=value,
                    key=key,
                    headers=self.headers,
                    on_delivery=self._tracker.callback,
                )
                break
            except BufferError:  # local queue full: let the broker catch up
                self._producer.poll(0.05)
        self._sent += 1
        if self._sent % 1000 == 0:
            self._producer.poll(0)

    def end_of_run(self, keys: Iterable[bytes], timeout_s: float = 30.0) -> set[int]:
        """Tell processors the run has no more data: one ``control: end-of-run`` message per
        key (not counted as a record, not in the digest). Returns the partitions reached.

        A processor then makes every window of the run on that partition final at once,
        as a stream processor does when a bounded input ends, instead of waiting for the
        idle timeout.
        """
        reached: set[int] = set()

        def delivered(err: object, msg: Any) -> None:
            if err is None:
                reached.add(msg.partition())

        headers = [*self.headers, ("control", b"end-of-run")]
        for key in keys:
            self._producer.produce(self.topic, b"", key, headers=headers, on_delivery=delivered)
        self._producer.flush(timeout_s)
        return reached

    def flush(self, timeout_s: float = 60.0) -> ProduceReport:
        """Wait for every delivery report; raise if some never came back."""
        deadline = time.monotonic() + timeout_s
        remaining = self._producer.flush(timeout_s)
        while remaining and time.monotonic() < deadline:
            remaining = self._producer.flush(max(0.1, deadline - time.monotonic()))
        t = self._tracker
        self.report = ProduceReport(
            self._sent, t.delivered, t.failed, dict(t.errors), self._digest.hexdigest()
        )
        if remaining:
            raise DeliveryError(
                f"{remaining} of {self._sent} messages to {self.topic} were not acknowledged "
                f"within {timeout_s:g}s; the broker may be down"
            )
        if t.failed:
            log.error("%d messages to %s failed: %s", t.failed, self.topic, t.errors)
        return self.report

    def __enter__(self) -> RecordProducer:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.flush()
