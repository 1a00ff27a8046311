"""The columnar rolling means (workbench.processor.rolling) against the per-reading legacy
RollingMeans and against a brute-force reference that sums each window exactly (math.fsum).

Every stream is run three ways: the kernel (in poll batches), one legacy RollingMeans for
all keys, and the reference. The kernel must give NaN exactly where the legacy gives None,
means within 2 ulp of fsum(window) / count, and within 1e-9 (relative to the magnitude of
the values averaged) of the legacy, whose plain running sums drift.
"""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
from bisect import bisect_right
from pathlib import Path

import numpy as np
import pytest

from workbench.processor.legacy.rolling import RollingMeans
from workbench.processor.rolling import RollingState, update

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
NAB = DATA / "nab" / "machine_temperature_system_failure.csv"
SKAB = DATA / "skab"
SKAB_SENSORS = ("Accelerometer1RMS", "Accelerometer2RMS", "Current", "Pressure", "Temperature",
                "Thermocouple", "Voltage", "Volume Flow RateRMS")  # fmt: skip
WIDTHS, HISTORY = (60_000, 300_000), 600_000


# -- the three ways to run a stream ----------------------------------------------------------


def run_kernel(stream, widths_ms, history_ms, batch=1000, state=None):
    keys, ts, values, isnull = stream
    state = RollingState(widths_ms, history_ms) if state is None else state
    parts = [update(state, keys[s : s + batch], ts[s : s + batch], values[s : s + batch],
                    isnull[s : s + batch]) for s in range(0, keys.size, batch)]  # fmt: skip
    return np.concatenate(parts) if parts else np.empty((0, len(widths_ms))), state


def run_legacy(stream, widths_ms, history_ms):
    keys, ts, values, isnull = stream
    rm = RollingMeans(tuple(w / 1000 for w in widths_ms), history_ms / 1000)
    out = np.empty((keys.size, len(widths_ms)))
    for i, (k, t, v, null) in enumerate(zip(keys.tolist(), ts.tolist(), values.tolist(),
                                            isnull.tolist(), strict=True)):  # fmt: skip
        means = rm.update(f"m-{k}", "s", t, None if null else v)
        out[i] = [np.nan if means[w] is None else means[w] for w in rm.widths_s]
    return out


def run_reference(stream, widths_ms, history_ms, every=1):
    """The definition, spelled out: all values a key received, sorted by event time; a
    value too late to matter is not kept, a reading too late gets NaN. Only every
    ``every``-th reading's means are computed (the others are left NaN)."""
    keys, ts, values, isnull = stream
    keep_ms = history_ms + max(widths_ms)
    buf_ts: dict[int, list[int]] = {}
    buf_vs: dict[int, list[float]] = {}
    newest: dict[int, int] = {}
    out = np.full((keys.size, len(widths_ms)), np.nan)
    for i, (k, t, v, null) in enumerate(zip(keys.tolist(), ts.tolist(), values.tolist(),
                                            isnull.tolist(), strict=True)):  # fmt: skip
        tl, vl = buf_ts.setdefault(k, []), buf_vs.setdefault(k, [])
        tm = newest.get(k)
        late = tm is not None and t < tm
        if not null and not (late and t <= tm - keep_ms):
            at = bisect_right(tl, t)
            tl.insert(at, t)
            vl.insert(at, v)
        newest[k] = t if tm is None else max(tm, t)
        if (late and t <= tm - history_ms) or i % every:
            continue
        hi = bisect_right(tl, t)
        for j, w in enumerate(widths_ms):
            lo = bisect_right(tl, t - w, 0, hi)
            if hi > lo:
                out[i, j] = math.fsum(vl[lo:hi]) / (hi - lo)
    return out


def assert_exact(got, ref):
    """NaN at the same places; elsewhere within 2 ulp of the exactly summed mean."""
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    ok = ~np.isnan(ref)
    err = np.abs(got[ok] - ref[ok])
    assert (err <= 2 * np.spacing(np.abs(ref[ok]))).all(), f"max error {err.max()}"


