"""Chaos injectors: faults in the machines and sensors, each recorded as ground truth.

The injectors here change what the factory measures: ``spike`` (one reading far off),
``drift`` (a sensor's calibration walks away, then is corrected), ``stuck`` (a sensor
repeats one value), ``failure`` (the machine degrades for minutes, then overheats in a
runaway, shuts down and is repaired), ``power`` (the sensor node's battery drains; an empty
node sends null readings) and ``burst`` (a machine samples several times faster for a
while). Faults of the network (``loss``, ``duplicate``, ``latency``, ``malformed``) act on
messages and live in ``workbench.simulator.source``.

Faults start at random, at the intensities of a :class:`ChaosControl`, or when a
scenario scripts them (:class:`ScriptedFault`). Their randomness comes from a generator
of their own, so the factory's physics is the same with chaos on or off for a seed: an
experiment can compare a faulty run with its clean twin reading by reading.

A failure is decided a lead time before its runaway (``Magnitudes.failure_lead_s``, 5 to
15 minutes): meanwhile the machine degrades, as a wearing bearing does (its vibration rises
and grows noisier, and it runs warmer at equal load), and ground truth records that stretch
as a ``degradation`` of its own, ending where the ``failure`` begins. A failure once
decided happens, whatever the intensities do meanwhile (turning ``failure`` off stops new
decisions, not the degradations under way). A scripted failure is placed where its runaway
begins and degrades for its lead before it, or from the start of the run when the run is
younger than the lead (a failure placed at minute 3 degrades for 3 minutes; one placed at
0, not at all). The degradations draw from generators of their own and the runaway draws
its length and heat as it begins, so with the precursor off (``failure_lead_s = (0, 0)``)
a seed gives the readings and ground truth it gave before failures had one, and with it on,
a scenario without random failures draws every other fault as it did.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from workbench.errors import ConfigError
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
#: Where a machine is in a failure (``Injector.fail_phase``): healthy, in the runaway,
#: shut down (until repaired), degrading towards its runaway.
HEALTHY, RUNAWAY, SHUT_DOWN, DEGRADING = 0, 1, 2, 3


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
    #: Failure precursor: a failure is decided this long before its runaway (s), and the
    #: machine degrades meanwhile, as a wearing bearing does. By the runaway its vibration
    #: has risen by ``degradation_vibration`` of its level (a linear ramp), with extra noise
    #: of ``degradation_noise`` of its level (growing with the ramp), and it runs
    #: ``degradation_heat_c`` warmer at equal load. (0, 0) switches the precursor off: the
    #: runaway begins the moment the failure is decided, unannounced.
    failure_lead_s: tuple[float, float] = (300.0, 900.0)
    degradation_vibration: tuple[float, float] = (0.2, 0.4)
    degradation_noise: tuple[float, float] = (0.08, 0.15)
    degradation_heat_c: tuple[float, float] = (2.0, 4.0)
    #: Power: a failing cell sags the charge to this (%) at once, then drains it (% per
    #: second) until the node cuts off, and the empty node stays down this long (s). The
    #: drain is slow enough that the node reports its battery below 10 % two to five times
    #: (every 10 s) before it goes dark, as a low-battery rule needs.
    power_sag: tuple[float, float] = (12.0, 20.0)
    power_drain: tuple[float, float] = (0.1, 0.25)
    power_outage_s: tuple[float, float] = (30.0, 60.0)
    #: Below this state of charge (%) a node sends null readings.
    power_cutoff: float = 5.0

    def __post_init__(self) -> None:
        lo, hi = self.failure_lead_s
        if not 0 <= lo <= hi:
            raise ConfigError("failure_lead_s", list(self.failure_lead_s),
                              "a range [shortest, longest] of seconds >= 0, or [0, 0] for no "
                              "precursor")  # fmt: skip

    @property
    def precursor(self) -> bool:
        """Whether failures degrade before their runaway (a lead above 0)."""
        return self.failure_lead_s[1] > 0


@dataclass(frozen=True)
class ScriptedFault:
    """A fault a scenario places at a known time: "a failure at minute 3 on machine 7"."""

    kind: str
    machine: int  # index into Factory.machine_ids
    at_ms: int
    sensor: str | None = None
    duration_s: float | None = None
    magnitude: float | None = None
    #: A failure's degradation before ``at_ms`` (s); None draws it from the magnitudes.
    lead_s: float | None = None


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
        # the degradations' draws (leads, sizes, noise) have generators of their own, so that
        # a precursor, on or off, leaves the draws of every other fault where they were
        self.wear_rng = np.random.default_rng([factory.config.seed, 0xC4A05, 2])
        self.scripted = self._schedule(scripted or [])
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
        # failure: HEALTHY, DEGRADING, RUNAWAY, SHUT_DOWN
        self.fail_phase = np.zeros(n, dtype=np.int64)
        self.fail_start, self.fail_shutdown, self.fail_repaired = (
            never.copy(),
            never.copy(),
            never.copy(),
        )
        self.fail_heat, self.fail_temp0 = np.zeros(n), np.zeros(n)
        # degradation: its start and its sizes by the runaway; the runaway's scripted length
        # (s) and heat (C), NaN when they are to be drawn as it begins
        self.degrade_start = never.copy()
        self.degrade_vib, self.degrade_heat = np.zeros(n), np.zeros(n)
        self.degrade_noise = np.zeros(n)
        self.runaway_s, self.runaway_heat = np.full(n, np.nan), np.full(n, np.nan)
        #: degrading machines this tick, and their extra vibration noise (share of the level)
        self._degrading = np.zeros(0, dtype=np.int64)
        self._noise_now = np.zeros(0)
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

    def _schedule(self, scripted: list[ScriptedFault]) -> list[tuple[int, ScriptedFault, str]]:
        """The scripted faults' steps in event-time order: ``(at_ms, fault, step)``. A
        failure with a lead has two: ``degrade`` its lead before the runaway it is placed at
        (no earlier than the run's start: the lead is then shorter), and ``runaway`` where it
        is placed; any other fault one, ``start``. Leads not given are drawn from a generator
        of their own, and a step at the time a fault used to start stands where it stood, so
        every other draw is made as before, in the same order."""
        m, start = self.m, self.f.start_ms
        leads = np.random.default_rng([self.f.config.seed, 0xC4A05, 1])
        steps = []
        for s in scripted:
            if s.kind == "failure" and (s.lead_s is not None or m.precursor):
                lead_s = s.lead_s if s.lead_s is not None else leads.uniform(*m.failure_lead_s)
                degrade_at = max(start, s.at_ms - int(1000 * lead_s))
                if degrade_at < s.at_ms:
                    steps += [(degrade_at, s, "degrade"), (s.at_ms, s, "runaway")]
                    continue
            steps.append((s.at_ms, s, "start"))
        return sorted(steps, key=lambda step: step[0])

    def _run_scripts(self, now: int) -> None:
        while self._next_script < len(self.scripted) and self.scripted[self._next_script][0] <= now:
            _, s, step = self.scripted[self._next_script]
            self._next_script += 1
            if step == "runaway" and self._degrading_to(s.machine, s.at_ms):
                self._end_degradation(s.machine, now)
                continue
            # a failure whose degradation could not begin (its machine was failing) comes
            # unannounced, if it can
            runaway_at = s.at_ms if step == "degrade" else now
            self.start(s.kind, s.machine, now, s.sensor, s.duration_s, s.magnitude, scripted=True,
                       runaway_at=runaway_at)  # fmt: skip

    def _degrading_to(self, machine: int, runaway_at: int) -> bool:
        return bool(
            self.fail_phase[machine] == DEGRADING and self.fail_start[machine] == runaway_at
        )

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
        runaway_at: int | None = None,
    ) -> bool:
        """Begin an episode of ``kind`` on ``machine``; False if one is already running.

        A failure's runaway begins at ``runaway_at`` (event time, ms), after a degradation
        from now; without it, after a lead drawn from the magnitudes (none when they switch
        the precursor off). The runaway's own length and heat are drawn when it begins, as
        they were before failures had a precursor.
        """
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
            wear = self.wear_rng
            if runaway_at is None:  # decided now: the lead is drawn (none when off)
                lead = int(1000 * wear.uniform(*m.failure_lead_s)) if m.precursor else 0
                runaway_at = now + lead
            self.runaway_s[machine] = np.nan if duration_s is None else duration_s
            self.runaway_heat[machine] = magnitude or np.nan
            if runaway_at <= now:  # no precursor: the runaway begins at once
                self.degrade_vib[machine] = self.degrade_heat[machine] = 0.0
                self._begin_runaway(machine, now)
                return True
            self.degrade_vib[machine] = wear.uniform(*m.degradation_vibration)
            self.degrade_noise[machine] = wear.uniform(*m.degradation_noise)
            self.degrade_heat[machine] = wear.uniform(*m.degradation_heat_c)
            self.fail_phase[machine] = DEGRADING
            self.degrade_start[machine] = now
            self.fail_start[machine] = runaway_at
            if scripted:
                self._scripted.add(("degradation", machine, None))
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

    def _begin_runaway(self, machine: int, now: int) -> None:
        rng, m = self.rng, self.m
        length_s, heat = self.runaway_s[machine], self.runaway_heat[machine]
        length_s = rng.uniform(*m.failure_runaway_s) if np.isnan(length_s) else length_s
        self.fail_shutdown[machine] = now + int(1000 * length_s)
        self.fail_heat[machine] = rng.uniform(*m.failure_heat_c) if np.isnan(heat) else heat
        self.fail_phase[machine] = RUNAWAY
        self.fail_start[machine] = now
        self.fail_temp0[machine] = self.f.temp_c[machine]
        # runaway: heat feeds on itself, so the temperature follows within seconds
        self.f.thermal_tau_s[machine] = 10.0

    def _advance_degradation(self, now: int) -> None:
        """Degrading machines: vibration and heat ramp up towards the runaway (arrays over
        the machines that degrade; nothing to do, but one comparison, when none does)."""
        f = self.f
        idx = self._degrading = np.flatnonzero(self.fail_phase == DEGRADING)
        if not idx.size:
            return
        start, runaway_at = self.degrade_start[idx], self.fail_start[idx]
        progress = np.clip((now - start) / np.maximum(runaway_at - start, 1), 0.0, 1.0)
        f.vib_factor[idx] = 1.0 + self.degrade_vib[idx] * progress
        f.extra_heat_c[idx] = self.degrade_heat[idx] * progress
        going_on = runaway_at > now
        self._degrading = idx[going_on]
        self._noise_now = (self.degrade_noise[idx] * progress)[going_on]
        for machine in idx[~going_on].tolist():
            self._end_degradation(machine, now)

    def _end_degradation(self, machine: int, now: int) -> None:
        """Record the machine's degradation and begin its runaway."""
        vib, heat = self.degrade_vib[machine], self.degrade_heat[machine]
        self._record("degradation", machine, None, self.degrade_start[machine], now,
                     round(float(vib), 3), detail=f"bearing wear: vibration +{vib:.0%}, "
                     f"+{heat:.1f} C at equal load, then the failure's runaway")  # fmt: skip
        self.degrade_start[machine] = -1
        self._begin_runaway(machine, now)

    def _advance_failures(self, now: int) -> None:
        f = self.f
        self._advance_degradation(now)
        for machine in np.flatnonzero(self.fail_phase == RUNAWAY):
            span = self.fail_shutdown[machine] - self.fail_start[machine]
            progress = min(1.0, (now - self.fail_start[machine]) / max(span, 1))
            # from where the degradation left the machine (nothing, without one)
            f.extra_heat_c[machine] = (
                self.degrade_heat[machine] + self.fail_heat[machine] * progress**2
            )
            f.vib_factor[machine] = 1.0 + self.degrade_vib[machine] + 1.5 * progress
            if now >= self.fail_shutdown[machine]:
                rise = float(f.temp_c[machine] - self.fail_temp0[machine])
                self._record("failure", machine, None,
                                  self.fail_start[machine], now, round(rise, 2),
                                  detail="overheating runaway, then shutdown")  # fmt: skip
                self.fail_phase[machine] = SHUT_DOWN
                self.fail_repaired[machine] = now + int(
                    1000 * self.rng.uniform(*self.m.failure_repair_s)
                )
                f.extra_heat_c[machine], f.vib_factor[machine] = 0.0, 1.0
                f.thermal_tau_s[machine] = self._tau[machine]
                f.forced_load[machine] = 0.0
                f.status[machine] = STATUS_SHUTDOWN
        for machine in np.flatnonzero((self.fail_phase == SHUT_DOWN) & (self.fail_repaired <= now)):
            self.fail_phase[machine] = HEALTHY
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
        self._apply_wear_noise(tick)
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

    def _apply_wear_noise(self, tick: Tick) -> None:
        """A degrading machine's vibration is noisier, in proportion to its level and the
        degradation's progress: the machine's own noise, before any sensor fault acts."""
        idx, values = self._degrading, tick.values.get("vibration")
        if not idx.size or values is None:
            return
        level = values[idx]
        noisy = level + self.wear_rng.normal(0.0, 1.0, idx.size) * self._noise_now * np.abs(level)
        values[idx] = quantise(np.maximum(noisy, 0.0), SENSORS["vibration"]["resolution"])

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
        for machine in np.flatnonzero(self.fail_phase == DEGRADING):
            self._record("degradation", machine, None, self.degrade_start[machine], last_ms,
                         round(float(self.degrade_vib[machine]), 3),
                         detail="still degrading when the run ended; its runaway was due "
                         f"{(self.fail_start[machine] - last_ms) / 1000:.0f} s later")  # fmt: skip
        for machine in np.flatnonzero(self.fail_phase == RUNAWAY):
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
