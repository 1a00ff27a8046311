"""What every figure shares: one colour per fault kind, the alert colour, where the legend
goes, and times as plotly.js draws them.

>>> fault_colour("spike"), fault_colour("something new")
('#17becf', '#ff9896')
>>> import plotly.graph_objects as go
>>> house_layout(go.Figure()).layout.legend.yref
'container'
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

#: Colours of the fault kinds' spans and markers, the same in every figure.
FAULT_COLOURS = {
    "spike": "#17becf", "drift": "#ff7f0e", "stuck": "#9467bd", "burst": "#8c564b",
    "failure": "#e377c2", "power": "#bcbd22", "loss": "#7f7f7f", "duplicate": "#aec7e8",
    "malformed": "#c49c94", "latency": "#c7c7c7", "anomaly": "#ff9896",
    "degradation": "#f7b6d2",  # a paler failure: the wear before its runaway
}  # fmt: skip
ALERT_COLOUR = "#d62728"

#: The legend: one row (or more, as the width requires) under the plot, at the bottom of
#: the figure. Above the plot, a legend that wraps onto a second row grows upwards into
#: the title; at the bottom it grows downwards and plotly.js makes room for it under the
#: axis title (a legend placed relative to the container pushes the margins).
LEGEND = {"orientation": "h", "x": 0, "xanchor": "left",
          "yref": "container", "y": 0, "yanchor": "bottom"}  # fmt: skip
#: The title above the plot, under the toolbar plotly shows at the top right (``pad``), with
#: room made for it (``automargin``; one line: plotly.js misplaces a title of several).
TITLE = {"x": 0, "xanchor": "left", "yref": "container", "y": 1, "yanchor": "top",
         "pad": {"t": 36}, "automargin": True}  # fmt: skip


def house_layout(fig: go.Figure) -> go.Figure:
    """Give ``fig`` the lab's legend and title placement (:data:`LEGEND`, :data:`TITLE`)
    so neither covers the other or the data; returns ``fig``."""
    return fig.update_layout(legend=LEGEND, title=TITLE, margin={"t": 60, "b": 20})


def fault_colour(kind: object) -> str:
    """The colour of a fault kind (a kind without one of its own gets the anomaly colour)."""
    return FAULT_COLOURS.get(str(kind), FAULT_COLOURS["anomaly"])


def naive_utc(times: pd.Series) -> pd.Series:
    """UTC times without a zone: plotly.js does not read UTC offsets."""
    return pd.to_datetime(times, utc=True).dt.tz_localize(None)
