"""Benchmark scoring against hand-derived numbers: NAB's sweeper rules (window position,
probationary period, false positives after a window, missed windows, profiles, corpus
normalisation), SKAB's per-row outlier metrics and changepoint windows, and the rolling
z-score baseline (spikes, noise, constant histories, NaNs, debouncing, OR over columns).

NAB's scaled sigmoid 2 / (1 + exp(5 p)) - 1 equals -tanh(2.5 p), which is how the
expected values below are written."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from workbench.analysis import benchmark as bm
from workbench.errors import WorkbenchError

S_MAX = math.tanh(2.5)  # S(-1), the worth of a detection at a window's first row


def S(p: float) -> float:
    """NAB's scaled sigmoid, from its definition."""
    return -1.0 if p > 3.0 else 2.0 / (1.0 + math.exp(5.0 * p)) - 1.0


# 100 rows one second apart; rows 0..14 are NAB's probationary period; one window, rows
# 50..59 (width 10)
TS = np.arange(100, dtype=np.int64) * 1000
WINDOW = [(50_000, 59_000)]


def row(i: int) -> int:
    return i * 1000


def score(detect_rows, windows=WINDOW, profile="standard", **kw) -> bm.NabScore:
    return bm.nab_score(TS, windows, [row(i) for i in detect_rows], profile, **kw)


# --- NAB: constants ------------------------------------------------------------------------


def test_profiles_have_nab_weights():
    assert bm.PROFILES["standard"] == bm.NabProfile(tp=1.0, fp=0.11, fn=1.0, tn=1.0)
    assert bm.PROFILES["reward_low_FP"] == bm.NabProfile(tp=1.0, fp=0.22, fn=1.0)
    assert bm.PROFILES["reward_low_FN"] == bm.NabProfile(tp=1.0, fp=0.11, fn=2.0)


def test_scaled_sigmoid_anchor_points():
    got = bm.scaled_sigmoid([-1.0, -0.5, 0.0, 1.0, 3.0, 3.0001])
    assert got.tolist() == pytest.approx([0.98661, 0.84828, 0.0, -0.98661, -0.9999994, -1.0],
                                         abs=1e-5)  # fmt: skip
    assert [S(p) for p in (-1.0, -0.5, 1.0, 3.0)] == pytest.approx(got[[0, 1, 3, 4]].tolist())


def test_probationary_length_as_nab_computes_it():
    # min(floor(0.15 * n), 0.15 * 5000)
    assert bm.probationary_length(100) == 15
    assert bm.probationary_length(7) == 1  # floor(1.05)
    assert bm.probationary_length(4999) == 749  # floor(749.85)
    assert bm.probationary_length(5000) == 750
    assert bm.probationary_length(10_000) == 750  # capped at 0.15 * 5000
    assert bm.probationary_length(100, 0.0) == 0


# --- NAB: detections inside a window ---------------------------------------------------------


def test_detection_at_window_start_scores_like_the_perfect_detector():
    s = score([50])
    assert (s.raw, s.null, s.perfect) == pytest.approx((1.0, -1.0, 1.0))
    assert s.normalised == pytest.approx(100.0)
    assert (s.windows, s.detected, s.false_positives) == (1, 1, 0)


def test_detection_at_window_end_is_worth_almost_nothing():
    # NAB: p = -(end - row + 1) / width = -1/10 at the last row (never exactly S(0) = 0)
    s = score([59])
    assert s.raw == pytest.approx(math.tanh(0.25) / S_MAX)
    assert s.raw == pytest.approx(0.248242, abs=1e-6)
    assert s.normalised == pytest.approx(100 * (0.248242 + 1) / 2, abs=1e-4)


def test_detection_half_way_into_window():
    s = score([55])  # p = -(59 - 55 + 1) / 10 = -0.5
    assert s.raw == pytest.approx(math.tanh(1.25) / S_MAX)
    assert s.raw == pytest.approx(0.859792, abs=1e-6)


def test_only_the_first_detection_in_a_window_counts():
    assert score([50, 55, 59]).raw == pytest.approx(1.0)
    later = score([55, 57, 59])
    assert later.raw == pytest.approx(math.tanh(1.25) / S_MAX)
    assert (later.detected, later.false_positives) == (1, 0)


