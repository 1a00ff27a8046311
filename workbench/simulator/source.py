"""The simulator as a message source: factory + chaos -> encoded readings, in delivery order.

Each tick the factory is stepped and its faults applied (``chaos``), every reading is
encoded, and the network faults act on the messages: ``loss`` drops a reading,
``duplicate`` sends it twice, ``malformed`` replaces it with bytes the processor must
dead-letter, and ``latency`` delays its delivery so that arrival order differs from event
time. Delivery runs on simulated time (a queue ordered by delivery time), so a run that
goes as fast as possible produces the same byte stream, in the same order, as one paced
in real time: equal seeds and parameters give equal streams.

Accounting that a run can check downstream::

    produced = stored + dead-lettered + dropped

where ``produced`` counts every reading the factory made (bursts included), ``dropped``
the readings lost on the way, and dead letters include every malformed message.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from workbench.schemas import ReadingEncoder, _varint, codec_for
from workbench.simulator.chaos import Injector, Magnitudes, ScriptedFault
from workbench.simulator.control import ChaosControl, Pace, RunProgress
from workbench.simulator.physics import SENSORS, Factory, FactoryConfig, quantise
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


class Simulation:
    """One run of a factory with chaos, producing messages through ``send(key, value)``.

    >>> sim = Simulation(FactoryConfig(machines=2, seed=1, start_ms=0), "r1",
    ...                  ChaosControl({"duplicate": 1.0}))
    >>> out = []
    >>> counts = sim.run(lambda k, v: out.append(k), duration_s=2)
    >>> counts.produced, counts.sent, counts.chaos
    (14, 28, {'duplicate': 14})
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
        self.encoder = ReadingEncoder()
        self.rng = np.random.default_rng([config.seed, 0x4E7])
        self._keys = [m.encode() for m in self.factory.machine_ids]
        self._ids = [self.encoder.string(m) for m in self.factory.machine_ids]
        self._queue: list[tuple[int, int, bytes, bytes]] = []
        self._order = 0
        self._send: Send = lambda k, v: None
        self._latency_since: list[int | None] = [None] * config.machines
        self._latency_mean_ms = 0.0
        self._window_hits: dict[int, int] = {}
        self._window_machines: dict[tuple[str, int], ScriptedFault] = {}
        self._wrong_schema_header = codec_for("chaos_event").header

    # -- the loop --------------------------------------------------------------------

    def run(
        self,
        send: Send,
        duration_s: float,
        realtime: bool = False,
        stop: threading.Event | None = None,
        on_progress: Callable[[Simulation], None] | None = None,
        progress_every_s: float = 1.0,
        pace: Pace | None = None,
        progress: RunProgress | None = None,
    ) -> SimulationCounts:
        """Simulate ``duration_s`` seconds of event time; return the counts.

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
        status = tick.status.tolist()
        ts_bytes = _varint(tick.ts_ms)
        for sensor, values in tick.values.items():
            self._emit_sensor(sensor, values, tick.seq[sensor], status, tick.ts_ms, ts_bytes,
                              intensity, windows)  # fmt: skip
            if bursting.any():
                self._emit_burst(sensor, values, bursting, status, tick.ts_ms, intensity, windows)
        self.injector.close_bursts(now)
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

    def _emit_sensor(self, sensor, values, seqs, status, ts_ms, ts_bytes, intensity, windows):
        n = values.size
        lost, dup, bad, delay = self._network_draws(n, intensity, windows)
        encode, sensor_bytes = self.encoder.encode_parts, self.encoder.sensor_bytes[sensor]
        ids, keys = self._ids, self._keys
        for i, (v, seq) in enumerate(zip(values.tolist(), seqs.tolist(), strict=True)):
            value = None if v != v else v  # NaN: the sensor sent nothing
            message = encode(ids[i], ts_bytes, sensor_bytes, value, status[i], seq)
            self._route(i, sensor, ts_ms, keys[i], message, lost, dup, bad, delay)

    def _emit_burst(self, sensor, values, bursting, status, ts_ms, intensity, windows):
        """Extra samples between this tick and the next, for machines in a burst."""
        f, factor = self.factory, self.injector.m.burst_factor
        spec = SENSORS[sensor]
        step_ms = f.dt_s * 1000 / factor
        for i in np.flatnonzero(bursting).tolist():
            for j in range(1, factor):
                t = ts_ms + round(j * step_ms)
                v = values[i]
                if v == v:
                    v = float(quantise(v + self.rng.normal(0, spec["noise"]), spec["resolution"]))
                seq = int(f.seq[sensor][i])
                f.seq[sensor][i] += 1
                self.injector.burst_extra[i] += 1
                message = self.encoder.encode_parts(
                    self._ids[i], _varint(t), self.encoder.sensor_bytes[sensor],
                    None if v != v else v, status[i], seq,
                )  # fmt: skip
                lost, dup, bad, delay = self._network_draws(1, intensity, windows, machine=i)
                self._route(0, sensor, t, self._keys[i], message, lost, dup, bad, delay, machine=i)

    def _network_draws(self, n, intensity, windows, machine=None):
        """Per-reading network fates: lost, duplicated, malformed, delay in ms."""
        rng = self.rng
        self._window_machines: dict[tuple[str, int], ScriptedFault] = {}
        p_loss, p_dup, p_bad = intensity["loss"], intensity["duplicate"], intensity["malformed"]
        lost = (rng.random(n) < p_loss).tolist() if p_loss > 0 else None
        dup = (rng.random(n) < p_dup).tolist() if p_dup > 0 else None
        bad = (rng.random(n) < p_bad).tolist() if p_bad > 0 else None
        mean_ms = intensity["latency"] * 1000
        delay = rng.exponential(mean_ms, n).round().astype(int).tolist() if mean_ms > 0 else None
        if windows:
            lost, dup, bad, delay = self._apply_windows(n, windows, machine, lost, dup, bad, delay)
        return lost, dup, bad, delay

    def _route(self, i, sensor, ts_ms, key, message, lost, dup, bad, delay, machine=None):
        counts, truth = self.counts, self.truth
        m = i if machine is None else machine
        counts.produced += 1
        if lost is not None and lost[i]:
            counts.dropped += 1
            self._count_window_hit("loss", m) or truth.record(
                "loss", self.factory.machine_ids[m], sensor, ts_ms, ts_ms, 1.0
            )
            return
        at = ts_ms + (delay[i] if delay is not None else 0)
        if bad is not None and bad[i]:
            counts.malformed += 1
            variant, message = self._malform(message)
            self._count_window_hit("malformed", m) or truth.record(
                "malformed", self.factory.machine_ids[m], sensor, ts_ms, ts_ms, 1.0, detail=variant
            )
            self._deliver(at, key, message)
            return
        self._deliver(at, key, message)
        if dup is not None and dup[i]:
            counts.duplicates += 1
            self._count_window_hit("duplicate", m) or truth.record(
                "duplicate", self.factory.machine_ids[m], sensor, ts_ms, ts_ms, 1.0
            )
            jitter = int(self.rng.integers(0, 200)) if self._queueing else 0
            self._deliver(at + jitter, key, message)

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
        """Whether messages go through the delivery queue (some may be delayed)."""
        return bool(self._latency_mean_ms > 0 or self._queue or self.windows)

    def _deliver(self, at_ms: int, key: bytes, message: bytes) -> None:
        if self._queueing:
            self._order += 1
            heapq.heappush(self._queue, (at_ms, self._order, key, message))
        else:
            self._send(key, message)
            self.counts.sent += 1

    def _deliver_due(self, now_ms: int | None) -> None:
        queue = self._queue
        while queue and (now_ms is None or queue[0][0] <= now_ms):
            _at, _order, key, message = heapq.heappop(queue)
            self._send(key, message)
            self.counts.sent += 1

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
        lost = list(lost) if lost is not None else [False] * n
        dup = list(dup) if dup is not None else [False] * n
        bad = list(bad) if bad is not None else [False] * n
        delay = list(delay) if delay is not None else [0] * n
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
