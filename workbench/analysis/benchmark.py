"""Scoring of published anomaly-detection benchmarks, as their authors score them, and the
simple baseline detector that every result should be compared with.

Pure computation on numpy arrays: timestamps are int64 epoch milliseconds, sorted; a
detector's output is either one boolean per row or a list of detection times. Nothing here
reads files or talks to a server.

**NAB** (Numenta Anomaly Benchmark; numenta/NAB ``nab/sweeper.py``, ``nab/util.py``,
``nab/runner.py``, ``config/profiles.json``). Each labelled anomaly has a window of rows.

* The first rows of a file are a probationary period in which a detector learns:
  ``min(floor(0.15 * rows), 0.15 * 5000)`` rows (:func:`probationary_length`). Detections
  there are ignored, and a window all inside it is not scored.
* A detection inside a window is a true positive; only the best (earliest) one of a window
  counts, and later ones in the same window count nothing. Its worth is
  ``tp * S(p) / S(-1)``, where ``p = -(end - row + 1) / width`` (rows; -1 at the window's
  first row) and ``S`` is NAB's scaled sigmoid (:func:`scaled_sigmoid`): a detection at
  the first row is worth exactly ``tp``, one at the last row ``tp * S(-1/width) / S(-1)``,
  a little more than 0 (NAB's ``+ 1`` means the window's end is never quite ``S(0) = 0``).
* A window without a true positive costs ``-fn``.
* A detection outside every window is a false positive costing ``fp * S(p)``, negative,
  with ``p = (row - end) / (width - 1)`` measured from the end of the window before it:
  just after a window it costs little, from ``p > 3`` (or with no window before it) the
  full ``-fp``.
* A file's score is normalised against the null detector (no detections: ``-fn`` per
  window) and the perfect one (``tp`` per window): ``100 * (raw - null) / (perfect -
  null)``. Over a corpus NAB sums raw, null and perfect over the files, then normalises
  (:func:`pool_nab_scores`), so 0 is "as good as doing nothing" and 100 is perfect.

**SKAB** (Skoltech Anomaly Benchmark; waico/SKAB). Outlier detection is scored per row
against the ``anomaly`` column (:func:`outlier_score`: precision, recall, F1, and the
false/missing alarm rates of SKAB's leaderboard). Changepoint detection is scored with the
three NAB profiles over a window that starts at each labelled ``changepoint`` and lasts
30 s (:func:`skab_changepoint_scores`, whose docstring says how this differs from SKAB's
own scorer).

**Baseline**: :func:`rolling_zscore` flags a reading more than ``k`` standard deviations
from the mean of the previous day of readings, and :func:`rolling_zscore_columns` ORs
that over the sensors of a file. A detector that cannot beat it has not learned much.

>>> import numpy as np
>>> ts = np.arange(100, dtype=np.int64) * 1000          # 100 rows, one a second
>>> windows = [(50_000, 59_000)]                         # rows 50..59
>>> nab_score(ts, windows, [50_000]).normalised          # detected at the window's start
100.0
>>> nab_score(ts, windows, []).normalised                # the null detector
0.0
>>> round(nab_score(ts, windows, [55_000]).raw, 4)       # half-way in: S(-0.5) / S(-1)
0.8598
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from workbench.errors import WorkbenchError

log = logging.getLogger(__name__)

__all__ = [
    "DAY_MS",
    "PROBATIONARY_PERCENT",
    "PROFILES",
    "SKAB_WINDOW_MS",
    "ColumnsZScore",
    "NabProfile",
    "NabScore",
    "OutlierScore",
    "ZScore",
    "debounce",
    "detections_to_flags",
    "nab_score",
    "nab_scores",
    "outlier_score",
    "pool_nab_scores",
    "pool_outlier_scores",
    "probationary_length",
    "rolling_zscore",
    "rolling_zscore_columns",
    "scaled_sigmoid",
    "skab_changepoint_detections",
    "skab_changepoint_scores",
    "skab_changepoint_windows",
]

DAY_MS = 86_400_000
PROBATIONARY_PERCENT = 0.15  # NAB's probationaryPercent
SKAB_WINDOW_MS = 30_000  # SKAB's leaderboard: "window size ... equal to 30 sec"

Detections = npt.ArrayLike  # bool per row, or detection times (int ms)


# --- NAB ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class NabProfile:
    """Weights of NAB's cost matrix ("application profile"): worth of a true positive, cost
    of a false positive and of a false negative (missed window). NAB never uses ``tn``;
    it is kept because NAB's ``profiles.json`` carries it."""

    tp: float
    fp: float
    fn: float
    tn: float = 1.0


