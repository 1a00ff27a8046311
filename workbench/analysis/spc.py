"""Statistical process control (SPC) of stored sensor readings: control charts, run rules,
EWMA and CUSUM, and process capability.

Pure computation on numpy arrays and pandas DataFrames (no database, no plotting), the way
a quality engineer runs a control-chart study:

* **Phase I** estimates the centre line and sigma from a baseline segment (the first
  ``baseline`` points, or the first ``baseline_s`` seconds): for individuals from the
  average moving range (sigma = MR-bar / d2, d2 = 1.128 for n = 2), for subgroups from the
  average range or standard deviation (R-bar / d2(n), s-bar / c4(n)). ``revise=True``
  drops baseline points beyond the 3-sigma limits and estimates again, as a Phase I study
  does once the assignable causes are known (but never below half the baseline: one that is
  mostly out of control is an unstable process, and keeps its limits).
* **Phase II** monitors the whole series against those limits and flags the points that
  break a run rule: Western Electric rules 1-4, or Nelson's eight tests (Nelson's own
  numbering, which Minitab's tests 1-8 follow). A point is flagged where the pattern
  completes; a run that goes on is flagged at every further point.
* A process that wanders (a temperature following load through a thermal lag) breaks the
  charts' assumption of independent readings around a fixed mean, and fixed limits flag
  nearly everything. ``centre="moving"`` charts each reading against its one-step-ahead
  EWMA forecast instead (Montgomery's remedy for autocorrelated data), with limits from
  the forecast errors. Readings too coarse for their variation (Wheeler's "chunky data")
  are refused rather than charted with false alarms.
* **EWMA** and tabular **CUSUM** charts see small sustained shifts that a Shewhart chart
  misses; **capability** (Cp, Cpk from within-subgroup sigma; Pp, Ppk from the overall
  standard deviation) compares the process spread with specification limits.

A null reading (a dead sensor) is kept in place, with its timestamp, but takes no part in
any statistic or rule: moving ranges and runs join the readings on either side of it.

:func:`chart_per_sensor` does all of it for every machine and sensor of a DataFrame that
``workbench.lab.readings`` returned (raw readings give I-MR, EWMA and CUSUM charts;
bucketed ones, ``bucket="10s"``, give X-bar and R charts of the buckets as subgroups), and
:func:`fault_coverage` checks the signals against a run's ground truth.

>>> import numpy as np
>>> x = np.array([10.0, 10.4, 9.8, 10.1, 9.9, 10.3, 9.7, 10.0, 10.2, 9.9, 14.0, 10.1])
>>> chart, mr = individuals_chart(x, baseline=10)
>>> round(chart.center, 3), round(chart.sigma, 4)   # mean and MR-bar / 1.128 of the baseline
(10.03, 0.3249)
>>> chart.violations().index.tolist(), chart.counts()
([10], {'WE1': 1, 'WE2': 0, 'WE3': 0, 'WE4': 0})
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from workbench.errors import WorkbenchError

log = logging.getLogger(__name__)

#: Fewest non-null baseline points an individuals (or EWMA, CUSUM) chart is estimated from.
MIN_POINTS = 10
#: Fewest baseline subgroups an X-bar chart is estimated from.
MIN_SUBGROUPS = 5
#: At most this many Phase I passes when revising a baseline.
_PASSES = 10
#: What Phase I guidance (Montgomery; ASTM E2587) asks for; fewer is allowed but logged.
RECOMMENDED_BASELINE = 20

_S = "\N{GREEK SMALL LETTER SIGMA}"

#: Every run rule, by code, with the label charts show. WE = Western Electric Handbook
#: (1956) zone rules; N = Nelson (1984) tests in his numbering.
RULES: dict[str, str] = {
    "WE1": f"WE1: one point beyond 3{_S}",
    "WE2": f"WE2: 2 of 3 beyond 2{_S} same side",
    "WE3": f"WE3: 4 of 5 beyond 1{_S} same side",
    "WE4": "WE4: 8 in a row same side",
    "N1": f"N1: one point beyond 3{_S}",
    "N2": "N2: 9 in a row same side",
    "N3": "N3: 6 in a row increasing or decreasing",
    "N4": "N4: 14 in a row alternating up and down",
    "N5": f"N5: 2 of 3 beyond 2{_S} same side",
    "N6": f"N6: 4 of 5 beyond 1{_S} same side",
    "N7": f"N7: 15 in a row within 1{_S}",
    "N8": f"N8: 8 in a row beyond 1{_S}, on both sides",
}
#: Named rule sets for the ``rules`` argument.
RULE_SETS: dict[str, tuple[str, ...]] = {
    "western_electric": ("WE1", "WE2", "WE3", "WE4"),
    "nelson": ("N1", "N2", "N3", "N4", "N5", "N6", "N7", "N8"),
}
#: Flags of the other charts, with their labels.
SIGNALS: dict[str, str] = {
    "OUT": "beyond the control limits",
    "EWMA": "EWMA beyond its limits",
    "CUSUM+": "upper CUSUM above h (upward shift)",
    "CUSUM-": "lower CUSUM above h (downward shift)",
}
#: Ground-truth fault kinds that change the values a sensor reports (the others act on
#: messages: loss, duplicates, latency, malformed bytes, bursts of faster sampling); a
#: failure's ``degradation`` (the wear before its runaway) is an episode of its own.
VALUE_FAULTS = ("spike", "drift", "stuck", "failure", "power", "degradation")

Rules = str | Sequence[str]
Baseline = int | np.ndarray | Sequence[bool] | None


# --- control chart constants -----------------------------------------------------------


def c4(n: int) -> float:
    """E[s] / sigma for samples of ``n`` normal values (exact, from the gamma function).

    >>> round(c4(5), 4)
    0.94
    """
    if n < 2:
        raise WorkbenchError(f"c4 needs a subgroup size of at least 2, not {n}")
    return math.sqrt(2.0 / (n - 1)) * math.exp(math.lgamma(n / 2) - math.lgamma((n - 1) / 2))


@functools.lru_cache(maxsize=1024)
def range_constants(n: int) -> tuple[float, float]:
    """``(d2, d3)``: mean and standard deviation of the range of ``n`` standard normal values.

    Computed by numerical integration (trapezoids, Richardson-extrapolated for d3; both
    to better than 1e-6), for any ``n`` from 2 to 1000, so that subgroups of any size
    (database buckets of 30 readings, say) get exact constants, not the nearest
    tabulated ones.

    >>> [round(v, 5) for v in range_constants(2)]   # d3(2) = sqrt(2 - 4 / pi)
    [1.12838, 0.8525]
    """
    if not 2 <= n <= 1000:
        raise WorkbenchError(f"range constants need a subgroup size from 2 to 1000, not {n}")
    h, lo, hi, wmax = 0.02, -8.0, 8.0, 12.0  # odd point counts, so every other one is a grid
    x = np.linspace(lo, hi, round((hi - lo) / h) + 1)
    nw = round(wmax / h) + 1
    grid = lo + h * np.arange(len(x) + nw)
    erfc = np.vectorize(math.erfc, otypes=[float])
    cdf_grid = 0.5 * erfc(-grid / math.sqrt(2.0))  # Phi on x and on x + w
    tail = 0.5 * erfc(x / math.sqrt(2.0))  # 1 - Phi(x), accurate in the upper tail
    pdf = np.exp(-x * x / 2) / math.sqrt(2 * math.pi)
    # E[R] = integral of 1 - Phi^n - (1 - Phi)^n
    d2 = float(np.trapezoid(1.0 - cdf_grid[: len(x)] ** n - tail**n, x))
    # P(R <= w) = n * integral phi(x) (Phi(x + w) - Phi(x))^(n-1) dx;  E[R^2] = 2 int w P(R > w)
    w = h * np.arange(nw)
    idx = np.arange(len(x))[:, None] + np.arange(nw)[None, :]
    density = pdf[:, None] * (cdf_grid[idx] - cdf_grid[: len(x), None]) ** (n - 1)

    def second_moment(step: int) -> float:
        p_le = n * np.trapezoid(density[::step, ::step], x[::step], axis=0)
        return 2.0 * float(np.trapezoid(w[::step] * (1.0 - p_le), w[::step]))

    second = (4 * second_moment(1) - second_moment(2)) / 3
    return d2, math.sqrt(max(second - d2 * d2, 0.0))


def constants(n: int) -> dict[str, float]:
    """The control chart constants for subgroups of ``n``: d2, d3, c4, A2, A3, D3, D4, B3, B4.

    >>> k = constants(5)
    >>> round(k["A2"], 3), round(k["D4"], 3), round(k["A3"], 3), round(k["B4"], 3)
    (0.577, 2.114, 1.427, 2.089)
    """
    d2, d3 = range_constants(n)
    cc = c4(n)
    root = math.sqrt(n)
    spread = 3 * math.sqrt(1 - cc * cc) / cc
    return {
        "d2": d2,
        "d3": d3,
        "c4": cc,
        "A2": 3 / (d2 * root),
        "A3": 3 / (cc * root),
        "D3": max(0.0, 1 - 3 * d3 / d2),
        "D4": 1 + 3 * d3 / d2,
        "B3": max(0.0, 1 - spread),
        "B4": 1 + spread,
    }


def constants_table(sizes: Iterable[int] = range(2, 26)) -> pd.DataFrame:
    """The constants of :func:`constants` for several subgroup sizes, one row each."""
    return pd.DataFrame({n: constants(n) for n in sizes}).T.rename_axis("n")


def _per_size(n: np.ndarray, which: str) -> np.ndarray:
    """A constant (``d2``, ``d3`` or ``c4``) for each subgroup size in ``n`` (NaN below 2)."""
    out = np.full(len(n), np.nan)
    for size in np.unique(n[n >= 2]):
        size = int(size)
        value = c4(size) if which == "c4" else range_constants(size)[which == "d3"]
        out[n == size] = value
    return out


# --- charts ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Chart:
    """One control chart: the plotted statistic per point, its limits, and its flags.

    ``points`` has one row per reading (or subgroup), nulls included: ``x`` (timestamp or
    position), ``value`` (the plotted statistic), ``center``, ``lcl``, ``ucl``, ``sigma``
    (of the plotted statistic at that point, for the zone edges), ``baseline`` (whether the
    point is in the Phase I segment) and one boolean column per flag in ``flags``; EWMA
    charts add ``observation``, CUSUM charts ``upper``, ``lower`` and ``h``, subgroup
    charts ``n``.
    """

    kind: Literal["individuals", "moving_range", "xbar", "range", "stdev", "ewma", "cusum"]
    name: str
    points: pd.DataFrame
    flags: tuple[str, ...]
    center: float
    sigma: float
    #: Seconds each point stands for (a bucket's width; 0 for single readings).
    span_s: float = 0.0
    #: Chart parameters (lambda and L of an EWMA, k and h of a CUSUM, the rule set, ...).
    params: dict[str, Any] = field(default_factory=dict)

    def flagged(self) -> pd.Series:
        """Per point, whether any flag is set."""
        if not self.flags:
            return pd.Series(False, index=self.points.index)
        return self.points[list(self.flags)].any(axis=1)

    def violations(self) -> pd.DataFrame:
        """The points with at least one flag set."""
        return self.points.loc[self.flagged()]

    def counts(self) -> dict[str, int]:
        """How many points each flag marks."""
        return {f: int(self.points[f].sum()) for f in self.flags}

    def labels(self) -> pd.Series:
        """For each flagged point, the labels of its flags joined by ``"; "`` (hover text)."""
        hit = self.violations()
        names = {**RULES, **SIGNALS}
        if hit.empty:
            return pd.Series([], dtype=object, index=hit.index)
        mask = hit[list(self.flags)].to_numpy()
        labels = np.array([names[f] for f in self.flags], dtype=object)
        return pd.Series(["; ".join(labels[row]) for row in mask], index=hit.index, dtype=object)


def tally(chart: Chart | None) -> dict[str, int] | None:
    """How many points each flag of ``chart`` marks, and ``any`` (points with at least one):
    what a notebook records; None where there is no chart.

    >>> tally(individuals_chart([1.0, 1.2, 0.9, 1.1] * 5 + [3.0], baseline=20)[0])
    {'WE1': 1, 'WE2': 0, 'WE3': 0, 'WE4': 0, 'any': 1}
    """
    if chart is None:
        return None
    return {**chart.counts(), "any": int(chart.flagged().sum())}


def individuals_chart(
    values: Sequence[float] | np.ndarray | pd.Series,
    ts: Sequence[Any] | np.ndarray | pd.Series | None = None,
    *,
    baseline: Baseline = None,
    rules: Rules = "western_electric",
    center: float | None = None,
    sigma: float | None = None,
    revise: bool = False,
    centre: Literal["fixed", "moving"] = "fixed",
    forecast_lam: float | None = None,
    name: str = "",
) -> tuple[Chart, Chart]:
    """The individuals (I) chart and its moving range (MR) chart.

    Centre line and sigma come from the ``baseline`` points (Phase I; default: all of
    them) unless ``center`` / ``sigma`` are given (known standards): the mean, and the
    average moving range of consecutive non-null readings / d2 (1.128). Limits are
    centre +- 3 sigma; the whole series is then checked against them with ``rules``. The
    MR chart's limits are D3 and D4 (0 and 3.267) times MR-bar; points beyond them carry
    the flag ``OUT``.

    ``centre="moving"`` is the chart for a process that wanders (autocorrelated readings,
    such as a temperature that follows load through a thermal lag), where fixed limits
    flag nearly every point: the centre line is each reading's one-step-ahead EWMA
    forecast (:func:`forecast_errors`, ``forecast_lam`` fitted on the baseline unless
    given), sigma that of the forecast errors, and the rules and the MR chart work on
    the errors (column ``residual``). Chart.center is then 0, the errors' centre.

    >>> i, mr = individuals_chart([1.0, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2])
    >>> i.center, i.sigma == 1 / range_constants(2)[0], round(float(mr.points["ucl"][0]), 3)
    (1.5, True, 3.267)
    """
    x = _floats(values, name)
    base = _baseline_mask(baseline, len(x), name)
    codes = _rule_codes(rules)
    xs = _x_axis(ts, len(x), name)
    params: dict[str, Any] = {"rules": list(codes), "revise": revise, "centre": centre}
    given_sigma = sigma
    if centre == "moving":
        if center is not None:
            raise WorkbenchError(f"{_who(name)}a moving centre line is the forecast: no center=")
        _phase_one_individuals(x, base, False, name)  # enough readings, and not constant
        lam = forecast_lam if forecast_lam is not None else forecast_lambda(x, base, name=name)
        mid, stat = forecast_errors(x, lam, clip=_clip(x, base))
        _, sigma, used = _center_sigma(stat, base, 0.0, sigma, revise, name)
        center = 0.0
        params["forecast_lam"] = lam
    elif centre == "fixed":
        center, sigma, used = _center_sigma(x, base, center, sigma, revise, name)
        mid, stat = np.full(len(x), center), x
    else:
        raise WorkbenchError(f"{_who(name)}centre={centre!r} is not valid: 'fixed' or 'moving'")
    if given_sigma is None:
        _check_resolution(x, base, sigma, name)
    params["baseline_points"] = used
    z = (stat - (0.0 if centre == "moving" else center)) / sigma
    flags = rule_flags(stat, z, codes)
    points = pd.DataFrame({"x": xs, "value": x, "center": mid, "lcl": mid - 3 * sigma,
                           "ucl": mid + 3 * sigma, "sigma": sigma, "baseline": base})  # fmt: skip
    if centre == "moving":
        points["residual"] = stat
    points = pd.concat([points, flags], axis=1)
    chart = Chart("individuals", name, points, codes, center, sigma, params=params)

    d2, d3 = range_constants(2)
    mr = _moving_range(stat)
    mr_center = d2 * sigma
    mr_ucl, mr_lcl = (d2 + 3 * d3) * sigma, max(0.0, d2 - 3 * d3) * sigma
    mr_points = pd.DataFrame({"x": xs, "value": mr, "center": mr_center, "lcl": mr_lcl,
                              "ucl": mr_ucl, "sigma": d3 * sigma, "baseline": base})  # fmt: skip
    mr_points["OUT"] = (mr > mr_ucl) | (mr < mr_lcl)
    mr_chart = Chart("moving_range", name, mr_points, ("OUT",), mr_center, sigma, params=params)
    return chart, mr_chart


def forecast_errors(
    values: Sequence[float] | np.ndarray | pd.Series, lam: float, clip: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One-step-ahead EWMA forecasts of a series and their errors: the forecast of each
    reading is the EWMA (weight ``lam``) of the readings before it, started at the median
    of the first five (so that a first reading that is a spike does not start it off);
    the error is reading - forecast (NaN for the first reading and at nulls).

    With ``clip``, the forecast learns from errors clipped to +-``clip``, so a single
    spike does not drag it along (and echo as false signals afterwards), while a lasting
    shift is still followed, ``lam * clip`` per reading.

    >>> f, e = forecast_errors([1.0, 1.0, 1.0, 3.0, 3.0], lam=0.5)
    >>> f.tolist()[1:], e.tolist()[1:]
    ([1.0, 1.0, 1.0, 2.0], [0.0, 0.0, 2.0, 1.0])
    """
    x = _floats(values, "")
    if not 0 < lam <= 1:
        raise WorkbenchError(f"forecast lambda {lam} is not valid: expected 0 < lambda <= 1")
    ok = np.flatnonzero(np.isfinite(x))
    forecast, error = np.full(len(x), np.nan), np.full(len(x), np.nan)
    if ok.size == 0:
        return forecast, error
    xc = x[ok]
    start = float(np.median(xc[:5]))
    if clip is None:
        level = pd.Series(np.r_[start, xc]).ewm(alpha=lam, adjust=False).mean().to_numpy()
        ahead = np.r_[np.nan, level[1:-1]]
    else:  # not a linear filter any more: a plain loop, a few ms per 100k readings
        ahead = np.empty(len(xc))
        ahead[0], bound = np.nan, float(clip)
        level_now = start + lam * min(max(float(xc[0]) - start, -bound), bound)
        for j, v in enumerate(xc[1:].tolist(), start=1):
            ahead[j] = level_now
            level_now += lam * min(max(v - level_now, -bound), bound)
    forecast[ok], error[ok] = ahead, xc - ahead
    return forecast, error


