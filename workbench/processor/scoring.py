"""Score what the pipeline detected against what chaos injected: per fault kind precision,
recall and detection delay.

Matching: an alert matches a fault when it is on the same machine, on the same sensor
(or either names no sensor: a whole-machine fault, or an alert on every sensor), and its
first breach lies between ``EARLY_S`` before the fault began and ``GRACE_S`` after it
ended. Then, for each fault kind K:

- recall = faults of kind K matched by an alert of a rule aimed at K (its ``detects``
  lists K) / faults of kind K
- precision = alerts of rules aimed at K that match a fault of kind K / alerts of rules
  aimed at K, leaving out those explained by another kind they aim at (a level-shift
  rule aimed at drift and failure that caught a failure is right, and not a wrong
  drift alert); None when no rule aims at K
- mean delay = mean over detected faults of (first matching alert's opening - fault start)

A fault still in progress when the run ended (it ends within a second of the run's last
reading) and not caught by then is ``open_at_end``: counted apart, not as a miss, since
no detector could have been expected to answer yet (a drift takes minutes to walk off).

A failure's ``degradation`` (the wear before its runaway, recorded apart; ending where the
failure begins) is part of that failure, not a kind of its own: no rule has to catch it,
so it is not scored and weighs on no kind's recall. An alert aimed at failures that matches
it is right, explained by the failure to come, and, the first time, detects that failure
early: its delay counts as 0 and the failure as ``early``.

>>> faults = [Fault("spike", "m-1", "temperature", 10_000, 10_000)]
>>> alerts = [Alert("spike-temp", "m-1", "temperature", 10_000, 11_000, ("spike",)),
...           Alert("spike-temp", "m-2", "temperature", 50_000, 50_000, ("spike",))]
>>> s = score(alerts, faults)["spike"]
>>> s["precision"], s["recall"], s["mean_delay_s"], s["detected"], s["alerts"]
(0.5, 1.0, 1.0, 1, 2)
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from typing import Any, NamedTuple

import sqlalchemy as sa

from workbench.simulator.labels import iso_utc
from workbench.sinks import schema
from workbench.sinks.postgres import engine

EARLY_S = 5.0
GRACE_S = 30.0
#: Faults of the machine or its sensors, which alerts are for. The network's faults (loss,
#: duplicates, latency, bursts, malformed messages) are accounted for elsewhere in a run's
#: summary (dropped, duplicates absorbed, late, dead-lettered); they are scored only if a
#: rule says it detects them.
ALERTABLE = ("spike", "drift", "stuck", "failure", "power")
#: Ground-truth kinds that are the first stretch of a fault of another kind: an alert aimed
#: at that kind that matches one is explained by it, and detects it early.
PRECEDES = {"degradation": "failure"}


class Fault(NamedTuple):
    kind: str
    machine_id: str
    sensor_type: str | None
    start_ts: int
    end_ts: int


class Alert(NamedTuple):
    rule: str
    machine_id: str
    sensor_type: str | None
    start_ts: int  # first breach
    opened_ts: int  # when the alert was raised
    detects: tuple[str, ...]


def matches(alert: Alert, fault: Fault) -> bool:
    if alert.machine_id != fault.machine_id:
        return False
    if alert.sensor_type and fault.sensor_type and alert.sensor_type != fault.sensor_type:
        return False
    return fault.start_ts - EARLY_S * 1000 <= alert.start_ts <= fault.end_ts + GRACE_S * 1000


def explains(alert: Alert, faults: Iterable[Fault]) -> set[str]:
    """The kinds, among those ``alert`` aims at, of the faults it matches; a failure's
    degradation explains an alert aimed at failures (or at degradations)."""
    return {
        k
        for f in faults
        for k in {f.kind, PRECEDES.get(f.kind, f.kind)}
        if k in alert.detects and matches(alert, f)
    }


def catch_spans(faults: list[Fault]) -> dict[int, list[Fault]]:
    """Per fault (by index), what an alert may match to catch it: the fault, and the
    stretch that preceded it (a failure's degradation: same machine, ending where it begins)."""
    before = {(f.machine_id, f.end_ts): f for f in faults if f.kind in PRECEDES}
    out = {}
    for i, f in enumerate(faults):
        early = before.get((f.machine_id, f.start_ts))
        out[i] = [f] if early is None or PRECEDES[early.kind] != f.kind else [f, early]
    return out


def _hits(alerts: Iterable[Alert], spans: list[Fault], kind: str) -> list[Alert]:
    """The alerts aimed at ``kind`` that match the fault or what preceded it."""
    return [a for a in alerts if kind in a.detects and any(matches(a, s) for s in spans)]


def score(
    alerts: Iterable[Alert], faults: Iterable[Fault], run_end_ts: int | None = None
) -> dict[str, dict[str, Any]]:
    """Per fault kind: precision, recall, mean detection delay (s), and the counts behind
    them (``early``: caught before it began, in what preceded it); ``run_end_ts`` (the run's
    last reading) tells which faults were open at its end."""
    alerts, faults = list(alerts), list(faults)
    by_machine: dict[str, list[Alert]] = {}
    for a in alerts:
        by_machine.setdefault(a.machine_id, []).append(a)
    aimed_at = {k for a in alerts for k in a.detects}
    kinds = sorted({f.kind for f in faults if f.kind in ALERTABLE} | aimed_at)
    spans = catch_spans(faults)

    why = [explains(a, faults) for a in alerts]
    result: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        of_kind = [(i, f) for i, f in enumerate(faults) if f.kind == kind]
        delays, detected, open_at_end, early = [], 0, 0, 0
        for i, f in of_kind:
            hits = _hits(by_machine.get(f.machine_id, ()), spans[i], kind)
            if hits:
                detected += 1
                first = min(a.opened_ts for a in hits)
                early += first < f.start_ts
                delays.append(max(0.0, (first - f.start_ts) / 1000))
            elif _open_at_end(f, run_end_ts):
                open_at_end += 1
        # an alert aimed at several kinds counts for the kind it explains, or against
        # every kind it aims at when it explains none
        aimed = [
            w
            for a, w in zip(alerts, why, strict=True)
            if kind in a.detects and (kind in w or not w)
        ]
        true = sum(1 for w in aimed if kind in w)
        judged = len(of_kind) - open_at_end
        result[kind] = {
            "precision": round(true / len(aimed), 3) if aimed else None,
            "recall": round(detected / judged, 3) if judged else None,
            "mean_delay_s": round(statistics.fmean(delays), 2) if delays else None,
            "faults": len(of_kind),
            "detected": detected,
            "early": early,
            "open_at_end": open_at_end,
            "alerts": len(aimed),
        }
    return result


def _open_at_end(fault: Fault, run_end_ts: int | None) -> bool:
    """Whether the fault was still going on when the run's last reading was made."""
    return run_end_ts is not None and fault.end_ts >= run_end_ts - 1000


def fault_outcomes(
    alerts: Iterable[Alert], faults: Iterable[Fault], run_end_ts: int | None = None
) -> list[dict[str, Any]]:
    """Each fault of a kind that is scored, with whether an alert aimed at its kind caught
    it, the first such alert's rule, the delay (s) to its opening, whether that was before
    the fault began (``early``: a failure caught in its degradation), and whether it was
    still open, uncaught, when the run ended: the per-fault detail behind :func:`score`."""
    alerts, faults = list(alerts), list(faults)
    scored = set(ALERTABLE) | {k for a in alerts for k in a.detects}
    spans = catch_spans(faults)
    out = []
    for i, f in enumerate(faults):
        if f.kind not in scored:
            continue
        hits = sorted(_hits(alerts, spans[i], f.kind), key=lambda a: a.opened_ts)
        first = hits[0] if hits else None
        out.append(f._asdict() | {
            "detected": first is not None,
            "rule": first.rule if first else None,
            "delay_s": max(0.0, (first.opened_ts - f.start_ts) / 1000) if first else None,
            "early": first is not None and first.opened_ts < f.start_ts,
            "open_at_end": first is None and _open_at_end(f, run_end_ts),
        })  # fmt: skip
    return out


def alert_outcomes(alerts: Iterable[Alert], faults: Iterable[Fault]) -> list[dict[str, Any]]:
    """Each alert with the fault kinds it explains (a matching fault of a kind it aims at,
    or what preceded such a fault: a failure's degradation explains an alert aimed at
    failures); ``explains`` empty = a false alarm, as far as the ground truth knows."""
    faults = list(faults)
    return [a._asdict() | {"explains": sorted(explains(a, faults))} for a in alerts]


def load_run(database_url: str, run_id: str) -> tuple[list[Alert], list[Fault]]:
    """The alerts (in the order they opened) and ground-truth faults (in the order they
    began) of one stored run, times in epoch ms."""
    alerts, faults, _ = _load(database_url, run_id)
    return alerts, faults


def _load(database_url: str, run_id: str) -> tuple[list[Alert], list[Fault], list[str | None]]:
    """:func:`load_run` and each fault's ``detail`` (a replay's labels keep NAB's anomaly
    point there)."""
    a, c = schema.alerts, schema.chaos_events

    def epoch_ms(col: sa.ColumnElement) -> sa.ColumnElement:
        return sa.cast(sa.func.round(sa.extract("epoch", col) * 1000), sa.BigInteger)

    alert_query = (
        sa.select(a.c.rule, a.c.machine_id, a.c.sensor_type, epoch_ms(a.c.start_ts),
                  epoch_ms(a.c.opened_ts), a.c.detects)
        .where(a.c.run_id == run_id)
        .order_by(a.c.opened_ts, a.c.alert_id)
    )  # fmt: skip
    fault_query = (
        sa.select(c.c.kind, c.c.machine_id, c.c.sensor_type, epoch_ms(c.c.start_ts),
                  epoch_ms(c.c.end_ts), c.c.detail)
        .where(c.c.run_id == run_id)
        .order_by(c.c.start_ts, c.c.event_id)
    )  # fmt: skip
    eng = engine(database_url)
    try:
        with eng.connect() as conn:
            alerts = [Alert(*r[:5], tuple(r[5])) for r in conn.execute(alert_query)]
            rows = list(conn.execute(fault_query))
    finally:
        eng.dispose()
    return alerts, [Fault(*r[:5]) for r in rows], [r[5] for r in rows]


def score_run(database_url: str, run_id: str) -> dict[str, dict[str, Any]]:
    """Score one stored run: its alerts against its ground truth."""
    return score(*load_run(database_url, run_id), run_end(database_url, run_id))


def run_end(database_url: str, run_id: str) -> int | None:
    """The event time (epoch ms) of a stored run's last reading; None without readings."""
    r = schema.readings
    query = sa.select(sa.cast(sa.func.round(sa.extract("epoch", sa.func.max(r.c.ts)) * 1000),
                              sa.BigInteger)).where(r.c.run_id == run_id)  # fmt: skip
    eng = engine(database_url)
    try:
        with eng.connect() as conn:
            return conn.execute(query).scalar()
    finally:
        eng.dispose()


# -- real data: labels say *that* something was wrong, not which fault it resembles -------


def score_labels(
    database_url: str, run_id: str
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Score a replayed run's alerts against its file's labels, every alert counted
    whatever rule raised it: ``(score per labelled kind, score per rule, per event)``
    (see :class:`workbench.job.ReplayRunSummary`)."""
    alerts, labels, details = _load(database_url, run_id)
    return _score_labels(alerts, labels, [_anomaly_point(d) for d in details])


def _anomaly_point(detail: str | None) -> int | None:
    try:
        point = json.loads(detail or "null")
    except ValueError:
        return None
    return point.get("anomaly_point_ts") if isinstance(point, dict) else None


def _score_labels(
    alerts: list[Alert], labels: list[Fault], points: list[int | None]
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Score every alert against labelled events: per labelled kind, per rule and kind,
    and per event (see :class:`ReplayRunSummary`).

    >>> labels = [Fault("anomaly", "m", None, 100_000, 200_000)]
    >>> alerts = [Alert("runaway", "m", "temperature", 150_000, 160_000, ("failure",)),
    ...           Alert("spike", "m", "temperature", 900_000, 900_000, ("spike",))]
    >>> score, by_rule, events = _score_labels(alerts, labels, [None])
    >>> a = score["anomaly"]
    >>> a["precision"], a["recall"], a["mean_delay_s"], a["faults"], a["alerts"]
    (0.5, 1.0, 60.0, 1, 2)
    >>> [(r["rule"], r["precision"], r["recall"]) for r in by_rule]
    [('runaway', 1.0, 1.0), ('spike', 0.0, 0.0)]
    >>> events[0]["first_rule"], events[0]["delay_s"]
    ('runaway', 60.0)
    """
    score: dict[str, dict[str, Any]] = {}
    by_rule: list[dict[str, Any]] = []
    for kind in sorted({f.kind for f in labels}):
        of_kind = [f for f in labels if f.kind == kind]
        score[kind] = _every_alert_score(alerts, of_kind, kind)
        for rule in sorted({a.rule for a in alerts}):
            stats = _every_alert_score([a for a in alerts if a.rule == rule], of_kind, kind)
            by_rule.append({"rule": rule, "kind": kind} | stats)
    events = []
    for f, point in zip(labels, points, strict=True):
        hits = sorted((a for a in alerts if matches(a, f)), key=lambda a: a.opened_ts)
        first = hits[0] if hits else None
        events.append({
            "kind": f.kind, "machine_id": f.machine_id, "sensor_type": f.sensor_type,
            "start": iso_utc(f.start_ts), "end": iso_utc(f.end_ts),
            "start_ts": f.start_ts, "end_ts": f.end_ts,
            "anomaly_point": None if point is None else iso_utc(point),
            "detected": first is not None, "alerts": len(hits),
            "first_rule": first and first.rule,
            "first_alert": first and iso_utc(first.opened_ts),
            "delay_s": first and max(0.0, (first.opened_ts - f.start_ts) / 1000),
            "from_anomaly_point_s": None if first is None or point is None
            else (first.opened_ts - point) / 1000,
        })  # fmt: skip
    return score, by_rule, events


def _every_alert_score(alerts: list[Alert], labels: list[Fault], kind: str) -> dict[str, Any]:
    """:func:`~workbench.processor.scoring.score` of ``kind`` with every alert counted as
    aimed at it (and zeros when there is no alert at all)."""
    counted = [a._replace(detects=(kind,)) for a in alerts]
    found = score(counted, labels).get(kind)
    if found is not None:
        return found
    return {"precision": None, "recall": 0.0 if labels else None, "mean_delay_s": None,
            "faults": len(labels), "detected": 0, "alerts": len(alerts)}  # fmt: skip