# NAB config/profiles.json (there named standard, reward_low_FP_rate, reward_low_FN_rate).
PROFILES: Mapping[str, NabProfile] = MappingProxyType(
    {
        "standard": NabProfile(tp=1.0, fp=0.11, fn=1.0),
        "reward_low_FP": NabProfile(tp=1.0, fp=0.22, fn=1.0),
        "reward_low_FN": NabProfile(tp=1.0, fp=0.11, fn=2.0),
    }
)


@dataclass(frozen=True)
class NabScore:
    """One profile's NAB score of one file (or, pooled, of several).

    ``raw`` is the detector's score, ``null`` the score of a detector that detects nothing
    (``-fn`` per scored window) and ``perfect`` the score of one detection at the first row
    of every scored window (``tp`` per window). ``windows`` counts the scored windows,
    ``detected`` those with a true positive, ``false_positives`` the scored detections
    outside every window.

    A scored window is one with a row after the probationary period. NAB's ``runner``
    takes ``tp`` times *every* labelled window as perfect, even one inside the probationary
    period, which no detector can reach; counting only scored windows keeps 100 reachable
    and is the same whenever no window lies in the probationary period, as in NAB's corpus
    labels.
    """

    raw: float
    null: float
    perfect: float
    windows: int
    detected: int
    false_positives: int

    @property
    def normalised(self) -> float | None:
        """``100 * (raw - null) / (perfect - null)``: 0 for the null detector, 100 for the
        perfect one. None when there is no scored window (perfect and null are both 0, so
        the ratio is undefined: pool such a file with others, as NAB does)."""
        span = self.perfect - self.null
        if span == 0:
            return None
        return 100.0 * (self.raw - self.null) / span


def scaled_sigmoid(position: npt.ArrayLike) -> np.ndarray:
    """NAB's scaled sigmoid ``S(p) = 2 / (1 + exp(5 p)) - 1`` of a relative position, and
    -1 beyond ``p > 3`` (a false positive far behind any window).

    ``S(-1) = 0.98661`` (a window's left edge), ``S(0) = 0``, ``S(1) = -0.98661``.
    Computed as ``-tanh(2.5 p)``, the same function without overflow.

    >>> [round(float(v), 5) for v in scaled_sigmoid([-1.0, -0.5, 0.0, 1.0, 3.5])]
    [0.98661, 0.84828, 0.0, -0.98661, -1.0]
    """
    p = np.asarray(position, dtype=float)
    return np.where(p > 3.0, -1.0, 0.0 - np.tanh(2.5 * p))  # "0.0 -": 0.0, not -0.0, at p = 0


_MAX_TP = float(scaled_sigmoid(-1.0))


def probationary_length(n_rows: int, probationary_percent: float = PROBATIONARY_PERCENT) -> int:
    """Rows at the start of a file whose detections NAB ignores: the first row scored is
    ``min(floor(percent * n_rows), percent * 5000)`` (NAB ``util.getProbationPeriod``),
    rounded up as NAB's ``row >= limit`` test does.

    >>> probationary_length(100), probationary_length(10_000), probationary_length(7)
    (15, 750, 1)
    """
    if n_rows < 0 or not 0.0 <= probationary_percent < 1.0:
        raise WorkbenchError(
            f"probationary period of {probationary_percent} of {n_rows} rows is not valid: "
            "expected 0 <= percent < 1 and rows >= 0"
        )
    limit = min(math.floor(probationary_percent * n_rows), probationary_percent * 5000)
    return math.ceil(limit)


