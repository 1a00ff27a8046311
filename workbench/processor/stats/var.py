"""Running mean and variance per key: ``river.stats.Var`` (Welford) and the ``Mean`` it carries.

The arithmetic is River's, in River's order, so the results are equal to River's to the
last bit: ``Mean.update`` adds ``(w / n) * (x - mean)`` with ``w = 1.0``, and ``Var``
adds ``w * (x - mean_old) * (x - mean_new)`` to its sum of squares ``S``; the variance is
``S / (n - 1)`` once two values were seen, ``0.0`` before (``ddof = 1``).

>>> import numpy as np
>>> mean, var = var_batch(np.zeros(6, dtype=np.int64), np.array([3.0, 5, 4, 7, 10, 12]))
>>> mean.tolist()[-1], [round(v, 6) for v in var.tolist()]
(6.833333333333333, [0.0, 2.0, 1.0, 2.916667, 7.7, 12.566667])
"""

from __future__ import annotations

import numpy as np

from workbench.processor.kernels import kernel
from workbench.processor.stats.base import allocate, batch_keys

#: River's ``Var``: ``mean.n`` (a float, River's sum of weights), ``mean._mean`` and ``_S``.
VAR_FIELDS = {"n": np.float64(0.0), "mean": np.float64(0.0), "s": np.float64(0.0)}


@kernel
def var_update(var, k, x):
    """``Var.update(x)`` for key ``k`` (``var``: records of VAR_FIELDS)."""
    r = var[k]
    mean_old = r["mean"]
    r["n"] += 1.0
    mean_new = mean_old + (1.0 / r["n"]) * (x - mean_old)
    r["mean"] = mean_new
    r["s"] += 1.0 * (x - mean_old) * (x - mean_new)


@kernel
def var_get(var, k):
    """``Var.get()``: the sample variance (``ddof = 1``) of key ``k``; 0.0 under two values."""
    r = var[k]
    if r["n"] > 1.0:
        return r["s"] / (r["n"] - 1.0)
    return 0.0


@kernel
def _var_loop(var, keys, values, out_mean, out_var):
    for i in range(keys.size):
        k = keys[i]
        x = values[i]
        if x == x:
            var_update(var, k, x)
        if var[k]["n"] > 0.0:
            out_mean[i] = var[k]["mean"]
            out_var[i] = var_get(var, k)


def var_batch(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Running mean and variance of each key after each reading, from a fresh state.

    NaN values are nulls: skipped, the reading gets its key's current statistics (NaN
    before the key's first value, where River's ``Mean.get()`` says 0.0).
    """
    keys, values, n_keys = batch_keys(keys, values)
    out_mean = np.full(keys.size, np.nan)
    out_var = np.full(keys.size, np.nan)
    _var_loop(allocate(VAR_FIELDS, n_keys), keys, values, out_mean, out_var)
    return out_mean, out_var
