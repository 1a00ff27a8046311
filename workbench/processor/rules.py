"""Alert rules as data: a TOML file of ``[[rule]]`` entries and the ``[validation]`` limits.

A rule says which readings *breach* it, and how many breaches in a row open an alert and
how many normal readings in a row close it again (hysteresis), so one noisy reading
neither raises nor clears an alarm. Kinds:

``threshold``  the value is ``above`` and/or ``below`` a limit (the edge rules
               "temperature > 30" and "battery < 10" are two such rules);
``anomaly``    the anomaly score (:mod:`workbench.processor.legacy.stats`) is above ``score_above``;
``model``      the machine model's score (:mod:`workbench.processor.stats.machine`: how far the
               reading is from what the machine's other sensors predict) is above
               ``score_above``;
``drift``      the drift detector fired on this reading;
``null``       the reading has no value;
``stuck``      the value equals the previous one of the same sensor (unless the sensor moves
               in steps: its runs of equal values are long on average, and a plateau is
               not a stuck sensor);
``status``     the machine reports one of ``status`` (shutdown, power fault, ...).

``alone_s`` makes a rule speak of one sensor only: a breach is held for ``alone_s``
seconds of event time, and dropped if another sensor of the same machine had an anomaly
score above ``alone_score`` within ``alone_s`` of it. A load change moves vibration and
pressure together; a de-calibrated sensor moves alone.

``max_breaches`` turns a rule into a detector of *transients*: the alert opens only once
the readings are back to normal, and only if the breach lasted at most that many readings.
A spike is one far-off reading; a step (a recalibration, a failing machine) is not.

Except for ``status`` and ``null`` rules, readings a machine sends while it reports a
non-zero status (shut down, power fault) are not judged at all: a machine that is off is
neither anomalous nor normal.

The ``[model]`` table sets the machine model (``horizon``, ``lags``, ``warmup``, ``clip``,
``load_sensors``); it runs only when a ``model`` rule needs it, on the sensors such rules
watch.

The packaged default is ``rules/default.toml``; point ``WORKBENCH_RULES_FILE`` at your own.

>>> rs = parse_rules({"rule": [{"name": "hot", "kind": "threshold", "sensor": "temperature",
...                             "above": 30}]})
>>> r = rs.rules[0]
>>> r.name, r.above, r.open_after, r.close_after, r.severity
('hot', 30.0, 3, 5, 'warning')
>>> try:
...     parse_rules({"rule": [{"name": "x", "kind": "threshold", "sensor": "temperature"}]})
... except RulesError as exc:
...     print(exc)
rules <rules>: rule 'x': a threshold rule needs above and/or below
"""

from __future__ import annotations

import datetime as dt
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import ConfigError, FileConfigError
from workbench.processor.stats.machine import ModelConfig
from workbench.processor.validate import Limits
from workbench.schemas import sensor_types
from workbench.simulator.control import parse_duration_s
from workbench.simulator.truth import KINDS as FAULT_KINDS

RULE_KINDS = ("threshold", "anomaly", "model", "drift", "null", "stuck", "status")
SEVERITIES = ("info", "warning", "critical")
_RULE_KEYS = {
    "name", "kind", "sensor", "above", "below", "score_above", "open_after", "close_after",
    "max_breaches", "severity", "detects", "machines", "status", "description", "alone_s",
    "alone_score",
}  # fmt: skip
_DEFAULT_KEYS = {"open_after", "close_after", "severity"}
_VALIDATION_KEYS = {"ranges", "earliest", "max_future"}
_MODEL_KEYS = {"horizon", "lags", "warmup", "clip", "prior", "load_sensors"}


class RulesError(FileConfigError):
    """A rules file that cannot be used; the message names the file, the rule and the field."""

    label = "rules"


@dataclass(frozen=True)
class Rule:
    """One alert rule; see the module docstring for what each kind breaches on."""

    name: str
    kind: str
    #: the sensor types it watches; empty for every sensor
    sensors: tuple[str, ...] = ()
    above: float | None = None
    below: float | None = None
    score_above: float | None = None
    #: status codes a ``status`` rule breaches on
    status: tuple[int, ...] = ()
    open_after: int = 3
    close_after: int = 5
    #: ... and for at least this long (event time from the first breach, or the first
    #: normal reading, to the current one): ``open_after = "30s"`` in a rules file
    open_after_s: float = 0.0
    close_after_s: float = 0.0
    max_breaches: int | None = None
    severity: str = "warning"
    #: the fault kinds this rule is meant to catch (for scoring against ground truth)
    detects: tuple[str, ...] = ()
    #: the machines it applies to; empty for every machine
    machines: frozenset[str] = frozenset()
    description: str = ""
    alone_s: float | None = None
    alone_score: float = 4.0

    @property
    def per_machine(self) -> bool:
        """A status rule speaks of the machine, not of one of its sensors."""
        return self.kind == "status"

    def watches(self, sensor_type: str) -> bool:
        return not self.sensors or sensor_type in self.sensors


