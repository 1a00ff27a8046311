"""The batch rule engine (processor/hysteresis.py) against the per-reading reference.

The reference is :class:`~workbench.processor.legacy.alerts.AlertEngine`, one per run. Every
case of tests/test_alerts.py is ported to :class:`RuleEngine` (fed one-reading batches and
checked against the reference at every call), then long crafted and real streams are cut
into batches at random places: the events, their order and their runs must be the
reference's, whatever the cuts, through checkpoints and key compaction.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
import math
import os
import pickle
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from workbench.processor.hysteresis import AlertEvent, RuleEngine
from workbench.processor.legacy.alerts import AlertEngine
from workbench.processor.legacy.stats import Features, SensorStats
from workbench.processor.rules import Rule, RuleSet, load_rules

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
NAN = math.nan
M = "m-1"
T = "temperature"

# --- the reference and the engine side by side -------------------------------------------

#: A reading as the tests write it: run, machine, sensor, ts, value, status, score, drift.
Reading = tuple[str, str, str, int, float | None, int, float | None, bool]


class Ids:
    """Dense ids of (run, machine, sensor) and (run, machine), and their names."""

    def __init__(self) -> None:
        self.key: dict[tuple[str, str, str], int] = {}
        self.mkey: dict[tuple[str, str], int] = {}
        self.sensors: list[str] = []  # per key
        self.machines: list[str] = []  # per machine key
        self.mkey_run: list[str] = []

    def intern(self, run: str, machine: str, sensor: str) -> tuple[int, int]:
        mk = self.mkey.get((run, machine))
        if mk is None:
            mk = self.mkey[(run, machine)] = len(self.machines)
            self.machines.append(machine)
            self.mkey_run.append(run)
        k = self.key.get((run, machine, sensor))
        if k is None:
            k = self.key[(run, machine, sensor)] = len(self.sensors)
            self.sensors.append(sensor)
        return k, mk

    def mkeys_of(self, run: str) -> list[int]:
        return [mk for (r, _m), mk in self.mkey.items() if r == run]

    def drop_run(self, run: str) -> tuple[np.ndarray, np.ndarray]:
        """Forget a run; ids renumbered in order. Returns the kept old ids (for keep())."""
        keys = sorted((k, rk) for rk, k in self.key.items() if rk[0] != run)
        mkeys = sorted((m, rm) for rm, m in self.mkey.items() if rm[0] != run)
        self.key = {rk: i for i, (_k, rk) in enumerate(keys)}
        self.mkey = {rm: i for i, (_m, rm) in enumerate(mkeys)}
        self.sensors = [rk[2] for _k, rk in keys]
        self.machines = [rm[1] for _m, rm in mkeys]
        self.mkey_run = [rm[0] for _m, rm in mkeys]
        return np.array([k for k, _ in keys], np.int64), np.array([m for m, _ in mkeys], np.int64)


def columns(ids: Ids, readings: list[Reading]) -> dict[str, np.ndarray]:
    keys, mkeys = zip(*(ids.intern(r[0], r[1], r[2]) for r in readings), strict=True)
    return {
        "keys": np.array(keys, np.int64),
        "mkeys": np.array(mkeys, np.int64),
        "ts_ms": np.array([r[3] for r in readings], np.int64),
        "values": np.array([NAN if r[4] is None else r[4] for r in readings]),
        "isnull": np.array([r[4] is None for r in readings]),
        "status": np.array([r[5] for r in readings], np.int64),
        "score": np.array([NAN if r[6] is None else r[6] for r in readings]),
        "drift": np.array([r[7] for r in readings]),
    }


def observe(eng: RuleEngine, ids: Ids, readings: list[Reading]) -> list[tuple[str, AlertEvent]]:
    """Feed one batch; the events with the run of each."""
    c = columns(ids, readings)
    events = eng.observe(c["keys"], c["mkeys"], ids.machines, ids.sensors, c["ts_ms"],
                         c["values"], c["isnull"], c["status"], c["score"], c["drift"])  # fmt: skip
    assert len(eng.event_mkeys) == len(events)
    return [(ids.mkey_run[m], e) for m, e in zip(eng.event_mkeys.tolist(), events, strict=True)]


def flush(eng: RuleEngine, ids: Ids, run: str | None = None) -> list[tuple[str, AlertEvent]]:
    events = eng.flush(None if run is None else ids.mkeys_of(run))
    return [(ids.mkey_run[m], e) for m, e in zip(eng.event_mkeys.tolist(), events, strict=True)]


def feat(score: float | None = None, drift: bool = False) -> Features:
    return Features(50.0, 1.0, 50.0, 1.0, 52.0, 50.0, score, drift)


def reference(rules: RuleSet, readings: list[Reading]) -> list[tuple[str, AlertEvent]]:
    """The legacy engines (one per run) over the stream, then each run flushed."""
    engines: dict[str, AlertEngine] = {}
    out = []
    for run, machine, sensor, ts, value, status, score, drift in readings:
        eng = engines.get(run) or engines.setdefault(run, AlertEngine(rules))
        out += [(run, e) for e in eng.observe(machine, sensor, ts, value, status,
                                                feat(score, drift))]  # fmt: skip
    for run, eng in engines.items():
        out += [(run, e) for e in eng.flush()]
    return out


def batched(rules: RuleSet, readings: list[Reading], cuts) -> list[tuple[str, AlertEvent]]:
    """The engine over the stream cut at ``cuts``, then each run flushed."""
    eng, ids = RuleEngine(rules), Ids()
    out = []
    bounds = [0, *sorted(cuts), len(readings)]
    for a, b in itertools.pairwise(bounds):
        if b > a:
            out += observe(eng, ids, readings[a:b])
    for run in dict.fromkeys(r[0] for r in readings):
        out += flush(eng, ids, run)
    return out


def random_cuts(rng: random.Random, n: int, count: int) -> list[int]:
    return rng.sample(range(1, n), min(count, n - 1))


class Engine:
    """The reference's per-reading API over :class:`RuleEngine` (one-reading batches); every
    call is also made on the reference, and must give the same events."""

    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules
        self.engine, self.ids, self.ref = RuleEngine(rules), Ids(), AlertEngine(rules)

    def observe(self, machine, sensor, ts, value, status, features) -> list[AlertEvent]:
        score = None if features is None else features.score
        drift = features is not None and features.drift
        got = observe(self.engine, self.ids, [("r", machine, sensor, ts, value, status, score,
                                               drift)])  # fmt: skip
        events = [e for _run, e in got]
        assert events == self.ref.observe(machine, sensor, ts, value, status, features)
        return events

    def flush(self) -> list[AlertEvent]:
        events = self.engine.flush()
        assert events == self.ref.flush()
        return events

    @property
    def open_alerts(self) -> int:
        assert self.engine.open_alerts == self.ref.open_alerts
        return self.engine.open_alerts

    def restored(self) -> Engine:
        """A copy through a checkpoint: npz bytes for the engine, pickle for the reference."""
        copy = Engine.__new__(Engine)
        copy.rules, copy.ids = self.rules, pickle.loads(pickle.dumps(self.ids))
        copy.engine = RuleEngine.from_arrays(npz_roundtrip(self.engine.arrays()), self.rules)
        copy.ref = pickle.loads(pickle.dumps(self.ref))
        return copy


def npz_roundtrip(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    with np.load(io.BytesIO(buf.getvalue()), allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def engine(*rules: Rule) -> Engine:
    return Engine(RuleSet(tuple(rules)))


def hot(**kw) -> Rule:
    kw = {"open_after": 3, "close_after": 3} | kw
    return Rule("hot", "threshold", (T,), above=30.0, **kw)


def feed(eng: Engine, values, machine=M, sensor=T, t0=0, step=1000, status=0):
    out = []
    for k, v in enumerate(values):
        ts = t0 + k * step
        out += [(ts, e) for e in eng.observe(machine, sensor, ts, v, status, None)]
    return out


def feed_scores(eng: Engine, scores, machine=M, sensor=T, t0=0, step=1000, drift=()):
    out = []
    for k, s in enumerate(scores):
        ts = t0 + k * step
        out += [(ts, e) for e in eng.observe(machine, sensor, ts, 50.0, 0, feat(s, k in drift))]
    return out


def states(events) -> list[str]:
    return [e.state for _, e in events]


# --- tests/test_alerts.py, ported ------------------------------------------------------


def test_open_after_consecutive_breaches():
    eng = engine(hot())
    events = feed(eng, [25.0, 31.0, 32.0, 33.0], t0=10_000)
    [(ts, e)] = events
    assert isinstance(e, AlertEvent)
    assert (e.state, ts, e.event_ts, e.opened_ts, e.start_ts) == ("opened", 13_000, 13_000,
                                                                    13_000, 11_000)  # fmt: skip
    assert (e.breaches, e.peak, e.value) == (3, 33.0, 33.0)
    assert (e.rule, e.kind, e.severity, e.machine_id, e.sensor_type) == (
        "hot", "threshold", "warning", M, T)  # fmt: skip
    assert eng.open_alerts == 1


def test_fewer_breaches_than_open_after_do_not_open():
    eng = engine(hot())
    assert feed(eng, [31.0, 32.0]) == []
    assert eng.open_alerts == 0


def test_interrupted_run_does_not_open():
    eng = engine(hot())
    assert feed(eng, [31.0, 32.0, 29.0, 31.0, 32.0]) == []
    [(_, e)] = feed(eng, [33.0], t0=5000)
    assert (e.state, e.start_ts, e.breaches) == ("opened", 3000, 3)


def test_a_rule_in_time_means_the_same_at_any_sampling_rate():
    """open_after "3s" / close_after "5s": breached for 3 s of event time, calm for 5 s,
    whether a reading comes every second or every 250 ms."""
    rule = hot(open_after=1, open_after_s=3.0, close_after=1, close_after_s=5.0)
    for step in (1000, 250):
        per_s = 1000 // step
        values = [31.0] * (5 * per_s) + [20.0] * (8 * per_s)
        events = feed(engine(rule), values, step=step)
        assert [(ts, e.state, e.start_ts) for ts, e in events] == [
            (3000, "opened", 0),  # the first breach at 0, open once 3 s have passed
            (5000 + 5000, "closed", 0),  # calm from 5 s, closed once it has lasted 5 s
        ], step


def test_a_rule_in_time_needs_the_span_and_not_only_readings():
    # five breaches in 2 s do not make 3 s; at one reading every 4 s, the second breach
    # does, and the calm that starts at 8 s has lasted 5 s only at the reading of 16 s
    rule = hot(open_after=1, open_after_s=3.0, close_after=1, close_after_s=5.0)
    assert feed(engine(rule), [31.0] * 5, step=500) == []
    events = feed(engine(rule), [31.0, 31.0, 20.0, 20.0, 20.0], step=4000)
    assert [(ts, e.state) for ts, e in events] == [(4000, "opened"), (16000, "closed")]


def test_value_equal_to_threshold_is_not_a_breach():
    assert feed(engine(hot(open_after=1)), [30.0, 30.0, 30.0]) == []


def test_close_after_consecutive_normals():
    eng = engine(hot(close_after=3))
    events = feed(eng, [31.0, 32.0, 35.0, 20.0, 21.0, 22.0, 23.0])
    assert states(events) == ["opened", "closed"]
    ts, closed = events[1]
    assert (ts, closed.event_ts, closed.start_ts, closed.opened_ts) == (5000, 5000, 0, 2000)
    assert (closed.breaches, closed.peak, closed.value) == (3, 35.0, 22.0)
    assert closed.alert_id == events[0][1].alert_id
    assert eng.open_alerts == 0


def test_breach_during_closing_resets_the_count():
    eng = engine(hot(close_after=3))
    assert states(feed(eng, [31.0, 32.0, 33.0, 20.0, 20.0, 34.0, 20.0, 20.0])) == ["opened"]
    assert eng.open_alerts == 1
    [(_, closed)] = feed(eng, [20.0], t0=8000)
    assert (closed.state, closed.breaches, closed.peak) == ("closed", 4, 34.0)


def test_new_alert_after_close_has_a_new_id():
    events = feed(engine(hot(open_after=1, close_after=1)), [31.0, 20.0, 32.0, 20.0])
    assert states(events) == ["opened", "closed", "opened", "closed"]
    assert events[0][1].alert_id == f"hot/{M}/{T}/0"
    assert events[2][1].alert_id == f"hot/{M}/{T}/2000"


def test_updated_when_breaches_double():
    events = feed(engine(hot(open_after=2)), [31.0] * 17)
    assert [(e.state, e.breaches) for _, e in events] == [
        ("opened", 2), ("updated", 4), ("updated", 8), ("updated", 16)]  # fmt: skip
    assert all(e.start_ts == 0 and e.opened_ts == 1000 for _, e in events)


def test_peak_tracks_the_most_extreme_value():
    events = feed(engine(hot(open_after=1)), [31.0, 40.0, 35.0, 36.0])
    assert [(e.state, e.breaches, e.peak) for _, e in events] == [
        ("opened", 1, 31.0), ("updated", 2, 40.0), ("updated", 4, 40.0)]  # fmt: skip


def test_below_rule_peak_is_the_lowest_value():
    low = Rule("battery-low", "threshold", ("battery",), below=10.0, open_after=2, close_after=1)
    events = feed(engine(low), [9.0, 5.0, 8.0, 7.0, 50.0], sensor="battery")
    assert states(events) == ["opened", "updated", "closed"]
    assert events[-1][1].peak == 5.0


def test_band_rule_peak_is_the_farthest_from_the_middle():
    band = Rule("band", "threshold", (T,), above=30.0, below=10.0, open_after=1, close_after=1)
    events = feed(engine(band), [31.0, 5.0, 39.0, 0.0, 20.0])
    assert [(e.state, e.peak) for _, e in events] == [
        ("opened", 31.0), ("updated", 5.0), ("updated", 0.0), ("closed", 0.0)]  # fmt: skip


def test_alert_id_format():
    [(_, e)] = feed(engine(hot()), [31.0, 31.0, 31.0], t0=1_700_000_000_000)
    assert e.alert_id == f"hot/{M}/{T}/1700000000000"


def test_machines_and_sensors_are_counted_apart():
    eng = engine(hot(open_after=2), Rule("all", "threshold", (), above=30.0, open_after=2))
    assert eng.observe(M, T, 0, 31.0, 0, None) == []
    assert eng.observe("m-2", T, 0, 31.0, 0, None) == []
    assert eng.observe(M, "pressure", 0, 31.0, 0, None) == []
    events = eng.observe(M, T, 1000, 31.0, 0, None)
    assert [e.rule for e in events] == ["hot", "all"]  # in the rules' order
    assert all((e.machine_id, e.sensor_type) == (M, T) for e in events)


def test_rule_ignores_sensors_it_does_not_watch():
    assert feed(engine(hot(open_after=1)), [99.0, 99.0], sensor="pressure") == []


def test_machines_filter():
    eng = engine(hot(open_after=1, machines=frozenset({"m-2"})))
    assert feed(eng, [40.0, 40.0], machine=M) == []
    assert [e.machine_id for _, e in feed(eng, [40.0], machine="m-2")] == ["m-2"]


def test_none_value_is_not_judged_by_threshold_rules():
    events = feed(engine(hot(open_after=2)), [31.0, None, 32.0])
    assert [(e.state, e.breaches) for _, e in events] == [("opened", 2)]


def spike_rule(**kw) -> Rule:
    kw = {"open_after": 1, "max_breaches": 2, "close_after": 1} | kw
    return Rule("spike", "anomaly", (T,), score_above=12.0, **kw)


def test_one_reading_spike_opens_on_return_to_normal():
    events = feed_scores(engine(spike_rule()), [1.0, 50.0, 1.0, 1.0, 1.0])
    assert states(events) == ["opened", "closed"]
    ts, opened = events[0]
    assert (ts, opened.opened_ts, opened.start_ts, opened.breaches, opened.peak) == (
        2000, 2000, 1000, 1, 50.0)  # fmt: skip
    assert events[1][0] == 3000


def test_spike_does_not_open_while_it_lasts():
    assert feed_scores(engine(spike_rule()), [1.0, 50.0, 40.0]) == []


def test_two_reading_spike_with_max_breaches_two_opens():
    events = feed_scores(engine(spike_rule()), [1.0, 30.0, 40.0, 1.0])
    assert [(e.state, e.start_ts, e.breaches, e.peak) for _, e in events] == [
        ("opened", 1000, 2, 40.0)]  # fmt: skip


def test_long_excursion_with_max_breaches_never_opens():
    eng = engine(spike_rule(max_breaches=2))
    assert feed_scores(eng, [1.0, 20.0, 20.0, 20.0, 20.0, 20.0, 1.0, 1.0, 1.0]) == []
    assert eng.open_alerts == 0


def test_transient_needs_open_after_breaches():
    rule = Rule("blip", "threshold", (T,), above=30.0, open_after=2, max_breaches=3)
    assert feed(engine(rule), [31.0, 20.0, 20.0]) == []
    assert states(feed(engine(rule), [31.0, 31.0, 20.0])) == ["opened"]


def shutdown_rule(**kw) -> Rule:
    kw = {"status": (2,), "open_after": 2, "close_after": 2} | kw
    return Rule("shutdown", "status", **kw)


def test_status_rule_is_per_machine():
    eng = engine(shutdown_rule())
    assert eng.observe(M, T, 0, 20.0, 2, None) == []
    [e] = eng.observe(M, "vibration", 100, 1.0, 2, None)
    assert (e.state, e.sensor_type, e.alert_id, e.peak) == ("opened", None, f"shutdown/{M}/*/0",
                                                            2.0)  # fmt: skip
    assert e.start_ts == 0 and e.opened_ts == 100


def test_status_rule_breaches_only_on_listed_codes():
    eng = engine(shutdown_rule(open_after=1))
    assert feed(eng, [20.0, 20.0], status=1) == []
    assert feed(eng, [20.0], status=0) == []
    assert states(feed(eng, [20.0], status=2, t0=5000)) == ["opened"]


def test_status_rule_closes_on_normal_status():
    eng = engine(shutdown_rule(close_after=2))
    events = feed(eng, [20.0, 20.0], status=2) + feed(eng, [20.0, 20.0], status=0, t0=2000)
    assert states(events) == ["opened", "closed"]
    assert events[-1][1].sensor_type is None


def test_status_rule_judges_null_readings():
    assert states(feed(engine(shutdown_rule()), [None, None], status=2)) == ["opened"]


def test_nonzero_status_readings_are_not_judged_by_threshold_rules():
    eng = engine(hot(open_after=2, close_after=1))
    assert feed(eng, [35.0, 35.0, 35.0], status=2) == []
    feed(eng, [31.0, 31.0], t0=10_000)
    assert feed(eng, [20.0, 20.0], status=3, t0=20_000) == []
    assert eng.open_alerts == 1


def test_nonzero_status_does_not_break_a_breach_run():
    eng = engine(hot(open_after=2))
    eng.observe(M, T, 0, 31.0, 0, None)
    assert eng.observe(M, T, 1000, 20.0, 2, None) == []
    [e] = eng.observe(M, T, 2000, 31.0, 0, None)
    assert (e.state, e.breaches, e.start_ts) == ("opened", 2, 0)


def test_nonzero_status_readings_are_not_judged_by_anomaly_rules():
    eng = engine(Rule("a", "anomaly", (T,), score_above=5.0, open_after=1))
    assert eng.observe(M, T, 0, 99.0, 2, feat(50.0)) == []
    assert eng.open_alerts == 0


def test_null_rule():
    gone = Rule("no-data", "null", (), open_after=2, close_after=2, severity="critical")
    events = feed(engine(gone), [1.0, None, None, None, 2.0, 3.0])
    assert [(e.state, e.breaches, e.start_ts) for _, e in events] == [
        ("opened", 2, 1000), ("closed", 3, 1000)]  # fmt: skip
    assert events[0][1].value is None and events[0][1].peak is None
    assert events[0][1].severity == "critical"


def test_null_rule_judges_readings_of_a_machine_that_is_off():
    assert states(feed(engine(Rule("no-data", "null", (), open_after=1)), [None], status=2)) == [
        "opened"]  # fmt: skip


def test_stuck_rule_opens_after_open_after_repeats():
    eng = engine(Rule("stuck", "stuck", (T,), open_after=3, close_after=1))
    assert feed(eng, [5.0, 5.0, 5.0]) == []
    [(_, e)] = feed(eng, [5.0], t0=3000)
    assert (e.state, e.start_ts, e.opened_ts, e.breaches, e.peak) == ("opened", 1000, 3000, 3, 5.0)
    assert states(feed(eng, [5.1], t0=4000)) == ["closed"]


def test_stuck_rule_is_per_sensor():
    eng = engine(Rule("stuck", "stuck", (), open_after=2, close_after=1))
    for k in range(3):
        assert eng.observe(M, T, k * 10, 5.0 + k, 0, None) == []
        assert eng.observe(M, "pressure", k * 10 + 1, 5.0 + k, 0, None) == []


def test_stuck_rule_ignores_nulls():
    assert feed(engine(Rule("stuck", "stuck", (T,), open_after=1)), [None, None, 5.0]) == []


def test_a_sensor_that_moves_in_steps_is_not_stuck_on_its_plateaus():
    # SKAB's pressure: plateaus of many equal readings between steps of 0.33 bar. Once its
    # runs of equal values have been long on average, a plateau no longer breaches; a
    # sensor that changes at almost every reading is still caught when it sticks
    rule = Rule("stuck", "stuck", (T,), open_after=10, close_after=1)
    plateaus = [v for level in (0.0, 0.33, 0.66, 0.33, 0.0, 0.33) for v in [level] * 8]
    stepped = plateaus + [0.66] * 15  # a longer plateau than the stuck rule waits for
    assert feed(engine(rule), stepped) == []
    first = feed(engine(rule), [0.66] * 15)  # ... which, with no history, was stuck
    assert states(first) == ["opened"]
    noisy = [20.0 + 0.1 * (k % 7) for k in range(48)] + [21.0] * 15
    assert states(feed(engine(rule), noisy)) == ["opened"]


def test_stuck_compares_with_the_previous_reading_whatever_its_status():
    eng = engine(Rule("stuck", "stuck", (T,), open_after=2, close_after=1))
    eng.observe(M, T, 0, 5.0, 0, None)
    eng.observe(M, T, 1000, 5.0, 2, None)  # not judged, but remembered
    assert states([(0, e) for e in eng.observe(M, T, 2000, 5.0, 0, None)]) == []
    assert states([(0, e) for e in eng.observe(M, T, 3000, 5.0, 0, None)]) == ["opened"]


def test_anomaly_rule_uses_the_score():
    eng = engine(Rule("runaway", "anomaly", (T,), score_above=6.0, open_after=2, close_after=1))
    events = feed_scores(eng, [1.0, 7.0, 9.0, 8.0, 2.0])
    assert [(e.state, e.peak) for _, e in events] == [("opened", 9.0), ("closed", 9.0)]
    assert events[0][1].value == 50.0


def test_anomaly_none_score_gives_no_opinion():
    eng = engine(Rule("runaway", "anomaly", (T,), score_above=6.0, open_after=3, close_after=1))
    events = feed_scores(eng, [7.0, None, 7.0, None, None, 7.0])
    assert [(ts, e.state, e.breaches, e.start_ts) for ts, e in events] == [(5000, "opened", 3, 0)]
    assert feed_scores(eng, [None, None, None], t0=6000) == []
    assert eng.open_alerts == 1


def test_anomaly_without_features_gives_no_opinion():
    rule = Rule("runaway", "anomaly", (T,), score_above=6.0, open_after=1)
    assert feed(engine(rule), [99.0, 99.0]) == []


def test_drift_rule_uses_features_drift():
    eng = engine(Rule("level-shift", "drift", (T,), open_after=1, close_after=2))
    events = feed_scores(eng, [1.0, 9.0, 1.0, 1.0], drift={1})
    assert [(ts, e.state, e.start_ts) for ts, e in events] == [
        (1000, "opened", 1000), (3000, "closed", 1000)]  # fmt: skip
    assert events[0][1].peak == 50.0


def test_drift_rule_without_features_does_not_breach():
    assert feed(engine(Rule("level-shift", "drift", (T,), open_after=1)), [1.0, 100.0]) == []


def alone_rule(**kw) -> Rule:
    kw = {"open_after": 1, "close_after": 2, "alone_s": 3.0, "alone_score": 8.0} | kw
    return Rule("level-shift", "drift", (T, "vibration", "pressure"), **kw)


def test_alone_breach_is_held_then_opens_once_the_wait_is_over():
    eng = engine(alone_rule())
    assert eng.observe(M, T, 10_000, 60.0, 0, feat(9.0, drift=True)) == []
    assert eng.observe(M, "vibration", 11_000, 1.0, 0, feat(1.0)) == []
    assert eng.observe(M, T, 11_000, 60.0, 0, feat(1.0)) == []
    assert eng.observe(M, "vibration", 12_999, 1.0, 0, feat(1.0)) == []
    assert eng.open_alerts == 0
    assert eng.engine.held_breaches == 1
    events = eng.observe(M, "vibration", 13_000, 1.0, 0, feat(1.0))
    assert [(e.state, e.sensor_type, e.start_ts, e.opened_ts) for e in events] == [
        ("opened", T, 10_000, 10_000)]  # fmt: skip
    assert events[0].alert_id == f"level-shift/{M}/{T}/10000"
    assert eng.open_alerts == 1


def test_held_readings_are_replayed_in_order():
    eng = engine(alone_rule(close_after=2))
    eng.observe(M, T, 10_000, 60.0, 0, feat(9.0, drift=True))
    eng.observe(M, T, 11_000, 60.0, 0, feat(1.0))
    eng.observe(M, T, 12_000, 60.0, 0, feat(1.0))
    events = eng.observe(M, T, 13_000, 60.0, 0, feat(1.0))
    assert [(e.state, e.event_ts) for e in events] == [("opened", 10_000), ("closed", 12_000)]


def test_alone_breach_shared_with_another_sensor_is_dropped():
    eng = engine(alone_rule())
    eng.observe(M, T, 10_000, 60.0, 0, feat(9.0, drift=True))
    eng.observe(M, "vibration", 11_000, 3.0, 0, feat(9.5))
    events = eng.observe(M, "pressure", 14_000, 4.0, 0, feat(1.0))
    events += eng.observe(M, T, 15_000, 60.0, 0, feat(1.0))
    assert events + eng.flush() == []
    assert eng.open_alerts == 0


def test_other_sensor_excited_just_before_also_counts_as_shared():
    eng = engine(alone_rule())
    eng.observe(M, "vibration", 7_000, 3.0, 0, feat(9.5))
    eng.observe(M, T, 10_000, 60.0, 0, feat(9.0, drift=True))
    assert eng.observe(M, T, 13_000, 60.0, 0, feat(1.0)) == []
    assert eng.flush() == []


def test_other_sensor_below_alone_score_is_not_shared():
    eng = engine(alone_rule())
    eng.observe(M, T, 10_000, 60.0, 0, feat(9.0, drift=True))
    eng.observe(M, "vibration", 11_000, 3.0, 0, feat(7.9))
    assert [e.state for e in eng.observe(M, "vibration", 13_000, 3.0, 0, feat(1.0))] == [
        "opened"]  # fmt: skip


def test_other_sensor_excited_outside_the_window_is_not_shared():
    eng = engine(alone_rule())
    eng.observe(M, "vibration", 6_000, 3.0, 0, feat(20.0))
    eng.observe(M, T, 10_000, 60.0, 0, feat(9.0, drift=True))
    assert [e.state for e in eng.observe(M, "vibration", 13_000, 3.0, 0, feat(1.0))] == [
        "opened"]  # fmt: skip


def test_another_machine_excited_is_not_shared():
    eng = engine(alone_rule())
    eng.observe(M, T, 10_000, 60.0, 0, feat(9.0, drift=True))
    eng.observe("m-2", "vibration", 11_000, 3.0, 0, feat(20.0))
    assert [e.state for e in eng.observe(M, T, 13_000, 60.0, 0, feat(1.0))] == ["opened"]


def test_held_breach_waits_for_a_reading_of_its_own_machine():
    eng = engine(alone_rule())
    eng.observe(M, T, 10_000, 60.0, 0, feat(9.0, drift=True))
    assert eng.observe("m-2", T, 20_000, 60.0, 0, feat(1.0)) == []
    assert eng.open_alerts == 0
    assert [e.state for e in eng.observe(M, "pressure", 20_000, 4.0, 0, feat(1.0))] == ["opened"]


def test_another_run_of_the_same_machine_is_not_shared():
    eng, ids = RuleEngine(RuleSet((alone_rule(),))), Ids()
    observe(eng, ids, [("r1", M, T, 10_000, 60.0, 0, 9.0, True),
                       ("r2", M, "vibration", 11_000, 3.0, 0, 20.0, False)])  # fmt: skip
    assert observe(eng, ids, [("r2", M, T, 13_000, 60.0, 0, 1.0, False)]) == []  # r1 waits
    got = observe(eng, ids, [("r1", M, "vibration", 13_000, 60.0, 0, 1.0, False)])
    assert [(run, e.state) for run, e in got] == [("r1", "opened")]


@pytest.mark.parametrize("later", [15, 16])
def test_only_the_last_16_excitements_of_a_sensor_count(later):
    # a second alone rule lowers the bar for remembering an excitement to 5: a sensor
    # excited often forgets its strong excitement after 16 weaker ones
    weak = Rule("blip", "anomaly", ("pressure",), score_above=99.0, alone_s=1.0, alone_score=5.0)
    eng = engine(alone_rule(), weak)
    eng.observe(M, "vibration", 9_000, 3.0, 0, feat(9.5))
    for i in range(later):
        eng.observe(M, "vibration", 9_001 + i, 3.0, 0, feat(6.0))
    eng.observe(M, T, 10_000, 60.0, 0, feat(9.0, drift=True))
    events = eng.observe(M, T, 13_000, 60.0, 0, feat(1.0))
    assert [e.state for e in events] == ([] if later == 15 else ["opened"])


def test_flush_decides_held_breaches():
    eng = engine(alone_rule())
    eng.observe(M, T, 10_000, 60.0, 0, feat(9.0, drift=True))
    assert [(e.state, e.start_ts) for e in eng.flush()] == [("opened", 10_000)]
    assert eng.flush() == []


def test_flush_of_one_run_leaves_the_others_held():
    eng, ids = RuleEngine(RuleSet((alone_rule(),))), Ids()
    observe(eng, ids, [("r1", M, T, 10_000, 60.0, 0, 9.0, True),
                       ("r2", M, T, 10_000, 60.0, 0, 9.0, True)])  # fmt: skip
    assert [(run, e.state) for run, e in flush(eng, ids, "r2")] == [("r2", "opened")]
    assert eng.held_breaches == 1
    assert [(run, e.state) for run, e in flush(eng, ids)] == [("r1", "opened")]


def test_flush_drops_shared_held_breaches():
    eng = engine(alone_rule())
    eng.observe(M, T, 10_000, 60.0, 0, feat(9.0, drift=True))
    eng.observe(M, "vibration", 10_500, 3.0, 0, feat(12.0))
    assert eng.flush() == []


def test_flush_without_held_breaches_is_empty():
    eng = engine(hot())
    feed(eng, [31.0, 31.0, 31.0])
    assert eng.flush() == []


def test_alone_transient_spike_opens_after_the_wait():
    spike = Rule("spike", "anomaly", (T, "vibration"), score_above=12.0, open_after=1,
                 max_breaches=2, close_after=1, alone_s=3.0, alone_score=8.0)  # fmt: skip
    events = feed_scores(engine(spike), [1.0, 1.0, 50.0, 1.0, 1.0, 1.0, 1.0], t0=0)
    assert [(ts, e.state, e.start_ts, e.opened_ts) for ts, e in events] == [
        (5000, "opened", 2000, 3000), (5000, "closed", 2000, 3000)]  # fmt: skip


def test_pickle_preserves_open_alerts():
    eng = engine(hot(open_after=2, close_after=2))
    feed(eng, [31.0, 31.0])
    restored = eng.restored()
    assert restored.open_alerts == 1
    events = feed(restored, [20.0, 20.0], t0=2000)
    assert [(e.state, e.alert_id) for _, e in events] == [("closed", f"hot/{M}/{T}/0")]


def test_pickle_preserves_held_breaches():
    eng = engine(alone_rule())
    eng.observe(M, T, 10_000, 60.0, 0, feat(9.0, drift=True))
    assert [e.state for e in eng.restored().flush()] == ["opened"]


# --- long streams, cut anywhere ----------------------------------------------------------


SENSORS = ("temperature", "vibration", "pressure", "battery")
BASE = {"temperature": 50.0, "vibration": 3.0, "pressure": 100.0, "battery": 60.0}


def crafted_stream(seed: int, runs=("r1", "r2"), machines: int = 4, ticks: int = 300):
    """Interleaved machines, sensors and runs, readings a little out of order, with spikes,
    steps, stuck runs, nulls, status changes, flat batteries and alone/shared excitement."""
    rng = random.Random(seed)
    timed = []
    for run in runs:
        for mi in range(machines):
            machine = f"m-{mi + 1}"
            status = [0] * ticks
            for _ in range(ticks // 60):
                at, length = rng.randrange(ticks), rng.randint(1, 9)
                status[at : at + length] = [rng.choice((1, 2, 2))] * len(status[at : at + length])
            # episodes shared by the sensors of the machine (a load change moves them all)
            shared = {rng.randrange(ticks): rng.sample(SENSORS, rng.randint(2, 3))
                      for _ in range(ticks // 50)}  # fmt: skip
            for sensor in SENSORS:
                level, kind, left, held = BASE[sensor], None, 0, None
                for t in range(ticks):
                    score, drift = abs(rng.gauss(0, 2.0)), False
                    value = round(level + rng.gauss(0, 1.0), 1)  # repeats now and then
                    if left == 0 and rng.random() < 0.04:
                        kind = rng.choice(("spike", "step", "stuck", "null", "hot", "flat",
                                           "runaway", "drift"))  # fmt: skip
                        left = {"spike": rng.randint(1, 3), "step": 1, "stuck": rng.randint(3, 14),
                                "null": rng.randint(1, 5), "hot": rng.randint(1, 8),
                                "flat": rng.randint(1, 6), "runaway": rng.randint(4, 25),
                                "drift": 1}[kind]  # fmt: skip
                        held = value
                    if left:
                        left -= 1
                        if kind == "spike":
                            value, score = value + 40.0, rng.uniform(10.0, 60.0)
                        elif kind == "step":
                            level += rng.choice((-8.0, 8.0))
                            value, score, drift = level, rng.uniform(7.0, 11.0), True
                        elif kind == "stuck":
                            value, score = held, rng.uniform(0.0, 3.0)
                        elif kind == "null":
                            value, score = None, None
                        elif kind == "hot":
                            value = 58.0 + rng.uniform(0.1, 5.0)
                        elif kind == "flat":
                            value = rng.uniform(2.0, 9.9)
                        elif kind == "runaway":
                            score = rng.uniform(5.0, 14.0)
                        else:
                            drift, score = True, rng.uniform(6.0, 10.0)
                    if t in shared and sensor in shared[t]:
                        score, drift = rng.uniform(8.5, 13.0), rng.random() < 0.5
                    if t < 5:
                        score = None
                    ts = 1_000_000 + t * 1000 + SENSORS.index(sensor) * 7
                    arrival = ts + rng.uniform(0, 2500)
                    timed.append((arrival, (run, machine, sensor, ts, value, status[t], score,
                                            drift)))  # fmt: skip
    timed.sort(key=lambda x: x[0])
    return [r for _, r in timed]


def all_kinds() -> RuleSet:
    """Every kind, transients, filters on sensors and machines, several alone rules."""
    three = ("temperature", "vibration", "pressure")
    return RuleSet((
        Rule("hot", "threshold", (T,), above=58.0, open_after=2, close_after=3),
        Rule("band", "threshold", ("pressure",), above=108.0, below=92.0, open_after=1,
             close_after=2),
        Rule("battery-low", "threshold", ("battery",), below=10.0, open_after=1, close_after=2),
        Rule("spike", "anomaly", three, score_above=12.0, open_after=1, max_breaches=2,
             close_after=1, alone_s=3.0, alone_score=8.0),
        Rule("blip", "anomaly", ("vibration",), score_above=9.0, open_after=1, max_breaches=3,
             close_after=2, alone_s=2.0, alone_score=6.0),
        Rule("runaway", "anomaly", ("temperature", "vibration"), score_above=6.0, open_after=4,
             close_after=5, severity="critical"),
        Rule("shutdown", "status", status=(2,), open_after=3, close_after=5),
        Rule("off", "status", ("vibration", "pressure"), status=(1, 2), open_after=1,
             close_after=2, alone_s=2.0, alone_score=5.0),
        Rule("level-shift", "drift", three, open_after=1, close_after=30, alone_s=3.0,
             alone_score=8.0),
        Rule("stuck-sensor", "stuck", three, open_after=4, close_after=1),
        Rule("stuck-some", "stuck", (), open_after=2, close_after=2,
             machines=frozenset({"m-2", "m-3"})),
        Rule("hot-m1", "threshold", (), above=57.0, open_after=1, close_after=10,
             machines=frozenset({"m-1"})),
        Rule("no-data", "null", (), open_after=2, close_after=2),
        Rule("gap", "null", ("pressure",), open_after=1, close_after=1, alone_s=1.0),
        Rule("warm-for", "threshold", (T,), above=55.0, open_after=1, open_after_s=3.0,
             close_after=1, close_after_s=4.0),
        Rule("blip-calm", "anomaly", ("pressure",), score_above=9.0, open_after=1,
             max_breaches=2, close_after=1, close_after_s=2.0),
    ))  # fmt: skip


RULE_SETS = {"all-kinds": all_kinds, "default": lambda: load_rules(),
             "edge": lambda: load_rules("edge")}  # fmt: skip


@pytest.mark.parametrize("name", sorted(RULE_SETS))
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_crafted_stream_cut_anywhere_gives_the_reference_events(name, seed):
    rules, readings = RULE_SETS[name](), crafted_stream(seed)
    expected = reference(rules, readings)
    kinds = {(e.rule, e.state) for _, e in expected}
    assert len(expected) > 50 and len(kinds) > 4, kinds
    rng = random.Random(seed)
    assert batched(rules, readings, []) == expected
    for count in (3, 40, 700):
        assert batched(rules, readings, random_cuts(rng, len(readings), count)) == expected


def test_the_crafted_streams_reach_every_situation():
    rules = all_kinds()
    events = [e for seed in (1, 2, 3) for _, e in reference(rules, crafted_stream(seed))]
    seen = {(e.rule, e.state) for e in events}
    for rule in rules.rules:
        rule = rule.name
        assert (rule, "opened") in seen, rule
        assert (rule, "closed") in seen, rule
    assert {"updated"} <= {e.state for e in events}
    assert {e.machine_id for e in events if e.rule == "hot-m1"} == {"m-1"}
    assert {e.machine_id for e in events if e.rule == "stuck-some"} == {"m-2", "m-3"}
    # a held breach was dropped because another sensor moved with it, and others were not
    held = _held_fates(rules, crafted_stream(1))
    assert held["shared"] > 0 and held["alone"] > 0, held


def _held_fates(rules: RuleSet, readings: list[Reading]) -> dict[str, int]:
    """How many held breaches the reference released as shared, and as alone."""
    fates = {"shared": 0, "alone": 0}
    engines: dict[str, AlertEngine] = {}
    for run, machine, sensor, ts, value, status, score, drift in readings:
        eng = engines.setdefault(run, AlertEngine(rules))
        before = dict(eng._held)
        eng.observe(machine, sensor, ts, value, status, feat(score, drift))
        for (i, m, s), (first, _r) in before.items():
            if (i, m, s) not in eng._held or eng._held[(i, m, s)][0] != first:
                rule = rules.rules[i]
                fates["shared" if eng._shared(rule, m, s, first, rule.alone_s * 1000)
                      else "alone"] += 1  # fmt: skip
    return fates


def test_one_reading_batches_give_the_reference_events():
    rules, readings = all_kinds(), crafted_stream(4, runs=("r1",), machines=2, ticks=150)
    assert batched(rules, readings, range(1, len(readings))) == reference(rules, readings)


def test_event_buffer_grows_mid_batch():
    every = Rule("every", "threshold", (), above=-1e9, open_after=1, close_after=1)
    flip = Rule("flip", "threshold", (), above=0.0, open_after=1, close_after=1)
    rules = RuleSet((every, flip))
    readings = [("r", f"m-{i % 7}", T, i, float(i % 2), 0, None, False) for i in range(3000)]
    expected = reference(rules, readings)
    assert len(expected) > 3000
    assert batched(rules, readings, []) == expected


# --- checkpoints and compaction ----------------------------------------------------------


@pytest.mark.parametrize("name", sorted(RULE_SETS))
def test_checkpoint_mid_stream_continues_identically(name):
    rules, readings = RULE_SETS[name](), crafted_stream(5)
    expected = reference(rules, readings)
    rng = random.Random(5)
    for cut in sorted(rng.sample(range(1, len(readings)), 6)):
        eng, ids = RuleEngine(rules), Ids()
        out = observe(eng, ids, readings[:cut])
        arrays = npz_roundtrip(eng.arrays())
        assert all(a.dtype != object for a in arrays.values())
        eng = RuleEngine.from_arrays(arrays, rules)
        b = rng.randrange(cut, len(readings))
        out += observe(eng, ids, readings[cut:b]) if b > cut else []
        out += observe(eng, ids, readings[b:])
        for run in ("r1", "r2"):
            out += flush(eng, ids, run)
        assert out == expected, cut


def test_keep_compacts_without_changing_the_events():
    """Run r1 ends (flushed) and its keys are dropped mid-stream; r2 goes on unchanged."""
    rules = all_kinds()
    r1 = crafted_stream(10, runs=("r1",), ticks=150)
    r2 = crafted_stream(11, runs=("r2",), ticks=300)
    readings = sorted(r1 + r2, key=lambda r: r[3])
    expected = reference(rules, readings)
    cut = max(i for i, r in enumerate(readings) if r[0] == "r1") + 1
    eng, ids = RuleEngine(rules), Ids()
    out = observe(eng, ids, readings[:cut]) + flush(eng, ids, "r1")
    held, open_alerts = eng.held_breaches, eng.open_alerts
    keys, mkeys = ids.drop_run("r1")
    eng.keep(keys, mkeys)
    assert set(ids.mkey_run) == {"r2"} and eng.arrays()["last"].size == keys.size
    assert eng.held_breaches == held  # r1's were flushed: all of them are r2's
    assert 0 < eng.open_alerts < open_alerts
    rest = readings[cut:]
    for a, b in itertools.pairwise([0, 300, 301, 2000, len(rest)]):
        out += observe(eng, ids, rest[a:b])
        if b == 2000:
            eng = RuleEngine.from_arrays(npz_roundtrip(eng.arrays()), rules)
    out += flush(eng, ids, "r2")
    for run in ("r1", "r2"):
        assert [x for x in out if x[0] == run] == [x for x in expected if x[0] == run], run


def test_restore_under_changed_rules_keeps_only_rules_of_the_same_name_and_kind():
    three = ("temperature", "vibration", "pressure")
    keep = Rule("hot", "threshold", (T,), above=58.0, open_after=2, close_after=40)
    gone = Rule("stuck-sensor", "stuck", three, open_after=2, close_after=50)
    before = Rule("no-data", "null", (), open_after=1, close_after=60)
    after = Rule("no-data", "threshold", ("battery",), below=10.0, open_after=1, close_after=3)
    added = Rule("runaway", "anomaly", three, score_above=6.0, open_after=2, close_after=3)
    alone = Rule("level-shift", "drift", three, open_after=1, close_after=30, alone_s=3.0,
                 alone_score=8.0)  # fmt: skip
    old, new = RuleSet((keep, gone, before, alone)), RuleSet((alone, added, keep, after))
    readings = crafted_stream(8)
    cut = len(readings) // 2
    eng, ids = RuleEngine(old), Ids()
    observe(eng, ids, readings[:cut])
    assert eng.open_alerts > 0
    restored = RuleEngine.from_arrays(npz_roundtrip(eng.arrays()), new)
    got = observe(restored, ids, readings[cut:]) + flush(restored, ids)
    # expected: the new rules from the start, with the state of the changed-kind and the
    # added rule dropped at the cut (the other rules had the same state before the cut)
    expected: list[tuple[str, AlertEvent]] = []
    engines: dict[str, AlertEngine] = {}
    for i, (run, machine, sensor, ts, value, status, score, drift) in enumerate(readings):
        if i == cut:
            for ref in engines.values():
                for table in (ref._state, ref._held):
                    for skey in [s for s in table if s[0] in (1, 3)]:
                        del table[skey]
        ref = engines.setdefault(run, AlertEngine(new))
        ev = ref.observe(machine, sensor, ts, value, status, feat(score, drift))
        if i >= cut:
            expected += [(run, e) for e in ev]
    for run in ("r1", "r2"):
        expected += [(run, e) for e in engines[run].flush()]
    assert got == expected
    rules_seen = {e.rule for _, e in got}
    assert "stuck-sensor" not in rules_seen
    assert {"hot", "no-data", "runaway", "level-shift"} <= rules_seen
    # the kept rule carried its open alerts over: some close without opening after the cut
    opened = {e.alert_id for _, e in got if e.state == "opened"}
    assert any(e.rule == "hot" and e.alert_id not in opened for _, e in got)
    # ... and the changed-kind rule did not: every no-data alert after the cut is new
    assert all(e.alert_id in opened for _, e in got if e.rule == "no-data")


def test_restore_keeps_counters_under_a_changed_setting():
    eng, ids = RuleEngine(RuleSet((hot(open_after=1, close_after=5),))), Ids()
    observe(eng, ids, [("r", M, T, 0, 40.0, 0, None, False)])
    longer = RuleEngine.from_arrays(eng.arrays(), RuleSet((hot(open_after=1, close_after=2),)))
    got = observe(longer, ids, [("r", M, T, t, 20.0, 0, None, False) for t in (1, 2)])
    assert [(e.state, e.event_ts) for _, e in got] == [("closed", 2)]


def test_checkpoint_version_is_checked():
    arrays = RuleEngine(RuleSet((hot(),))).arrays()
    arrays["version"] = np.array([99])
    with pytest.raises(ValueError, match="version"):
        RuleEngine.from_arrays(arrays, RuleSet((hot(),)))


# --- realistic features: SensorStats over crafted and real streams -------------------------


def with_stats(readings: list[Reading]) -> list[Reading]:
    """The readings with the reference statistics' score and drift (per run and sensor)."""
    stats: dict[tuple[str, str, str], SensorStats] = {}
    out = []
    for run, machine, sensor, ts, value, status, _score, _drift in readings:
        st = stats.setdefault((run, machine, sensor), SensorStats())
        f = st.update(ts, value)
        out.append((run, machine, sensor, ts, value, status, f.score, f.drift))
    return out


