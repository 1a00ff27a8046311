"""The consume loop: Kafka in, column batches through the steps, the writer out, offsets
committed only after the sinks have everything.

One ``consume()`` call is one micro-batch. Its messages become columns (:class:`Batch`),
are decoded and validated in bulk (:mod:`~workbench.processor.decode`), bad ones become dead
letters with their reason, and each partition's valid readings go through the steps
(:mod:`~workbench.processor.steps`) in offset order. The results of one or more micro-batches
are handed to the writer thread (:mod:`~workbench.processor.writer`) as one write: one
database transaction (readings, dead letters, windows, alerts, statistics and, every few
seconds, a checkpoint of each partition's state), then publishing, then the offsets are
committed by this thread.

Several processes in one consumer group split the partitions (``workbench process --workers
N``). Before a partition is taken away its results are written with a checkpoint; the next
owner restores it and resumes at its offset, so results do not depend on who processed what.

A partition is *idle* only when it has nothing left to read: the offset after the last
message handed to us has reached the partition's high watermark as the broker last reported
it in a fetch. Only then can wall time close a quiet run's windows (see
:mod:`~workbench.processor.watermark`).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import psycopg
import sqlalchemy.exc

from workbench import kafka
from workbench.config import Settings
from workbench.errors import ConfigError, DatabaseUnavailable, WorkbenchError
from workbench.kafka import TopicPartition
from workbench.processor import kernels, steps
from workbench.processor.batch import Batch, PartitionOutput, Rows, concat, rows_in
from workbench.processor.decode import MachineTable
from workbench.processor.intake import Intake
from workbench.processor.predict import Predictor
from workbench.processor.rules import RuleSet, load_rules
from workbench.processor.state import Checkpoint, EngineConfig, PartitionState
from workbench.processor.warmup import warm_up
from workbench.processor.watermark import NONE as NO_WATERMARK
from workbench.processor.windows import WindowConfig
from workbench.processor.writer import Publisher, SideWriter, Write, Writer, WriteResult
from workbench.sinks import Sink, WriteBatch, open_sink
from workbench.sinks import WriteResult as SinkResult
from workbench.sinks.postgres import redact

if TYPE_CHECKING:
    from workbench.metrics import ProcessorMetrics

log = logging.getLogger(__name__)
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
#: Latency samples kept for the percentiles (a uniform reservoir).
RESERVOIR = 50_000
#: Fetches answered with nothing this long, while messages wait unread, make the processor
#: wait longer for each fetch (up to MAX_FETCH_WAIT_MS; see Processor._widen_fetch_wait).
STARVED_S = 5.0
STARVED_POLLS = 20
MAX_FETCH_WAIT_MS = 1000

#: How long one consume() call waits for its batch to fill.
CONSUME_WAIT_S = 0.01
#: A caught-up processor hands over at once when it holds this many rows (a burst), else
#: when they are WORKBENCH_BATCH_MAX_WAIT_S old (a trickle: fewer transactions).
HAND_OVER_AT_ONCE = 500
#: (run, partition) pairs remembered as ended (for callers waiting on a run's end).
ENDED_KEPT = 10_000
#: How often the metrics' partition gauges (lag, watermark delay) are brought up to date.
PARTITION_METRICS_S = 1.0


@dataclass
class ProcessorStats:
    """Running totals of one processor since it started (owned by the consume thread)."""

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

    def record_latency(self, samples: np.ndarray) -> None:
        """Keep a uniform sample of at most :data:`RESERVOIR` latencies (reservoir sampling,
        a batch at a time)."""
        n = samples.size
        if not n:
            return
        room = RESERVOIR - len(self.latency_ms)
        if room > 0:
            self.latency_ms += samples[:room].tolist()
            samples = samples[room:]
        if samples.size:
            seen = self._seen + min(n, max(room, 0)) + np.arange(1, samples.size + 1)
            slots = (np.random.random(samples.size) * seen).astype(np.int64)
            keep = slots < RESERVOIR
            for j, ms in zip(slots[keep].tolist(), samples[keep].tolist(), strict=True):
                self.latency_ms[j] = ms
        self._seen += n

    def add(self, result: WriteResult) -> None:
        self.stored += result.stored
        self.duplicates += result.duplicates
        self.deadlettered += result.deadlettered
        self.late += result.late
        self.windows += result.windows
        self.alert_events += result.alert_events
        self.checkpoints += result.checkpoints
        self.batches += 1
        for run, n in result.per_run.items():
            self.per_run[run] = self.per_run.get(run, 0) + n


class _Ended:
    """A bounded set of (run id, partition): the newest :data:`ENDED_KEPT` pairs."""

    def __init__(self) -> None:
        self._items: OrderedDict[tuple[str, int], None] = OrderedDict()

    def add(self, item: tuple[str, int]) -> None:
        self._items[item] = None
        self._items.move_to_end(item)
        while len(self._items) > ENDED_KEPT:
            self._items.popitem(last=False)

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def __ge__(self, other: set) -> bool:
        return all(x in self._items for x in other)

    def __iter__(self):
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)


class Processor:
    """Consume ``settings.topic_raw`` in ``settings.consumer_group`` into the sinks.

    ``database_url`` is any URL :func:`workbench.sinks.open_sink` takes: PostgreSQL, or a
    SQLite file for the edge path. ``metrics``, when given, is kept up to date once per
    batch (and the partition gauges once a second); None (the default) costs nothing.

    ``broker`` is the :class:`~workbench.kafka.Endpoint` to consume from (``Endpoints.broker``);
    the processor's producer (clean, alerts, dead letters) writes to the same one.

    >>> # Processor(settings, endpoints.broker, database_url).run(stop_event)
    """

    def __init__(
        self,
        settings: Settings,
        broker: kafka.Endpoint,
        database_url: str,
        group_id: str | None = None,
        rules: RuleSet | None = None,
        sink: Sink | None = None,
        skip: Collection[tuple[int, int]] = (),
        metrics: ProcessorMetrics | None = None,
        predictors: Sequence[Predictor] | Literal["promoted"] = "promoted",
    ) -> None:
        self.settings = s = settings
        self.metrics = metrics
        self.broker = broker
        self.group_id = group_id or s.consumer_group
        self.rules = rules or load_rules(s.rules_file)
        self.limits = self.rules.validation
        self.config = EngineConfig(
            WindowConfig(
                widths_s=tuple(s.window_widths_s),
                allowed_lateness_s=s.allowed_lateness_s,
                idle_timeout_s=s.idle_timeout_s,
                late_policy=s.late_policy,
                correction_horizon_s=s.correction_horizon_s,
                cold_segment_values=s.cold_segment_values,
            ),
            max_clock_jump_s=s.max_clock_jump_s,
            rolling_history_s=s.rolling_history_s,
        )
        self.database_url = database_url
        #: the models scoring machine-minutes: by default the promoted versions of ``s.model``
        self.predictors = (_promoted(s, database_url) if predictors == "promoted"
                           else tuple(predictors))  # fmt: skip
        # PostgreSQL or SQLite by the URL's scheme; the benchmark passes a sink of its own
        self.sink = sink or open_sink(database_url, s.connect_timeout_s)
        self._fetch_wait_ms = s.fetch_wait_ms
        self.consumer = self._make_consumer()
        self.producer = kafka.make_producer(broker)
        self.machines = MachineTable()
        # (partition, offset) an operator wants past: dead letters, whatever they hold
        self.intake = Intake(self.machines, self.limits, s.topic_raw, skip)
        self.stats = ProcessorStats()
        self.partitions: dict[int, PartitionState] = {}
        # the second stage of each write (windows, checkpoints) has a connection of its own
        self._rest_sink: Sink = sink or open_sink(database_url, s.connect_timeout_s)
        self._writer = Writer(self._store, self._store_rest, Publisher(self.producer, s))
        self._encoder = ThreadPoolExecutor(1, thread_name_prefix="workbench-checkpoint")
        # provisional results go through a connection of their own (see SideWriter)
        self._side_sink: Sink = sink or open_sink(database_url, s.connect_timeout_s)
        self._side = SideWriter(self._side_store)
        self._pending: list[Write] = []  # outputs not yet handed to the writer
        self._pending_since = 0.0
        self._checkpointed: set[int] = set()  # partitions with a checkpoint of ours
        self._checkpoint_at: dict[int, float] = {}  # ... and when the last was taken
        self._encoding: Future[Checkpoint] | None = None  # the checkpoint being encoded
        self._last_provisional = 0.0
        self._position: dict[int, int] = {}  # next offset to read, per partition
        self._committed_at: dict[int, int] = {}  # offset committed on the broker, per partition
        self._last_marks: dict[int, tuple[int, int]] = {}  # (low, high) as the last fetch told
        self._newest_watermark: dict[int, int] = {}  # per partition, over its runs (metrics)
        self._metrics_due = 0.0
        self._idle_since: dict[int, float | None] = {}
        self._active_at = 0.0
        # since when, and how many, consume() calls in a row brought nothing
        self._empty_since, self._empty_polls = 0.0, 0
        #: (run id, partition) pairs whose end-of-run marker has been processed and stored
        self.ended = _Ended()
        #: monotonic time of the first message consumed (for throughput measurements)
        self.first_message_at = 0.0
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
        ``max_messages`` were consumed; then write, checkpoint, commit and leave the group."""
        stop = stop or threading.Event()
        s = self.settings
        if kernels.MODE == "jit":  # before joining: the first batch must not wait for code
            warm_up(self.config, self.rules, self.limits)
        self._subscribe()
        gc.collect()
        gc.freeze()  # what exists now lives for the whole run: the collector skips it
        try:
            while not stop.is_set():
                # consume() waits for a full batch or the timeout: wait only briefly, so a
                # burst goes on as soon as it is in (latency); with a backlog every call
                # returns a full batch at once (throughput).
                wait = min(s.batch_max_wait_s, CONSUME_WAIT_S)
                messages = self.consumer.consume(num_messages=s.batch_size, timeout=wait)
                now = time.monotonic()
                if messages:
                    self._active_at = max(self._active_at, now)
                    self._empty_polls = 0
                    self._take(messages, now)
                elif self._starved(now) and (unread := self._unread()):
                    self._widen_fetch_wait(unread)
                self._collect()
                self._watch_ends(now)
                if self.metrics is not None and now >= self._metrics_due:
                    self._observe_partitions(now)
                if self._pending or self._windows_may_be_due(now):
                    # caught up with a burst in hand: out now, not after the batch's age
                    caught_up = len(messages) < s.batch_size and self._pending_rows() >= (
                        HAND_OVER_AT_ONCE
                    )
                    self._hand_over(now, force=caught_up)
                    if on_batch is not None:
                        on_batch(self.stats)
                if max_messages is not None and self.stats.consumed >= max_messages:
                    break
                if idle_timeout_s is not None and now - self._active_at >= idle_timeout_s:
                    log.info("no messages for %.1fs; stopping", idle_timeout_s)
                    break
            self._hand_over(time.monotonic(), force=True, checkpoint=True)
            self._writer.drain()
            self._collect()
        finally:
            self.close()
        return self.stats

    def _pending_rows(self) -> int:
        return sum(rows_in(w.readings) + len(w.dead_letters) for w in self._pending)

    def _take(self, messages: list[kafka.Message], now: float) -> None:
        """One consume() call's messages: columns, decoded, through the steps."""
        started = time.perf_counter()
        batch = Batch.from_messages(messages, LIVE_RUN_ID)
        if not batch.size:
            return
        self.first_message_at = self.first_message_at or now
        consumed = batch.size - int(batch.control.sum())  # markers are not data
        self.stats.consumed += consumed
        for p, offset in batch.next_offsets().items():
            self._position[p] = max(self._position.get(p, 0), offset)
        taken = self.intake.take(batch, int(time.time() * 1000))
        out = PartitionOutput()
        ended: list[tuple[str, int]] = []
        for p in np.unique(batch.partition).tolist():
            state = self.partitions.get(p)
            if state is None:  # consumed before its assignment finished: start afresh
                state = self.partitions[p] = self._new_state()
            rows, markers = taken.partition(p)
            part = steps.process(state, rows, batch.run_names, markers, now)
            if self.metrics is not None:
                self._note_watermark(p, state)
            out.readings += part.readings
            out.windows += part.windows
            out.sensor_stats += part.sensor_stats
            out.predictions += part.predictions
            out.alerts += part.alerts
            ended += [(run, p) for run in part.ended]
            out.duplicates += part.duplicates
        write = Write(
            readings=self._name_machines(concat(out.readings)),
            dead_letters=taken.dead_letters,
            windows=concat(out.windows),
            sensor_stats=concat(out.sensor_stats),
            predictions=concat(out.predictions),
            alerts=out.alerts,
            offsets=batch.next_offsets(),
            ended=ended,
            duplicates=out.duplicates,
            created_ms=batch.created_ms,
        )
        if not self._pending:
            self._pending_since = now
        self._pending.append(write)
        if self.metrics is not None:
            self.metrics.consumed_batch(consumed, time.perf_counter() - started)

    def _name_machines(self, readings: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if readings:
            names = np.array(self.machines.names, dtype=object)
            readings["machine_id"] = names[readings["machine_id"]]
        return readings

    def _new_state(self) -> PartitionState:
        return PartitionState(self.config, self.rules, self.machines, self.predictors)

    def _make_consumer(self) -> kafka.Consumer:
        s = self.settings
        return kafka.make_consumer(
            self.broker, self.group_id, s.session_timeout_ms,
            **kafka.FAST_CONSUMER | {"fetch.wait.max.ms": self._fetch_wait_ms},
        )  # fmt: skip

    def _subscribe(self) -> None:
        s = self.settings
        self.consumer.subscribe([s.topic_raw], on_assign=self._on_assign, on_revoke=self._on_revoke)
        # The idle clock runs from the last message or assignment, whichever is later, so
        # the wait for the group's first assignment (which, after a crash, includes the
        # dead member's session timeout) does not count as idleness.
        self._active_at = time.monotonic() + max(30.0, 3 * s.session_timeout_ms / 1000)
        self._empty_polls = 0

    def _widen_fetch_wait(self, unread: int) -> None:
        """The broker holds unread messages but answers every fetch with none: it needs
        longer than the fetch may wait to find them (Tansu on memory storage does, as it
        fills), and a shorter wait gets nothing, ever. Wait twice as long from now on.

        librdkafka reads its settings once: the consumer is replaced. Closing it hands its
        partitions back as any rebalance does (written, checkpointed, committed), and the
        new one resumes from there.
        """
        if self._fetch_wait_ms >= MAX_FETCH_WAIT_MS:
            return
        before, self._fetch_wait_ms = (
            self._fetch_wait_ms,
            max(1, min(MAX_FETCH_WAIT_MS, 2 * self._fetch_wait_ms)),
        )
        log.warning(
            "the broker answered every fetch for %.0fs with nothing, though %d messages wait "
            "unread: it takes longer than fetch.wait.max.ms=%d to find them (the embedded "
            "broker slows as it fills; `workbench down` and `up` empty it once everything "
            "is processed); fetching with %d ms from now on",
            STARVED_S, unread, before, self._fetch_wait_ms,
        )  # fmt: skip
        self.consumer.close()
        self.consumer = self._make_consumer()
        self._subscribe()

    def _starved(self, now: float) -> bool:
        """True once every STARVED_S of consume() calls in a row that brought nothing
        (not of time alone: a loop held up by the database has not been starved)."""
        if self._empty_polls == 0:
            self._empty_since = now
        self._empty_polls += 1
        if self._empty_polls < STARVED_POLLS or now - self._empty_since < STARVED_S:
            return False
        self._empty_polls = 0  # the broker is asked once per STARVED_S
        return True

    def _marks(self, cached: bool) -> dict[int, tuple[int, int]]:
        """(low, high) watermarks of each assigned partition; (-1, -1) when unknown.
        ``cached``: as the last fetch told; else asked of the broker (fetches that come
        back empty may not tell)."""
        marks = {}
        for p in self.partitions:
            tp = TopicPartition(self.settings.topic_raw, p)
            try:
                marks[p] = self.consumer.get_watermark_offsets(tp, timeout=1.0, cached=cached)
            except kafka.KafkaException:
                marks[p] = (-1, -1)
        return marks

    def _unread(self) -> int:
        """Messages the broker holds past this processor's position in its partitions."""
        return sum(
            max(0, high - max(low, self._position.get(p, 0)))
            for p, (low, high) in self._marks(cached=False).items()
        )

    def _watch_ends(self, now: float) -> None:
        """Which partitions have nothing left to read, and since when."""
        self._last_marks = self._marks(cached=True)
        for p, (_low, high) in self._last_marks.items():
            at_end = high >= 0 and self._position.get(p, -1) >= high
            if not at_end:
                self._idle_since[p] = None
            elif self._idle_since.get(p) is None:
                self._idle_since[p] = now

    def _observe_partitions(self, now: float) -> None:
        """The metrics' gauges of each assigned partition: lag (the high watermark as the
        last fetch told, minus the offset committed; the log's start before any commit) and
        watermark delay (wall clock minus the newest watermark of the partition's runs, kept
        after they end: a partition that receives nothing falls further behind)."""
        assert self.metrics is not None
        self._metrics_due = now + PARTITION_METRICS_S
        lag = {
            p: max(0, high - self._committed_at.get(p, max(low, 0)))
            for p, (low, high) in self._last_marks.items()
            if high >= 0
        }
        for p, state in self.partitions.items():
            self._note_watermark(p, state)
        wall_ms = time.time() * 1000
        delay = {p: (wall_ms - self._newest_watermark[p]) / 1000
                 for p in self.partitions if p in self._newest_watermark}  # fmt: skip
        self.metrics.partitions(lag, delay)

    def _note_watermark(self, partition: int, state: PartitionState) -> None:
        """Keep the partition's newest watermark (for the metrics): a run's state is dropped
        soon after it ends, its watermark with it."""
        marks = state.clock.watermark
        if marks.size:
            newest = int(marks.max())  # runs without a watermark yet hold NO_WATERMARK
            if newest > self._newest_watermark.get(partition, NO_WATERMARK):
                self._newest_watermark[partition] = newest

    def _windows_may_be_due(self, now: float) -> bool:
        """Quiet partitions still close their windows: look every second or so."""
        return now - self._pending_since >= 1.0 and bool(self.partitions)

    # -- a write out -------------------------------------------------------------------

    def _hand_over(self, now: float, force: bool, checkpoint: bool = False) -> None:
        """Merge the pending micro-batches with what is due and give them to the writer,
        when there are enough of them, they are old enough, or ``force``."""
        s = self.settings
        pending = self._pending_rows()
        aged = now - self._pending_since >= s.batch_max_wait_s
        if not (force or pending >= s.batch_size or aged):
            return
        provisional = now - self._last_provisional >= s.provisional_interval_s
        if provisional:
            self._last_provisional = now
        extra = PartitionOutput()
        for p, state in list(self.partitions.items()):
            # Provisional results only for a partition that has caught up: while it works
            # through a backlog they would be out of date before they landed (finals, and
            # the statistics at a run's end, go out regardless).
            idle_since = self._idle_since.get(p)
            part = steps.due(state, now, provisional and idle_since is not None, idle_since,
                             s.idle_timeout_s)  # fmt: skip
            extra.windows += part.windows
            extra.sensor_stats += part.sensor_stats
            extra.predictions += part.predictions
            extra.provisional += part.provisional
            extra.provisional_stats += part.provisional_stats
        write = Write.merge(self._pending, windows=concat(extra.windows),
                            sensor_stats=concat(extra.sensor_stats),
                            predictions=concat(extra.predictions))  # fmt: skip
        self._pending = []
        self._pending_since = now
        checkpoints = []
        rotating = None if checkpoint else self._next_checkpoint(now)
        for p, state in self.partitions.items():
            # A partition's first commit always comes with a checkpoint: whoever owns it
            # next must find state at least as old as the committed offset.
            first = p not in self._checkpointed and p in write.offsets
            if not (checkpoint or first or p == rotating):
                continue
            self._checkpoint_at[p] = now  # its turn, even when there is no offset to save
            offset = write.offsets.get(p, self._position.get(p))
            if offset is None:
                offset = self._committed_position(p)
            if offset is None:
                continue
            if checkpoint:  # stopping or handing over: one at a time, encoded here
                snapshot: Any = state.snapshot()
            else:  # copied here, encoded (zstd, without the GIL) beside this thread
                snapshot = self._encoding = self._encoder.submit(state.capture().encode)
            checkpoints.append((self.group_id, s.topic_raw, p, offset, snapshot))
            self._checkpointed.add(p)
        for state in self.partitions.values():
            steps.forget_dropped(state)
        self._side.submit(Write(windows=concat(extra.provisional),
                                sensor_stats=concat(extra.provisional_stats)))  # fmt: skip
        write = write.with_checkpoints(checkpoints)
        if write.empty:
            return
        self._writer.submit(write)

    def _next_checkpoint(self, now: float) -> int | None:
        """The partition whose checkpoint is due (the longest without one), if no other is
        being encoded: partitions take turns, so one state's copy at a time is in memory."""
        if self._encoding is not None and not self._encoding.done():
            return None
        due = [
            (self._checkpoint_at.get(p, 0.0), p)
            for p in self.partitions
            if now - self._checkpoint_at.get(p, 0.0) >= self.settings.checkpoint_interval_s
        ]
        return min(due)[1] if due else None

    def _store(self, batch: WriteBatch) -> SinkResult:
        """In the writer's first thread: one transaction, retried while the database is
        down."""
        return self._retrying(lambda: self.sink.write(batch))

    def _store_rest(self, batch: WriteBatch) -> SinkResult:
        """In the writer's second thread, on its own connection (see :meth:`_store`)."""
        return self._retrying(lambda: self._rest_sink.write(batch), "_rest_sink")

    def _side_store(self, batch: WriteBatch) -> SinkResult:
        """In the side writer's thread: one try, and one more on a new connection."""
        try:
            return self._side_sink.write(batch)
        except _UNAVAILABLE:
            self._reconnect("_side_sink")
            return self._side_sink.write(batch)

    def _collect(self) -> None:
        """Take the writer's results: stats, ended runs, and commit their offsets."""
        results = self._writer.results()
        if not results:
            return
        offsets: dict[int, int] = {}
        for r in results:
            self.stats.add(r)
            created = r.created_ms[r.created_ms > 0]
            latency_ms = r.visible_ms - created  # event created -> its row visible in the database
            if latency_ms.size:
                self.stats.record_latency(latency_ms)
            if self.metrics is not None:
                self.metrics.written(r, latency_ms)
            for p, o in r.offsets.items():
                offsets[p] = max(offsets.get(p, 0), o)
            for item in r.ended:
                self.ended.add(item)
        if offsets:
            self._commit(offsets)
            self.last_commit_at = time.monotonic()

    def _retrying(self, action: Callable[[], Any], which: str = "sink") -> Any:
        """Run a database action; while the database is down, wait and retry with backoff.

        A write is one transaction, so a failed attempt left nothing behind, and nothing is
        committed to Kafka until an attempt succeeds: no loss, no duplicates. Waiting here
        is the back-pressure: nothing more is consumed meanwhile (so no partition looks
        idle). After ``WORKBENCH_DB_RETRY_TIMEOUT_S`` the processor gives up with a clear
        error, and the uncommitted batch comes back to whoever consumes the partition next.
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
                self._reconnect(which)

    def _reconnect(self, which: str = "sink") -> None:
        """Replace the connection in attribute ``which`` (``sink``, ``_rest_sink`` or
        ``_side_sink``) with a new one; keep the old when the database is still down."""
        with contextlib.suppress(psycopg.Error, sqlalchemy.exc.SQLAlchemyError):
            getattr(self, which).close()
        try:
            setattr(self, which, open_sink(self.database_url, self.settings.connect_timeout_s))
        except DatabaseUnavailable as exc:
            log.warning("database still unavailable: %s", exc.reason)
            return
        log.info("database connection re-established")

    def _commit(self, offsets: dict[int, int]) -> None:
        tps = [TopicPartition(self.settings.topic_raw, p, o) for p, o in offsets.items()]
        try:
            self.consumer.commit(offsets=tps, asynchronous=False)
            self._committed_at.update(offsets)
        except kafka.KafkaException as exc:
            # The rows are stored; a redelivery after this failure is absorbed by the
            # idempotent sinks, so this costs time, never correctness.
            log.warning("offset commit failed (%s); the batch may be redelivered", exc)

    def _committed_position(self, partition: int) -> int | None:
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
        self._collect()
        on_broker = self._committed(partitions)
        self._committed_at.update(on_broker or {})
        for tp in partitions:
            saved = self._retrying(
                lambda tp=tp: self.sink.checkpoint(self.group_id, tp.topic, tp.partition)
            )
            if saved is not None and on_broker is not None and tp.partition not in on_broker:
                log.info(
                    "partition %d: ignoring the checkpoint at offset %d: the broker has no "
                    "offset committed by group %s (a new broker, or the topic made again)",
                    tp.partition, saved[0], self.group_id,
                )  # fmt: skip
                saved = None
            state = None
            if saved is not None:
                offset, data, segments = saved
                try:
                    state = PartitionState.restore(self.config, self.rules, self.machines, data,
                                                   segments, self.predictors)  # fmt: skip
                except (ConfigError, ValueError, KeyError, OSError) as exc:
                    log.warning("partition %d: not restoring the checkpoint at offset %d "
                                "(%s); starting afresh", tp.partition, offset, exc)  # fmt: skip
            if state is None:
                self.partitions[tp.partition] = self._new_state()
                continue
            # monotonic clocks of two processes are unrelated: idleness is counted anew here
            state.last_wall = dict.fromkeys(range(len(state.keys.runs)), time.monotonic())
            self.partitions[tp.partition] = state
            self._checkpointed.add(tp.partition)
            self._checkpoint_at[tp.partition] = time.monotonic()
            tp.offset = offset
            self._position[tp.partition] = offset
            log.info("partition %d: state restored, resuming at offset %d", tp.partition, offset)
        consumer.assign(partitions)
        self._active_at = time.monotonic()
        log.info("assigned partitions %s", sorted(p.partition for p in partitions))

    def _committed(self, partitions: list[TopicPartition]) -> dict[int, int] | None:
        """The offsets the broker holds committed by our group, by partition (those without
        one left out), or None when it cannot tell (then checkpoints are trusted)."""
        query = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
        try:
            found = self.consumer.committed(query, timeout=self.settings.connect_timeout_s)
        except kafka.KafkaException as exc:
            log.warning("could not read the group's committed offsets (%s)", exc)
            return None
        return {tp.partition: tp.offset for tp in found if tp.offset >= 0}

    def _on_revoke(self, _consumer: kafka.Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {p.partition for p in partitions}
        log.info("partitions %s revoked; writing and checkpointing first", sorted(revoked))
        self._hand_over(time.monotonic(), force=True, checkpoint=True)
        self._writer.drain()  # stored and committed before another member takes over
        self._collect()
        for p in revoked:
            self.partitions.pop(p, None)
            self._checkpointed.discard(p)
            self._checkpoint_at.pop(p, None)
            self._position.pop(p, None)
            self._idle_since.pop(p, None)
            self._committed_at.pop(p, None)
            self._newest_watermark.pop(p, None)

    def close(self) -> None:
        try:
            self.consumer.close()
        finally:
            self._writer.stop()
            self._side.stop()
            self._encoder.shutdown()
            self.producer.flush(10)
            self.sink.close()
            for other in (self._rest_sink, self._side_sink):
                if other is not self.sink:
                    other.close()


__all__ = ["LIVE_RUN_ID", "Processor", "ProcessorStats", "Rows"]


def _promoted(settings: Settings, database_url: str) -> tuple[Predictor, ...]:
    """The promoted versions of the configured models (comma-separated names; "off": none).
    One that cannot be loaded is left out, and the processor says why and goes on."""
    found = []
    for name in (n.strip() for n in settings.model.split(",")):
        if not name or name == "off":
            continue
        try:
            predictor = Predictor.promoted(database_url, name)
        except (WorkbenchError, sqlalchemy.exc.SQLAlchemyError) as exc:
            log.warning("model %s does not score machine-minutes: %s", name,
                        str(exc).splitlines()[0])  # fmt: skip
            continue
        if predictor is not None:
            found.append(predictor)
    return tuple(found)