def forecast_lambda(
    values: Sequence[float] | np.ndarray | pd.Series,
    baseline: Baseline = None,
    grid: Sequence[float] = tuple(np.round(np.arange(0.05, 1.0001, 0.05), 2)),
    name: str = "",
) -> float:
    """The EWMA weight from ``grid`` whose one-step-ahead forecasts of the baseline have the
    smallest squared error, as Montgomery fits it, but robustly: forecasts learn from
    errors clipped to 4 noise scales (the baseline's median moving range / 0.954), and an
    error counts at most that much, so spikes in the baseline do not choose the weight.

    >>> walk = np.cumsum(np.random.default_rng(0).normal(size=500))
    >>> forecast_lambda(walk)   # a random walk is best forecast by its last value
    1.0
    """
    x = _floats(values, name)
    base = _baseline_mask(baseline, len(x), name)
    xb = x[base & np.isfinite(x)]
    if xb.size < MIN_POINTS:
        raise WorkbenchError(
            f"{_who(name)}the baseline has {xb.size} non-null readings; fitting a forecast "
            f"needs at least {MIN_POINTS}"
        )
    clip = _clip(xb, np.ones(xb.size, dtype=bool))
    cap = clip**2 if clip is not None else math.inf
    cost = [np.nanmean(np.minimum(forecast_errors(xb, float(lam), clip)[1] ** 2, cap))
            for lam in grid]  # fmt: skip
    return float(grid[int(np.argmin(cost))])