def assert_like_legacy(got, legacy, stream):
    """NaN exactly where the legacy gives None; means within 1e-9 of the legacy's, relative
    to the largest magnitude of the key's values (the scale of its running sums' drift)."""
    np.testing.assert_array_equal(np.isnan(got), np.isnan(legacy))
    keys, _, values, isnull = stream
    scale = np.zeros(keys.max() + 1)
    np.maximum.at(scale, keys[~isnull], np.abs(values[~isnull]))
    scale = np.maximum(scale[keys], 1e-300)[:, None]
    ok = ~np.isnan(legacy)
    rel = (np.abs(got - legacy) / np.broadcast_to(scale, got.shape))[ok]
    assert (rel <= 1e-9).all(), f"max relative difference {rel.max()}"


def check(stream, widths_ms=WIDTHS, history_ms=HISTORY, batch=1000, every=1):
    """The kernel against the reference (on every ``every``-th reading) and the legacy."""
    got, state = run_kernel(stream, widths_ms, history_ms, batch)
    ref = run_reference(stream, widths_ms, history_ms, every)
    assert_exact(got[::every], ref[::every])
    assert_like_legacy(got, run_legacy(stream, widths_ms, history_ms), stream)
    return got, state


# -- streams -------------------------------------------------------------------------------


def crafted(n_keys=150, n=40_000, seed=7, spikes=False):
    """Many keys interleaved, steps on a 0.5 s grid (so duplicate timestamps and readings
    exactly on a window's edge occur), 10% nulls, long gaps, 5% readings a little out of
    order and 2% up to 20 min late (beyond the 10 min history and the 15 min kept), keys of
    very different magnitudes; with ``spikes``, 1% of values a billion times larger."""
    rng = np.random.default_rng(seed)
    clock = rng.integers(0, 10_000, n_keys) * 500
    level = rng.choice([0.0, 1e4, -50.0, 1e8, 0.1], n_keys)
    keys = rng.integers(0, n_keys, n)
    ts = np.empty(n, np.int64)
    for i, k in enumerate(keys.tolist()):
        step = 0 if rng.random() < 0.1 else 500 * int(rng.integers(1, 6))
        if rng.random() < 0.005:
            step += 500 * int(rng.integers(600, 4000))
        clock[k] += step
        r = rng.random()
        delay = 0
        if r < 0.05:
            delay = 500 * int(rng.integers(1, 40))
        elif r < 0.07:
            delay = 500 * int(rng.integers(40, 2400))
        ts[i] = clock[k] - delay
    values = level[keys] + rng.normal(0, 1, n) * np.abs(level[keys]).clip(1) * 1e-3
    if spikes:
        spike = rng.random(n) < 0.01
        values[spike] *= 1e9 * rng.choice([-1.0, 1.0], spike.sum())
    isnull = rng.random(n) < 0.1
    values[isnull] = np.nan
    return keys, ts, values, isnull


def lateness(stream):
    """Per reading: how far (ms) behind its key's newest event time so far it is (0 if not)."""
    keys, ts = stream[0], stream[1]
    newest: dict[int, int] = {}
    behind = np.zeros(keys.size, np.int64)
    for i, (k, t) in enumerate(zip(keys.tolist(), ts.tolist(), strict=True)):
        tm = newest.get(k, t)
        behind[i] = max(tm - t, 0)
        newest[k] = max(tm, t)
    return behind


def nab_stream():
    if not NAB.exists():
        pytest.skip(f"{NAB} is absent (the shared real data sets)")
    import pandas as pd

    df = pd.read_csv(NAB)
    ts = pd.to_datetime(df["timestamp"]).to_numpy("datetime64[ms]").astype(np.int64)
    values = df["value"].to_numpy(np.float64)
    return np.zeros(ts.size, np.int64), ts, values, np.zeros(ts.size, bool)


