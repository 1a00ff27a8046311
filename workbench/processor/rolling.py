"""Per-reading sliding (rolling) means over event time, for a batch of readings at once.

For a reading of key ``k`` at event time ``t``, the rolling mean of width ``w`` is the mean
of the non-null values of key ``k`` received so far whose event time lies in ``(t - w, t]``,
the reading itself included; NaN when there is no such value. Out-of-order readings are
placed by event time: a late reading gets the mean of *its own* window, and readings
arriving after it include it when it falls in theirs. A reading ``history_ms`` or more
behind its key's newest event time is too late for an exact mean and gets NaN for every
width (its value still enters the buffer when it can matter to later readings). These are
the semantics of the per-reading :class:`~workbench.processor.legacy.rolling.RollingMeans`,
which the parity tests hold this module to.

Each key has a buffer of ``(ts, value)`` pairs sorted by event time, kept for ``history_ms``
plus the largest width behind the key's newest reading. The buffers of all keys are
segments of one arena (an int64 and a float64 array), so there is no Python object per key:
a key has an offset, a length and a capacity. A full segment first drops the values that
can no longer matter, shifting the rest to its start; when fewer than a quarter can go,
it moves to the arena's free end, into a segment with room for half as many again as it
keeps. When the arena has no room left, it is
repacked (the holes left by moves closed) into a new one with room to spare. A reading in
event-time order costs O(1) amortised: per width, a running sum over the buffer's tail that
slides forward. An out-of-order reading costs a binary search and a sum over its window.

The running sums are compensated (Neumaier), and recomputed from the buffer whenever a
segment is shifted or moved, so a mean is the correctly rounded mean to within an ulp or
two however long the stream, where a plain running sum drifts.

>>> import numpy as np
>>> state = RollingState(widths_ms=(60_000, 300_000), history_ms=600_000)
>>> means = update(state, keys=np.array([0, 0, 0, 0]),
...                ts_ms=np.array([0, 120_000, 30_000, 130_000]),
...                values=np.array([1.0, 3.0, 2.0, np.nan]))
>>> means.tolist()  # the third is out of order: its window is (-30 s, 30 s]
[[1.0, 1.0], [3.0, 2.0], [1.5, 1.5], [3.0, 2.0]]
"""

from __future__ import annotations

import numpy as np

from workbench.processor.kernels import kernel

VERSION = 1
#: ``tmax`` of a key that has had no reading yet.
NO_TIME = np.iinfo(np.int64).min
#: The smallest segment a key's buffer gets, in values.
MIN_CAP = 8
#: The arena's size, in values, before it first grows.
MIN_ARENA = 256


