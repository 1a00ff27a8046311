"""Page-Hinkley drift detection per key: ``river.drift.PageHinkley`` (two-sided).

River's update, in River's order: a detector that fired resets itself on its next value;
the running mean (River's ``stats.Mean``) takes the value; the cumulative deviations from
it, faded by ``alpha`` and offset by ``delta``, update, and their distance to their own
extreme is tested against ``threshold`` once ``min_instances`` values were seen.

>>> import numpy as np
>>> x = np.r_[np.zeros(40), np.full(10, 5.0)]
>>> drift = ph_batch(np.zeros(50, dtype=np.int64), x, min_instances=30, delta=0.005,
...                  threshold=20.0)
>>> np.flatnonzero(drift).tolist()  # the fifth value of the new level
[44]
"""

from __future__ import annotations

import numpy as np

from workbench.processor.kernels import kernel
from workbench.processor.stats.base import allocate, batch_keys

#: River's default forgetting factor (``1 - 0.0001``).
PH_ALPHA = 1 - 0.0001

#: River's ``PageHinkley``: the mean's ``n`` and value, the two cumulative sums, their
#: extremes (River starts ``_max_decrease`` at -1), and ``drift_detected``.
PH_FIELDS = {
    "n": np.float64(0.0),
    "mean": np.float64(0.0),
    "sum_increase": np.float64(0.0),
    "sum_decrease": np.float64(0.0),
    "min_increase": np.float64(np.inf),
    "max_decrease": np.float64(-1.0),
    "drift": np.bool_(False),
}


@kernel
def ph_reset(ph, k):
    """A fresh detector for key ``k`` (River's ``_reset``)."""
    r = ph[k]
    r["n"] = 0.0
    r["mean"] = 0.0
    r["sum_increase"] = 0.0
    r["sum_decrease"] = 0.0
    r["min_increase"] = np.inf
    r["max_decrease"] = -1.0
    r["drift"] = False


@kernel
def ph_update(ph, k, x, min_instances, delta, threshold, alpha):
    """``PageHinkley.update(x)`` for key ``k`` (``ph``: records of PH_FIELDS); returns
    ``drift_detected`` after it."""
    r = ph[k]
    if r["drift"]:
        ph_reset(ph, k)
    r["n"] += 1.0
    r["mean"] += (1.0 / r["n"]) * (x - r["mean"])
    dev = x - r["mean"]
    r["sum_increase"] = alpha * r["sum_increase"] + dev - delta
    r["sum_decrease"] = alpha * r["sum_decrease"] + dev + delta
    if r["sum_increase"] < r["min_increase"]:
        r["min_increase"] = r["sum_increase"]
    if r["sum_decrease"] > r["max_decrease"]:
        r["max_decrease"] = r["sum_decrease"]
    if r["n"] >= min_instances:
        test_increase = r["sum_increase"] - r["min_increase"]
        test_decrease = r["max_decrease"] - r["sum_decrease"]
        r["drift"] = test_increase > threshold or test_decrease > threshold
    return r["drift"]


@kernel
def _ph_loop(ph, keys, values, min_instances, delta, threshold, alpha, out):
    for i in range(keys.size):
        x = values[i]
        if x == x:
            out[i] = ph_update(ph, keys[i], x, min_instances, delta, threshold, alpha)


def ph_batch(
    keys: np.ndarray,
    values: np.ndarray,
    min_instances: int = 30,
    delta: float = 0.005,
    threshold: float = 50.0,
    alpha: float = PH_ALPHA,
) -> np.ndarray:
    """``drift_detected`` of each key's detector after each reading, from a fresh state.

    NaN values are nulls: skipped, and the reading says False.
    """
    keys, values, n_keys = batch_keys(keys, values)
    ph = allocate(PH_FIELDS, n_keys)
    out = np.zeros(keys.size, dtype=np.bool_)
    _ph_loop(ph, keys, values, min_instances, float(delta), float(threshold), float(alpha), out)
    return out
