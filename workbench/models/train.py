"""Train a model on stored runs, store it as a new version; evaluate a stored version.

Training is progressive validation (see :mod:`workbench.models.precursor`): the metrics a
new version is stored with are those of predictions it made before learning each
machine-minute, run after run in the order given. Evaluation scores another set of runs
with a stored version, which learns nothing from them.

>>> # train(url, ["run-a", "run-b"], kind="precursor", horizon_s=600)
>>> # evaluate(url, "failure-precursor", 1, ["run-c"])
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from workbench.models import ModelError, anomaly, evaluate, precursor, registry
from workbench.models.features import WIDTH_S, MachineMinute, run_vectors
from workbench.processor.scoring import Alert, Fault
from workbench.sinks import engine, redact, schema

#: What ``workbench model train --kind`` makes, and the name each is stored under by default.
DEFAULT_NAMES = {"precursor": "failure-precursor", "anomaly": "anomaly"}
DEFAULT_HORIZON_S = 600.0
DEFAULT_THRESHOLD = {"precursor": 0.5, "anomaly": anomaly.THRESHOLD}


@dataclass(frozen=True)
class RunData:
    """One run's machine-minutes (machines named ``run/machine``), alerts and faults."""

    run_id: str
    rows: list[MachineMinute]
    alerts: list[Alert]
    faults: list[Fault]


def load_runs(database_url: str, run_ids: Sequence[str]) -> list[RunData]:
    """The runs' data, each checked first: it exists, and has ground truth and windows."""
    for run_id in run_ids:
        check_run(database_url, run_id)
    out = []
    for run_id in run_ids:
        rows = [
            MachineMinute(run_id, evaluate.pooled(run_id, r.machine_id), r.start_ms, r.end_ms, r.x)
            for r in run_vectors(database_url, run_id)
        ]
        alerts, faults = evaluate.load_truth(database_url, run_id)
        out.append(RunData(run_id, rows, alerts, faults))
    return out


def check_run(database_url: str, run_id: str) -> None:
    """:class:`ModelError` in one line when ``run_id`` is not in the database, or has no
    ground truth or no windows to learn from."""
    where = redact(database_url)

    def has(table: sa.Table) -> bool:
        query = sa.select(sa.literal(1)).where(table.c.run_id == run_id).limit(1)
        return conn.execute(query).first() is not None

    eng = engine(database_url)
    try:
        with eng.connect() as conn:
            known = has(schema.runs) or has(schema.window_stats)
            truth = known and has(schema.chaos_events)
            windows = known and has(schema.window_stats)
    except sa.exc.OperationalError as exc:
        raise ModelError(f"cannot read runs from {where}: {exc.orig}") from None
    finally:
        eng.dispose()
    if not known:
        raise ModelError(f"run {run_id} is not in {where} (workbench db counts --run-id ID)")
    if not truth:
        raise ModelError(
            f"run {run_id} has no ground truth (no chaos events): models learn from runs "
            "made with --chaos or a --scenario"
        )
    if not windows:
        raise ModelError(f"run {run_id} has no windows: was it processed?")


def train(
    database_url: str,
    run_ids: Sequence[str],
    kind: str = "precursor",
    name: str | None = None,
    horizon_s: float = DEFAULT_HORIZON_S,
    learner: str = precursor.LEARNERS[0],
    threshold: float | None = None,
    seed: int = 0,
) -> registry.ModelVersion:
    """Learn a model of ``kind`` from the runs by progressive validation and store it as the
    next version of ``name`` with the metrics of that validation."""
    if kind not in DEFAULT_NAMES:
        raise ModelError(f"model kind {kind!r} is not known: expected precursor or anomaly")
    threshold = DEFAULT_THRESHOLD[kind] if threshold is None else threshold
    if kind == "precursor":
        model = precursor.make_learner(learner, seed)  # an unknown learner stops us first
    else:
        model = anomaly.make_detector(seed)
    data = load_runs(database_url, run_ids)
    params: dict[str, Any] = {"threshold": threshold, "seed": seed, "width_s": WIDTH_S}
    if kind == "precursor":
        horizon_ms = round(horizon_s * 1000)
        # the names it learnt from: what a prediction may give it (workbench.models.predict)
        seen = sorted({name for d in data for r in d.rows for name in r.x})
        params |= {"learner": learner, "horizon_s": horizon_s, "features": seen}
        scores = []
        for d in data:
            labels = precursor.label_rows(d.rows, d.faults, horizon_ms)
            scores.append(precursor.progressive(model, d.rows, labels))
        metrics = precursor_metrics(data, scores, threshold, horizon_ms)
    else:
        params |= {"features": list(anomaly.FEATURES), "window_size": anomaly.WINDOW_SIZE}
        scores = [anomaly.progressive(model, d.rows) for d in data]
        metrics = anomaly_metrics(data, scores, threshold)
    return registry.save(database_url, name or DEFAULT_NAMES[kind], kind, model, params,
                         list(run_ids), metrics)  # fmt: skip