def skab_stream():
    """Every sensor column of every SKAB file is a key; the files' rows arrive interleaved
    (row 0 of every file, then row 1, ...), the sensors of a row one after the other."""
    files = sorted(SKAB.glob("**/*.csv"))
    if not files:
        pytest.skip(f"no SKAB files under {SKAB} (the shared real data sets)")
    import pandas as pd

    cols = []
    for f, path in enumerate(files):
        df = pd.read_csv(path, sep=";")
        ts = pd.to_datetime(df["datetime"]).to_numpy("datetime64[ms]").astype(np.int64)
        row = np.arange(ts.size)
        for s, name in enumerate(SKAB_SENSORS):
            key = np.full(ts.size, f * len(SKAB_SENSORS) + s)
            order = row * 10_000 + f * len(SKAB_SENSORS) + s
            cols.append((order, key, ts, df[name].to_numpy(np.float64)))
    order, keys, ts, values = (np.concatenate(c) for c in zip(*cols, strict=True))
    arrival = np.argsort(order, kind="stable")
    keys, ts, values = keys[arrival], ts[arrival], values[arrival]
    return keys, ts, values, np.isnan(values)


# -- parity ----------------------------------------------------------------------------------


@pytest.mark.parametrize("history_s", [7200, 1800])
def test_nab_clock_step_back(history_s):
    stream = nab_stream()
    behind = lateness(stream)
    # the file's 55-minute step back: 11 readings behind the newest, one on a repeated time
    assert (behind > 0).sum() == 11 and behind.max() == 55 * 60_000
    got, _ = check(stream, (600_000, 3_600_000), history_s * 1000, batch=777)
    nan_rows = np.isnan(got).any(axis=1)
    if history_s == 7200:
        assert not nan_rows.any()
    else:  # 02:00 ... 02:25 are 30 min or more behind 02:55
        assert nan_rows.sum() == 6 and (behind[nan_rows] >= 1_800_000).all()


def test_skab_files_interleaved():
    stream = skab_stream()
    assert np.unique(stream[0]).size == 14 * len(SKAB_SENSORS)
    got, state = check(stream, batch=4096, every=5)
    assert not np.isnan(got).any()  # no nulls, no late readings in SKAB
    assert state.n_keys == 14 * len(SKAB_SENSORS)


@pytest.mark.parametrize(
    ("widths_ms", "history_ms"),
    [(WIDTHS, HISTORY), ((300_000, 1, 60_000), 0), ((1_000,), 5_000)],
)
def test_crafted_interleaved_stream(widths_ms, history_ms):
    stream = crafted()
    keys, ts, _, isnull = stream
    behind = lateness(stream)
    keep_ms = history_ms + max(widths_ms)
    # the stream has what it is meant to have
    assert 0.08 < isnull.mean() < 0.12
    assert ((behind > 0) & (behind <= 20_000)).sum() > 1000
    assert (behind > keep_ms).sum() > 100 and ((behind > history_ms) & (behind <= keep_ms)).any()
    pairs = keys * 2**40 + ts
    assert np.unique(pairs).size < keys.size - 1000  # duplicate (key, timestamp)
    assert (np.diff(np.sort(ts[keys == 3])) > 300_000).any()  # long gaps
    got, _ = check(stream, widths_ms, history_ms, batch=999)
    too_late = (behind > 0) & (behind >= history_ms)
    assert np.isnan(got[too_late]).all()
    assert not np.isnan(got[~too_late & ~isnull]).any()


