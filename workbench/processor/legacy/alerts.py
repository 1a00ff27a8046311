"""Alert lifecycles: rules applied reading by reading, with hysteresis.

For each rule and each (machine, sensor) it watches (each machine, for a ``status``
rule), an :class:`AlertEngine` counts breaches and normal readings in a row, in the order
readings arrive:

* ``open_after`` breaches in a row open an alert (``opened``); its ``start_ts`` is the
  event time of the first of them, ``event_ts`` of the reading that opened it;
* while open, each further breach raises ``breaches`` and ``peak``; an ``updated`` event
  is emitted when the breach count has doubled since the last event (so a long fault
  speaks a few times, not once a second);
* ``close_after`` normal readings in a row close it (``closed``).

A rule with ``max_breaches`` opens only after the breach run has ended, and only if it
lasted at most that many readings (a transient such as a spike).

The alert id, ``rule/machine/sensor/start_ts``, is a pure function of the readings, so a
processor that restarts from a checkpoint and sees the same readings again produces the
same ids, and the sink's upsert keeps one row per alert.

>>> from workbench.processor.rules import Rule, RuleSet
>>> hot = Rule("hot", "threshold", ("temperature",), above=30.0, open_after=2, close_after=2)
>>> engine = AlertEngine(RuleSet((hot,)))
>>> for ts, v in enumerate([25.0, 31.0, 32.0, 33.0, 29.0, 35.0, 28.0, 27.0]):
...     for e in engine.observe("m-1", "temperature", ts, v, 0, None):
...         print(ts, e.state, e.start_ts, e.breaches, e.peak)
2 opened 1 2 32.0
5 updated 1 4 35.0
7 closed 1 4 35.0
"""

from __future__ import annotations

import logging

# the event type lives with the batch engine now; re-exported here for the reference's users
from workbench.processor.hysteresis import RUN_ALPHA, RUN_CAP, STEPPED_RUN, AlertEvent
from workbench.processor.legacy.stats import Features
from workbench.processor.rules import Rule, RuleSet

log = logging.getLogger(__name__)

_OPEN, _START, _OPENED, _PEAK, _BREACHES, _NORMALS, _EMITTED, _RUN, _RUN_START, _RUN_PEAK = range(
    10
)