def _timestamps(timestamps: npt.ArrayLike) -> np.ndarray:
    ts = np.asarray(timestamps)
    if ts.ndim != 1:
        raise WorkbenchError(f"timestamps must be one-dimensional, not of shape {ts.shape}")
    if ts.size and not np.issubdtype(ts.dtype, np.integer):
        raise WorkbenchError(f"timestamps must be integer epoch milliseconds, not {ts.dtype}")
    ts = ts.astype(np.int64, copy=False)
    if ts.size > 1 and bool(np.any(np.diff(ts) < 0)):
        raise WorkbenchError("timestamps must be sorted in increasing order")
    return ts


def detections_to_flags(timestamps: npt.ArrayLike, detection_times: npt.ArrayLike) -> np.ndarray:
    """One boolean per row: True where a detection falls, each detection time mapped to the
    first row at or after it. A detection after the last row has no row and is dropped.

    >>> detections_to_flags([0, 1000, 2000], [500, 1000, 9000]).tolist()
    [False, True, False]
    """
    ts = _timestamps(timestamps)
    times = np.asarray(detection_times, dtype=np.int64).ravel()
    rows = np.searchsorted(ts, times, side="left")
    beyond = rows >= ts.size
    if beyond.any():
        log.debug("%d detection(s) after the last row dropped", int(beyond.sum()))
    flags = np.zeros(ts.size, dtype=bool)
    flags[rows[~beyond]] = True
    return flags


def debounce(timestamps: npt.ArrayLike, flags: npt.ArrayLike) -> np.ndarray:
    """Detection times (int64 ms) from per-row flags: one at the start of each run of
    consecutive flagged rows, i.e. at every flag that follows a non-flag (or the first row).

    >>> debounce([0, 10, 20, 30, 40], [True, True, False, True, True]).tolist()
    [0, 30]
    """
    ts = _timestamps(timestamps)
    f = _flags_of_length(flags, ts.size, "flags")
    starts = f & ~np.concatenate(([False], f[:-1]))
    return ts[starts]


def _flags_of_length(flags: npt.ArrayLike, n: int, what: str) -> np.ndarray:
    f = np.asarray(flags)
    if f.shape != (n,):
        raise WorkbenchError(f"{what} must have one value per row ({n}), not shape {f.shape}")
    return f.astype(bool, copy=False) if f.dtype == bool else f == 1


def _detection_flags(ts: np.ndarray, detections: Detections) -> np.ndarray:
    """Per-row flags from either a boolean array (one per row) or detection times."""
    d = np.asarray(detections)
    if d.dtype == bool:
        return _flags_of_length(d, ts.size, "boolean detections")
    if d.size and not np.issubdtype(d.dtype, np.integer):
        raise WorkbenchError(
            f"detections must be booleans per row or integer times in ms, not {d.dtype}"
        )
    return detections_to_flags(ts, d)


def _window_rows(
    ts: np.ndarray, windows: Iterable[tuple[int, int]]
) -> tuple[np.ndarray, np.ndarray]:
    """First and last row of each window ``(start_ms, end_ms)``, both ends inclusive: the
    first row at or after the start, the last at or before the end."""
    limits = np.asarray(list(windows), dtype=np.int64).reshape(-1, 2)
    first = np.searchsorted(ts, limits[:, 0], side="left")
    last = np.searchsorted(ts, limits[:, 1], side="right") - 1
    for (start, end), a, b in zip(limits.tolist(), first.tolist(), last.tolist(), strict=True):
        if b < a:
            raise WorkbenchError(f"anomaly window [{start}, {end}] holds no row of the file")
    if first.size > 1 and bool(np.any(first[1:] <= last[:-1])):
        raise WorkbenchError("anomaly windows must be sorted and must not overlap")
    return first, last