def evaluate_version(
    database_url: str, name: str, version: int, run_ids: Sequence[str]
) -> dict[str, Any]:
    """Score the runs with a stored version, learning nothing: its metrics on them."""
    meta, model = registry.load(database_url, name, version)
    data = load_runs(database_url, run_ids)
    threshold = meta.params["threshold"]
    if meta.kind == "precursor":
        scores = [[precursor.probability(model, r.x) for r in d.rows] for d in data]
        metrics = precursor_metrics(data, scores, threshold, round(meta.params["horizon_s"] * 1000))
    else:
        scores = [anomaly.progressive(model, d.rows, learn=False) for d in data]
        metrics = anomaly_metrics(data, scores, threshold)
    return {"name": name, "version": version, "kind": meta.kind, "runs": list(run_ids),
            "trained_on": meta.runs, "metrics": metrics}  # fmt: skip


def precursor_metrics(
    data: Sequence[RunData], scores: Sequence[Sequence[float]], threshold: float, horizon_ms: int
) -> dict[str, Any]:
    """Per machine-minute, per failure (with the chance level of the same alarms), and the
    rules' baselines, over the runs pooled."""
    rows = [r for d in data for r in d.rows]
    flat = [s for run in scores for s in run]
    faults = [f for d in data for f in d.faults]
    alerts = [a for d in data for a in d.alerts]
    labels = precursor.label_rows(rows, faults, horizon_ms)
    alarms = [(a["machine_id"], a["at_ms"]) for a in precursor.alarms(rows, flat, threshold)]
    machines: dict[str, set[str]] = {}
    for r in rows:
        machines.setdefault(r.run_id, set()).add(r.machine_id)
    return {
        "windows": precursor.window_metrics(labels, flat, threshold),
        "failures": evaluate.failure_prediction(alarms, faults, horizon_ms),
        "chance": chance(alarms, faults, machines, horizon_ms),
        "baselines": evaluate.baselines(alerts, faults, horizon_ms),
    }


def anomaly_metrics(
    data: Sequence[RunData], scores: Sequence[Sequence[float]], threshold: float
) -> dict[str, Any]:
    """Per fault kind, the detector's window alarms and the rules' alerts, runs pooled."""
    alarms = [
        {"machine_id": r.machine_id, "start_ms": r.start_ms, "end_ms": r.end_ms,
         "at_ms": r.end_ms + precursor.DECISION_DELAY_MS}
        for d, run in zip(data, scores, strict=True)
        for r, s in zip(d.rows, run, strict=True) if s >= threshold
    ]  # fmt: skip
    faults = [f for d in data for f in d.faults]
    alerts = [a for d in data for a in d.alerts]
    return {
        "windows": sum(len(d.rows) for d in data),
        "alarms": len(alarms),
        "by_kind": evaluate.window_alarm_score(alarms, faults),
        "rules": evaluate.rules_by_kind(alerts, faults),
    }


def chance(
    alarms: Sequence[tuple[str, int]],
    faults: Sequence[Fault],
    machines: dict[str, set[str]],
    horizon_ms: int,
    rounds: int = 20,
    seed: int = 0,
) -> dict[str, float | None]:
    """The recall and precision the same alarms would have on machines drawn at random
    from their run (mean of ``rounds`` draws): what the wide window before a failure gives
    for nothing."""
    rng = random.Random(seed)
    pools = {run: sorted(ms) for run, ms in machines.items()}
    recalls, precisions = [], []
    for _ in range(rounds):
        moved = [(rng.choice(pools[m.split("/", 1)[0]]), at) for m, at in alarms]
        s = evaluate.failure_prediction(moved, faults, horizon_ms)
        recalls.append(s["recall"])
        precisions.append(s["precision"])

    def mean(values: list[float | None]) -> float | None:
        kept = [v for v in values if v is not None]
        return round(sum(kept) / len(kept), 3) if kept else None

    return {"recall": mean(recalls), "precision": mean(precisions)}
