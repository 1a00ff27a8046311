"""Unit tests of the alert engine: hysteresis, transients, per-machine rules, alone_s."""

from __future__ import annotations

import pickle

from workbench.processor.legacy.alerts import AlertEngine, AlertEvent
from workbench.processor.legacy.stats import Features
from workbench.processor.rules import Rule, RuleSet

M = "m-1"
T = "temperature"


def feat(score: float | None = None, drift: bool = False) -> Features:
    return Features(50.0, 1.0, 50.0, 1.0, 52.0, 50.0, score, drift)


def engine(*rules: Rule) -> AlertEngine:
    return AlertEngine(RuleSet(tuple(rules)))


def hot(**kw) -> Rule:
    kw = {"open_after": 3, "close_after": 3} | kw
    return Rule("hot", "threshold", (T,), above=30.0, **kw)


def feed(eng: AlertEngine, values, machine=M, sensor=T, t0=0, step=1000, status=0):
    """Feed values one ``step`` apart; return (ts, event) for every event."""
    out = []
    for k, v in enumerate(values):
        ts = t0 + k * step
        for e in eng.observe(machine, sensor, ts, v, status, None):
            out.append((ts, e))
    return out


def feed_scores(eng: AlertEngine, scores, machine=M, sensor=T, t0=0, step=1000, drift=()):
    out = []
    for k, s in enumerate(scores):
        ts = t0 + k * step
        for e in eng.observe(machine, sensor, ts, 50.0, 0, feat(s, k in drift)):
            out.append((ts, e))
    return out


def states(events) -> list[str]:
    return [e.state for _, e in events]


# --- hysteresis ------------------------------------------------------------------------


def test_open_after_consecutive_breaches():
    eng = engine(hot())
    events = feed(eng, [25.0, 31.0, 32.0, 33.0], t0=10_000)
    assert len(events) == 1
    ts, e = events[0]
    assert isinstance(e, AlertEvent)
    assert e.state == "opened"
    assert ts == e.event_ts == e.opened_ts == 13_000
    assert e.start_ts == 11_000  # the first breach
    assert e.breaches == 3
    assert e.peak == 33.0
    assert e.value == 33.0
    assert (e.rule, e.kind, e.severity) == ("hot", "threshold", "warning")
    assert (e.machine_id, e.sensor_type) == (M, T)
    assert eng.open_alerts == 1


def test_fewer_breaches_than_open_after_do_not_open():
    eng = engine(hot())
    assert feed(eng, [31.0, 32.0]) == []
    assert eng.open_alerts == 0


def test_interrupted_run_does_not_open():
    eng = engine(hot())
    assert feed(eng, [31.0, 32.0, 29.0, 31.0, 32.0]) == []
    [(_, e)] = feed(eng, [33.0], t0=5000)
    assert e.state == "opened"
    assert e.start_ts == 3000  # the run after the interruption
    assert e.breaches == 3


def test_value_equal_to_threshold_is_not_a_breach():
    assert feed(engine(hot(open_after=1)), [30.0, 30.0, 30.0]) == []


def test_close_after_consecutive_normals():
    eng = engine(hot(close_after=3))
    events = feed(eng, [31.0, 32.0, 35.0, 20.0, 21.0, 22.0, 23.0])
    assert states(events) == ["opened", "closed"]
    ts, closed = events[1]
    assert ts == closed.event_ts == 5000  # the third normal
    assert closed.start_ts == 0
    assert closed.opened_ts == 2000
    assert closed.breaches == 3
    assert closed.peak == 35.0
    assert closed.value == 22.0
    assert closed.alert_id == events[0][1].alert_id
    assert eng.open_alerts == 0


def test_breach_during_closing_resets_the_count():
    eng = engine(hot(close_after=3))
    events = feed(eng, [31.0, 32.0, 33.0, 20.0, 20.0, 34.0, 20.0, 20.0])
    assert states(events) == ["opened"]
    assert eng.open_alerts == 1
    [(_, closed)] = feed(eng, [20.0], t0=8000)
    assert closed.state == "closed"
    assert closed.breaches == 4
    assert closed.peak == 34.0