@dataclass(frozen=True)
class _Sweep:
    """What NAB's sweeper sees in one file, before any profile's weights."""

    windows: int  # windows with a row at or after the probationary period
    tp_sigmoids: np.ndarray  # S(p) of the best detection of each detected window
    fp_sigmoids: np.ndarray  # S(p) of each scored false positive (negative)

    def score(self, profile: NabProfile) -> NabScore:
        tp = np.maximum(-profile.fn, profile.tp * self.tp_sigmoids / _MAX_TP)
        missed = self.windows - self.tp_sigmoids.size
        raw = float(tp.sum()) - profile.fn * missed + profile.fp * float(self.fp_sigmoids.sum())
        return NabScore(
            raw=raw,
            null=-profile.fn * self.windows,
            perfect=profile.tp * self.windows,
            windows=self.windows,
            detected=int(self.tp_sigmoids.size),
            false_positives=int(self.fp_sigmoids.size),
        )


def _sweep(
    timestamps: npt.ArrayLike,
    windows: Iterable[tuple[int, int]],
    detections: Detections,
    probationary_percent: float,
) -> _Sweep:
    ts = _timestamps(timestamps)
    first, last = _window_rows(ts, windows)
    flags = _detection_flags(ts, detections)
    scored_from = probationary_length(ts.size, probationary_percent)

    rows = np.flatnonzero(flags)
    rows = rows[rows >= scored_from]
    # the window starting last at or before each detection: it holds the detection, or it
    # is the window just before it (windows are sorted and disjoint)
    k = np.searchsorted(first, rows, side="right") - 1
    has_window = k >= 0
    inside = np.zeros(rows.size, dtype=bool)
    if first.size:
        inside[has_window] = rows[has_window] <= last[k[has_window]]

    # true positives: the first detection of each window (the highest S of that window)
    k_in, rows_in = k[inside], rows[inside]
    detected, first_at = np.unique(k_in, return_index=True)
    best = rows_in[first_at]
    width = last[detected] - first[detected] + 1
    tp_sigmoids = scaled_sigmoid(-(last[detected] - best + 1) / width)

    # false positives: their distance past the preceding window's end, in its width - 1
    k_out, rows_out = k[~inside], rows[~inside]
    fp_sigmoids = np.full(rows_out.size, -1.0)  # no window before: the full cost
    after = k_out >= 0
    if after.any():
        prev = k_out[after]
        span = (last[prev] - first[prev]).astype(float)  # width - 1
        past = (rows_out[after] - last[prev]).astype(float)
        # a one-row window would divide by zero in NAB's sweeper; its older scorer
        # (nab/scorer.py) put a detection after one at position 2.0
        position = np.divide(past, span, out=np.full(past.size, 2.0), where=span > 0)
        fp_sigmoids[after] = scaled_sigmoid(position)

    return _Sweep(
        windows=int(np.count_nonzero(last >= scored_from)),
        tp_sigmoids=tp_sigmoids,
        fp_sigmoids=fp_sigmoids,
    )


def _profile(profile: str | NabProfile) -> NabProfile:
    if isinstance(profile, NabProfile):
        return profile
    try:
        return PROFILES[profile]
    except KeyError:
        known = ", ".join(PROFILES)
        raise WorkbenchError(f"NAB profile {profile!r} is not known: expected {known}") from None