def subgroups(
    values: Sequence[float] | np.ndarray | pd.Series,
    ts: Sequence[Any] | np.ndarray | pd.Series | None = None,
    *,
    size: int | None = None,
    every: str | float | None = None,
    name: str = "",
) -> pd.DataFrame:
    """Rational subgroups of a series: ``size`` consecutive readings, or the readings of
    each ``every`` (``"10s"``, ``"1min"`` or seconds) time bucket (needs ``ts``).

    One row per subgroup: ``x`` (its first timestamp or bucket start; its number without
    ``ts``), ``mean``, ``range``, ``std`` (sample), ``n`` (non-null readings) and
    ``nulls``. Nulls stay in their subgroup (timestamps do not shift) but count in no
    statistic.

    >>> subgroups([1.0, 3, 2, 4, None, 6], size=3)[["x", "mean", "range", "n", "nulls"]]
       x  mean  range  n  nulls
    0  0   2.0    2.0  3      0
    1  1   5.0    2.0  2      1
    """
    x = _floats(values, name)
    if (size is None) == (every is None):
        raise WorkbenchError(f"{_who(name)}give subgroups either a size or an every, not both")
    if size is not None:
        if size < 1:
            raise WorkbenchError(f"{_who(name)}subgroup size {size} is not valid: expected >= 1")
        label = np.arange(len(x)) // size
        first = pd.Series(_x_axis(ts, len(x), name)).groupby(label).first().to_numpy()
        if ts is None:
            first = np.arange(len(first))
    else:
        if ts is None:
            raise WorkbenchError(f"{_who(name)}subgroups by time ({every}) need timestamps")
        seconds = every if isinstance(every, int | float) else pd.Timedelta(every).total_seconds()
        if seconds <= 0:
            raise WorkbenchError(f"{_who(name)}every={every!r} is not valid: expected > 0")
        stamps = pd.Series(pd.to_datetime(ts.array if isinstance(ts, pd.Series) else ts))
        label = stamps.dt.floor(pd.Timedelta(seconds=seconds))
        first = None
    grouped = pd.Series(x).groupby(label, sort=True)
    out = pd.DataFrame({
        "mean": grouped.mean(),
        "range": grouped.max() - grouped.min(),
        "std": grouped.std(ddof=1),
        "n": grouped.count(),
        "nulls": grouped.size() - grouped.count(),
    })  # fmt: skip
    out.insert(0, "x", first if first is not None else out.index.array)
    return out.reset_index(drop=True)


def xbar_chart(
    groups: pd.DataFrame,
    *,
    stat: Literal["R", "S"] = "R",
    baseline: Baseline = None,
    rules: Rules = "western_electric",
    center: float | None = None,
    sigma: float | None = None,
    revise: bool = False,
    name: str = "",
    span_s: float = 0.0,
) -> tuple[Chart, Chart]:
    """The X-bar chart of subgroup means and its R (or S) chart.

    ``groups``: one row per subgroup with ``x``, ``mean``, ``n`` and ``range`` (for R) or
    ``std`` (for S), as :func:`subgroups` returns. Sigma is estimated from the baseline
    subgroups as the average of R / d2(n) (or s / c4(n)); with equal sizes the limits are
    the textbook X-double-bar +- A2 R-bar (A3 s-bar), and D3, D4 (B3, B4) times R-bar
    (s-bar). Unequal sizes get limits of their own per subgroup: centre +- 3 sigma /
    sqrt(n). The centre line is the mean of all baseline readings. Subgroups of one
    reading are charted but have no range.
    """
    missing = {"x", "mean", "n", "range" if stat == "R" else "std"} - set(groups.columns)
    if stat not in ("R", "S"):
        raise WorkbenchError(f"{_who(name)}stat={stat!r} is not valid: expected 'R' or 'S'")
    if missing:
        hint = " (bucketed readings have no standard deviation: use stat='R')" * (stat == "S")
        raise WorkbenchError(f"{_who(name)}subgroups lack {', '.join(sorted(missing))}{hint}")
    means = groups["mean"].to_numpy(dtype=float, copy=True)
    n = groups["n"].to_numpy(dtype=float, copy=True)
    spread = groups["range" if stat == "R" else "std"].to_numpy(dtype=float, copy=True)
    n[~np.isfinite(means)] = 0
    means[n < 1] = np.nan
    spread[n < 2] = np.nan
    ok = n >= 1
    base = _baseline_mask(baseline, len(groups), name)
    unbias = _per_size(n, "d2" if stat == "R" else "c4")
    keep = base & ok
    used = int(keep.sum())
    est_center, est_sigma = math.nan, math.nan
    if used < MIN_SUBGROUPS:
        raise WorkbenchError(
            f"{_who(name)}the baseline has {used} subgroups with readings; an X-bar chart "
            f"needs at least {MIN_SUBGROUPS} (lengthen the baseline)"
        )
    floor = max(MIN_SUBGROUPS, math.ceil(used / 2))
    for _ in range(_PASSES if revise else 1):
        est_center = float(np.sum(means[keep] * n[keep]) / np.sum(n[keep]))
        ratios = (spread / unbias)[keep & (n >= 2)]
        if ratios.size == 0:
            raise WorkbenchError(f"{_who(name)}no baseline subgroup has two readings or more")
        est_sigma = float(np.mean(ratios))
        if not revise or est_sigma <= 0:
            break
        out = keep & (np.abs(means - est_center) > 3 * est_sigma / np.sqrt(np.maximum(n, 1)))
        if not _revise(keep, out, floor, name, "subgroups"):
            break
    if used < RECOMMENDED_BASELINE:
        log.debug("%sX-bar baseline of %d subgroups (%d recommended)", _who(name), used,
                  RECOMMENDED_BASELINE)  # fmt: skip
    center = est_center if center is None else float(center)
    if sigma is None:
        sigma = _checked_sigma(est_sigma, name, f"the baseline's {used} subgroups")
    else:
        sigma = _given_sigma(sigma, name)
    codes = _rule_codes(rules)
    point_sigma = sigma / np.sqrt(np.where(n >= 1, n, np.nan))
    z = (means - center) / point_sigma
    flags = rule_flags(means, z, codes)
    xs = groups["x"].to_numpy()
    points = pd.DataFrame({"x": xs, "value": means, "center": center,
                           "lcl": center - 3 * point_sigma, "ucl": center + 3 * point_sigma,
                           "sigma": point_sigma, "baseline": base, "n": n.astype(int)})  # fmt: skip
    points = pd.concat([points, flags], axis=1)
    params = {"rules": list(codes), "stat": stat, "baseline_points": int(keep.sum()),
              "revise": revise}  # fmt: skip
    main = Chart("xbar", name, points, codes, center, sigma, span_s, params)

    if stat == "R":
        d3 = _per_size(n, "d3")
        mid, half = unbias * sigma, 3 * d3 * sigma
    else:
        mid, half = unbias * sigma, 3 * np.sqrt(1 - unbias**2) * sigma
    lo, hi = np.maximum(mid - half, 0.0), mid + half
    disp = pd.DataFrame({"x": xs, "value": spread, "center": mid, "lcl": lo, "ucl": hi,
                         "sigma": half / 3, "baseline": base, "n": n.astype(int)})  # fmt: skip
    disp["OUT"] = (spread > hi) | (spread < lo)
    kind: Literal["range", "stdev"] = "range" if stat == "R" else "stdev"
    return main, Chart(kind, name, disp, ("OUT",), float(np.nanmedian(mid)), sigma, span_s, params)