def test_window_limits_map_to_rows():
    # the first row at or after the start, the last at or before the end: rows 50..59
    s = bm.nab_score(TS, [(49_500, 59_999)], [row(59)])
    assert s.raw == pytest.approx(math.tanh(0.25) / S_MAX)


# --- NAB: false positives, misses, probation -------------------------------------------------


def test_missed_window_costs_fn():
    s = score([])
    assert s.raw == pytest.approx(-1.0)
    assert score([], profile="reward_low_FN").raw == pytest.approx(-2.0)
    two = [(30_000, 39_000), (50_000, 59_000)]
    assert score([50], windows=two).raw == pytest.approx(1.0 - 1.0)
    assert score([50], windows=two, profile="reward_low_FN").raw == pytest.approx(1.0 - 2.0)


def test_false_positive_with_no_window_before_costs_full_fp():
    s = score([20, 50])  # row 20: before any window
    assert s.raw == pytest.approx(1.0 - 0.11)
    assert (s.detected, s.false_positives) == (1, 1)


def test_false_positive_just_after_window_costs_less():
    # p = (row - end) / (width - 1) = 1/9 for the row right after the window
    just_after = score([50, 60]).raw - 1.0
    assert just_after == pytest.approx(0.11 * -math.tanh(2.5 / 9))
    assert just_after == pytest.approx(-0.029793, abs=1e-6)
    further = score([50, 65]).raw - 1.0  # p = 6/9
    assert further == pytest.approx(0.11 * -math.tanh(2.5 * 6 / 9))
    assert -0.11 < further < just_after < 0


def test_false_positive_far_after_window_costs_full_fp():
    # p = 27/9 = 3.0 is still on the sigmoid; p = 28/9 > 3 is the full cost
    assert score([50, 86]).raw - 1.0 == pytest.approx(0.11 * -math.tanh(7.5))
    assert score([50, 87]).raw - 1.0 == pytest.approx(-0.11)


def test_false_positive_after_a_one_row_window():
    # NAB's sweeper would divide by width - 1 = 0; its older scorer used p = 2
    s = score([51], windows=[(50_000, 50_000)])
    assert s.raw == pytest.approx(-1.0 + 0.11 * -math.tanh(5.0))


def test_detections_in_probationary_period_are_ignored():
    assert bm.probationary_length(TS.size) == 15
    assert score([3, 10, 14]).raw == pytest.approx(-1.0)  # only the missed window
    assert score([15]).raw == pytest.approx(-1.0 - 0.11)  # row 15 is scored
    assert score([14, 50]).false_positives == 0


def test_window_inside_probation_is_not_scored_but_still_precedes():
    # window rows 10..14 (width 5) lies in the probationary period: no fn, no null, no
    # perfect; a false positive at row 16 is still measured from its end: p = 2/4
    s = score([12, 16], windows=[(10_000, 14_000)])
    assert (s.windows, s.null, s.perfect) == (0, 0.0, 0.0)
    assert s.raw == pytest.approx(0.11 * -math.tanh(1.25))
    assert s.normalised is None


def test_window_straddling_probation_counts_only_later_detections():
    s = score([12], windows=[(12_000, 20_000)])
    assert s.raw == pytest.approx(-1.0)  # row 12 is probationary: the window is missed
    s = score([15], windows=[(12_000, 20_000)])  # p = -(20 - 15 + 1) / 9
    assert s.raw == pytest.approx(math.tanh(2.5 * 6 / 9) / S_MAX)


# --- NAB: profiles, null and perfect, pooling ------------------------------------------------


def test_the_three_profiles_differ_as_they_should():
    scores = bm.nab_scores(TS, WINDOW, [row(20)])  # one distant FP, the window missed
    raw = {name: s.raw for name, s in scores.items()}
    assert raw == pytest.approx({"standard": -1.11, "reward_low_FP": -1.22, "reward_low_FN": -2.11})
    normalised = {name: s.normalised for name, s in scores.items()}
    assert normalised == pytest.approx(
        {"standard": -5.5, "reward_low_FP": -11.0, "reward_low_FN": -100 * 0.11 / 3}
    )
    assert scores["standard"] == bm.nab_score(TS, WINDOW, [row(20)], "standard")


