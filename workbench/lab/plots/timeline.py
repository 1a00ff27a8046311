"""What chaos injected against what the pipeline raised, on one time axis per machine."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from workbench.lab.plots.style import ALERT_COLOUR, fault_colour


def detection_timeline(faults: pd.DataFrame, alerts: pd.DataFrame, title: str = "") -> go.Figure:
    """One row per machine: injected faults as thick bars (solid when caught, hollow when
    missed), the alerts raised as thin bars just above them (grey when they explain a
    fault, red when they are false alarms).

    ``faults`` and ``alerts``: the tables of :func:`workbench.analysis.detection.detections`.
    """
    fig = go.Figure()
    machines = sorted(set(faults["machine_id"]) | set(alerts["machine_id"]))
    row = {m: i for i, m in enumerate(machines)}
    for kind, group in faults.groupby("kind", sort=True):
        for caught, part in group.groupby("detected"):
            outcome = "caught" if caught else "missed"
            fig.add_trace(_bars(
                part, row, offset=-0.15, width=0.35, name=f"{kind} {outcome}",
                color=fault_colour(kind), hollow=not caught,
                text=[f"{kind} on {m} {s or 'all sensors'}<br>"
                      + (f"caught by {r} after {d:.0f} s" if c else "missed")
                      for m, s, r, d, c in zip(part["machine_id"], part["sensor_type"],
                                               part["rule"], part["delay_s"].fillna(0),
                                               part["detected"], strict=True)],
            ))  # fmt: skip
    for false_alarm, part in alerts.groupby("false_alarm"):
        fig.add_trace(_bars(
            part.assign(end=part["start"].where(part["start"] > part["opened"], part["opened"])),
            row, offset=0.25, width=0.15,
            name="false alarm" if false_alarm else "alert (explains a fault)",
            color=ALERT_COLOUR if false_alarm else "#7f7f7f", hollow=False,
            text=[f"{r} on {m} {s or 'all sensors'}" for r, m, s in
                  zip(part["rule"], part["machine_id"], part["sensor_type"], strict=True)],
        ))  # fmt: skip
    fig.update_yaxes(tickvals=list(row.values()), ticktext=machines, autorange="reversed")
    fig.update_layout(
        title=title or "Injected faults and the alerts raised",
        height=max(300, 40 * len(machines) + 150), barmode="overlay",
        xaxis_title="event time", legend_title="",
    )  # fmt: skip
    return fig


def _bars(part: pd.DataFrame, row: dict[str, int], offset: float, width: float, name: str,
          color: str, hollow: bool, text: list[str]) -> go.Scatter:  # fmt: skip
    """Horizontal bars from ``start`` to ``end`` (at least a few pixels: a spike lasts one
    reading) drawn as filled rectangles of one scatter trace, ``None`` between them."""
    xs: list = []
    ys: list = []
    hover: list = []
    for (start, end), machine, label in zip(
        zip(part["start"], part["end"], strict=True), part["machine_id"], text, strict=True
    ):
        end = max(end, start + pd.Timedelta(seconds=2))
        y0, y1 = row[machine] + offset - width / 2, row[machine] + offset + width / 2
        xs += [start, end, end, start, start, None]
        ys += [y0, y0, y1, y1, y0, None]
        hover += [label] * 5 + [None]
    return go.Scatter(
        x=xs, y=ys, mode="lines", fill="toself", name=name, hovertext=hover, hoverinfo="text",
        line={"color": color, "width": 2 if hollow else 1},
        fillcolor="rgba(0,0,0,0)" if hollow else color, opacity=0.9,
    )  # fmt: skip