def ewma_chart(
    values: Sequence[float] | np.ndarray | pd.Series,
    ts: Sequence[Any] | np.ndarray | pd.Series | None = None,
    *,
    lam: float = 0.2,
    L: float = 3.0,
    baseline: Baseline = None,
    center: float | None = None,
    sigma: float | None = None,
    revise: bool = False,
    name: str = "",
) -> Chart:
    """The EWMA chart: z_i = lam x_i + (1 - lam) z_{i-1}, z_0 = the centre line, with the
    exact time-varying limits centre +- L sigma sqrt(lam / (2 - lam) (1 - (1 - lam)^(2i))).

    Centre and sigma as for :func:`individuals_chart`. ``i`` counts non-null readings; a
    null leaves the statistic where it was. Points beyond the limits carry ``EWMA``.

    >>> c = ewma_chart([0.0] * 3, center=0, sigma=1)
    >>> [round(v, 4) for v in c.points["ucl"]]   # 3 sqrt(0.2/1.8 (1 - 0.8^(2i)))
    [0.6, 0.7684, 0.859]
    """
    if not 0 < lam <= 1:
        raise WorkbenchError(f"{_who(name)}lam={lam} is not valid: expected 0 < lam <= 1")
    if L <= 0:
        raise WorkbenchError(f"{_who(name)}L={L} is not valid: expected > 0")
    x, base, center, sigma, used = _observations(values, baseline, center, sigma, revise, name)
    ok = np.isfinite(x)
    xc = x[ok]
    stat = pd.Series(np.r_[center, xc]).ewm(alpha=lam, adjust=False).mean().to_numpy()[1:]
    i = np.arange(1, len(xc) + 1)
    half = L * sigma * np.sqrt(lam / (2 - lam) * (1 - (1 - lam) ** (2 * i)))
    z, lcl, ucl, sd = (np.full(len(x), np.nan) for _ in range(4))
    z[ok], lcl[ok], ucl[ok], sd[ok] = stat, center - half, center + half, half / L
    points = pd.DataFrame({"x": _x_axis(ts, len(x), name), "value": z, "observation": x,
                           "center": center, "lcl": lcl, "ucl": ucl, "sigma": sd,
                           "baseline": base})  # fmt: skip
    points["EWMA"] = (z > ucl) | (z < lcl)
    params = {"lam": lam, "L": L, "baseline_points": used}
    return Chart("ewma", name, points, ("EWMA",), center, sigma, params=params)


def cusum_chart(
    values: Sequence[float] | np.ndarray | pd.Series,
    ts: Sequence[Any] | np.ndarray | pd.Series | None = None,
    *,
    k: float = 0.5,
    h: float = 5.0,
    baseline: Baseline = None,
    center: float | None = None,
    sigma: float | None = None,
    revise: bool = False,
    name: str = "",
) -> Chart:
    """The tabular CUSUM: C+_i = max(0, x_i - (mu0 + K) + C+_{i-1}) and
    C-_i = max(0, (mu0 - K) - x_i + C-_{i-1}), K = k sigma, signalling where a sum
    exceeds H = h sigma (flags ``CUSUM+`` and ``CUSUM-``). Sums are not reset after a
    signal, so a lasting shift keeps signalling. Centre (mu0) and sigma as for
    :func:`individuals_chart`.

    >>> c = cusum_chart([0.0] * 5 + [2.0] * 5, center=0, sigma=1)
    >>> c.points["upper"].tolist()[4:], int(c.points["CUSUM+"].idxmax())
    ([0.0, 1.5, 3.0, 4.5, 6.0, 7.5], 8)
    """
    if k < 0 or h <= 0:
        raise WorkbenchError(f"{_who(name)}k={k}, h={h} are not valid: expected k >= 0, h > 0")
    x, base, center, sigma, used = _observations(values, baseline, center, sigma, revise, name)
    ok = np.isfinite(x)
    xc = x[ok]
    big_k, big_h = k * sigma, h * sigma
    upper, lower = np.full(len(x), np.nan), np.full(len(x), np.nan)
    upper[ok] = _lindley(xc - (center + big_k))
    lower[ok] = _lindley((center - big_k) - xc)
    points = pd.DataFrame({"x": _x_axis(ts, len(x), name), "value": x, "upper": upper,
                           "lower": lower, "h": big_h, "center": center, "lcl": np.nan,
                           "ucl": np.nan, "sigma": sigma, "baseline": base})  # fmt: skip
    points["CUSUM+"] = upper > big_h
    points["CUSUM-"] = lower > big_h
    params = {"k": k, "h": h, "baseline_points": used}
    return Chart("cusum", name, points, ("CUSUM+", "CUSUM-"), center, sigma, params=params)


def _lindley(steps: np.ndarray) -> np.ndarray:
    """C_i = max(0, C_{i-1} + y_i), C_0 = 0, without a Python loop: S_i - min(0, min S_j<=i)."""
    if steps.size == 0:
        return steps
    total = np.cumsum(steps)
    return np.maximum(total - np.minimum(np.minimum.accumulate(total), 0.0), 0.0)


# --- run rules -------------------------------------------------------------------------


def rule_flags(
    values: Sequence[float] | np.ndarray, z: Sequence[float] | np.ndarray, rules: Rules
) -> pd.DataFrame:
    """One boolean column per rule code: True at each point where the rule's pattern
    completes. ``z`` is each point's distance from the centre line in sigmas (of the
    plotted statistic); ``values`` the plotted statistic (for trend and alternation).
    Points with a null ``z`` are never flagged and do not break a pattern.

    >>> z = np.array([0.5, 2.5, 0.1, 2.2, -1.0])
    >>> rule_flags(z, z, ["WE2"])["WE2"].tolist()
    [False, False, False, True, False]
    """
    codes = _rule_codes(rules)
    v, zz = np.asarray(values, dtype=float), np.asarray(z, dtype=float)
    ok = np.isfinite(zz)
    vc, zc = v[ok], zz[ok]
    out = {}
    for code in codes:
        flag = np.zeros(len(zz), dtype=bool)
        flag[ok] = _RULE_TESTS[code](vc, zc)
        out[code] = flag
    return pd.DataFrame(out, columns=list(codes))


def _run(mask: np.ndarray) -> np.ndarray:
    """Length of the run of True that ends at each position (0 where False)."""
    idx = np.arange(len(mask))
    last_false = np.maximum.accumulate(np.where(mask, -1, idx))
    return np.where(mask, idx - last_false, 0)


def _in_window(mask: np.ndarray, width: int) -> np.ndarray:
    """How many True among the ``width`` positions that end at each position."""
    total = np.cumsum(mask, dtype=np.int64)
    before = np.concatenate([np.zeros(width, dtype=np.int64), total[:-width]])[: len(mask)]
    return total - before


