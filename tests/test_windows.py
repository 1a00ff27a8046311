"""Event-time windows, watermark, late policy, idle partitions and rolling means.

Every expected number is worked out by hand in the comments next to it. Times are
seconds after T0 (2026-01-01T00:00:00Z, a multiple of 60 s and of 300 s).
"""

import json
import math
import pickle

import pytest

from workbench.errors import ConfigError
from workbench.processor.legacy.windows import (
    PROVISIONAL,
    PartitionWindows,
    RollingMeans,
    WindowConfig,
    WindowResult,
)

T0 = 1_767_225_600_000
M, S = "m-0001", "temperature"


def at(seconds: float) -> int:
    return T0 + round(seconds * 1000)


def config(**kw) -> WindowConfig:
    base = dict(widths_s=(60,), allowed_lateness_s=10.0, idle_timeout_s=None, late_policy="update")
    return WindowConfig(**(base | kw))


def add(pw: PartitionWindows, seconds: float, value, key=M, wall_s: float = 0.0):
    return pw.add(key, S, at(seconds), value, wall_s=wall_s)


def brief(r: WindowResult) -> tuple:
    """(start s, width s, count, nulls, late, final, revision) of a result."""
    start = (r.window_start_ms - T0) / 1000
    return (start, r.width_s, r.count, r.nulls, r.late, r.final, r.revision)


# A crafted out-of-order sequence, one key, 60 s windows, lateness 10 s.
# Window [0, 60): 2, 4, 6, 8 and a null.  [60, 120): 10, 20, 30, 40.  [120, 180): 5, 7.
SEQUENCE = [
    (5, 2.0),  # wm -5
    (50, 4.0),  # wm 40
    (45, None),  # 45 >= 40: on time
    (62, 10.0),  # wm 52
    (55, 6.0),  # out of order, 55 >= 52: on time
    (58, 8.0),  # on time
    (75, 20.0),  # wm 65 >= 60: [0, 60) final
    (70, 30.0),  # 70 >= 65: on time
    (110, 40.0),  # wm 100
    (131, 5.0),  # wm 121 >= 120: [60, 120) final
    (125, 7.0),  # 125 >= 121: on time
    (200, 1.0),  # wm 190 >= 180: [120, 180) final
]


def test_out_of_order_sequence_gives_exact_window_statistics():
    pw = PartitionWindows(config())
    finals = []
    for step, (seconds, value) in enumerate(SEQUENCE):
        assert not add(pw, seconds, value).late
        finals += [(step, r) for r in pw.advance(0.0)]

    assert [(step, brief(r)) for step, r in finals] == [
        (6, (0.0, 60, 4, 1, 0, True, 0)),
        (9, (60.0, 60, 4, 0, 0, True, 0)),
        (11, (120.0, 60, 2, 0, 0, True, 0)),
    ]
    a, b, c = (r for _, r in finals)
    assert (a.window_end_ms, a.machine_id, a.sensor_type) == (at(60), M, S)
    # [2, 4, 6, 8]: mean 5; squared deviations 9+1+1+9 = 20, sample var 20/3;
    # p95 at rank 0.95*3 = 2.85 -> 6 + 0.85*(8-6) = 7.7
    assert (a.mean, a.min, a.max) == (5.0, 2.0, 8.0)
    assert a.stddev == pytest.approx(math.sqrt(20 / 3))
    assert a.quantile == pytest.approx(7.7)
    # [10, 20, 30, 40]: mean 25; 225+25+25+225 = 500, var 500/3; p95 30 + 0.85*10 = 38.5
    assert (b.mean, b.min, b.max) == (25.0, 10.0, 40.0)
    assert b.stddev == pytest.approx(math.sqrt(500 / 3))
    assert b.quantile == pytest.approx(38.5)
    # [5, 7]: mean 6; 1+1 = 2, var 2/1; p95 at rank 0.95 -> 5 + 0.95*2 = 6.9
    assert (c.mean, c.min, c.max) == (6.0, 5.0, 7.0)
    assert c.stddev == pytest.approx(math.sqrt(2))
    assert c.quantile == pytest.approx(6.9)


