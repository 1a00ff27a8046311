"""Parity of the compiled statistics (``workbench.processor.stats``) with their references.

* each estimator against River itself (``river.stats.Var``, ``EWMean``, ``EWVar``,
  ``Quantile``, ``river.drift.PageHinkley``), bit for bit, on random data with nulls and on
  edge cases;
* the fused kernel (:func:`workbench.processor.stats.update`) against the legacy
  :class:`SensorStats`, one instance per key, on the real data files and on a crafted
  stream with every kind of trouble: all features of every reading and all counters equal;
* checkpoints (``arrays``/``from_arrays``), compaction (``keep``) and growth mid-stream
  change nothing;
* the small cases (``test_small_*``) run again as plain Python (``WORKBENCH_JIT=0``).

Equal means the same float64 bits (signed zeros included) or both NaN; a legacy score of
None is NaN in the columns.
"""

from __future__ import annotations

import io
import itertools
import math
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from river import drift, stats

from workbench.processor import kernels
from workbench.processor.legacy.stats import Features, SensorStats
from workbench.processor.stats import (
    NO_TS,
    PH_FIELDS,
    VAR_FIELDS,
    FeatureColumns,
    SensorStatsState,
    ew_batch,
    ph_batch,
    ph_update,
    quantile_batch,
    update,
    var_batch,
    var_update,
)
from workbench.processor.stats.base import allocate
from workbench.processor.stats.sensor import _update_kernel

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
LEGACY_DEFAULTS = {
    "alpha": 0.1,
    "q": 0.95,
    "warmup": 10,
    "level_alpha": 0.5,
    "trend_beta": 0.1,
    "spread_alpha": 0.02,
    "clip": 4.0,
    "shift_z": 10.0,
    "ph_delta": 5.0,
    "ph_threshold": 20.0,
    "gap_factor": 10.0,
    "stuck_after": 8,
}