@dataclass(frozen=True)
class RuleSet:
    """The rules and the validation limits of one rules file."""

    rules: tuple[Rule, ...] = ()
    validation: Limits = field(default_factory=Limits)
    source: str = "<rules>"
    model: ModelConfig = field(default_factory=ModelConfig)

    @property
    def uses_model(self) -> bool:
        """Whether a rule needs the machine model (else it does not run)."""
        return any(r.kind == "model" for r in self.rules)

    @property
    def modelled_sensors(self) -> tuple[str, ...]:
        """The sensor types the machine model takes: those its rules watch (every type
        when one of them watches every sensor)."""
        watched = [r.sensors for r in self.rules if r.kind == "model"]
        if any(not w for w in watched):
            return tuple(sensor_types())
        return tuple(sorted({s for w in watched for s in w}))


def rules_dir() -> Path:
    """``rules/`` of the source tree, or the copy a wheel install carries."""
    packaged = Path(__file__).resolve().parents[1] / "rules"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "rules"


def load_rules(path: str | Path | None = None) -> RuleSet:
    """Load a rules file; None loads the shipped ``default.toml``.

    A bare name without a suffix (``edge``) picks a shipped file of that name.
    """
    p = rules_dir() / "default.toml" if path is None else Path(path)
    if path is not None and not p.suffix:
        shipped = rules_dir() / f"{path}.toml"
        if shipped.is_file():
            p = shipped
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        shipped = ", ".join(sorted(f.stem for f in rules_dir().glob("*.toml")))
        raise ConfigError(
            "rules_file", str(path), f"an existing .toml rules file, or one of: {shipped}"
        ) from None
    except UnicodeDecodeError as exc:
        raise RulesError(p, "the file", f"not UTF-8 text (byte {exc.object[exc.start]:#04x} "
                                        f"at position {exc.start})") from None  # fmt: skip
    except OSError as exc:  # a directory, no permission, ...
        raise RulesError(p, "the file", exc.strerror or str(exc)) from None
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(p, "TOML", str(exc)) from None
    if not data:
        raise RulesError(p, "the file", "it is empty: no [[rule]] and no [validation] (an "
                                        "empty rules file would check nothing)")  # fmt: skip
    return parse_rules(data, p)


def parse_rules(data: dict[str, Any], path: Path | str = "<rules>") -> RuleSet:
    """Check every entry of a rules document; the first problem is raised with its place."""
    unknown = set(data) - {"rule", "defaults", "validation", "model"}
    if unknown:
        raise RulesError(path, "top level", f"unknown table(s) {sorted(unknown)}")
    defaults = data.get("defaults", {})
    _no_unknown(path, "[defaults]", defaults, _DEFAULT_KEYS)
    entries = data.get("rule", [])
    if not isinstance(entries, list):
        raise RulesError(path, "rule", "must be an array of tables: [[rule]]")
    rules: list[Rule] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries, 1):
        where = f"rule {entry.get('name', f'#{i}')!r}" if isinstance(entry, dict) else f"rule #{i}"
        if not isinstance(entry, dict):
            raise RulesError(path, where, "must be a table")
        rule = _rule(path, where, {**defaults, **entry})
        if rule.name in seen:
            raise RulesError(path, where, "the name is used twice; names identify alerts")
        seen.add(rule.name)
        rules.append(rule)
    return RuleSet(tuple(rules), _validation(path, data.get("validation", {})), str(path),
                   _model(path, data.get("model", {})))  # fmt: skip


