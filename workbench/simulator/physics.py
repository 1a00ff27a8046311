"""A factory of machines whose sensors follow simple, plausible physics.

Each machine has an engine load between 0 and 1 that follows a slow cycle of its own
plus a mean-reverting random walk. Temperature follows load through a first-order
thermal lag towards ``ambient + gain * load``; vibration grows with load; pressure
follows load with its own autocorrelated process noise. Every sensor adds Gaussian
noise and is quantised to its resolution. All machines advance together as numpy
vectors, so a factory of thousands of machines costs little per tick.

The same seed and parameters give the same readings, value for value.

>>> f = Factory(FactoryConfig(machines=3, seed=7, start_ms=0))
>>> tick = f.step()
>>> tick.ts_ms, len(tick.values["temperature"]), f.machine_ids[0]
(0, 3, 'm-0001')
>>> f.step().ts_ms   # 1 Hz by default
1000
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from workbench.errors import ConfigError

#: Sensor resolution (quantisation step) and noise standard deviation.
SENSORS: dict[str, dict[str, float]] = {
    "temperature": {"resolution": 0.1, "noise": 0.15},  # degrees C
    "vibration": {"resolution": 0.01, "noise": 0.05},  # mm/s RMS
    "pressure": {"resolution": 0.01, "noise": 0.02},  # bar
}


@dataclass(frozen=True)
class FactoryConfig:
    """What the factory looks like; every field is an experiment parameter."""

    machines: int = 5
    #: Samples per second of every sensor of every machine.
    rate_hz: float = 1.0
    seed: int = 0
    #: Event time of the first sample (epoch ms); None means now, rounded down to the second.
    start_ms: int | None = None
    ambient_c: float = 22.0

    def __post_init__(self) -> None:
        if not 1 <= self.machines <= 100_000:
            raise ConfigError("machines", self.machines, "a whole number from 1 to 100000")
        if not 0 < self.rate_hz <= 1000:
            raise ConfigError("rate", self.rate_hz, "samples per second, > 0 and <= 1000")


@dataclass(frozen=True)
class Tick:
    """One sample of every sensor of every machine at one event time."""

    ts_ms: int
    #: sensor type -> values, one per machine (index as in ``Factory.machine_ids``).
    values: dict[str, np.ndarray]
    #: sensor type -> per-machine sequence numbers of these samples.
    seq: dict[str, np.ndarray]
    load: np.ndarray


class Factory:
    """The machines and their state; :meth:`step` advances every machine by one sample."""

    def __init__(self, config: FactoryConfig) -> None:
        self.config = config
        n = config.machines
        self.rng = np.random.default_rng(config.seed)
        rng = self.rng
        self.machine_ids = [f"m-{i + 1:04d}" for i in range(n)]
        self.dt_s = 1.0 / config.rate_hz
        self.start_ms = config.start_ms if config.start_ms is not None else int(time.time()) * 1000
        self._tick = 0
        # per-machine character: drawn once, so machines differ but stay themselves
        self.base_load = rng.uniform(0.35, 0.75, n)
        self.cycle_amp = rng.uniform(0.1, 0.25, n)
        self.cycle_period_s = rng.uniform(120.0, 900.0, n)
        self.cycle_phase = rng.uniform(0.0, 2 * np.pi, n)
        self.thermal_gain_c = rng.uniform(35.0, 55.0, n)
        self.thermal_tau_s = rng.uniform(60.0, 240.0, n)
        self.vib_base = rng.uniform(0.8, 1.6, n)
        self.vib_gain = rng.uniform(2.0, 4.0, n)
        self.press_base = rng.uniform(3.5, 4.5, n)
        self.press_gain = rng.uniform(1.0, 2.0, n)
        # state: start warm, near each machine's steady temperature at base load
        self.load_noise = np.zeros(n)
        self.press_noise = np.zeros(n)
        self.temp_c = config.ambient_c + self.thermal_gain_c * self.base_load
        self.seq = {s: np.zeros(n, dtype=np.int64) for s in SENSORS}

    def step(self) -> Tick:
        """Advance all machines by one sample interval and sample every sensor."""
        cfg, rng, n, dt = self.config, self.rng, self.config.machines, self.dt_s
        t_s = self._tick * dt
        # load: slow cycle + Ornstein-Uhlenbeck wander, clipped to the physical range
        self.load_noise += -self.load_noise * dt / 60.0 + rng.normal(0.0, 0.02 * np.sqrt(dt), n)
        cycle = self.cycle_amp * np.sin(2 * np.pi * t_s / self.cycle_period_s + self.cycle_phase)
        load = np.clip(self.base_load + cycle + self.load_noise, 0.0, 1.0)
        # temperature: exact first-order lag step towards the load's equilibrium
        target = cfg.ambient_c + self.thermal_gain_c * load
        self.temp_c += (target - self.temp_c) * (1.0 - np.exp(-dt / self.thermal_tau_s))
        # pressure: AR(1) process noise around the load-driven set point
        self.press_noise = 0.95 * self.press_noise + rng.normal(0.0, 0.03, n)
        truth = {
            "temperature": self.temp_c,
            "vibration": self.vib_base + self.vib_gain * load,
            "pressure": self.press_base + self.press_gain * load + self.press_noise,
        }
        values = {}
        for sensor, spec in SENSORS.items():
            noisy = truth[sensor] + rng.normal(0.0, spec["noise"], n)
            # quantise to the resolution; the second round removes binary-fraction tails
            values[sensor] = np.round(np.round(noisy / spec["resolution"]) * spec["resolution"], 6)
        seq = {s: v.copy() for s, v in self.seq.items()}
        for v in self.seq.values():
            v += 1
        ts_ms = self.start_ms + round(t_s * 1000)
        self._tick += 1
        return Tick(ts_ms, values, seq, load)

    def ticks(self, duration_s: float) -> Iterator[Tick]:
        """Every tick within ``duration_s`` seconds of event time."""
        for _ in range(max(0, round(duration_s * self.config.rate_hz))):
            yield self.step()

    def records(self, tick: Tick) -> Iterator[dict[str, Any]]:
        """The tick as reading records (schema ``reading``), machine by machine."""
        for sensor, values in tick.values.items():
            seqs = tick.seq[sensor]
            for i, machine_id in enumerate(self.machine_ids):
                yield {
                    "machine_id": machine_id,
                    "ts": tick.ts_ms,
                    "sensor_type": sensor,
                    "value": float(values[i]),
                    "status_code": 0,
                    "seq": int(seqs[i]),
                }