def _k_of_w(z: np.ndarray, k: int, width: int, beyond: float) -> np.ndarray:
    """k of ``width`` points in a row beyond ``beyond`` sigma on one side, completed by a
    point that is itself beyond."""
    hi, lo = z > beyond, z < -beyond
    return (hi & (_in_window(hi, width) >= k)) | (lo & (_in_window(lo, width) >= k))


def _same_side(z: np.ndarray, length: int) -> np.ndarray:
    return (_run(z > 0) >= length) | (_run(z < 0) >= length)


def _trend(v: np.ndarray, length: int) -> np.ndarray:
    """``length`` points in a row, each higher (or each lower) than the one before."""
    d = np.diff(v)
    flag = np.zeros(len(v), dtype=bool)
    flag[1:] = (_run(d > 0) >= length - 1) | (_run(d < 0) >= length - 1)
    return flag


def _alternating(v: np.ndarray, length: int) -> np.ndarray:
    """``length`` points in a row going up and down in turn."""
    s = np.sign(np.diff(v))
    flag = np.zeros(len(v), dtype=bool)
    if len(s) < 2:
        return flag
    flips = s[1:] * s[:-1] < 0  # the step into point j + 2 reverses the step before
    flag[2:] = _run(flips) >= length - 2
    return flag


def _mixture(z: np.ndarray, length: int) -> np.ndarray:
    """``length`` points in a row beyond 1 sigma with some above and some below."""
    out = np.abs(z) > 1
    both = (_in_window(z > 1, length) > 0) & (_in_window(z < -1, length) > 0)
    return (_run(out) >= length) & both


_RULE_TESTS = {
    "WE1": lambda v, z: np.abs(z) > 3,
    "WE2": lambda v, z: _k_of_w(z, 2, 3, 2.0),
    "WE3": lambda v, z: _k_of_w(z, 4, 5, 1.0),
    "WE4": lambda v, z: _same_side(z, 8),
    "N1": lambda v, z: np.abs(z) > 3,
    "N2": lambda v, z: _same_side(z, 9),
    "N3": lambda v, z: _trend(v, 6),
    "N4": lambda v, z: _alternating(v, 14),
    "N5": lambda v, z: _k_of_w(z, 2, 3, 2.0),
    "N6": lambda v, z: _k_of_w(z, 4, 5, 1.0),
    "N7": lambda v, z: _run(np.abs(z) < 1) >= 15,
    "N8": lambda v, z: _mixture(z, 8),
}


def _rule_codes(rules: Rules) -> tuple[str, ...]:
    if isinstance(rules, str):
        if rules in RULE_SETS:
            return RULE_SETS[rules]
        rules = [rules]
    codes = tuple(rules)
    unknown = [c for c in codes if c not in RULES]
    if unknown:
        raise WorkbenchError(
            f"rules {', '.join(map(str, unknown))} unknown: expected "
            f"{' or '.join(RULE_SETS)}, or codes from {', '.join(RULES)}"
        )
    return codes


# --- capability ------------------------------------------------------------------------


@dataclass(frozen=True)
class Capability:
    """Process capability against specification limits (None where a side is missing).

    Cp = (USL - LSL) / 6 sigma_within, Cpk = min(USL - mean, mean - LSL) / 3 sigma_within
    (one-sided: the side given); Pp and Ppk the same with the overall standard deviation.

    Cp and Cpk say what the process *could* do: they assume it is in statistical control,
    so that its short-term (within) sigma is its whole spread. ``stable`` checks that with
    the same sigma: at most as many readings beyond mean +- 3 sigma_within as chance gives
    an in-control process (``beyond`` counts them). A process that is not stable has no
    meaningful Cp or Cpk (None: a moving range that measures only sensor noise, while the
    process wanders with its load, would give a Cpk of 70 beside readings far outside
    their own limits); Pp and Ppk, from the overall spread, say what it did.
    """

    n: int
    mean: float
    sigma_within: float
    sigma_overall: float | None
    lsl: float | None
    usl: float | None
    cp: float | None
    cpk: float | None
    pp: float | None
    ppk: float | None
    #: readings (or subgroup means) beyond mean +- 3 sigma_within
    beyond: int = 0
    #: in statistical control against sigma_within: Cp and Cpk are given only then
    stable: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def capability(
    values: Sequence[float] | np.ndarray | pd.Series,
    *,
    lsl: float | None = None,
    usl: float | None = None,
    sigma_within: float | None = None,
    name: str = "",
) -> Capability:
    """Cp, Cpk, Pp and Ppk of ``values`` (nulls skipped). ``sigma_within`` defaults to the
    average moving range / d2 (individuals); the overall sigma is the sample standard
    deviation. Cp and Cpk are None when the readings are not in statistical control
    against sigma_within (see :class:`Capability`).

    >>> c = capability([9.0, 11.0] * 10, lsl=4, usl=16)
    >>> round(c.cp, 3), round(c.pp, 3), c.cpk == c.cp, c.stable
    (1.128, 1.949, True, True)
    >>> c = capability(np.r_[np.zeros(20), np.full(20, 10.0)] + np.tile([0.0, 1.0], 20), usl=30)
    >>> c.stable, c.beyond, c.cpk, round(c.ppk, 2)   # a step: not in control, no Cpk
    (False, 40, None, 1.6)
    """
    x = _floats(values, name)
    x = x[np.isfinite(x)]
    if x.size < MIN_POINTS:
        raise WorkbenchError(
            f"{_who(name)}capability needs at least {MIN_POINTS} non-null readings, got {x.size}"
        )
    if sigma_within is None:
        sigma_within = float(np.mean(np.abs(np.diff(x)))) / range_constants(2)[0]
    within = _checked_sigma(sigma_within, name, f"its {x.size} readings")
    overall = float(np.std(x, ddof=1))
    mean = float(np.mean(x))
    beyond = int(np.sum(np.abs(x - mean) > 3 * within))
    return _capability(x.size, mean, within, overall, lsl, usl, name, beyond)


def chance_beyond(n: int, p: float = 0.0027, level: float = 0.999) -> int:
    """How many of ``n`` in-control points may fall beyond 3 sigma by chance: the
    ``level`` quantile of Binomial(n, p) (p = 0.27%, the two tails beyond 3 sigma).

    >>> chance_beyond(30), chance_beyond(600), chance_beyond(100_000)
    (2, 7, 321)
    """
    if n < 1:
        return 0
    if n * p > 50:  # normal approximation, plenty good that far out
        return math.ceil(n * p + 3.0902 * math.sqrt(n * p * (1 - p)))
    total, k = 0.0, 0
    log_p, log_q = math.log(p), math.log1p(-p)
    while k <= n:
        total += math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
                          + k * log_p + (n - k) * log_q)  # fmt: skip
        if total >= level:
            return k
        k += 1
    return n


def _capability(
    n: int,
    mean: float,
    within: float,
    overall: float | None,
    lsl: float | None,
    usl: float | None,
    name: str,
    beyond: int = 0,
    points: int | None = None,
) -> Capability:
    """The indices; ``beyond`` of ``points`` (default ``n``) charted points lie beyond
    3 sigma_within, which decides ``stable``."""
    if lsl is None and usl is None:
        raise WorkbenchError(f"{_who(name)}capability needs a lower or an upper spec limit")
    if lsl is not None and usl is not None and not lsl < usl:
        raise WorkbenchError(f"{_who(name)}spec limits LSL={lsl} and USL={usl}: need LSL < USL")

    def indices(sigma: float | None) -> tuple[float | None, float | None]:
        if sigma is None or sigma <= 0:
            return None, None
        sides = [(usl - mean) / (3 * sigma)] if usl is not None else []
        sides += [(mean - lsl) / (3 * sigma)] if lsl is not None else []
        both = (usl - lsl) / (6 * sigma) if usl is not None and lsl is not None else None
        return both, min(sides)

    stable = beyond <= chance_beyond(n if points is None else points)
    cp, cpk = indices(within) if stable else (None, None)
    pp, ppk = indices(overall)
    return Capability(n, mean, within, overall, lsl, usl, cp, cpk, pp, ppk, beyond, stable)


# --- every machine and sensor of a run -------------------------------------------------


@dataclass(frozen=True)
class SensorCharts:
    """The charts of one machine's sensor."""

    machine_id: str
    sensor_type: str
    #: the individuals chart (raw readings) or the X-bar chart (bucketed readings)
    main: Chart
    #: its moving range or range chart
    dispersion: Chart
    ewma: Chart | None = None
    cusum: Chart | None = None
    capability: Capability | None = None

    def charts(self) -> list[Chart]:
        return [c for c in (self.main, self.dispersion, self.ewma, self.cusum) if c is not None]