class RollingState:
    """Per key (dense int ids): a sorted buffer of ``(ts, value)`` and a running sum per width.

    Parameters
    ----------
    widths_ms
        Window widths in milliseconds (positive); the output columns follow this order.
    history_ms
        How far (event-time ms) behind its key's newest reading an out-of-order reading may
        be and still get exact means.

    Attributes
    ----------
    offset, length, capacity
        Per key: where its segment starts in the arena, how many values it holds (sorted by
        event time), and how many it has room for.
    tmax
        Per key: the newest event time seen (:data:`NO_TIME` before any reading).
    lo, total, comp
        Per key and width: the first buffer index (from ``offset``) inside the window of
        ``tmax``, and the compensated sum ``total + comp`` of the buffer from there on.
    ts, values, top
        The arena: every key's event times and values, in its segment; ``top[0]`` is the
        first index past the last segment.
    """

    def __init__(self, widths_ms: tuple[int, ...], history_ms: int) -> None:
        widths = np.array(widths_ms, dtype=np.int64).reshape(-1)
        if widths.size == 0 or (widths <= 0).any() or history_ms < 0:
            raise ValueError(f"positive widths and history_ms >= 0 needed, got {widths_ms}")
        self.widths_ms = widths
        self.set_history(history_ms)
        self.n_keys = 0
        n_w = widths.size
        self.offset = np.zeros(0, np.int64)
        self.length = np.zeros(0, np.int64)
        self.capacity = np.zeros(0, np.int64)
        self.tmax = np.zeros(0, np.int64)
        self.lo = np.zeros((0, n_w), np.int64)
        self.total = np.zeros((0, n_w), np.float64)
        self.comp = np.zeros((0, n_w), np.float64)
        self.ts = np.zeros(MIN_ARENA, np.int64)
        self.values = np.zeros(MIN_ARENA, np.float64)
        self.top = np.zeros(1, np.int64)  # an array: the kernels move it

    def grow(self, n_keys: int) -> None:
        """Room for key ids below ``n_keys``; a new key has seen nothing (capacity doubles)."""
        if n_keys <= self.n_keys:
            return
        if n_keys > self.tmax.size:
            size = max(n_keys, 2 * self.tmax.size)
            extra = size - self.tmax.size
            n_w = self.widths_ms.size
            self.offset = np.concatenate([self.offset, np.zeros(extra, np.int64)])
            self.length = np.concatenate([self.length, np.zeros(extra, np.int64)])
            self.capacity = np.concatenate([self.capacity, np.zeros(extra, np.int64)])
            self.tmax = np.concatenate([self.tmax, np.full(extra, NO_TIME, np.int64)])
            self.lo = np.concatenate([self.lo, np.zeros((extra, n_w), np.int64)])
            self.total = np.concatenate([self.total, np.zeros((extra, n_w))])
            self.comp = np.concatenate([self.comp, np.zeros((extra, n_w))])
        self.n_keys = n_keys

    def keep(self, ids: np.ndarray) -> None:
        """Keep only the keys ``ids``, renumbered ``0..len(ids)-1`` in that order; the arena
        is repacked to hold just their buffers."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.n_keys):
            raise ValueError(f"key ids must lie in [0, {self.n_keys})")
        if np.unique(ids).size != ids.size:
            raise ValueError("key ids to keep must be distinct")
        self._repack(ids, extra=0)

    def set_history(self, history_ms: int) -> None:
        """How far behind its key's newest a reading may be for exact means (see the module
        docstring); buffers keep that plus the widest width."""
        if history_ms < 0:
            raise ValueError(f"history_ms >= 0 needed, got {history_ms}")
        self.history_ms = int(history_ms)
        self.keep_ms = self.history_ms + int(self.widths_ms.max())

    def arrays(self) -> dict[str, np.ndarray]:
        """The state as plain arrays (for ``np.savez``): settings, per-key scalars, and the
        buffers of all keys end to end without the values that can no longer matter."""
        k = self.n_keys
        stale = np.zeros(k, np.int64)
        _stale_counts(self.offset[:k], self.length[:k], self.tmax[:k], self.keep_ms, self.ts, stale)
        live = self.length[:k] - stale
        start = np.zeros(k, np.int64)
        np.cumsum(live[:-1], out=start[1:])
        ts = np.empty(int(live.sum()), np.int64)
        values = np.empty(ts.size, np.float64)
        _move(self.offset[:k] + stale, live, self.ts, self.values, start, ts, values)
        return {
            "version": np.array(VERSION),
            "widths_ms": self.widths_ms.copy(),
            "history_ms": np.array(self.history_ms, np.int64),
            "tmax": self.tmax[:k].copy(),
            "length": live,
            "lo": self.lo[:k] - stale[:, None],
            "total": self.total[:k].copy(),
            "comp": self.comp[:k].copy(),
            "ts": ts,
            "values": values,
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> RollingState:
        """Rebuild from :meth:`arrays`: the same means as the state they were taken from."""
        version = int(arrays["version"])
        if version != VERSION:
            raise ValueError(f"rolling state version {version}, this code reads {VERSION}")
        state = cls(tuple(arrays["widths_ms"].tolist()), int(arrays["history_ms"]))
        length = np.asarray(arrays["length"], np.int64)
        k, n_w = length.size, state.widths_ms.size
        shapes = [arrays[name].shape for name in ("lo", "total", "comp")]
        if arrays["tmax"].shape != (k,) or shapes != [(k, n_w)] * 3:
            raise ValueError("rolling state arrays of inconsistent shapes")
        if arrays["ts"].size != length.sum() or arrays["values"].size != length.sum():
            raise ValueError("rolling state buffers do not match their lengths")
        state.grow(k)
        state.tmax[:k] = arrays["tmax"]
        state.lo[:k] = arrays["lo"]
        state.total[:k] = arrays["total"]
        state.comp[:k] = arrays["comp"]
        state.length[:k] = length
        np.cumsum(length[:-1], out=state.offset[1:k])
        state.capacity[:k] = length
        state.ts = np.asarray(arrays["ts"], np.int64)
        state.values = np.asarray(arrays["values"], np.float64)
        state.top[0] = state.ts.size
        state._repack(np.arange(k), extra=0)
        return state

    def nbytes(self) -> int:
        """Memory held by the state's arrays, in bytes."""
        parts = (self.offset, self.length, self.capacity, self.tmax, self.lo, self.total,
                 self.comp, self.ts, self.values)  # fmt: skip
        return sum(a.nbytes for a in parts)

    def _repack(self, ids: np.ndarray, extra: int) -> None:
        """Keep keys ``ids`` (renumbered in that order) and put their buffers end to end in a
        new arena, without their stale values, each with room to grow by half; leave
        ``extra`` more values free."""
        off, length, tmax = self.offset[ids], self.length[ids], self.tmax[ids]
        stale = np.zeros(ids.size, np.int64)
        _stale_counts(off, length, tmax, self.keep_ms, self.ts, stale)
        live = length - stale
        cap = np.maximum(MIN_CAP, live + live // 2)
        start = np.zeros(ids.size, np.int64)
        np.cumsum(cap[:-1], out=start[1:])
        used = int(cap.sum())
        size = max(MIN_ARENA, used + max(extra, used // 4))
        ts, values = np.zeros(size, np.int64), np.zeros(size, np.float64)
        _move(off + stale, live, self.ts, self.values, start, ts, values)
        self.offset, self.length, self.capacity, self.tmax = start, live, cap, tmax
        self.lo = self.lo[ids] - stale[:, None]
        self.total, self.comp = self.total[ids], self.comp[ids]
        self.ts, self.values = ts, values
        self.top[0] = used
        self.n_keys = ids.size


def update(
    state: RollingState,
    keys: np.ndarray,
    ts_ms: np.ndarray,
    values: np.ndarray,
    isnull: np.ndarray | None = None,
) -> np.ndarray:
    """Add readings in arrival order; their rolling means, shape ``(n, len(widths))``.

    Parameters
    ----------
    state
        The keys' buffers; grown to hold the largest key id.
    keys, ts_ms, values
        Equal-length columns: dense key ids, event times (ms), values.
    isnull
        Readings without a value (their value is ignored); by default the NaN values. A
        NaN value counts as null either way.

    Returns
    -------
    numpy.ndarray
        float64, one row per reading and one column per width; NaN where the window holds
        no value or the reading is too late (``history_ms`` or more behind its key's
        newest) for an exact mean.
    """
    keys = np.ascontiguousarray(keys, dtype=np.int64)
    ts_ms = np.ascontiguousarray(ts_ms, dtype=np.int64)
    values = np.ascontiguousarray(values, dtype=np.float64)
    isnull = np.isnan(values) if isnull is None else np.ascontiguousarray(isnull, dtype=np.bool_)
    n = keys.size
    if not ts_ms.size == values.size == isnull.size == n:
        raise ValueError("keys, ts_ms, values and isnull must have equal lengths")
    out = np.empty((n, state.widths_ms.size), np.float64)
    if n == 0:
        return out
    if keys.min() < 0:
        raise ValueError("key ids must be >= 0")
    state.grow(int(keys.max()) + 1)
    need = np.zeros(1, np.int64)
    i = 0
    while True:
        i = _roll(
            keys, ts_ms, values, isnull, i, state.widths_ms, state.history_ms, state.keep_ms,
            state.offset, state.length, state.capacity, state.tmax, state.lo, state.total,
            state.comp, state.ts, state.values, state.top, need, out,
        )  # fmt: skip
        if i == n:
            return out
        # the arena is full: repack all keys, then go on from the reading that needs room
        state._repack(np.arange(state.n_keys), extra=int(need[0]))


# -- kernels -------------------------------------------------------------------------------


@kernel
def _roll(keys, ts_ms, values, isnull, start, widths, history_ms, keep_ms,
          off, length, cap, tmax, lo, total, comp, buf_ts, buf_vs, top, need, out):  # fmt: skip
    """Readings ``start..`` in arrival order; returns where it stopped (the arena was full
    at that reading, nothing of it done yet: ``need[0]`` values wanted) or ``keys.size``."""
    n_w = widths.size
    for i in range(start, keys.size):
        k = keys[i]
        t = ts_ms[i]
        v = values[i]
        null = isnull[i] or v != v
        tm = tmax[k]
        in_order = tm == NO_TIME or t >= tm
        store = not null and (in_order or t > tm - keep_ms)
        if store and length[k] == cap[k]:
            t_new = t if in_order else tm
            if not _make_room(k, t_new, keep_ms, off, length, cap, lo, total, comp,
                              buf_ts, buf_vs, top, need):  # fmt: skip
                return i
        o = off[k]
        n = length[k]
        if in_order:
            tmax[k] = t
            if store:
                buf_ts[o + n] = t
                buf_vs[o + n] = v
                n += 1
                length[k] = n
            for j in range(n_w):
                cut = t - widths[j]
                a = lo[k, j]
                s = total[k, j]
                c = comp[k, j]
                while a < n and buf_ts[o + a] <= cut:
                    s, c = _add(s, c, -buf_vs[o + a])
                    a += 1
                if store:
                    s, c = _add(s, c, v)
                if a == n:  # an empty window sums to exactly zero
                    s = 0.0
                    c = 0.0
                lo[k, j] = a
                total[k, j] = s
                comp[k, j] = c
                out[i, j] = (s + c) / (n - a) if n > a else np.nan
        else:
            if store:
                p = _bisect_right(buf_ts, o, o + n, t)
                for q in range(o + n, p, -1):
                    buf_ts[q] = buf_ts[q - 1]
                    buf_vs[q] = buf_vs[q - 1]
                buf_ts[p] = t
                buf_vs[p] = v
                n += 1
                length[k] = n
                for j in range(n_w):
                    if t > tm - widths[j]:
                        s, c = _add(total[k, j], comp[k, j], v)
                        total[k, j] = s
                        comp[k, j] = c
                    else:  # placed before the window of tmax
                        lo[k, j] += 1
            if t <= tm - history_ms:
                for j in range(n_w):
                    out[i, j] = np.nan
            else:
                hi = _bisect_right(buf_ts, o, o + n, t)
                for j in range(n_w):
                    a = _bisect_right(buf_ts, o, hi, t - widths[j])
                    out[i, j] = _sum(buf_vs, a, hi) / (hi - a) if hi > a else np.nan
    return keys.size


@kernel
def _make_room(k, t_new, keep_ms, off, length, cap, lo, total, comp, buf_ts, buf_vs, top, need):
    """Room for one more value in key ``k``'s full segment, its newest event time to become
    ``t_new``: drop the values that can no longer matter and shift the rest down when that
    frees a quarter of it, else move to a segment 1.5 times the values kept at the arena's
    end. False (nothing changed, ``need[0]`` set) when the arena has no room for that."""
    o = off[k]
    n = length[k]
    stale = _bisect_right(buf_ts, o, o + n, t_new - keep_ms) - o if n > 0 else 0
    live = n - stale
    if stale > 0 and 4 * stale >= cap[k]:
        dst = o
        new_cap = cap[k]
    else:
        new_cap = max(MIN_CAP, live + live // 2)
        dst = top[0]
        if dst + new_cap > buf_ts.size:
            need[0] = new_cap
            return False
        top[0] = dst + new_cap
    for q in range(live):  # dst <= o + stale, or past the segment: a forward copy is safe
        buf_ts[dst + q] = buf_ts[o + stale + q]
        buf_vs[dst + q] = buf_vs[o + stale + q]
    off[k] = dst
    cap[k] = new_cap
    length[k] = live
    for j in range(lo.shape[1]):
        a = max(lo[k, j] - stale, 0)
        lo[k, j] = a
        # start the running sum afresh: no error carried over from values that left
        s = 0.0
        c = 0.0
        for q in range(dst + a, dst + live):
            s, c = _add(s, c, buf_vs[q])
        total[k, j] = s
        comp[k, j] = c
    return True


@kernel
def _add(s, c, x):
    """Neumaier's compensated addition: ``s + c`` gains ``x``, ``c`` keeps what ``s`` lost."""
    t = s + x
    if abs(s) >= abs(x):
        c += (s - t) + x
    else:
        c += (x - t) + s
    return t, c


@kernel
def _sum(a, start, stop):
    """The compensated sum of ``a[start:stop]``."""
    s = 0.0
    c = 0.0
    for q in range(start, stop):
        s, c = _add(s, c, a[q])
    return s + c


@kernel
def _bisect_right(a, start, stop, x):
    """The first index in ``start..stop`` (``a`` sorted there) whose value exceeds ``x``."""
    while start < stop:
        mid = (start + stop) // 2
        if x < a[mid]:
            stop = mid
        else:
            start = mid + 1
    return start


@kernel
def _stale_counts(off, length, tmax, keep_ms, buf_ts, stale):
    """Per key: how many of its oldest values lie beyond ``keep_ms`` behind its ``tmax``."""
    for k in range(off.size):
        if length[k] > 0:
            o = off[k]
            stale[k] = _bisect_right(buf_ts, o, o + length[k], tmax[k] - keep_ms) - o


@kernel
def _move(src, count, src_ts, src_vs, dst, dst_ts, dst_vs):
    """Copy ``count[k]`` values of each segment from ``src[k]`` to ``dst[k]``."""
    for k in range(src.size):
        for q in range(count[k]):
            dst_ts[dst[k] + q] = src_ts[src[k] + q]
            dst_vs[dst[k] + q] = src_vs[src[k] + q]