def nab_score(
    timestamps: npt.ArrayLike,
    windows: Iterable[tuple[int, int]],
    detections: Detections,
    profile: str | NabProfile = "standard",
    probationary_percent: float = PROBATIONARY_PERCENT,
) -> NabScore:
    """NAB's score of one data file under one profile (see the module docstring).

    ``timestamps``: the file's rows, int64 epoch ms, sorted. ``windows``: anomaly windows
    ``(start_ms, end_ms)``, both ends inclusive, sorted and disjoint; each holds the rows
    from the first at or after its start to the last at or before its end (NAB's own
    windows start and end on row timestamps). ``detections``: a boolean per row, or
    detection times in ms, each counted at the first row at or after it
    (:func:`detections_to_flags`). A window without any row is an error.

    >>> import numpy as np
    >>> ts = np.arange(100, dtype=np.int64) * 1000
    >>> s = nab_score(ts, [(50_000, 59_000)], [20_000, 50_000])  # one FP, one early TP
    >>> round(s.raw, 2), s.null, s.perfect, round(s.normalised, 1)
    (0.89, -1.0, 1.0, 94.5)
    """
    return _sweep(timestamps, windows, detections, probationary_percent).score(_profile(profile))


def nab_scores(
    timestamps: npt.ArrayLike,
    windows: Iterable[tuple[int, int]],
    detections: Detections,
    profiles: Mapping[str, NabProfile] = PROFILES,
    probationary_percent: float = PROBATIONARY_PERCENT,
) -> dict[str, NabScore]:
    """:func:`nab_score` under every profile (NAB's three by default), sweeping once."""
    sweep = _sweep(timestamps, windows, detections, probationary_percent)
    return {name: sweep.score(p) for name, p in profiles.items()}


def pool_nab_scores(scores: Iterable[NabScore]) -> NabScore:
    """Several files' scores (one profile) as NAB totals a corpus: raw, null and perfect
    are summed over the files and only then normalised, so a file without windows (whose
    own normalised score is undefined) still counts its false positives, and a file with
    many windows weighs more than one with few.

    >>> a = NabScore(raw=1.0, null=-1.0, perfect=1.0, windows=1, detected=1, false_positives=0)
    >>> b = NabScore(raw=-2.0, null=-2.0, perfect=2.0, windows=2, detected=0, false_positives=0)
    >>> a.normalised, b.normalised, round(pool_nab_scores([a, b]).normalised, 2)
    (100.0, 0.0, 33.33)
    """
    raw = null = perfect = 0.0
    windows = detected = false_positives = 0
    for s in scores:
        raw, null, perfect = raw + s.raw, null + s.null, perfect + s.perfect
        windows, detected = windows + s.windows, detected + s.detected
        false_positives += s.false_positives
    return NabScore(raw, null, perfect, windows, detected, false_positives)


# --- SKAB --------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutlierScore:
    """Per-row confusion counts of boolean predictions against 0/1 labels, and the metrics
    SKAB's outlier leaderboard reports. A metric whose denominator is 0 is None:

    * ``precision`` = tp / (tp + fp): None without any positive prediction;
    * ``recall`` = tp / (tp + fn): None without any positive label;
    * ``f1`` = 2 tp / (2 tp + fp + fn) (SKAB's ``TP / (TP + (FN + FP) / 2)``, the harmonic
      mean of the two): None only when there is neither a positive label nor a positive
      prediction; 0 for a detector that predicts nothing against real anomalies;
    * ``false_alarm_rate`` = 100 fp / (fp + tn) and ``missing_alarm_rate`` = 100 fn /
      (fn + tp), in percent (SKAB's FAR and MAR).
    """

    tp: int
    fp: int
    fn: int
    tn: int

    @staticmethod
    def _ratio(num: float, den: float) -> float | None:
        return num / den if den else None

    @property
    def precision(self) -> float | None:
        return self._ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float | None:
        return self._ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float | None:
        return self._ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def false_alarm_rate(self) -> float | None:
        return self._ratio(100.0 * self.fp, self.fp + self.tn)

    @property
    def missing_alarm_rate(self) -> float | None:
        return self._ratio(100.0 * self.fn, self.fn + self.tp)


