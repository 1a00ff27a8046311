"""Exponentially weighted mean and variance per key: ``river.stats.EWMean`` and ``EWVar``.

River computes both in Rust (``RsEWMean``, ``RsEWVariance``); this is the same arithmetic
in the same order. The first value is taken as it is; after it, the mean moves to
``alpha * x + (1 - alpha) * mean``. The variance is the EW mean of ``x * x`` minus the
square of the EW mean, so it can come out a hair below zero: callers clip before a square
root, as the legacy statistics do.

>>> import numpy as np
>>> keys = np.zeros(4, dtype=np.int64)
>>> mean, var = ew_batch(keys, np.array([1.0, 3.0, 5.0, 4.0]), alpha=0.5)
>>> mean.tolist(), var.tolist()
([1.0, 2.0, 3.5, 3.75], [0.0, 1.0, 2.75, 1.4375])
"""

from __future__ import annotations

import numpy as np

from workbench.processor.kernels import kernel
from workbench.processor.stats.base import allocate, batch_keys

#: River's ``EWMean``: the mean, and whether a first value was seen.
EWMEAN_FIELDS = {"mean": np.float64(0.0), "started": np.bool_(False)}
#: River's ``EWVar``: the EW means of ``x`` and of ``x * x``, and whether they started.
EWVAR_FIELDS = {"mean": np.float64(0.0), "sq_mean": np.float64(0.0), "started": np.bool_(False)}


@kernel
def ewmean_update(ewm, k, x, alpha):
    """``EWMean(alpha).update(x)`` for key ``k`` (``ewm``: records of EWMEAN_FIELDS)."""
    r = ewm[k]
    if r["started"]:
        r["mean"] = alpha * x + (1.0 - alpha) * r["mean"]
    else:
        r["mean"] = x
        r["started"] = True


@kernel
def ewmean_get(ewm, k):
    """``EWMean.get()`` for key ``k`` (0.0 before its first value, as in River)."""
    return ewm[k]["mean"]


@kernel
def ewvar_update(ewv, k, x, alpha):
    """``EWVar(alpha).update(x)`` for key ``k`` (``ewv``: records of EWVAR_FIELDS)."""
    r = ewv[k]
    sq = x * x
    if r["started"]:
        r["mean"] = alpha * x + (1.0 - alpha) * r["mean"]
        r["sq_mean"] = alpha * sq + (1.0 - alpha) * r["sq_mean"]
    else:
        r["mean"] = x
        r["sq_mean"] = sq
        r["started"] = True


@kernel
def ewvar_get(ewv, k):
    """``EWVar.get()`` for key ``k``: ``E[x^2] - E[x]^2``, both exponentially weighted."""
    r = ewv[k]
    m = r["mean"]
    return r["sq_mean"] - m * m


@kernel
def _ew_loop(ewm, ewv, keys, values, alpha, out_mean, out_var):
    for i in range(keys.size):
        k = keys[i]
        x = values[i]
        if x == x:
            ewmean_update(ewm, k, x, alpha)
            ewvar_update(ewv, k, x, alpha)
        if ewm[k]["started"]:
            out_mean[i] = ewmean_get(ewm, k)
            out_var[i] = ewvar_get(ewv, k)


def ew_batch(
    keys: np.ndarray, values: np.ndarray, alpha: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """EW mean and EW variance of each key after each reading, from a fresh state.

    NaN values are nulls: skipped, the reading gets its key's current statistics (NaN
    before the key's first value).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError("alpha must be between 0 and 1")
    keys, values, n_keys = batch_keys(keys, values)
    ewm = allocate(EWMEAN_FIELDS, n_keys)
    ewv = allocate(EWVAR_FIELDS, n_keys)
    out_mean = np.full(keys.size, np.nan)
    out_var = np.full(keys.size, np.nan)
    _ew_loop(ewm, ewv, keys, values, float(alpha), out_mean, out_var)
    return out_mean, out_var