def test_spikes_stay_exact_where_running_sums_drift():
    """Values a billion times larger than their neighbours: the kernel's means stay within
    2 ulp of the exact ones; the legacy's plain running sums do not."""
    stream = crafted(n_keys=10, n=30_000, seed=2, spikes=True)
    got, _ = run_kernel(stream, WIDTHS, HISTORY)
    ref = run_reference(stream, WIDTHS, HISTORY)
    assert_exact(got, ref)
    legacy = run_legacy(stream, WIDTHS, HISTORY)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(legacy))
    ok = ~np.isnan(ref)
    assert np.abs(legacy[ok] - ref[ok]).max() > np.abs(got[ok] - ref[ok]).max()


def test_batches_do_not_matter():
    stream = crafted(n_keys=40, n=8_000, seed=3)
    one, _ = run_kernel(stream, WIDTHS, HISTORY, batch=stream[0].size)
    for batch in (1, 7, 500):
        many, _ = run_kernel(stream, WIDTHS, HISTORY, batch=batch)
        np.testing.assert_array_equal(many, one)


def test_steady_1hz_memory_is_bounded():
    """1 Hz for an hour: a key holds about (history + largest width) of values."""
    n_keys, secs = 20, 3600
    keys = np.tile(np.arange(n_keys), secs)
    ts = np.repeat(np.arange(secs, dtype=np.int64) * 1000, n_keys)
    values = np.sin(np.arange(keys.size) / 7.0)
    state = RollingState(WIDTHS, HISTORY)
    got = update(state, keys, ts, values, np.zeros(keys.size, bool))
    span = (HISTORY + max(WIDTHS)) // 1000  # 900 values matter
    assert (state.capacity[:n_keys] <= 2 * span).all()
    assert state.ts.size <= 2.5 * span * n_keys
    assert (state.arrays()["length"] == span).all()
    ref = run_reference((keys, ts, values, np.zeros(keys.size, bool)), WIDTHS, HISTORY, 25)
    assert_exact(got[::25], ref[::25])


# -- checkpoints and eviction ----------------------------------------------------------------


def savez_round_trip(state: RollingState) -> RollingState:
    buf = io.BytesIO()
    np.savez(buf, **state.arrays())
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    restored = RollingState.from_arrays(arrays)
    for name, value in state.arrays().items():
        np.testing.assert_array_equal(restored.arrays()[name], value, err_msg=name)
    return restored


def test_checkpoint_round_trip_mid_stream():
    stream = crafted(n_keys=60, n=20_000, seed=4)
    whole, _ = run_kernel(stream, WIDTHS, HISTORY)
    state = RollingState(WIDTHS, HISTORY)
    parts = []
    for lo, hi in [(0, 3_000), (3_000, 3_001), (3_001, 11_000), (11_000, 20_000)]:
        part = tuple(col[lo:hi] for col in stream)
        parts.append(run_kernel(part, WIDTHS, HISTORY, state=state)[0])
        state = savez_round_trip(state)
    assert_exact(np.concatenate(parts), whole)


def test_keep_mid_stream():
    """Evict some keys, renumber the rest; kept keys go on as if nothing happened, evicted
    ones that come back start afresh (as new keys)."""
    stream = crafted(n_keys=50, n=20_000, seed=5)
    keys = stream[0]
    split = 9_000
    rng = np.random.default_rng(5)
    kept = rng.permutation(50)[:30]  # in a shuffled order
    new_id = np.full(50, -1)
    new_id[kept] = np.arange(kept.size)
    evicted = new_id < 0
    new_id[evicted] = kept.size + np.arange(evicted.sum())
    # the reference sees the evicted keys' later readings as readings of other keys
    ref_keys = keys.copy()
    late_evicted = (np.arange(keys.size) >= split) & evicted[keys]
    ref_keys[late_evicted] = 1000 + keys[late_evicted]
    ref = run_reference((ref_keys, *stream[1:]), WIDTHS, HISTORY)[split:]

    first = tuple(col[:split] for col in stream)
    _, state = run_kernel(first, WIDTHS, HISTORY)
    state.keep(kept)
    assert state.n_keys == kept.size
    state = savez_round_trip(state)
    second = (new_id[keys[split:]], *(col[split:] for col in stream[1:]))
    got, state = run_kernel(second, WIDTHS, HISTORY, state=state)
    assert_exact(got, ref)
    assert state.n_keys == 50
    state.keep(np.array([], np.int64))
    assert state.n_keys == 0 and state.arrays()["ts"].size == 0