def test_crafted_stream_with_sensor_stats_features():
    rules = load_rules()
    readings = with_stats(crafted_stream(9))
    expected = reference(rules, readings)
    assert len(expected) > 20
    rng = random.Random(9)
    assert batched(rules, readings, random_cuts(rng, len(readings), 60)) == expected


def skab_stream() -> list[Reading]:
    files = sorted((DATA / "skab" / "valve1").glob("*.csv"))[:4]
    if not files:
        pytest.skip(f"SKAB data not found under {DATA}")
    names = {"Accelerometer1RMS": "vibration", "Pressure": "pressure", "Temperature": "temperature",
             "Current": "current", "Volume Flow RateRMS": "flow"}  # fmt: skip
    readings = []
    for f in files:
        with f.open() as fh:
            for row in csv.DictReader(fh, delimiter=";"):
                day = dt.datetime.fromisoformat(row["datetime"]).replace(tzinfo=dt.UTC)
                ts = int(day.timestamp() * 1000)
                for col, sensor in names.items():
                    readings.append(("skab", f"valve-{f.stem}", sensor, ts, float(row[col]), 0,
                                     None, False))  # fmt: skip
    readings.sort(key=lambda r: r[3])  # the machines interleaved in event time
    return with_stats(readings)


def nab_stream() -> list[Reading]:
    path = DATA / "nab" / "machine_temperature_system_failure.csv"
    if not path.is_file():
        pytest.skip(f"NAB data not found at {path}")
    readings = []
    with path.open() as fh:
        for row in csv.DictReader(fh):
            day = dt.datetime.fromisoformat(row["timestamp"]).replace(tzinfo=dt.UTC)
            readings.append(("nab", "machine", T, int(day.timestamp() * 1000),
                             float(row["value"]), 0, None, False))  # fmt: skip
    return with_stats(readings)