def _rule(path: Path | str, where: str, e: dict[str, Any]) -> Rule:
    _no_unknown(path, where, e, _RULE_KEYS)
    name = e.get("name")
    if not isinstance(name, str) or not name or "/" in name:
        raise RulesError(path, where, "needs a name: a non-empty string without '/'")
    kind = e.get("kind")
    if kind not in RULE_KINDS:
        raise RulesError(path, where, f"kind {kind!r} is not one of {', '.join(RULE_KINDS)}")
    sensors = _sensors(path, where, e.get("sensor", "*"))
    num = {k: _number(path, where, k, e.get(k)) for k in ("above", "below", "score_above")}
    counts, spans = {}, {}
    for k, d in (("open_after", 3), ("close_after", 5)):
        counts[k], spans[k] = _count_or_span(path, where, k, e.get(k, d))
    max_breaches = e.get("max_breaches")
    if max_breaches is not None:
        max_breaches = _count(path, where, "max_breaches", max_breaches, minimum=1)
        if spans["open_after"]:
            raise RulesError(path, where, "max_breaches counts readings: open_after must be "
                             "a count too, not a duration")  # fmt: skip
        if max_breaches < counts["open_after"]:
            raise RulesError(path, where, "max_breaches must be at least open_after")
    severity = e.get("severity", "warning")
    if severity not in SEVERITIES:
        raise RulesError(
            path, where, f"severity {severity!r} is not one of {', '.join(SEVERITIES)}"
        )
    detects = _strings(path, where, "detects", e.get("detects", []))
    wrong = [d for d in detects if d not in FAULT_KINDS]
    if wrong:
        raise RulesError(
            path, where, f"detects {wrong} are not fault kinds ({', '.join(FAULT_KINDS)})"
        )
    status = e.get("status", [])
    if not isinstance(status, list) or not all(
        isinstance(c, int) and not isinstance(c, bool) for c in status
    ):
        raise RulesError(path, where, "status must be a list of integer status codes")
    needs = {
        "threshold": ("above and/or below", num["above"] is not None or num["below"] is not None),
        "anomaly": ("score_above", num["score_above"] is not None),
        "model": ("score_above", num["score_above"] is not None),
        "status": ("status (a list of codes)", bool(status)),
    }.get(kind)
    if needs and not needs[1]:
        raise RulesError(path, where, f"a {kind} rule needs {needs[0]}")
    if num["above"] is not None and num["below"] is not None and num["below"] >= num["above"]:
        # "below 10 or above 30" is two rules' worth of meaning in one: fine; but
        # below >= above would breach on every value, which is never what was meant
        raise RulesError(path, where, "below must be less than above (it would always breach)")
    alone_s = _number(path, where, "alone_s", e.get("alone_s"))
    alone_score = _number(path, where, "alone_score", e.get("alone_score", 4.0))
    if (alone_s is not None and alone_s <= 0) or alone_score <= 0:
        raise RulesError(path, where, "alone_s and alone_score must be > 0")
    if kind == "model" and alone_s is not None:
        raise RulesError(path, where, "a model rule takes no alone_s: its score already "
                         "judges the sensor against the rest of its machine")  # fmt: skip
    return Rule(
        name=name,
        kind=kind,
        sensors=sensors,
        above=num["above"],
        below=num["below"],
        score_above=num["score_above"],
        status=tuple(status),
        open_after=counts["open_after"],
        close_after=counts["close_after"],
        open_after_s=spans["open_after"],
        close_after_s=spans["close_after"],
        max_breaches=max_breaches,
        severity=severity,
        detects=tuple(detects),
        machines=frozenset(_strings(path, where, "machines", e.get("machines", []))),
        description=str(e.get("description", "")),
        alone_s=alone_s,
        alone_score=alone_score,
    )


def _model(path: Path | str, m: dict[str, Any]) -> ModelConfig:
    """The ``[model]`` table: durations as "1h"/"60s", the load sensors by type."""
    where = "[model]"
    if not isinstance(m, dict):
        raise RulesError(path, where, "must be a table")
    _no_unknown(path, where, m, _MODEL_KEYS)
    default = ModelConfig()
    try:
        horizon = parse_duration_s(m["horizon"], "horizon") if "horizon" in m else None
        lags = m.get("lags")
        if lags is not None:
            if not isinstance(lags, list):
                raise RulesError(path, where, 'lags must be a list of two durations, ["1m", "5m"]')
            lags = tuple(parse_duration_s(x, "lags") for x in lags)
    except ConfigError as exc:
        if isinstance(exc, RulesError):
            raise
        raise RulesError(path, where, str(exc)) from None
    warmup = m.get("warmup", default.warmup)
    if isinstance(warmup, bool) or not isinstance(warmup, int):
        raise RulesError(path, where, f"warmup must be a whole number of readings, not {warmup!r}")
    loads = m.get("load_sensors", list(default.load_sensors))
    if loads == "*" or (isinstance(loads, list) and "*" in loads):
        raise RulesError(path, where, "load_sensors names sensor types (a machine's load is "
                         "not every one of its sensors)")  # fmt: skip
    sensors = _sensors(path, where, loads) if loads else ()
    try:
        return ModelConfig(
            horizon_s=default.horizon_s if horizon is None else horizon,
            lags_s=default.lags_s if lags is None else lags,  # type: ignore[arg-type]
            warmup=warmup,
            clip=_number(path, where, "clip", m.get("clip", default.clip)),  # type: ignore[arg-type]
            prior=_number(path, where, "prior", m.get("prior", default.prior)),  # type: ignore[arg-type]
            load_sensors=sensors,
        )
    except ValueError as exc:
        raise RulesError(path, where, str(exc)) from None


