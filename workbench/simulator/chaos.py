"""Chaos injectors: faults in the machines and sensors, each recorded as ground truth.

The injectors here change what the factory measures: ``spike`` (one reading far off),
``drift`` (a sensor's calibration walks away, then is corrected), ``stuck`` (a sensor
repeats one value), ``failure`` (overheating runaway, then shutdown and repair),
``power`` (the sensor node's battery drains; an empty node sends null readings) and
``burst`` (a machine samples several times faster for a while). Faults of the network
(``loss``, ``duplicate``, ``latency``, ``malformed``) act on messages and live in
``workbench.simulator.source``.

Faults start at random, at the intensities of a :class:`ChaosControl`, or when a
scenario scripts them (:class:`ScriptedFault`). Their randomness comes from a generator
of their own, so the factory's physics is the same with chaos on or off for a seed: an
experiment can compare a faulty run with its clean twin reading by reading.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from workbench.simulator.control import ChaosControl
from workbench.simulator.physics import (
    BOUNDS,
    IDLE,
    SENSORS,
    STATUS_POWER_FAULT,
    STATUS_SHUTDOWN,
    Factory,
    Tick,
    bounded,
    quantise,
)
from workbench.simulator.truth import GroundTruth

#: Sensors whose readings spikes, drift and stuck faults hit.
#: Sensor types a sensor fault may hit, in any kind of factory (each factory's own are its
#: ``measured``).
MEASURED = ("temperature", "vibration", "pressure", "humidity")


@dataclass(frozen=True)
class Magnitudes:
    """How large faults are; a scenario file may change any of these."""

    #: Offset of a spike, per sensor (sign drawn at random; size varies +-20 %).
    spike: dict[str, float] = field(
        default_factory=lambda: {
            "temperature": 25.0,
            "vibration": 8.0,
            "pressure": 3.0,
            "humidity": 25.0,
        }
    )
    #: Offset a drift reaches at its end, per sensor (upwards or downwards).
    drift: dict[str, float] = field(
        default_factory=lambda: {
            "temperature": 12.0,
            "vibration": 3.0,
            "pressure": 1.5,
            "humidity": 15.0,
        }
    )
    drift_s: tuple[float, float] = (90.0, 180.0)
    stuck_s: tuple[float, float] = (30.0, 90.0)
    burst_s: tuple[float, float] = (5.0, 15.0)
    burst_factor: int = 5
    #: Failure: runaway time, heat added at its end (C), time to repair after shutdown.
    failure_runaway_s: tuple[float, float] = (60.0, 120.0)
    failure_heat_c: tuple[float, float] = (45.0, 60.0)
    failure_repair_s: tuple[float, float] = (60.0, 120.0)
    #: Power: a failing cell sags the charge to this (%) at once, then drains it (% per
    #: second) until the node cuts off, and the empty node stays down this long (s). The
    #: drain is slow enough that the node reports its battery below 10 % two to five times
    #: (every 10 s) before it goes dark, as a low-battery rule needs.
    power_sag: tuple[float, float] = (12.0, 20.0)
    power_drain: tuple[float, float] = (0.1, 0.25)
    power_outage_s: tuple[float, float] = (30.0, 60.0)
    #: Below this state of charge (%) a node sends null readings.
    power_cutoff: float = 5.0


@dataclass(frozen=True)
class ScriptedFault:
    """A fault a scenario places at a known time: "a failure at minute 3 on machine 7"."""

    kind: str
    machine: int  # index into Factory.machine_ids
    at_ms: int
    sensor: str | None = None
    duration_s: float | None = None
    magnitude: float | None = None


class Injector:
    """Applies machine and sensor faults to a factory, tick by tick."""

    def __init__(
        self,
        factory: Factory,
        control: ChaosControl,
        truth: GroundTruth,
        magnitudes: Magnitudes | None = None,
        scripted: list[ScriptedFault] | None = None,
    ) -> None:
        self.f = factory
        self.control = control
        self.truth = truth
        self.m = magnitudes or Magnitudes()
        self.rng = np.random.default_rng([factory.config.seed, 0xC4A05])
        self.scripted = sorted(scripted or [], key=lambda s: s.at_ms)
        self._next_script = 0
        n = factory.config.machines
        never = np.full(n, -1, dtype=np.int64)
        self.drift_start = {s: never.copy() for s in MEASURED}
        self.drift_end = {s: never.copy() for s in MEASURED}
        self.drift_size = {s: np.zeros(n) for s in MEASURED}
        self.stuck_end = {s: never.copy() for s in MEASURED}
        self.stuck_start = {s: never.copy() for s in MEASURED}
        self.stuck_value = {s: np.full(n, np.nan) for s in MEASURED}
        self.burst_start, self.burst_end = never.copy(), never.copy()
        self.burst_extra = np.zeros(n, dtype=np.int64)
        # failure: phase 0 none, 1 runaway, 2 shut down
        self.fail_phase = np.zeros(n, dtype=np.int64)
        self.fail_start, self.fail_shutdown, self.fail_repaired = (
            never.copy(),
            never.copy(),
            never.copy(),
        )
        self.fail_heat, self.fail_temp0 = np.zeros(n), np.zeros(n)
        # power: phase 0 none, 1 draining, 2 out
        self.power_phase = np.zeros(n, dtype=np.int64)
        self.power_start, self.power_back = never.copy(), never.copy()
        self.power_rate = np.zeros(n)
        self._pending_spikes: list[tuple[int, str | None, float | None]] = []
        self._scripted: set[tuple[str, int, str | None]] = set()
        self._tau = factory.thermal_tau_s.copy()

    # -- before the factory steps: faults that change the machine --------------------

    def before_step(self, intensity: dict[str, float]) -> None:
        now = self.f.now_ms
        self._run_scripts(now)
        self._start_random(intensity, now)
        self._advance_failures(now)
        self._advance_power(now)

    def _run_scripts(self, now: int) -> None:
        while (
            self._next_script < len(self.scripted) and self.scripted[self._next_script].at_ms <= now
        ):
            s = self.scripted[self._next_script]
            self._next_script += 1
            self.start(s.kind, s.machine, now, s.sensor, s.duration_s, s.magnitude, scripted=True)

    def _start_random(self, intensity: dict[str, float], now: int) -> None:
        minutes = self.f.dt_s / 60.0
        for kind in ("drift", "stuck", "burst", "failure", "power"):
            rate = intensity.get(kind, 0.0)
            if rate <= 0:
                continue
            hits = np.flatnonzero(self.rng.random(self.f.config.machines) < rate * minutes)
            for machine in hits:
                self.start(kind, int(machine), now)

    def start(
        self,
        kind: str,
        machine: int,
        now: int,
        sensor: str | None = None,
        duration_s: float | None = None,
        magnitude: float | None = None,
        scripted: bool = False,
    ) -> bool:
        """Begin an episode of ``kind`` on ``machine``; False if one is already running."""
        rng, m = self.rng, self.m
        measured = self.f.measured
        if kind in ("drift", "stuck", "spike") and sensor is None:
            sensor = measured[rng.integers(len(measured))]
        if scripted:
            self._scripted.add((kind, machine, sensor))

        def length(bounds: tuple[float, float]) -> int:
            return int(1000 * (duration_s if duration_s is not None else rng.uniform(*bounds)))

        if kind in ("drift", "stuck"):
            assert sensor is not None
            if self.drift_end[sensor][machine] > now or self.stuck_end[sensor][machine] > now:
                return False
            if kind == "drift":
                size = magnitude if magnitude is not None else m.drift[sensor] * _sign(rng, sensor)
                self.drift_start[sensor][machine] = now
                self.drift_end[sensor][machine] = now + length(m.drift_s)
                self.drift_size[sensor][machine] = size
            else:
                self.stuck_start[sensor][machine] = now
                self.stuck_end[sensor][machine] = now + length(m.stuck_s)
                self.stuck_value[sensor][machine] = np.nan  # taken from the next reading
        elif kind == "burst":
            if self.burst_end[machine] > now:
                return False
            self.burst_start[machine], self.burst_end[machine] = now, now + length(m.burst_s)
            self.burst_extra[machine] = 0
        elif kind == "failure":
            if self.fail_phase[machine] or self.power_phase[machine] == 2:
                return False
            self.fail_phase[machine] = 1
            self.fail_start[machine] = now
            self.fail_shutdown[machine] = now + length(m.failure_runaway_s)
            self.fail_heat[machine] = magnitude or rng.uniform(*m.failure_heat_c)
            self.fail_temp0[machine] = self.f.temp_c[machine]
            # runaway: heat feeds on itself, so the temperature follows within seconds
            self.f.thermal_tau_s[machine] = 10.0
        elif kind == "power":
            if self.power_phase[machine] or self.fail_phase[machine]:
                return False
            self.power_phase[machine] = 1
            self.power_start[machine] = now
            self.f.battery[machine] = min(self.f.battery[machine], rng.uniform(*m.power_sag))
            self.power_rate[machine] = magnitude or rng.uniform(*m.power_drain)
            if duration_s is not None:  # scripted: cut off half-way through the outage
                above = self.f.battery[machine] - m.power_cutoff
                self.power_rate[machine] = max(above / max(duration_s / 2, 1.0), 0.1)
        elif kind == "spike":
            self._pending_spikes.append((machine, sensor, magnitude))
        else:
            raise ValueError(f"{kind} is not a machine or sensor fault")
        return True

    def _advance_failures(self, now: int) -> None:
        f = self.f
        for machine in np.flatnonzero(self.fail_phase == 1):
            span = self.fail_shutdown[machine] - self.fail_start[machine]
            progress = min(1.0, (now - self.fail_start[machine]) / max(span, 1))
            f.extra_heat_c[machine] = self.fail_heat[machine] * progress**2
            f.vib_factor[machine] = 1.0 + 1.5 * progress
            if now >= self.fail_shutdown[machine]:
                rise = float(f.temp_c[machine] - self.fail_temp0[machine])
                self._record("failure", machine, None,
                                  self.fail_start[machine], now, round(rise, 2),
                                  detail="overheating runaway, then shutdown")  # fmt: skip
                self.fail_phase[machine] = 2
                self.fail_repaired[machine] = now + int(
                    1000 * self.rng.uniform(*self.m.failure_repair_s)
                )
                f.extra_heat_c[machine], f.vib_factor[machine] = 0.0, 1.0
                f.thermal_tau_s[machine] = self._tau[machine]
                f.forced_load[machine] = 0.0
                f.status[machine] = STATUS_SHUTDOWN
        for machine in np.flatnonzero((self.fail_phase == 2) & (self.fail_repaired <= now)):
            self.fail_phase[machine] = 0
            f.forced_load[machine] = np.nan
            f.status[machine] = 0
            f.regime[machine], f.regime_left_s[machine] = IDLE, 30.0

    def _advance_power(self, now: int) -> None:
        f = self.f
        draining = np.flatnonzero(self.power_phase == 1)
        f.battery[draining] = np.maximum(
            f.battery[draining] - self.power_rate[draining] * f.dt_s, 0
        )
        for machine in draining:
            if f.battery[machine] < self.m.power_cutoff:
                self.power_phase[machine] = 2
                self.power_back[machine] = now + int(
                    1000 * self.rng.uniform(*self.m.power_outage_s)
                )
                f.status[machine] = STATUS_POWER_FAULT
        for machine in np.flatnonzero((self.power_phase == 2) & (self.power_back <= now)):
            self._record("power", machine, None, self.power_start[machine],
                              now, float(self.power_rate[machine]),
                              detail="battery drained; null readings until replaced")  # fmt: skip
            self.power_phase[machine] = 0
            f.battery[machine] = 100.0
            f.status[machine] = 0

    # -- after the factory steps: faults that change the readings ---------------------

    def apply(self, tick: Tick, intensity: dict[str, float]) -> None:
        """Change the tick's readings in place: drift, stuck, spikes (within the sensor's
        physical range), dead power."""
        now = tick.ts_ms
        for sensor in MEASURED:
            values = tick.values.get(sensor)
            if values is None:
                continue
            self._apply_drift(sensor, values, now)
            self._apply_stuck(sensor, values, now)
            self._apply_spikes(sensor, values, now, intensity.get("spike", 0.0))
        for machine, sensor, size in self._pending_spikes:
            sensor = sensor or self.f.measured[self.rng.integers(len(self.f.measured))]
            if sensor in tick.values:
                self._spike(sensor, tick.values[sensor], machine, now, size)
        self._pending_spikes = [(m, s, z) for m, s, z in self._pending_spikes
                                if s is not None and s not in tick.values]  # fmt: skip
        # a fault moves what the sensor reads, not past what it can read: a humidity
        # drifted or spiked past 100 % reads 100 %
        for sensor in BOUNDS.keys() & tick.values.keys():
            tick.values[sensor] = bounded(sensor, tick.values[sensor])
        dead = self.power_phase == 2
        if dead.any():
            for values in tick.values.values():
                values[dead] = np.nan

    def _apply_drift(self, sensor: str, values: np.ndarray, now: int) -> None:
        start, end = self.drift_start[sensor], self.drift_end[sensor]
        active = (start >= 0) & (start <= now) & (now < end)
        if active.any():
            progress = (now - start[active]) / (end[active] - start[active])
            offset = self.drift_size[sensor][active] * progress
            values[active] = quantise(values[active] + offset, SENSORS[sensor]["resolution"])
        for machine in np.flatnonzero((end >= 0) & (end <= now)):
            self._record("drift", machine, sensor, start[machine],
                              end[machine], float(self.drift_size[sensor][machine]),
                              detail="linear de-calibration, then recalibrated")  # fmt: skip
            start[machine] = end[machine] = -1

    def _apply_stuck(self, sensor: str, values: np.ndarray, now: int) -> None:
        start, end, held = (
            self.stuck_start[sensor],
            self.stuck_end[sensor],
            self.stuck_value[sensor],
        )
        active = (start >= 0) & (now < end)
        first = active & np.isnan(held)
        held[first] = values[first]
        values[active] = held[active]
        for machine in np.flatnonzero((end >= 0) & (end <= now)):
            self._record("stuck", machine, sensor, start[machine], now,
                              float(held[machine]), detail="sensor repeats one value")  # fmt: skip
            start[machine] = end[machine] = -1
            held[machine] = np.nan

    def _record(self, kind: str, machine: int, sensor: str | None, *args, **kwargs) -> None:
        """Record ground truth, marking faults a scenario scripted as ``scenario``."""
        key = (kind, int(machine), sensor)
        if key in self._scripted:
            self._scripted.discard(key)
            kwargs["source"] = "scenario"
        self.truth.record(kind, self.f.machine_ids[machine], sensor, *args, **kwargs)

    def _apply_spikes(self, sensor: str, values: np.ndarray, now: int, p: float) -> None:
        if p <= 0:
            return
        for machine in np.flatnonzero(self.rng.random(values.size) < p):
            self._spike(sensor, values, int(machine), now, None)

    def _spike(
        self, sensor: str, values: np.ndarray, machine: int, now: int, size: float | None
    ) -> None:
        if np.isnan(values[machine]):
            return
        if size is None:
            size = self.m.spike[sensor] * self.rng.uniform(0.8, 1.2) * _sign(self.rng, sensor)
        values[machine] = quantise(values[machine] + size, SENSORS[sensor]["resolution"])
        self._record("spike", machine, sensor, now, now, round(float(size), 3))

    def bursting(self, now: int) -> np.ndarray:
        """Machines sampling at the burst factor at event time ``now``."""
        return (self.burst_start >= 0) & (self.burst_start <= now) & (now < self.burst_end)

    def close_bursts(self, now: int, final: bool = False) -> None:
        """Record bursts that ended by ``now`` (all that are open, when ``final``)."""
        ended = (self.burst_end >= 0) & ((self.burst_end <= now) | final)
        for machine in np.flatnonzero(ended):
            self._record("burst", machine, None, self.burst_start[machine],
                              min(now, self.burst_end[machine]), float(self.burst_extra[machine]),
                              detail=f"sampling x{self.m.burst_factor}")  # fmt: skip
            self.burst_start[machine] = self.burst_end[machine] = -1

    def finish(self, last_ms: int) -> None:
        """Close every open episode at the end of the run, so ground truth is complete."""
        for sensor in MEASURED:
            for machine in np.flatnonzero(self.drift_start[sensor] >= 0):
                if self.drift_start[sensor][machine] <= last_ms:
                    self._record("drift", machine, sensor, self.drift_start[sensor][machine],
                                      last_ms, float(self.drift_size[sensor][machine]),
                                      detail="still drifting when the run ended")  # fmt: skip
            for machine in np.flatnonzero(self.stuck_start[sensor] >= 0):
                self._record("stuck", machine, sensor, self.stuck_start[sensor][machine],
                                  last_ms, float(self.stuck_value[sensor][machine]),
                                  detail="still stuck when the run ended")  # fmt: skip
        for machine in np.flatnonzero(self.fail_phase == 1):
            self._record("failure", machine, None, self.fail_start[machine], last_ms,
                              round(float(self.f.temp_c[machine] - self.fail_temp0[machine]), 2),
                              detail="runaway still under way when the run ended")  # fmt: skip
        for machine in np.flatnonzero(self.power_phase > 0):
            self._record("power", machine, None, self.power_start[machine], last_ms,
                              float(self.power_rate[machine]),
                              detail="battery not yet replaced when the run ended")  # fmt: skip
        self.close_bursts(last_ms, final=True)


def _sign(rng: np.random.Generator, sensor: str) -> int:
    """Direction of a random offset: vibration only grows (it cannot go below zero)."""
    return 1 if sensor == "vibration" else int(rng.choice([-1, 1]))