def test_watermark_is_max_event_time_minus_lateness_and_never_goes_back():
    pw = PartitionWindows(config())
    assert pw.watermark_ms is None
    assert pw.advance(0.0) == []
    marks = []
    for seconds, value in SEQUENCE:
        add(pw, seconds, value)
        marks.append((pw.watermark_ms - T0) / 1000)
    assert marks == [-5, 40, 40, 52, 52, 52, 65, 65, 100, 121, 121, 190]


def test_late_event_within_lateness_joins_its_open_window():
    pw = PartitionWindows(config())
    add(pw, 50, 1.0)
    add(pw, 65, 2.0, key="m-0002")  # the partition's watermark: 55
    outcome = add(pw, 52, 3.0)  # 52 < 55: late, but [0, 60) is still open
    assert (outcome.late, outcome.dropped) == (True, False)
    assert pw.late_events == 1 and pw.dropped_events == 0
    add(pw, 80, 0.0, key="m-0002")  # wm 70: [0, 60) final
    (r,) = (r for r in pw.advance(0.0) if r.machine_id == M)
    assert brief(r) == (0.0, 60, 2, 0, 1, True, 0)
    assert (r.mean, r.min, r.max) == (2.0, 1.0, 3.0)


def finalised(policy: str, **kw) -> PartitionWindows:
    """[0, 60) holds 1 and 3 and has been emitted as final; the watermark is 65."""
    pw = PartitionWindows(config(late_policy=policy, **kw))
    for seconds, value in [(10, 1.0), (20, 3.0), (75, 5.0)]:
        add(pw, seconds, value)
    (first,) = pw.advance(0.0)
    assert brief(first) == (0.0, 60, 2, 0, 0, True, 0) and first.mean == 2.0
    return pw


def test_late_event_after_finalisation_is_dropped_under_drop():
    pw = finalised("drop")
    outcome = add(pw, 30, 8.0)
    assert (outcome.late, outcome.dropped, outcome.dropped_widths) == (True, True, (60,))
    assert (pw.late_events, pw.dropped_events) == (1, 1)
    assert pw.advance(0.0) == []  # the window is left alone
    assert [brief(r) for r in pw.provisional()] == [(60.0, 60, 1, 0, 0, False, PROVISIONAL)]


def test_late_event_after_finalisation_corrects_the_window_under_update():
    pw = finalised("update")
    outcome = add(pw, 30, 8.0)
    assert (outcome.late, outcome.dropped) == (True, False)
    (r,) = pw.advance(0.0)
    assert brief(r) == (0.0, 60, 3, 0, 1, True, 1)
    # [1, 3, 8]: mean 4; 9+1+16 = 26, var 13; p95 at rank 1.9 -> 3 + 0.9*5 = 7.5
    assert (r.mean, r.min, r.max) == (4.0, 1.0, 8.0)
    assert r.stddev == pytest.approx(math.sqrt(13))
    assert r.quantile == pytest.approx(7.5)
    assert pw.advance(0.0) == []  # emitted once
    add(pw, 40, None)  # a late null is a correction too
    assert [brief(r) for r in pw.advance(0.0)] == [(0.0, 60, 3, 1, 2, True, 2)]


def test_late_event_for_a_key_without_a_window_creates_its_first_final():
    pw = finalised("update")
    add(pw, 30, 4.0, key="m-0002")
    assert [brief(r) for r in pw.advance(0.0)] == [(0.0, 60, 1, 0, 1, True, 0)]


def test_beyond_the_correction_horizon_late_events_are_dropped():
    pw = finalised("update", correction_horizon_s=120.0)  # [0, 60) correctable until wm 180
    add(pw, 185, 1.0)  # wm 175
    assert not add(pw, 30, 7.0).dropped  # 60 + 120 > 175: still corrected
    assert [brief(r) for r in pw.advance(0.0) if r.window_start_ms == at(0)] == [
        (0.0, 60, 3, 0, 1, True, 1)
    ]
    add(pw, 190, 1.0)  # wm 180: the horizon has passed, [0, 60) is forgotten
    pw.advance(0.0)
    outcome = add(pw, 31, 9.0)
    assert (outcome.late, outcome.dropped) == (True, True)
    assert pw.advance(0.0) == []
    assert (pw.late_events, pw.dropped_events) == (2, 1)