def outlier_score(labels: npt.ArrayLike, predictions: npt.ArrayLike) -> OutlierScore:
    """SKAB's outlier-detection score of one file: every row is a sample, a label of 1 (the
    ``anomaly`` column) a positive, a True (or 1) prediction a detection. SKAB pools files
    by summing the counts (:func:`pool_outlier_scores`).

    >>> s = outlier_score([0, 0, 1, 1, 0], [False, True, True, False, False])
    >>> s.precision, s.recall, s.f1
    (0.5, 0.5, 0.5)
    """
    truth = np.asarray(labels) == 1
    if truth.ndim != 1:
        raise WorkbenchError(f"labels must be one-dimensional, not of shape {truth.shape}")
    pred = _flags_of_length(predictions, truth.size, "predictions")
    return OutlierScore(
        tp=int(np.count_nonzero(truth & pred)),
        fp=int(np.count_nonzero(~truth & pred)),
        fn=int(np.count_nonzero(truth & ~pred)),
        tn=int(np.count_nonzero(~truth & ~pred)),
    )


def pool_outlier_scores(scores: Iterable[OutlierScore]) -> OutlierScore:
    """Several files' outlier scores as SKAB pools them: counts summed over the files."""
    tp = fp = fn = tn = 0
    for s in scores:
        tp, fp, fn, tn = tp + s.tp, fp + s.fp, fn + s.fn, tn + s.tn
    return OutlierScore(tp, fp, fn, tn)


def skab_changepoint_windows(
    timestamps: npt.ArrayLike, changepoints: npt.ArrayLike, window_ms: int = SKAB_WINDOW_MS
) -> list[tuple[int, int]]:
    """SKAB's scoring windows: ``[t, t + window_ms]`` (inclusive) from the time ``t`` of
    each row whose ``changepoint`` label is 1, placed after the changepoint as SKAB does.
    A window that would reach the next changepoint is cut to end just before it, so that
    every changepoint keeps a window that starts on it (an assumption: see
    :func:`skab_changepoint_scores`).

    >>> skab_changepoint_windows([0, 10_000, 20_000, 30_000], [0, 1, 1, 0], 15_000)
    [(10000, 19999), (20000, 35000)]
    """
    if window_ms < 0:
        raise WorkbenchError(f"window_ms={window_ms} is not valid: expected >= 0")
    ts = _timestamps(timestamps)
    cp = np.unique(ts[_flags_of_length(changepoints, ts.size, "changepoint labels")])
    ends = cp + np.int64(window_ms)
    if cp.size > 1:
        ends[:-1] = np.minimum(ends[:-1], cp[1:] - 1)
    return [(int(a), int(b)) for a, b in zip(cp, ends, strict=True)]


def skab_changepoint_scores(
    timestamps: npt.ArrayLike,
    changepoints: npt.ArrayLike,
    detections: Detections,
    window_ms: int = SKAB_WINDOW_MS,
    probationary_percent: float = 0.0,
) -> dict[str, NabScore]:
    """SKAB's changepoint-detection score of one file, by NAB's rules: the three NAB
    profiles' :class:`NabScore` (take ``.normalised``; pool files with
    :func:`pool_nab_scores`, as SKAB sums over files before normalising).

    ``changepoints`` is the file's ``changepoint`` column (1 on a changepoint's row);
    ``detections`` detection times in ms or a boolean per row, as for :func:`nab_score`.

    What is SKAB's (waico/SKAB ``README.md``; ``utils/evaluating.py``, whose
    ``evaluating_change_point(..., metric='nab', numenta_time='30 sec')`` computed the
    leaderboard in its notebooks):

    * one window per labelled changepoint, from the changepoint's row to 30 s after it
      (``[cp, cp + numenta_time]``, both ends included; the later ``core/metrics.py``
      calls this placement ``anomaly_window_destination="righter"``);
    * the three profiles Standard, LowFP and LowFN with NAB's weights (A_tp 1; A_fp 0.11,
      0.22, 0.11; A_fn 1, 1, 2), here ``standard``, ``reward_low_FP``, ``reward_low_FN``;
    * null = -A_fn and perfect = A_tp per window, summed over all files, then
      ``100 * (score - null) / (perfect - null)``.

    What is NAB's instead of SKAB's own arithmetic (so the numbers are comparable with
    NAB-style scores but not identical to SKAB's leaderboard): SKAB's scorer rates the
    first detection with its own sigmoid over the window stretched by a quarter of its
    length, ``(A_tp - A_fp) / (1 + exp(5 y / (len / 4))) + A_fp`` with ``y`` rows from
    the window's end, charges every false positive a flat A_fp (and, after a detected
    window, counts only those in a tail slice of the rows up to the next window), and has
    no probationary period. Here the window is scored by NAB's sweeper
    (:func:`nab_score`) and ``probationary_percent`` defaults to 0, as SKAB has none.

    Assumed, where SKAB does not say: windows of two changepoints closer than
    ``window_ms`` are cut so that the earlier ends on the row before the later changepoint
    (SKAB's old code lets them overlap; its newer ``chp_score`` cuts the later one's
    start by default, which would move a window off its own changepoint).
    """
    windows = skab_changepoint_windows(timestamps, changepoints, window_ms)
    return nab_scores(timestamps, windows, detections, PROFILES, probationary_percent)


