"""Storing and publishing a batch's results, in a thread of its own.

The consume thread hands a :class:`Write` (column sets per table, alert transitions, dead
letters, checkpoints and the offsets they cover) to the :class:`Writer` and goes on with the
next batch while this thread waits for the database and the broker. Each write is stored in
one transaction, then published, and comes back as an immutable :class:`WriteResult`; the
consume thread reads the results, updates its statistics and commits the offsets (the
consumer is not shared between threads). At most ``depth`` writes wait: a full queue blocks
the consume thread, which is the back-pressure when the database is slow or away. A failure
is kept and raised in the consume thread at its next hand-over or :meth:`Writer.drain`.

Publishing ``telemetry.clean`` is off unless configured (``WORKBENCH_PUBLISH_CLEAN``):
``reading`` sends one Avro ``clean_reading`` per reading, ``batch`` one Arrow IPC stream per
write with every enriched reading of it (header ``content-type:
application/vnd.apache.arrow.stream``), which costs a consumer far less to read.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from workbench import kafka
from workbench.config import Settings
from workbench.errors import DeliveryError
from workbench.processor.batch import concat, rows_in
from workbench.processor.hysteresis import AlertEvent
from workbench.processor.state import Checkpoint, Snapshot
from workbench.processor.watermark import NONE as NO_TS
from workbench.schemas import CleanReadingEncoder, codec_for
from workbench.sinks.columns import ROW_LAYOUTS, WriteBatch

log = logging.getLogger(__name__)
ARROW_STREAM = b"application/vnd.apache.arrow.stream"


@dataclass(frozen=True)
class Write:
    """One transaction's worth of results and the offsets it completes."""

    readings: dict[str, np.ndarray] = field(default_factory=dict)
    dead_letters: list[tuple] = field(default_factory=list)
    windows: dict[str, np.ndarray] = field(default_factory=dict)
    sensor_stats: dict[str, np.ndarray] = field(default_factory=dict)
    predictions: dict[str, np.ndarray] = field(default_factory=dict)
    alerts: list[tuple[str, AlertEvent]] = field(default_factory=list)
    checkpoints: list[tuple] = field(default_factory=list)
    offsets: dict[int, int] = field(default_factory=dict)
    ended: list[tuple[str, int]] = field(default_factory=list)
    duplicates: int = 0
    created_ms: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @classmethod
    def merge(cls, writes: list[Write], **extra: dict[str, np.ndarray]) -> Write:
        """Several micro-batches as one write, plus ``windows``/``sensor_stats``/
        ``predictions`` due."""
        offsets: dict[int, int] = {}
        for w in writes:
            for p, o in w.offsets.items():
                offsets[p] = max(offsets.get(p, 0), o)
        return cls(
            readings=concat([w.readings for w in writes]),
            dead_letters=[d for w in writes for d in w.dead_letters],
            windows=concat([*(w.windows for w in writes), extra.get("windows", {})]),
            sensor_stats=concat([*(w.sensor_stats for w in writes), extra.get("sensor_stats", {})]),
            predictions=concat([*(w.predictions for w in writes), extra.get("predictions", {})]),
            alerts=[a for w in writes for a in w.alerts],
            offsets=offsets,
            ended=[e for w in writes for e in w.ended],
            duplicates=sum(w.duplicates for w in writes),
            created_ms=np.concatenate([w.created_ms for w in writes])
            if writes
            else np.zeros(0, np.int64),
        )

    def with_checkpoints(self, checkpoints: list[tuple]) -> Write:
        return replace(self, checkpoints=checkpoints)

    @property
    def empty(self) -> bool:
        return not (rows_in(self.readings) or self.dead_letters or rows_in(self.windows)
                    or rows_in(self.sensor_stats) or rows_in(self.predictions) or self.alerts
                    or self.checkpoints or self.offsets)  # fmt: skip

    def alert_rows(self) -> list[tuple]:
        """One row per alert (its latest transition in this write), in the alerts table's
        column order (times in epoch ms)."""
        latest: dict[tuple[str, str], tuple] = {}
        for run_id, e in self.alerts:
            closed = e.event_ts if e.state == "closed" else None
            latest[(run_id, e.alert_id)] = (
                run_id, e.alert_id, e.rule, e.kind, e.severity,
                "closed" if e.state == "closed" else "open", e.machine_id, e.sensor_type,
                e.start_ts, e.opened_ts, e.event_ts, closed, e.peak, e.breaches, list(e.detects),
            )  # fmt: skip
        return list(latest.values())

    def to_sink(self) -> tuple[WriteBatch, WriteBatch]:
        """The sink's view, as two transactions: the readings and dead letters first (visible
        as soon as possible), then what depends on them (windows, alerts, statistics,
        predictions) with the
        checkpoints. A crash between the two leaves the offsets uncommitted: the batch is
        read again, its readings found stored, and the rest written then."""
        first = WriteBatch.from_rows(dead_letters=self.dead_letters)
        first = replace(first, readings=self.readings)
        rest = WriteBatch.from_rows(alerts=self.alert_rows())
        states, segments, dropped = _checkpoint_tables(self.checkpoints)
        return first, replace(rest, window_stats=self.windows,
                              sensor_stats=_stats_columns(self.sensor_stats),
                              predictions=self.predictions, processor_state=states,
                              processor_state_segments=segments,
                              dropped_segments=dropped)  # fmt: skip