def test_memory_is_bounded_by_the_correction_horizon():
    pw = PartitionWindows(config(correction_horizon_s=120.0))
    for i in range(100):
        add(pw, i * 60 + 1, 1.0)
        pw.advance(0.0)
    # wm = 5941 - 10 = 5931: open [5880, 5940) and [5940, 6000); final and still
    # correctable (end + 120 > 5931) [5760, 5820) and [5820, 5880)
    assert pw.window_count == 4
    drop = PartitionWindows(config(late_policy="drop"))
    for i in range(100):
        add(drop, i * 60 + 1, 1.0)
        drop.advance(0.0)
    assert drop.window_count == 2  # "drop" forgets a window at its final emission


def test_close_all_ends_the_input():
    pw = finalised("update")  # [0, 60) emitted; [60, 120) open with 5; wm 65
    add(pw, 30, 7.0)  # a pending correction of [0, 60)
    add(pw, 250, None, key="m-0002")  # [240, 300) open; wm 240
    assert [brief(r) for r in pw.close_all()] == [
        (0.0, 60, 3, 0, 1, True, 1),
        (60.0, 60, 1, 0, 0, True, 0),  # due since wm 240, but advance() has not run
        (240.0, 60, 0, 1, 0, True, 0),
    ]
    assert (pw.window_count, pw.watermark_ms, pw.advance(0.0)) == (0, at(300), [])
    assert add(pw, 299, 1.0).dropped  # its window was closed by close_all
    assert not add(pw, 300, 1.0).late  # a new window opens as usual
    assert [brief(r) for r in pw.provisional()] == [(300.0, 60, 1, 0, 0, False, PROVISIONAL)]


def test_idle_partition_closes_windows_only_after_the_idle_timeout():
    pw = PartitionWindows(config(idle_timeout_s=30.0))
    add(pw, 10, 1.0, wall_s=100.0)
    add(pw, 50, 2.0, wall_s=101.0)  # wm 40
    assert pw.advance(120.0) == []
    assert pw.advance(130.9) == []  # quiet for 29.9 s
    assert pw.watermark_ms == at(40)
    (r,) = pw.advance(131.0)  # quiet for 30 s: wm 50 + 30 - 10 = 70 >= 60
    assert pw.watermark_ms == at(70)
    assert brief(r) == (0.0, 60, 2, 0, 0, True, 0) and r.mean == 1.5
    assert pw.advance(131.0) == []
    # an event now is judged against the advanced watermark; it never moves back
    assert add(pw, 65, 3.0, wall_s=132.0).late
    assert pw.watermark_ms == at(71)  # 50 + (132 - 101) - 10, evaluated at arrival
    assert not add(pw, 100, 4.0, wall_s=133.0).late


def test_results_do_not_depend_on_how_often_advance_is_called():
    events = [(10, 1.0, 0.0), (50, 2.0, 1.0), (30, 5.0, 40.0), (70, 3.0, 41.0)]
    rare, often = (PartitionWindows(config(idle_timeout_s=30.0)) for _ in range(2))
    got_often = []
    for seconds, value, wall in events:
        add(rare, seconds, value, wall_s=wall)
        add(often, seconds, value, wall_s=wall)
        got_often += often.advance(wall)
    # at wall 40 the partition has been quiet for 39 s: wm 50 + 39 - 10 = 79, whether or
    # not advance() ran in between, so the reading at 30 s joins [0, 60) as late
    assert rare.advance(42.0) == got_often
    assert [brief(r) for r in got_often] == [(0.0, 60, 3, 0, 1, True, 0)]