def skab_changepoint_detections(timestamps: npt.ArrayLike, flags: npt.ArrayLike) -> np.ndarray:
    """Changepoint detections the way SKAB's notebooks derive them from per-row outlier
    flags: ``abs(prediction.diff())`` with the first row's own value, i.e. a detection at
    every row where the flag switches on *or off* (and at the first row if flagged).
    :func:`debounce` keeps only the switches on.

    >>> skab_changepoint_detections([0, 1, 2, 3, 4], [True, True, False, False, True]).tolist()
    [0, 2, 4]
    """
    ts = _timestamps(timestamps)
    f = _flags_of_length(flags, ts.size, "flags")
    change = f != np.concatenate(([False], f[:-1]))
    return ts[change]


# --- the rolling z-score baseline ----------------------------------------------------------


@dataclass(frozen=True)
class ZScore:
    """A rolling z-score detector's output for one series: ``flags`` (one bool per row,
    for per-row scoring), ``z`` (NaN where a reading was not judged) and ``detections``
    (int64 ms, one at the start of each run of flags, for NAB)."""

    flags: np.ndarray
    z: np.ndarray
    detections: np.ndarray


@dataclass(frozen=True)
class ColumnsZScore:
    """:func:`rolling_zscore` over several columns: ``flags`` is their OR, ``detections``
    the union debounced, ``columns`` each column's own :class:`ZScore`."""

    flags: np.ndarray
    detections: np.ndarray
    columns: dict[str, ZScore] = field(default_factory=dict)