def test_new_alert_after_close_has_a_new_id():
    eng = engine(hot(open_after=1, close_after=1))
    events = feed(eng, [31.0, 20.0, 32.0, 20.0])
    assert states(events) == ["opened", "closed", "opened", "closed"]
    assert events[0][1].alert_id == f"hot/{M}/{T}/0"
    assert events[2][1].alert_id == f"hot/{M}/{T}/2000"


def test_updated_when_breaches_double():
    eng = engine(hot(open_after=2))
    events = feed(eng, [31.0] * 17)
    assert [(e.state, e.breaches) for _, e in events] == [
        ("opened", 2),
        ("updated", 4),
        ("updated", 8),
        ("updated", 16),
    ]
    assert all(e.start_ts == 0 and e.opened_ts == 1000 for _, e in events)


def test_peak_tracks_the_most_extreme_value():
    eng = engine(hot(open_after=1))
    events = feed(eng, [31.0, 40.0, 35.0, 36.0])
    assert [(e.state, e.breaches, e.peak) for _, e in events] == [
        ("opened", 1, 31.0),
        ("updated", 2, 40.0),
        ("updated", 4, 40.0),
    ]


def test_below_rule_peak_is_the_lowest_value():
    low = Rule("battery-low", "threshold", ("battery",), below=10.0, open_after=2, close_after=1)
    events = feed(engine(low), [9.0, 5.0, 8.0, 7.0, 50.0], sensor="battery")
    assert states(events) == ["opened", "updated", "closed"]
    assert events[-1][1].peak == 5.0


def test_alert_id_format():
    eng = engine(hot())
    [(_, e)] = feed(eng, [31.0, 31.0, 31.0], t0=1_700_000_000_000)
    assert e.alert_id == f"hot/{M}/{T}/1700000000000"


def test_two_engines_fed_the_same_readings_give_identical_events():
    readings = [25.0, 31.0, 32.0, 33.0, 29.0, 35.0, 28.0, 27.0, 26.0, 31.0, 31.0, 31.0]
    rules = (hot(open_after=2, close_after=2), Rule("stuck", "stuck", (T,), open_after=2))
    a = feed(AlertEngine(RuleSet(rules)), readings)
    b = feed(AlertEngine(RuleSet(rules)), readings)
    assert a == b
    assert len(a) >= 3


def test_machines_and_sensors_are_counted_apart():
    eng = engine(hot(open_after=2), Rule("all", "threshold", (), above=30.0, open_after=2))
    assert eng.observe(M, T, 0, 31.0, 0, None) == []
    assert eng.observe("m-2", T, 0, 31.0, 0, None) == []
    assert eng.observe(M, "pressure", 0, 31.0, 0, None) == []
    events = eng.observe(M, T, 1000, 31.0, 0, None)
    assert sorted(e.rule for e in events) == ["all", "hot"]
    assert all((e.machine_id, e.sensor_type) == (M, T) for e in events)


def test_rule_ignores_sensors_it_does_not_watch():
    assert feed(engine(hot(open_after=1)), [99.0, 99.0], sensor="pressure") == []


def test_machines_filter():
    eng = engine(hot(open_after=1, machines=frozenset({"m-2"})))
    assert feed(eng, [40.0, 40.0], machine=M) == []
    events = feed(eng, [40.0], machine="m-2")
    assert [e.machine_id for _, e in events] == ["m-2"]


def test_none_value_is_not_judged_by_threshold_rules():
    eng = engine(hot(open_after=2))
    events = feed(eng, [31.0, None, 32.0])
    assert [(e.state, e.breaches) for _, e in events] == [("opened", 2)]


# --- transients (max_breaches) -------------------------------------------------------


