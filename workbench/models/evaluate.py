"""Judging models against the ground truth, beside the alert rules, on the same terms.

**Failure prediction** (:func:`failure_prediction`). An alarm (a model's, or an alert's
opening) predicts a failure of its machine when it is raised after the H minutes before the
failure began and at most ``GRACE_S`` after its shutdown (the matching of
:mod:`workbench.processor.scoring`, widened before the start by the horizon), or during
the failure's degradation, however long before the runaway that began. An alarm during a
degradation whose failure comes after the run's end is right too, and predicts no failure
of the run: as in the run's own score, the wear explains it. Recall = failures predicted /
failures; precision = right alarms / alarms; lead time = failure start - first predicting
alarm (positive: a warning before the failure began; negative: raised while it ran), and
the time it left before the shutdown.

**Baselines** (:func:`baselines`): the ``runaway`` rule (temperature far off its baseline
for 5 s), and every rule aimed at failures (``detects`` names it: runaway, shutdown,
level-shift, unexplained; an alert of a rule aimed at several kinds that explains a fault
of another kind is not counted against failures, as in the rules' own score).

**Anomalies per fault kind** (:func:`window_alarm_score`): a window alarm explains a fault
of its machine when the window overlaps the fault, from ``EARLY_S`` before it began to
``GRACE_S`` after it ended; then the rules' definitions per kind: recall = faults explained
by an alarm / faults, precision = alarms explaining the kind / (those + alarms explaining
nothing), delay = first explaining alarm - fault start.

Several runs are pooled by naming each machine with its run (``run/machine``): their event
times may coincide (seeded runs start at the same instant) but their machines never match.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from workbench.processor.scoring import (
    ALERTABLE,
    EARLY_S,
    GRACE_S,
    Alert,
    Fault,
    alert_outcomes,
    catch_spans,
    explains,
    load_run,
    matches,
)
from workbench.processor.scoring import score as rule_score


def pooled(run_id: str, machine_id: str) -> str:
    """The machine's name among several runs."""
    return f"{run_id}/{machine_id}"


def load_truth(database_url: str, run_id: str) -> tuple[list[Alert], list[Fault]]:
    """A run's alerts and ground-truth faults, machines named by :func:`pooled`."""
    alerts, faults = load_run(database_url, run_id)
    return (
        [a._replace(machine_id=pooled(run_id, a.machine_id)) for a in alerts],
        [f._replace(machine_id=pooled(run_id, f.machine_id)) for f in faults],
    )


def failure_prediction(
    raised: Iterable[tuple[str, int]], faults: Iterable[Fault], horizon_ms: int
) -> dict[str, Any]:
    """Score alarms ``(machine_id, raised at, epoch ms)`` as predictions of the ``failure``
    faults (see the module).

    >>> f = [Fault("failure", "m", None, 600_000, 690_000)]
    >>> s = failure_prediction([("m", 640_000), ("m", 10_000), ("x", 1)], f, 300_000)
    >>> s["recall"], s["precision"], s["lead_time_s"]["mean"], s["before_shutdown_s"]["mean"]
    (1.0, 0.333, -40.0, 50.0)

    An alarm 9 minutes before the runaway, in the degradation that led to it, predicts it
    at a 5-minute horizon; one in a degradation whose failure came after the run is right:

    >>> f += [Fault("degradation", "m", None, 60_000, 600_000),
    ...       Fault("degradation", "x", None, 0, 900_000)]
    >>> s = failure_prediction([("m", 60_000), ("x", 1)], f, 300_000)
    >>> s["predicted"], s["precision"], s["lead_time_s"]["mean"]
    (1, 1.0, 540.0)
    """
    raised = sorted(raised, key=lambda a: a[1])
    faults = list(faults)
    spans = catch_spans(faults)  # a failure, and the degradation that led to it
    failures = [(f, spans[i][1:]) for i, f in enumerate(faults) if f.kind == "failure"]
    by_machine: dict[str, list[int]] = {}
    for machine, at in raised:
        by_machine.setdefault(machine, []).append(at)

    def alarm(machine: str, at: int) -> Alert:
        return Alert("alarm", machine, None, at, at, ("failure",))

    def predicts(machine: str, at: int, f: Fault, wear: list[Fault]) -> bool:
        return (
            machine == f.machine_id and f.start_ts - horizon_ms < at <= f.end_ts + GRACE_S * 1000
        ) or any(matches(alarm(machine, at), d) for d in wear)

    leads, before = [], []
    for f, wear in failures:
        hits = [
            at for at in by_machine.get(f.machine_id, ()) if predicts(f.machine_id, at, f, wear)
        ]
        if hits:
            leads.append((f.start_ts - hits[0]) / 1000)
            before.append((f.end_ts - hits[0]) / 1000)
    # right: it predicts a failure, or the run's score says a fault explains it (a
    # degradation whose failure came after the run's end)
    true = sum(
        1
        for m, at in raised
        if any(predicts(m, at, f, wear) for f, wear in failures) or explains(alarm(m, at), faults)
    )
    return {
        "failures": len(failures),
        "predicted": len(leads),
        "recall": round(len(leads) / len(failures), 3) if failures else None,
        "alarms": len(raised),
        "true_alarms": true,
        "precision": round(true / len(raised), 3) if raised else None,
        "lead_time_s": _summary(leads),
        "before_shutdown_s": _summary(before),
    }


