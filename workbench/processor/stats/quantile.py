"""Running quantile per key: ``river.stats.Quantile``, the P² estimator (Jain & Chlamtac).

River 0.26 computes it in Rust (``rust_src/quantile.rs``, ``RsQuantile``); this is that
code's algorithm step for step, so the estimates are equal to River's to the last bit:

* the first five values are kept as they come; until the sixth, the quantile is read off
  them sorted (a stable sort), at index ``trunc(min(max(n - 1, 0), n * q))``;
* the sixth value first sorts the five heights with River's nine-comparator network, then
  every value finds its cell, moves the marker positions above it, advances the desired
  positions, and adjusts the three middle markers (parabolic, else linear, prediction);
* the estimate is the middle marker's height.

>>> import numpy as np
>>> x = np.array([9.0, 7, 3, 2, 6, 1, 8, 5, 4])
>>> quantile_batch(np.zeros(9, dtype=np.int64), x, q=0.5).tolist()
[9.0, 9.0, 7.0, 7.0, 6.0, 6.0, 6.0, 6.0, 5.0]
"""

from __future__ import annotations

import numpy as np

from workbench.processor.kernels import kernel
from workbench.processor.stats.base import Fields, allocate, batch_keys


def quantile_fields(q: float) -> Fields:
    """River's ``Quantile(q)`` state: five marker heights, their positions, the desired
    positions, how many of the first five values were taken, and whether they are sorted.
    """
    return {
        "heights": np.zeros(5),
        "position": np.array([1.0, 2.0, 3.0, 4.0, 5.0]),
        "marker": np.array([1.0, 1.0 + 2.0 * q, 1.0 + 4.0 * q, 3.0 + 2.0 * q, 5.0]),
        "count": np.int64(0),
        "ready": np.bool_(False),
    }


def quantile_increments(q: float) -> np.ndarray:
    """How far each desired marker position moves per value (the same for every key)."""
    return np.array([0.0, q / 2.0, q, (1.0 + q) / 2.0, 1.0])


@kernel
def _cswap(h, a, b):
    if h[b] < h[a]:
        h[a], h[b] = h[b], h[a]


@kernel
def _find_cell(h, x):
    """The cell ``x`` falls in (1..4), widening the outer markers to take it in."""
    if x < h[0]:
        h[0] = x
        return 1
    for i in range(1, 5):
        if h[i - 1] <= x and x < h[i]:
            return i
    if h[4] < x:
        h[4] = x
    return 4


@kernel
def _adjust(h, pos, marker):
    """Move each middle marker one step toward its desired position when it lags."""
    for i in range(1, 4):
        n = pos[i]
        qi = h[i]
        d = marker[i] - n
        if (d >= 1.0 and pos[i + 1] - n > 1.0) or (d <= -1.0 and pos[i - 1] - n < -1.0):
            d = 1.0 if d >= 0.0 else -1.0
            qp1 = h[i + 1]
            qm1 = h[i - 1]
            np1 = pos[i + 1]
            nm1 = pos[i - 1]
            outer = d / (np1 - nm1)
            inner_left = (n - nm1 + d) * (qp1 - qi) / (np1 - n)
            inner_right = (np1 - n - d) * (qi - qm1) / (n - nm1)
            qn = qi + outer * (inner_left + inner_right)
            if qm1 < qn and qn < qp1:
                h[i] = qn
            else:  # the parabola overshoots a neighbour: step linearly toward it
                j = i + 1 if d > 0.0 else i - 1
                h[i] = qi + d * (h[j] - qi) / (pos[j] - n)
            pos[i] = n + d


@kernel
def quantile_update(quant, k, x, increments):
    """``Quantile.update(x)`` for key ``k`` (``quant``: records of :func:`quantile_fields`;
    ``increments`` from :func:`quantile_increments`)."""
    r = quant[k]
    h = r["heights"]
    if r["count"] < 5:
        h[r["count"]] = x
        r["count"] += 1
        return
    if not r["ready"]:
        # River's sorting network, comparator for comparator (ties keep their order)
        _cswap(h, 0, 1)
        _cswap(h, 3, 4)
        _cswap(h, 0, 2)
        _cswap(h, 1, 2)
        _cswap(h, 0, 3)
        _cswap(h, 2, 3)
        _cswap(h, 1, 4)
        _cswap(h, 1, 2)
        _cswap(h, 3, 4)
        r["ready"] = True
    pos = r["position"]
    marker = r["marker"]
    cell = _find_cell(h, x)
    for i in range(cell, 5):
        pos[i] += 1.0
    for j in range(5):
        marker[j] += increments[j]
    _adjust(h, pos, marker)


@kernel
def quantile_get(quant, k, q):
    """``Quantile.get()`` for key ``k``; NaN before its first value (River: None)."""
    r = quant[k]
    h = r["heights"]
    if r["ready"]:
        return h[2]
    n = r["count"]
    if n == 0:
        return np.nan
    length = float(n)
    want = int(min(max(length - 1.0, 0.0), length * q))
    # the value at index ``want`` of the first n heights after a stable sort
    for i in range(n):
        rank = 0
        for j in range(n):
            if h[j] < h[i] or (j < i and h[j] == h[i]):
                rank += 1
        if rank == want:
            return h[i]
    return np.nan


@kernel
def _quantile_loop(quant, keys, values, q, increments, out):
    for i in range(keys.size):
        k = keys[i]
        x = values[i]
        if x == x:
            quantile_update(quant, k, x, increments)
        out[i] = quantile_get(quant, k, q)


def quantile_batch(keys: np.ndarray, values: np.ndarray, q: float = 0.5) -> np.ndarray:
    """The running ``q`` quantile of each key after each reading, from a fresh state.

    NaN values are nulls: skipped, the reading gets its key's current estimate (NaN
    before the key's first value).
    """
    if not 0.0 < q < 1.0:
        raise ValueError("q must be between 0 and 1 (exclusive)")
    keys, values, n_keys = batch_keys(keys, values)
    quant = allocate(quantile_fields(q), n_keys)
    out = np.full(keys.size, np.nan)
    _quantile_loop(quant, keys, values, float(q), quantile_increments(q), out)
    return out
