"""Unit tests of the per-sensor online statistics: estimators, anomaly score and drift."""

from __future__ import annotations

import math
import pickle
import random
import statistics

import pytest

from workbench.processor.legacy.stats import Features, SensorStats

NOISE_SD = 0.2
LEVEL = 50.0


def noisy(seed: int = 7, n: int = 120, sd: float = NOISE_SD, level: float = LEVEL):
    """A warmed-up SensorStats fed ``n`` readings one second apart, its rng and last ts."""
    rng = random.Random(seed)
    s = SensorStats()
    f = None
    for i in range(n):
        f = s.update(i * 1000, level + rng.gauss(0, sd))
    return s, rng, f


def test_update_returns_features():
    f = SensorStats().update(0, 1.0)
    assert isinstance(f, Features)
    assert f.mean == 1.0
    assert f.score is None
    assert f.drift is False


def test_warmup_must_be_at_least_two():
    with pytest.raises(ValueError, match="warmup"):
        SensorStats(warmup=1)


def test_mean_and_std_agree_with_statistics():
    rng = random.Random(3)
    values = [20.0 + rng.gauss(0, 2.5) for _ in range(500)]
    s = SensorStats()
    for i, v in enumerate(values):
        f = s.update(i * 1000, v)
    assert f.mean == pytest.approx(statistics.fmean(values), abs=1e-9)
    assert f.std == pytest.approx(statistics.stdev(values), rel=1e-9)


def test_mean_and_std_agree_at_every_step():
    values = [3.0, 5.5, 4.25, 10.0, -1.0, 7.5]
    s = SensorStats()
    for i, v in enumerate(values):
        f = s.update(i * 1000, v)
        assert f.mean == pytest.approx(statistics.fmean(values[: i + 1]))
        if i >= 1:
            assert f.std == pytest.approx(statistics.stdev(values[: i + 1]))


def test_quantile_is_near_the_true_p95():
    rng = random.Random(11)
    s = SensorStats()
    for i in range(5000):
        f = s.update(i * 1000, rng.gauss(0, 1))
    assert f.quantile == pytest.approx(1.645, abs=0.15)


def test_other_quantile_can_be_asked_for():
    rng = random.Random(12)
    s = SensorStats(q=0.5)
    for i in range(3000):
        f = s.update(i * 1000, rng.gauss(10, 1))
    assert f.quantile == pytest.approx(10.0, abs=0.15)


def test_ewma_follows_recent_values():
    s = SensorStats(alpha=0.5)
    for i in range(50):
        s.update(i * 1000, 0.0)
    for i in range(50, 70):
        f = s.update(i * 1000, 10.0)
    assert f.ewma == pytest.approx(10.0, abs=1e-3)
    assert f.mean < 5.0  # the running mean remembers all of it


def test_no_score_during_warmup():
    rng = random.Random(1)
    s = SensorStats()  # warmup = 10
    scores = [s.update(i * 1000, 5.0 + rng.gauss(0, 0.1)).score for i in range(12)]
    assert scores[:10] == [None] * 10
    assert all(x is not None for x in scores[10:])


def test_longer_warmup_delays_the_first_score():
    rng = random.Random(1)
    s = SensorStats(warmup=30)
    scores = [s.update(i * 1000, 5.0 + rng.gauss(0, 0.1)).score for i in range(31)]
    assert scores[:30] == [None] * 30
    assert scores[30] is not None


def test_noise_scores_low():
    s, rng, _ = noisy(n=100)
    scores = [s.update(i * 1000, LEVEL + rng.gauss(0, NOISE_SD)).score for i in range(100, 400)]
    assert max(scores) < 6
    assert statistics.fmean(scores) < 1.5


def test_spike_scores_far_above_noise_and_hardly_moves_the_baseline():
    s, _, _ = noisy()
    spike = s.update(120_000, LEVEL + 25.0)
    assert spike.score > 50
    assert not spike.drift
    after = s.update(121_000, LEVEL + 0.1)
    assert abs(after.baseline - LEVEL) < 0.5
    assert after.score < 6


def test_step_is_detected_as_drift_within_a_few_readings():
    for seed in range(10):
        s, rng, _ = noisy(seed=seed, n=100)
        new_level = LEVEL + 10.0
        fired_at = None
        for k in range(10):
            f = s.update((100 + k) * 1000, new_level + rng.gauss(0, NOISE_SD))
            if f.drift:
                fired_at = k
                break
        assert fired_at is not None and fired_at <= 5, (seed, fired_at)
        assert s.drifts == 1
        assert s.restarts == 1
        # the baseline restarted at the new level
        assert f.baseline == pytest.approx(new_level, abs=1.0)
        nxt = s.update((101 + fired_at) * 1000, new_level + rng.gauss(0, NOISE_SD))
        assert nxt.baseline == pytest.approx(new_level, abs=1.0)
        assert nxt.drift is False


def test_downward_step_is_detected_too():
    s, rng, _ = noisy(n=100)
    drifts = [
        s.update((100 + k) * 1000, LEVEL - 10.0 + rng.gauss(0, NOISE_SD)).drift for k in range(8)
    ]
    assert drifts.count(True) == 1
    assert drifts.index(True) <= 5


