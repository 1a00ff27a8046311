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

>>> faults = [Fault("spike", "m-1", "temperature", 10_000, 10_000)]
>>> alerts = [Alert("spike-temp", "m-1", "temperature", 10_000, 11_000, ("spike",)),
...           Alert("spike-temp", "m-2", "temperature", 50_000, 50_000, ("spike",))]
>>> score(alerts, faults)["spike"]
{'precision': 0.5, 'recall': 1.0, 'mean_delay_s': 1.0, 'faults': 1, 'detected': 1, 'alerts': 2}
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any, NamedTuple

import sqlalchemy as sa

from workbench.sinks import schema
from workbench.sinks.postgres import engine

EARLY_S = 5.0
GRACE_S = 30.0
#: Faults of the machine or its sensors, which alerts are for. The network's faults (loss,
#: duplicates, latency, bursts, malformed messages) are accounted for elsewhere in a run's
#: summary (dropped, duplicates absorbed, late, dead-lettered); they are scored only if a
#: rule says it detects them.
ALERTABLE = ("spike", "drift", "stuck", "failure", "power")


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


def score(alerts: Iterable[Alert], faults: Iterable[Fault]) -> dict[str, dict[str, Any]]:
    """Per fault kind: precision, recall, mean detection delay (s), and the counts behind them."""
    alerts, faults = list(alerts), list(faults)
    by_machine: dict[str, list[Alert]] = {}
    for a in alerts:
        by_machine.setdefault(a.machine_id, []).append(a)
    aimed_at = {k for a in alerts for k in a.detects}
    kinds = sorted({f.kind for f in faults if f.kind in ALERTABLE} | aimed_at)

    def explained(a: Alert) -> set[str]:
        """The kinds, among those ``a`` aims at, of the faults it matches."""
        return {f.kind for f in faults if f.kind in a.detects and matches(a, f)}

    why = [explained(a) for a in alerts]
    result: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        of_kind = [f for f in faults if f.kind == kind]
        delays, detected = [], 0
        for f in of_kind:
            hits = [
                a for a in by_machine.get(f.machine_id, ()) if kind in a.detects and matches(a, f)
            ]
            if hits:
                detected += 1
                delays.append(max(0.0, (min(a.opened_ts for a in hits) - f.start_ts) / 1000))
        # an alert aimed at several kinds counts for the kind it explains, or against
        # every kind it aims at when it explains none
        aimed = [
            w
            for a, w in zip(alerts, why, strict=True)
            if kind in a.detects and (kind in w or not w)
        ]
        true = sum(1 for w in aimed if kind in w)
        result[kind] = {
            "precision": round(true / len(aimed), 3) if aimed else None,
            "recall": round(detected / len(of_kind), 3) if of_kind else None,
            "mean_delay_s": round(statistics.fmean(delays), 2) if delays else None,
            "faults": len(of_kind),
            "detected": detected,
            "alerts": len(aimed),
        }
    return result


def score_run(database_url: str, run_id: str) -> dict[str, dict[str, Any]]:
    """Score one stored run: its alerts against its ground truth."""
    a, c = schema.alerts, schema.chaos_events

    def epoch_ms(col: sa.ColumnElement) -> sa.ColumnElement:
        return sa.cast(sa.func.round(sa.extract("epoch", col) * 1000), sa.BigInteger)

    alert_query = sa.select(
        a.c.rule,
        a.c.machine_id,
        a.c.sensor_type,
        epoch_ms(a.c.start_ts),
        epoch_ms(a.c.opened_ts),
        a.c.detects,
    ).where(a.c.run_id == run_id)
    fault_query = sa.select(
        c.c.kind, c.c.machine_id, c.c.sensor_type, epoch_ms(c.c.start_ts), epoch_ms(c.c.end_ts)
    ).where(c.c.run_id == run_id)
    eng = engine(database_url)
    try:
        with eng.connect() as conn:
            alerts = [Alert(*r[:5], tuple(r[5])) for r in conn.execute(alert_query)]
            faults = [Fault(*r) for r in conn.execute(fault_query)]
    finally:
        eng.dispose()
    return score(alerts, faults)