def _validation(path: Path | str, v: dict[str, Any]) -> Limits:
    if not isinstance(v, dict):
        raise RulesError(path, "[validation]", "must be a table")
    _no_unknown(path, "[validation]", v, _VALIDATION_KEYS)
    ranges: dict[str, tuple[float | None, float | None]] = {}
    for sensor, bounds in v.get("ranges", {}).items():
        where = f"[validation.ranges] {sensor}"
        if sensor not in sensor_types():
            raise RulesError(
                path, where, f"unknown sensor type; known: {', '.join(sensor_types())}"
            )
        if not (isinstance(bounds, list) and len(bounds) == 2):
            raise RulesError(path, where, 'must be [min, max] (use "" for no bound)')
        low, high = (None if b == "" else _number(path, where, "bound", b) for b in bounds)
        if low is not None and high is not None and low >= high:
            raise RulesError(path, where, f"min {low} must be less than max {high}")
        ranges[sensor] = (low, high)
    limits = Limits(ranges=ranges)
    try:
        if "max_future" in v:
            limits = Limits(
                ranges, limits.min_ts_ms, parse_duration_s(v["max_future"], "max_future")
            )
        if "earliest" in v:
            earliest = v["earliest"]
            if not hasattr(earliest, "year"):
                raise RulesError(path, "[validation] earliest", "must be a TOML date, 2000-01-01")
            day = dt.datetime(earliest.year, earliest.month, earliest.day, tzinfo=dt.UTC)
            limits = Limits(ranges, int(day.timestamp() * 1000), limits.max_future_s)
    except ConfigError as exc:
        if isinstance(exc, RulesError):
            raise
        raise RulesError(path, "[validation]", str(exc)) from None
    return limits


def _no_unknown(path: Path | str, where: str, table: dict[str, Any], known: set[str]) -> None:
    unknown = set(table) - known
    if unknown:
        raise RulesError(path, where, f"unknown field(s) {sorted(unknown)}; known: {sorted(known)}")


def _number(path: Path | str, where: str, key: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RulesError(path, where, f"{key} must be a finite number, not {value!r}")
    return float(value)


def _count(path: Path | str, where: str, key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise RulesError(path, where, f"{key} must be an integer >= {minimum}, not {value!r}")
    return value


def _count_or_span(path: Path | str, where: str, key: str, value: Any) -> tuple[int, float]:
    """``open_after``/``close_after``: a count of readings (3), or a duration ("30s", "5m"),
    which is one reading and that much event time, so that a rule means the same at 1 Hz
    and at one reading every 5 minutes."""
    if isinstance(value, str):
        problem = f"{key} must be an integer count of readings, or a duration with its unit "
        problem += f"such as '30s' or '5m', not {value!r}"
        if value.strip().lstrip("+-").replace(".", "", 1).isdigit():  # "3": readings or s?
            raise RulesError(path, where, problem)
        try:
            span = parse_duration_s(value, key)
        except ConfigError:
            raise RulesError(path, where, problem) from None
        if span <= 0:
            raise RulesError(path, where, f"{key} must be a duration > 0, not {value!r}")
        return 1, span
    return _count(path, where, key, value, minimum=1), 0.0


def _strings(path: Path | str, where: str, key: str, value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise RulesError(path, where, f"{key} must be a string or a list of strings")
    return value


def _sensors(path: Path | str, where: str, value: Any) -> tuple[str, ...]:
    names = _strings(path, where, "sensor", value)
    if "*" in names:
        return ()
    wrong = [s for s in names if s not in sensor_types()]
    if wrong:
        raise RulesError(
            path, where, f'sensor {wrong} unknown; known: {", ".join(sensor_types())} or "*"'
        )
    return tuple(names)
