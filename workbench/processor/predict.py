"""Failure prediction inside the processor: the promoted model scores each machine-minute.

When the registry (:mod:`workbench.models.registry`) has a promoted version of the model the
processor is told to use (``WORKBENCH_MODEL``, default ``failure-precursor``), each machine's
final one-minute windows become one feature vector per minute and the model gives the
probability that the machine is failing or fails within its horizon. Each prediction is
stored in ``predictions`` with the model's name and version, in the same transaction as the
windows it was made from and the checkpoint that covers them.

**Features.** Per sensor S of the machine, from its window of the minute: ``S.mean``,
``S.std``, ``S.n`` (values), ``S.nulls`` (share of readings without a value), ``S.range``
(max - min), ``S.top`` (max - mean), ``S.p95`` (p95 - mean); and against its own earlier
windows: ``S.d1`` (mean - the previous minute's), ``S.dstd`` (std - the previous minute's),
``S.d5`` (mean - the mean five minutes before, over 5: a slope per minute), ``S.dev`` (mean -
the mean of its windows' means one to five minutes before: the level against the machine's
own recent past, since machines differ). A feature whose earlier window is missing, or
whose value is not finite, is left out (River's models take missing features). Training
makes the same vectors from the stored windows with the same code
(:func:`vectors_of_windows`), so what a model learns from is what it is given.

**Deterministic, as windows are.** A window's first final result (revision 0) can depend on
when the processor emitted it: a late reading that arrives after the watermark passed the
window's end but before the emission is in it, one that arrives after is a correction
(late policy ``update``). Only the last result of each window is a function of the stream
alone. So a machine-minute is scored when its windows are first final (the live
prediction, as soon as it can be made), and again whenever a window it depends on (its own
minute's, or one of the five before) is corrected; the stored prediction is the last one
made, from the windows' last results: the same whether the stream was processed undisturbed,
killed and restarted, in tiny batches or by several workers. For that, each key (run,
machine, sensor) keeps its recent final windows in a :class:`FeatureState` ring, sorted by
start, deep enough to cover the correction horizon plus five minutes; it is part of the
partition's checkpoint.

The model runs per machine and minute, not per reading: at 3 sensors and 1 Hz that is
once per 180 readings (its share shows in ``workbench bench``).

>>> import numpy as np
>>> fs = FeatureState(depth=8)
>>> fs.grow(1)
>>> stats = np.array([[60, 0, 20.0, 19.0, 21.0, 0.5, 20.8], [60, 0, 21.0, 20.0, 22.0, 0.5, 21.8]])
>>> machines, starts, (first, second) = take(
...     fs, np.array([0, 0]), np.array([0, 60_000]), stats, key_mkey=np.array([0]),
...     key_sensor=np.array([0]), sensor_names=np.array(["temperature"], dtype=object))
>>> starts.tolist(), "temperature.d1" in first
([0, 60000], False)
>>> second["temperature.d1"], second["temperature.dev"], second["temperature.range"]
(1.0, 1.0, 2.0)
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

VERSION = 2
#: The window width vectors are made of (the processor's first default width).
WIDTH_S = 60
WIDTH_MS = WIDTH_S * 1000
#: Minutes back the trend features look (``d5``, ``dev``); a correction re-scores as many
#: minutes after the corrected one.
HISTORY = 5
#: The start of a ring slot that holds no window.
NO_TIME = np.iinfo(np.int64).min
#: A window's statistics in a ring slot, in this order.
STATS = ("count", "nulls", "mean", "min", "max", "std", "q")
COUNT, NULLS, MEAN, MIN, MAX, STD, Q = range(len(STATS))
#: The feature names per sensor.
NAMES = ("mean", "std", "n", "nulls", "range", "top", "p95", "d1", "d5", "dstd", "dev")


def ring_depth(correction_horizon_s: float, late_policy: str) -> int:
    """Windows a key keeps: its newest, the five before it, and, under late policy
    ``update``, every window a late reading may still correct (and the five before those).

    >>> ring_depth(600, "update"), ring_depth(600, "drop")
    (17, 7)
    """
    horizon = math.ceil(correction_horizon_s / WIDTH_S) if late_policy == "update" else 0
    return horizon + HISTORY + 2


@dataclass(frozen=True)
class Predictor:
    """A registry version in use: its name, version, kind (``precursor``: a classifier of
    failures to come; ``anomaly``: a detector of unusual minutes), River model and alarm
    threshold. It only scores: the processor never learns (retraining is a job of its own,
    ``workbench report retrain``), so a score is a function of the version and the stream."""

    name: str
    version: int
    model: Any
    threshold: float
    kind: str = "precursor"

    @classmethod
    def promoted(cls, database_url: str, name: str) -> Predictor | None:
        """The promoted version of ``name``, or None (with a log line) when there is none."""
        from workbench.models import registry

        found = registry.promoted(database_url, name)
        if found is None:
            log.info("no promoted version of model %s: machine-minutes are not scored", name)
            return None
        meta, model = found
        log.info("machine-minutes are scored by model %s version %d (%s)", name, meta.version,
                 meta.kind)  # fmt: skip
        default = 0.5 if meta.kind == "precursor" else _anomaly().THRESHOLD
        threshold = float(meta.params.get("threshold", default))
        return cls(name, meta.version, model, threshold, meta.kind)

    def scores(self, vectors: list[dict[str, float]]) -> np.ndarray:
        """Per vector: the probability of a failure now or within the model's horizon
        (precursor), or how unusual the minute is, 0 to 1 (anomaly, on the features it
        learnt from)."""
        model = self.model
        if self.kind == "anomaly":
            select = _anomaly().select
            return np.array([model.score_one(select(x)) for x in vectors], float)
        return np.array([model.predict_proba_one(x).get(True, 0.0) for x in vectors], float)


def _anomaly() -> Any:
    from workbench.models import anomaly

    return anomaly


class FeatureState:
    """Per key: its last ``depth`` final one-minute windows, sorted by start (empty slots,
    :data:`NO_TIME`, first), each with its :data:`STATS`."""

    def __init__(self, depth: int = ring_depth(600, "update")) -> None:
        self.depth = depth
        self.starts = np.full((0, depth), NO_TIME, np.int64)
        self.stats = np.full((0, depth, len(STATS)), np.nan)

    @property
    def n_keys(self) -> int:
        return int(self.starts.shape[0])

    def grow(self, n_keys: int) -> None:
        """Room for key ids below ``n_keys``; a new key has had no window."""
        extra = n_keys - self.n_keys
        if extra <= 0:
            return
        d = self.depth
        self.starts = np.concatenate([self.starts, np.full((extra, d), NO_TIME, np.int64)])
        self.stats = np.concatenate([self.stats, np.full((extra, d, len(STATS)), np.nan)])

    def keep(self, ids: np.ndarray) -> None:
        """Keep the keys ``ids``, renumbered ``0..len(ids)-1`` in that order."""
        self.starts, self.stats = self.starts[ids], self.stats[ids]

    def arrays(self) -> dict[str, np.ndarray]:
        return {"version": np.array(VERSION), "starts": self.starts, "stats": self.stats}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], depth: int) -> FeatureState:
        """Rebuild from :meth:`arrays`, keeping each key's newest ``depth`` windows."""
        if int(arrays["version"]) != VERSION:
            raise ValueError(f"feature state version {int(arrays['version'])}, expected {VERSION}")
        starts, stats = np.asarray(arrays["starts"], np.int64), np.asarray(arrays["stats"], float)
        if stats.shape != (*starts.shape, len(STATS)):
            raise ValueError("feature state arrays of inconsistent shapes")
        state = cls(starts.shape[1])
        state.starts, state.stats = starts.copy(), stats.copy()
        state.resize(depth)
        return state

    def resize(self, depth: int) -> None:
        """Keep ``depth`` windows per key from now on (the newest, when fewer)."""
        if depth == self.depth:
            return
        keep = min(depth, self.depth)
        starts = np.full((self.n_keys, depth), NO_TIME, np.int64)
        stats = np.full((self.n_keys, depth, len(STATS)), np.nan)
        if keep:
            starts[:, depth - keep :] = self.starts[:, self.depth - keep :]
            stats[:, depth - keep :] = self.stats[:, self.depth - keep :]
        self.depth, self.starts, self.stats = depth, starts, stats

    def put(self, keys: np.ndarray, starts: np.ndarray, stats: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """Final window results in (first results or corrections; in emission order): each
        replaces its window's slot or takes a new one, the oldest window giving way. Returns
        the keys and starts of the windows taken in (one older than the whole ring is not:
        nothing that can still be scored depends on it).

        The common case, each key's next window after its newest, goes in at once; the rest
        (corrections, windows filled in behind, a key more than once) one by one."""
        newest = self.starts[keys, -1]
        once = np.zeros(keys.size, bool)
        if keys.size:
            _, first, counts = np.unique(keys, return_index=True, return_counts=True)
            once[first[counts == 1]] = True
        fast = once & (starts > newest)
        k = keys[fast]
        self.starts[k, :-1] = self.starts[k, 1:]
        self.stats[k, :-1] = self.stats[k, 1:]
        self.starts[k, -1], self.stats[k, -1] = starts[fast], stats[fast]
        taken = np.flatnonzero(fast).tolist()
        for i in np.flatnonzero(~fast).tolist():
            if self._put_one(int(keys[i]), int(starts[i]), stats[i]):
                taken.append(i)
        taken.sort()
        return keys[taken], starts[taken]

    def _put_one(self, k: int, s: int, row: np.ndarray) -> bool:
        ring = self.starts[k]
        at = int(np.searchsorted(ring, s))
        if at < self.depth and ring[at] == s:  # a correction of a window it holds
            self.stats[k, at] = row
        elif at == 0:  # older than every window kept (the ring is full)
            return False
        else:  # in before slot ``at``: the ones before it move down, the oldest drops
            self.starts[k, : at - 1] = ring[1:at]
            self.stats[k, : at - 1] = self.stats[k, 1:at]
            self.starts[k, at - 1], self.stats[k, at - 1] = s, row
        return True

    def features(self, keys: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """The :data:`NAMES` features of each key's window starting at ``starts`` (one row
        each; NaN where a feature cannot be made, every column NaN where the key has no such
        window), from the rings, at once."""
        ring, st = self.starts[keys], self.stats[keys]  # (n, depth), (n, depth, 7)
        s = starts[:, None]
        here = ring == s
        has = here.any(axis=1)
        w = _pick(st, here)
        mean, std = w[:, MEAN], w[:, STD]
        seen = w[:, COUNT] + w[:, NULLS]
        out = np.full((keys.size, len(NAMES)), np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, 0], out[:, 1], out[:, 2] = mean, std, w[:, COUNT]
            out[:, 3] = np.where(seen > 0, w[:, NULLS] / seen, np.nan)
            out[:, 4], out[:, 5], out[:, 6] = (
                w[:, MAX] - w[:, MIN],
                w[:, MAX] - mean,
                w[:, Q] - mean,
            )
            prev = _pick(st, ring == s - WIDTH_MS)
            out[:, 7] = mean - prev[:, MEAN]
            out[:, 8] = (mean - _pick(st, ring == s - HISTORY * WIDTH_MS)[:, MEAN]) / HISTORY
            out[:, 9] = std - prev[:, STD]
            # the means of the five minutes before, newest first, one at a time: a sum that
            # does not depend on where in the ring they sit (numpy's sum groups by position)
            at = here.argmax(axis=1)
            rows = np.arange(keys.size)
            total, n = np.zeros(keys.size), np.zeros(keys.size)
            for back in range(1, HISTORY + 1):
                slot = np.maximum(at - back, 0)
                m = st[rows, slot, MEAN]
                ok = (at >= back) & (ring[rows, slot] >= starts - HISTORY * WIDTH_MS)
                ok &= np.isfinite(m)
                total += np.where(ok, m, 0.0)
                n += ok
            out[:, 10] = np.where(n > 0, mean - total / np.maximum(n, 1), np.nan)
        out[~has] = np.nan
        return out


def _pick(stats: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per row, the statistics of the one slot ``mask`` marks (NaN where none does)."""
    at = mask.argmax(axis=1)
    picked = stats[np.arange(stats.shape[0]), at]
    return np.where(mask.any(axis=1)[:, None], picked, np.nan)


def window_stats(w: Any, rows: np.ndarray) -> np.ndarray:
    """The :data:`STATS` of window results ``rows`` (of :class:`~workbench.processor.windows.
    WindowRows`, or anything with its column names) as one array of shape (n, 7)."""
    return np.column_stack([np.asarray(w.count)[rows], np.asarray(w.nulls)[rows],
                            np.asarray(w.mean)[rows], np.asarray(w.min)[rows],
                            np.asarray(w.max)[rows], np.asarray(w.stddev)[rows],
                            np.asarray(w.quantile)[rows]]).astype(float)  # fmt: skip


def take(
    fs: FeatureState, keys: np.ndarray, starts: np.ndarray, stats: np.ndarray,
    key_mkey: np.ndarray, key_sensor: np.ndarray, sensor_names: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, list[dict[str, float]]]:  # fmt: skip
    """Final window results of one emission in (first results and corrections, in emission
    order), and the vectors of the machine-minutes they made or changed: machine keys,
    starts and vectors, by start then machine key. An emission of many minutes per key (a
    backlog worked through) widens the rings for the time it takes, so that no window a
    minute needs gives way before the minute is scored."""
    depth = fs.depth
    spread = int(np.unique(starts).size) if starts.size else 0
    if spread > 1:
        fs.resize(depth + spread)
    try:
        k, s = fs.put(keys, starts, stats)
        m, t = affected(fs, k, s, key_mkey)
        return vectors(fs, m, t, key_mkey, key_sensor, sensor_names)
    finally:
        fs.resize(depth)


def affected(fs: FeatureState, keys: np.ndarray, starts: np.ndarray, key_mkey: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The machine-minutes (machine keys, starts) whose vectors the windows ``keys`` x
    ``starts`` change: each window's own minute and the :data:`HISTORY` after it for which its
    key has a window; by start, then machine key."""
    steps = np.arange(HISTORY + 1) * WIDTH_MS
    k = np.repeat(keys, steps.size)
    t = (starts[:, None] + steps).reshape(-1)
    held = (fs.starts[k] == t[:, None]).any(axis=1)
    pairs = np.unique(np.column_stack([t[held], key_mkey[k[held]]]), axis=0)
    return pairs[:, 1].copy(), pairs[:, 0].copy()


def vectors(fs: FeatureState, mkeys: np.ndarray, starts: np.ndarray, key_mkey: np.ndarray,
            key_sensor: np.ndarray, sensor_names: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, list[dict[str, float]]]:  # fmt: skip
    """The vectors of machine-minutes (machine keys x starts) that have a window: a key of the
    machine with a window that minute gives its sensor's features (``sensor.feature``,
    finite values only, in name order). Returns the machine keys, starts and vectors of the
    minutes that have one."""
    if not mkeys.size:
        return mkeys, starts, []
    order = np.argsort(key_mkey, kind="stable")
    bounds = np.searchsorted(key_mkey[order], mkeys, side="left")
    ends = np.searchsorted(key_mkey[order], mkeys, side="right")
    sizes = ends - bounds
    owner = np.repeat(np.arange(mkeys.size), sizes)
    within = np.arange(owner.size) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    k = order[np.repeat(bounds, sizes) + within]
    names = sensor_names[key_sensor[k]]
    rows = np.lexsort((names, owner))  # a machine's sensors in name order
    k, owner, names = k[rows], owner[rows], names[rows]
    f = fs.features(k, starts[owner])
    finite = np.isfinite(f)
    cut = np.searchsorted(owner, np.arange(mkeys.size + 1))
    out: list[dict[str, float]] = []
    kept = []
    for i in range(mkeys.size):
        x: dict[str, float] = {}
        for r in range(cut[i], cut[i + 1]):
            labels = _labels(names[r])
            fr, ok = f[r], finite[r]
            for j in _ORDER:
                if ok[j]:
                    x[labels[j]] = float(fr[j])
        if x:
            kept.append(i)
            out.append(x)
    return mkeys[kept], starts[kept], out


#: :data:`NAMES` indexes in the order of the names (so a vector comes out in name order).
_ORDER = tuple(sorted(range(len(NAMES)), key=lambda j: NAMES[j]))
_LABELS: dict[str, tuple[str, ...]] = {}


def _labels(sensor: str) -> tuple[str, ...]:
    labels = _LABELS.get(sensor)
    if labels is None:
        labels = _LABELS[sensor] = tuple(f"{sensor}.{n}" for n in NAMES)
    return labels
