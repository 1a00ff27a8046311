"""The feature vectors the processor scores (:mod:`workbench.processor.predict`) against an
independent reference computed from the windows' last results, without servers: in any
batching, across checkpoints, and with corrections arriving after the minutes that depend
on them were scored."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from workbench.models.features import windows_to_vectors
from workbench.processor import predict

SENSORS = np.array(["temperature", "vibration", "pressure"], dtype=object)
MIN = 60_000


def _windows(seed: int, minutes: int = 20) -> pd.DataFrame:
    """Final one-minute windows of 3 machines x 3 sensors, with gaps (a sensor silent for a
    minute), windows of nulls only (NaN statistics) and a level that moves."""
    rng = np.random.default_rng(seed)
    rows = []
    for m in range(3):
        for s in SENSORS:
            level = rng.uniform(10, 90)
            for minute in range(minutes):
                if rng.random() < 0.12:
                    continue
                count = 0 if rng.random() < 0.05 else int(rng.integers(1, 60))
                v = rng.normal(level + minute * rng.uniform(0, 0.5), 2.0, count)
                rows.append({
                    "machine_id": f"m-{m}", "sensor_type": s, "start": minute * MIN,
                    "count": count, "nulls": int(rng.integers(0, 3)),
                    "mean": v.mean() if count else np.nan, "min": v.min() if count else np.nan,
                    "max": v.max() if count else np.nan,
                    "stddev": v.std(ddof=1) if count > 1 else (0.0 if count else np.nan),
                    "quantile": np.quantile(v, 0.95) if count else np.nan,
                })  # fmt: skip
    return pd.DataFrame(rows)


def _reference(frame: pd.DataFrame) -> dict[tuple[str, int], dict[str, float]]:
    """The features as their definitions in predict's docstring say, by plain lookups."""
    w = {(r.machine_id, r.sensor_type, r.start): r for r in frame.itertuples()}
    out: dict[tuple[str, int], dict[str, float]] = {}
    for (m, s, t), r in sorted(w.items()):
        x = out.setdefault((m, t), {})
        seen = r.count + r.nulls
        f = {"mean": r.mean, "std": r.stddev, "n": r.count,
             "nulls": r.nulls / seen if seen else math.nan, "range": r.max - r.min,
             "top": r.max - r.mean, "p95": r.quantile - r.mean}  # fmt: skip
        if (prev := w.get((m, s, t - MIN))) is not None:
            f["d1"], f["dstd"] = r.mean - prev.mean, r.stddev - prev.stddev
        if (back := w.get((m, s, t - 5 * MIN))) is not None:
            f["d5"] = (r.mean - back.mean) / 5
        earlier = [w[(m, s, t - k * MIN)].mean for k in range(1, 6) if (m, s, t - k * MIN) in w]
        earlier = [e for e in earlier if math.isfinite(e)]
        if earlier:
            f["dev"] = r.mean - sum(earlier) / len(earlier)
        x.update({f"{s}.{k}": float(v) for k, v in f.items() if math.isfinite(v)})
    return out


def _stats(rows: pd.DataFrame) -> np.ndarray:
    cols = ("count", "nulls", "mean", "min", "max", "stddev", "quantile")
    return np.column_stack([rows[c].to_numpy(float) for c in cols])


def _online(emissions: list[pd.DataFrame], depth: int) -> dict[tuple[str, int], dict]:
    """What the processor stores: each emission's windows put in, the minutes they affect
    scored, the last vector of each minute kept; a checkpoint and restore between
    emissions."""
    machines = [f"m-{m}" for m in range(3)]
    pairs = [(m, s) for m in machines for s in SENSORS]
    key_of = {p: i for i, p in enumerate(pairs)}
    key_mkey = np.array([machines.index(m) for m, _ in pairs])
    key_sensor = np.array([list(SENSORS).index(s) for _, s in pairs])
    fs = predict.FeatureState(depth)
    fs.grow(len(pairs))
    stored: dict[tuple[str, int], dict] = {}
    for rows in emissions:
        keys = np.array([key_of[(m, s)] for m, s in zip(rows.machine_id, rows.sensor_type,
                                                          strict=True)], np.int64)  # fmt: skip
        ms, ts, vectors = predict.take(fs, keys, rows["start"].to_numpy(np.int64), _stats(rows),
                                       key_mkey, key_sensor, SENSORS)  # fmt: skip
        for m, t, x in zip(ms.tolist(), ts.tolist(), vectors, strict=True):
            stored[(machines[m], t)] = x
        fs = predict.FeatureState.from_arrays(fs.arrays(), depth)
    return stored


