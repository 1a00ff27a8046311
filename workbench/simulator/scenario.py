"""Scenario files: a seeded story of a factory and its faults, as TOML.

A scenario sets the factory (machines, duration, rate, seed), background chaos
intensities for the whole run, fault sizes, and scripted faults placed at known times
on known machines ("a failure at minute 3 on machine 7")::

    [run]
    machines = 12
    duration = "5m"
    seed = 7

    [chaos]                 # background intensities (see workbench.simulator.control)
    loss = 0.01
    latency = "500ms"

    [magnitudes]            # optional; fields of workbench.simulator.chaos.Magnitudes
    burst_factor = 4
    failure_lead_s = ["5m", "15m"]   # a failure's degradation before its runaway; [0, 0]: none

    [[fault]]
    kind = "failure"
    machine = 7             # machine number: m-0007
    at = "3m"               # event time after the start of the run (a failure: its runaway)
    duration = "90s"        # optional; kind-specific default otherwise
    lead = "2m"             # optional, a failure's: its degradation before ``at`` (0: none)

A failure degrades for its lead before the runaway placed at ``at`` (the lead drawn from
``failure_lead_s`` unless the fault gives one), but not before the run began: one placed
sooner after the start than its lead degrades from the start on, for less time.

Scenarios shipped with the workbench live in ``scenarios/`` and are selected by name
(``--scenario standard``); any other path to a ``.toml`` file works too.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import ConfigError, FileConfigError
from workbench.simulator.chaos import Magnitudes, ScriptedFault
from workbench.simulator.control import check_intensity, parse_duration_s
from workbench.simulator.physics import DEFAULT_START_MS, KINDS, MEASURED_BY_KIND
from workbench.simulator.truth import FAULT_KINDS

_RUN_KEYS = {"machines", "duration", "rate_hz", "seed", "description", "factory"}
_FAULT_KEYS = {"kind", "machine", "at", "duration", "sensor", "magnitude", "lead"}


class ScenarioError(FileConfigError):
    """A scenario file that cannot be used; the message names the file and the entry."""

    label = "scenario"


@dataclass(frozen=True)
class Fault:
    """A scripted fault as written: times in seconds after the run's start."""

    kind: str
    machine: int  # 1-based machine number
    at_s: float
    duration_s: float | None = None
    sensor: str | None = None
    magnitude: float | None = None
    lead_s: float | None = None  # a failure's degradation before at_s

    def scripted(self, start_ms: int) -> ScriptedFault:
        return ScriptedFault(
            self.kind,
            self.machine - 1,
            start_ms + round(self.at_s * 1000),
            self.sensor,
            self.duration_s,
            self.magnitude,
            self.lead_s,
        )


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str = ""
    machines: int = 5
    duration_s: float = 60.0
    rate_hz: float = 1.0
    seed: int = 0
    chaos: dict[str, float] = field(default_factory=dict)
    factory: str = "machines"

    magnitudes: Magnitudes = field(default_factory=Magnitudes)
    faults: tuple[Fault, ...] = ()

    def scripted(self, start_ms: int = DEFAULT_START_MS) -> list[ScriptedFault]:
        return [f.scripted(start_ms) for f in self.faults]


def scenario_dir() -> Path:
    """``scenarios/`` of the source tree, or the copy a wheel install carries."""
    packaged = Path(__file__).parent.parent / "scenarios"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "scenarios"


def available() -> list[str]:
    return sorted(p.stem for p in scenario_dir().glob("*.toml"))


