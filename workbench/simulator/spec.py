"""What defines a simulated run: factory, duration, chaos, scripted faults, event-time start.

A scenario file supplies defaults and arguments override them, so
``--scenario standard --seed 7`` is the standard story with another seed. The spec is
recorded with the run (``params``), so every run can be told apart and repeated.

>>> spec = SimulationSpec.build(machines=3, duration_s=10, chaos={"loss": 0.1})
>>> spec.factory.machines, spec.duration_s, spec.chaos, spec.start_ms
(3, 10.0, {'loss': 0.1}, 1767225600000)
>>> SimulationSpec.build(scenario="standard", seed=7).factory.seed
7
>>> SimulationSpec.build(failure_lead_s=(0, 0)).params()["failure_lead_s"]  # no precursor
[0.0, 0.0]
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

from workbench.errors import ConfigError
from workbench.simulator.chaos import Magnitudes, ScriptedFault
from workbench.simulator.physics import DEFAULT_START_MS, MEASURED_BY_KIND, FactoryConfig
from workbench.simulator.scenario import Fault, Scenario, load_scenario


@dataclass(frozen=True)
class SimulationSpec:
    factory: FactoryConfig
    duration_s: float
    chaos: dict[str, float] = field(default_factory=dict)
    faults: tuple[Fault, ...] = ()
    magnitudes: Magnitudes = field(default_factory=Magnitudes)
    scenario: str | None = None

    @property
    def start_ms(self) -> int:
        return self.factory.start_ms if self.factory.start_ms is not None else DEFAULT_START_MS

    def scripted(self) -> list[ScriptedFault]:
        return [f.scripted(self.start_ms) for f in self.faults]

    @classmethod
    def build(
        cls,
        machines: int | None = None,
        duration_s: float | None = None,
        rate_hz: float | None = None,
        seed: int | None = None,
        chaos: dict[str, float] | None = None,
        scenario: str | Scenario | None = None,
        start_ms: int | None = None,
        events_per_s: float | None = None,
        realtime: bool = False,
        factory_kind: str | None = None,
        failure_lead_s: tuple[float, float] | None = None,
    ) -> SimulationSpec:
        """Combine a scenario (if any) with explicit values; explicit values win.

        ``failure_lead_s`` is how long a failure degrades before its runaway, a range of
        seconds (``Magnitudes.failure_lead_s``; ``(0, 0)``: no precursor).

        ``events_per_s`` sets the factory-wide reading rate instead of ``rate_hz``.
        A real-time run starts at the current time unless ``start_ms`` is given; any
        other run starts at a fixed origin, so that equal seeds give equal streams.
        """
        sc = load_scenario(scenario) if isinstance(scenario, str) else scenario
        base = sc or Scenario(name="", machines=5, duration_s=30.0)

        def pick(value: Any, default: Any) -> Any:
            return default if value is None else value

        if realtime and start_ms is None:
            start_ms = int(time.time()) * 1000
        factory = FactoryConfig(
            machines=pick(machines, base.machines),
            rate_hz=pick(rate_hz, base.rate_hz),
            seed=pick(seed, base.seed),
            start_ms=start_ms,
            kind=pick(factory_kind, base.factory),
        )
        if events_per_s is not None:
            if events_per_s <= 0:
                raise ConfigError("events-per-s", events_per_s, "a number > 0")
            per_unit_rate = factory.events_per_second() / factory.rate_hz
            factory = dataclasses.replace(factory, rate_hz=events_per_s / per_unit_rate)
        duration = float(pick(duration_s, base.duration_s))
        if duration <= 0:
            raise ConfigError("duration", duration, "seconds > 0")
        faults = tuple(f for f in base.faults if f.machine <= factory.machines)
        measured = MEASURED_BY_KIND[factory.kind]
        wrong = sorted({f.sensor for f in faults if f.sensor and f.sensor not in measured})
        if wrong:
            raise ConfigError("factory", factory.kind, f"a factory whose sensors include the "
                              f"scenario's {', '.join(wrong)}")  # fmt: skip
        magnitudes = base.magnitudes
        if failure_lead_s is not None:
            lead = tuple(float(s) for s in failure_lead_s)
            magnitudes = dataclasses.replace(magnitudes, failure_lead_s=lead)
        return cls(
            factory=factory,
            duration_s=duration,
            chaos=base.chaos | (chaos or {}),
            faults=faults,
            magnitudes=magnitudes,
            scenario=sc.name if sc else None,
        )

    def params(self) -> dict[str, Any]:
        """The spec as JSON-able parameters for the run registry."""
        f = self.factory
        return {
            "scenario": self.scenario,
            "factory": f.kind,
            "machines": f.machines,
            "duration_s": self.duration_s,
            "rate_hz": f.rate_hz,
            "seed": f.seed,
            "start_ms": self.start_ms,
            "events_per_s": f.events_per_second(),
            "chaos": self.chaos,
            "scripted_faults": len(self.faults),
            "failure_lead_s": [float(s) for s in self.magnitudes.failure_lead_s],
        }
