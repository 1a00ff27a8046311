"""The consume loop: raw readings from Kafka into the sinks, offsets committed only after.

Messages are gathered into a batch (by size or by time, whichever comes first),
validated, and written in one database transaction; rejected messages go to the
dead-letter topic and table in the same step. Only when the database has committed
the batch and the broker has acknowledged the dead letters does the loop commit the
consumer offsets. A processor killed at any moment therefore re-reads at most the
batch in flight, and the idempotent sinks turn that redelivery into no change.

Several processors in one consumer group split the partitions between them; before a
partition is taken away in a rebalance, its buffered messages are flushed and their
offsets committed, so the next owner starts exactly where this one stopped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from workbench import kafka
from workbench.config import Settings
from workbench.errors import DeliveryError
from workbench.kafka import KafkaError, Message, TopicPartition
from workbench.processor.validate import Reading, Rejected, check
from workbench.sinks.postgres import PostgresSink

log = logging.getLogger(__name__)

#: Run id recorded for readings that arrive without a ``run_id`` header (real devices).
LIVE_RUN_ID = "live"


@dataclass
class ProcessorStats:
    """Running totals of one processor since it started."""

    consumed: int = 0
    stored: int = 0
    duplicates: int = 0
    deadlettered: int = 0
    batches: int = 0
    per_run: dict[str, int] = field(default_factory=dict)


class Processor:
    """Consume ``settings.topic_raw`` in ``settings.consumer_group`` into PostgreSQL.

    >>> # Processor(settings, bootstrap, database_url).run(stop_event)
    """

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        database_url: str,
        group_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.sink = PostgresSink(database_url, settings.connect_timeout_s)
        self.consumer = kafka.make_consumer(
            bootstrap, group_id or settings.consumer_group, settings.session_timeout_ms
        )
        self.deadletter = kafka.make_producer(bootstrap)
        self.stats = ProcessorStats()
        self._buffer: list[Message] = []
        self._buffer_since = 0.0
        self._assigned: set[int] = set()
        self._active_at = 0.0

    def run(
        self,
        stop: threading.Event | None = None,
        idle_timeout_s: float | None = None,
        max_messages: int | None = None,
        on_batch: Callable[[ProcessorStats], None] | None = None,
    ) -> ProcessorStats:
        """Process until ``stop`` is set, nothing arrived for ``idle_timeout_s``, or
        ``max_messages`` were consumed; then flush, commit and leave the group."""
        stop = stop or threading.Event()
        s = self.settings
        self.consumer.subscribe([s.topic_raw], on_assign=self._on_assign, on_revoke=self._on_revoke)
        # The idle clock runs from the last message or assignment, whichever is later, so
        # the wait for the group's first assignment (which, after a crash, includes the
        # dead member's session timeout) does not count as idleness.
        self._active_at = time.monotonic() + max(30.0, 3 * s.session_timeout_ms / 1000)
        try:
            while not stop.is_set():
                want = s.batch_size - len(self._buffer)
                messages = self.consumer.consume(num_messages=max(1, want), timeout=0.1)
                now = time.monotonic()
                for msg in messages:
                    err = msg.error()
                    if err is None:
                        if not self._buffer:
                            self._buffer_since = now
                        self._buffer.append(msg)
                    elif err.code() != KafkaError._PARTITION_EOF:
                        log.warning("consume error: %s", err.str())
                if messages:
                    self._active_at = max(self._active_at, now)
                if self._buffer and (
                    len(self._buffer) >= s.batch_size
                    or now - self._buffer_since >= s.batch_max_wait_s
                ):
                    self._flush()
                    if on_batch is not None:
                        on_batch(self.stats)
                if max_messages is not None and self.stats.consumed >= max_messages:
                    break
                if idle_timeout_s is not None and now - self._active_at >= idle_timeout_s:
                    log.info("no messages for %.1fs; stopping", idle_timeout_s)
                    break
            self._flush()
        finally:
            self.close()
        return self.stats

    def _flush(self) -> None:
        """Store the buffered batch, then commit its offsets."""
        if not self._buffer:
            return
        batch, self._buffer = self._buffer, []
        readings: list[Reading] = []
        dead: list[tuple] = []
        per_run: dict[str, int] = {}
        for msg in batch:
            run_id = _header(msg, "run_id") or LIVE_RUN_ID
            result = check(msg.value(), msg.key(), run_id)
            if isinstance(result, Rejected):
                dead.append(
                    (msg.topic(), msg.partition(), msg.offset(), run_id, result.reason,
                     msg.key(), msg.value())
                )  # fmt: skip
            else:
                readings.append(result)
                per_run[run_id] = per_run.get(run_id, 0) + 1
        written = self.sink.write(readings, dead)
        self._publish_dead_letters(dead)
        self._commit(batch)
        st = self.stats
        st.consumed += len(batch)
        st.stored += written.readings_inserted
        st.duplicates += written.readings_duplicate
        st.deadlettered += len(dead)
        st.batches += 1
        for run_id, n in per_run.items():
            st.per_run[run_id] = st.per_run.get(run_id, 0) + n
        log.debug(
            "batch of %d: %d stored, %d duplicate, %d dead-lettered",
            len(batch), written.readings_inserted, written.readings_duplicate, len(dead),
        )  # fmt: skip

    def _publish_dead_letters(self, dead: list[tuple]) -> None:
        if not dead:
            return
        tracker = kafka.DeliveryTracker()
        for topic, partition, offset, run_id, reason, key, value in dead:
            self.deadletter.produce(
                self.settings.topic_deadletter,
                key=key,
                value=value,
                headers=[
                    ("reason", reason.encode()),
                    ("run_id", run_id.encode()),
                    ("source", f"{topic}/{partition}/{offset}".encode()),
                ],
                on_delivery=tracker.callback,
            )
        self.deadletter.flush(30)
        if tracker.delivered != len(dead):
            # The table has them; the offsets are not committed, so they come back.
            raise DeliveryError(
                f"{len(dead) - tracker.delivered} of {len(dead)} dead letters to "
                f"{self.settings.topic_deadletter} were not acknowledged: {tracker.errors}"
            )

    def _commit(self, batch: list[Message]) -> None:
        next_offsets: dict[tuple[str, int], int] = {}
        for msg in batch:
            tp = (msg.topic(), msg.partition())
            next_offsets[tp] = max(next_offsets.get(tp, 0), msg.offset() + 1)
        offsets = [TopicPartition(t, p, o) for (t, p), o in next_offsets.items()]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except kafka.KafkaException as exc:
            # The rows are stored; a redelivery after this failure is absorbed by the
            # idempotent sinks, so this costs time, never correctness.
            log.warning("offset commit failed (%s); the batch may be redelivered", exc)

    def _on_assign(self, _consumer: kafka.Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned |= {p.partition for p in partitions}
        self._active_at = time.monotonic()
        log.info("assigned partitions %s", sorted(p.partition for p in partitions))

    def _on_revoke(self, _consumer: kafka.Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions %s revoked; flushing first", sorted(p.partition for p in partitions))
        self._flush()
        self._assigned -= {p.partition for p in partitions}

    def close(self) -> None:
        try:
            self.consumer.close()
        finally:
            self.deadletter.flush(10)
            self.sink.close()


def _header(msg: Message, name: str) -> str | None:
    for key, value in msg.headers() or ():
        if key == name and value is not None:
            return value.decode(errors="replace")
    return None