@dataclass(frozen=True)
class SpcResults:
    """:func:`chart_per_sensor`'s answer: charts by (machine, sensor), and a summary table."""

    charts: dict[tuple[str, str], SensorCharts]
    #: one row per machine and sensor: points, baseline, centre, sigma, limits, one
    #: column per rule (points it flags), violations (points with any), EWMA and CUSUM
    #: signals, Cp/Cpk/Pp/Ppk, and ``error`` (why a series has no chart, e.g. a constant
    #: baseline); most violations first
    summary: pd.DataFrame
    rules: tuple[str, ...]

    def __getitem__(self, key: tuple[str, str]) -> SensorCharts:
        if key not in self.charts:
            raise WorkbenchError(f"no chart: {self.why(key)}")
        return self.charts[key]

    def worst(self, sensor_type: str | None = None) -> tuple[str, str]:
        """The (machine, sensor) with the most points breaking a rule (of ``sensor_type``)."""
        rows = self.summary[self.summary["error"].isna()]
        if sensor_type is not None:
            rows = rows[rows["sensor_type"] == sensor_type]
        if rows.empty:
            raise WorkbenchError(f"no charted series{f' of {sensor_type}' * bool(sensor_type)}")
        top = rows.sort_values(["violations", "machine_id"], ascending=[False, True]).iloc[0]
        return str(top["machine_id"]), str(top["sensor_type"])

    def why(self, key: tuple[str, str]) -> str:
        """Why ``(machine, sensor)`` has no chart (empty when it has one)."""
        if key in self.charts:
            return ""
        s = self.summary
        why = s.loc[(s["machine_id"] == key[0]) & (s["sensor_type"] == key[1]), "error"]
        if len(why) and isinstance(why.iloc[0], str):
            return str(why.iloc[0])
        return f"no {key[1]} readings of {key[0]}"

    def pick(
        self,
        machine_id: str | None = None,
        sensor_type: str | None = None,
        also: SpcResults | None = None,
    ) -> Pick:
        """The series to chart in detail: ``(machine_id, sensor_type)`` when both are given
        and it has a chart, else the charted series of ``sensor_type`` with the most rule
        violations, preferring one that ``also`` (another study of the same readings, e.g.
        with a fixed centre) charts too; failing that, one of any sensor. The pick's
        ``note`` says, in one line, what could not be charted and what was chosen instead;
        when no series has a chart, ``machine_id`` is None and the note says why.

        >>> df = pd.DataFrame({"machine_id": "m-0001", "sensor_type": "pressure",
        ...                    "ts": pd.date_range("2026-01-01", periods=24, freq="s"),
        ...                    "value": [1.0, 1.1, 0.9, 1.0] * 6})
        >>> chart_per_sensor(df).pick(sensor_type="temperature").note
        'no temperature series has a chart: charting m-0001/pressure instead'
        """
        notes = []
        if machine_id and sensor_type:
            if (machine_id, sensor_type) in self.charts:
                return Pick(machine_id, sensor_type, "")
            notes.append(self.why((machine_id, sensor_type)))
        rows = self.summary[self.summary["error"].isna()]
        if rows.empty:
            errors = self.summary["error"].dropna()
            why = f" (e.g. {errors.iloc[0]})" if len(errors) else " (no readings)"
            return Pick(None, None, "; ".join([*notes, f"no series has a chart{why}"]))
        rows = rows.sort_values(["violations", "machine_id", "sensor_type"],
                                ascending=[False, True, True])  # fmt: skip
        of_sensor = rows[rows["sensor_type"] == sensor_type] if sensor_type else rows
        if of_sensor.empty:
            notes.append(f"no {sensor_type} series has a chart")
            of_sensor = rows
        keys = list(zip(of_sensor["machine_id"], of_sensor["sensor_type"], strict=True))
        both = [k for k in keys if also is None or k in also.charts]
        chosen = (both or keys)[0]
        if notes:
            notes[-1] += f": charting {chosen[0]}/{chosen[1]} instead"
        return Pick(str(chosen[0]), str(chosen[1]), "; ".join(notes))


@dataclass(frozen=True)
class Pick:
    """:meth:`SpcResults.pick`'s answer: the series to chart (None: none can be), and a
    one-line note of what could not be charted (empty when the wish was met)."""

    machine_id: str | None
    sensor_type: str | None
    note: str = ""

    @property
    def key(self) -> tuple[str, str] | None:
        if self.machine_id is None or self.sensor_type is None:
            return None
        return self.machine_id, self.sensor_type


def chart_per_sensor(
    df: pd.DataFrame,
    *,
    baseline_s: float | None = None,
    rules: Rules = "western_electric",
    spec_limits: Mapping[str, Sequence[float | None]] | None = None,
    stat: Literal["R", "S"] = "R",
    lam: float = 0.2,
    L: float = 3.0,
    k: float = 0.5,
    h: float = 5.0,
    revise: bool = False,
    centre: Literal["fixed", "moving"] = "fixed",
) -> SpcResults:
    """Charts for every (machine, sensor) of a ``workbench.lab.readings`` DataFrame.

    Raw readings (``ts``, ``value``) give individuals + moving range, EWMA and CUSUM
    charts; bucketed ones (``bucket``, ``mean``, ``count``, ``min``, ``max``) X-bar and R
    charts with each bucket as a subgroup (its range is max - min). The baseline is the
    first ``baseline_s`` seconds of each series (default: all of it). ``spec_limits``
    maps a sensor type to ``(LSL, USL)`` (either may be None) for the capability
    indices. A series that cannot be charted (too short, constant) gets its reason in
    the summary's ``error`` column instead of stopping the others. ``centre="moving"``
    charts raw readings around their one-step-ahead forecast (see
    :func:`individuals_chart`), and its EWMA and CUSUM charts watch the forecast errors;
    the summary's centre and limits are then blank, and ``forecast_lam`` says how fast
    the forecast follows.

    >>> df = pd.DataFrame({"machine_id": "m-0001", "sensor_type": "temperature",
    ...                    "ts": pd.date_range("2026-01-01", periods=30, freq="s"),
    ...                    "value": [20.0, 20.2, 19.9, 20.1, 20.0] * 5 + [26.0] * 5})
    >>> res = chart_per_sensor(df, baseline_s=20, spec_limits={"temperature": (None, 30)})
    >>> res.summary[["machine_id", "points", "WE1", "violations", "cusum_signals"]]
      machine_id  points  WE1  violations  cusum_signals
    0     m-0001      30    5           5              5
    """
    codes = _rule_codes(rules)
    bucketed = {"bucket", "mean", "count"} <= set(df.columns)
    needed = {"machine_id", "sensor_type"} | (
        {"bucket", "mean", "count", "min", "max"} if bucketed else {"ts", "value"}
    )
    missing = needed - set(df.columns)
    if missing:
        raise WorkbenchError(
            f"readings lack the column(s) {', '.join(sorted(missing))}: expected the raw "
            "(ts, value) or bucketed (bucket, mean, count, min, max) form of "
            "workbench.lab.readings"
        )
    time_col = "bucket" if bucketed else "ts"
    span_s = _bucket_width_s(df[time_col]) if bucketed else 0.0
    limits = dict(spec_limits or {})
    charts: dict[tuple[str, str], SensorCharts] = {}
    rows = []
    for (machine, sensor), part in df.groupby(["machine_id", "sensor_type"], sort=True):
        part = part.sort_values(time_col, kind="stable")
        who = f"{machine}/{sensor}"
        base = None
        if baseline_s is not None:
            stamps = _ns(part[time_col])
            base = stamps < stamps[0] + round(baseline_s * 1e9)
        row: dict[str, Any] = {"machine_id": machine, "sensor_type": sensor,
                               "chart": "X-bar R" if bucketed else "I-MR",
                               "points": len(part), "error": None}  # fmt: skip
        try:
            if bucketed:
                spread = _floats(part["max"], who) - _floats(part["min"], who)
                groups = pd.DataFrame({"x": part["bucket"].array, "range": spread,
                                       "mean": _floats(part["mean"], who),
                                       "n": part["count"].to_numpy()})  # fmt: skip
                main, disp = xbar_chart(groups, stat="R", baseline=base, rules=codes,
                                        revise=revise, name=who, span_s=span_s)  # fmt: skip
                sc = SensorCharts(machine, sensor, main, disp)
                row["nulls"] = int(part["nulls"].sum()) if "nulls" in part else 0
                row["n"] = float(np.nanmedian(main.points["n"]))
            else:
                values = part["value"].to_numpy(dtype=float)
                main, disp = individuals_chart(values, part["ts"], baseline=base, rules=codes,
                                               revise=revise, centre=centre, name=who)  # fmt: skip
                est = {"center": main.center, "sigma": main.sigma}
                watched = main.points["residual"] if centre == "moving" else values
                ew = ewma_chart(watched, part["ts"], lam=lam, L=L, name=who, **est)
                cu = cusum_chart(watched, part["ts"], k=k, h=h, name=who, **est)
                if centre == "moving":
                    ew.params["watches"] = cu.params["watches"] = "forecast errors"
                sc = SensorCharts(machine, sensor, main, disp, ew, cu)
                row["nulls"] = int(np.isnan(values).sum())
            row.update(baseline=main.params["baseline_points"], center=main.center,
                       sigma=main.sigma)  # fmt: skip
            if main.params.get("centre") == "moving":
                row.update(chart="I-MR, moving centre", center=math.nan,
                           forecast_lam=main.params["forecast_lam"])  # fmt: skip
            else:
                root = math.sqrt(row.get("n", 1.0))
                row.update(lcl=main.center - 3 * main.sigma / root,
                           ucl=main.center + 3 * main.sigma / root)  # fmt: skip
            row.update(main.counts())
            row["violations"] = int(main.flagged().sum())
            if sc.ewma is not None and sc.cusum is not None:
                row["ewma_signals"] = int(sc.ewma.flagged().sum())
                row["cusum_signals"] = int(sc.cusum.flagged().sum())
            if sensor in limits:
                lsl, usl = limits[sensor]
                cap = _sensor_capability(sc, part, bucketed, lsl, usl, who)
                sc = SensorCharts(machine, sensor, main, disp, sc.ewma, sc.cusum, cap)
                row.update(cp=cap.cp, cpk=cap.cpk, pp=cap.pp, ppk=cap.ppk, stable=cap.stable)
            charts[(machine, sensor)] = sc
        except WorkbenchError as exc:
            log.info("no SPC chart: %s", exc)
            row["error"] = str(exc)
        rows.append(row)
    columns = ["machine_id", "sensor_type", "chart", "points", "nulls", "baseline", "center",
               "sigma", "lcl", "ucl", *["forecast_lam"] * (centre == "moving"), *codes,
               "violations", "ewma_signals", "cusum_signals", "stable", "cp", "cpk", "pp",
               "ppk", "error"]  # fmt: skip
    summary = pd.DataFrame(rows).reindex(columns=columns)
    if bucketed:
        summary = summary.drop(columns=["ewma_signals", "cusum_signals", "pp", "ppk"])
    counts = [*codes, "violations"]
    summary[counts] = summary[counts].fillna(0).astype(int)
    summary = summary.sort_values(["violations", "machine_id", "sensor_type"],
                                  ascending=[False, True, True], ignore_index=True)  # fmt: skip
    return SpcResults(charts, summary, codes)