def load_scenario(name_or_path: str) -> Scenario:
    """Load a shipped scenario by name, or a scenario file by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = scenario_dir() / f"{name_or_path}.toml"
        if not path.is_file():
            raise ConfigError(
                "scenario", name_or_path, f"a file, or one of: {', '.join(available())}"
            )
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError("scenario", str(path), "an existing .toml file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(path, "TOML", str(exc)) from None
    return parse_scenario(data, path)


def parse_scenario(data: dict[str, Any], path: Path | str = "<scenario>") -> Scenario:
    """Check every entry of a scenario; the first problem is raised with its place."""
    unknown = set(data) - {"run", "chaos", "magnitudes", "fault"}
    if unknown:
        raise ScenarioError(path, "top level", f"unknown table(s) {sorted(unknown)}")
    run = data.get("run", {})
    _no_unknown(path, "[run]", run, _RUN_KEYS)
    try:
        machines = int(run.get("machines", 5))
        duration_s = parse_duration_s(run.get("duration", 60), "duration")
        rate_hz = float(run.get("rate_hz", 1.0))
        seed = int(run.get("seed", 0))
    except (ValueError, ConfigError) as exc:
        raise ScenarioError(path, "[run]", str(exc)) from None
    factory = run.get("factory", "machines")
    if factory not in KINDS:
        raise ScenarioError(path, "[run]", f"factory {factory!r} is not one of {', '.join(KINDS)}")
    chaos = {}
    for kind, value in data.get("chaos", {}).items():
        try:
            raw = parse_duration_s(value, kind) if kind == "latency" else value
            chaos[kind] = check_intensity(kind, raw)
        except (ConfigError, ValueError, TypeError) as exc:
            raise ScenarioError(path, f"[chaos] {kind}", str(exc)) from None
    magnitudes = _magnitudes(path, data.get("magnitudes", {}))
    faults = tuple(
        _fault(path, i, entry, machines, duration_s, factory)
        for i, entry in enumerate(data.get("fault", []), start=1)
    )
    return Scenario(
        name=Path(path).stem,
        description=str(run.get("description", "")),
        machines=machines,
        duration_s=duration_s,
        rate_hz=rate_hz,
        seed=seed,
        chaos=chaos,
        magnitudes=magnitudes,
        faults=faults,
        factory=factory,
    )


def _no_unknown(path: Path | str, where: str, table: dict, allowed: set[str]) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise ScenarioError(
            path, where, f"unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}"
        )


def _magnitudes(path: Path | str, table: dict[str, Any]) -> Magnitudes:
    defaults = Magnitudes()
    allowed = {f.name for f in dataclasses.fields(Magnitudes)}
    _no_unknown(path, "[magnitudes]", table, allowed)
    values: dict[str, Any] = {}
    try:
        for key, value in table.items():
            current = getattr(defaults, key)
            if isinstance(current, dict):
                values[key] = current | {k: float(v) for k, v in value.items()}
            elif isinstance(current, tuple) and key.endswith("_s"):  # seconds, or "5m"
                values[key] = tuple(parse_duration_s(v, key) for v in value)
            elif isinstance(current, tuple):
                values[key] = tuple(float(v) for v in value)
            else:
                values[key] = type(current)(value)
            if isinstance(current, tuple) and len(values[key]) != 2:
                raise ConfigError(key, value, "a range [low, high]")
        return dataclasses.replace(defaults, **values)
    except (ConfigError, TypeError, ValueError) as exc:
        raise ScenarioError(path, "[magnitudes]", str(exc)) from None


def _fault(
    path: Path | str, number: int, entry: dict, machines: int, duration_s: float,
    factory: str = "machines",
) -> Fault:  # fmt: skip
    where = f"fault #{number}"
    _no_unknown(path, where, entry, _FAULT_KEYS)
    kind = entry.get("kind")
    if kind not in FAULT_KINDS:
        raise ScenarioError(path, where, f"kind {kind!r} is not one of {', '.join(FAULT_KINDS)}")
    machine = entry.get("machine")
    if not isinstance(machine, int) or not 1 <= machine <= machines:
        raise ScenarioError(
            path, where, f"machine {machine!r} is not a number from 1 to {machines}"
        )
    try:
        at_s = parse_duration_s(entry.get("at", ""), "at")
        length = entry.get("duration")
        length_s = parse_duration_s(length, "duration") if length is not None else None
        lead = entry.get("lead")
        lead_s = parse_duration_s(lead, "lead") if lead is not None else None
    except ConfigError as exc:
        raise ScenarioError(path, where, str(exc)) from None
    if lead_s is not None and kind != "failure":
        raise ScenarioError(path, where, f"lead is a failure's degradation; a {kind} has none")
    if at_s >= duration_s:
        raise ScenarioError(path, where, f"at {at_s:g}s is after the run's end ({duration_s:g}s)")
    sensor = entry.get("sensor")
    measured = MEASURED_BY_KIND[factory]
    if sensor is not None and sensor not in measured:
        raise ScenarioError(path, where, f"sensor {sensor!r} is not one of {', '.join(measured)} "
                            f"(a factory of {factory})")  # fmt: skip
    if kind in ("loss", "duplicate", "latency", "malformed") and length_s is None:
        raise ScenarioError(path, where, f"a scripted {kind} window needs a duration")
    magnitude = entry.get("magnitude")
    return Fault(
        kind, machine, at_s, length_s, sensor, None if magnitude is None else float(magnitude),
        lead_s,
    )  # fmt: skip
