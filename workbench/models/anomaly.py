"""The anomaly model: Half-Space Trees over each machine-minute's scaled features.

Unsupervised: it learns what the factory's minutes look like and scores how far off a new
one is (River's ``HalfSpaceTrees``: 0 usual, 1 unlike anything in its reference window).
Features are scaled to [0, 1] by a running min-max scaler (the trees assume that range).
Each minute is scored before it is learnt from, like the classifier; it needs no label, so
it learns at once. A minute scoring at or above the threshold is an alarm on its machine.

It sees a subset of the features (:data:`FEATURES`): the window's shape and its changes
(range, max and p95 over the mean, the level against the machine's own past, the changes
from the previous minute, nulls), not the raw levels, which differ from machine to machine
and would make every machine unusual in its own way.

>>> detector = make_detector()
>>> detector["HalfSpaceTrees"].n_trees, detector["HalfSpaceTrees"].window_size
(25, 100)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from workbench.models.features import MachineMinute

#: The feature suffixes the detector sees (see the module).
FEATURES = ("range", "top", "p95", "dev", "d1", "dstd", "nulls")
#: The score at or above which a minute is an alarm (measured: see docs/models.md).
THRESHOLD = 0.8
#: Minutes in the trees' reference window (River's default, 250, is most of a small run).
WINDOW_SIZE = 100


def make_detector(seed: int = 0, window_size: int = WINDOW_SIZE) -> Any:
    """A fresh min-max scaler and Half-Space Trees (25 trees of height 8, a reference
    window of ``window_size`` minutes)."""
    from river import anomaly, preprocessing

    return preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(
        n_trees=25, height=8, window_size=window_size, seed=seed
    )


def select(x: dict[str, float]) -> dict[str, float]:
    """The features of :data:`FEATURES`."""
    return {k: v for k, v in x.items() if k.rsplit(".", 1)[-1] in FEATURES}


def progressive(detector: Any, rows: Sequence[MachineMinute], learn: bool = True) -> list[float]:
    """Each row's score, made before the detector learns it (``learn=False``: score only)."""
    scores = []
    for row in rows:
        x = select(row.x)
        scores.append(float(detector.score_one(x)))
        if learn:
            detector.learn_one(x)
    return scores