def test_null_detector_scores_zero_and_perfect_detector_hundred():
    windows = [(30_000, 34_000), (50_000, 59_000), (80_000, 95_000)]
    for name, s in bm.nab_scores(TS, windows, []).items():
        assert s.normalised == pytest.approx(0.0), name
        assert s.null == -bm.PROFILES[name].fn * 3
    perfect = [start for start, _ in windows]
    for name, s in bm.nab_scores(TS, windows, perfect).items():
        assert s.normalised == pytest.approx(100.0), name
        assert s.raw == pytest.approx(s.perfect) and s.perfect == 3.0


def test_pooling_sums_raw_null_perfect_before_normalising():
    hit = score([50])  # 100
    missed_two = score([], windows=[(30_000, 34_000), (50_000, 59_000)])  # 0
    pooled = bm.pool_nab_scores([hit, missed_two])
    # (1 - 2) - (-1 - 2) over (1 + 2) - (-1 - 2): not the mean of 100 and 0
    assert pooled.normalised == pytest.approx(100 * 2 / 6)
    assert (pooled.windows, pooled.detected) == (3, 1)
    # a file without windows has no score of its own but its false positives count
    no_windows = score([20], windows=[])
    assert no_windows.normalised is None and no_windows.raw == pytest.approx(-0.11)
    pooled = bm.pool_nab_scores([hit, no_windows])
    assert pooled.normalised == pytest.approx(100 * (0.89 + 1) / 2)
    assert pooled.false_positives == 1


def test_detection_times_map_to_first_row_at_or_after():
    flags = bm.detections_to_flags(TS, [49_001, 70_000, 99_000, 99_500, 10**9])
    assert np.flatnonzero(flags).tolist() == [50, 70, 99]  # the last two have no row
    by_times = bm.nab_score(TS, WINDOW, [49_001])
    by_flags = bm.nab_score(TS, WINDOW, flags)
    assert by_times.raw == pytest.approx(1.0)
    assert by_flags.raw == pytest.approx(1.0 + 0.11 * (-math.tanh(2.5 * 11 / 9) - 1.0))


def test_invalid_nab_inputs_are_refused():
    with pytest.raises(WorkbenchError, match="overlap"):
        bm.nab_score(TS, [(10_000, 20_000), (20_000, 30_000)], [])
    with pytest.raises(WorkbenchError, match="no row"):
        bm.nab_score(TS, [(10_100, 10_900)], [])
    with pytest.raises(WorkbenchError, match="sorted"):
        bm.nab_score(TS[::-1], WINDOW, [])
    with pytest.raises(WorkbenchError, match="one value per row"):
        bm.nab_score(TS, WINDOW, np.zeros(3, dtype=bool))
    with pytest.raises(WorkbenchError, match="not known"):
        bm.nab_score(TS, WINDOW, [], "reward_low_FP_rate")


# --- SKAB: outliers -------------------------------------------------------------------------


def test_outlier_score_counts_and_metrics():
    s = bm.outlier_score([0, 0, 1, 1, 0], [False, True, True, False, False])
    assert (s.tp, s.fp, s.fn, s.tn) == (1, 1, 1, 2)
    assert (s.precision, s.recall, s.f1) == pytest.approx((0.5, 0.5, 0.5))
    assert s.false_alarm_rate == pytest.approx(100 / 3)
    assert s.missing_alarm_rate == pytest.approx(50.0)


def test_outlier_f1_is_the_harmonic_mean():
    s = bm.outlier_score([1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 1, 0])  # tp 3, fn 2, fp 1
    assert (s.precision, s.recall) == pytest.approx((0.75, 0.6))
    assert s.f1 == pytest.approx(2 * 0.75 * 0.6 / (0.75 + 0.6))
    assert s.f1 == pytest.approx(3 / (3 + (2 + 1) / 2))  # SKAB's form


def test_outlier_metrics_undefined_without_positives():
    nothing = bm.outlier_score([0.0, 0.0, 0.0], [False, False, False])
    assert (nothing.precision, nothing.recall, nothing.f1) == (None, None, None)
    assert nothing.false_alarm_rate == 0.0 and nothing.missing_alarm_rate is None
    silent = bm.outlier_score([0.0, 1.0, 1.0], [False, False, False])  # SKAB's null detector
    assert (silent.precision, silent.recall, silent.f1) == (None, 0.0, 0.0)
    assert silent.missing_alarm_rate == 100.0