def test_two_widths_at_once():
    pw = PartitionWindows(config(widths_s=(60, 300), late_policy="drop"))
    for seconds, value in [(30, 1.0), (90, 2.0), (150, 3.0), (270, 4.0), (290, 5.0)]:
        add(pw, seconds, value)  # wm 280
    assert [brief(r)[:3] for r in pw.advance(0.0)] == [(0, 60, 1), (60, 60, 1), (120, 60, 1)]
    outcome = add(pw, 100, 3.0)  # late: [60, 120) is final, [0, 300) still open
    assert (outcome.late, outcome.dropped, outcome.dropped_widths) == (True, True, (60,))
    add(pw, 320, 6.0)  # wm 310
    r60, r300 = pw.advance(0.0)
    assert brief(r60) == (240.0, 60, 2, 0, 0, True, 0) and r60.mean == 4.5
    assert brief(r300) == (0.0, 300, 6, 0, 1, True, 0)
    assert r300.window_end_ms == at(300)
    # [1, 2, 3, 4, 5, 3]: mean 3; 4+1+0+1+4+0 = 10, var 2; sorted [1, 2, 3, 3, 4, 5],
    # p95 at rank 4.75 -> 4 + 0.75*1 = 4.75
    assert (r300.mean, r300.min, r300.max) == (3.0, 1.0, 5.0)
    assert r300.stddev == pytest.approx(math.sqrt(2))
    assert r300.quantile == pytest.approx(4.75)


def test_provisional_results_are_marked_and_only_for_changed_open_windows():
    pw = PartitionWindows(config())
    add(pw, 10, 1.0)
    add(pw, 20, 3.0)
    add(pw, 15, 5.0, key="m-0002")
    got = pw.provisional()
    assert [(r.machine_id, *brief(r)) for r in got] == [
        (M, 0.0, 60, 2, 0, 0, False, PROVISIONAL),
        ("m-0002", 0.0, 60, 1, 0, 0, False, PROVISIONAL),
    ]
    assert got[0].mean == 2.0 and got[0].quantile == pytest.approx(2.9)  # 1 + 0.95*2
    assert pw.provisional() == []  # nothing changed since
    add(pw, 30, 2.0)
    assert [(r.machine_id, r.count, r.mean) for r in pw.provisional()] == [(M, 3, 2.0)]
    add(pw, 40, 1.0, key="m-0002")
    add(pw, 75, 1.0)  # wm 65: [0, 60) is due as final, no longer provisional
    assert [(r.machine_id, *brief(r)) for r in pw.provisional()] == [
        (M, 60.0, 60, 1, 0, 0, False, PROVISIONAL)
    ]
    assert [(r.machine_id, r.count, r.final) for r in pw.advance(0.0)] == [
        (M, 3, True),
        ("m-0002", 2, True),
    ]


def test_nulls_are_counted_not_averaged():
    pw = PartitionWindows(config())
    add(pw, 10, None)
    add(pw, 20, None)
    add(pw, 70, None, key="m-0002")
    add(pw, 75, 4.0, key="m-0002")
    add(pw, 130, 1.0)  # wm 120
    empty, half = pw.advance(0.0)
    assert brief(empty) == (0.0, 60, 0, 2, 0, True, 0)
    assert (empty.mean, empty.min, empty.max, empty.stddev, empty.quantile) == (None,) * 5
    assert brief(half) == (60.0, 60, 1, 1, 0, True, 0)
    assert (half.mean, half.min, half.max, half.stddev, half.quantile) == (4.0, 4.0, 4.0, 0.0, 4.0)


def run(pw: PartitionWindows, events) -> list:
    out = []
    for seconds, value, wall in events:
        outcome = add(pw, seconds, value, key=f"m-{int(seconds) % 3}", wall_s=wall)
        out += [outcome, *pw.provisional(), *pw.advance(wall)]
    return [*out, pw.watermark_ms, pw.late_events, pw.dropped_events]


FIRST = [(5, 1.0, 0.0), (62, 2.0, 1.0), (50, None, 2.0), (125, 3.0, 3.0), (58, 4.0, 4.0)]
SECOND = [(40, 6.0, 5.0), (121, 7.0, 6.0), (130, None, 7.0), (20, 8.0, 8.0), (61, 9.0, 60.0)]
SECOND += [(400, 1.0, 61.0), (100, 2.0, 62.0), (1500, 3.0, 63.0), (300, 4.0, 64.0)]