class AlertEngine:
    """Applies a :class:`RuleSet` to readings; picklable, so it checkpoints with the partition."""

    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules
        # per (rule index, machine, sensor or None): a mutable list, see the _OPEN... indexes
        self._state: dict[tuple[int, str, str | None], list] = {}
        # per (machine, sensor): the last value (for stuck rules)
        self._last: dict[tuple[str, str], float | None] = {}
        # ... its equal values in a row, and its runs of equal values on average
        self._run: dict[tuple[str, str], int] = {}
        self._mean_run: dict[tuple[str, str], float] = {}
        self._by_sensor: dict[str, tuple[tuple[int, Rule], ...]] = {}
        # alone_s rules: breaches held back, per (rule index, machine, sensor): [first ts,
        # [(ts, value, breach, measure), ...]]; and recent (ts, score) of excited sensors
        self._held: dict[tuple[int, str, str | None], list] = {}
        self._excited: dict[tuple[str, str], list[tuple[int, float]]] = {}
        scores = [r.alone_score for r in rules.rules if r.alone_s is not None]
        self._excited_above = min(scores) if scores else None

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_by_sensor"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _by_sensor={})

    @property
    def open_alerts(self) -> int:
        return sum(1 for s in self._state.values() if s[_OPEN])

    def observe(
        self,
        machine_id: str,
        sensor_type: str,
        ts_ms: int,
        value: float | None,
        status: int,
        features: Features | None,
        model: float | None = None,
    ) -> list[AlertEvent]:
        """Judge one reading against every rule that watches it; return the transitions.
        ``model`` is the machine model's score of the reading (None: none)."""
        rules = self._by_sensor.get(sensor_type)
        if rules is None:
            rules = self._by_sensor[sensor_type] = tuple(
                (i, r) for i, r in enumerate(self.rules.rules) if r.watches(sensor_type)
            )
        key = (machine_id, sensor_type)
        previous = self._last.get(key)
        stepped = self._mean_run.get(key, 1.0) > STEPPED_RUN
        if value is None:
            self._run[key] = 0
        elif value == previous:
            self._run[key] = self._run.get(key, 0) + 1
        else:
            if previous is not None:  # a run of equal values ended
                mean = self._mean_run.get(key, 1.0)
                self._mean_run[key] = mean + RUN_ALPHA * (
                    min(self._run.get(key, 0) + 1, RUN_CAP) - mean
                )
            self._run[key] = 0
        self._last[key] = value
        events: list[AlertEvent] = []
        if self._excited_above is not None:
            score = features.score if features is not None else None
            if score is not None and score > self._excited_above:
                recent = self._excited.setdefault(key, [])
                recent.append((ts_ms, score))
                del recent[:-16]
            if self._held:
                self._release(machine_id, ts_ms, events)
        for i, rule in rules:
            if rule.machines and machine_id not in rule.machines:
                continue
            kind = rule.kind
            if kind == "status":
                breach, measure = status in rule.status, float(status)
            elif kind == "null":
                breach, measure = value is None, None
            elif status != 0 or value is None:
                continue  # a machine that is off, or a missing value, is not judged
            elif kind == "threshold":
                breach = (rule.above is not None and value > rule.above) or (
                    rule.below is not None and value < rule.below
                )
                measure = value
            elif kind == "anomaly":
                score = features.score if features is not None else None
                if score is None:
                    continue  # warm-up or late reading: no opinion
                breach, measure = score > rule.score_above, score
            elif kind == "model":
                if model is None:
                    continue
                breach, measure = model > rule.score_above, model
            elif kind == "drift":
                breach, measure = features is not None and features.drift, value
            else:  # stuck
                breach, measure = value == previous and not stepped, value
            sensor = None if rule.per_machine else sensor_type
            if rule.alone_s is not None and sensor is not None:
                held = self._held.get((i, machine_id, sensor))
                if held is not None:
                    held[1].append((ts_ms, value, breach, measure))
                    continue
                if breach:
                    self._held[(i, machine_id, sensor)] = [ts_ms, [(ts_ms, value, True, measure)]]
                    continue
            event = self._step(i, rule, machine_id, sensor, ts_ms, value, breach, measure)
            if event is not None:
                events.append(event)
        return events

    def flush(self) -> list[AlertEvent]:
        """Decide every held breach now, with what is known (at the end of a run)."""
        events: list[AlertEvent] = []
        self._release(None, None, events)
        return events

    def _release(self, machine_id: str | None, ts_ms: int | None, events: list) -> None:
        """Judge the held breaches of ``machine_id`` whose wait is over (all, if None)."""
        for hkey in list(self._held):
            i, machine, sensor = hkey
            if machine_id is not None and machine != machine_id:
                continue
            rule = self.rules.rules[i]
            first, readings = self._held[hkey]
            wait_ms = rule.alone_s * 1000
            if ts_ms is not None and ts_ms < first + wait_ms:
                continue
            del self._held[hkey]
            if self._shared(rule, machine, sensor, first, wait_ms):
                log.debug("%s on %s/%s at %d moved with another sensor: not alone",
                          rule.name, machine, sensor, first)  # fmt: skip
                readings = [(t, v, False, m) for t, v, _b, m in readings]
            for t, v, breach, measure in readings:
                event = self._step(i, rule, machine, sensor, t, v, breach, measure)
                if event is not None:
                    events.append(event)

    def _shared(self, rule: Rule, machine: str, sensor: str, first: int, wait_ms: float) -> bool:
        for (m, other), recent in self._excited.items():
            if (
                m == machine
                and other != sensor
                and any(
                    abs(t - first) <= wait_ms and score > rule.alone_score for t, score in recent
                )
            ):
                return True
        return False

    def _step(
        self,
        i: int,
        rule: Rule,
        machine: str,
        sensor: str | None,
        ts: int,
        value: float | None,
        breach: bool,
        measure: float | None,
    ) -> AlertEvent | None:
        skey = (i, machine, sensor)
        s = self._state.get(skey)
        if s is None:
            if not breach:
                return None
            s = self._state[skey] = [False, 0, 0, None, 0, 0, 0, 0, 0, None]
        if s[_OPEN]:
            if breach:
                s[_BREACHES] += 1
                s[_NORMALS] = 0
                s[_PEAK] = _extreme(rule, s[_PEAK], measure)
                if s[_BREACHES] >= 2 * s[_EMITTED]:
                    s[_EMITTED] = s[_BREACHES]
                    return self._event(rule, machine, sensor, s, "updated", ts, value)
                return None
            s[_NORMALS] += 1
            if s[_NORMALS] == 1:  # the calm starts (RUN_START is free while open)
                s[_RUN_START] = ts
            if s[_NORMALS] >= rule.close_after and ts - s[_RUN_START] >= _ms(rule.close_after_s):
                event = self._event(rule, machine, sensor, s, "closed", ts, value)
                del self._state[skey]
                return event
            return None
        if breach:
            if s[_RUN] == 0:
                s[_RUN_START], s[_RUN_PEAK] = ts, measure
            else:
                s[_RUN_PEAK] = _extreme(rule, s[_RUN_PEAK], measure)
            s[_RUN] += 1
            if (
                rule.max_breaches is None
                and s[_RUN] >= rule.open_after
                and ts - s[_RUN_START] >= _ms(rule.open_after_s)
            ):
                return self._open(rule, machine, sensor, s, ts, value, normals=0)
            return None
        run = s[_RUN]
        if rule.max_breaches is not None and rule.open_after <= run <= rule.max_breaches:
            return self._open(rule, machine, sensor, s, ts, value, normals=1)
        del self._state[skey]
        return None

    def _open(
        self, rule: Rule, machine: str, sensor: str | None, s: list, ts: int, value, normals: int
    ) -> AlertEvent:
        s[_OPEN], s[_START], s[_OPENED], s[_RUN_START] = True, s[_RUN_START], ts, ts
        s[_PEAK], s[_BREACHES], s[_NORMALS], s[_EMITTED] = s[_RUN_PEAK], s[_RUN], normals, s[_RUN]
        if normals >= rule.close_after:  # a transient rule with close_after = 1
            s[_NORMALS] = normals - 1
        return self._event(rule, machine, sensor, s, "opened", ts, value)

    @staticmethod
    def _event(
        rule: Rule, machine: str, sensor: str | None, s: list, state: str, ts: int, value
    ) -> AlertEvent:
        return AlertEvent(
            f"{rule.name}/{machine}/{sensor or '*'}/{s[_START]}",
            rule.name,
            rule.kind,
            rule.severity,
            machine,
            sensor,
            state,
            s[_START],
            s[_OPENED],
            ts,
            s[_PEAK],
            value,
            s[_BREACHES],
            rule.detects,
        )


def _extreme(rule: Rule, a: float | None, b: float | None) -> float | None:
    """The more extreme of two measures: the lower one for a below-only threshold rule."""
    if a is None:
        return b
    if b is None:
        return a
    if rule.kind == "threshold" and rule.above is None:
        return min(a, b)
    if rule.kind == "threshold" and rule.below is not None and rule.above is not None:
        return (
            b
            if abs(b - (rule.above + rule.below) / 2) > abs(a - (rule.above + rule.below) / 2)
            else a
        )
    return max(a, b)


def _ms(seconds: float) -> int:
    return round(seconds * 1000)
