"""Online statistics of many (machine, sensor) streams at once, one compiled pass per batch.

This is :class:`workbench.processor.legacy.stats.SensorStats` lifted to columns: the state
of every key lives in :class:`SensorStatsState` (River's estimators taken apart into
arrays, the Holt baseline, the counters, the current features), and :func:`update` runs
one compiled loop over a batch in arrival order that does, reading by reading, exactly
what ``SensorStats.update`` does for that reading's key:

* a null is counted, marks a gap, and returns the current features without a score;
* a reading equal to the key's newest one, event time included, is a re-delivery: counted,
  it returns the current features (without the drift flag) and changes nothing;
* a late reading (event time not after the newest) updates only the order-free statistics
  (mean, variance, quantile) and gets no score;
* any other reading updates every estimator and is judged against the winsorised Holt
  baseline: warm-up, restarts after gaps and stuck runs, the score, and Page-Hinkley drift
  on the clipped signed score, which restarts the baseline when it fires.

The estimators are River's arithmetic, bit for bit (see the sibling modules), and the
baseline is the legacy arithmetic in the legacy order, so every output and counter equals
the legacy class's (``tests/test_kernel_stats.py`` proves it on real and crafted data).
A score of None is NaN here; a score of exactly 0.0 stays 0.0.

Two sensors, 120 readings each, interleaved, then a spike on the first:

>>> import numpy as np
>>> rng = np.random.default_rng(7)
>>> state = SensorStatsState(n_keys=2)
>>> keys = np.tile([0, 1], 120)
>>> ts = np.repeat(np.arange(120) * 1000, 2)
>>> values = np.where(keys == 0, 50.0, 20.0) + rng.normal(0, 0.2, 240)
>>> f = update(state, keys, ts, values)
>>> f.mean[-2:].round(1).tolist(), bool(np.nanmax(f.score) < 6), bool(f.drift.any())
([50.0, 20.0], True, False)
>>> f = update(state, np.array([0, 1]), np.array([120_000, 120_000]), np.array([75.0, 20.1]))
>>> (f.score > 50).tolist()
[True, False]
>>> state.counters["n"].tolist()
[121, 121]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from workbench.processor.kernels import kernel
from workbench.processor.stats.base import Fields, allocate, from_columns, to_columns
from workbench.processor.stats.ewm import (
    EWMEAN_FIELDS,
    EWVAR_FIELDS,
    ewmean_get,
    ewmean_update,
    ewvar_get,
    ewvar_update,
)
from workbench.processor.stats.pagehinkley import PH_ALPHA, PH_FIELDS, ph_reset, ph_update
from workbench.processor.stats.quantile import (
    quantile_fields,
    quantile_get,
    quantile_increments,
    quantile_update,
)
from workbench.processor.stats.var import VAR_FIELDS, var_get, var_update

#: Version of the :meth:`SensorStatsState.arrays` layout.
FORMAT_VERSION = 1
#: ``last_ts`` of a key that has had no value yet (the legacy ``None``).
NO_TS = np.iinfo(np.int64).min
#: Mean absolute deviation of a normal variable is sigma * sqrt(2/pi).
MAD_TO_SD = math.sqrt(math.pi / 2)

_NAN = np.float64(np.nan)
_INT = np.int64(0)
_FLOAT_PARAMS = (
    "alpha",
    "q",
    "level_alpha",
    "trend_beta",
    "spread_alpha",
    "clip",
    "shift_z",
    "ph_delta",
    "ph_threshold",
    "gap_factor",
)
_INT_PARAMS = ("warmup", "stuck_after")
_COUNTERS = ("n", "nulls", "duplicates", "late", "restarts", "drifts")


class FeatureColumns(NamedTuple):
    """The legacy ``Features`` of each reading of a batch, one column per field."""

    mean: np.ndarray
    std: np.ndarray
    ewma: np.ndarray
    ewstd: np.ndarray
    quantile: np.ndarray
    #: the robust level the reading was judged against
    baseline: np.ndarray
    #: ``|value - baseline| / spread``; NaN (legacy None) in warm-up, for nulls, late readings
    score: np.ndarray
    #: a change of level was detected at this reading
    drift: np.ndarray


def _layout(q: float, warmup: int) -> dict[str, Fields]:
    """Every group of per-key state and its fields, in the order the kernel takes them."""
    return {
        "var": VAR_FIELDS,
        "ewm": EWMEAN_FIELDS,
        "ewv": EWVAR_FIELDS,
        "quantile": quantile_fields(q),
        "ph": PH_FIELDS,
        # Holt level and trend, the spread (EW mean absolute residual) and its bookkeeping
        "baseline": {
            "level": _NAN,
            "trend": _NAN,
            "spread": _NAN,
            "residuals": _INT,  # residuals in the spread (a plain mean until 1 / spread_alpha)
            "since_start": _INT,  # values since the baseline (re)started
            "warm": np.int64(warmup),  # values it needs before the first score
            "dt_s": _NAN,  # usual interval between readings
            "gap": np.bool_(False),  # nulls since the last value
            "repeats": _INT,  # identical values in a row
            "step": np.float64(np.inf),  # the smallest change between two values
        },
        "count": {name: _INT for name in _COUNTERS},
        "last": {"ts": np.int64(NO_TS), "value": _NAN},
        "feature": {
            **{name: _NAN for name in FeatureColumns._fields if name != "drift"},
            "drift": np.bool_(False),
        },
    }


class SensorStatsState:
    """Per-key state of the legacy ``SensorStats``, for dense key ids ``0 .. n_keys - 1``.

    Parameters are the legacy constructor's, with the same defaults; they hold for every
    key (one ``q`` for all).

    Parameters
    ----------
    n_keys
        Keys to make room for now (:meth:`grow` adds more).
    alpha
        Weight of the newest value in ``ewma`` / ``ewstd``.
    q
        The quantile reported (0 < q < 1).
    warmup
        Readings before the first score (and after a restart, ``warmup // 3``).
    level_alpha, trend_beta
        Holt smoothing of the baseline's level and trend.
    spread_alpha
        Weight of the newest absolute residual in the spread.
    clip
        Residuals are clipped to ``clip`` spreads before they update the baseline.
    shift_z, ph_delta, ph_threshold
        Drift detection: Page-Hinkley on the signed score clipped to ``shift_z``.
    gap_factor
        A reading more than ``gap_factor`` usual intervals after the previous one
        restarts the baseline.
    stuck_after
        A value repeated this many times in a row is a stuck run.
    """

    def __init__(
        self,
        n_keys: int = 0,
        *,
        alpha: float = 0.1,
        q: float = 0.95,
        warmup: int = 10,
        level_alpha: float = 0.5,
        trend_beta: float = 0.1,
        spread_alpha: float = 0.02,
        clip: float = 4.0,
        shift_z: float = 10.0,
        ph_delta: float = 5.0,
        ph_threshold: float = 20.0,
        gap_factor: float = 10.0,
        stuck_after: int = 8,
    ) -> None:
        if warmup < 2:
            raise ValueError("warmup must be at least 2 readings")
        if not 0.0 < q < 1.0:
            raise ValueError("q must be between 0 and 1 (exclusive)")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError("alpha must be between 0 and 1")
        self.alpha, self.q, self.warmup = float(alpha), float(q), int(warmup)
        self.level_alpha, self.trend_beta = float(level_alpha), float(trend_beta)
        self.spread_alpha, self.clip = float(spread_alpha), float(clip)
        self.shift_z, self.ph_delta = float(shift_z), float(ph_delta)
        self.ph_threshold, self.gap_factor = float(ph_threshold), float(gap_factor)
        self.stuck_after = int(stuck_after)
        self._fields = _layout(self.q, self.warmup)
        self._increments = quantile_increments(self.q)
        self.n_keys = 0
        self._state = {group: allocate(fields, 0) for group, fields in self._fields.items()}
        self.grow(n_keys)

    @property
    def capacity(self) -> int:
        """Records allocated per group (at least ``n_keys``)."""
        return len(self._state["count"])

    def grow(self, n_keys: int) -> None:
        """Make room for key ids up to ``n_keys - 1``; new keys start empty."""
        if n_keys <= self.n_keys:
            return
        if n_keys > self.capacity:
            capacity = max(n_keys, 2 * self.capacity)
            for group, fields in self._fields.items():
                new = allocate(fields, capacity)
                new[: self.n_keys] = self._state[group][: self.n_keys]
                self._state[group] = new
        self.n_keys = n_keys

    def keep(self, ids: np.ndarray) -> None:
        """Keep only the keys ``ids``, renumbered ``0 .. len(ids) - 1`` in that order."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim != 1 or (ids.size and (ids.min() < 0 or ids.max() >= self.n_keys)):
            raise ValueError(f"ids must be a 1-d array of key ids below {self.n_keys}")
        if np.unique(ids).size != ids.size:
            raise ValueError("ids must not repeat")
        self._state = {group: state[ids] for group, state in self._state.items()}
        self.n_keys = ids.size

    def arrays(self) -> dict[str, np.ndarray]:
        """A copy of the state as plain named arrays (``np.savez`` them for a checkpoint):
        ``version``, ``param_<name>`` and ``<group>_<field>`` (e.g. ``count_late``)."""
        out = {"version": np.array(FORMAT_VERSION, dtype=np.int64)}
        for name in _FLOAT_PARAMS:
            out[f"param_{name}"] = np.array(getattr(self, name), dtype=np.float64)
        for name in _INT_PARAMS:
            out[f"param_{name}"] = np.array(getattr(self, name), dtype=np.int64)
        for group, state in self._state.items():
            out.update(to_columns(state[: self.n_keys], f"{group}_"))
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> SensorStatsState:
        """The state :meth:`arrays` described (e.g. an ``np.load`` of its ``np.savez``)."""
        version = int(arrays["version"])
        if version != FORMAT_VERSION:
            raise ValueError(f"sensor stats state version {version}, expected {FORMAT_VERSION}")
        params = {name: float(arrays[f"param_{name}"]) for name in _FLOAT_PARAMS}
        params.update({name: int(arrays[f"param_{name}"]) for name in _INT_PARAMS})
        state = cls(**params)
        if "baseline_step" not in arrays:  # a checkpoint from before the resolution was kept
            n = len(arrays["baseline_level"])
            arrays = dict(arrays) | {"baseline_step": np.full(n, np.inf)}
        loaded = {g: from_columns(f, arrays, f"{g}_") for g, f in state._fields.items()}
        sizes = {len(s) for s in loaded.values()}
        if len(sizes) != 1:
            raise ValueError(f"sensor stats state groups differ in length: {sorted(sizes)}")
        state._state = loaded
        state.n_keys = sizes.pop()
        return state

    @property
    def counters(self) -> dict[str, np.ndarray]:
        """Per key: readings seen, nulls, re-deliveries, late readings, restarts, drifts."""
        count = self._state["count"][: self.n_keys]
        return {name: count[name] for name in _COUNTERS}

    @property
    def features(self) -> FeatureColumns:
        """Per key: what its newest reading was judged with (legacy ``features``)."""
        feature = self._state["feature"][: self.n_keys]
        return FeatureColumns(*(feature[name] for name in FeatureColumns._fields))

    @property
    def last_ts(self) -> np.ndarray:
        """Per key: event time (epoch ms) of its newest value; ``NO_TS`` before the first."""
        return self._state["last"]["ts"][: self.n_keys]

    def _kernel_args(self) -> tuple:
        params = (
            self.alpha,
            self.q,
            self.warmup,
            self.level_alpha,
            self.trend_beta,
            self.spread_alpha,
            self.clip,
            self.shift_z,
            self.ph_delta,
            self.ph_threshold,
            self.gap_factor,
            self.stuck_after,
        )
        return (params, self._increments, *(self._state[g] for g in self._fields))


def update(
    state: SensorStatsState,
    keys: np.ndarray,
    ts_ms: np.ndarray,
    values: np.ndarray,
    isnull: np.ndarray | None = None,
) -> FeatureColumns:
    """Take a batch of readings in arrival order and describe each one.

    Parameters
    ----------
    state
        The per-key state; updated in place.
    keys
        Dense key id of each reading (below ``state.n_keys``).
    ts_ms
        Event time of each reading, epoch ms.
    values
        Value of each reading (ignored where ``isnull``).
    isnull
        Which readings are nulls; default: where ``values`` is NaN.

    Returns
    -------
    FeatureColumns
        The legacy ``Features`` of each reading, as columns.
    """
    keys = np.ascontiguousarray(keys, dtype=np.int64)
    ts_ms = np.ascontiguousarray(ts_ms, dtype=np.int64)
    values = np.ascontiguousarray(values, dtype=np.float64)
    isnull = np.isnan(values) if isnull is None else np.ascontiguousarray(isnull, dtype=np.bool_)
    size = keys.size
    if keys.ndim != 1 or any(c.shape != (size,) for c in (ts_ms, values, isnull)):
        raise ValueError("keys, ts_ms, values and isnull must be 1-d columns of equal length")
    if size and (keys.min() < 0 or keys.max() >= state.n_keys):
        raise ValueError(f"key ids must be in 0..{state.n_keys - 1} (grow the state first)")
    out = FeatureColumns(*(np.empty(size) for _ in range(7)), np.empty(size, dtype=np.bool_))
    _update_kernel(keys, ts_ms, values, isnull, *state._kernel_args(), *out)
    return out


@kernel
def _pymax(a, b):
    """Python's ``max(a, b)``: the first unless the second is strictly greater."""
    return b if b > a else a


@kernel
def _restart(ph, k, b, c, x, warmup):
    """Begin a new baseline at ``x`` (``b``, ``c``: the key's baseline and count records);
    the spread (the sensor's noise) is kept."""
    first = b["level"] != b["level"]
    if not first:
        c["restarts"] += 1
    b["level"] = x
    b["trend"] = 0.0
    b["since_start"] = 0
    b["warm"] = warmup if first else max(2, warmup // 3)
    if not first and not ph[k]["drift"]:
        ph_reset(ph, k)


@kernel
def _judge(ph, k, b, c, last, ts, x, params):
    """Score ``x`` against key ``k``'s baseline, then let it teach the baseline.

    ``b``, ``c`` and ``last`` are the key's baseline, count and last-value records.
    Returns the score (NaN for None) and whether drift was detected.
    """
    (_alpha, _q, warmup, level_alpha, trend_beta, spread_alpha, clip, shift_z, ph_delta,
     ph_threshold, gap_factor, stuck_after) = params  # fmt: skip
    if last["ts"] == NO_TS:
        _restart(ph, k, b, c, x, warmup)
        return np.nan, False
    dt_s = (ts - last["ts"]) / 1000.0
    usual = b["dt_s"]
    b["dt_s"] = dt_s if usual != usual else usual + 0.1 * (dt_s - usual)
    run = b["repeats"] + 1  # identical values in a row, up to the previous one
    b["repeats"] = run if x == last["value"] else 0
    if x != last["value"]:
        change = abs(x - last["value"])
        if change < b["step"]:
            b["step"] = change
    if b["gap"] or (usual == usual and dt_s > gap_factor * usual):
        b["gap"] = False
        _restart(ph, k, b, c, x, warmup)
        return np.nan, False
    if b["repeats"] == 0 and run >= stuck_after and stuck_after > 0:  # a stuck run ends
        _restart(ph, k, b, c, x, warmup)
        return np.nan, False
    predicted = b["level"] + b["trend"] * dt_s
    residual = x - predicted
    spread = b["spread"]
    b["since_start"] += 1
    if spread != spread:  # the second value of the stream
        spread = abs(residual)
    step = b["step"] if b["step"] < np.inf else 0.0  # a sensor in steps is judged in steps
    sd = _pymax(_pymax(_pymax(spread * MAD_TO_SD, 1e-4 * abs(predicted)), 1e-9), step)
    z = residual / sd
    limit = clip * sd
    clipped = limit if residual > limit else -limit if residual < -limit else residual
    b["level"] = predicted + level_alpha * clipped
    b["trend"] += level_alpha * trend_beta * clipped / _pymax(dt_s, b["dt_s"])
    if b["repeats"] < 2:  # a stuck sensor says nothing about the noise
        b["residuals"] += 1
        w = _pymax(spread_alpha, 1.0 / b["residuals"])
        b["spread"] = spread + w * (abs(clipped) - spread)
    if b["since_start"] < b["warm"]:
        return np.nan, False
    signed = shift_z if z > shift_z else -shift_z if z < -shift_z else z
    if ph_update(ph, k, signed, warmup, ph_delta, ph_threshold, PH_ALPHA):
        c["drifts"] += 1
        _restart(ph, k, b, c, x, warmup)
        return abs(z), True
    return abs(z), False


@kernel
def _update_kernel(
    keys, ts_ms, values, isnull, params, increments, var, ewm, ewv, quant, ph, base, count, last,
    feat, out_mean, out_std, out_ewma, out_ewstd, out_quantile, out_baseline, out_score, out_drift,
):  # fmt: skip
    """The loop behind :func:`update`: legacy ``SensorStats.update`` for each reading's key,
    in arrival order, writing the reading's features to the ``out_*`` columns."""
    alpha, q = params[0], params[1]
    for i in range(keys.size):
        k = keys[i]
        ts = ts_ms[i]
        x = values[i]
        b, c, lt, f = base[k], count[k], last[k], feat[k]
        seen = lt["ts"] != NO_TS
        redelivery = False
        c["n"] += 1
        if isnull[i]:
            c["nulls"] += 1
            b["gap"] = True
            f["score"] = np.nan
            f["drift"] = False
        elif seen and ts == lt["ts"] and x == lt["value"]:  # a re-delivery changes nothing
            c["duplicates"] += 1
            redelivery = True
        elif seen and ts <= lt["ts"]:  # late: only the order-free statistics learn
            c["late"] += 1
            var_update(var, k, x)
            quantile_update(quant, k, x, increments)
            f["mean"] = var[k]["mean"]
            f["std"] = math.sqrt(var_get(var, k))
            f["quantile"] = quantile_get(quant, k, q)
            f["score"] = np.nan
            f["drift"] = False
        else:
            var_update(var, k, x)
            ewmean_update(ewm, k, x, alpha)
            ewvar_update(ewv, k, x, alpha)
            quantile_update(quant, k, x, increments)
            score, drifted = _judge(ph, k, b, c, lt, ts, x, params)
            lt["ts"] = ts
            lt["value"] = x
            f["mean"] = var[k]["mean"]
            f["std"] = math.sqrt(var_get(var, k))
            f["ewma"] = ewmean_get(ewm, k)
            f["ewstd"] = math.sqrt(_pymax(ewvar_get(ewv, k), 0.0))
            f["quantile"] = quantile_get(quant, k, q)
            f["baseline"] = b["level"]
            f["score"] = score
            f["drift"] = drifted
        out_mean[i] = f["mean"]
        out_std[i] = f["std"]
        out_ewma[i] = f["ewma"]
        out_ewstd[i] = f["ewstd"]
        out_quantile[i] = f["quantile"]
        out_baseline[i] = f["baseline"]
        out_score[i] = f["score"]
        out_drift[i] = f["drift"] and not redelivery
