"""A factory of machines whose sensors follow simple, plausible physics.

Each machine has a type (pump, compressor, press) that sets its character, and moves
through operating regimes (idle, ramp-up, steady, overload, cool-down) that set a target
engine load; the load follows its target with a short lag and some wander. Temperature
follows load through a first-order thermal model towards ``ambient + gain * load``;
vibration grows with load and with wear, which accumulates with work done; pressure
follows load with its own autocorrelated process noise; the sensor node's battery drains
slowly; the drive's motor current follows load (a no-load share plus the rest in proportion),
the one signal that says what the machine is being asked to do, as a PLC's current or power
tag does on a real line. Every sensor adds Gaussian noise and is quantised to its resolution,
and each sensor type has its own sampling rate. All machines advance together as numpy vectors.

The same seed and parameters give the same readings, value for value. Faults are not
made here: ``workbench.simulator.chaos`` changes the physics state and the readings.

>>> f = Factory(FactoryConfig(machines=3, seed=7, start_ms=0))
>>> tick = f.step()
>>> tick.ts_ms, sorted(tick.values), len(tick.values["temperature"])
(0, ['battery', 'current', 'pressure', 'temperature', 'vibration'], 3)
>>> f.step().ts_ms, sorted(f.step().values)   # battery samples at 0.1 Hz
(1000, ['current', 'pressure', 'temperature', 'vibration'])
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from workbench.errors import ConfigError

#: Resolution (quantisation step), noise standard deviation and default sampling rate.
SENSORS: dict[str, dict[str, float]] = {
    "temperature": {"resolution": 0.1, "noise": 0.15, "rate_hz": 1.0},  # degrees C
    "vibration": {"resolution": 0.01, "noise": 0.05, "rate_hz": 1.0},  # mm/s RMS
    "pressure": {"resolution": 0.01, "noise": 0.02, "rate_hz": 1.0},  # bar
    "battery": {"resolution": 0.1, "noise": 0.05, "rate_hz": 0.1},  # % state of charge
    "current": {"resolution": 0.1, "noise": 0.1, "rate_hz": 1.0},  # A, the drive motor's
    "humidity": {"resolution": 0.1, "noise": 0.5, "rate_hz": 1.0},  # % relative, nodes only
}
#: Physical range of the sensor types that have one: a state of charge or a relative humidity
#: cannot leave 0-100 %, so neither may a reading of it, noise, bursts and faults included
#: (the processor's validation dead-letters such a reading, the rules file's
#: ``[validation.ranges]``; a dead letter that is not a malformed message, sent twice by
#: chaos ``duplicate``, would be counted twice and leave a run's books open).
BOUNDS: dict[str, tuple[float, float]] = {"battery": (0.0, 100.0), "humidity": (0.0, 100.0)}
#: The sensor types each kind of factory has: machines on a line, or environmental sensor
#: nodes in a hall (temperature, humidity and their battery: the edge gateway's story).
KINDS: dict[str, tuple[str, ...]] = {
    "machines": ("temperature", "vibration", "pressure", "battery", "current"),
    "nodes": ("temperature", "battery", "humidity"),
}
#: ... and those of them a sensor fault (spike, drift, stuck) may hit.
MEASURED_BY_KIND: dict[str, tuple[str, ...]] = {
    "machines": ("temperature", "vibration", "pressure"),
    "nodes": ("temperature", "humidity"),
}
#: Share of its rated current a motor draws at no load.
NO_LOAD_CURRENT = 0.25

#: Per machine type, the ranges its parameters are drawn from.
MACHINE_TYPES: dict[str, dict[str, tuple[float, float]]] = {
    "pump": {"steady_load": (0.45, 0.7), "thermal_gain_c": (30, 40), "thermal_tau_s": (60, 120),
             "vib_base": (0.8, 1.3), "vib_gain": (2.0, 3.0), "press_base": (3.5, 4.5),
             "press_gain": (1.0, 2.0), "rated_current_a": (10, 20)},
    "compressor": {"steady_load": (0.55, 0.8), "thermal_gain_c": (45, 60),
                   "thermal_tau_s": (120, 240), "vib_base": (1.5, 2.5), "vib_gain": (3.0, 5.0),
                   "press_base": (6.0, 8.0), "press_gain": (2.0, 3.0),
                   "rated_current_a": (25, 45)},
    "press": {"steady_load": (0.4, 0.65), "thermal_gain_c": (25, 35), "thermal_tau_s": (90, 180),
              "vib_base": (2.0, 3.0), "vib_gain": (4.0, 6.0), "press_base": (2.0, 3.0),
              "press_gain": (0.5, 1.0), "rated_current_a": (15, 30)},
}  # fmt: skip

#: Operating regimes, by index in the state arrays.
REGIMES = ("idle", "ramp_up", "steady", "overload", "cool_down")
IDLE, RAMP_UP, STEADY, OVERLOAD, COOL_DOWN = range(len(REGIMES))
IDLE_LOAD, OVERLOAD_LOAD = 0.05, 0.97
#: Mean dwell time (s) in each regime before the next transition.
DWELL_S = {IDLE: 90.0, RAMP_UP: 30.0, STEADY: 300.0, OVERLOAD: 40.0, COOL_DOWN: 45.0}

#: Status codes a reading can carry.
STATUS_OK, STATUS_SHUTDOWN, STATUS_POWER_FAULT = 0, 2, 3

#: Event-time origin of a run that is not paced in real time, so that a seeded run is
#: reproducible to the byte, timestamps included.
DEFAULT_START_MS = int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)


@dataclass(frozen=True)
class FactoryConfig:
    """What the factory looks like; every field is an experiment parameter."""

    machines: int = 5
    #: Scales every sensor's sampling rate; 1.0 means temperature, vibration, pressure and
    #: current (humidity, for nodes) at 1 Hz and battery at 0.1 Hz.
    rate_hz: float = 1.0
    seed: int = 0
    #: Event time of the first sample (epoch ms); None means :data:`DEFAULT_START_MS`.
    start_ms: int | None = None
    ambient_c: float = 22.0
    #: Sampling rate per sensor type (Hz) before ``rate_hz`` scales it; missing types use
    #: the defaults in :data:`SENSORS`, a rate of 0 switches the sensor off.
    sensor_rates_hz: dict[str, float] = field(default_factory=dict)
    #: ``machines`` (pumps, compressors, presses) or ``nodes`` (environmental sensor nodes:
    #: ambient temperature 20-30 C, humidity, a battery; ids ``n-0001``...).
    kind: str = "machines"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError("factory", self.kind, f"one of {', '.join(KINDS)}")
        if not 1 <= self.machines <= 100_000:
            raise ConfigError("machines", self.machines, "a whole number from 1 to 100000")
        if not 0 < self.rate_hz <= 1000:
            raise ConfigError("rate", self.rate_hz, "samples per second, > 0 and <= 1000")
        if not (isinstance(self.seed, int) and 0 <= self.seed < 2**63):
            # numpy seeds take no negative number, and the run registry stores a bigint
            raise ConfigError("seed", self.seed, f"a whole number from 0 to {2**63 - 1}")
        for sensor, rate in self.sensor_rates_hz.items():
            if sensor not in KINDS[self.kind]:
                raise ConfigError("sensor_rates_hz", sensor,
                                  f"one of {', '.join(KINDS[self.kind])}")  # fmt: skip
            if not 0 <= rate <= 1000:
                raise ConfigError(f"sensor_rates_hz[{sensor}]", rate, "Hz from 0 to 1000")

    def rates(self) -> dict[str, float]:
        """Effective sampling rate of each sensor type that is on (Hz)."""
        rates = {s: self.sensor_rates_hz.get(s, spec["rate_hz"]) * self.rate_hz
                 for s, spec in SENSORS.items() if s in KINDS[self.kind]}  # fmt: skip
        return {s: r for s, r in rates.items() if r > 0}

    def events_per_second(self) -> float:
        """Readings per second of event time, over the whole factory."""
        return self.machines * sum(self.rates().values())


@dataclass(frozen=True)
class Tick:
    """One sample interval: the sensors that sampled at this event time, every machine each."""

    index: int
    ts_ms: int
    #: sensor type -> values, one per machine (index as in ``Factory.machine_ids``);
    #: NaN means the sensor sent nothing (a null reading).
    values: dict[str, np.ndarray]
    #: sensor type -> per-machine sequence numbers of these samples.
    seq: dict[str, np.ndarray]
    #: per-machine status code of these samples.
    status: np.ndarray
    load: np.ndarray


class Factory:
    """The machines and their state; :meth:`step` advances every machine by one interval."""

    def __init__(self, config: FactoryConfig) -> None:
        self.config = config
        n = config.machines
        self.rng = np.random.default_rng(config.seed)
        rng = self.rng
        prefix = "n" if config.kind == "nodes" else "m"
        self.machine_ids = [f"{prefix}-{i + 1:04d}" for i in range(n)]
        #: the sensor types a sensor fault may hit in this factory
        self.measured = MEASURED_BY_KIND[config.kind]
        self.rates = config.rates()
        self.tick_hz = max(self.rates.values())
        self.dt_s = 1.0 / self.tick_hz
        self.start_ms = config.start_ms if config.start_ms is not None else DEFAULT_START_MS
        self.index = 0
        types = list(MACHINE_TYPES)
        self.machine_type = [types[i] for i in rng.integers(0, len(types), n)]

        def draw(key: str, gen: np.random.Generator = rng) -> np.ndarray:
            lo = np.array([MACHINE_TYPES[t][key][0] for t in self.machine_type])
            hi = np.array([MACHINE_TYPES[t][key][1] for t in self.machine_type])
            return gen.uniform(lo, hi)

        self.steady_load = draw("steady_load")
        self.thermal_gain_c = draw("thermal_gain_c")
        self.thermal_tau_s = draw("thermal_tau_s")
        self.vib_base = draw("vib_base")
        self.vib_gain = draw("vib_gain")
        self.press_base = draw("press_base")
        self.press_gain = draw("press_gain")
        self.cycle_period_s = rng.uniform(120.0, 900.0, n)
        self.cycle_phase = rng.uniform(0.0, 2 * np.pi, n)
        self.wear_rate = rng.uniform(2e-6, 1e-5, n)  # fraction of vibration gained per load-s
        # state: most machines start in steady operation, warm; the rest idle and cool
        self.regime = np.where(rng.random(n) < 0.75, STEADY, IDLE)
        self.regime_left_s = rng.exponential([DWELL_S[r] for r in self.regime])
        self.regime_span_s = np.maximum(self.regime_left_s, 1.0)
        self.load = np.where(self.regime == STEADY, self.steady_load, IDLE_LOAD)
        self.load_noise = np.zeros(n)
        self.press_noise = np.zeros(n)
        self.temp_c = config.ambient_c + self.thermal_gain_c * self.load
        self.wear = rng.uniform(0.0, 0.2, n)
        self.battery = rng.uniform(60.0, 100.0, n)
        self.battery_drain = rng.uniform(1e-4, 5e-4, n)  # % per second
        # the motor current draws from a generator of its own, so that adding it left every
        # other sensor's readings of a seed as they were
        self._current_rng = np.random.default_rng([config.seed, 1])
        self.rated_current_a = draw("rated_current_a", self._current_rng)
        # hooks for chaos: extra heat (C above equilibrium), forced load, vibration factor
        self.extra_heat_c = np.zeros(n)
        self.forced_load = np.full(n, np.nan)
        self.vib_factor = np.ones(n)
        if config.kind == "nodes":
            self._nodes_init(n)
        self.status = np.full(n, STATUS_OK, dtype=np.int64)
        self.seq = {s: np.zeros(n, dtype=np.int64) for s in self.rates}
        self._sample_every = {s: self.tick_hz / r for s, r in self.rates.items()}

    def _machine_truth(self, t_s: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """One tick of the machines' physics: regimes, load, heat, wear; the true values."""
        cfg, rng, n, dt_s = self.config, self.rng, self.config.machines, self.dt_s
        self._advance_regimes(dt_s)
        target = self._target_load(t_s)
        target = np.where(np.isnan(self.forced_load), target, self.forced_load)
        self.load_noise += -self.load_noise * dt_s / 60.0 + rng.normal(0, 0.01 * np.sqrt(dt_s), n)
        self.load += (target - self.load) * (1.0 - np.exp(-dt_s / 5.0))
        load = np.clip(self.load + self.load_noise, 0.0, 1.0)
        equilibrium = cfg.ambient_c + self.thermal_gain_c * load + self.extra_heat_c
        self.temp_c += (equilibrium - self.temp_c) * (1.0 - np.exp(-dt_s / self.thermal_tau_s))
        self.wear += self.wear_rate * load * dt_s
        self.press_noise = 0.95 * self.press_noise + rng.normal(0.0, 0.03, n)
        self.battery = np.maximum(self.battery - self.battery_drain * dt_s, 0.0)
        truth = {
            "temperature": self.temp_c,
            "vibration": (self.vib_base + self.vib_gain * load) * (1 + self.wear) * self.vib_factor,
            "pressure": self.press_base + self.press_gain * load + self.press_noise,
            "battery": self.battery,
            "current": self.rated_current_a * (NO_LOAD_CURRENT + (1 - NO_LOAD_CURRENT) * load),
        }
        return truth, load

    def _nodes_init(self, n: int) -> None:
        """Environmental sensor nodes: each hangs somewhere in a hall whose air follows the
        day (a sine, warmest mid-afternoon) and the weather (a slow random walk), and reads
        its temperature through its enclosure's lag; humidity falls as the air warms."""
        gen = self._node_rng = np.random.default_rng([self.config.seed, 2])
        self.site_c = gen.uniform(22.0, 26.0, n)  # the spot's mean air temperature
        self.day_amp_c = gen.uniform(1.0, 2.0, n)
        start_s = (self.start_ms / 1000.0) % 86400.0
        self.day_phase = 2 * np.pi * (start_s / 86400.0 - 15.0 / 24.0) + np.pi / 2
        self.weather_c = np.zeros(n)
        self.humidity_base = gen.uniform(40.0, 60.0, n)
        self.humidity_gain = gen.uniform(1.5, 3.0, n)  # % relative humidity per C
        self.humidity_walk = np.zeros(n)
        self.thermal_tau_s = gen.uniform(60.0, 120.0, n)  # the enclosure's lag
        self.temp_c = self.site_c.copy()

    def _node_truth(self, t_s: float) -> dict[str, np.ndarray]:
        gen, dt_s, n = self._node_rng, self.dt_s, self.config.machines
        keep = np.exp(-dt_s / 1200.0)  # the weather and the room's moisture wander slowly
        self.weather_c = self.weather_c * keep + gen.normal(0, 0.5 * np.sqrt(1 - keep**2), n)
        self.humidity_walk = self.humidity_walk * keep + gen.normal(0, 2 * np.sqrt(1 - keep**2), n)
        day = self.day_amp_c * np.sin(2 * np.pi * t_s / 86400.0 + self.day_phase)
        air = self.site_c + day + self.weather_c
        self.temp_c += (air + self.extra_heat_c - self.temp_c) * (
            1.0 - np.exp(-dt_s / self.thermal_tau_s)
        )
        humidity = self.humidity_base - self.humidity_gain * (air - self.site_c)
        self.battery = np.maximum(self.battery - self.battery_drain * dt_s, 0.0)
        return {
            "temperature": self.temp_c,
            "humidity": np.clip(humidity + self.humidity_walk, 5.0, 95.0),
            "battery": self.battery,
        }

    @property
    def now_ms(self) -> int:
        """Event time of the next tick."""
        return self.start_ms + round(self.index * self.dt_s * 1000)

    def sampling(self, index: int) -> list[str]:
        """The sensor types that take a sample at tick ``index``."""
        return [
            s for s, every in self._sample_every.items()
            if index == 0 or int(index / every) != int((index - 1) / every)
        ]  # fmt: skip

    def step(self) -> Tick:
        """Advance every machine by one tick and sample the sensors due at this time."""
        cfg, rng, n = self.config, self.rng, self.config.machines
        ts_ms, t_s = self.now_ms, self.index * self.dt_s
        if cfg.kind == "nodes":
            truth, load = self._node_truth(t_s), np.zeros(n)
        else:
            truth, load = self._machine_truth(t_s)
        values, seq = {}, {}
        for sensor in self.sampling(self.index):
            spec = SENSORS[sensor]
            gen = self._current_rng if sensor == "current" else rng
            noisy = truth[sensor] + gen.normal(0.0, spec["noise"], n)
            values[sensor] = quantise(noisy, spec["resolution"])
            seq[sensor] = self.seq[sensor].copy()
            self.seq[sensor] += 1
        for sensor in BOUNDS.keys() & values.keys():
            values[sensor] = bounded(sensor, values[sensor])
        tick = Tick(self.index, ts_ms, values, seq, self.status.copy(), load)
        self.index += 1
        return tick

    def _advance_regimes(self, dt_s: float) -> None:
        self.regime_left_s -= dt_s
        due = np.flatnonzero(self.regime_left_s <= 0)
        if due.size == 0:
            return
        current = self.regime[due]
        draw = self.rng.random(due.size)
        nxt = np.select(
            [current == IDLE, current == RAMP_UP, current == STEADY, current == OVERLOAD],
            [np.full(due.size, RAMP_UP), np.full(due.size, STEADY),
             np.where(draw < 0.3, OVERLOAD, np.where(draw < 0.6, COOL_DOWN, STEADY)),
             np.full(due.size, STEADY)],
            default=IDLE,  # cool-down ends idle
        )  # fmt: skip
        self.regime[due] = nxt
        dwell = self.rng.exponential([DWELL_S[r] for r in nxt])
        dwell = np.maximum(dwell, np.where((nxt == RAMP_UP) | (nxt == COOL_DOWN), 15.0, 5.0))
        self.regime_left_s[due] = dwell
        self.regime_span_s[due] = dwell

    def _target_load(self, t_s: float) -> np.ndarray:
        progress = np.clip(1.0 - self.regime_left_s / self.regime_span_s, 0.0, 1.0)
        cycle = 0.08 * np.sin(2 * np.pi * t_s / self.cycle_period_s + self.cycle_phase)
        steady = self.steady_load + cycle
        r = self.regime
        return np.select(
            [r == IDLE, r == RAMP_UP, r == STEADY, r == OVERLOAD],
            [np.full_like(steady, IDLE_LOAD), IDLE_LOAD + (steady - IDLE_LOAD) * progress,
             steady, np.full_like(steady, OVERLOAD_LOAD)],
            default=steady + (IDLE_LOAD - steady) * progress,  # cool-down
        )  # fmt: skip

    def ticks(self, duration_s: float) -> Iterator[Tick]:
        """Every tick within ``duration_s`` seconds of event time."""
        for _ in range(max(0, round(duration_s * self.tick_hz))):
            yield self.step()

    def records(self, tick: Tick) -> Iterator[dict]:
        """The tick as reading records (schema ``reading``), sensor by sensor, then machine."""
        for sensor, values in tick.values.items():
            seqs = tick.seq[sensor]
            for i, machine_id in enumerate(self.machine_ids):
                v = float(values[i])
                yield {
                    "machine_id": machine_id,
                    "ts": tick.ts_ms,
                    "sensor_type": sensor,
                    "value": None if np.isnan(v) else v,
                    "status_code": int(tick.status[i]),
                    "seq": int(seqs[i]),
                }


def bounded(sensor: str, values: np.ndarray) -> np.ndarray:
    """``values`` of ``sensor`` held within its physical range (:data:`BOUNDS`; as they are
    for a sensor without one), the way a real sensor saturates; a null (NaN) stays null.

    >>> bounded("battery", np.array([100.1, 50.0, np.nan, -0.1])).tolist()
    [100.0, 50.0, nan, 0.0]
    >>> bounded("temperature", np.array([1e4])).tolist()
    [10000.0]
    """
    limits = BOUNDS.get(sensor)
    return values if limits is None else np.clip(values, *limits)


def quantise(values: np.ndarray, resolution: float) -> np.ndarray:
    """Round to the sensor's resolution; the second round removes binary-fraction tails."""
    return np.round(np.round(values / resolution) * resolution, 6)