# -- the pure-Python path -----------------------------------------------------------------------

PURE = """
import json, sys
import numpy as np
from workbench.processor import kernels
from workbench.processor.rolling import RollingState, update
assert not kernels.JIT
cols = json.loads(sys.stdin.read())
state = RollingState((3_000, 10_000), 20_000)
keys, ts, values, isnull = (np.array(c) for c in cols)
out = [update(state, keys[s:s + 50], ts[s:s + 50], values[s:s + 50], isnull[s:s + 50])
       for s in range(0, keys.size, 50)]
state = RollingState.from_arrays(state.arrays())
out.append(update(state, np.array([0, 1]), np.array([10**9, -10**9]), np.array([1.0, 2.0])))
print(json.dumps(np.concatenate(out).tolist()))
"""


def test_pure_python_path_matches_compiled_and_legacy():
    """A small stream (six keys, segments that fill, shift and move, an arena that fills and
    is repacked) through the kernels run as plain Python (WORKBENCH_JIT=0)."""
    keys, ts, values, isnull = crafted(n_keys=6, n=600, seed=6)
    ts = ts // 100  # a denser stream against the short widths below
    values = np.where(isnull, 0.0, values)  # JSON has no NaN
    stream = (keys, ts, values, isnull)
    cols = [keys.tolist(), ts.tolist(), values.tolist(), isnull.tolist()]
    env = {**os.environ, "WORKBENCH_JIT": "0"}
    proc = subprocess.run([sys.executable, "-c", PURE], input=json.dumps(cols), env=env,
                          capture_output=True, text=True, check=True, timeout=120)  # fmt: skip
    pure = np.array(json.loads(proc.stdout), dtype=float)
    compiled, state = run_kernel(stream, (3_000, 10_000), 20_000, batch=50)
    state = RollingState.from_arrays(state.arrays())
    after = update(state, np.array([0, 1]), np.array([10**9, -(10**9)]), np.array([1.0, 2.0]))
    np.testing.assert_array_equal(pure, np.concatenate([compiled, after]))
    assert_exact(compiled, run_reference(stream, (3_000, 10_000), 20_000))
    assert_like_legacy(compiled, run_legacy(stream, (3_000, 10_000), 20_000), stream)
    assert after.tolist()[0] == [1.0, 1.0] and np.isnan(after[1]).all()  # far too late


# -- the API ---------------------------------------------------------------------------------


def test_legacy_doc_example_and_errors():
    state = RollingState((60_000, 300_000), 600_000)
    got = update(state, np.zeros(4, np.int64), np.array([0, 120_000, 30_000, 130_000]),
                 np.array([1.0, 3.0, 2.0, 7.0]), np.array([False, False, False, True]))  # fmt: skip
    assert got.tolist() == [[1.0, 1.0], [3.0, 2.0], [1.5, 1.5], [3.0, 2.0]]
    assert update(state, [], [], []).shape == (0, 2)
    with pytest.raises(ValueError, match="equal lengths"):
        update(state, np.zeros(2, np.int64), np.zeros(1, np.int64), np.zeros(2))
    with pytest.raises(ValueError, match=">= 0"):
        update(state, np.array([-1]), np.array([0]), np.array([1.0]))
    with pytest.raises(ValueError, match="positive widths"):
        RollingState((0, 60_000), 600_000)
    with pytest.raises(ValueError, match="distinct"):
        state.keep(np.array([0, 0]))
    arrays = state.arrays()
    arrays["version"] = np.array(99)
    with pytest.raises(ValueError, match="version"):
        RollingState.from_arrays(arrays)
