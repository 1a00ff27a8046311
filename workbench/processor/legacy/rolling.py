"""Per-reading sliding (rolling) means over event time, for the "raw vs processed" view.

For a reading of key ``(machine_id, sensor_type)`` at event time ``t``, the rolling mean
of width ``w`` is the mean of the non-null values of that key received so far whose event
time lies in ``(t - w, t]``, the reading itself included. It is ``None`` when there is no
such value. Out-of-order readings are placed by event time: a late reading gets the mean
of *its own* window, and readings arriving after it include it when it falls in their
window. (river's ``utils.TimeRolling`` instead folds an out-of-order event into the
current statistic, which is why the workbench keeps its own buffers.)

Readings in event-time order cost O(1) amortised: a running sum per width over the tail
of a sorted buffer. An out-of-order reading costs a binary search and a sum over its
windows. Values are kept for ``history_s`` plus the largest width behind the key's
maximum event time; a reading more than ``history_s`` behind that maximum is too late
for an exact mean and gets ``None`` for every width (its value still enters the buffer
when it can matter to later readings).

>>> rm = RollingMeans(widths_s=(60, 300))
>>> rm.update("m-1", "pressure", 0, 1.0)
{60: 1.0, 300: 1.0}
>>> rm.update("m-1", "pressure", 120_000, 3.0)
{60: 3.0, 300: 2.0}
>>> rm.update("m-1", "pressure", 30_000, 2.0)  # out of order: the window (-30 s, 30 s]
{60: 1.5, 300: 1.5}
>>> rm.update("m-1", "pressure", 130_000, None)  # a null is not averaged
{60: 3.0, 300: 2.0}
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any

#: Trim a key's buffer once this many values have fallen out of its history.
_TRIM_AT = 64


class _Series:
    """The buffer of one key: values sorted by event time, running sums over the tail."""

    __slots__ = ("lo", "tmax", "tot", "ts", "vs")

    def __init__(self, n_widths: int) -> None:
        self.ts: list[int] = []
        self.vs: list[float] = []
        self.tmax: int | None = None
        self.lo = [0] * n_widths  # first index with ts > tmax - width
        self.tot = [0.0] * n_widths  # sum of vs[lo:]


class RollingMeans:
    """Sliding means of several widths per (machine, sensor), by event time.

    Parameters
    ----------
    widths_s
        Window widths in seconds.
    history_s
        How far (event-time seconds) behind a key's newest reading an out-of-order
        reading may be and still get exact means.
    """

    def __init__(self, widths_s: tuple[int, ...] = (60, 300), history_s: float = 600.0) -> None:
        if not widths_s or any(w <= 0 for w in widths_s) or history_s < 0:
            raise ValueError(f"positive widths and history_s >= 0 needed, got {widths_s}")
        self.widths_s = tuple(widths_s)
        self.history_s = history_s
        self._widths = tuple(round(w * 1000) for w in widths_s)
        self._history_ms = round(history_s * 1000)
        self._keep_ms = self._history_ms + max(self._widths)
        self._series: dict[tuple[str, str], _Series] = {}

    def update(
        self, machine_id: str, sensor_type: str, ts_ms: int, value: float | None
    ) -> dict[int, float | None]:
        """Add one reading; its rolling mean per width (``None``: no value in the window)."""
        key = (machine_id, sensor_type)
        s = self._series.get(key)
        if s is None:
            s = self._series[key] = _Series(len(self._widths))
        if s.tmax is None or ts_ms >= s.tmax:
            return self._append(s, ts_ms, value)
        return self._insert(s, ts_ms, value)

    def _append(self, s: _Series, ts_ms: int, value: float | None) -> dict[int, float | None]:
        """A reading at or after the key's newest: slide each running sum forward."""
        s.tmax = ts_ms
        ts, vs, lo, tot = s.ts, s.vs, s.lo, s.tot
        if value is not None:
            ts.append(ts_ms)
            vs.append(value)
        n = len(ts)
        means: dict[int, float | None] = {}
        for j, w in enumerate(self._widths):
            cut, i, t = ts_ms - w, lo[j], tot[j]
            while i < n and ts[i] <= cut:
                t -= vs[i]
                i += 1
            if value is not None:
                t += value
            lo[j], tot[j] = i, t
            means[self.widths_s[j]] = t / (n - i) if n > i else None
        if ts and ts[0] <= ts_ms - self._keep_ms:
            self._trim(s)
        return means

    def _insert(self, s: _Series, ts_ms: int, value: float | None) -> dict[int, float | None]:
        """An out-of-order reading: place it by event time, mean over its own window."""
        assert s.tmax is not None
        ts, vs = s.ts, s.vs
        if value is not None and ts_ms > s.tmax - self._keep_ms:
            at = bisect_right(ts, ts_ms)
            ts.insert(at, ts_ms)
            vs.insert(at, value)
            for j, w in enumerate(self._widths):
                if ts_ms > s.tmax - w:
                    s.tot[j] += value
                else:
                    s.lo[j] += 1
        if ts_ms <= s.tmax - self._history_ms:
            return dict.fromkeys(self.widths_s)
        hi = bisect_right(ts, ts_ms)
        means: dict[int, float | None] = {}
        for w_s, w in zip(self.widths_s, self._widths, strict=True):
            lo = bisect_right(ts, ts_ms - w, 0, hi)
            means[w_s] = sum(vs[lo:hi]) / (hi - lo) if hi > lo else None
        return means

    def _trim(self, s: _Series) -> None:
        """Forget values beyond the history; resum the running sums (no float drift)."""
        assert s.tmax is not None
        k = bisect_right(s.ts, s.tmax - self._keep_ms)
        if k < _TRIM_AT:
            return
        del s.ts[:k], s.vs[:k]
        s.lo = [i - k for i in s.lo]
        s.tot = [sum(s.vs[i:]) for i in s.lo]

    def snapshot(self) -> dict[str, Any]:
        """Plain picklable (and JSON-able) data for :meth:`restore`."""
        return {
            "history_s": self.history_s,
            "series": [
                [m, st, s.tmax, list(s.ts), list(s.vs)] for (m, st), s in self._series.items()
            ],
        }

    @classmethod
    def restore(
        cls, widths_s: tuple[int, ...], state: dict[str, Any], history_s: float | None = None
    ) -> RollingMeans:
        """Rebuild from :meth:`snapshot` (``history_s`` defaults to the saved one)."""
        rm = cls(widths_s, state["history_s"] if history_s is None else history_s)
        for m, st, tmax, ts, vs in state["series"]:
            s = rm._series[(m, st)] = _Series(len(rm._widths))
            s.tmax, s.ts, s.vs = tmax, list(ts), list(vs)
            if tmax is not None:
                s.lo = [bisect_right(s.ts, tmax - w) for w in rm._widths]
                s.tot = [sum(s.vs[i:]) for i in s.lo]
        return rm
