"""A replayed real signal with its labelled windows shaded and the pipeline's alerts marked.

The frames are those :mod:`workbench.lab` returns for one run: ``readings`` (raw, with
``ts`` and ``value``, or bucketed, with ``bucket``, ``mean``, ``min`` and ``max``),
``ground_truth`` (``start_ts``, ``end_ts``) and ``alerts`` (``start_ts``, ``rule``, ...).
One row of the figure per sensor type of one machine: a label of real data marks the
machine, not a sensor, so each window is shaded across every row, and an alert sits on
the signal of the sensor that raised it, at its first breach.

>>> import pandas as pd
>>> t = pd.date_range("2014-01-01", periods=6, freq="5min", tz="UTC")
>>> r = pd.DataFrame({"machine_id": "m", "sensor_type": "temperature", "ts": t,
...                   "value": [1.0, 2, 3, 9, 3, 2]})
>>> truth = pd.DataFrame({"machine_id": ["m"], "kind": ["anomaly"], "sensor_type": [None],
...                       "start_ts": [t[2]], "end_ts": [t[4]]})
>>> al = pd.DataFrame({"machine_id": ["m"], "sensor_type": ["temperature"], "rule": ["runaway"],
...                    "severity": ["critical"], "start_ts": [t[3]], "opened_ts": [t[3]]})
>>> fig = replay_figure(r, truth, al)
>>> [tr.name for tr in fig.data], len(fig.layout.shapes), [float(v) for v in fig.data[1].y]
(['temperature', 'runaway'], 1, [9.0])
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.lab.plots.style import house_layout

#: Colour of a labelled window and of the alerts of each rule (cycled).
WINDOW_COLOUR = "rgba(214, 39, 40, 0.15)"
RULE_COLOURS = ("#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")


def replay_figure(
    readings: pd.DataFrame,
    truth: pd.DataFrame | None = None,
    alerts: pd.DataFrame | None = None,
    machine_id: str | None = None,
    title: str | None = None,
) -> go.Figure:
    """Every sensor of one machine (``machine_id``; default: the first in ``readings``)
    over event time, labelled windows shaded, alerts marked at their first breach.

    Readings may be raw (``ts``, ``value``) or bucketed (``bucket``, ``mean``, ``min``,
    ``max``: the mean is drawn, with the min-max range as a band).
    """
    bucketed = "bucket" in readings.columns
    x, y = ("bucket", "mean") if bucketed else ("ts", "value")
    if machine_id is None and len(readings):
        machine_id = str(readings["machine_id"].iloc[0])
    mine = readings[readings["machine_id"] == machine_id]
    sensors = sorted(mine["sensor_type"].unique()) or ["(no readings)"]
    fig = make_subplots(rows=len(sensors), cols=1, shared_xaxes=True, vertical_spacing=0.03,
                        subplot_titles=None)  # fmt: skip
    for row, sensor in enumerate(sensors, 1):
        s = mine[mine["sensor_type"] == sensor].sort_values(x)
        if bucketed:
            fig.add_trace(_band(s, sensor), row=row, col=1)
        fig.add_trace(
            go.Scatter(x=s[x], y=s[y], mode="lines", name=sensor, line={"width": 1},
                       legendgroup="signal"),
            row=row, col=1,
        )  # fmt: skip
        fig.update_yaxes(title_text=sensor, row=row, col=1)
    for start, end in _windows(truth, machine_id):
        fig.add_vrect(x0=start, x1=end, fillcolor=WINDOW_COLOUR, line_width=0, layer="below",
                      row="all", col=1)  # fmt: skip
    _add_alerts(fig, mine, alerts, machine_id, sensors, x, y)
    labelled = 0 if truth is None else len(_windows(truth, machine_id))
    fig.update_layout(
        title=title or f"{machine_id}: {labelled} labelled window(s) shaded, alerts marked",
        height=max(320, 230 * len(sensors)),
    )
    return house_layout(fig)


def _band(s: pd.DataFrame, sensor: str) -> go.Scatter:
    """The min-max range of each bucket, as a filled band behind its mean."""
    xs = list(s["bucket"]) + list(s["bucket"])[::-1]
    ys = list(s["max"]) + list(s["min"])[::-1]
    return go.Scatter(x=xs, y=ys, fill="toself", mode="lines", line={"width": 0},
                      fillcolor="rgba(31, 119, 180, 0.2)", name=f"{sensor} min-max",
                      hoverinfo="skip", showlegend=False)  # fmt: skip


def _windows(truth: pd.DataFrame | None, machine_id: str | None) -> list[tuple[Any, Any]]:
    if truth is None or truth.empty:
        return []
    t = truth[truth["machine_id"] == machine_id]
    return list(zip(t["start_ts"], t["end_ts"], strict=True))


def _add_alerts(
    fig: go.Figure,
    readings: pd.DataFrame,
    alerts: pd.DataFrame | None,
    machine_id: str | None,
    sensors: list[str],
    x: str,
    y: str,
) -> None:
    """One marker trace per rule: each alert on its sensor's signal (every row for an
    alert of the whole machine), at the reading nearest its first breach."""
    if alerts is None or alerts.empty:
        return
    mine = alerts[alerts["machine_id"] == machine_id]
    for i, (rule, of_rule) in enumerate(mine.groupby("rule", sort=True)):
        colour = RULE_COLOURS[i % len(RULE_COLOURS)]
        first = True
        for row, sensor in enumerate(sensors, 1):
            hit = of_rule[of_rule["sensor_type"].isna() | (of_rule["sensor_type"] == sensor)]
            if hit.empty:
                continue
            signal = readings[readings["sensor_type"] == sensor][[x, y]].dropna()
            signal = signal.assign(**{x: _utc(signal[x])}).sort_values(x)
            at = hit.assign(start_ts=_utc(hit["start_ts"])).sort_values("start_ts")
            if not signal.empty:
                at = pd.merge_asof(at, signal, left_on="start_ts", right_on=x,
                                   direction="nearest")  # fmt: skip
            values = at[y] if y in at.columns else [None] * len(at)
            text = [
                f"{rule} ({sev})<br>first breach {s}<br>opened {o}"
                for sev, s, o in zip(at["severity"], at["start_ts"], at["opened_ts"], strict=True)
            ]
            fig.add_trace(
                go.Scatter(x=at["start_ts"], y=values, mode="markers", name=rule,
                           legendgroup=rule, showlegend=first, hovertext=text,
                           hoverinfo="text",
                           marker={"symbol": "x", "size": 11, "color": colour}),
                row=row, col=1,
            )  # fmt: skip
            first = False


def _utc(times: pd.Series) -> pd.Series:
    """Times as UTC nanoseconds: the database and pandas may disagree on the resolution."""
    return pd.to_datetime(times, utc=True).astype("datetime64[ns, UTC]")