def spike_rule(**kw) -> Rule:
    kw = {"open_after": 1, "max_breaches": 2, "close_after": 1} | kw
    return Rule("spike", "anomaly", (T,), score_above=12.0, **kw)


def test_one_reading_spike_opens_on_return_to_normal():
    eng = engine(spike_rule())
    events = feed_scores(eng, [1.0, 50.0, 1.0, 1.0, 1.0])
    assert states(events) == ["opened", "closed"]
    ts, opened = events[0]
    assert ts == opened.opened_ts == 2000  # the reading back to normal
    assert opened.start_ts == 1000  # the spike
    assert opened.breaches == 1
    assert opened.peak == 50.0
    assert events[1][0] == 3000


def test_spike_does_not_open_while_it_lasts():
    eng = engine(spike_rule())
    assert feed_scores(eng, [1.0, 50.0, 40.0]) == []


def test_two_reading_spike_with_max_breaches_two_opens():
    events = feed_scores(engine(spike_rule()), [1.0, 30.0, 40.0, 1.0])
    assert [(e.state, e.start_ts, e.breaches, e.peak) for _, e in events] == [
        ("opened", 1000, 2, 40.0)
    ]


def test_long_excursion_with_max_breaches_never_opens():
    eng = engine(spike_rule(max_breaches=2))
    assert feed_scores(eng, [1.0, 20.0, 20.0, 20.0, 20.0, 20.0, 1.0, 1.0, 1.0]) == []
    assert eng.open_alerts == 0


def test_transient_needs_open_after_breaches():
    rule = Rule("blip", "threshold", (T,), above=30.0, open_after=2, max_breaches=3)
    assert feed(engine(rule), [31.0, 20.0, 20.0]) == []
    events = feed(engine(rule), [31.0, 31.0, 20.0])
    assert states(events) == ["opened"]


# --- status, null, stuck, anomaly, drift -------------------------------------------------


def shutdown_rule(**kw) -> Rule:
    kw = {"status": (2,), "open_after": 2, "close_after": 2} | kw
    return Rule("shutdown", "status", **kw)


def test_status_rule_is_per_machine():
    eng = engine(shutdown_rule())
    assert eng.observe(M, T, 0, 20.0, 2, None) == []
    [e] = eng.observe(M, "vibration", 100, 1.0, 2, None)  # another sensor, same machine
    assert e.state == "opened"
    assert e.sensor_type is None
    assert e.alert_id == f"shutdown/{M}/*/0"
    assert e.peak == 2.0
    assert e.start_ts == 0 and e.opened_ts == 100


def test_status_rule_breaches_only_on_listed_codes():
    eng = engine(shutdown_rule(open_after=1))
    assert feed(eng, [20.0, 20.0], status=1) == []
    assert feed(eng, [20.0], status=0) == []
    assert states(feed(eng, [20.0], status=2, t0=5000)) == ["opened"]


def test_status_rule_closes_on_normal_status():
    eng = engine(shutdown_rule(close_after=2))
    events = feed(eng, [20.0, 20.0], status=2)
    events += feed(eng, [20.0, 20.0], status=0, t0=2000)
    assert states(events) == ["opened", "closed"]
    assert events[-1][1].sensor_type is None


def test_status_rule_judges_null_readings():
    eng = engine(shutdown_rule())
    assert states(feed(eng, [None, None], status=2)) == ["opened"]


def test_nonzero_status_readings_are_not_judged_by_threshold_rules():
    eng = engine(hot(open_after=2, close_after=1))
    assert feed(eng, [35.0, 35.0, 35.0], status=2) == []
    # nor do they count as normal: an open alert stays open through a shutdown
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
    eng = engine(gone)
    events = feed(eng, [1.0, None, None, None, 2.0, 3.0])
    assert [(e.state, e.breaches, e.start_ts) for _, e in events] == [
        ("opened", 2, 1000),
        ("closed", 3, 1000),
    ]
    assert events[0][1].value is None and events[0][1].peak is None
    assert events[0][1].severity == "critical"