def _by_minute(frame: pd.DataFrame, minutes_per_emission: int) -> list[pd.DataFrame]:
    starts = np.unique(frame["start"])
    groups = np.array_split(starts, max(1, len(starts) // minutes_per_emission))
    return [frame[frame["start"].isin(g)] for g in groups]


def _close(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for at, x in want.items():
        assert got[at].keys() == x.keys(), at
        np.testing.assert_allclose([got[at][k] for k in x], list(x.values()), rtol=1e-12,
                                   atol=1e-12, err_msg=str(at))  # fmt: skip


@pytest.mark.parametrize("minutes_per_emission", [1, 3, 20])
@pytest.mark.parametrize("seed", [1, 2])
def test_the_vectors_are_the_reference_in_any_batching(seed, minutes_per_emission):
    frame = _windows(seed)
    want = _reference(frame)
    _close(_online(_by_minute(frame, minutes_per_emission), predict.HISTORY + 2), want)
    # the trend features are there where the history allows
    assert sum("temperature.d5" in x for x in want.values()) > 10
    assert sum("vibration.dev" in x for x in want.values()) > 30


@pytest.mark.parametrize("seed", [3, 4])
def test_corrections_give_the_vectors_of_the_last_results(seed):
    """First results, then corrections of windows up to 8 minutes after the minutes that
    depend on them were scored (a late reading changes a window's statistics, or makes a
    window where there was none): the minutes stored last are the reference's for the
    corrected windows."""
    frame = _windows(seed)
    rng = np.random.default_rng(seed)
    first = frame.copy()
    corrected = frame.sample(frac=0.15, random_state=seed).index
    first.loc[corrected, "mean"] += rng.normal(0, 5, corrected.size)
    first.loc[corrected, "count"] -= 1
    late_made = frame.sample(frac=0.05, random_state=seed + 1).index  # absent at first
    emissions = []
    for rows in _by_minute(first.drop(late_made), 1):
        emissions.append(rows)
        t = int(rows["start"].iloc[0])
        due = frame.loc[corrected.union(late_made)]
        emissions.append(due[due["start"] == t - 8 * MIN])  # corrected 8 minutes on
    for t in sorted(frame["start"].unique())[-8:]:  # the end of the run: what is left
        due = frame.loc[corrected.union(late_made)]
        emissions.append(due[due["start"] == t])
    emissions = [e for e in emissions if len(e)]
    depth = predict.ring_depth(600, "update")
    _close(_online(emissions, depth), _reference(frame))


def test_training_makes_the_vectors_the_processor_scores():
    frame = _windows(5)
    stored = frame.rename(columns={"start": "window_start"})
    stored["window_start"] = pd.to_datetime(stored["window_start"], unit="ms", utc=True)
    offline = {(r.machine_id, r.start_ms): r.x for r in windows_to_vectors("r", stored)}
    _close(offline, _reference(frame))


def test_a_feature_state_of_another_version_is_refused():
    fs = predict.FeatureState(7)
    fs.grow(2)
    arrays = {**fs.arrays(), "version": np.array(predict.VERSION + 1)}
    with pytest.raises(ValueError, match="feature state version"):
        predict.FeatureState.from_arrays(arrays, 7)


def test_a_vector_does_not_depend_on_how_deep_the_rings_are():
    """Exactly, to the last bit: a stored prediction must not change because a backlog
    widened the rings for a while (or a checkpoint was restored under another horizon)."""
    frame = _windows(6)
    shallow = _online(_by_minute(frame, 1), predict.HISTORY + 2)
    for depth in (predict.HISTORY + 3, 31):
        assert _online(_by_minute(frame, 1), depth) == shallow
    assert _online(_by_minute(frame, 20), predict.HISTORY + 2) == shallow
