"""The health of a run's machines (:mod:`workbench.models.health`) as one figure.

>>> from workbench.models.health import Deduction, MachineHealth
>>> found = [MachineHealth("r", "m-2", 72.0, [Deduction("failures", 1, 25.0, ""),
...                                           Deduction("alerts", 1, 3.0, "")], []),
...          MachineHealth("r", "m-1", 100.0, [], [])]
>>> fig = health_figure(found)
>>> [t.name for t in fig.data], list(fig.data[0].y), list(fig.data[0].x)
(['score', 'failures', 'alerts'], ['m-2', 'm-1'], [72.0, 100.0])
>>> fig.data[0].marker.color
('#ff7f0e', '#2ca02c')
"""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from workbench.lab.plots.style import house_layout
from workbench.models.health import SCORE_BANDS, MachineHealth, band

#: The bands' colours: those of the Grafana panel's thresholds.
BAND_COLOURS = {"red": "#d62728", "orange": "#ff7f0e", "green": "#2ca02c"}
#: The colour of each indicator's deduction: none red, orange or green (the bands' colours,
#: which the scores wear), the data-quality ones in greys.
INDICATOR_COLOURS = {
    "failures": "#9467bd", "since_failure": "#c5b0d5", "alerts": "#8c564b",
    "drift": "#1f77b4", "heat_per_amp": "#17becf", "null_share": "#7f7f7f",
    "missing_windows": "#a5a5a5", "dead_letters": "#c7c7c7",
}  # fmt: skip


def health_figure(found: Sequence[MachineHealth], title: str = "") -> go.Figure:
    """One bar per machine, in the order given (``health_all``'s: worst first, at the top):
    its score, coloured by band, then the points each indicator took off, so that every bar
    reaches 100 (unless the deductions passed 100)."""
    machines = [h.machine_id for h in found]
    scores = [h.score for h in found]
    fig = go.Figure(
        go.Bar(
            y=machines,
            x=scores,
            name="score",
            orientation="h",
            marker_color=[BAND_COLOURS[band(s)] for s in scores],
            text=[f"{s:g}" for s in scores],
            textposition="inside",
            hovertemplate="%{y}: health %{x}<extra></extra>",
            showlegend=False,
        )
    )
    indicators = list(dict.fromkeys(d.indicator for h in found for d in h.deductions))
    for name in indicators:
        points = [sum(d.points for d in h.deductions if d.indicator == name) for h in found]
        fig.add_trace(
            go.Bar(
                y=machines,
                x=points,
                name=name,
                orientation="h",
                marker_color=INDICATOR_COLOURS.get(name, "#bcbd22"),
                hovertemplate=f"%{{y}}: -%{{x}} {name}<extra></extra>",
            )
        )
    low, high = SCORE_BANDS
    fig.update_layout(
        barmode="stack",
        title=title or "Health per machine, worst at the top",
        xaxis={
            "title": f"score (red under {low:g}, orange under {high:g}), then the points "
            "each indicator took off",
            "range": [0, 100],
        },
        yaxis={"autorange": "reversed", "type": "category"},
        height=max(300, 60 + 28 * len(found)),
    )
    return house_layout(fig).update_layout(legend_traceorder="normal")