def test_null_rule_judges_readings_of_a_machine_that_is_off():
    gone = Rule("no-data", "null", (), open_after=1)
    assert states(feed(engine(gone), [None], status=2)) == ["opened"]


def test_stuck_rule_opens_after_open_after_repeats():
    # a breach is a value equal to the previous one: open_after repeats need
    # open_after + 1 identical values
    stuck = Rule("stuck", "stuck", (T,), open_after=3, close_after=1)
    eng = engine(stuck)
    assert feed(eng, [5.0, 5.0, 5.0]) == []
    [(_, e)] = feed(eng, [5.0], t0=3000)
    assert (e.state, e.start_ts, e.opened_ts, e.breaches, e.peak) == ("opened", 1000, 3000, 3, 5.0)
    assert states(feed(eng, [5.1], t0=4000)) == ["closed"]


def test_stuck_rule_is_per_sensor():
    stuck = Rule("stuck", "stuck", (), open_after=2, close_after=1)
    eng = engine(stuck)
    for k in range(3):
        assert eng.observe(M, T, k * 10, 5.0 + k, 0, None) == []
        assert eng.observe(M, "pressure", k * 10 + 1, 5.0 + k, 0, None) == []


def test_stuck_rule_ignores_nulls():
    stuck = Rule("stuck", "stuck", (T,), open_after=1)
    assert feed(engine(stuck), [None, None, 5.0]) == []


def test_anomaly_rule_uses_the_score():
    rule = Rule("runaway", "anomaly", (T,), score_above=6.0, open_after=2, close_after=1)
    eng = engine(rule)
    events = feed_scores(eng, [1.0, 7.0, 9.0, 8.0, 2.0])
    assert [(e.state, e.peak) for _, e in events] == [("opened", 9.0), ("closed", 9.0)]
    assert events[0][1].value == 50.0  # the reading's value, not its score


def test_anomaly_none_score_gives_no_opinion():
    rule = Rule("runaway", "anomaly", (T,), score_above=6.0, open_after=3, close_after=1)
    eng = engine(rule)
    events = feed_scores(eng, [7.0, None, 7.0, None, None, 7.0])
    assert [(ts, e.state, e.breaches, e.start_ts) for ts, e in events] == [(5000, "opened", 3, 0)]
    # nor does a missing score close it
    assert feed_scores(eng, [None, None, None], t0=6000) == []
    assert eng.open_alerts == 1


def test_anomaly_without_features_gives_no_opinion():
    rule = Rule("runaway", "anomaly", (T,), score_above=6.0, open_after=1)
    assert feed(engine(rule), [99.0, 99.0]) == []


def test_drift_rule_uses_features_drift():
    rule = Rule("level-shift", "drift", (T,), open_after=1, close_after=2)
    eng = engine(rule)
    events = feed_scores(eng, [1.0, 9.0, 1.0, 1.0], drift={1})
    assert [(ts, e.state, e.start_ts) for ts, e in events] == [
        (1000, "opened", 1000),
        (3000, "closed", 1000),
    ]
    assert events[0][1].peak == 50.0  # a drift alert's measure is the value


def test_drift_rule_without_features_does_not_breach():
    rule = Rule("level-shift", "drift", (T,), open_after=1)
    assert feed(engine(rule), [1.0, 100.0]) == []


# --- alone_s ---------------------------------------------------------------------------


def alone_rule(**kw) -> Rule:
    kw = {"open_after": 1, "close_after": 2, "alone_s": 3.0, "alone_score": 8.0} | kw
    return Rule("level-shift", "drift", (T, "vibration", "pressure"), **kw)