def test_after_drift_the_new_level_scores_low_again():
    s, rng, _ = noisy(n=100)
    for k in range(8):
        s.update((100 + k) * 1000, LEVEL + 10.0 + rng.gauss(0, NOISE_SD))
    scores = [
        s.update((108 + k) * 1000, LEVEL + 10.0 + rng.gauss(0, NOISE_SD)).score for k in range(40)
    ]
    tail = [x for x in scores[10:] if x is not None]
    assert tail and max(tail) < 6


def test_slow_ramp_does_not_fire_drift():
    # a load change: flat, then 0.05 per second for 200 s, with noise sd 0.15
    # (empirically drift-free up to ten times that slope)
    for seed in range(20):
        rng = random.Random(seed)
        s = SensorStats()
        for i in range(60):
            s.update(i * 1000, LEVEL + rng.gauss(0, 0.15))
        fired = []
        for i in range(200):
            f = s.update((60 + i) * 1000, LEVEL + 0.05 * i + rng.gauss(0, 0.15))
            if f.drift:
                fired.append(i)
        assert fired == [], (seed, fired)
        assert s.drifts == 0
        assert f.baseline == pytest.approx(LEVEL + 0.05 * 199, abs=1.0)


def test_nulls_are_counted_and_update_nothing():
    s, _, before = noisy()
    n = s.n
    f = s.update(120_000, None)
    assert s.nulls == 1
    assert s.n == n + 1
    assert (f.mean, f.std, f.ewma, f.ewstd, f.quantile, f.baseline) == (
        before.mean,
        before.std,
        before.ewma,
        before.ewstd,
        before.quantile,
        before.baseline,
    )
    assert f.score is None
    assert f.drift is False
    assert s.update(121_000, None).mean == before.mean
    assert s.nulls == 2


def test_null_at_the_start_is_empty_features():
    s = SensorStats()
    f = s.update(0, None)
    assert f.score is None and f.drift is False
    assert math.isnan(f.mean)
    assert s.nulls == 1


def test_value_after_nulls_restarts_the_baseline():
    s, _, _ = noisy()
    s.update(120_000, None)
    f = s.update(121_000, LEVEL + 3.0)
    assert f.score is None  # the gap restarts the baseline: warm-up again
    assert f.baseline == LEVEL + 3.0
    assert s.restarts == 1


def test_exact_redelivery_is_a_duplicate():
    s, _, _ = noisy()
    twin, _, _ = noisy()
    f = s.update(120_000, 50.3)
    twin.update(120_000, 50.3)
    again = s.update(120_000, 50.3)
    assert s.duplicates == 1
    assert s.late == 0
    assert again == f
    # not counted into the statistics: the stream goes on as if it never came
    assert s.update(121_000, 50.1) == twin.update(121_000, 50.1)


def test_same_ts_other_value_is_late_not_duplicate():
    s, _, _ = noisy()
    s.update(120_000, 50.3)
    f = s.update(120_000, 50.4)
    assert s.duplicates == 0
    assert s.late == 1
    assert f.score is None


def test_late_reading_gets_no_score_and_counts_as_late():
    s, _, _ = noisy()
    f_now = s.update(120_000, 50.1)
    late = s.update(110_500, 50.2)
    assert late.score is None
    assert late.drift is False
    assert s.late == 1
    # order-free statistics learn from it; the baseline does not
    assert late.mean != f_now.mean
    assert late.baseline == f_now.baseline
    assert late.ewma == f_now.ewma
    # the next in-order reading is scored again
    assert s.update(121_000, 50.0).score is not None


def test_late_spike_does_not_fire_drift_or_move_the_baseline():
    s, _, _ = noisy()
    f_now = s.update(120_000, 50.1)
    for k in range(10):
        f = s.update(100_000 + k, 90.0)
        assert f.score is None and not f.drift
    assert s.late == 10
    assert s.drifts == 0
    assert s.update(121_000, 50.0).baseline == pytest.approx(f_now.baseline, abs=0.5)


def test_long_gap_restarts_the_baseline():
    s, _, _ = noisy()
    f = s.update(120_000 + 60_000, 50.0)  # sixty usual intervals later
    assert f.score is None
    assert s.restarts == 1


def test_stuck_run_restarts_the_baseline_when_it_ends():
    s, _, _ = noisy()
    for k in range(10):
        s.update((120 + k) * 1000, 50.05)
    restarts = s.restarts
    f = s.update(130_000, 50.1)
    assert s.restarts == restarts + 1
    assert f.score is None


def test_pickle_round_trip_mid_stream_gives_identical_features():
    s, rng, _ = noisy(n=80)
    restored = pickle.loads(pickle.dumps(s))
    rest = [LEVEL + rng.gauss(0, NOISE_SD) for _ in range(60)]
    rest[10] += 25.0  # a spike
    rest[30:] = [v + 10.0 for v in rest[30:]]  # a step
    ts = [(80 + k) * 1000 for k in range(60)]
    ts[20] = 70_000  # a late reading
    a = [s.update(t, v) for t, v in zip(ts, rest, strict=True)]
    b = [restored.update(t, v) for t, v in zip(ts, rest, strict=True)]
    assert a == b
    assert any(f.drift for f in a)
    assert (s.n, s.late, s.drifts, s.restarts) == (
        restored.n,
        restored.late,
        restored.drifts,
        restored.restarts,
    )
