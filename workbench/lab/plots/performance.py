"""The benchmark's result (:func:`workbench.bench.run_benchmark`, ``workbench bench --json``)
as a table and figures: throughput per stage, absolute and as the ratio to its section's
baseline; end-to-end latency percentiles; peak memory.

Each section (simulator, processor, archive, sink) measures its stages against a baseline
of its own, run in the same process on the same data, so a ratio compares stages of one
section only: 0.5 means half the baseline's throughput on that machine at that moment.

>>> result = {"simulator": {"rows": [
...     {"name": "baseline: produce pre-encoded", "events": 10, "seconds": 0.1,
...      "events_per_s": 100, "ratio": 1.0},
...     {"name": "simulator + Avro + produce", "events": 10, "seconds": 0.2,
...      "events_per_s": 50, "ratio": 0.5}]}}
>>> stage_table(result)[["section", "stage", "per_s", "ratio", "baseline"]].values.tolist()
[['simulator', 'baseline: produce pre-encoded', 100, 1.0, True], ['simulator', 'simulator + Avro + produce', 50, 0.5, False]]
>>> [t.name for t in throughput_figure(result).data]
['simulator', 'simulator']
"""  # noqa: E501

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

#: The sections of a benchmark result, in the order they run, and what each counts.
SECTIONS = {"simulator": "readings", "processor": "readings", "archive": "readings",
            "sink": "rows"}  # fmt: skip
PERCENTILES = ("p50", "p90", "p99", "max")
COLOURS = {"simulator": "#1f77b4", "processor": "#2ca02c", "archive": "#9467bd",
           "sink": "#ff7f0e"}  # fmt: skip


def stage_table(result: dict[str, Any]) -> pd.DataFrame:
    """One row per measured stage: section, stage, count, seconds, per second, ratio to
    the section's baseline (its first stage), and whether it is that baseline."""
    rows = []
    for section, unit in SECTIONS.items():
        for i, r in enumerate((result.get(section) or {}).get("rows", [])):
            rows.append({
                "section": section, "stage": r["name"],
                "count": r.get("events", r.get("rows")), "unit": unit,
                "seconds": r["seconds"], "per_s": r.get("events_per_s", r.get("rows_per_s")),
                "ratio": r["ratio"], "baseline": i == 0,
            })  # fmt: skip
    columns = ["section", "stage", "count", "unit", "seconds", "per_s", "ratio", "baseline"]
    return pd.DataFrame(rows, columns=columns)


def throughput_figure(result: dict[str, Any], title: str | None = None) -> go.Figure:
    """Per stage: readings (or rows) per second on a log axis, and the ratio to the
    section's baseline (the dashed line at 1); one colour per section."""
    table = stage_table(result)
    titles = ("per second (log scale)", "ratio to the baseline")
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=titles)  # fmt: skip
    for section, stages in table.groupby("section", sort=False):
        labels = [f"{section}: {s}" for s in stages["stage"]]
        colour = COLOURS.get(str(section))
        fig.add_trace(
            go.Bar(x=stages["per_s"], y=labels, orientation="h", name=str(section),
                   legendgroup=str(section), marker_color=colour,
                   text=[f"{v:,.0f}/s" for v in stages["per_s"]], textposition="auto"),
            row=1, col=1,
        )  # fmt: skip
        fig.add_trace(
            go.Bar(x=stages["ratio"], y=labels, orientation="h", name=str(section),
                   legendgroup=str(section), marker_color=colour, showlegend=False,
                   text=[f"{v:.2f}" for v in stages["ratio"]], textposition="auto"),
            row=1, col=2,
        )  # fmt: skip
    fig.add_vline(x=1, line_dash="dash", line_color="grey", row=1, col=2)
    fig.update_xaxes(type="log", row=1, col=1)
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(title=title or "Throughput per stage", barmode="group",
                      height=max(300, 40 * len(table) + 140), margin={"l": 10})  # fmt: skip
    return fig


def latency_figure(latency: dict[str, Any], title: str | None = None) -> go.Figure:
    """End-to-end latency percentiles (event created -> row stored and published).

    >>> fig = latency_figure({"p50": 10.0, "p90": 20.0, "p99": 40.0, "max": 90.0,
    ...                       "samples": 400, "rate_per_s": 200})
    >>> list(fig.data[0].x), list(fig.data[0].y)
    (['p50', 'p90', 'p99', 'max'], [10.0, 20.0, 40.0, 90.0])
    """
    names = [p for p in PERCENTILES if latency.get(p) is not None]
    values = [latency[p] for p in names]
    fig = go.Figure(go.Bar(x=names, y=values, name="latency", marker_color="#2ca02c",
                           text=[f"{v:,.0f} ms" for v in values], textposition="auto"))  # fmt: skip
    rate, samples = latency.get("rate_per_s"), latency.get("samples", 0)
    fig.update_layout(
        title=title or f"End-to-end latency at {rate} readings/s ({samples} readings)",
        yaxis_title="ms", height=360,
    )  # fmt: skip
    return fig


def memory_figure(
    peak_rss_mb: float,
    before_mb: float | None = None,
    memory_gib: float | None = None,
    title: str | None = None,
) -> go.Figure:
    """Peak resident memory of the process that ran the benchmark, next to its peak
    before the benchmark started (what the process already held), and the machine's
    memory as a dotted line for scale.

    >>> fig = memory_figure(300.0, before_mb=200.0)
    >>> list(fig.data[0].x), list(fig.data[0].y)
    (['before the benchmark', 'after the benchmark'], [200.0, 300.0])
    """
    names, values = ["after the benchmark"], [peak_rss_mb]
    if before_mb is not None:
        names, values = ["before the benchmark", *names], [before_mb, *values]
    fig = go.Figure(go.Bar(x=names, y=values, name="peak RSS", marker_color="#9467bd",
                           text=[f"{v:,.0f} MB" for v in values], textposition="auto"))  # fmt: skip
    if memory_gib:
        fig.add_hline(y=memory_gib * 1024, line_dash="dot", line_color="grey",
                      annotation_text=f"machine memory {memory_gib:g} GiB")  # fmt: skip
        fig.update_yaxes(type="log")
    fig.update_layout(title=title or "Peak resident memory (RSS) of this process",
                      yaxis_title="MB", height=360)  # fmt: skip
    return fig
