"""The consume loop: raw readings in; windows, statistics, alerts and clean readings out;
offsets committed only after the sinks have everything.

Per message: decode and validate (bad ones go to the dead-letter topic and table with
the reason and the original bytes), then, in the state of the message's partition and
run, event-time windows and rolling means, River statistics and the alert rules. Messages
are gathered into a batch (by size or by time); a batch is written in one database
transaction (readings, dead letters, windows, alert lifecycle rows, and every few seconds
a checkpoint of each partition's state), then published (clean readings, alert
transitions, dead letters), and only then are the consumer offsets committed. A processor
killed at any moment re-reads from its last checkpoint, and the idempotent sinks make
that re-reading change nothing.

Several processors in one consumer group split the partitions. Before a partition is
taken away its batch is flushed and its state checkpointed; the next owner restores the
checkpoint and seeks to the offset it was taken at, so windows and statistics carry on
where they were.

A message with the header ``control: end-of-run`` ends its run on its partition: every
window of the run becomes final at once (the watermark of a finished bounded input is
+infinity), instead of waiting for the idle timeout.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import psycopg
import sqlalchemy.exc

from workbench import kafka
from workbench.config import Settings
from workbench.errors import DatabaseUnavailable, DeliveryError
from workbench.kafka import KafkaError, Message, TopicPartition
from workbench.processor.legacy.alerts import AlertEvent
from workbench.processor.rules import RuleSet, load_rules
from workbench.processor.legacy.state import PartitionState
from workbench.processor.validate import Reading, Rejected, Validator
from workbench.processor.legacy.windows import WindowConfig, WindowResult
from workbench.schemas import CleanReadingEncoder, codec_for
from workbench.sinks import open_sink
from workbench.sinks.postgres import WriteResult, redact

log = logging.getLogger(__name__)
T = TypeVar("T")
#: What a database that went away (or a SQLite file that stays locked) raises.
_UNAVAILABLE = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    sqlalchemy.exc.OperationalError,
    DatabaseUnavailable,
)

#: Run id recorded for readings that arrive without a ``run_id`` header (real devices).
LIVE_RUN_ID = "live"
END_OF_RUN = b"end-of-run"
#: A run's state is forgotten after this long without readings (once its windows are out).
QUIET_RUN_S = 600.0
#: Latency samples kept for the percentiles (a uniform reservoir).
RESERVOIR = 50_000


@dataclass
class ProcessorStats:
    """Running totals of one processor since it started."""

    consumed: int = 0
    stored: int = 0
    duplicates: int = 0
    deadlettered: int = 0
    late: int = 0
    windows: int = 0
    alert_events: int = 0
    batches: int = 0
    checkpoints: int = 0
    per_run: dict[str, int] = field(default_factory=dict)
    #: end-to-end latency samples (ms): producer create time to offsets committed
    latency_ms: list[float] = field(default_factory=list, repr=False)
    _seen: int = field(default=0, repr=False)

    def record_latency(self, ms: float) -> None:
        self._seen += 1
        if len(self.latency_ms) < RESERVOIR:
            self.latency_ms.append(ms)
        else:
            j = random.randrange(self._seen)
            if j < RESERVOIR:
                self.latency_ms[j] = ms


@dataclass
class _Batch:
    messages: list[Message] = field(default_factory=list)
    readings: list[Reading] = field(default_factory=list)
    dead: list[tuple] = field(default_factory=list)
    alerts: list[tuple[str, AlertEvent]] = field(default_factory=list)
    created_ms: list[int] = field(default_factory=list)


@dataclass
class _Job:
    """One batch on its way out: rows for every table, what to publish, what to commit."""

    batch: _Batch
    windows: list[tuple]
    alert_rows: list[tuple]
    checkpoints: list[tuple]
    sensor_stats: list[tuple]
    offsets: dict[int, int]
    ended: list[tuple[str, int]]


class _Writer:
    """A thread that completes batches in order, at most ``depth`` of them waiting.

    The consume thread hands a batch over and goes on folding the next one into the
    state while this thread waits for PostgreSQL and the broker. A full queue blocks the
    hand-over: that is the back-pressure when the database is slow. A failure is kept
    and raised in the consume thread at its next hand-over or :meth:`drain`.
    """

    def __init__(self, complete: Callable[[_Job], None], depth: int = 2) -> None:
        self._complete = complete
        self._jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="workbench-writer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                if self._error is None:  # after a failure, nothing more is written
                    self._complete(job)
            except BaseException as exc:  # raised again in the consume thread
                self._error = exc
            finally:
                self._jobs.task_done()
        self._jobs.task_done()

    def check(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, job: _Job) -> None:
        self.check()
        self._jobs.put(job)

    def drain(self) -> None:
        """Wait until every batch handed over is complete (or failed)."""
        self._jobs.join()
        self.check()

    def stop(self) -> None:
        self._jobs.put(None)
        self._thread.join()


class Processor:
    """Consume ``settings.topic_raw`` in ``settings.consumer_group`` into the sinks.

    ``database_url`` is any URL :func:`workbench.sinks.open_sink` takes: PostgreSQL, or a
    SQLite file for the edge path.

    >>> # Processor(settings, bootstrap, database_url).run(stop_event)
    """

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        database_url: str,
        group_id: str | None = None,
        rules: RuleSet | None = None,
    ) -> None:
        self.settings = s = settings
        self.bootstrap = bootstrap
        self.group_id = group_id or s.consumer_group
        self.rules = rules or load_rules(s.rules_file)
        self.validator = Validator(self.rules.validation)
        self.windows = WindowConfig(
            widths_s=tuple(s.window_widths_s),
            allowed_lateness_s=s.allowed_lateness_s,
            idle_timeout_s=s.idle_timeout_s,
            late_policy=s.late_policy,
        )
        self.database_url = database_url
        self.sink = open_sink(database_url, s.connect_timeout_s)  # PostgreSQL or SQLite
        self.consumer = kafka.make_consumer(bootstrap, self.group_id, s.session_timeout_ms)
        self.producer = kafka.make_producer(bootstrap)
        self.clean_encoder = CleanReadingEncoder()
        self.alert_codec = codec_for("alert")
        self.stats = ProcessorStats()
        self._writer = _Writer(self._complete)
        self._done: dict[int, int] = {}  # offsets stored and published, not yet committed
        self._done_lock = threading.Lock()
        self.partitions: dict[int, PartitionState] = {}
        self._batch = _Batch()
        self._batch_since = 0.0
        self._last_checkpoint = time.monotonic()
        self._checkpointed: set[int] = set()  # partitions with a checkpoint of ours
        self._last_provisional = 0.0
        self._active_at = 0.0
        #: (run id, partition) pairs whose end-of-run marker has been processed and flushed
        self.ended: set[tuple[str, int]] = set()
        #: monotonic time of the first message consumed (for throughput measurements)
        self.first_message_at = 0.0  # monotonic time of the first message consumed
        self.last_commit_at = 0.0  # ... and of the last offsets committed

    # -- the loop ----------------------------------------------------------------------

    def run(
        self,
        stop: threading.Event | None = None,
        idle_timeout_s: float | None = None,
        max_messages: int | None = None,
        on_batch: Callable[[ProcessorStats], None] | None = None,
    ) -> ProcessorStats:
        """Process until ``stop`` is set, nothing arrived for ``idle_timeout_s``, or
        ``max_messages`` were consumed; then flush, checkpoint, commit and leave the group."""
        stop = stop or threading.Event()
        s = self.settings
        self.consumer.subscribe([s.topic_raw], on_assign=self._on_assign, on_revoke=self._on_revoke)
        # The idle clock runs from the last message or assignment, whichever is later, so
        # the wait for the group's first assignment (which, after a crash, includes the
        # dead member's session timeout) does not count as idleness.
        self._active_at = time.monotonic() + max(30.0, 3 * s.session_timeout_ms / 1000)
        try:
            while not stop.is_set():
                want = s.batch_size - len(self._batch.messages)
                messages = self.consumer.consume(num_messages=max(1, want), timeout=0.1)
                now = time.monotonic()
                for msg in messages:
                    err = msg.error()
                    if err is None:
                        self._take(msg, now)
                    elif err.code() != KafkaError._PARTITION_EOF:
                        log.warning("consume error: %s", err.str())
                if messages:
                    self._active_at = max(self._active_at, now)
                batch = self._batch.messages
                full = len(batch) >= s.batch_size
                aged = bool(batch) and now - self._batch_since >= s.batch_max_wait_s
                self._writer.check()
                self._commit_done()
                if full or aged or (not batch and self._windows_may_be_due(now)):
                    self._flush(now)
                    if on_batch is not None:
                        on_batch(self.stats)
                if max_messages is not None and self.stats.consumed >= max_messages:
                    break
                if idle_timeout_s is not None and now - self._active_at >= idle_timeout_s:
                    log.info("no messages for %.1fs; stopping", idle_timeout_s)
                    break
            self._flush(time.monotonic(), checkpoint=True)
            self._writer.drain()
            self._commit_done()
        finally:
            self.close()
        return self.stats

    def _take(self, msg: Message, now: float) -> None:
        """Validate one message and fold it into its partition's state."""
        b = self._batch
        if not b.messages:
            self._batch_since = now
            self.first_message_at = self.first_message_at or now
        b.messages.append(msg)
        headers = dict(msg.headers() or ())
        run_id = headers.get("run_id", b"").decode(errors="replace") or LIVE_RUN_ID
        state = self.partitions.setdefault(msg.partition(), self._new_state())
        if headers.get("control") == END_OF_RUN:
            b.alerts.extend((run_id, e) for e in state.run(run_id).end())
            return
        _type, created_ms = msg.timestamp()
        b.created_ms.append(created_ms)
        result = self.validator.check(msg.value(), msg.key(), run_id)
        if isinstance(result, Rejected):
            b.dead.append((msg.topic(), msg.partition(), msg.offset(), run_id, result.reason,
                           msg.key(), msg.value()))  # fmt: skip
            return
        reading, events = state.run(run_id).process(result, now)
        b.readings.append(reading)
        b.alerts.extend((run_id, e) for e in events)

    def _new_state(self) -> PartitionState:
        return PartitionState(self.windows, self.rules)

    def _windows_may_be_due(self, now: float) -> bool:
        """Quiet partitions still close their windows: look every second or so."""
        return now - self._batch_since >= 1.0 and any(st.runs for st in self.partitions.values())

    # -- a batch out -------------------------------------------------------------------

    def _flush(self, now: float, checkpoint: bool = False) -> None:
        """Hand the batch and what is due to the writer thread, which writes it, publishes
        it and then commits its offsets, while this thread goes on consuming."""
        job = self._prepare(now, checkpoint)
        if job is not None:
            self._writer.submit(job)

    def _prepare(self, now: float, checkpoint: bool) -> _Job | None:
        """Everything a batch's write needs, taken from the state now (so a checkpoint is
        consistent with the offsets it records)."""
        b, self._batch = self._batch, _Batch()
        self._batch_since = now
        windows: list[tuple] = []
        ended: list[tuple[str, int]] = []
        provisional = now - self._last_provisional >= self.settings.provisional_interval_s
        if provisional:
            self._last_provisional = now
        sensor_stats: list[tuple] = []
        for partition, state in self.partitions.items():
            for run_id, run in state.runs.items():
                windows += [_window_row(run_id, w) for w in run.windows_due(now, provisional)]
                if provisional or run.ended:
                    sensor_stats += run.stats_due(run_id)
                if run.ended:
                    ended.append((run_id, partition))
        due = checkpoint or now - self._last_checkpoint >= self.settings.checkpoint_interval_s
        offsets = _next_offsets(b.messages)
        checkpoints = []
        for partition, state in self.partitions.items():
            # A partition's first commit always comes with a checkpoint: whoever owns it
            # next must find state at least as old as the committed offset.
            if not due and (partition in self._checkpointed or partition not in offsets):
                continue
            committed = offsets.get(partition, self._position(partition))
            if committed is not None:
                checkpoints.append((self.group_id, self.settings.topic_raw, partition,
                                    committed, state.snapshot()))  # fmt: skip
                self._checkpointed.add(partition)
        if due:
            self._last_checkpoint = now
        for state in self.partitions.values():
            state.evict_quiet(now, QUIET_RUN_S)
        if not (b.messages or windows or checkpoints):
            return None
        self.stats.consumed += len(b.messages)
        return _Job(b, windows, _alert_rows(b.alerts), checkpoints, sensor_stats, offsets, ended)

    def _complete(self, job: _Job) -> None:
        """In the writer thread: store, publish, commit, in that order."""
        b = job.batch
        written = self._write(
            b.readings, b.dead, job.windows, job.alert_rows, job.checkpoints, job.sensor_stats
        )
        self._publish(b)
        with self._done_lock:  # committed by the consume thread, the consumer's only user
            for partition, offset in job.offsets.items():
                self._done[partition] = max(self._done.get(partition, 0), offset)
        self.ended.update(job.ended)
        done_ms = time.time() * 1000
        st = self.stats
        for created in b.created_ms:
            if created > 0:
                st.record_latency(done_ms - created)
        st.stored += written.readings_inserted
        st.duplicates += written.readings_duplicate
        st.deadlettered += len(b.dead)
        st.late += sum(1 for r in b.readings if r.late)
        st.windows += len(job.windows)
        st.alert_events += len(b.alerts)
        st.batches += 1
        st.checkpoints += len(job.checkpoints)
        for r in b.readings:
            st.per_run[r.run_id] = st.per_run.get(r.run_id, 0) + 1

    def _publish(self, b: _Batch) -> None:
        """Clean readings, alert transitions and dead letters onto their topics."""
        s, tracker, produce = self.settings, kafka.DeliveryTracker(), self.producer.produce
        sent = 0

        def send(topic: str, key: bytes | None, value: bytes, headers: list) -> None:
            nonlocal sent
            while True:
                try:
                    produce(topic, key=key, value=value, headers=headers,
                            on_delivery=tracker.callback)  # fmt: skip
                    break
                except BufferError:
                    self.producer.poll(0.05)
            sent += 1

        if s.publish_clean:
            encode = self.clean_encoder.encode
            for run_id, machine, sensor, seq, ts, value, status, late, score, r1, r2 in b.readings:
                send(s.topic_clean, machine.encode(),
                     encode(run_id, machine, ts, sensor, value, status, seq, late, score, r1, r2),
                     [("run_id", run_id.encode())])  # fmt: skip
        for run_id, e in b.alerts:
            value = self.alert_codec.encode(_alert_record(run_id, e))
            send(s.topic_alerts, e.machine_id.encode(), value, [("run_id", run_id.encode())])
        for topic, partition, offset, run_id, reason, key, value in b.dead:
            headers = [
                ("reason", reason.encode()),
                ("run_id", run_id.encode()),
                ("source", f"{topic}/{partition}/{offset}".encode()),
            ]
            send(s.topic_deadletter, key, value, headers)
        if sent:
            self.producer.flush(30)
            if tracker.delivered != sent:
                # The database has the batch; the offsets are not committed, so it comes back.
                raise DeliveryError(
                    f"{sent - tracker.delivered} of {sent} processed messages were not "
                    f"acknowledged: {tracker.errors}"
                )

    def _write(self, *rows: list) -> WriteResult:
        """Write one batch, retrying while the database is down (see :meth:`_retrying`)."""
        return self._retrying(lambda: self.sink.write(*rows))

    def _retrying(self, action: Callable[[], T]) -> T:
        """Run a database action; while the database is down, wait and retry with backoff.

        A batch is one transaction, so a failed attempt left nothing behind, and nothing is
        committed to Kafka until an attempt succeeds: no loss, no duplicates. Waiting here
        is the back-pressure: nothing more is consumed meanwhile. After
        ``WORKBENCH_DB_RETRY_TIMEOUT_S`` the processor gives up with a clear error, and the
        uncommitted batch comes back to whoever consumes the partition next.
        """
        delay, deadline = 0.5, time.monotonic() + self.settings.db_retry_timeout_s
        while True:
            try:
                return action()
            except _UNAVAILABLE as exc:
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                if time.monotonic() + delay > deadline:
                    raise DatabaseUnavailable(redact(self.database_url), reason) from None
                log.warning("database unavailable (%s); retrying in %.1fs", reason, delay)
                time.sleep(delay)
                delay = min(2 * delay, 5.0)
                self._reconnect()

    def _reconnect(self) -> None:
        with contextlib.suppress(psycopg.Error, sqlalchemy.exc.SQLAlchemyError):
            self.sink.close()
        try:
            self.sink = open_sink(self.database_url, self.settings.connect_timeout_s)
            log.info("database connection re-established")
        except DatabaseUnavailable as exc:
            log.warning("database still unavailable: %s", exc.reason)

    def _commit_done(self) -> None:
        """Commit the offsets of the batches the writer has completed."""
        with self._done_lock:
            offsets, self._done = self._done, {}
        if offsets:
            self._commit(offsets)
            self.last_commit_at = time.monotonic()

    def _commit(self, offsets: dict[int, int]) -> None:
        tps = [TopicPartition(self.settings.topic_raw, p, o) for p, o in offsets.items()]
        try:
            self.consumer.commit(offsets=tps, asynchronous=False)
        except kafka.KafkaException as exc:
            # The rows are stored; a redelivery after this failure is absorbed by the
            # idempotent sinks, so this costs time, never correctness.
            log.warning("offset commit failed (%s); the batch may be redelivered", exc)

    def _position(self, partition: int) -> int | None:
        try:
            (tp,) = self.consumer.position([TopicPartition(self.settings.topic_raw, partition)])
        except kafka.KafkaException:
            return None
        return tp.offset if tp.offset >= 0 else None

    # -- rebalance ---------------------------------------------------------------------

    def _on_assign(self, consumer: kafka.Consumer, partitions: list[TopicPartition]) -> None:
        """Restore each partition's checkpoint and resume at the offset it was taken at.

        A checkpoint counts only while the broker still has an offset committed by this group
        for the partition. The checkpoints live in the database, the partition's log and the
        group's offsets on the broker; when the broker lost them (the embedded broker keeps
        its topics in memory, so every `workbench run` that starts its own stack has a new
        one), a checkpoint's offset points into a log that no longer exists, and seeking
        there would skip the new log's first messages. Such a partition starts afresh from
        the beginning; re-reading is what the idempotent sinks absorb.
        """
        self._writer.drain()  # the sink's connection is ours alone from here
        on_broker = self._committed(partitions)
        for tp in partitions:
            saved = self._retrying(
                lambda tp=tp: self.sink.checkpoint(self.group_id, tp.topic, tp.partition)
            )
            if saved is not None and on_broker is not None and tp.partition not in on_broker:
                log.warning(
                    "partition %d: ignoring the checkpoint at offset %d: the broker has no "
                    "offset committed by group %s (a new broker, or the topic made again)",
                    tp.partition, saved[0], self.group_id,
                )  # fmt: skip
                saved = None
            if saved is None:
                self.partitions[tp.partition] = self._new_state()
                continue
            offset, data = saved
            self.partitions[tp.partition] = PartitionState.restore(self.windows, self.rules, data)
            self._checkpointed.add(tp.partition)
            tp.offset = offset
            log.info("partition %d: state restored, resuming at offset %d", tp.partition, offset)
        consumer.assign(partitions)
        self._active_at = time.monotonic()
        log.info("assigned partitions %s", sorted(p.partition for p in partitions))

    def _committed(self, partitions: list[TopicPartition]) -> set[int] | None:
        """The partitions for which the broker holds an offset committed by our group, or
        None when it cannot tell (then checkpoints are trusted, as before)."""
        query = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
        try:
            found = self.consumer.committed(query, timeout=self.settings.connect_timeout_s)
        except kafka.KafkaException as exc:
            log.warning("could not read the group's committed offsets (%s)", exc)
            return None
        return {tp.partition for tp in found if tp.offset >= 0}

    def _on_revoke(self, _consumer: kafka.Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {p.partition for p in partitions}
        log.info("partitions %s revoked; flushing and checkpointing first", sorted(revoked))
        self._flush(time.monotonic(), checkpoint=True)
        self._writer.drain()  # stored and committed before another member takes over
        self._commit_done()
        for p in revoked:
            self.partitions.pop(p, None)
            self._checkpointed.discard(p)

    def close(self) -> None:
        try:
            self.consumer.close()
        finally:
            self._writer.stop()
            self.producer.flush(10)
            self.sink.close()


def _next_offsets(messages: list[Message]) -> dict[int, int]:
    offsets: dict[int, int] = {}
    for msg in messages:
        p = msg.partition()
        offsets[p] = max(offsets.get(p, 0), msg.offset() + 1)
    return offsets


def _window_row(run_id: str, w: WindowResult) -> tuple:
    return (run_id, w.machine_id, w.sensor_type, w.width_s, w.window_start_ms, w.window_end_ms,
            w.count, w.nulls, w.late, w.mean, w.min, w.max, w.stddev, w.quantile, w.final,
            w.revision)  # fmt: skip


def _alert_rows(events: list[tuple[str, AlertEvent]]) -> list[tuple]:
    """One row per alert: its latest transition in the batch wins."""
    latest: dict[tuple[str, str], tuple] = {}
    for run_id, e in events:
        closed = e.event_ts if e.state == "closed" else None
        latest[(run_id, e.alert_id)] = (
            run_id, e.alert_id, e.rule, e.kind, e.severity,
            "closed" if e.state == "closed" else "open", e.machine_id, e.sensor_type,
            e.start_ts, e.opened_ts, e.event_ts, closed, e.peak, e.breaches, list(e.detects),
        )  # fmt: skip
    return list(latest.values())


def _alert_record(run_id: str, e: AlertEvent) -> dict:
    return {"run_id": run_id, "alert_id": e.alert_id, "rule": e.rule, "kind": e.kind,
            "severity": e.severity, "state": e.state, "machine_id": e.machine_id,
            "sensor_type": e.sensor_type, "start_ts": e.start_ts, "event_ts": e.event_ts,
            "peak": e.peak, "value": e.value, "breaches": e.breaches}  # fmt: skip
