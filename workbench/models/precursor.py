"""The failure-precursor classifier: is this machine failing, or about to within H minutes?

**Label.** A machine-minute is positive when its window overlaps a ``failure`` of its
machine (chaos ground truth: the overheating runaway, from its start to the shutdown) or
the H minutes before that failure began. The simulator's failures have a precursor: for 5
to 15 minutes before the runaway the machine degrades (its vibration rises and grows
noisier, it runs warmer at equal load; ground truth records it as a ``degradation``, which
the label leaves aside: the horizon counts back from the runaway), so the minutes before a
start can tell. With the precursor off (``--failure-lead 0``) they cannot, and what a model
learns is the runaway itself, a minute or two before the shutdown.

**Progressive validation, as a deployed model would live it.** Machine-minutes are taken in
event-time order (window end, then machine); each is scored by the model as it is at that
moment, and learnt from only once its label is known: H minutes after the window's end
(no failure started by then), or at the failure's shutdown if that is later (ground truth
records a failure when it ends). Scoring before learning with a delay is River's
``progressive_val_score(..., delay=...)``, by hand, so that the delay can depend on the row.

>>> rows = [MachineMinute("r", "m", 0, 60_000, {"t": 1.0}),
...         MachineMinute("r", "m", 60_000, 120_000, {"t": 9.0})]
>>> labels = [Label(False, 120_000), Label(True, 240_000)]
>>> [round(p, 4) for p in progressive(make_learner("logistic"), rows, labels)]
[0.5, 0.4988]

The first minute is scored by an untrained model (a coin); the second after the first was
learnt, since its label is known by the second's end (120 s).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np

from workbench.models import ModelError
from workbench.models.features import MachineMinute
from workbench.processor.scoring import Fault

#: The learners `workbench model train --learner` offers; the first is the default.
LEARNERS = ("logistic", "tree", "forest")


class Label(NamedTuple):
    """A machine-minute's truth, and the event time (ms) from which it is known."""

    positive: bool
    known_ms: int


def make_learner(learner: str = "logistic", seed: int = 0) -> Any:
    """A fresh River classifier: ``logistic`` (standard scaling, then logistic regression),
    ``tree`` (scaling, then a Hoeffding adaptive tree) or ``forest`` (an adaptive random
    forest of 10 trees)."""
    from river import forest, linear_model, preprocessing, tree

    if learner == "logistic":
        return preprocessing.StandardScaler() | linear_model.LogisticRegression()
    if learner == "tree":
        return preprocessing.StandardScaler() | tree.HoeffdingAdaptiveTreeClassifier(seed=seed)
    if learner == "forest":
        return forest.ARFClassifier(n_models=10, seed=seed)
    raise ModelError(f"learner {learner!r} is not known: expected one of {', '.join(LEARNERS)}")


def label_rows(
    rows: Sequence[MachineMinute], failures: Iterable[Fault], horizon_ms: int
) -> list[Label]:
    """Each row's :class:`Label` against the run's ``failure`` faults (see the module)."""
    by_machine: dict[str, list[Fault]] = {}
    for f in failures:
        if f.kind == "failure":
            by_machine.setdefault(f.machine_id, []).append(f)
    out = []
    for row in rows:
        hit = [f for f in by_machine.get(row.machine_id, ())
               if row.end_ms > f.start_ts - horizon_ms and row.start_ms < f.end_ts]  # fmt: skip
        known = max([row.end_ms + horizon_ms, *(f.end_ts for f in hit)])
        out.append(Label(bool(hit), known))
    return out


def probability(model: Any, x: dict[str, float]) -> float:
    """The model's probability that the row is positive (0 from a model that knows no class
    yet)."""
    return float(model.predict_proba_one(x).get(True, 0.0))


def progressive(model: Any, rows: Sequence[MachineMinute], labels: Sequence[Label]) -> list[float]:
    """Score each row, then learn it once its label is known (see the module); learn what is
    left at the end. Returns the probabilities, each made before its row was learnt."""
    waiting: list[tuple[int, int]] = []  # (known_ms, row index)
    scores = []
    for i, row in enumerate(rows):
        while waiting and waiting[0][0] <= row.end_ms:
            _, j = heapq.heappop(waiting)
            model.learn_one(rows[j].x, labels[j].positive)
        scores.append(probability(model, row.x))
        heapq.heappush(waiting, (labels[i].known_ms, i))
    while waiting:
        _, j = heapq.heappop(waiting)
        model.learn_one(rows[j].x, labels[j].positive)
    return scores


def window_metrics(
    labels: Sequence[Label], scores: Sequence[float], threshold: float
) -> dict[str, Any]:
    """Per machine-minute: precision, recall and F1 at ``threshold``, ROC AUC (exact, by
    ranks: the chance a positive minute scores above a negative one) and log loss.

    >>> m = window_metrics([Label(True, 0), Label(False, 0), Label(False, 0)],
    ...                    [0.9, 0.6, 0.2], threshold=0.5)
    >>> m["precision"], m["recall"], m["roc_auc"], m["positives"]
    (0.5, 1.0, 1.0, 1)
    """
    y = np.array([label.positive for label in labels], dtype=bool)
    p = np.asarray(scores, dtype=float)
    flagged = p >= threshold
    tp = int(np.sum(flagged & y))
    precision = tp / int(flagged.sum()) if flagged.any() else None
    recall = tp / int(y.sum()) if y.any() else None
    f1 = (2 * precision * recall / (precision + recall)
          if precision and recall else (0.0 if precision is not None else None))  # fmt: skip
    eps = 1e-15
    clipped = np.clip(p, eps, 1 - eps)
    log_loss = (
        float(-np.mean(np.where(y, np.log(clipped), np.log(1 - clipped)))) if y.size else None
    )
    return {
        "windows": int(y.size),
        "positives": int(y.sum()),
        "flagged": int(flagged.sum()),
        "precision": _round(precision),
        "recall": _round(recall),
        "f1": _round(f1),
        "roc_auc": _round(roc_auc(y, p)),
        "log_loss": _round(log_loss),
    }


def roc_auc(y: np.ndarray, p: np.ndarray) -> float | None:
    """The Mann-Whitney estimate of the ROC AUC (ties count half); None without both
    classes."""
    pos, neg = p[y], p[~y]
    if not pos.size or not neg.size:
        return None
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(order.size)
    values = np.concatenate([pos, neg])[order]
    # average ranks over ties
    _, first, counts = np.unique(values, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2 + 1
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


def alarms(rows: Sequence[MachineMinute], scores: Sequence[float], threshold: float) -> list[dict]:
    """The model's alarms: a machine-minute at or above ``threshold`` whose machine's
    previous minute was below it (or missing). An alarm is raised when its window is final,
    :data:`DECISION_DELAY_MS` after the window's end."""
    above: dict[str, int] = {}  # machine -> end_ms of its last minute at or above threshold
    out = []
    for row, s in zip(rows, scores, strict=True):
        if s < threshold:
            continue
        if above.get(row.machine_id) != row.start_ms:
            out.append({"machine_id": row.machine_id, "at_ms": row.end_ms + DECISION_DELAY_MS,
                        "start_ms": row.start_ms, "end_ms": row.end_ms, "score": s})  # fmt: skip
        above[row.machine_id] = row.end_ms
    return out


#: A window is final once its run's watermark passes its end: the processor's default
#: allowed lateness (``WORKBENCH_ALLOWED_LATENESS_S``, 10 s) after it.
DECISION_DELAY_MS = 10_000


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)