@pytest.mark.parametrize("stream", [skab_stream, nab_stream], ids=["skab", "nab"])
def test_real_data_gives_the_reference_events(stream):
    readings = stream()
    three = ("temperature", "vibration", "pressure")
    rules = RuleSet((*load_rules().rules,
                     Rule("hot", "threshold", three, above=90.0, open_after=3, close_after=3),
                     Rule("alone-jump", "anomaly", (), score_above=5.0, open_after=1,
                          close_after=3, alone_s=5.0, alone_score=4.0)))  # fmt: skip
    expected = reference(rules, readings)
    assert len(expected) > 10
    rng = random.Random(11)
    assert batched(rules, readings, random_cuts(rng, len(readings), 100)) == expected


# --- the pure-Python path ------------------------------------------------------------------


def small_parity() -> None:
    """A short crafted stream, all kinds, cut at random: the reference's events."""
    rules, readings = all_kinds(), crafted_stream(12, machines=2, ticks=120)
    expected = reference(rules, readings)
    assert len(expected) > 20
    cuts = random_cuts(random.Random(12), len(readings), 30)
    assert batched(rules, readings, cuts) == expected


def test_small_parity_without_the_jit():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('t', {str(Path(__file__))!r})\n"
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        "from workbench.processor import hysteresis\n"
        "assert not hasattr(hysteresis._hysteresis, 'py_func'), 'the JIT is on'\n"
        "mod.small_parity()\n"
    )
    env = dict(os.environ, WORKBENCH_JIT="0")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


def test_small_parity_with_the_jit():
    small_parity()