def test_outlier_scores_pool_by_summing_counts():
    a = bm.outlier_score([1, 0], [True, True])
    b = bm.outlier_score([1, 1, 0], [False, True, False])
    pooled = bm.pool_outlier_scores([a, b])
    assert (pooled.tp, pooled.fp, pooled.fn, pooled.tn) == (2, 1, 1, 1)
    assert pooled.f1 == pytest.approx(4 / 6)


# --- SKAB: changepoints ---------------------------------------------------------------------


def test_skab_windows_start_at_each_changepoint():
    ts = np.arange(200, dtype=np.int64) * 1000
    cp = np.zeros(200)
    cp[[10, 60]] = 1
    assert bm.skab_changepoint_windows(ts, cp) == [(10_000, 40_000), (60_000, 90_000)]
    cp[60], cp[25] = 0, 1  # 15 s apart: the first window ends before the second
    assert bm.skab_changepoint_windows(ts, cp) == [(10_000, 24_999), (25_000, 55_000)]
    assert bm.skab_changepoint_windows(ts, cp, window_ms=60_000)[1] == (25_000, 85_000)


def test_skab_changepoint_scores():
    ts = np.arange(200, dtype=np.int64) * 1000
    cp = np.zeros(200, dtype=int)
    cp[[10, 60]] = 1  # windows rows 10..40 and 60..90, width 31
    on_time = bm.skab_changepoint_scores(ts, cp, [10_000, 60_000])
    assert set(on_time) == {"standard", "reward_low_FP", "reward_low_FN"}
    assert all(s.normalised == pytest.approx(100.0) for s in on_time.values())
    assert all(s.normalised == 0.0 for s in bm.skab_changepoint_scores(ts, cp, []).values())

    late = bm.skab_changepoint_scores(ts, cp, [70_000])  # second window only, p = -21/31
    tp = math.tanh(2.5 * 21 / 31) / S_MAX
    assert late["standard"].normalised == pytest.approx(100 * (1 + tp) / 4)
    assert late["reward_low_FN"].normalised == pytest.approx(100 * (2 + tp) / 6)

    # no probationary period by default; a false positive 5 rows after the first window
    fp = bm.skab_changepoint_scores(ts, cp, [10_000, 45_000, 60_000])
    assert fp["reward_low_FP"].raw == pytest.approx(2 + 0.22 * -math.tanh(2.5 * 5 / 30))


def test_skab_changepoint_detections_take_both_edges():
    ts = np.arange(8, dtype=np.int64)
    flags = [True, True, False, False, True, True, True, False]
    assert bm.skab_changepoint_detections(ts, flags).tolist() == [0, 2, 4, 7]
    assert bm.debounce(ts, flags).tolist() == [0, 4]


# --- the rolling z-score baseline ------------------------------------------------------------


def test_zscore_hand_computed():
    ts = np.arange(5, dtype=np.int64) * 1000
    r = bm.rolling_zscore(ts, [1.0, 2.0, 3.0, 4.0, 5.0], min_readings=4)
    # history of the last reading: 1..4, mean 2.5, sample std sqrt(5/3)
    assert r.z[4] == pytest.approx(2.5 / math.sqrt(5 / 3))
    assert np.isnan(r.z[:4]).all()
    assert not r.flags.any()


def test_zscore_flags_a_spike_and_not_noise():
    ts = np.arange(200, dtype=np.int64) * 1000
    x = np.sin(np.arange(200.0))
    assert not bm.rolling_zscore(ts, x).flags.any()
    x[100] = 30.0
    r = bm.rolling_zscore(ts, x)
    assert np.flatnonzero(r.flags).tolist() == [100]
    assert r.detections.tolist() == [100_000]
    assert r.z[100] > 5


def test_zscore_needs_min_readings():
    ts = np.arange(40, dtype=np.int64) * 1000
    x = np.sin(np.arange(40.0))
    x[29] = 50.0  # 29 readings before it: not judged
    r = bm.rolling_zscore(ts, x)
    assert not r.flags[29] and np.isnan(r.z[29])
    y = np.sin(np.arange(40.0))
    y[30] = 50.0  # 30 readings before it
    assert np.flatnonzero(bm.rolling_zscore(ts, y).flags).tolist() == [30]