def test_alone_breach_is_held_then_opens_once_the_wait_is_over():
    eng = engine(alone_rule())
    assert eng.observe(M, T, 10_000, 60.0, 0, feat(9.0, drift=True)) == []
    assert eng.observe(M, "vibration", 11_000, 1.0, 0, feat(1.0)) == []
    assert eng.observe(M, T, 11_000, 60.0, 0, feat(1.0)) == []
    assert eng.observe(M, "vibration", 12_999, 1.0, 0, feat(1.0)) == []  # not yet
    assert eng.open_alerts == 0
    events = eng.observe(M, "vibration", 13_000, 1.0, 0, feat(1.0))
    assert [(e.state, e.sensor_type, e.start_ts, e.opened_ts) for e in events] == [
        ("opened", T, 10_000, 10_000)
    ]
    assert events[0].alert_id == f"level-shift/{M}/{T}/10000"
    assert eng.open_alerts == 1


def test_held_readings_are_replayed_in_order():
    # the held normal reading at 11 s counts toward closing once the breach is released
    eng = engine(alone_rule(close_after=2))
    eng.observe(M, T, 10_000, 60.0, 0, feat(9.0, drift=True))
    eng.observe(M, T, 11_000, 60.0, 0, feat(1.0))
    eng.observe(M, T, 12_000, 60.0, 0, feat(1.0))
    events = eng.observe(M, T, 13_000, 60.0, 0, feat(1.0))
    assert [(e.state, e.event_ts) for e in events] == [("opened", 10_000), ("closed", 12_000)]


def test_alone_breach_shared_with_another_sensor_is_dropped():
    eng = engine(alone_rule())
    eng.observe(M, T, 10_000, 60.0, 0, feat(9.0, drift=True))
    eng.observe(M, "vibration", 11_000, 3.0, 0, feat(9.5))  # the machine moved
    events = eng.observe(M, "pressure", 14_000, 4.0, 0, feat(1.0))
    events += eng.observe(M, T, 15_000, 60.0, 0, feat(1.0))
    events += eng.flush()
    assert events == []
    assert eng.open_alerts == 0


def test_other_sensor_excited_just_before_also_counts_as_shared():
    eng = engine(alone_rule())
    eng.observe(M, "vibration", 7_000, 3.0, 0, feat(9.5))  # 3 s before: within alone_s
    eng.observe(M, T, 10_000, 60.0, 0, feat(9.0, drift=True))
    assert eng.observe(M, T, 13_000, 60.0, 0, feat(1.0)) == []
    assert eng.flush() == []


def test_other_sensor_below_alone_score_is_not_shared():
    eng = engine(alone_rule())
    eng.observe(M, T, 10_000, 60.0, 0, feat(9.0, drift=True))
    eng.observe(M, "vibration", 11_000, 3.0, 0, feat(7.9))
    events = eng.observe(M, "vibration", 13_000, 3.0, 0, feat(1.0))
    assert states([(0, e) for e in events]) == ["opened"]


def test_other_sensor_excited_outside_the_window_is_not_shared():
    eng = engine(alone_rule())
    eng.observe(M, "vibration", 6_000, 3.0, 0, feat(20.0))  # 4 s before
    eng.observe(M, T, 10_000, 60.0, 0, feat(9.0, drift=True))
    events = eng.observe(M, "vibration", 13_000, 3.0, 0, feat(1.0))
    assert [e.state for e in events] == ["opened"]


def test_another_machine_excited_is_not_shared():
    eng = engine(alone_rule())
    eng.observe(M, T, 10_000, 60.0, 0, feat(9.0, drift=True))
    eng.observe("m-2", "vibration", 11_000, 3.0, 0, feat(20.0))
    events = eng.observe(M, T, 13_000, 60.0, 0, feat(1.0))
    assert [e.state for e in events] == ["opened"]


def test_held_breach_waits_for_a_reading_of_its_own_machine():
    eng = engine(alone_rule())
    eng.observe(M, T, 10_000, 60.0, 0, feat(9.0, drift=True))
    assert eng.observe("m-2", T, 20_000, 60.0, 0, feat(1.0)) == []
    assert eng.open_alerts == 0
    assert [e.state for e in eng.observe(M, "pressure", 20_000, 4.0, 0, feat(1.0))] == ["opened"]