def rolling_zscore(
    timestamps: npt.ArrayLike,
    values: npt.ArrayLike,
    history_ms: int = DAY_MS,
    min_readings: int = 30,
    k: float = 5.0,
) -> ZScore:
    """The standard simple baseline: each reading judged against the mean and (sample,
    ddof=1) standard deviation of the readings of the previous ``history_ms`` (rows before
    it with a time in ``[t - history_ms, t]``), and flagged when ``|z| > k``.

    * A reading with fewer than ``min_readings`` readings in its history is not judged
      (never flagged, z NaN): the detector has not seen enough yet.
    * NaN readings take no part in any history and are never flagged.
    * A constant history (standard deviation 0) flags exactly the readings that differ
      from the constant (z is +-inf for them, 0 for the others).

    O(n log n): cumulative sums over a time window found with ``np.searchsorted``, the
    values centred on their mean first to keep the sums of squares accurate.

    >>> import numpy as np
    >>> ts = np.arange(60, dtype=np.int64) * 1000
    >>> x = np.sin(np.arange(60.0)); x[45] = 40.0
    >>> r = rolling_zscore(ts, x)
    >>> np.flatnonzero(r.flags).tolist(), r.detections.tolist()
    ([45], [45000])
    """
    if history_ms <= 0 or min_readings < 2 or not k > 0:
        raise WorkbenchError(
            f"history_ms={history_ms}, min_readings={min_readings}, k={k} are not valid: "
            "expected history_ms > 0, min_readings >= 2 and k > 0"
        )
    ts = _timestamps(timestamps)
    x = np.asarray(values, dtype=float)
    if x.shape != ts.shape:
        raise WorkbenchError(f"values must have one per row ({ts.size}), not shape {x.shape}")
    n = ts.size
    valid = ~np.isnan(x)
    centre = float(x[valid].mean()) if valid.any() else 0.0
    y = np.where(valid, x - centre, 0.0)

    # history of row i: rows lo[i] .. i-1; prefix sums over the rows before each index
    lo = np.searchsorted(ts, ts - np.int64(history_ms), side="left")
    here = np.arange(n)
    count_before = np.concatenate(([0], np.cumsum(valid)))
    s = np.concatenate(([0.0], np.cumsum(y)))
    ss = np.concatenate(([0.0], np.cumsum(y * y)))
    count = count_before[here] - count_before[lo]
    judged = valid & (count >= min_readings)

    z = np.full(n, np.nan)
    flags = np.zeros(n, dtype=bool)
    if judged.any():
        i, a = here[judged], lo[judged]
        m = count[judged].astype(float)
        mean = (s[i] - s[a]) / m
        var = np.maximum((ss[i] - ss[a] - m * mean * mean) / (m - 1.0), 0.0)

        # constant history, decided exactly: no change between consecutive valid readings
        xv = x[valid]
        changes = np.concatenate(([0], np.cumsum(xv[1:] != xv[:-1])))
        v_first, v_last = count_before[a], count_before[i] - 1  # indices among valid readings
        constant = changes[v_last] == changes[v_first]

        off = x[i] - xv[v_first]  # against the constant
        z_constant = np.where(off == 0.0, 0.0, np.copysign(np.inf, off))
        std = np.sqrt(var)
        dev = y[i] - mean
        positive = std > 0  # a varying history rounded to 0 behaves as a constant one
        z_rounded = np.where(dev == 0.0, 0.0, np.copysign(np.inf, dev))
        z_varying = np.where(positive, dev / np.where(positive, std, 1.0), z_rounded)
        zi = np.where(constant, z_constant, z_varying)
        z[i] = zi
        flags[i] = np.abs(zi) > k

    return ZScore(flags=flags, z=z, detections=debounce(ts, flags))


def rolling_zscore_columns(
    timestamps: npt.ArrayLike,
    columns: Mapping[str, npt.ArrayLike],
    history_ms: int = DAY_MS,
    min_readings: int = 30,
    k: float = 5.0,
) -> ColumnsZScore:
    """:func:`rolling_zscore` of every column (a mapping or a DataFrame of value columns,
    e.g. SKAB's eight sensors), a row flagged when any column flags it; detections are the
    union's runs debounced, so simultaneous alarms on several sensors make one detection.

    >>> import numpy as np
    >>> ts = np.arange(60, dtype=np.int64) * 1000
    >>> a, b = np.sin(np.arange(60.0)), np.cos(np.arange(60.0))
    >>> a[40], b[41] = 50.0, -50.0
    >>> r = rolling_zscore_columns(ts, {"a": a, "b": b})
    >>> np.flatnonzero(r.flags).tolist(), r.detections.tolist()
    ([40, 41], [40000])
    """
    ts = _timestamps(timestamps)
    per_column = {
        str(name): rolling_zscore(ts, columns[name], history_ms, min_readings, k)
        for name in columns
    }
    union = np.zeros(ts.size, dtype=bool)
    for result in per_column.values():
        union |= result.flags
    return ColumnsZScore(flags=union, detections=debounce(ts, union), columns=per_column)