def assert_same(actual: np.ndarray, expected: Sequence[float], what: str = "") -> None:
    """Equal float64 bits (so -0.0 != 0.0), or NaN on both sides."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, what
    nan_a, nan_e = np.isnan(a), np.isnan(e)
    bad = (nan_a != nan_e) | (~nan_a & (a.view(np.int64) != e.view(np.int64)))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise AssertionError(f"{what}: {bad.sum()} differ, first at {i}: {a[i]!r} != {e[i]!r}")


# ---------------------------------------------------------------- estimators against River


def river_columns(
    keys: np.ndarray, values: np.ndarray, make: Callable, get: Callable
) -> np.ndarray:
    """River's ``get`` after each reading, one River object per key; NaN values are not
    given to River, and a key with no value yet reads NaN."""
    objs: dict[int, object] = {}
    out = np.full(len(keys), np.nan)
    for i, (k, x) in enumerate(zip(keys.tolist(), values.tolist(), strict=True)):
        if x == x:
            obj = objs.setdefault(k, make())
            obj.update(x)
        if k in objs:
            out[i] = get(objs[k])
    return out


def edge_cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(20240611)
    random = rng.normal(20.0, 3.0, 3000)
    random[rng.random(3000) < 0.05] = np.nan
    steps = np.r_[rng.normal(0, 1, 200), rng.normal(8, 1, 200), rng.normal(-5, 0.1, 200)]
    return {
        "random with nulls": random,
        "constant": np.full(60, 3.7),
        "one value": np.array([2.5]),
        "two values": np.array([1.0, -1.0]),
        "five then a sixth": np.array([5.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]),
        "huge": rng.normal(0, 1, 500) * 1e150 + 3e150,
        "overflowing squares": rng.normal(1e200, 1e199, 50),
        "tiny": rng.normal(0, 1, 500) * 1e-160,
        "negative": -1e6 + rng.normal(0, 0.5, 500),
        "ties": rng.integers(-3, 4, 800).astype(float),
        "signed zeros": np.array([0.0, -0.0, -0.0, 0.0, -0.0, 0.0, 0.0, -0.0, 1.0, -0.0]),
        "ascending": np.arange(300.0),
        "descending": np.arange(300.0)[::-1].copy(),
        "mixed magnitudes": np.where(np.arange(400) % 2, 1e12, 1e-12) * rng.random(400),
        "steps": steps,
        "leading nulls": np.r_[np.full(5, np.nan), rng.normal(0, 1, 40)],
    }


CASES = edge_cases()
#: every case once as one key, and once interleaved as three keys
KEYINGS = {
    "one key": lambda n: np.zeros(n, dtype=np.int64),
    "three keys": lambda n: np.arange(n) % 3,
}


def case_params():
    return [
        pytest.param(name, keying, id=f"{name}-{keying}") for name in CASES for keying in KEYINGS
    ]


@pytest.mark.parametrize(("case", "keying"), case_params())
def test_var_equals_river(case, keying):
    values = CASES[case]
    keys = KEYINGS[keying](len(values))
    mean, var = var_batch(keys, values)
    assert_same(mean, river_columns(keys, values, stats.Var, lambda v: v.mean.get()), "mean")
    assert_same(var, river_columns(keys, values, stats.Var, lambda v: v.get()), "var")


@pytest.mark.parametrize(("case", "keying"), case_params())
@pytest.mark.parametrize("alpha", [0.1, 0.5, 0.97])
def test_ew_mean_and_var_equal_river(case, keying, alpha):
    values = CASES[case]
    keys = KEYINGS[keying](len(values))
    mean, var = ew_batch(keys, values, alpha=alpha)
    want_mean = river_columns(keys, values, lambda: stats.EWMean(alpha), lambda m: m.get())
    want_var = river_columns(keys, values, lambda: stats.EWVar(alpha), lambda v: v.get())
    assert_same(mean, want_mean, "ewmean")
    assert_same(var, want_var, "ewvar")


@pytest.mark.parametrize(("case", "keying"), case_params())
@pytest.mark.parametrize("q", [0.01, 0.25, 0.5, 0.95, 0.99])
def test_quantile_equals_river(case, keying, q):
    values = CASES[case]
    keys = KEYINGS[keying](len(values))
    want = river_columns(keys, values, lambda: stats.Quantile(q), lambda e: e.get())
    assert_same(quantile_batch(keys, values, q=q), want, f"quantile {q}")


def river_drift(keys, values, **params) -> np.ndarray:
    detectors: dict[int, drift.PageHinkley] = {}
    out = np.zeros(len(keys), dtype=bool)
    for i, (k, x) in enumerate(zip(keys.tolist(), values.tolist(), strict=True)):
        if x == x:
            d = detectors.setdefault(k, drift.PageHinkley(**params))
            d.update(x)
            out[i] = d.drift_detected
    return out


PH_SETTINGS = {
    "legacy": {"min_instances": 10, "delta": 5.0, "threshold": 20.0},
    "river default": {},
}


@pytest.mark.parametrize("setting", PH_SETTINGS)
@pytest.mark.parametrize("case", ["random with nulls", "steps", "constant", "two values"])
def test_page_hinkley_equals_river(case, setting):
    values = CASES[case]
    params = PH_SETTINGS[setting]
    if setting == "legacy":  # what the legacy class feeds it: scores clipped to +-10
        mean = np.nanmean(values)
        values = np.clip((values - mean) / (np.nanstd(values) or 1.0) * 4.0, -10.0, 10.0)
    keys = np.arange(len(values)) % 2
    got = ph_batch(keys, values, **params)
    np.testing.assert_array_equal(got, river_drift(keys, values, **params))
    if case == "steps":
        assert got.any()  # the case can fail: detections happen and must agree


def test_page_hinkley_state_equals_river_state_after_every_value():
    rng = np.random.default_rng(5)
    values = np.clip(np.r_[rng.normal(0, 2, 300), rng.normal(9, 2, 100)], -10, 10)
    ph = allocate(PH_FIELDS, 1)
    river = drift.PageHinkley(min_instances=10, delta=5.0, threshold=20.0)
    fired = 0
    for x in values.tolist():
        got = ph_update(ph, 0, x, 10, 5.0, 20.0, 1 - 0.0001)
        river.update(x)
        r = ph[0]
        assert got == river.drift_detected
        want = (
            river._x_mean.n,
            river._x_mean.get(),
            river._sum_increase,
            river._sum_decrease,
            river._min_increase,
            river._max_decrease,
        )
        fields = ("n", "mean", "sum_increase", "sum_decrease", "min_increase", "max_decrease")
        assert_same([r[f] for f in fields], want, "page-hinkley state")
        fired += got
    assert fired > 0


def test_var_state_equals_river_state():
    rng = np.random.default_rng(6)
    var = allocate(VAR_FIELDS, 1)
    river = stats.Var()
    for x in rng.normal(1e3, 7.0, 500).tolist():
        var_update(var, 0, x)
        river.update(x)
    assert_same([var[0]["n"], var[0]["mean"], var[0]["s"]], [river.n, river.mean.get(), river._S])


# ------------------------------------------------------------ fused kernel against legacy


def run_legacy(
    keys: np.ndarray, ts: np.ndarray, values: np.ndarray, isnull: np.ndarray, n_keys: int, **params
) -> tuple[list[Features], list[SensorStats]]:
    sensors = [SensorStats(**params) for _ in range(n_keys)]
    vals = [None if n else v for v, n in zip(values.tolist(), isnull.tolist(), strict=True)]
    feats = [
        sensors[k].update(t, v) for k, t, v in zip(keys.tolist(), ts.tolist(), vals, strict=True)
    ]
    return feats, sensors


def legacy_columns(feats: Sequence[Features]) -> FeatureColumns:
    cols = {name: [getattr(f, name) for f in feats] for name in Features._fields}
    cols["score"] = [math.nan if s is None else s for s in cols["score"]]
    return FeatureColumns(
        *(np.array(cols[name], dtype=np.float64) for name in Features._fields[:-1]),
        np.array(cols["drift"], dtype=bool),
    )


def assert_columns_equal(got: FeatureColumns, want: FeatureColumns, what: str = "") -> None:
    for name in FeatureColumns._fields[:-1]:
        assert_same(getattr(got, name), getattr(want, name), f"{what} {name}")
    assert got.drift.dtype == np.bool_
    np.testing.assert_array_equal(got.drift, want.drift, err_msg=f"{what} drift")


def assert_state_equals_legacy(state: SensorStatsState, sensors: Sequence[SensorStats]) -> None:
    assert state.n_keys == len(sensors)
    for name, column in state.counters.items():
        assert column.tolist() == [getattr(s, name) for s in sensors], name
    assert_columns_equal(state.features, legacy_columns([s.features for s in sensors]), "final")
    assert state.last_ts.tolist() == [NO_TS if s.last_ts is None else s.last_ts for s in sensors]


def check_against_legacy(keys, ts, values, isnull, n_keys=None, **params) -> FeatureColumns:
    """Run both on the stream; assert every feature of every reading and every counter equal."""
    keys = np.asarray(keys, dtype=np.int64)
    n_keys = int(keys.max()) + 1 if n_keys is None else n_keys
    state = SensorStatsState(n_keys, **params)
    got = update(state, keys, ts, values, isnull)
    feats, sensors = run_legacy(
        keys, np.asarray(ts), np.asarray(values), np.asarray(isnull), n_keys, **params
    )
    assert_columns_equal(got, legacy_columns(feats))
    assert_state_equals_legacy(state, sensors)
    return got


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data file {path} is absent (see ../shared/data/README.md)")
    return path


def epoch_ms(text: pd.Series) -> np.ndarray:
    return pd.to_datetime(text).to_numpy().astype("datetime64[ms]").astype(np.int64)


def columns_as_keys(ts: np.ndarray, table: np.ndarray, first_key: int = 0):
    """Row after row, each column a key: the arrival order of a multi-sensor device."""
    rows, cols = table.shape
    keys = np.tile(np.arange(cols, dtype=np.int64), rows) + first_key
    return keys, np.repeat(ts, cols), table.reshape(-1).astype(np.float64)


def test_nab_machine_temperature_equals_legacy():
    frame = pd.read_csv(need(DATA / "nab" / "machine_temperature_system_failure.csv"))
    ts = epoch_ms(frame["timestamp"])
    values = frame["value"].to_numpy(dtype=np.float64)
    got = check_against_legacy(np.zeros(len(ts)), ts, values, np.zeros(len(ts), dtype=bool))
    assert np.isfinite(got.score).sum() > 20_000


SKAB_FILES = ["valve1/2.csv", "valve1/4.csv", "other/7.csv", "other/11.csv", "other/1.csv"]


def test_skab_files_each_column_a_key_equal_legacy():
    parts = []
    for i, name in enumerate(SKAB_FILES):
        frame = pd.read_csv(need(DATA / "skab" / name), sep=";")
        sensors = frame.drop(columns=["datetime", "anomaly", "changepoint"])
        parts.append(
            columns_as_keys(epoch_ms(frame["datetime"]), sensors.to_numpy(), i * sensors.shape[1])
        )
    keys, ts, values = (np.concatenate(c) for c in zip(*parts, strict=True))
    got = check_against_legacy(keys, ts, values, np.zeros(len(keys), dtype=bool))
    assert got.drift.any()


SMOKE_COLUMNS = [
    "Temperature[C]",
    "Humidity[%]",
    "TVOC[ppb]",
    "eCO2[ppm]",
    "Raw H2",
    "Raw Ethanol",
    "Pressure[hPa]",
    "PM1.0",
    "NC0.5",
]


def test_smoke_across_session_boundaries_equals_legacy():
    # rows 49000-52500: the end of session 2, session 3, and the start of session 4, which
    # is days earlier (so late), on nine sensors with floors and saturation (stuck runs)
    frame = pd.read_csv(need(DATA / "smoke" / "smoke_detection_iot.csv")).iloc[49_000:52_500]
    keys, ts, values = columns_as_keys(
        frame["UTC"].to_numpy(np.int64) * 1000, frame[SMOKE_COLUMNS].to_numpy()
    )
    state_late = check_against_legacy(keys, ts, values, np.zeros(len(keys), dtype=bool))
    assert np.isnan(state_late.score[-100:]).all()  # session 4 is late: never scored


def crafted_stream(seed: int = 11, n_keys: int = 40, n: int = 24_000):
    """Interleaved keys with nulls, re-deliveries, late readings, gaps, stuck runs, steps and
    spikes, at levels from 1e-6 to 1e9, positive and negative; some keys constant, one
    integer-valued, one only nulls, one starting with nulls."""
    rng = np.random.default_rng(seed)
    level = rng.choice([1e-6, -3.0, 50.0, 1e3, -2e4, 1e9], n_keys) * rng.uniform(0.5, 2, n_keys)
    noise = np.abs(level) * rng.choice([0.001, 0.01, 0.05], n_keys) + 1e-12
    interval = rng.choice([1000, 5000, 300_000], n_keys)
    clock = rng.integers(1.6e12, 1.7e12, n_keys)
    constant = {3, 4}
    integer = 5
    only_nulls = 6
    leading_nulls = {7: 12}
    last: dict[int, tuple[int, float]] = {}
    stuck: dict[int, int] = {}
    keys = rng.integers(0, n_keys, n)
    ts = np.zeros(n, dtype=np.int64)
    values = np.zeros(n)
    isnull = np.zeros(n, dtype=bool)
    for i, k in enumerate(keys.tolist()):
        r = rng.random()
        if k == only_nulls or leading_nulls.get(k, 0) > 0 or r < 0.01:
            leading_nulls[k] = leading_nulls.get(k, 0) - 1
            ts[i], isnull[i] = clock[k], True
            values[i] = np.nan
            continue
        if k in last and r < 0.04:  # an exact re-delivery of the newest reading
            ts[i], values[i] = last[k]
            continue
        if k in last and r < 0.07:  # late: older, or the same time with another value
            back = int(rng.integers(0, 4)) * interval[k]
            ts[i] = last[k][0] - back
            values[i] = last[k][1] + noise[k] * rng.normal() + (0.0 if back else noise[k])
            continue
        step = interval[k]
        if r < 0.073:
            step = interval[k] * rng.choice([10, 11, 30])  # 10x is not yet a gap, 11x is
        elif r < 0.075:
            step = interval[k] * 10 + 1
        clock[k] += step
        if k not in stuck and r > 0.995:
            stuck[k] = int(rng.integers(8, 13))
        if r < 0.08:
            level[k] += rng.choice([-60, 60]) * noise[k]  # a step: drift
        x = level[k] + noise[k] * rng.normal()
        if 0.08 <= r < 0.09:
            x += rng.choice([-30, 30]) * noise[k]  # a spike
        if k in constant:
            x = 7.25 if k == 3 else -0.0
        elif k == integer:
            x = float(np.round(x / 10))
        elif k in stuck and k in last:
            x = last[k][1]
            stuck[k] -= 1
            if stuck[k] == 0:
                del stuck[k]
        ts[i], values[i] = clock[k], x
        last[k] = (int(clock[k]), x)
    return keys, ts, values, isnull


CRAFTED = crafted_stream()


def test_crafted_stream_equals_legacy():
    keys, ts, values, isnull = CRAFTED
    got = check_against_legacy(keys, ts, values, isnull)
    state = SensorStatsState(int(keys.max()) + 1)
    update(state, keys, ts, values, isnull)
    totals = {name: int(c.sum()) for name, c in state.counters.items()}
    # the stream has every kind of trouble, so each path of the kernel was compared
    assert all(totals[name] > 50 for name in ("nulls", "duplicates", "late", "restarts")), totals
    assert totals["drifts"] >= 5, totals
    assert (got.score == 0.0).any()  # a perfect prediction scores 0.0, not None
    assert (got.score > 50).any()  # spikes
    assert got.drift.sum() == totals["drifts"]


@pytest.mark.parametrize(
    "params",
    [
        {"warmup": 2, "stuck_after": 0},
        {"warmup": 30, "alpha": 0.5, "q": 0.5, "clip": 2.0, "gap_factor": 3.0},
        {"shift_z": 4.0, "ph_delta": 1.0, "ph_threshold": 5.0, "stuck_after": 3},
        {"level_alpha": 0.9, "trend_beta": 0.5, "spread_alpha": 0.2, "q": 0.01},
    ],
)
def test_other_parameters_equal_legacy(params):
    keys, ts, values, isnull = (c[:6000] for c in CRAFTED)
    check_against_legacy(keys, ts, values, isnull, **params)


def test_parameters_and_validation_match_legacy():
    state = SensorStatsState()
    assert {name: getattr(state, name) for name in LEGACY_DEFAULTS} == LEGACY_DEFAULTS
    legacy = SensorStats()
    assert {name: getattr(legacy, name) for name in LEGACY_DEFAULTS} == LEGACY_DEFAULTS
    with pytest.raises(ValueError, match="warmup"):
        SensorStatsState(warmup=1)
    state = SensorStatsState(2)
    with pytest.raises(ValueError, match="key ids"):
        update(state, np.array([2]), np.array([0]), np.array([1.0]))


# ------------------------------------------------- checkpoints, compaction, growth


def reference_run():
    keys, ts, values, isnull = CRAFTED
    state = SensorStatsState(int(keys.max()) + 1)
    return update(state, keys, ts, values, isnull), state


def take(cols: FeatureColumns, index) -> FeatureColumns:
    return FeatureColumns(*(c[index] for c in cols))


def concat(parts: Sequence[FeatureColumns]) -> FeatureColumns:
    return FeatureColumns(*(np.concatenate(c) for c in zip(*parts, strict=True)))


def test_checkpoint_round_trip_mid_stream_changes_nothing():
    keys, ts, values, isnull = CRAFTED
    want, final = reference_run()
    cut = len(keys) * 2 // 5
    state = SensorStatsState(int(keys.max()) + 1)
    first = update(state, keys[:cut], ts[:cut], values[:cut], isnull[:cut])
    buffer = io.BytesIO()
    np.savez(buffer, **state.arrays())
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as saved:
        restored = SensorStatsState.from_arrays(saved)
    rest = update(restored, keys[cut:], ts[cut:], values[cut:], isnull[cut:])
    assert_columns_equal(concat([first, rest]), want, "after restore")
    for name, array in final.arrays().items():
        np.testing.assert_array_equal(restored.arrays()[name], array, err_msg=name)


def test_checkpoint_keeps_non_default_parameters():
    state = SensorStatsState(3, q=0.5, warmup=20, stuck_after=4, ph_threshold=7.5)
    restored = SensorStatsState.from_arrays(state.arrays())
    assert (restored.q, restored.warmup, restored.stuck_after, restored.ph_threshold) == (
        0.5,
        20,
        4,
        7.5,
    )
    bad = state.arrays() | {"version": np.array(99)}
    with pytest.raises(ValueError, match="version"):
        SensorStatsState.from_arrays(bad)


def test_keep_mid_stream_renumbers_and_changes_nothing():
    keys, ts, values, isnull = CRAFTED
    want, _ = reference_run()
    cut = len(keys) // 2
    state = SensorStatsState(int(keys.max()) + 1)
    update(state, keys[:cut], ts[:cut], values[:cut], isnull[:cut])
    kept = np.array([31, 2, 17, 6, 0, 39, 9])  # out of order on purpose
    state.keep(kept)
    assert state.n_keys == len(kept)
    renumber = np.full(int(keys.max()) + 1, -1)
    renumber[kept] = np.arange(len(kept))
    rest = np.flatnonzero(np.isin(keys, kept) & (np.arange(len(keys)) >= cut))
    got = update(state, renumber[keys[rest]], ts[rest], values[rest], isnull[rest])
    assert_columns_equal(got, take(want, rest), "after keep")
    with pytest.raises(ValueError):
        state.keep(np.array([0, 0]))


def test_growing_and_batching_change_nothing():
    keys, ts, values, isnull = CRAFTED
    want, final = reference_run()
    # keys numbered by first appearance, so the state must grow as they come
    order = {k: i for i, k in enumerate(dict.fromkeys(keys.tolist()))}
    renumbered = np.array([order[k] for k in keys.tolist()])
    rng = np.random.default_rng(3)
    cuts = np.unique(np.r_[0, rng.integers(0, len(keys), 60), 100, 100, 101, len(keys)])
    state = SensorStatsState()
    parts = []
    for a, b in itertools.pairwise(cuts):
        if b > a:
            state.grow(int(renumbered[a:b].max()) + 1)
        parts.append(update(state, renumbered[a:b], ts[a:b], values[a:b], isnull[a:b]))
    assert_columns_equal(concat(parts), want, "batched")
    assert state.capacity >= state.n_keys == len(order)
    first_seen = np.array(list(order))
    for name, array in final.arrays().items():
        if name not in ("version",) and not name.startswith("param_"):
            np.testing.assert_array_equal(state.arrays()[name], array[first_seen], err_msg=name)


# ------------------------------------------------- small cases, also run as plain Python


def small_stream():
    """A hundred readings over three keys that visit every path of the kernel."""
    rows = []  # (key, ts, value)
    for t in range(24):
        rows += [
            (0, t * 1000, 10.0 + 0.1 * (t % 3)),
            (1, t * 1000, -5.0),
            (2, t * 1000, 100.0 + t % 2),
        ]
    rows += [(0, 24_000, 10.2), (0, 24_000, 10.2), (0, 19_000, 11.0), (0, 24_000, 10.3)]
    rows += [(1, 24_000, -5.0), (1, 50_000, np.nan), (1, 51_000, -5.0), (1, 52_000, -4.0)]
    rows += [
        (2, (25 + i) * 1000, v)
        for i, v in enumerate([150, 150.5, 151, 150, 149.5, 150, 150.5, 151, 150])
    ]
    rows += [(2, 400_000, 150.2), (0, 25_000, 10.1), (0, 26_000, 10.0), (1, 53_000, -4.1)]
    keys, ts, values = (np.array(c) for c in zip(*rows, strict=True))
    return keys.astype(np.int64), ts.astype(np.int64), values.astype(float), np.isnan(values)


def test_small_stream_equals_legacy():
    keys, ts, values, isnull = small_stream()
    got = check_against_legacy(keys, ts, values, isnull)
    assert (got.score == 0.0).any()  # key 1 is constant: predicted exactly
    assert got.drift.any()  # key 2 steps from 100 to 150
    state = SensorStatsState(3)
    update(state, keys, ts, values, isnull)
    # re-delivery, late (twice), null, restarts after the null, the stuck run, the gap
    assert [int(c.sum()) for c in state.counters.values()] == [len(keys), 1, 1, 2, 4, 1]


def test_small_estimators_equal_river():
    values = CASES["steps"][::6]
    keys = np.arange(len(values)) % 2
    mean, var = var_batch(keys, values)
    assert_same(mean, river_columns(keys, values, stats.Var, lambda v: v.mean.get()))
    assert_same(var, river_columns(keys, values, stats.Var, lambda v: v.get()), "var")
    ewm, _ = ew_batch(keys, values, alpha=0.1)
    assert_same(ewm, river_columns(keys, values, lambda: stats.EWMean(0.1), lambda m: m.get()))
    q = quantile_batch(keys, values, q=0.95)
    assert_same(q, river_columns(keys, values, lambda: stats.Quantile(0.95), lambda e: e.get()))


def test_small_runs_in_the_mode_asked_for():
    assert hasattr(_update_kernel, "py_func") == kernels.JIT


@pytest.mark.skipif(not kernels.JIT, reason="already the plain-Python run")
def test_small_cases_pass_as_plain_python():
    env = os.environ | {"WORKBENCH_JIT": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "small", __file__],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "3 passed" in proc.stdout, proc.stdout[-1000:]


def test_a_sensor_that_moves_in_steps_is_judged_in_steps():
    # SKAB's pressure: plateaus 0.33 bar apart, one step up or down now and then; the
    # noise of its plateaus is nil, so without its resolution a one-step flip scored as a
    # spike of many standard deviations
    rng = np.random.default_rng(2)
    levels = np.cumsum(rng.choice([-1, 0, 0, 0, 0, 0, 0, 0, 0, 1], 600)) * 0.328
    values = np.round(0.05 + levels, 6)
    values[500] += 12 * 0.328  # a real spike: twelve steps off
    state = SensorStatsState(n_keys=1)
    f = update(state, np.zeros(600, np.int64), np.arange(600) * 1000, values)
    reference = SensorStats()
    scores = [reference.update(t * 1000, float(v)).score for t, v in enumerate(values)]
    np.testing.assert_array_equal(f.score, np.array([np.nan if s is None else s for s in scores]))
    assert np.nanmax(np.delete(f.score, 500)) < 3 and f.score[500] > 8


def test_a_checkpoint_from_before_the_resolution_was_kept_restores():
    state = SensorStatsState(n_keys=2)
    update(
        state, np.array([0, 1, 0, 1]), np.array([0, 0, 1000, 1000]), np.array([1.0, 5.0, 1.5, 5.0])
    )
    old = {k: v for k, v in state.arrays().items() if k != "baseline_step"}
    restored = SensorStatsState.from_arrays(old)
    assert np.isinf(restored.arrays()["baseline_step"]).all()
    assert state.arrays()["baseline_step"].tolist() == [0.5, np.inf]
