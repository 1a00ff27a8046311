"""Event-time tumbling windows of one Kafka partition, as arrays: provisional, final, corrected.

The columnar counterpart of :class:`~workbench.processor.legacy.windows.PartitionWindows`,
whose docstring states the semantics (parity tests hold the two equal). All windows of a
partition, every run in it, live in one :class:`WindowState`; a poll batch goes in as
columns in arrival order (:func:`add`), and results come out as :class:`WindowRows`
(:func:`advance`, :func:`provisional`, :func:`close_run`).

In short: a reading at ``ts`` falls in ``[ts - ts % width, ... + width)`` of every width. A
window is *final* once its run's watermark reaches its end; :func:`advance` emits it once
with ``revision`` 0. A late reading whose window is final already is dropped (policy
``"drop"``, or past the correction horizon, or its window was closed by the end of its run)
or folded in (``"update"``), and the next :func:`advance` re-emits the window with
``revision + 1``. Nulls are counted, never averaged; a window of nulls only has NaN
statistics.

What differs from the reference:

- The watermark is kept elsewhere (:mod:`workbench.processor.watermark`, one per run of the
  partition). :func:`add` takes each reading's late flag and its run's watermark on arrival,
  :func:`advance` and :func:`provisional` the runs' watermarks now. Watermarks never move back.
- Keys are dense ids of (run, machine, sensor) series, and :func:`add` takes the key -> run
  map. Results are ordered by window end, width, then key id.
- :func:`close_run` is the reference's ``close_all`` for one run. A reading for a window
  that the end of its run closed is dropped whatever its late flag. (The reference also
  moved its watermark up to the run's :attr:`~WindowState.ended_ms`, so such readings were
  late there: raise the run's watermark likewise for the same late flags.)

Exactness. Final results (first emissions and corrections) are the reference's, bit for bit:
the mean is the exact sum of the values (``math.fsum``: Shewchuk's partials with CPython's
last rounding, in a kernel) over the count, the standard deviation the square root of the
exact sum of ``(v - mean) ** 2`` (libm's ``pow``, as CPython's) over ``n - 1``, and the
quantile interpolates the sorted values like numpy's default. Provisional results are kept
up to date as readings arrive, not recomputed: the mean comes from a compensated (Neumaier)
running sum, the standard deviation from compensated sums of the deviations from the
window's first value (plus what the reference's rounding of the mean adds to its squared
deviations), and min, max and quantile read off the window's values in order. So provisional
mean and stddev may differ from the final ones in the last bits (about ``n * 1e-16``
relative); the rest is exact.

Storage: windows are rows of one structured array (no Python object per window), chained
per (key, width). Their values live in one float64 arena, each window a run of it sized
after the key's previous window and moved to twice the size if it fills up; when the
arena's end is reached it is compacted into a new one half as large again as the live
values. A window's values are appended as they come and kept in order from the first: a
window that took some out of order has them sorted and merged in when it is next read (a
provisional or final result), at no more cost than an insertion each. A window is forgotten
at its final emission, under ``"update"`` once its correction horizon has passed; until
then its values wait, sorted, in a compressed cold segment (:mod:`~workbench.processor.cold`),
and come back into the arena only if a late reading corrects the window. So the arena holds
the open windows, and memory grows with the widths far more than with the horizon.

>>> cfg = WindowConfig(widths_s=(60,), allowed_lateness_s=10.0, late_policy="update")
>>> state = WindowState(cfg)
>>> state.grow(1)
>>> key_run = np.zeros(1, np.int64)  # one key, of run 0
>>> def fold(seconds, values, wm_before):
...     ts = np.array(seconds, np.int64) * 1000
...     x, wm = np.array(values, float), np.array(wm_before, np.int64)
...     return add(state, np.zeros(ts.size, np.int64), ts, x, np.isnan(x), ts < wm, wm, key_run)
>>> fold([0, 30, 20, 65, 75], [1.0, 3.0, np.nan, 10.0, 7.0],
...      [NONE, -10_000, 20_000, 20_000, 55_000]).tolist()
[False, False, False, False, False]
>>> rows = advance(state, np.array([65_000]))
>>> rows.start_ms.tolist(), rows.count.tolist(), rows.nulls.tolist(), rows.mean.tolist()
([0], [2], [1], [2.0])
>>> fold([50], [5.0], [65_000]).tolist()  # late, its window final: corrected
[False]
>>> rows = advance(state, np.array([65_000]))
>>> rows.count.tolist(), rows.late.tolist(), rows.mean.tolist(), rows.revision.tolist()
([3], [1], [3.0], [1])
>>> rows = provisional(state, np.array([65_000]))
>>> rows.start_ms.tolist(), rows.count.tolist(), rows.final.tolist(), rows.revision.tolist()
([60000], [2], [False], [-1])
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from workbench.errors import ConfigError
from workbench.processor.cold import ColdStore
from workbench.processor.kernels import kernel

__all__ = ["NONE", "WindowConfig", "WindowRows", "WindowState", "add", "advance", "close_run"]
__all__ += ["provisional", "window_count"]


@dataclass(frozen=True)
class WindowConfig:
    """How a partition's readings are windowed.

    Parameters
    ----------
    widths_s
        Tumbling window widths in seconds, aligned to the epoch.
    allowed_lateness_s
        Event-time seconds the watermark trails the partition's maximum event time.
    idle_timeout_s
        Wall-clock seconds without events after which a partition's watermark follows
        the wall clock; ``None`` never advances an idle partition.
    late_policy
        ``"drop"`` leaves final windows alone; ``"update"`` corrects and re-emits them.
    quantile
        The quantile reported per window (0.95 = p95).
    correction_horizon_s
        Event-time seconds after a window's end during which ``"update"`` corrects it.
    cold_segment_values
        Values per sealed cold segment (:mod:`~workbench.processor.cold`; None: its
        default). Not part of the results: a checkpoint restores under any.
    """

    widths_s: tuple[int, ...] = (60, 300)
    allowed_lateness_s: float = 10.0
    idle_timeout_s: float | None = 30.0
    late_policy: Literal["drop", "update"] = "update"
    quantile: float = 0.95
    correction_horizon_s: float = 600.0
    cold_segment_values: int | None = None

    def __post_init__(self) -> None:
        if not self.widths_s or any(w <= 0 for w in self.widths_s):
            raise ConfigError("widths_s", self.widths_s, "one or more positive widths")
        if len({round(w * 1000) for w in self.widths_s}) != len(self.widths_s):
            raise ConfigError("widths_s", self.widths_s, "distinct widths")
        if self.allowed_lateness_s < 0:
            raise ConfigError("allowed_lateness_s", self.allowed_lateness_s, "seconds >= 0")
        if self.idle_timeout_s is not None and self.idle_timeout_s <= 0:
            raise ConfigError("idle_timeout_s", self.idle_timeout_s, "seconds > 0, or None")
        if self.late_policy not in ("drop", "update"):
            raise ConfigError("late_policy", self.late_policy, "'drop' or 'update'")
        if not 0.0 <= self.quantile <= 1.0:
            raise ConfigError("quantile", self.quantile, "a number in [0, 1]")
        if self.correction_horizon_s < 0:
            raise ConfigError("correction_horizon_s", self.correction_horizon_s, "seconds >= 0")
        if self.cold_segment_values is not None and self.cold_segment_values < 1:
            raise ConfigError("cold_segment_values", self.cold_segment_values, "an integer >= 1")


#: "No watermark yet" (and "no run end yet").
NONE = np.iinfo(np.int64).min
_NEVER = np.iinfo(np.int64).max
VERSION = 2

#: One window of one key and width. ``next``/``prev`` chain the windows of a (key, width),
#: newest first (``next`` chains free slots too); ``offset``, ``length``, ``capacity`` place
#: its values in the arena; ``sum``..``dsq_c`` are the provisional running sums (value,
#: value - shift, (value - shift) ** 2, each with its Neumaier compensation).
WINDOW = np.dtype(
    [  # what add() touches first, together
        ("end", np.int64),
        ("next", np.int64),
        ("length", np.int64),
        ("capacity", np.int64),
        ("offset", np.int64),
        ("sorted", np.int64),  # how many of its first values are in order
        ("cold", np.int64),  # -1: its values are in the arena; else its cold segment
        ("shift", np.float64),  # its first value
        ("sum", np.float64),
        ("sum_c", np.float64),
        ("dsum", np.float64),
        ("dsum_c", np.float64),
        ("dsq", np.float64),
        ("dsq_c", np.float64),
        ("nulls", np.int64),
        ("late", np.int64),
        ("key", np.int64),  # -1: a free slot
        ("run", np.int64),
        ("width", np.int64),  # index into the configured widths
        ("prev", np.int64),
        ("revision", np.int64),  # of the last final emission; -1: none yet
        ("closed", np.bool_),  # emitted as final (or born final): only corrections now
        ("changed", np.bool_),  # open, changed since the last provisional()
        ("correction", np.bool_),  # closed, changed since its last final emission
    ],
    align=True,
)
#: The fields a checkpoint keeps, per window (the values go alongside, window after window).
_SAVED = ("key", "run", "width", "end", "nulls", "late", "revision", "length", "closed")
_SAVED += ("changed", "correction", "shift", "sum", "sum_c", "dsum", "dsum_c", "dsq", "dsq_c")
_SAVED += ("cold", "offset")  # (the offset of a cold one, in its segment)

# meta: the arena's and the slot table's counters, and what a stopped add() needs
TOP, FREE_HEAD, FREE_COUNT, NEED_SLOTS, NEED_VALUES, NEED_THAW = range(6)
# plan of one reading, per width: drop it, or open a new window, or this slot
DROP, NEW = -2, -1
MIN_CAPACITY = 8
MIN_SLOTS = 64
MIN_ARENA = 1024
#: Room for Shewchuk's partials: they never overlap, so at most one per bit of the double range.
PARTIALS = 2100


@dataclass(frozen=True)
class WindowRows:
    """Window results as equal-length columns; NaN statistics where the reference has None.

    ``final`` rows carry ``revision`` 0 on their first emission and +1 per correction;
    provisional ones carry -1.
    """

    key: np.ndarray  # int64 key id
    width_s: np.ndarray
    start_ms: np.ndarray
    end_ms: np.ndarray
    count: np.ndarray  # values that are not null
    nulls: np.ndarray
    late: np.ndarray  # late readings folded in, nulls included
    mean: np.ndarray
    min: np.ndarray
    max: np.ndarray
    stddev: np.ndarray  # sample (ddof=1); 0.0 for a single value
    quantile: np.ndarray
    final: np.ndarray  # bool
    revision: np.ndarray  # int32

    def __len__(self) -> int:
        return int(self.key.size)


class WindowState:
    """All windows of one Kafka partition, of every run in it.

    Parameters
    ----------
    config
        Widths, late policy, quantile and correction horizon (``allowed_lateness_s`` and
        ``idle_timeout_s`` belong to the watermark, kept elsewhere).

    Attributes
    ----------
    ended_ms
        Per run: windows ending here or before were closed by :func:`close_run`
        (:data:`NONE`: the run has not ended).
    """

    def __init__(self, config: WindowConfig) -> None:
        self.config = config
        self.widths_s = np.array(config.widths_s, np.int64)
        self.widths_ms = np.array([_ms(w) for w in config.widths_s], np.int64)
        self.update = config.late_policy == "update"
        self.horizon_ms = _ms(config.correction_horizon_s)
        self.n_keys = 0
        self._head = np.full((0, self.widths_ms.size), -1, np.int64)  # per key and width
        self._windows = np.zeros(0, WINDOW)
        self._arena = np.empty(MIN_ARENA)
        self._meta = np.zeros(6, np.int64)
        self._meta[FREE_HEAD] = self._meta[NEED_THAW] = -1
        #: the values of final windows until their horizon (none under "drop")
        self.cold = ColdStore(config.cold_segment_values)
        self._ended = np.zeros(0, np.int64)
        self._next_due = np.zeros(0, np.int64)  # per run: no advance() work below this mark
        self._plan = np.empty((2, self.widths_ms.size), np.int64)
        self._partials = np.empty(PARTIALS)
        self._grow_slots(MIN_SLOTS)

    @property
    def n_runs(self) -> int:
        return int(self._ended.size)

    @property
    def ended_ms(self) -> np.ndarray:
        return self._ended

    def grow(self, n_keys: int) -> None:
        """Make room for key ids below ``n_keys`` (new keys have no windows)."""
        if n_keys > self._head.shape[0]:
            head = np.full((max(n_keys, 2 * self._head.shape[0]), self.widths_ms.size), -1)
            head[: self.n_keys] = self._head[: self.n_keys]
            self._head = head
        self.n_keys = max(self.n_keys, n_keys)

    def keep(self, ids: np.ndarray, runs: np.ndarray | None = None) -> None:
        """Keep only the keys ``ids`` (renumbered 0..len(ids)-1 in that order) and their
        windows; with ``runs``, keep only these runs, renumbered the same way."""
        ids = np.asarray(ids, np.int64)
        key_map = np.full(self.n_keys, -1, np.int64)
        key_map[ids] = np.arange(ids.size)
        run_map = np.arange(self.n_runs, dtype=np.int64)
        if runs is not None:
            runs = np.asarray(runs, np.int64)
            run_map = np.full(self.n_runs, -1, np.int64)
            run_map[runs] = np.arange(runs.size)
        _renumber(self._windows, self._head, self._meta, key_map, run_map)
        head = np.full((max(ids.size, 1), self.widths_ms.size), -1, np.int64)
        head[: ids.size] = self._head[ids]
        self._head, self.n_keys = head, int(ids.size)
        if runs is not None:
            self._ended, self._next_due = self._ended[runs], self._next_due[runs]

    def arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays for a checkpoint: the live windows' fields, the values of those in
        the arena window after window, the runs' ends, the open cold segment (the sealed
        ones travel apart: :meth:`ColdStore.take_new`)."""
        self.collect()
        live = np.flatnonzero(self._windows["key"] >= 0)
        longest = int(self._windows["length"][live].max(initial=0))
        _sort_all(self._windows, self._arena, np.empty(2 * longest))
        w = self._windows[live]
        length = np.where(w["cold"] < 0, w["length"], 0)
        starts = np.cumsum(length) - length
        index = np.arange(int(length.sum())) + np.repeat(w["offset"] - starts, length)
        return {
            "version": np.array(VERSION),
            "widths_ms": self.widths_ms,
            "n_keys": np.array(self.n_keys),
            "ended_ms": self._ended.copy(),
            "values": self._arena[index],
            **{f"window_{name}": w[name].copy() for name in _SAVED},
            # where a hot window's values are in the arena is of no use in a checkpoint
            "window_offset": np.where(w["cold"] < 0, 0, w["offset"]),
            **{f"cold_{name}": value for name, value in self.cold.arrays().items()},
        }

    @classmethod
    def from_arrays(
        cls,
        arrays: dict[str, np.ndarray],
        config: WindowConfig,
        segments: Mapping[int, bytes] | None = None,
    ) -> WindowState:
        """Rebuild from :meth:`arrays` (under the same widths) and the sealed cold segments
        they name (``KeyError`` if one is missing)."""
        version = int(arrays["version"])
        if version != VERSION:
            raise ValueError(f"window state version {version}, this code reads {VERSION}")
        state = cls(config)
        if not np.array_equal(arrays["widths_ms"], state.widths_ms):
            saved = arrays["widths_ms"].tolist()
            raise ValueError(f"window widths {saved} ms, configured {state.widths_ms.tolist()}")
        cold = {name[5:]: value for name, value in arrays.items() if name.startswith("cold_")}
        state.cold = ColdStore.from_arrays(cold, segments or {}, config.cold_segment_values)
        state.grow(int(arrays["n_keys"]))
        state._grow_runs(arrays["ended_ms"].size)
        state._ended[:] = arrays["ended_ms"]
        n = arrays["window_key"].size
        state._grow_slots(n)
        slots = np.arange(n)
        w = state._windows
        for name in _SAVED:
            w[name][slots] = arrays[f"window_{name}"]
        hot = w["cold"][slots] < 0
        length = np.where(hot, w["length"][slots], 0)
        w["offset"][slots] = np.where(hot, np.cumsum(length) - length, w["offset"][slots])
        w["capacity"][slots] = length
        w["sorted"][slots] = w["length"][slots]
        total = int(length.sum())
        state._arena = np.empty(_pow2(max(MIN_ARENA, 2 * total)))
        state._arena[:total] = arrays["values"]
        state._meta[TOP] = total
        _link(w, state._head, state._meta, n)
        # advance() has work for a run once its watermark reaches an open window's end or a
        # closed window's horizon, and at once for a pending correction
        due = np.where(w["closed"][slots], w["end"][slots] + state.horizon_ms, w["end"][slots])
        due[w["correction"][slots]] = NONE
        np.minimum.at(state._next_due, w["run"][slots], due)
        return state

    # -- growth --------------------------------------------------------------------------

    def _grow_runs(self, n_runs: int) -> None:
        extra = n_runs - self.n_runs
        if extra > 0:
            self._ended = np.concatenate([self._ended, np.full(extra, NONE, np.int64)])
            self._next_due = np.concatenate([self._next_due, np.full(extra, _NEVER, np.int64)])

    def _grow_slots(self, needed: int) -> None:
        """At least ``needed`` free window slots: the table doubles, new slots join the free
        list."""
        if needed <= self._meta[FREE_COUNT]:
            return
        old = self._windows.size
        size = _pow2(max(MIN_SLOTS, 2 * old, old + needed))
        windows = np.zeros(size, WINDOW)
        windows[:old] = self._windows
        new = windows[old:]
        new["key"] = -1
        new["next"] = np.arange(old + 1, size + 1)
        new["next"][-1] = self._meta[FREE_HEAD]
        self._windows = windows
        self._meta[FREE_HEAD] = old
        self._meta[FREE_COUNT] += size - old

    def _make_room(self, slots: int, values: int) -> None:
        """Room for a stopped :func:`add` to go on: free slots, and ``values`` free at the
        arena's top. The arena is compacted into a new one half as large again as what the
        live windows hold (final ones trimmed to their length): each compaction copies the
        live values once, and comes after as many new values as half of them."""
        self._grow_slots(slots)
        if self._meta[TOP] + values > self._arena.size:
            w = self._windows
            final = (w["key"] >= 0) & (w["cold"] < 0) & w["closed"]
            w["capacity"][final] = w["length"][final]
            self._repack(values)

    def _hot_capacity(self) -> int:
        """What the windows with their values in the arena take of it."""
        w = self._windows
        return int(w["capacity"][(w["key"] >= 0) & (w["cold"] < 0)].sum())

    def _repack(self, values: int) -> None:
        """The arena compacted into a new one half as large again as what the windows in it
        take, plus ``values``."""
        arena = np.empty(max(MIN_ARENA, (3 * (self._hot_capacity() + values)) // 2))
        self._meta[TOP] = _compact(self._windows, self._arena, arena)
        self._arena = arena

    def _thaw(self, s: int) -> None:
        """Window ``s``'s values back from its cold segment into the arena (for a
        correction)."""
        w = self._windows[s : s + 1]  # a view: assignments go to the table
        n = int(w["length"][0])
        values = self.cold.values(int(w["cold"][0]), int(w["offset"][0]), n)
        self._make_room(0, n)
        top = int(self._meta[TOP])
        self._arena[top : top + n] = values
        self._meta[TOP] = top + n
        w["offset"], w["capacity"], w["sorted"], w["cold"] = top, n, n, -1

    def _freeze(self, slots: np.ndarray) -> None:
        """The values of the windows ``slots`` that are final and still correctable out of
        the arena, into the open cold segment."""
        w = self._windows
        slots = slots[(w["key"][slots] >= 0) & w["closed"][slots] & (w["cold"][slots] < 0)]
        if not slots.size:
            return
        n = int(w["length"][slots].sum())
        segments = self.cold.open_id
        start = self.cold.reserve(n)
        _freeze(w, self._arena, slots, self.cold.buffer, start, self.cold.open_id)
        self.cold.commit(n)  # (after the values are in: it may seal the segment)
        if self.cold.open_id != segments:  # one was sealed: any to drop?
            self.collect()
        # the arena is sized by its busiest moment (just before the widest windows end): once
        # they are out, compact it if most of it is free
        if self._arena.size > max(MIN_ARENA, 3 * self._hot_capacity()):
            self._repack(0)

    def collect(self) -> None:
        """Drop the sealed cold segments no window refers to any more."""
        w = self._windows
        self.cold.collect(np.unique(w["cold"][(w["key"] >= 0) & (w["cold"] >= 0)]))

    def _marks(self, run_wm: np.ndarray) -> np.ndarray:
        run_wm = np.asarray(run_wm, np.int64)
        if run_wm.size < self.n_runs:
            raise ValueError(f"{run_wm.size} watermarks for {self.n_runs} runs")
        self._grow_runs(run_wm.size)
        return run_wm[: self.n_runs]

    def _rows(self, slots: np.ndarray, final: bool) -> WindowRows:
        """Result rows of these windows, ordered by end, width, then key; a final emission
        counts as one (revision + 1, the window closed)."""
        w = self._windows
        slots = slots[np.lexsort((w["key"][slots], self.widths_ms[w["width"][slots]],
                                  w["end"][slots]))]  # fmt: skip
        n = slots.size
        ints = np.empty((6, n), np.int64)
        floats = np.empty((5, n))
        longest = int(w["length"][slots].max(initial=0))
        terms, scratch = np.empty(longest if final else 0), np.empty(2 * longest)
        _results(w, self._arena, slots, final, self.config.quantile, 2.0, self._partials,
                 terms, scratch, ints, floats)  # fmt: skip
        key, width, end, count, nulls, late = ints
        mean, lo, hi, sd, q = floats
        revision = w["revision"][slots].astype(np.int32) if final else np.full(n, -1, np.int32)
        start = end - self.widths_ms[width]
        return WindowRows(key, self.widths_s[width], start, end, count, nulls, late, mean, lo,
                          hi, sd, q, np.full(n, final), revision)  # fmt: skip


# -- the batch functions -------------------------------------------------------------------


def add(
    state: WindowState,
    keys: np.ndarray,
    ts_ms: np.ndarray,
    values: np.ndarray,
    isnull: np.ndarray,
    late: np.ndarray,
    wm_before: np.ndarray,
    key_run: np.ndarray,
) -> np.ndarray:
    """Fold a batch of readings in, in arrival order; True where a reading was left out of
    at least one of its windows (dropped).

    ``late[i]`` is ``ts_ms[i] < wm_before[i]``, ``wm_before[i]`` the watermark of the
    reading's run when it arrived (:data:`NONE`: none yet), ``key_run`` the run of each key
    id. ``values`` are ignored where ``isnull``.
    """
    keys = np.asarray(keys, np.int64)
    n = keys.size
    ts_ms, wm_before = np.asarray(ts_ms, np.int64), np.asarray(wm_before, np.int64)
    values = np.asarray(values, np.float64)
    isnull, late = np.asarray(isnull, np.bool_), np.asarray(late, np.bool_)
    if not all(a.size == n for a in (ts_ms, values, isnull, late, wm_before)):
        raise ValueError("add() takes equal-length columns")
    dropped = np.zeros(n, np.bool_)
    if not n:
        return dropped
    if keys.min() < 0 or keys.max() >= state.n_keys:
        raise ValueError(f"key ids must be in [0, {state.n_keys}): grow() first")
    runs = np.asarray(key_run, np.int64)[keys]
    if runs.min() < 0:
        raise ValueError("key_run holds negative run indexes")
    state._grow_runs(int(runs.max()) + 1)
    start = 0
    while start < n:
        start = _add(state._windows, state._head, state._arena, state._meta, state._plan,
                     state._ended, state._next_due, state.widths_ms, state.update,
                     state.horizon_ms, keys, runs, ts_ms, values, isnull, late, wm_before,
                     dropped, start)  # fmt: skip
        if start < n and state._meta[NEED_THAW] >= 0:
            state._thaw(int(state._meta[NEED_THAW]))
            state._meta[NEED_THAW] = -1
        elif start < n:
            state._make_room(int(state._meta[NEED_SLOTS]), int(state._meta[NEED_VALUES]))
    return dropped


def advance(state: WindowState, run_wm: np.ndarray) -> WindowRows:
    """The final results now due (windows that ended at or before their run's watermark
    ``run_wm[run]``, and corrections), then the windows past their horizon are forgotten."""
    wm = state._marks(run_wm)
    due = wm >= state._next_due
    if not due.any():
        return state._rows(np.zeros(0, np.int64), final=True)
    slots = np.empty(state._windows.size, np.int64)
    n = _due(state._windows, due, wm, slots)
    rows = state._rows(slots[:n], final=True)
    _evict(state._windows, state._head, state._meta, due, wm, state.update, state.horizon_ms,
           state._next_due)  # fmt: skip
    state._freeze(slots[:n])
    return rows


def provisional(state: WindowState, run_wm: np.ndarray) -> WindowRows:
    """The open windows changed since the last call and not yet behind their run's
    watermark, with ``final=False`` and revision -1."""
    wm = state._marks(run_wm)
    slots = np.empty(state._windows.size, np.int64)
    n = _changed(state._windows, wm, slots)
    return state._rows(slots[:n], final=False)


def close_run(state: WindowState, run: int) -> WindowRows:
    """The end of a run: every window of it that has not had its final result gets it now
    (pending corrections included), and the run's windows are forgotten. Readings that
    still arrive for a window ending at or before the run's :attr:`~WindowState.ended_ms`
    are dropped."""
    if run < 0:
        raise ValueError(f"run index {run}")
    state._grow_runs(run + 1)
    slots = np.empty(state._windows.size, np.int64)
    n = _of_run(state._windows, run, slots)
    rows = state._rows(slots[:n], final=True)
    last = _drop_run(state._windows, state._head, state._meta, run)
    state._ended[run] = max(state._ended[run], last)
    state._next_due[run] = _NEVER
    return rows


def window_count(state: WindowState, run: int | None = None) -> int:
    """Windows held in memory (open, or final and still correctable), of one run or all."""
    w = state._windows
    live = w["key"] >= 0
    return int(live.sum() if run is None else (live & (w["run"] == run)).sum())


# -- kernels -------------------------------------------------------------------------------


@kernel
def _add(win, head, arena, meta, plan, ended, next_due, widths, update, horizon, keys, runs,
         ts_ms, values, isnull, late, wm_before, dropped, start):  # fmt: skip
    """Readings ``start..`` in; stops (returns its index) before a reading that needs more
    slots or arena than there is, with the needs in ``meta``."""
    for i in range(start, keys.size):
        key, run, ts, wm, is_late = keys[i], runs[i], ts_ms[i], wm_before[i], late[i]
        # plan each width's window first, so that a reading is folded in whole or not at all
        slots_needed = 0
        values_needed = 0
        for wi in range(widths.size):
            s = head[key, wi]  # the key's newest window: most readings fall in it
            if s >= 0 and win[s]["end"] - widths[wi] <= ts < win[s]["end"]:
                end = win[s]["end"]
            else:
                end = ts - ts % widths[wi] + widths[wi]
                s = NEW
            plan[1, wi] = end
            final = is_late and end <= wm
            if end <= ended[run] or (final and (not update or end + horizon <= wm)):
                plan[0, wi] = DROP
                continue
            if s == NEW:
                s = _find(win, head, key, wi, end)
            plan[0, wi] = s
            if s >= 0 and win[s]["cold"] >= 0:  # a correction: its values back first
                meta[NEED_THAW] = s
                return i
            if s == NEW:
                slots_needed += 1
                values_needed += _first_capacity(win, head[key, wi])
            elif not isnull[i] and win[s]["length"] == win[s]["capacity"]:
                values_needed += max(MIN_CAPACITY, 2 * win[s]["capacity"])
        if slots_needed > meta[FREE_COUNT] or meta[TOP] + values_needed > arena.size:
            meta[NEED_SLOTS] = slots_needed
            meta[NEED_VALUES] = values_needed
            return i
        for wi in range(widths.size):
            s, end = plan[0, wi], plan[1, wi]
            if s == DROP:
                dropped[i] = True
                continue
            final = is_late and end <= wm  # its window is final already: a correction
            if s == NEW:
                capacity = _first_capacity(win, head[key, wi])
                s = _new_window(win, head, meta, key, run, wi, end, final, capacity)
                if not final:
                    next_due[run] = min(next_due[run], end)
            w = win[s]
            if not final:
                w["changed"] = True
            elif w["closed"]:  # (an open one, final but not emitted yet, just takes it in)
                w["correction"] = True
                next_due[run] = NONE
            if isnull[i]:
                w["nulls"] += 1
            else:
                _append(win, arena, meta, s, values[i])
            if is_late:
                w["late"] += 1
    return keys.size


@kernel
def _find(win, head, key, wi, end):
    s = head[key, wi]
    while s >= 0 and win[s]["end"] != end:
        s = win[s]["next"]
    return s  # -1 (NEW) when the key has no such window


@kernel
def _first_capacity(win, previous):
    """Room for a new window's values: what the key's previous window of the width took,
    and a quarter more (so that a steady key moves none), or a little."""
    if previous < 0:
        return MIN_CAPACITY
    n = win[previous]["length"]
    return max(MIN_CAPACITY, (n + n // 4 + 8) // 8 * 8)


@kernel
def _new_window(win, head, meta, key, run, wi, end, closed, capacity):
    s = meta[FREE_HEAD]
    w = win[s]
    meta[FREE_HEAD] = w["next"]
    meta[FREE_COUNT] -= 1
    w["key"], w["run"], w["width"], w["end"] = key, run, wi, end
    w["nulls"], w["late"], w["revision"] = 0, 0, -1
    w["offset"], w["length"], w["capacity"], w["sorted"] = meta[TOP], 0, capacity, 0
    w["cold"] = -1
    meta[TOP] += capacity
    w["closed"], w["changed"], w["correction"] = closed, False, False
    w["shift"], w["sum"], w["sum_c"] = 0.0, 0.0, 0.0
    w["dsum"], w["dsum_c"], w["dsq"], w["dsq_c"] = 0.0, 0.0, 0.0, 0.0
    first = head[key, wi]
    w["next"], w["prev"] = first, -1
    if first >= 0:
        win[first]["prev"] = s
    head[key, wi] = s
    return s


@kernel
def _free(win, head, meta, s):
    w = win[s]
    before, after = w["prev"], w["next"]
    if before >= 0:
        win[before]["next"] = after
    else:
        head[w["key"], w["width"]] = after
    if after >= 0:
        win[after]["prev"] = before
    w["key"] = -1
    w["next"] = meta[FREE_HEAD]
    meta[FREE_HEAD] = s
    meta[FREE_COUNT] += 1


@kernel
def _append(win, arena, meta, s, x):
    """Value ``x`` at the end of window ``s``'s values (in order until a smaller one comes:
    :func:`_sort` puts them in order when they are read), and into its provisional sums."""
    w = win[s]
    n, off = w["length"], w["offset"]
    if n == w["capacity"]:  # full: move to the arena's top, twice the size
        top = meta[TOP]
        for j in range(n):
            arena[top + j] = arena[off + j]
        meta[TOP] = top + max(MIN_CAPACITY, 2 * n)
        w["offset"], w["capacity"] = top, max(MIN_CAPACITY, 2 * n)
        off = top
    arena[off + n] = x
    w["length"] = n + 1
    if w["sorted"] == n and (n == 0 or x >= arena[off + n - 1]):
        w["sorted"] = n + 1
    if n == 0:
        w["shift"] = x
    d = x - w["shift"]
    w["sum"], w["sum_c"] = _neumaier(w["sum"], w["sum_c"], x)
    w["dsum"], w["dsum_c"] = _neumaier(w["dsum"], w["dsum_c"], d)
    w["dsq"], w["dsq_c"] = _neumaier(w["dsq"], w["dsq_c"], d * d)


@kernel
def _sort(win, arena, s, scratch):
    """Window ``s``'s values in order, for reading: those after the first out of order are
    sorted and merged into those before, stably (equal values keep their arrival order, as
    the reference's ``sorted`` has it: it shows in the sign of a zero). Values taken since
    the last read cost a sort of themselves and a merge: no more than an insertion each."""
    w = win[s]
    off, n, p = w["offset"], w["length"], w["sorted"]
    k = n - p
    if k == 0:
        return
    for j in range(k):
        scratch[j] = arena[off + p + j]
    _stable_sort(scratch, k, scratch[k:])
    i, j = p - 1, k - 1
    out = off + n - 1
    while j >= 0:  # from the top down: the largest of either, the later one on a tie
        if i >= 0 and arena[off + i] > scratch[j]:
            arena[out] = arena[off + i]
            i -= 1
        else:
            arena[out] = scratch[j]
            j -= 1
        out -= 1
    w["sorted"] = n


@kernel
def _sort_all(win, arena, scratch):
    for s in range(win.size):
        if win[s]["key"] >= 0 and win[s]["cold"] < 0:
            _sort(win, arena, s, scratch)


@kernel
def _stable_sort(a, n, tmp):
    """Sort ``a[:n]`` keeping equal values in their order: insertion sorts of runs of 32,
    then merges of runs (through ``tmp``, as long)."""
    run = 32
    for lo in range(0, n, run):
        for i in range(lo + 1, min(lo + run, n)):
            x = a[i]
            j = i
            while j > lo and x < a[j - 1]:
                a[j] = a[j - 1]
                j -= 1
            a[j] = x
    in_tmp = False
    width = run
    while width < n:
        src, dst = (tmp, a) if in_tmp else (a, tmp)
        for lo in range(0, n, 2 * width):
            mid, hi = min(lo + width, n), min(lo + 2 * width, n)
            i, j = lo, mid
            for o in range(lo, hi):
                if i < mid and (j >= hi or src[i] <= src[j]):
                    dst[o] = src[i]
                    i += 1
                else:
                    dst[o] = src[j]
                    j += 1
        in_tmp = not in_tmp
        width *= 2
    if in_tmp:
        for i in range(n):
            a[i] = tmp[i]


@kernel
def _neumaier(total, compensation, x):
    """``total + x``, the rounding error kept in ``compensation``."""
    t = total + x
    if abs(total) >= abs(x):
        compensation += (total - t) + x
    else:
        compensation += (x - t) + total
    return t, compensation


@kernel
def _fsum(x, start, n, partials):
    """``math.fsum(x[start:start + n])``, bit for bit: Shewchuk's exact partials, then
    CPython's half-even rounding across them (``math_fsum`` in Modules/mathmodule.c). Where
    CPython raises (intermediate overflow, inf - inf) this returns inf or nan."""
    m = 0  # partials in use, increasing magnitude, never overlapping
    special = 0.0
    for t in range(start, start + n):
        v = x[t]
        i = 0
        for j in range(m):
            y = partials[j]
            if abs(v) < abs(y):
                v, y = y, v
            hi = v + y
            lo = y - (hi - v)
            if lo != 0.0:
                partials[i] = lo
                i += 1
            v = hi
        m = i
        if v != 0.0:
            if not math.isfinite(v):
                special += v
                m = 0
            else:
                partials[m] = v
                m += 1
    if special != 0.0:
        return special
    hi = 0.0
    lo = 0.0
    if m > 0:
        m -= 1
        hi = partials[m]
        while m > 0:  # add from the top while the sum stays exact
            v = hi
            m -= 1
            y = partials[m]
            hi = v + y
            lo = y - (hi - v)
            if lo != 0.0:
                break
        if m > 0 and ((lo < 0.0 and partials[m - 1] < 0.0) or (lo > 0.0 and partials[m - 1] > 0.0)):
            y = lo * 2.0  # the partials below make the half-way case round away
            v = hi + y
            if y == v - hi:
                hi = v
    return hi


@kernel
def _quantile(arena, off, n, q):
    """Linear interpolation between the sorted values, as numpy's default (and the
    reference) computes it."""
    h = (n - 1) * q
    lo = int(h)
    value = arena[off + lo]
    if lo + 1 < n:
        value += (arena[off + lo + 1] - value) * (h - lo)
    return value


@kernel
def _results(win, arena, slots, final, q, power, partials, terms, scratch, ints, floats):
    """Statistics of the windows ``slots`` into ``ints`` (key, width, end, count, nulls,
    late) and ``floats`` (mean, min, max, stddev, quantile); a final one is emitted.

    ``power`` is 2.0, passed at run time: the reference squares with CPython's ``x ** 2.0``,
    libm's ``pow``, which differs from ``x * x`` in the last bit now and then, and a
    constant exponent would let the compiler turn ``pow`` into ``x * x``."""
    for r in range(slots.size):
        _sort(win, arena, slots[r], scratch)
        w = win[slots[r]]
        n, off = w["length"], w["offset"]
        ints[0, r], ints[1, r], ints[2, r] = w["key"], w["width"], w["end"]
        ints[3, r], ints[4, r], ints[5, r] = n, w["nulls"], w["late"]
        mean = sd = np.nan
        if n and final:
            mean = _fsum(arena, off, n, partials) / n
            sd = 0.0
            if n > 1:
                for j in range(n):
                    terms[j] = math.pow(arena[off + j] - mean, power)
                sd = math.sqrt(_fsum(terms, 0, n, partials) / (n - 1))
        elif n:
            mean = (w["sum"] + w["sum_c"]) / n
            sd = 0.0
            if n > 1:
                dsum = w["dsum"] + w["dsum_c"]
                dev = dsum / n  # exact mean - shift
                m2 = (w["dsq"] + w["dsq_c"]) - dsum * dev
                # the final squares the deviations from the *rounded* mean: add what that
                # rounding adds, n * (exact mean - mean) ** 2 (seen when spread << mean)
                off_by = (w["shift"] - mean) + dev
                sd = math.sqrt(max(m2 + n * off_by * off_by, 0.0) / (n - 1))
        floats[0, r], floats[3, r] = mean, sd
        if n:
            floats[1, r], floats[2, r] = arena[off], arena[off + n - 1]
            floats[4, r] = _quantile(arena, off, n, q)
        else:
            floats[1, r] = floats[2, r] = floats[4, r] = np.nan
        if final:
            w["revision"] += 1
            w["closed"] = True
            w["changed"] = False
            w["correction"] = False


@kernel
def _due(win, due, wm, out):
    """Windows of the runs ``due`` to emit as final: open ones behind the watermark, and
    corrections."""
    n = 0
    for s in range(win.size):
        w = win[s]
        if w["key"] < 0 or not due[w["run"]]:
            continue
        if w["correction"] or (not w["closed"] and w["end"] <= wm[w["run"]]):
            out[n] = s
            n += 1
    return n


@kernel
def _evict(win, head, meta, due, wm, update, horizon, next_due):
    """After an emission: forget the final windows past their horizon (all of them under
    "drop"), and work out again from when each run ``due`` has work."""
    for r in range(due.size):
        if due[r]:
            next_due[r] = np.iinfo(np.int64).max
    for s in range(win.size):
        w = win[s]
        if w["key"] < 0 or not due[w["run"]]:
            continue
        run = w["run"]
        if w["closed"]:
            if not update or w["end"] + horizon <= wm[run]:
                _free(win, head, meta, s)
            else:
                next_due[run] = min(next_due[run], w["end"] + horizon)
        else:
            next_due[run] = min(next_due[run], w["end"])


@kernel
def _changed(win, wm, out):
    """Open windows changed since the last call and not behind their run's watermark; every
    window's change is taken."""
    n = 0
    for s in range(win.size):
        w = win[s]
        if w["key"] >= 0 and w["changed"]:
            w["changed"] = False
            if w["end"] > wm[w["run"]]:
                out[n] = s
                n += 1
    return n


@kernel
def _of_run(win, run, out):
    """Windows of ``run`` without their final result: open ones, and corrections."""
    n = 0
    for s in range(win.size):
        w = win[s]
        if w["key"] >= 0 and w["run"] == run and (not w["closed"] or w["correction"]):
            out[n] = s
            n += 1
    return n


@kernel
def _drop_run(win, head, meta, run):
    """Forget the windows of ``run``; the latest end among them."""
    last = np.iinfo(np.int64).min
    for s in range(win.size):
        w = win[s]
        if w["key"] >= 0 and w["run"] == run:
            last = max(last, w["end"])
            _free(win, head, meta, s)
    return last


@kernel
def _renumber(win, head, meta, key_map, run_map):
    for s in range(win.size):
        w = win[s]
        if w["key"] < 0:
            continue
        key, run = key_map[w["key"]], run_map[w["run"]]
        if key < 0 or run < 0:
            _free(win, head, meta, s)
        else:
            w["key"], w["run"] = key, run


@kernel
def _compact(win, old, new):
    """Every live window's values from arena ``old`` to the start of ``new``, one after
    another; the new top."""
    top = 0
    for s in range(win.size):
        w = win[s]
        if w["key"] >= 0 and w["cold"] < 0:
            off = w["offset"]
            for j in range(w["length"]):
                new[top + j] = old[off + j]
            w["offset"] = top
            top += w["capacity"]
    return top


@kernel
def _freeze(win, arena, slots, buffer, start, segment):
    """The (sorted) values of the windows ``slots`` to ``buffer`` from ``start`` on, one after
    another; each window now refers to them there, in cold segment ``segment``."""
    at = start
    for s in slots:
        w = win[s]
        off, n = w["offset"], w["length"]
        for j in range(n):
            buffer[at + j] = arena[off + j]
        w["offset"], w["capacity"], w["cold"] = at, 0, segment
        at += n


@kernel
def _link(win, head, meta, n):
    """Chain slots ``0..n-1`` to their (key, width); the slots from ``n`` on are free."""
    for s in range(n):
        w = win[s]
        first = head[w["key"], w["width"]]
        w["next"], w["prev"] = first, -1
        if first >= 0:
            win[first]["prev"] = s
        head[w["key"], w["width"]] = s
    meta[FREE_HEAD] = n if n < win.size else -1
    meta[FREE_COUNT] = win.size - n
    for s in range(n, win.size):
        win[s]["key"] = -1
        win[s]["next"] = s + 1 if s + 1 < win.size else -1


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()
