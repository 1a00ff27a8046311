"""What the pipeline caught and missed in one run, fault by fault and alert by alert.

The per-kind score (:func:`workbench.processor.scoring.score_run`) says how well; these
tables say which: every injected fault with whether an alert aimed at its kind caught it
and how late (``early``: before it began, a failure in its degradation), and every alert
with the fault it explains (none: a false alarm). A failure's ``degradation`` is not a
row of its own: it is part of the failure (see the scoring module).

>>> # faults, alerts = detections(url, run_id)
>>> # faults[~faults.detected]       # what the pipeline missed
"""

from __future__ import annotations

import pandas as pd

from workbench.processor.scoring import alert_outcomes, fault_outcomes, load_run, run_end

_FAULT_COLUMNS = ["kind", "machine_id", "sensor_type", "start", "end", "detected", "rule",
                  "delay_s", "early", "open_at_end"]  # fmt: skip
_ALERT_COLUMNS = ["rule", "machine_id", "sensor_type", "start", "opened", "detects", "explains",
                  "false_alarm"]  # fmt: skip


def _times(df: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    for source, target in columns.items():
        df[target] = pd.to_datetime(df.pop(source), unit="ms", utc=True)
    return df


def detections(database_url: str, run_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(faults, alerts)`` of a run: see the module docstring. Times are UTC timestamps."""
    alerts, faults = load_run(database_url, run_id)
    outcomes = fault_outcomes(alerts, faults, run_end(database_url, run_id))
    f = pd.DataFrame(outcomes, columns=[
        "kind", "machine_id", "sensor_type", "start_ts", "end_ts", "detected", "rule", "delay_s",
        "early", "open_at_end",
    ])  # fmt: skip
    f = _times(f, {"start_ts": "start", "end_ts": "end"})[_FAULT_COLUMNS]
    a = pd.DataFrame(alert_outcomes(alerts, faults), columns=[
        "rule", "machine_id", "sensor_type", "start_ts", "opened_ts", "detects", "explains",
    ])  # fmt: skip
    a["false_alarm"] = [not e for e in a["explains"]]
    a = _times(a, {"start_ts": "start", "opened_ts": "opened"})[_ALERT_COLUMNS]
    return f.sort_values("start", ignore_index=True), a.sort_values("start", ignore_index=True)


def examples(
    faults: pd.DataFrame,
    per_kind: int = 1,
    margin_s: float = 180.0,
    default_sensor: str = "temperature",
) -> pd.DataFrame:
    """Faults worth plotting: ``per_kind`` of each kind, missed ones first, then in time order,
    each with the sensor to show (``default_sensor`` for a fault of the whole machine) and an
    event-time range ``[since, until)`` of ``margin_s`` around it, for
    :func:`workbench.lab.readings`.
    """
    if faults.empty or per_kind <= 0:  # none (assigning empty columns would keep every row)
        return faults.iloc[:0].assign(since=pd.Series(dtype=object), until=pd.Series(dtype=object))
    ordered = faults.sort_values(["detected", "start"], kind="stable")
    picked = ordered.groupby("kind", sort=True).head(per_kind).sort_values(["kind", "start"])
    margin = pd.Timedelta(seconds=margin_s)
    return picked.assign(
        sensor_type=picked["sensor_type"].fillna(default_sensor),
        since=picked["start"] - margin,
        until=picked["end"] + margin,
    ).reset_index(drop=True)
