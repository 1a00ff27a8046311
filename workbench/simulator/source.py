"""The simulator as a message source: factory + chaos -> encoded readings, in delivery order.

Each tick the factory is stepped and its faults applied (``chaos``), every reading is
encoded, and the network faults act on the messages: ``loss`` drops a reading,
``duplicate`` sends it twice, ``malformed`` replaces it with bytes the processor must
dead-letter, and ``latency`` delays its delivery so that arrival order differs from event
time. Delivery runs on simulated time (a queue ordered by delivery time), so a run that
goes as fast as possible produces the same byte stream, in the same order, as one paced
in real time: equal seeds and parameters give equal streams.

A tick is handled as arrays, not a reading at a time: its readings are encoded at once
(:class:`~workbench.schemas.ReadingColumnsEncoder`), the network fates are drawn as masks
over them, and its messages leave as one batch (a buffer and the offsets of its messages)
that a producer sends with a single call.

Accounting that a run can check downstream::

    produced = stored + dead-lettered + dropped

where ``produced`` counts every reading the factory made (bursts included), ``dropped``
the readings lost on the way, and dead letters include every malformed message.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from workbench.schemas import ReadingColumnsEncoder, ReadingEncoder, codec_for, varint
from workbench.simulator.chaos import Injector, Magnitudes, ScriptedFault
from workbench.simulator.control import ChaosControl, Pace, RunProgress
from workbench.simulator.physics import (
    SENSORS,
    Factory,
    FactoryConfig,
    Tick,
    bounded,
    quantise,
)
from workbench.simulator.truth import GroundTruth

log = logging.getLogger(__name__)

NETWORK_KINDS = ("loss", "duplicate", "latency", "malformed")
#: Extra delay of a scripted latency window when the scenario gives none (seconds).
DEFAULT_WINDOW_DELAY_S = 10.0

Send = Callable[[bytes, bytes], None]


@dataclass
class SimulationCounts:
    """What a simulation made and did to it; ``chaos`` counts ground-truth events by kind."""

    produced: int = 0
    dropped: int = 0
    duplicates: int = 0
    malformed: int = 0
    sent: int = 0
    first_ts: int | None = None
    last_ts: int | None = None
    chaos: dict[str, int] = field(default_factory=dict)


class BatchSend(Protocol):
    """A sender that takes many messages at once (:class:`workbench.producer.RecordProducer`)."""

    def send_many(self, keys: Sequence[bytes], buffer: bytes, offsets: np.ndarray) -> None: ...


class Simulation:
    """One run of a factory with chaos, producing messages through ``send(key, value)``.

    A tick's readings are encoded and routed through the network faults as arrays. A
    sender with a ``send_many(keys, buffer, offsets)`` method (a ``RecordProducer``, or its
    ``send_raw``) gets each tick's messages as one batch; any other callable gets them one
    by one. The messages and their order are the same either way.

    >>> sim = Simulation(FactoryConfig(machines=2, seed=1, start_ms=0), "r1",
    ...                  ChaosControl({"duplicate": 1.0}))
    >>> out = []
    >>> counts = sim.run(lambda k, v: out.append(k), duration_s=2)
    >>> counts.produced, counts.sent, counts.chaos
    (18, 36, {'duplicate': 18})
    """

    def __init__(
        self,
        config: FactoryConfig,
        run_id: str,
        control: ChaosControl | None = None,
        scripted: list[ScriptedFault] | None = None,
        magnitudes: Magnitudes | None = None,
    ) -> None:
        self.factory = Factory(config)
        self.control = control or ChaosControl()
        self.truth = GroundTruth(run_id, source="chaos")
        scripted = scripted or []
        self.injector = Injector(
            self.factory,
            self.control,
            self.truth,
            magnitudes,
            [s for s in scripted if s.kind not in NETWORK_KINDS],
        )
        self.windows = sorted(
            (s for s in scripted if s.kind in NETWORK_KINDS), key=lambda s: s.at_ms
        )
        self.counts = SimulationCounts()
        self.encoder = ReadingColumnsEncoder(self.factory.machine_ids)
        self._one = ReadingEncoder()  # burst samples come one at a time
        self.rng = np.random.default_rng([config.seed, 0x4E7])
        self._keys = [m.encode() for m in self.factory.machine_ids]
        self._ids = [self._one.string(m) for m in self.factory.machine_ids]
        self._queue = _DelayQueue()
        self._order = 0
        self._send: Send | BatchSend = lambda k, v: None
        # the batch form of _send, made again whenever _send changes
        self._sender, self._send_many = self._send, _batch_sender(self._send)
        self._latency_since: list[int | None] = [None] * config.machines
        self._latency_mean_ms = 0.0
        self._window_hits: dict[int, int] = {}
        self._window_machines: dict[tuple[str, int], ScriptedFault] = {}
        self._wrong_schema_header = codec_for("chaos_event").header
        self._layouts: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray, list[bytes]]] = {}

    # -- the loop --------------------------------------------------------------------

    def run(
        self,
        send: Send | BatchSend,
        duration_s: float,
        realtime: bool = False,
        stop: threading.Event | None = None,
        on_progress: Callable[[Simulation], None] | None = None,
        progress_every_s: float = 1.0,
        pace: Pace | None = None,
        progress: RunProgress | None = None,
    ) -> SimulationCounts:
        """Simulate ``duration_s`` seconds of event time; return the counts.

        ``send`` is ``send(key, value)`` or an object with ``send_many`` (see the class).
        ``realtime`` sends each tick when its event time comes round on the wall clock.
        ``pace``, when given, paces the run instead (``realtime`` is then ignored): a
        target in readings per wall second that another thread may change at any moment;
        the schedule re-anchors at each change, and ``None`` runs as fast as possible.
        ``stop`` ends the run early (the rest is then finished as at the end).
        ``on_progress`` is called about every ``progress_every_s`` seconds of wall time
        (and at the end), from this thread: the place to publish ground truth or plot.
        ``progress`` is updated every tick, for other threads to read.
        """
        self._send = send
        f = self.factory
        ticks = max(0, round(duration_s * f.tick_hz))
        wall0 = last_progress = time.monotonic()
        pacer = _Pacer(pace, f.config.events_per_second() * f.dt_s) if pace is not None else None
        for n in range(ticks):
            if stop is not None and stop.is_set():
                log.info("simulation stopped after %.0f s of event time", n * f.dt_s)
                break
            if pacer is not None:
                if pacer.wait(n, stop):
                    log.info("simulation stopped after %.0f s of event time", n * f.dt_s)
                    break
            elif realtime:
                wait = wall0 + n * f.dt_s - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            self.step()
            if progress is not None:
                progress.update(f.index * f.dt_s, self.counts.produced, self.counts.dropped)
            if on_progress is not None and time.monotonic() - last_progress >= progress_every_s:
                last_progress = time.monotonic()
                on_progress(self)
        self.finish()
        if progress is not None:
            counts = self.counts
            progress.update(f.index * f.dt_s, counts.produced, counts.dropped, finished=True)
        if on_progress is not None:
            on_progress(self)
        return self.counts

    def step(self) -> None:
        """One tick: faults, physics, readings, network, delivery of what is due."""
        f, counts = self.factory, self.counts
        intensity = self.control.snapshot()
        now = f.now_ms
        self._track_latency(intensity["latency"], now)
        self.injector.before_step(intensity)
        tick = f.step()
        self.injector.apply(tick, intensity)
        if counts.first_ts is None:
            counts.first_ts = tick.ts_ms
        counts.last_ts = tick.ts_ms
        windows = self._active_windows(now)
        bursting = self.injector.bursting(now)
        out = _Outbox(*self._encode(tick), queueing=self._queueing)
        status = tick.status.tolist()
        n = len(self._keys)
        for block, (sensor, values) in enumerate(tick.values.items()):
            lost, dup, bad, delay = self._network_draws(n, intensity, windows)
            rows = np.arange(block * n, (block + 1) * n)
            self._route(out, rows, sensor, tick.ts_ms, lost, dup, bad, delay)
            if bursting.any():
                self._emit_burst(out, sensor, values, bursting, status, tick.ts_ms, intensity,
                                 windows)  # fmt: skip
        self.injector.close_bursts(now)
        self._dispatch(out)
        self._deliver_due(tick.ts_ms)

    def finish(self) -> None:
        """Deliver everything still queued and close every open fault episode."""
        last = self.counts.last_ts if self.counts.last_ts is not None else self.factory.now_ms
        self._deliver_due(None)
        self.injector.finish(last)
        self._track_latency(0.0, last)
        self._close_windows(None, last)
        self.counts.chaos = self.truth.counts()

    # -- readings to messages ----------------------------------------------------------

    def _encode(self, tick: Tick) -> tuple[bytes, np.ndarray, np.ndarray, list[bytes]]:
        """The tick's readings as messages, a block of every machine per sensor in the
        tick's order: (buffer, offsets, machine and key of each)."""
        sensors = tuple(tick.values)
        layout = self._layouts.get(sensors)
        if layout is None:
            n = len(self._keys)
            index = [self.encoder.sensor_index[s] for s in sensors]
            layout = self._layouts[sensors] = (
                np.tile(np.arange(n), len(sensors)),
                np.repeat(np.array(index, dtype=np.int64), n),
                self._keys * len(sensors),
            )
        machine, sensor, keys = layout
        if not sensors:
            return b"", np.zeros(1, dtype=np.int64), machine, keys
        value = np.concatenate(list(tick.values.values()))
        seq = np.concatenate([tick.seq[s] for s in sensors])
        status = np.tile(tick.status, len(sensors))
        buffer, offsets = self.encoder.encode(machine, tick.ts_ms, sensor, value, status, seq)
        return buffer, offsets, machine, keys

    def _emit_burst(self, out, sensor, values, bursting, status, ts_ms, intensity, windows):
        """Extra samples between this tick and the next, for machines in a burst."""
        f, factor = self.factory, self.injector.m.burst_factor
        spec = SENSORS[sensor]
        step_ms = f.dt_s * 1000 / factor
        for i in np.flatnonzero(bursting).tolist():
            for j in range(1, factor):
                t = ts_ms + round(j * step_ms)
                v = values[i]
                if v == v:
                    v = quantise(v + self.rng.normal(0, spec["noise"]), spec["resolution"])
                    v = float(bounded(sensor, v))  # a full battery's noise reads 100 %, not more
                seq = int(f.seq[sensor][i])
                f.seq[sensor][i] += 1
                self.injector.burst_extra[i] += 1
                message = self._one.encode_parts(
                    self._ids[i], varint(t), self._one.sensor_bytes[sensor],
                    None if v != v else v, status[i], seq,
                )  # fmt: skip
                lost, dup, bad, delay = self._network_draws(1, intensity, windows, machine=i)
                row = np.array([out.add(i, message)])
                self._route(out, row, sensor, t, lost, dup, bad, delay, machine=i)

    def _network_draws(self, n, intensity, windows, machine=None):
        """Per-reading network fates: lost, duplicated, malformed (masks), delay in ms."""
        rng = self.rng
        self._window_machines = {}
        p_loss, p_dup, p_bad = intensity["loss"], intensity["duplicate"], intensity["malformed"]
        lost = rng.random(n) < p_loss if p_loss > 0 else None
        dup = rng.random(n) < p_dup if p_dup > 0 else None
        bad = rng.random(n) < p_bad if p_bad > 0 else None
        mean_ms = intensity["latency"] * 1000
        delay = rng.exponential(mean_ms, n).round().astype(np.int64) if mean_ms > 0 else None
        if windows:
            lost, dup, bad, delay = self._apply_windows(n, windows, machine, lost, dup, bad, delay)
        return lost, dup, bad, delay

    def _route(self, out, rows, sensor, ts_ms, lost, dup, bad, delay, machine=None):
        """Send readings ``rows`` (of machines ``0..n-1``, or all of ``machine``) through
        their network fates, in order: a lost one is counted and left out, a malformed one
        replaced, a duplicated one sent twice (the copy up to 200 ms later when queueing)."""
        counts = self.counts
        n = len(rows)
        counts.produced += n
        due = ts_ms if delay is None else ts_ms + delay
        faulty = _union(lost, dup, bad)
        if faulty is None or not faulty.any():
            out.emit(rows, due)
            return
        rows, copies, jitter = rows.copy(), np.ones(n, dtype=np.int64), {}
        ids, truth, hit = self.factory.machine_ids, self.truth, self._count_window_hit
        # fates one reading after the other: the draws they make come in reading order
        for i in np.flatnonzero(faulty).tolist():
            m = i if machine is None else machine
            if lost is not None and lost[i]:
                copies[i] = 0
                counts.dropped += 1
                hit("loss", m) or truth.record("loss", ids[m], sensor, ts_ms, ts_ms, 1.0)
            elif bad is not None and bad[i]:
                counts.malformed += 1
                variant, message = self._malform(out.message(int(rows[i])))
                rows[i] = out.add(m, message)
                hit("malformed", m) or truth.record(
                    "malformed", ids[m], sensor, ts_ms, ts_ms, 1.0, detail=variant
                )
            else:
                copies[i] = 2
                counts.duplicates += 1
                hit("duplicate", m) or truth.record("duplicate", ids[m], sensor, ts_ms, ts_ms, 1.0)
                jitter[i] = int(self.rng.integers(0, 200)) if out.queueing else 0
        if not out.queueing:
            out.emit(np.repeat(rows, copies), None)
            return
        due = np.repeat(np.broadcast_to(due, (n,)), copies)
        last_copy = np.cumsum(copies) - 1
        for i, extra_ms in jitter.items():
            due[last_copy[i]] += extra_ms
        out.emit(np.repeat(rows, copies), due)

    def _malform(self, message: bytes) -> tuple[str, bytes]:
        variant = ("garbage", "truncated", "wrong-schema")[int(self.rng.integers(3))]
        if variant == "garbage":
            junk = self.rng.integers(0, 256, len(message), dtype=np.uint8).tobytes()
            return variant, b"\x00" + junk[1:]
        if variant == "truncated":
            return variant, message[: len(message) // 2]
        return variant, self._wrong_schema_header + message[10:]

    # -- delivery --------------------------------------------------------------------

    @property
    def _queueing(self) -> bool:
        """Whether messages go through the delivery queue (some may be delayed).

        Constant within a tick: it changes with the latency intensity and scripted windows,
        read before the tick's messages are made, and a queue that is empty when they are
        made stays empty unless messages are queued.
        """
        return bool(self._latency_mean_ms > 0 or len(self._queue) or self.windows)

    def _dispatch(self, out: _Outbox) -> None:
        """The tick's messages: sent now, or queued until they are due."""
        machine, keys, buffer, offsets, due = out.messages()
        if not len(machine):
            return
        if out.queueing:
            order = self._order + 1 + np.arange(len(machine))
            self._order += len(machine)
            self._queue.push(due, order, machine, buffer, offsets)
        else:
            self._send_batch(machine, buffer, offsets, keys)

    def _deliver_due(self, now_ms: int | None) -> None:
        if len(self._queue):
            machine, buffer, offsets = self._queue.pop_due(now_ms)
            if len(machine):
                self._send_batch(machine, buffer, offsets)

    def _send_batch(
        self, machine: np.ndarray, buffer: bytes, offsets: np.ndarray, keys: list | None = None
    ) -> None:
        if self._send is not self._sender:
            self._sender, self._send_many = self._send, _batch_sender(self._send)
        if keys is None:
            keys = [self._keys[m] for m in machine.tolist()]
        self._send_many(keys, buffer, offsets)
        self.counts.sent += len(machine)

    # -- latency episodes and scripted network windows -----------------------------------

    def _track_latency(self, mean_s: float, now: int) -> None:
        """Ground truth for latency: one event per machine per stretch at one mean delay."""
        mean_ms = mean_s * 1000
        if mean_ms == self._latency_mean_ms:
            return
        ids = self.factory.machine_ids
        if self._latency_mean_ms > 0:
            for m, since in enumerate(self._latency_since):
                if since is not None and since < now:
                    self.truth.record("latency", ids[m], None, since, now, self._latency_mean_ms,
                                      detail="exponential delivery delay, mean in ms")  # fmt: skip
        self._latency_since = [now if mean_ms > 0 else None] * len(ids)
        self._latency_mean_ms = mean_ms

    def _active_windows(self, now: int) -> list[ScriptedFault]:
        self._close_windows(now, now)
        return [w for w in self.windows if w.at_ms <= now < self._window_end(w)]

    @staticmethod
    def _window_end(w: ScriptedFault) -> int:
        return w.at_ms + int(1000 * (w.duration_s or 0))

    def _close_windows(self, now: int | None, last_ms: int) -> None:
        still = []
        for w in self.windows:
            end = self._window_end(w)
            if now is None or end <= now:
                if w.at_ms <= last_ms:
                    hits = float(self._window_hits.pop(id(w), 0))
                    delay_ms = 1000 * (w.magnitude or DEFAULT_WINDOW_DELAY_S)
                    magnitude = delay_ms if w.kind == "latency" else hits
                    self.truth.record(w.kind, self.factory.machine_ids[w.machine], w.sensor,
                                      w.at_ms, min(end, last_ms), magnitude,
                                      source="scenario")  # fmt: skip
            else:
                still.append(w)
        self.windows = still

    def _apply_windows(self, n, windows, machine, lost, dup, bad, delay):
        lost = lost.copy() if lost is not None else np.zeros(n, dtype=bool)
        dup = dup.copy() if dup is not None else np.zeros(n, dtype=bool)
        bad = bad.copy() if bad is not None else np.zeros(n, dtype=bool)
        delay = delay.copy() if delay is not None else np.zeros(n, dtype=np.int64)
        for w in windows:
            i = w.machine if machine is None else (0 if w.machine == machine else None)
            if i is None or i >= n:
                continue
            self._window_machines[(w.kind, w.machine)] = w
            if w.kind == "loss":
                lost[i] = True
            elif w.kind == "duplicate":
                dup[i] = True
            elif w.kind == "malformed":
                bad[i] = True
            else:
                delay[i] += int(1000 * (w.magnitude or DEFAULT_WINDOW_DELAY_S))
        return lost, dup, bad, delay

    def _count_window_hit(self, kind: str, machine: int) -> bool:
        """True (and counted) when a scripted window, not random chaos, caused this fault."""
        w = self._window_machines.get((kind, machine))
        if w is None:
            return False
        self._window_hits[id(w)] = self._window_hits.get(id(w), 0) + 1
        return True


def _union(*masks: np.ndarray | None) -> np.ndarray | None:
    """The element-wise or of the masks that are there (None when none is)."""
    present = [m for m in masks if m is not None]
    if not present:
        return None
    return np.logical_or.reduce(present) if len(present) > 1 else present[0]


def _take(arena: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> tuple[bytes, np.ndarray]:
    """Byte ranges of ``arena`` one after the other: (buffer, offsets of the ranges in it)."""
    offsets = np.zeros(len(starts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    index = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
    return arena[index].tobytes(), offsets


def _batch_sender(send: Send | BatchSend) -> Callable[[list[bytes], bytes, np.ndarray], None]:
    """``send_many`` of a batch sender (a producer's ``send_raw`` stands for the producer);
    for a plain ``send(key, value)``, a loop that calls it once per message."""
    many = getattr(send, "send_many", None)
    if many is None and getattr(send, "__name__", None) == "send_raw":
        many = getattr(getattr(send, "__self__", None), "send_many", None)
    if many is not None:
        return many

    def one_by_one(keys: list[bytes], buffer: bytes, offsets: np.ndarray) -> None:
        bounds = offsets.tolist()
        for key, start, end in zip(keys, bounds, bounds[1:]):  # noqa: B905 (one longer)
            send(key, buffer[start:end])

    return one_by_one


class _Outbox:
    """One tick's messages in the order the network hands them on.

    Messages are rows: first those of the tick's encoded buffer, then payloads made on the
    way (a malformed version, a burst sample). A lost reading's row is not emitted, a
    duplicated one twice; when the tick goes through the delivery queue, each emitted row
    has the event time it is due at.
    """

    def __init__(
        self, buffer: bytes, offsets: np.ndarray, machine: np.ndarray, keys: list, queueing: bool
    ) -> None:
        self.buffer, self.offsets, self.machine, self.keys = buffer, offsets, machine, keys
        self.queueing = queueing
        self._rows: list[np.ndarray] = []
        self._due: list[np.ndarray] = []
        self._extra: list[bytes] = []
        self._extra_machine: list[int] = []

    def message(self, row: int) -> bytes:
        encoded = len(self.offsets) - 1
        if row < encoded:
            return self.buffer[self.offsets[row] : self.offsets[row + 1]]
        return self._extra[row - encoded]

    def add(self, machine: int, payload: bytes) -> int:
        """A message that is not in the encoded buffer; returns its row."""
        self._extra.append(payload)
        self._extra_machine.append(machine)
        return len(self.offsets) - 2 + len(self._extra)

    def emit(self, rows: np.ndarray, due: np.ndarray | int | None) -> None:
        self._rows.append(rows)
        if self.queueing:
            self._due.append(np.broadcast_to(np.asarray(due, dtype=np.int64), rows.shape))

    def messages(self) -> tuple[np.ndarray, list | None, bytes, np.ndarray, np.ndarray | None]:
        """The emitted messages: (machine of each, their keys if known, buffer, offsets, due
        times or None)."""
        rows = np.concatenate(self._rows) if self._rows else np.zeros(0, dtype=np.int64)
        due = np.concatenate(self._due) if self.queueing and self._due else None
        encoded = len(self.offsets) - 1
        if not self._extra and len(rows) == encoded and (rows == np.arange(encoded)).all():
            # every reading once, in order: the tick as encoded
            return self.machine, self.keys, self.buffer, self.offsets, due
        lengths = np.fromiter(map(len, self._extra), dtype=np.int64, count=len(self._extra))
        offsets = np.concatenate((self.offsets, self.offsets[-1] + np.cumsum(lengths)))
        arena = np.frombuffer(self.buffer + b"".join(self._extra), dtype=np.uint8)
        machine = np.concatenate((self.machine, np.array(self._extra_machine, dtype=np.int64)))
        buffer, out_offsets = _take(arena, offsets[rows], offsets[rows + 1] - offsets[rows])
        return machine[rows], None, buffer, out_offsets, due


class _DelayQueue:
    """Messages waiting for their delivery time (event time, ms).

    Due messages leave in (time, order) order, as from a heap of (time, order) pairs, the
    order being a counter over everything queued. Payloads wait in one byte arena, which
    is compacted once more than half of it has left.
    """

    def __init__(self) -> None:
        self._arena = bytearray()
        self._dead = 0
        empty = np.zeros(0, dtype=np.int64)
        self.at, self.order, self.machine, self.start, self.length = (empty,) * 5

    def __len__(self) -> int:
        return len(self.at)

    def push(self, at, order, machine, buffer: bytes, offsets: np.ndarray) -> None:
        start = len(self._arena) + offsets[:-1]
        self._arena += buffer
        self.at = np.concatenate((self.at, at))
        self.order = np.concatenate((self.order, order))
        self.machine = np.concatenate((self.machine, machine))
        self.start = np.concatenate((self.start, start))
        self.length = np.concatenate((self.length, offsets[1:] - offsets[:-1]))

    def pop_due(self, now_ms: int | None) -> tuple[np.ndarray, bytes, np.ndarray]:
        """Remove and return the messages due by ``now_ms`` (all when None), in order:
        (machine of each, buffer, offsets)."""
        due = np.ones(len(self.at), dtype=bool) if now_ms is None else self.at <= now_ms
        leaving = np.flatnonzero(due)
        leaving = leaving[np.lexsort((self.order[leaving], self.at[leaving]))]
        arena = np.frombuffer(self._arena, dtype=np.uint8)
        buffer, offsets = _take(arena, self.start[leaving], self.length[leaving])
        machine = self.machine[leaving]
        staying = np.flatnonzero(~due)
        self._dead += int(offsets[-1])
        start = self.start[staying]
        if 2 * self._dead > len(self._arena):
            live, live_offsets = _take(arena, start, self.length[staying])
            start, self._dead = live_offsets[:-1], 0
            del arena  # the bytearray cannot be replaced while a view of it exists
            self._arena = bytearray(live)
        self.at, self.order = self.at[staying], self.order[staying]
        self.machine, self.start, self.length = self.machine[staying], start, self.length[staying]
        return machine, buffer, offsets


class _Pacer:
    """The wall-clock schedule of a run paced by a :class:`Pace`.

    Tick ``n`` is due at ``anchor + (n - anchor_n) * interval``. When the pace changes,
    the schedule re-anchors at the last tick, so the new interval counts from there and
    the next tick is due no earlier than now: a faster pace brings no burst of catch-up
    ticks, a slower one takes effect at once. A run that falls more than
    :attr:`MAX_LAG_S` behind (the pipeline cannot keep up) re-anchors too, instead of
    racing to catch up later.
    """

    #: longest sleep between two looks at the pace and the stop event (seconds)
    LOOK_S = 0.1
    #: how far behind its schedule a run may fall before it re-anchors (seconds)
    MAX_LAG_S = 1.0

    def __init__(self, pace: Pace, readings_per_tick: float) -> None:
        self.pace = pace
        self.readings_per_tick = readings_per_tick
        self.version: int | None = None
        self.interval = 0.0
        self.anchor, self.anchor_n = 0.0, 0
        self.last_tick: float | None = None

    def wait(self, n: int, stop: threading.Event | None) -> bool:
        """Sleep until tick ``n`` is due; True if ``stop`` was set meanwhile."""
        while True:
            version, rate = self.pace.read()
            now = time.monotonic()
            if version != self.version:
                self.version = version
                self.interval = self.readings_per_tick / rate if rate else 0.0
                if self.last_tick is None:
                    self.anchor, self.anchor_n = now, n
                else:
                    self.anchor = max(self.last_tick, now - self.interval)
                    self.anchor_n = n - 1
            if self.interval <= 0:
                break
            due = self.anchor + (n - self.anchor_n) * self.interval
            if due <= now:
                if now - due > self.MAX_LAG_S:
                    self.anchor, self.anchor_n = now, n
                break
            nap = min(due - now, self.LOOK_S)
            if stop is not None:
                if stop.wait(nap):
                    return True
            else:
                time.sleep(nap)
        self.last_tick = time.monotonic()
        return False
