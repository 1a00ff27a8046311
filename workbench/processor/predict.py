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
>>> touched = fs.put(np.array([0, 0]), np.array([0, 60_000]), stats)
>>> x = fs.vector(np.array([0]), np.array(["temperature"], dtype=object), 60_000)
>>> x["temperature.d1"], x["temperature.dev"], x["temperature.range"]
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
    """A registry version in use: its name, version, River model and alarm threshold."""

    name: str
    version: int
    model: Any
    threshold: float

    @classmethod
    def promoted(cls, database_url: str, name: str) -> Predictor | None:
        """The promoted version of ``name``, or None (with a log line) when there is none or
        it is not a failure-precursor model."""
        from workbench.models import registry

        found = registry.promoted(database_url, name)
        if found is None:
            log.info("no promoted version of model %s: machine-minutes are not scored", name)
            return None
        meta, model = found
        if meta.kind != "precursor":
            log.warning("model %s version %d is a %s model, not a failure precursor: machine-"
                        "minutes are not scored", name, meta.version, meta.kind)  # fmt: skip
            return None
        log.info("machine-minutes are scored by model %s version %d", name, meta.version)
        return cls(name, meta.version, model, float(meta.params.get("threshold", 0.5)))

    def probabilities(self, vectors: list[dict[str, float]]) -> np.ndarray:
        """The model's probability of a failure (now or within its horizon) per vector."""
        model = self.model
        return np.array([model.predict_proba_one(x).get(True, 0.0) for x in vectors], float)


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

    def put(self, keys: np.ndarray, starts: np.ndarray, stats: np.ndarray) -> list[tuple[int, int]]:
        """Final window results in (a first result or a correction; in emission order):
        each replaces its window's slot or takes a new one, the oldest window giving way.
        Returns (key, start) of the windows taken in (a window older than the whole ring is
        not: nothing that can still be scored depends on it)."""
        taken = []
        for k, s, row in zip(keys.tolist(), starts.tolist(), stats, strict=True):
            ring = self.starts[k]
            at = int(np.searchsorted(ring, s))
            if at < self.depth and ring[at] == s:  # a correction of a window it holds
                self.stats[k, at] = row
            elif at == 0:  # older than every window kept (the ring is full)
                continue
            else:  # in before slot ``at``: the ones before it move down, the oldest drops
                self.starts[k, : at - 1] = ring[1:at]
                self.stats[k, : at - 1] = self.stats[k, 1:at]
                self.starts[k, at - 1], self.stats[k, at - 1] = s, row
            taken.append((k, s))
        return taken

    def vector(self, keys: np.ndarray, sensors: np.ndarray, start: int) -> dict[str, float]:
        """The vector of one machine's minute from the rings of its keys (``sensors``: each
        key's sensor name); empty when none of them has a window of that minute."""
        x: dict[str, float] = {}
        for k, sensor in zip(keys.tolist(), sensors.tolist(), strict=True):
            ring = self.starts[k]
            at = int(np.searchsorted(ring, start))
            if at == self.depth or ring[at] != start:
                continue
            w = self.stats[k, at]
            mean, std = w[MEAN], w[STD]
            seen = w[COUNT] + w[NULLS]
            values = {"mean": mean, "std": std, "n": w[COUNT],
                      "nulls": w[NULLS] / seen if seen > 0 else math.nan,
                      "range": w[MAX] - w[MIN], "top": w[MAX] - mean,
                      "p95": w[Q] - mean}  # fmt: skip
            lo = int(np.searchsorted(ring, start - HISTORY * WIDTH_MS))
            earlier = self.stats[k, lo:at, MEAN]
            before = ring[lo:at]
            if at and ring[at - 1] == start - WIDTH_MS:
                values["d1"] = mean - self.stats[k, at - 1, MEAN]
                values["dstd"] = std - self.stats[k, at - 1, STD]
            if at > lo and before[0] == start - HISTORY * WIDTH_MS:
                values["d5"] = (mean - earlier[0]) / HISTORY
            finite = earlier[np.isfinite(earlier)]
            if finite.size:
                values["dev"] = mean - float(finite.mean())
            for name in NAMES:
                v = values.get(name)
                if v is not None and math.isfinite(v):
                    x[f"{sensor}.{name}"] = float(v)
        # one order, whatever the keys' ids: a model sums in the order it is given
        return dict(sorted(x.items()))


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
) -> tuple[list[tuple[int, int]], list[dict[str, float]]]:  # fmt: skip
    """Final window results of one emission in (first results and corrections, in emission
    order), and the vectors of the machine-minutes they made or changed, by start then
    machine key. An emission of many minutes per key (a backlog worked through) widens the
    rings for the time it takes, so that no window a minute needs gives way before the
    minute is scored."""
    depth = fs.depth
    spread = int(np.unique(starts).size) if starts.size else 0
    if spread > 1:
        fs.resize(depth + spread)
    try:
        taken = fs.put(keys, starts, stats)
        minutes = affected(fs, taken, key_mkey)
        keys_of = keys_by_machine(key_mkey, {m for m, _ in minutes})
        return score(fs, minutes, keys_of, sensor_names, key_sensor)
    finally:
        fs.resize(depth)


def affected(fs: FeatureState, taken: list[tuple[int, int]], key_mkey: np.ndarray
             ) -> list[tuple[int, int]]:  # fmt: skip
    """The machine-minutes (machine key, start) whose vectors the windows ``taken`` change:
    their own minute and the :data:`HISTORY` after it that have windows, by start then
    machine key."""
    out = set()
    for k, s in taken:
        m = int(key_mkey[k])
        out.add((m, s))
        for step in range(1, HISTORY + 1):
            out.add((m, s + step * WIDTH_MS))
    return sorted(out, key=lambda ms: (ms[1], ms[0]))


def score(
    fs: FeatureState,
    minutes: list[tuple[int, int]],
    keys_of: dict[int, np.ndarray],
    sensor_names: np.ndarray,
    key_sensor: np.ndarray,
) -> tuple[list[tuple[int, int]], list[dict[str, float]]]:
    """The vectors of ``minutes`` that have a window (the others are left out)."""
    kept, vectors = [], []
    for m, s in minutes:
        keys = keys_of.get(m)
        if keys is None:
            continue
        x = fs.vector(keys, sensor_names[key_sensor[keys]], s)
        if x:
            kept.append((m, s))
            vectors.append(x)
    return kept, vectors


def keys_by_machine(key_mkey: np.ndarray, machines: set[int]) -> dict[int, np.ndarray]:
    """The key ids of each machine key in ``machines``."""
    wanted = np.flatnonzero(np.isin(key_mkey, np.fromiter(machines, np.int64, len(machines))))
    out: dict[int, list[int]] = {}
    for k, m in zip(wanted.tolist(), key_mkey[wanted].tolist(), strict=True):
        out.setdefault(m, []).append(k)
    return {m: np.array(ks, np.int64) for m, ks in out.items()}
