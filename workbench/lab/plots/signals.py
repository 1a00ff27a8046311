"""One sensor of one machine: raw readings against the processor's rolling means, with the
alerts it raised and the faults chaos injected.

The figure answers "what did the pipeline see, and was it right?" at a glance: the raw
signal (grey), the rolling means the processor attached to each reading (``rolling_1``
and ``rolling_2``, means over the configured window widths, 60 s and 300 s by default),
alerts as red shaded spans with a marker where each opened, and ground-truth faults as
dashed spans in a colour per fault kind with a marker where each began. Hovering a
marker names the rule or the fault kind. Times are event time, UTC.

Spans and markers are clipped to the time the readings cover: a fault that began before
the first reading shown (or an alert that closed after the last) is drawn from the edge,
so a view of the last 10 minutes spans 10 minutes, not the run's whole history.

>>> import pandas as pd
>>> t = pd.date_range("2026-01-01", periods=4, freq="s", tz="UTC")
>>> r = pd.DataFrame({"machine_id": "m-0001", "sensor_type": "pressure", "ts": t,
...                   "value": [1.0, 2.0, 9.0, 2.0], "rolling_1": [1.0, 1.5, 4.0, 3.5],
...                   "rolling_2": [1.0, 1.5, 4.0, 3.5]})
>>> truth = pd.DataFrame({"kind": ["spike"], "machine_id": ["m-0001"],
...                       "sensor_type": ["pressure"], "start_ts": [t[2]], "end_ts": [t[2]],
...                       "magnitude": [7.0], "detail": [None]})
>>> fig = signal_figure(r, "m-0001", "pressure", truth=truth)
>>> [trace.name for trace in fig.data]
['raw', 'rolling mean 60 s', 'rolling mean 300 s', 'injected spike']
>>> fig.data[-1].y[0]  # the fault's marker sits on the reading it hit
9.0
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from workbench.lab.plots.style import ALERT_COLOUR, fault_colour, house_layout, naive_utc

#: Kinds whose ground truth is a span worth shading (latency covers whole stretches of
#: every sensor and would shade everything; it keeps its marker).
_SHADED = {"drift", "stuck", "burst", "failure", "power", "anomaly", "degradation"}
#: At most this many shaded spans of each sort, so a long run's figure stays light.
MAX_SPANS = 300


def signal_figure(
    readings: pd.DataFrame,
    machine_id: str,
    sensor_type: str,
    alerts: pd.DataFrame | None = None,
    truth: pd.DataFrame | None = None,
    title: str | None = None,
    widths_s: Sequence[int] = (60, 300),
) -> go.Figure:
    """A static figure of one machine's sensor: raw vs rolling means, alerts, injected faults.

    ``readings`` come from :func:`workbench.lab.readings` (raw rows with ``value``,
    ``rolling_1``, ``rolling_2``; or bucketed rows with ``mean``, ``min``, ``max``, drawn
    as the bucket means in their min-max band); ``alerts`` from
    :func:`workbench.lab.alerts`; ``truth`` from :func:`workbench.lab.ground_truth`.
    Rows of other machines and sensors are left out, so whole-run frames may be passed.
    ``widths_s`` names the rolling means (the processor's ``window_widths_s``).
    """
    fig = go.Figure()
    r = _rows(readings, machine_id, sensor_type)
    time_col = "bucket" if "bucket" in r.columns else "ts"
    x = naive_utc(r[time_col]) if len(r) else pd.Series([], dtype="datetime64[ns]")
    if "mean" in r.columns and "value" not in r.columns:
        fig.add_trace(go.Scatter(x=x, y=r["max"], name="max per bucket", mode="lines",
                                 line={"width": 0}, showlegend=False,
                                 hoverinfo="skip"))  # fmt: skip
        fig.add_trace(go.Scatter(x=x, y=r["min"], name="min-max per bucket", mode="lines",
                                 line={"width": 0}, fill="tonexty",
                                 fillcolor="rgba(127,127,127,0.2)"))  # fmt: skip
        fig.add_trace(go.Scatter(x=x, y=r["mean"], name="mean per bucket", mode="lines",
                                 line={"color": "#7f7f7f", "width": 1}))  # fmt: skip
        level = r["mean"]
    else:
        level = r["value"] if "value" in r.columns else pd.Series([], dtype=float)
        fig.add_trace(go.Scatter(x=x, y=level, name="raw", mode="lines+markers",
                                 line={"color": "#7f7f7f", "width": 1},
                                 marker={"size": 3}))  # fmt: skip
        names = [f"rolling mean {w} s" for w in list(widths_s)[:2]]
        names += [f"rolling mean {i + 1}" for i in range(len(names), 2)]
        for col, name, colour in zip(
            ("rolling_1", "rolling_2"), names, ("#1f77b4", "#2ca02c"), strict=True
        ):
            if col in r.columns:
                fig.add_trace(go.Scatter(x=x, y=r[col], name=name, mode="lines",
                                         line={"color": colour, "width": 2}))  # fmt: skip
    points = pd.DataFrame({"t": x, "y": pd.to_numeric(level, errors="coerce")}).dropna()
    shown = (x.min(), x.max()) if len(x) else None
    shapes: list[dict[str, Any]] = []
    if alerts is not None and len(alerts):
        a = _rows(alerts, machine_id, sensor_type, nullable=True)
        _add_alerts(fig, shapes, a, points, shown)
    if truth is not None and len(truth):
        t = _rows(truth, machine_id, sensor_type, nullable=True)
        _add_truth(fig, shapes, t, points, shown)
    house_layout(fig)
    fig.update_layout(
        title_text=title or f"{machine_id} · {sensor_type}: raw vs rolling means, alerts, faults",
        xaxis_title="event time (UTC)",
        yaxis_title=sensor_type,
        shapes=shapes,
        hovermode="closest",
        height=460,
    )
    return fig


def update_signal_figure(
    fig: go.Figure,
    readings: pd.DataFrame,
    machine_id: str,
    sensor_type: str,
    alerts: pd.DataFrame | None = None,
    truth: pd.DataFrame | None = None,
    title: str | None = None,
    widths_s: Sequence[int] = (60, 300),
) -> go.Figure:
    """Bring ``fig`` (a ``Figure`` or a live ``FigureWidget``) up to date in place.

    Traces are matched by name and their data replaced, so a front end keeps what the
    user did to them (legend toggles); traces no longer there are removed, new ones
    added; shapes and the title are replaced. Returns ``fig``.
    """
    new = signal_figure(readings, machine_id, sensor_type, alerts, truth, title, widths_s)
    with fig.batch_update():
        wanted = {t.name for t in new.data}
        if any(t.name not in wanted for t in fig.data):
            fig.data = tuple(t for t in fig.data if t.name in wanted)
        have = {t.name: t for t in fig.data}
        for trace in new.data:
            old = have.get(trace.name)
            if old is None:
                fig.add_trace(trace)
            else:
                old.update(x=trace.x, y=trace.y, hovertext=trace.hovertext)
        fig.layout.shapes = new.layout.shapes
        fig.layout.title = new.layout.title
        fig.layout.yaxis.title = new.layout.yaxis.title
    return fig


def _rows(frame: pd.DataFrame, machine_id: str, sensor_type: str, nullable: bool = False):
    """Rows of one machine and sensor (and, if ``nullable``, of the whole machine)."""
    if frame is None or not len(frame):
        return frame.iloc[0:0] if frame is not None else pd.DataFrame()
    keep = frame["machine_id"] == machine_id
    if "sensor_type" in frame.columns:
        same = frame["sensor_type"] == sensor_type
        keep &= (same | frame["sensor_type"].isna()) if nullable else same
    return frame[keep.fillna(False).astype(bool)]


def _at(points: pd.DataFrame, when: pd.Series) -> list[float | None]:
    """The signal's level at each of ``when`` (the nearest reading), for placing markers."""
    if not len(when):
        return []
    if not len(points):
        return [0.0] * len(when)
    left = pd.DataFrame({"t": when.to_numpy(), "i": range(len(when))}).sort_values("t")
    right = points.sort_values("t")
    right = right.assign(t=right["t"].astype(left["t"].dtype))
    found = pd.merge_asof(left, right, on="t", direction="nearest")
    return found.sort_values("i")["y"].tolist()


def _clip(
    start: pd.Series, end: pd.Series, shown: tuple[pd.Timestamp, pd.Timestamp] | None
) -> tuple[np.ndarray, pd.Series, pd.Series]:
    """Which of the spans ``start``..``end`` overlap the ``shown`` time range, and their
    starts and ends cut to it (all of them, uncut, when nothing is shown)."""
    if shown is None:
        return np.ones(len(start), dtype=bool), start, end
    lo, hi = shown
    keep = ((end.fillna(start) >= lo) & (start <= hi)).to_numpy()
    return keep, start[keep].clip(lower=lo, upper=hi), end[keep].clip(lower=lo, upper=hi)


def _fmt(t: Any) -> str:
    return "—" if t is None or pd.isna(t) else pd.Timestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def _add_alerts(
    fig: go.Figure, shapes: list, a: pd.DataFrame, points: pd.DataFrame, shown: Any
) -> None:
    if not len(a):
        return
    start, opened = naive_utc(a["start_ts"]), naive_utc(a["opened_ts"])
    closed = naive_utc(a["closed_ts"]) if "closed_ts" in a.columns else opened
    updated = naive_utc(a["updated_ts"]) if "updated_ts" in a.columns else opened
    keep, span_start, span_end = _clip(start, closed.fillna(updated), shown)
    if not keep.any():
        return
    a, start, opened, closed = a[keep], start[keep], opened[keep], closed[keep]
    # the marker where the alert opened, or at the edge of the view it reaches into
    at = opened.clip(lower=shown[0], upper=shown[1]) if shown else opened
    for s, e in list(zip(span_start, span_end, strict=True))[:MAX_SPANS]:
        shapes.append({"type": "rect", "xref": "x", "yref": "paper", "x0": s, "x1": e,
                       "y0": 0, "y1": 1, "fillcolor": ALERT_COLOUR, "opacity": 0.12,
                       "line": {"width": 0}, "layer": "below"})  # fmt: skip
    text = []
    for row, s, o, c in zip(a.itertuples(index=False), start, opened, closed, strict=True):
        detects = getattr(row, "detects", None)
        aims = ", ".join(detects) if isinstance(detects, list | tuple) else (detects or "")
        peak = getattr(row, "peak", None)
        text.append(
            f"alert <b>{row.rule}</b> ({getattr(row, 'kind', '')}, "
            f"{getattr(row, 'severity', '')})<br>first breach {_fmt(s)}<br>opened {_fmt(o)}"
            f"<br>closed {_fmt(c) if not pd.isna(c) else 'still open'}"
            + (f"<br>peak {peak:.4g}" if peak is not None and not pd.isna(peak) else "")
            + (f" · breaches {row.breaches}" if hasattr(row, "breaches") else "")
            + (f"<br>aims at {aims}" if aims else "")
        )
    fig.add_trace(go.Scatter(
        x=at, y=_at(points, at), name="alerts", mode="markers",
        marker={"color": ALERT_COLOUR, "symbol": "triangle-down", "size": 11,
                "line": {"width": 1, "color": "white"}},
        hovertext=text, hoverinfo="text",
    ))  # fmt: skip


def _add_truth(
    fig: go.Figure, shapes: list, t: pd.DataFrame, points: pd.DataFrame, shown: Any
) -> None:
    if not len(t):
        return
    start, end = naive_utc(t["start_ts"]), naive_utc(t["end_ts"])
    keep, span_start, span_end = _clip(start, end, shown)
    if not keep.any():
        return
    t, start, end = t[keep], start[keep], end[keep]
    spans = 0
    for kind, s, e in zip(t["kind"], span_start, span_end, strict=True):
        if kind in _SHADED and e > s and spans < MAX_SPANS:
            spans += 1
            colour = fault_colour(kind)
            shapes.append({"type": "rect", "xref": "x", "yref": "paper", "x0": s, "x1": e,
                           "y0": 0, "y1": 1, "fillcolor": colour, "opacity": 0.12,
                           "line": {"width": 1, "dash": "dot", "color": colour},
                           "layer": "below"})  # fmt: skip
    for kind in sorted(set(t["kind"])):
        of = (t["kind"] == kind).to_numpy()
        rows, s, e, at = t[of], start[of], end[of], span_start[of]
        text = []
        for row, s0, e0 in zip(rows.itertuples(index=False), s, e, strict=True):
            where = "every sensor" if pd.isna(row.sensor_type) else row.sensor_type
            magnitude = getattr(row, "magnitude", None)
            detail = getattr(row, "detail", None)
            text.append(
                f"injected <b>{kind}</b> on {where}<br>{_fmt(s0)} → {_fmt(e0)}"
                + (f"<br>magnitude {magnitude:.4g}"
                   if magnitude is not None and not pd.isna(magnitude) else "")
                + (f"<br>{detail}" if isinstance(detail, str) and detail else "")
            )  # fmt: skip
        fig.add_trace(go.Scatter(
            x=at, y=_at(points, at), name=f"injected {kind}", mode="markers",
            marker={"color": fault_colour(kind), "symbol": "x", "size": 9,
                    "line": {"width": 1, "color": "black"}},
            hovertext=text, hoverinfo="text",
        ))  # fmt: skip


#: Fault kinds that show in a sensor's signal (network faults act on messages, not values).
SIGNAL_KINDS = ("spike", "drift", "stuck", "burst", "failure", "power", "anomaly", "degradation")


def busiest_signals(
    alerts: pd.DataFrame | None, truth: pd.DataFrame | None, limit: int = 3
) -> list[tuple[str, str]]:
    """The ``(machine_id, sensor_type)`` pairs with the most alerts and signal faults, most
    first: the sensors worth a :func:`signal_figure` after a run. Rows without a sensor
    (a whole-machine fault or alert) and network faults do not count.

    >>> a = pd.DataFrame({"machine_id": ["m-1", "m-2"], "sensor_type": ["vibration", None]})
    >>> t = pd.DataFrame({"kind": ["drift", "loss", "spike"], "machine_id": ["m-2"] * 3,
    ...                   "sensor_type": ["pressure"] * 3})
    >>> busiest_signals(a, t)
    [('m-2', 'pressure'), ('m-1', 'vibration')]
    """
    frames = []
    if alerts is not None and len(alerts):
        frames.append(alerts[["machine_id", "sensor_type"]])
    if truth is not None and len(truth):
        frames.append(truth.loc[truth["kind"].isin(SIGNAL_KINDS), ["machine_id", "sensor_type"]])
    if not frames:
        return []
    both = pd.concat(frames).dropna()
    counts = both.groupby(["machine_id", "sensor_type"]).size()
    ranked = counts.reset_index(name="n").sort_values(
        ["n", "machine_id", "sensor_type"], ascending=[False, True, True]
    )
    return list(zip(ranked["machine_id"], ranked["sensor_type"], strict=True))[:limit]