@pytest.mark.parametrize("codec", [pickle, json])
def test_snapshot_and_restore_mid_stream_behave_the_same(codec):
    cfg = config(widths_s=(60, 300), idle_timeout_s=30.0, correction_horizon_s=120.0)
    pw = PartitionWindows(cfg)
    run(pw, FIRST)
    add(pw, 59, 5.0, key="m-2", wall_s=4.5)  # a pending correction and a changed window
    state = codec.loads(codec.dumps(pw.snapshot()))
    assert run(PartitionWindows.restore(cfg, state), SECOND) == run(pw, SECOND)


def test_restore_in_another_process_restarts_the_idle_clock():
    cfg = config(idle_timeout_s=30.0)
    pw = PartitionWindows(cfg)
    add(pw, 50, 1.0, wall_s=10.0)
    moved = PartitionWindows.restore(cfg, pw.snapshot(), wall_s=1000.0)
    assert moved.advance(1029.0) == []
    assert [brief(r) for r in moved.advance(1030.0)] == [(0.0, 60, 1, 0, 0, True, 0)]


def test_invalid_configuration_is_rejected():
    for bad in [
        {"widths_s": ()},
        {"widths_s": (60, 60)},
        {"late_policy": "ignore"},
        {"quantile": 1.5},
        {"allowed_lateness_s": -1},
        {"idle_timeout_s": 0},
    ]:
        with pytest.raises(ConfigError):
            config(**bad)


def test_rolling_means_on_out_of_order_input():
    rm = RollingMeans(widths_s=(60, 300))

    def upd(seconds, value, key=M):
        return rm.update(key, S, at(seconds), value)

    assert upd(0, 1.0) == {60: 1.0, 300: 1.0}
    assert upd(30, 3.0) == {60: 2.0, 300: 2.0}  # (-30, 30]: 1, 3
    assert upd(90, 5.0) == {60: 5.0, 300: 3.0}  # (30, 90]: 5 | (-210, 90]: 1, 3, 5
    assert upd(60, 8.0) == {60: 5.5, 300: 4.0}  # late: (0, 60]: 3, 8 | 1, 3, 8
    assert upd(100, None) == {60: 6.5, 300: 4.25}  # (40, 100]: 8, 5 | 1, 3, 8, 5
    assert upd(95, 10.0, key="m-0002") == {60: 10.0, 300: 10.0}  # keys are independent
    assert upd(400, 2.0) == {60: 2.0, 300: 2.0}  # (340, 400]: 2 | (100, 400]: 2
    assert upd(350, 11.0) == {60: 11.0, 300: 8.0}  # late: (290, 350]: 11 | (50, 350]: 8, 5, 11
    assert upd(410, None) == {60: 2.0, 300: 6.5}  # (350, 410]: 2 | (110, 410]: 11, 2
    assert upd(500, None) == {60: None, 300: 6.5}  # (440, 500]: none | (200, 500]: 11, 2


def test_rolling_means_beyond_history_and_bounded_memory():
    rm = RollingMeans(widths_s=(60,), history_s=120.0)
    means = [rm.update(M, S, at(i), float(i % 2)) for i in range(1000)]
    assert {m[60] for m in means[59:]} == {0.5}  # 30 zeros and 30 ones in every (t-60, t]
    (series,) = rm.snapshot()["series"]
    assert len(series[3]) <= 120 + 60 + 64  # history + width + the trim batch
    assert rm.update(M, S, at(999 - 120), 7.0) == {60: None}  # too late for an exact mean
    # (820, 880]: 60 readings of which 30 are 1.0, and the two 7.0 above
    assert rm.update(M, S, at(999 - 119), 7.0) == {60: pytest.approx((30 + 7 + 7) / 62)}


def test_rolling_means_snapshot_and_restore():
    rm = RollingMeans(widths_s=(60, 300))
    for seconds, value in [(0, 1.0), (30, 3.0), (90, 5.0), (60, 8.0)]:
        rm.update(M, S, at(seconds), value)
    twin = RollingMeans.restore((60, 300), json.loads(json.dumps(rm.snapshot())))
    for seconds, value in [(100, None), (70, 2.0), (400, 2.0)]:
        assert twin.update(M, S, at(seconds), value) == rm.update(M, S, at(seconds), value)