def _checkpoint_tables(checkpoints: list[tuple]) -> tuple[dict, dict, list[tuple]]:
    """Checkpoint rows, the new segments of each and the segments to delete, as object
    columns (states and segments, megabytes each, are not copied). A checkpoint may come as
    a :class:`Snapshot` or the future of its encoding (the consume thread does not
    compress)."""
    states, segments, dropped = [], [], []
    for group, topic, partition, offset, state in checkpoints:
        done = _encoded(state)
        states.append((group, topic, partition, offset, done.state))
        segments += [(group, topic, partition, n, data) for n, data in done.segments.items()]
        dropped += [(group, topic, partition, n) for n in done.dropped]
    return (
        _objects(ROW_LAYOUTS["processor_state"], states),
        _objects(ROW_LAYOUTS["processor_state_segments"], segments),
        dropped,
    )


def _objects(names: tuple[str, ...], rows: list[tuple]) -> dict[str, np.ndarray]:
    if not rows:
        return {}
    out = {}
    for name, values in zip(names, zip(*rows, strict=True), strict=True):
        col = np.empty(len(values), dtype=object)
        col[:] = values
        out[name] = col
    return out


def _encoded(state: Future[Checkpoint] | Snapshot | Checkpoint) -> Checkpoint:
    if isinstance(state, Future):
        return state.result()
    return state.encode() if isinstance(state, Snapshot) else state