def test_flush_decides_held_breaches():
    eng = engine(alone_rule())
    eng.observe(M, T, 10_000, 60.0, 0, feat(9.0, drift=True))
    events = eng.flush()
    assert [(e.state, e.start_ts) for e in events] == [("opened", 10_000)]
    assert eng.flush() == []


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
    spike = Rule(
        "spike",
        "anomaly",
        (T, "vibration"),
        score_above=12.0,
        open_after=1,
        max_breaches=2,
        close_after=1,
        alone_s=3.0,
        alone_score=8.0,
    )
    eng = engine(spike)
    events = feed_scores(eng, [1.0, 1.0, 50.0, 1.0, 1.0, 1.0, 1.0], t0=0)
    assert [(ts, e.state, e.start_ts, e.opened_ts) for ts, e in events] == [
        (5000, "opened", 2000, 3000),
        (5000, "closed", 2000, 3000),
    ]


# --- checkpointing ---------------------------------------------------------------------


def mixed_rules() -> RuleSet:
    return RuleSet(
        (
            hot(open_after=2, close_after=3),
            Rule("spike", "anomaly", (T,), score_above=12.0, open_after=1, max_breaches=2),
            alone_rule(),
            Rule("stuck", "stuck", ("pressure",), open_after=3, close_after=1),
            shutdown_rule(),
        )
    )


def script() -> list[tuple[str, str, int, float | None, int, Features | None]]:
    readings = []
    temps = [25, 31, 32, 33, 34, 29, 35, 36, 28, 27, 26, 25, 24, 31, 31, 25, 25, 25, 25, 25]
    for k, t in enumerate(temps):
        ts = k * 1000
        score = 50.0 if k == 3 else 1.0
        status = 2 if 12 <= k < 15 else 0  # a shutdown
        readings.append((M, T, ts, float(t), status, feat(score, drift=k in (9, 16))))
        pressure = 4.0 if 4 <= k < 10 else 4.0 + k
        readings.append((M, "pressure", ts + 1, pressure, status, feat(1.0)))
        readings.append((M, "vibration", ts + 2, 1.0, status, feat(1.0)))
    return readings


def run(eng: AlertEngine, readings) -> list[AlertEvent]:
    events = []
    for r in readings:
        events.extend(eng.observe(*r))
    return events


def test_engine_pickles_mid_alert_and_continues_identically():
    readings = script()
    whole = AlertEngine(mixed_rules())
    expected = run(whole, readings) + whole.flush()

    for cut in (10, 20, 29, 31, 40):
        first = AlertEngine(mixed_rules())
        before = run(first, readings[:cut])
        restored = pickle.loads(pickle.dumps(first))
        after = run(restored, readings[cut:]) + restored.flush()
        assert before + after == expected, cut

    states_seen = {(e.rule, e.state) for e in expected}
    assert {("hot", "opened"), ("hot", "closed"), ("stuck", "opened")} <= states_seen
    assert ("shutdown", "opened") in states_seen
    assert ("level-shift", "opened") in states_seen


def test_pickle_preserves_open_alerts():
    eng = engine(hot(open_after=2, close_after=2))
    feed(eng, [31.0, 31.0])
    restored = pickle.loads(pickle.dumps(eng))
    assert restored.open_alerts == 1
    events = feed(restored, [20.0, 20.0], t0=2000)
    assert [(e.state, e.alert_id) for _, e in events] == [("closed", f"hot/{M}/{T}/0")]


def test_pickle_preserves_held_breaches():
    eng = engine(alone_rule())
    eng.observe(M, T, 10_000, 60.0, 0, feat(9.0, drift=True))
    restored = pickle.loads(pickle.dumps(eng))
    assert [e.state for e in restored.flush()] == ["opened"]