def _sensor_capability(
    sc: SensorCharts,
    part: pd.DataFrame,
    bucketed: bool,
    lsl: float | None,
    usl: float | None,
    who: str,
) -> Capability:
    """Capability of one series: from the raw readings, or (buckets) from the subgroups'
    weighted mean and average R / d2, stable when few subgroup means lie beyond
    mean +- 3 sigma / sqrt(n); the overall sigma needs raw readings, so buckets give no
    Pp, Ppk."""
    if not bucketed:
        return capability(part["value"], lsl=lsl, usl=usl, name=who)
    p = sc.main.points
    n = p["n"].to_numpy(dtype=float)
    ok = n >= 1
    means = p["value"].to_numpy()[ok]
    mean = float(np.sum(means * n[ok]) / np.sum(n[ok]))
    ratio = sc.dispersion.points["value"] / (sc.dispersion.points["center"] / sc.main.sigma)
    within = _checked_sigma(float(np.nanmean(ratio)), who, "its subgroups")
    beyond = int(np.sum(np.abs(means - mean) > 3 * within / np.sqrt(n[ok])))
    return _capability(int(n[ok].sum()), mean, within, None, lsl, usl, who, beyond,
                       points=int(ok.sum()))  # fmt: skip


def faults_on(
    truth: pd.DataFrame,
    machine_id: str,
    sensor_type: str,
    kinds: Iterable[str] | None = VALUE_FAULTS,
) -> pd.DataFrame:
    """The ground-truth episodes (``workbench.lab.ground_truth``) that hit one machine's
    sensor: those of that sensor, and machine-wide ones (no sensor_type), of ``kinds``."""
    if truth.empty:
        return truth
    hit = (truth["machine_id"] == machine_id) & (
        truth["sensor_type"].isna() | (truth["sensor_type"] == sensor_type)
    )
    if kinds is not None:
        hit &= truth["kind"].isin(list(kinds))
    return truth.loc[hit]


def fault_coverage(
    results: SpcResults,
    truth: pd.DataFrame,
    *,
    kinds: Iterable[str] | None = VALUE_FAULTS,
    slack_s: float = 0.0,
) -> pd.DataFrame:
    """Which ground-truth fault episodes on charted sensors the charts signalled.

    One row per episode of ``kinds`` that hits at least one charted series (a machine-wide
    episode hits each of the machine's charted sensors): the episode's columns, then
    ``sensors`` (the charted ones it hits), ``flagged`` (a run rule fired on one of their
    main charts within [start, end + ``slack_s``]), ``flagged_any`` (that, or an EWMA or
    CUSUM signal), ``first_signal`` (time of the first rule violation), ``delay_s`` (from
    the episode's start) and ``first_rules`` (the rules broken there). A bucket counts
    when it overlaps the episode.
    """
    truth = truth if kinds is None else truth[truth["kind"].isin(list(kinds))]
    out = []
    for ep in truth.itertuples(index=False):
        start, end = _episode(ep, slack_s)
        every_sensor = pd.isna(ep.sensor_type)
        hits = [sc for (m, s), sc in results.charts.items()
                if m == ep.machine_id and (every_sensor or s == ep.sensor_type)]  # fmt: skip
        if not hits:
            continue
        first, first_rules, any_signal = None, "", False
        for sc in hits:
            for chart in sc.charts():
                if chart.kind in ("moving_range", "range", "stdev"):
                    continue
                v = chart.violations()
                if v.empty:
                    continue
                inside = _overlaps(_ns(v["x"]), chart.span_s, start, end)
                if not inside.any():
                    continue
                any_signal = True
                if chart is sc.main:
                    row = v.loc[inside].iloc[0]
                    when = pd.Timestamp(_ns(v["x"])[inside][0], tz="UTC")
                    if first is None or when < first:
                        first = when
                        first_rules = ",".join(c for c in chart.flags if row[c])
        rec = ep._asdict()
        rec.update(sensors=",".join(sorted(sc.sensor_type for sc in hits)),
                   flagged=first is not None, flagged_any=any_signal, first_signal=first,
                   delay_s=(max((first.value - start) / 1e9, 0.0)
                            if first is not None else math.nan),
                   first_rules=first_rules)  # fmt: skip
        out.append(rec)
    columns = [*truth.columns, "sensors", "flagged", "flagged_any", "first_signal", "delay_s",
               "first_rules"]  # fmt: skip
    return pd.DataFrame(out, columns=columns)


def coverage_by_kind(coverage: pd.DataFrame) -> pd.DataFrame:
    """Per fault kind: episodes, flagged (by a run rule), share, flagged_any (by anything),
    and the median delay to the first rule violation (s)."""
    if coverage.empty:
        return pd.DataFrame(columns=["kind", "episodes", "flagged", "share", "flagged_any",
                                     "median_delay_s"])  # fmt: skip
    g = coverage.groupby("kind", sort=True)
    out = pd.DataFrame({"episodes": g.size(), "flagged": g["flagged"].sum(),
                        "flagged_any": g["flagged_any"].sum(),
                        "median_delay_s": g["delay_s"].median()})  # fmt: skip
    out.insert(2, "share", out["flagged"] / out["episodes"])
    return out.reset_index()


def violations_in_faults(
    results: SpcResults,
    truth: pd.DataFrame,
    *,
    kinds: Iterable[str] | None = VALUE_FAULTS,
    slack_s: float = 0.0,
) -> float | None:
    """The share of main-chart points breaking a rule that fall inside a ground-truth
    episode on their machine and sensor (None when no point breaks a rule). The rest are
    the process's own behaviour (load changes, which SPC rightly sees as a changing mean)
    or false alarms."""
    inside = total = 0
    for (machine, sensor), sc in results.charts.items():
        v = sc.main.violations()
        if v.empty:
            continue
        total += len(v)
        at = _ns(v["x"])
        hit = np.zeros(len(v), dtype=bool)
        for ep in faults_on(truth, machine, sensor, kinds).itertuples(index=False):
            hit |= _overlaps(at, sc.main.span_s, *_episode(ep, slack_s))
        inside += int(hit.sum())
    return inside / total if total else None