def _stats_columns(stats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """sensor_stats columns for the sink: a key without a value yet has no newest event
    time (NULL)."""
    if not stats:
        return {}
    out = dict(stats)
    last = out["last_ts"]
    out["last_ts"] = np.where(last == NO_TS, np.nan, last.astype(np.float64))
    return out


@dataclass(frozen=True)
class WriteResult:
    """What one write did, handed back to the consume thread. ``visible_ms`` is the wall
    time (epoch ms) its readings became visible in the database, ``write_s`` how long storing
    and publishing it took."""

    stored: int
    duplicates: int
    deadlettered: int
    late: int
    windows: int
    alert_events: int
    checkpoints: int
    offsets: dict[int, int]
    ended: tuple[tuple[str, int], ...]
    created_ms: np.ndarray
    per_run: dict[str, int]
    visible_ms: float = 0.0
    write_s: float = 0.0


class Publisher:
    """Clean readings (as configured), alert transitions and dead letters onto their topics;
    delivery reports counted by librdkafka's error-only reports, not a callback each."""

    def __init__(self, producer: kafka.Producer, settings: Settings) -> None:
        self.producer = producer
        self.settings = settings
        self.mode = settings.publish_clean
        self._clean = CleanReadingEncoder() if self.mode == "reading" else None
        self._alert_codec = codec_for("alert")

    def publish(self, write: Write) -> None:
        s, tracker = self.settings, kafka.DeliveryTracker()
        sent = 0

        def send(topic: str, key: bytes | None, value: bytes, headers: list) -> None:
            nonlocal sent
            while True:
                try:
                    self.producer.produce(topic, key=key, value=value, headers=headers,
                                          on_delivery=tracker.callback)  # fmt: skip
                    break
                except BufferError:
                    self.producer.poll(0.05)
            sent += 1

        r = write.readings
        if self.mode == "reading" and rows_in(r):
            encode = self._clean.encode
            cols = [r[c].tolist() for c in ("run_id", "machine_id", "ts", "sensor_type", "value",
                                            "status_code", "seq", "late", "score", "rolling_1",
                                            "rolling_2")]  # fmt: skip
            for run, machine, ts, sensor, value, status, seq, late, score, r1, r2 in zip(
                *cols, strict=True
            ):
                send(s.topic_clean, machine.encode(),
                     encode(run, machine, ts, sensor, _none(value), status, seq, late,
                            _none(score), _none(r1), _none(r2)),
                     [("run_id", run.encode())])  # fmt: skip
        elif self.mode == "batch" and rows_in(r):
            send(s.topic_clean, None, arrow_stream(r), [("content-type", ARROW_STREAM)])
        for run_id, e in write.alerts:
            value = self._alert_codec.encode(_alert_record(run_id, e))
            send(s.topic_alerts, e.machine_id.encode(), value, [("run_id", run_id.encode())])
        for topic, partition, offset, run_id, reason, key, value in write.dead_letters:
            headers = [("reason", reason.encode()), ("run_id", run_id.encode()),
                       ("source", f"{topic}/{partition}/{offset}".encode())]  # fmt: skip
            send(s.topic_deadletter, key, value, headers)
        if sent:
            self.producer.flush(30)
            if tracker.delivered != sent:
                # The database has the batch; the offsets are not committed, so it comes back.
                raise DeliveryError(
                    f"{sent - tracker.delivered} of {sent} processed messages were not "
                    f"acknowledged: {tracker.errors}"
                )


def arrow_stream(columns: dict[str, np.ndarray]) -> bytes:
    """Readings columns as one Arrow IPC stream (nulls where the value is NaN)."""
    import pyarrow as pa

    arrays = {}
    for name, col in columns.items():
        if col.dtype.kind == "f":
            arrays[name] = pa.array(col, mask=np.isnan(col))
        elif col.dtype == object:
            arrays[name] = pa.array(col.tolist(), pa.string()).dictionary_encode()
        else:
            arrays[name] = pa.array(col)
    table = pa.table(arrays)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def _none(x: float) -> float | None:
    return None if x != x else x


def _alert_record(run_id: str, e: AlertEvent) -> dict:
    return {"run_id": run_id, "alert_id": e.alert_id, "rule": e.rule, "kind": e.kind,
            "severity": e.severity, "state": e.state, "machine_id": e.machine_id,
            "sensor_type": e.sensor_type, "start_ts": e.start_ts, "event_ts": e.event_ts,
            "peak": e.peak, "value": e.value, "breaches": e.breaches}  # fmt: skip


class Writer:
    """Two threads that store and publish writes in order, at most ``depth`` waiting.

    The first stores each write's readings and dead letters (one transaction: visible), the
    second what depends on them (windows, alerts, statistics, checkpoints; a second
    transaction, on a connection of its own) and publishes. So the readings of the next
    write need not wait for the windows and checkpoints of this one. Offsets are committed
    (by the consume thread) only after the second stage: a crash in between leaves them
    uncommitted, the writes are read again, their readings found stored.
    """

    def __init__(
        self,
        store: Callable[[WriteBatch], Any],
        store_rest: Callable[[WriteBatch], Any],
        publisher: Publisher,
        depth: int = 2,
    ) -> None:
        self._store = store
        self._store_rest = store_rest
        self._publisher = publisher
        self._jobs: queue.Queue[Write | None] = queue.Queue(maxsize=depth)
        self._rest: queue.Queue[tuple | None] = queue.Queue(maxsize=depth)
        self._results: queue.SimpleQueue[WriteResult] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._threads = [
            threading.Thread(target=self._readings_loop, name="workbench-writer", daemon=True),
            threading.Thread(target=self._rest_loop, name="workbench-writer-2", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _readings_loop(self) -> None:
        while (write := self._jobs.get()) is not None:
            try:
                if self._error is None:  # after a failure, nothing more is written
                    started = time.perf_counter()
                    first, rest = write.to_sink()
                    written = self._store(first)
                    self._rest.put((write, rest, written, time.time() * 1000, started))
            except BaseException as exc:  # raised again in the consume thread
                self._error = exc
            finally:
                self._jobs.task_done()
        self._rest.put(None)
        self._jobs.task_done()

    def _rest_loop(self) -> None:
        while (job := self._rest.get()) is not None:
            try:
                if self._error is None:
                    self._results.put(self._complete(*job))
            except BaseException as exc:
                self._error = exc
            finally:
                self._rest.task_done()
        self._rest.task_done()

    def _complete(
        self, write: Write, rest: WriteBatch, written: Any, visible_ms: float, started: float
    ) -> WriteResult:
        if rest.tables():
            self._store_rest(rest)
        self._publisher.publish(write)
        r = write.readings
        per_run: dict[str, int] = {}
        if rows_in(r):
            runs, counts = np.unique(r["run_id"].astype(str), return_counts=True)
            per_run = dict(zip(runs.tolist(), counts.tolist(), strict=True))
        return WriteResult(
            stored=written.readings_inserted,
            duplicates=write.duplicates + written.readings_duplicate,
            deadlettered=len(write.dead_letters),
            late=int(r["late"].sum()) if rows_in(r) else 0,
            windows=rows_in(write.windows),
            alert_events=len(write.alerts),
            checkpoints=len(write.checkpoints),
            offsets=dict(write.offsets),
            ended=tuple(write.ended),
            created_ms=write.created_ms,
            per_run=per_run,
            visible_ms=visible_ms,
            write_s=time.perf_counter() - started,
        )

    def check(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, write: Write) -> None:
        self.check()
        self._jobs.put(write)

    def results(self) -> list[WriteResult]:
        """The results completed since the last call; raises a failure of the threads."""
        self.check()
        out = []
        while True:
            try:
                out.append(self._results.get_nowait())
            except queue.Empty:
                return out

    def drain(self) -> None:
        """Wait until every write handed over is complete (or failed)."""
        self._jobs.join()
        self._rest.join()
        self.check()

    def stop(self) -> None:
        self._jobs.put(None)
        for t in self._threads:
            t.join()


class SideWriter:
    """Provisional results (open windows, sensor statistics as of now) on a connection of
    their own, so that they never hold up readings.

    They are best effort by nature: each set supersedes the one before for the windows and
    sensors it names, and the sinks' merge rules keep a provisional result from replacing a
    final one (revision -1 never beats 0; statistics over fewer readings never beat more). A
    set that arrives while the previous one is still being written is merged into the one
    waiting (the newer row of a window wins), so the writer never falls behind; a failed
    write is logged and dropped (the finals and the statistics at a run's end are written by
    the main writer, with the checkpoints).
    """

    def __init__(self, store: Callable[[WriteBatch], Any]) -> None:
        self._store = store
        self._waiting: Write | None = None
        self._lock = threading.Condition()
        self._stopping = False
        self._busy = False
        self._thread = threading.Thread(target=self._loop, name="workbench-side-writer",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def submit(self, write: Write) -> None:
        if not (rows_in(write.windows) or rows_in(write.sensor_stats)):
            return
        with self._lock:
            w = self._waiting
            self._waiting = write if w is None else Write.merge([w, write])
            self._lock.notify()

    def _loop(self) -> None:
        while True:
            with self._lock:
                while self._waiting is None and not self._stopping:
                    self._lock.wait()
                if self._waiting is None:
                    return
                write, self._waiting, self._busy = self._waiting, None, True
            try:
                stats = _stats_columns(write.sensor_stats)
                self._store(WriteBatch(window_stats=write.windows, sensor_stats=stats))
            except Exception as exc:  # best effort: the next set, and the finals, follow
                log.warning("provisional results not written (%s)", exc)
            finally:
                with self._lock:
                    self._busy = False
                    self._lock.notify_all()

    def drain(self) -> None:
        """Wait until what was submitted is written (or dropped)."""
        with self._lock:
            while self._waiting is not None or self._busy:
                self._lock.wait()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        self._thread.join()