def test_zscore_history_is_a_time_span():
    ts = np.arange(100, dtype=np.int64) * 1000
    x = np.sin(np.arange(100.0))
    x[50:] += 100.0  # a level shift
    short = bm.rolling_zscore(ts, x, history_ms=10_000, min_readings=5)
    assert np.flatnonzero(short.flags).tolist() == [50]  # the new level is soon normal
    long = bm.rolling_zscore(ts, x, min_readings=5)
    assert long.flags[50] and long.flags[51]  # a day of history remembers the old level
    # readings before a two-day gap are out of the next reading's history: not judged
    gap = np.concatenate([ts[:40], ts[40:] + 2 * bm.DAY_MS])
    z = np.sin(np.arange(100.0))
    z[40] = 50.0
    r = bm.rolling_zscore(gap, z)
    assert not r.flags[40] and np.isnan(r.z[40])


def test_zscore_constant_history():
    ts = np.arange(43, dtype=np.int64) * 1000
    x = np.full(43, 7.0)
    x[41] = 7.001
    r = bm.rolling_zscore(ts, x)
    assert r.z[40] == 0.0 and not r.flags[40]
    assert r.z[41] == math.inf and r.flags[41]  # differs from a constant history
    assert abs(r.z[42]) < 1 and not r.flags[42]  # the history is no longer constant


def test_zscore_ignores_nans():
    ts = np.arange(61, dtype=np.int64) * 1000
    x = np.sin(np.arange(61.0))
    x[1:60:2] = np.nan  # 30 NaNs among the 60 readings before the last
    x[60] = 50.0
    r = bm.rolling_zscore(ts, x)
    assert np.flatnonzero(r.flags).tolist() == [60]  # 30 valid readings: judged
    assert not r.flags[np.isnan(x)].any() and np.isnan(r.z[np.isnan(x)]).all()
    h = x[:60][~np.isnan(x[:60])]
    assert r.z[60] == pytest.approx((50.0 - h.mean()) / h.std(ddof=1))
    x[58] = np.nan  # 29 valid readings left: not judged
    assert not bm.rolling_zscore(ts, x).flags[60]


def test_zscore_detections_are_debounced():
    ts = np.arange(120, dtype=np.int64) * 1000
    x = np.sin(np.arange(120.0))
    x[[100, 101]] = 50.0  # a run of two flagged rows
    x[110] = -50.0
    r = bm.rolling_zscore(ts, x)
    assert np.flatnonzero(r.flags).tolist() == [100, 101, 110]
    assert r.detections.tolist() == [100_000, 110_000]


def test_debounce_marks_run_starts():
    ts = np.arange(8, dtype=np.int64) * 10
    flags = np.array([1, 1, 0, 1, 0, 0, 1, 1], dtype=bool)
    assert bm.debounce(ts, flags).tolist() == [0, 30, 60]
    assert bm.debounce(ts, np.zeros(8, dtype=bool)).tolist() == []


def test_zscore_columns_or_their_flags_and_debounce_the_union():
    ts = np.arange(100, dtype=np.int64) * 1000
    frame = pd.DataFrame({"a": np.sin(np.arange(100.0)), "b": np.cos(np.arange(100.0))})
    frame.loc[60, "a"] = 40.0
    frame.loc[61, "b"] = -40.0
    frame.loc[80, "b"] = 40.0
    r = bm.rolling_zscore_columns(ts, frame)
    assert np.flatnonzero(r.flags).tolist() == [60, 61, 80]
    assert r.detections.tolist() == [60_000, 80_000]  # 60 and 61 are one run
    assert np.flatnonzero(r.columns["a"].flags).tolist() == [60]
    assert np.flatnonzero(r.columns["b"].flags).tolist() == [61, 80]
    as_dict = bm.rolling_zscore_columns(ts, {c: frame[c].to_numpy() for c in frame})
    assert np.array_equal(as_dict.flags, r.flags)


def test_zscore_refuses_bad_parameters():
    ts = np.arange(5, dtype=np.int64)
    with pytest.raises(WorkbenchError):
        bm.rolling_zscore(ts, np.zeros(5), min_readings=1)
    with pytest.raises(WorkbenchError):
        bm.rolling_zscore(ts, np.zeros(4))
