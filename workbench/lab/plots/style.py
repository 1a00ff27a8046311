"""What every figure shares: one colour per fault kind, the alert colour, and times as
plotly.js draws them.

>>> fault_colour("spike"), fault_colour("something new")
('#17becf', '#ff9896')
"""

from __future__ import annotations

import pandas as pd

#: Colours of the fault kinds' spans and markers, the same in every figure.
FAULT_COLOURS = {
    "spike": "#17becf", "drift": "#ff7f0e", "stuck": "#9467bd", "burst": "#8c564b",
    "failure": "#e377c2", "power": "#bcbd22", "loss": "#7f7f7f", "duplicate": "#aec7e8",
    "malformed": "#c49c94", "latency": "#c7c7c7", "anomaly": "#ff9896",
}  # fmt: skip
ALERT_COLOUR = "#d62728"


def fault_colour(kind: object) -> str:
    """The colour of a fault kind (a kind without one of its own gets the anomaly colour)."""
    return FAULT_COLOURS.get(str(kind), FAULT_COLOURS["anomaly"])


def naive_utc(times: pd.Series) -> pd.Series:
    """UTC times without a zone: plotly.js does not read UTC offsets."""
    return pd.to_datetime(times, utc=True).dt.tz_localize(None)
