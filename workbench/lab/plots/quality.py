"""Figures of a run's data quality (:mod:`workbench.analysis.quality`)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots


def series_quality_figure(series: pd.DataFrame, title: str = "") -> go.Figure:
    """Per machine: ``seq`` gaps (lost or dead-lettered), late readings and nulls, summed
    over its sensors; ``series`` is :func:`~workbench.analysis.quality.series_quality`."""
    per = series.groupby("machine_id", as_index=False)[["gaps", "late", "nulls", "duplicates"]]
    per = per.sum()
    fig = go.Figure([
        go.Bar(x=per["machine_id"], y=per[c], name=label)
        for c, label in (("gaps", "seq gaps (lost or dead-lettered)"), ("late", "late"),
                         ("nulls", "nulls"), ("duplicates", "duplicates in the database"))
    ])  # fmt: skip
    fig.update_layout(barmode="group", title=title or "Data quality per machine",
                      yaxis_title="readings", xaxis_title="machine")  # fmt: skip
    return fig


def dead_letters_figure(dead: pd.DataFrame, title: str = "") -> go.Figure:
    """Dead letters by category (left) and range violations by sensor (right);
    ``dead`` is :func:`~workbench.analysis.quality.dead_letters`."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("by reason", "outside physical range"))
    by_category = dead.groupby("category", as_index=False)["count"].sum()
    fig.add_trace(go.Bar(x=by_category["category"], y=by_category["count"], name="reason"), 1, 1)
    ranges = dead.dropna(subset=["sensor_type"]).groupby("sensor_type", as_index=False)["count"]
    ranges = ranges.sum()
    fig.add_trace(go.Bar(x=ranges["sensor_type"], y=ranges["count"], name="sensor"), 1, 2)
    fig.update_layout(title=title or "Dead letters", showlegend=False)
    return fig


def loss_figure(measured: float, injected: float | None, title: str = "") -> go.Figure:
    """Loss measured downstream from ``seq`` gaps beside the loss chaos injected."""
    names, values = ["measured from seq gaps"], [measured]
    if injected is not None:
        names.insert(0, "injected (chaos loss)")
        values.insert(0, injected)
    fig = go.Figure(go.Bar(x=names, y=values, text=[f"{v:.2%}" for v in values]))
    fig.update_layout(title=title or "Loss rate", yaxis_tickformat=".1%", yaxis_title="readings")
    return fig