# --- helpers ---------------------------------------------------------------------------


def _who(name: str) -> str:
    return f"{name}: " if name else ""


def _floats(values: Any, name: str) -> np.ndarray:
    if isinstance(values, np.ndarray) and values.dtype.kind == "f":
        return values.astype(float, copy=False)
    try:
        series = pd.to_numeric(pd.Series(values), errors="raise")
        return series.to_numpy(dtype=float, na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise WorkbenchError(f"{_who(name)}values are not all numbers: {exc}") from None


def _x_axis(ts: Any, n: int, name: str) -> np.ndarray:
    if ts is None:
        return np.arange(n)
    xs = ts.array if isinstance(ts, pd.Series | pd.Index) else np.asarray(ts)
    if len(xs) != n:
        raise WorkbenchError(f"{_who(name)}{len(xs)} timestamps for {n} values")
    return xs


def _baseline_mask(baseline: Baseline, n: int, name: str) -> np.ndarray:
    if baseline is None:
        return np.ones(n, dtype=bool)
    if isinstance(baseline, int | np.integer) and not isinstance(baseline, bool):
        if baseline < 1:
            raise WorkbenchError(f"{_who(name)}baseline={baseline} is not valid: expected >= 1")
        return np.arange(n) < baseline
    mask = np.asarray(baseline, dtype=bool)
    if mask.shape != (n,):
        raise WorkbenchError(f"{_who(name)}baseline mask has {mask.size} entries for {n} points")
    return mask


def _moving_range(x: np.ndarray) -> np.ndarray:
    """|x_i - x_j| with j the previous non-null reading; NaN at nulls and the first one."""
    ok = np.flatnonzero(np.isfinite(x))
    mr = np.full(len(x), np.nan)
    mr[ok[1:]] = np.abs(np.diff(x[ok]))
    return mr


def _phase_one_individuals(
    x: np.ndarray, base: np.ndarray, revise: bool, name: str
) -> tuple[float, float, int]:
    """Centre, sigma (MR-bar / d2) and the number of baseline readings used."""
    ok = np.flatnonzero(base & np.isfinite(x))
    if ok.size < MIN_POINTS:
        raise WorkbenchError(
            f"{_who(name)}the baseline has {ok.size} non-null readings; a control chart "
            f"needs at least {MIN_POINTS} (lengthen the baseline)"
        )
    if ok.size < RECOMMENDED_BASELINE:
        log.debug("%sbaseline of %d readings (%d recommended)", _who(name), ok.size,
                  RECOMMENDED_BASELINE)  # fmt: skip
    xb = x[ok]
    keep = np.ones(xb.size, dtype=bool)
    d2 = range_constants(2)[0]
    center = sigma = math.nan
    floor = max(MIN_POINTS, math.ceil(xb.size / 2))
    for _ in range(_PASSES if revise else 1):
        pair = keep[1:] & keep[:-1]  # moving ranges that touch no excluded reading
        mr = np.abs(np.diff(xb))[pair]
        center = float(np.mean(xb[keep]))
        sigma = float(np.mean(mr)) / d2 if mr.size else 0.0
        if sigma <= 0:
            what = f"{int(keep.sum())} baseline readings"
            if np.ptp(xb[keep]) == 0:
                what += f" are all {xb[keep][0]:g}"
            raise WorkbenchError(
                f"{_who(name)}the {what} (sigma 0: a stuck or constant sensor?); no control "
                "limits can be drawn: choose another baseline or sensor"
            )
        if not revise:
            break
        out = keep & (np.abs(xb - center) > 3 * sigma)
        if not _revise(keep, out, floor, name, "readings"):
            break
    return center, sigma, int(keep.sum())


def _check_resolution(x: np.ndarray, base: np.ndarray, sigma: float, name: str) -> None:
    """Wheeler's test for chunky data: readings whose resolution is coarse against their
    variation leave fewer than four possible moving ranges below the MR chart's limit, and
    the limits then flag ordinary readings."""
    levels = np.unique(x[base & np.isfinite(x)])
    if levels.size < 2:
        return
    step = float(np.min(np.diff(levels)))
    d2, d3 = range_constants(2)
    if (d2 + 3 * d3) * sigma <= 3 * step:
        raise WorkbenchError(
            f"{_who(name)}the readings move in steps of {step:.3g}, too coarse for their "
            f"variation (sigma {sigma:.3g}): the MR chart's limit is below 3 steps "
            "(Wheeler's test for chunky data), so no useful limits can be drawn"
        )


def _clip(x: np.ndarray, base: np.ndarray) -> float | None:
    """4 robust noise scales of a series' baseline: its median moving range / 0.954
    (sqrt(2) times the normal quantile 0.6745); None when that is 0 (a flat baseline)."""
    steps = np.abs(np.diff(x[base & np.isfinite(x)]))
    scale = float(np.median(steps)) / 0.954 if steps.size else 0.0
    return 4 * scale if scale > 0 else None


def _revise(keep: np.ndarray, out: np.ndarray, floor: int, name: str, what: str) -> bool:
    """Drop the ``out`` baseline points from ``keep`` (in place) for another Phase I pass;
    False when there is nothing to drop, or when dropping would leave fewer than ``floor``:
    a baseline that is mostly out of control is an unstable process, not one with a few
    assignable causes, and its last limits are kept."""
    if not out.any():
        return False
    if int((keep & ~out).sum()) < floor:
        log.info("%sbaseline not revised further: %d of its %d %s are beyond the limits",
                 _who(name), int(out.sum()), int(keep.sum()), what)  # fmt: skip
        return False
    keep &= ~out
    return True


def _observations(
    values: Any,
    baseline: Baseline,
    center: float | None,
    sigma: float | None,
    revise: bool,
    name: str,
) -> tuple[np.ndarray, np.ndarray, float, float, int]:
    """The values as floats, the baseline mask, and the centre, sigma and baseline points
    used (given ones win): what every chart of single observations starts from."""
    x = _floats(values, name)
    base = _baseline_mask(baseline, len(x), name)
    return x, base, *_center_sigma(x, base, center, sigma, revise, name)


def _center_sigma(
    x: np.ndarray,
    base: np.ndarray,
    center: float | None,
    sigma: float | None,
    revise: bool,
    name: str,
) -> tuple[float, float, int]:
    if center is not None and sigma is not None:
        return float(center), _given_sigma(sigma, name), 0
    est_center, est_sigma, used = _phase_one_individuals(x, base, revise, name)
    return (est_center if center is None else float(center),
            est_sigma if sigma is None else _given_sigma(sigma, name), used)  # fmt: skip


def _checked_sigma(sigma: float, name: str, what: str) -> float:
    if not math.isfinite(sigma) or sigma <= 0:
        raise WorkbenchError(
            f"{_who(name)}{what} show no variation (sigma {sigma:g}: a stuck or constant "
            "sensor?); no limits can be drawn"
        )
    return sigma


def _given_sigma(sigma: float, name: str) -> float:
    if not math.isfinite(sigma) or sigma <= 0:
        raise WorkbenchError(f"{_who(name)}sigma={sigma} is not valid: expected > 0")
    return float(sigma)


def _bucket_width_s(stamps: pd.Series) -> float:
    """The smallest step between bucket starts: the width the buckets were made with."""
    t = np.unique(_ns(stamps))
    return float(np.min(np.diff(t))) / 1e9 if t.size > 1 else 0.0


def _ns(stamps: Any) -> np.ndarray:
    """Timestamps as int64 nanoseconds since the epoch (naive ones taken as UTC)."""
    return pd.DatetimeIndex(pd.to_datetime(stamps, utc=True)).as_unit("ns").asi8


def _episode(ep: Any, slack_s: float) -> tuple[int, int]:
    """A ground-truth episode's [start, end + slack] in epoch nanoseconds."""
    start = pd.Timestamp(ep.start_ts)
    end = pd.Timestamp(ep.end_ts) + pd.Timedelta(seconds=slack_s)
    return _ns([start])[0], _ns([end])[0]


def _overlaps(at: np.ndarray, span_s: float, start: int, end: int) -> np.ndarray:
    """Points (each standing for ``span_s`` seconds from ``at``) that meet [start, end]."""
    return (at <= end) & ((at >= start) | (at + round(span_s * 1e9) > start))