def baselines(alerts: Sequence[Alert], faults: Sequence[Fault], horizon_ms: int) -> dict:
    """:func:`failure_prediction` of the ``runaway`` rule and of every rule aimed at
    failures (see the module)."""
    runaway = [(a.machine_id, a.opened_ts) for a in alerts if a.rule == "runaway"]
    aimed = [
        (o["machine_id"], o["opened_ts"])
        for o in alert_outcomes(alerts, faults)
        if "failure" in o["detects"] and (not o["explains"] or "failure" in o["explains"])
    ]
    return {
        "runaway": failure_prediction(runaway, faults, horizon_ms),
        "failure_rules": failure_prediction(aimed, faults, horizon_ms),
    }


def window_alarm_score(
    alarms: Sequence[dict], faults: Sequence[Fault], kinds: Sequence[str] = ALERTABLE
) -> dict[str, dict[str, Any]]:
    """Per fault kind, how window alarms (``machine_id``, ``start_ms``, ``end_ms``,
    ``at_ms``) explain the faults (see the module).

    >>> f = [Fault("spike", "m", "temperature", 90_000, 90_000)]
    >>> a = [{"machine_id": "m", "start_ms": 60_000, "end_ms": 120_000, "at_ms": 130_000},
    ...      {"machine_id": "m", "start_ms": 600_000, "end_ms": 660_000, "at_ms": 670_000}]
    >>> s = window_alarm_score(a, f, ["spike"])["spike"]
    >>> s["recall"], s["precision"], s["mean_delay_s"], s["alarms"]
    (1.0, 0.5, 40.0, 2)
    """

    def explains(a: dict, f: Fault) -> bool:
        return (a["machine_id"] == f.machine_id and a["start_ms"] <= f.end_ts + GRACE_S * 1000
                and a["end_ms"] >= f.start_ts - EARLY_S * 1000)  # fmt: skip

    why = [{f.kind for f in faults if explains(a, f)} for a in alarms]
    result = {}
    for kind in kinds:
        of_kind = [f for f in faults if f.kind == kind]
        delays = []
        for f in of_kind:
            hits = [a["at_ms"] for a in alarms if explains(a, f)]
            if hits:
                delays.append(max(0.0, (min(hits) - f.start_ts) / 1000))
        true = sum(1 for w in why if kind in w)
        judged = true + sum(1 for w in why if not w)
        result[kind] = {
            "precision": round(true / judged, 3) if judged else None,
            "recall": round(len(delays) / len(of_kind), 3) if of_kind else None,
            "mean_delay_s": round(statistics.fmean(delays), 1) if delays else None,
            "faults": len(of_kind),
            "detected": len(delays),
            "alarms": judged,
        }
    return result


def rules_by_kind(alerts: Sequence[Alert], faults: Sequence[Fault]) -> dict[str, dict]:
    """The rules' own score per fault kind (:func:`workbench.processor.scoring.score`) over
    pooled runs; a fault still going on at a run's end counts like any other here."""
    return {k: v for k, v in rule_score(alerts, faults).items() if k in ALERTABLE}


def _summary(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "median": None, "min": None, "max": None}
    return {
        "mean": round(statistics.fmean(values), 1),
        "median": round(statistics.median(values), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
    }
