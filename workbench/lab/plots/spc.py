"""Control charts as plotly figures: the charts :mod:`workbench.analysis.spc` computes.

A Shewhart chart (individuals or X-bar) shows the series, its centre line, the 3-sigma
control limits (red, dashed) and the 1- and 2-sigma zone edges (dotted) that the run rules
use, with the Phase I baseline shaded grey; points that break a rule are red, and hovering
one names the rules. With its dispersion chart (moving range, R or S) below, both share the
time axis. EWMA and CUSUM charts have figures of their own. Ground-truth faults
(``workbench.lab.ground_truth``) appear as spans in a colour per fault kind, so a reader
sees at once whether the signals coincide with what chaos injected. Times are event time,
UTC.

>>> import numpy as np
>>> from workbench.analysis.spc import individuals_chart
>>> i, mr = individuals_chart(np.r_[np.tile([1.0, 1.2, 0.9, 1.1], 6), 3.0], baseline=24)
>>> fig = control_chart_figure(i, mr)
>>> [t.name for t in fig.data if t.name.startswith("rule")]
['rule violations', 'rule violations (MR)']
>>> marks = next(t for t in fig.data if t.name == "rule violations")
>>> marks.hovertext[0].split("<br>")[1].startswith("WE1: one point beyond 3")
True
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.analysis.spc import Chart, SpcResults
from workbench.lab.plots.style import fault_colour, house_layout, naive_utc

SERIES, CENTRE, LIMIT, ZONE, SIGNAL = "#1f77b4", "#2ca02c", "#d62728", "#9e9e9e", "#d62728"
#: Above this many points, traces use WebGL (``Scattergl``) to stay responsive.
WEBGL_FROM = 5000
#: At most this many ground-truth spans are drawn, so a long run's figure stays light.
MAX_SPANS = 300
_TITLES = {
    "individuals": "individuals (I)",
    "moving_range": "moving range (MR)",
    "xbar": "subgroup means (X-bar)",
    "range": "subgroup ranges (R)",
    "stdev": "subgroup standard deviations (S)",
}
_SHORT = {"moving_range": "MR", "range": "R", "stdev": "S"}


def control_chart_figure(
    chart: Chart,
    dispersion: Chart | None = None,
    *,
    truth: pd.DataFrame | None = None,
    title: str | None = None,
    zones: bool = True,
) -> go.Figure:
    """A Shewhart chart (and its dispersion chart underneath, if given).

    ``truth``: ground-truth episodes to shade, already narrowed to this machine and sensor
    (``workbench.analysis.spc.faults_on``).
    """
    rows = 2 if dispersion is not None else 1
    fig = make_subplots(
        rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.08,
        row_heights=[0.68, 0.32][:rows] if rows == 2 else None,
        subplot_titles=[_title(c) for c in (chart, dispersion) if c],
    )  # fmt: skip
    _limits(fig, chart, row=1, zones=zones)
    if dispersion is not None:
        _limits(fig, dispersion, row=2, zones=False)
    shapes = _baseline_span(chart) + _truth_spans(fig, truth, chart)
    what = "X-bar" if chart.kind == "xbar" else "I"
    low = _SHORT.get(dispersion.kind, "") if dispersion is not None else ""
    if _moving(chart):
        about = (f"moving centre: EWMA forecast, lambda {chart.params['forecast_lam']:g}; "
                 f"sigma of the forecast errors {chart.sigma:.3g}")  # fmt: skip
    else:
        about = f"centre {chart.center:.4g}, sigma {chart.sigma:.3g}"
    fig.update_layout(
        title=title
        or f"{chart.name or 'series'}: {what}{'-' + low if low else ''} chart ({about})",
        shapes=shapes,
        hovermode="closest",
        height=560 if rows == 2 else 420,
    )
    house_layout(fig)
    fig.update_xaxes(title_text=_x_title(chart), row=rows, col=1)
    return fig


def ewma_figure(
    chart: Chart, *, truth: pd.DataFrame | None = None, title: str | None = None
) -> go.Figure:
    """The EWMA statistic against its time-varying limits, the readings faint behind it."""
    fig = go.Figure()
    x = _x(chart.points["x"])
    scatter = _scatter(len(x))
    watches = chart.params.get("watches", "readings")
    fig.add_trace(scatter(x=x, y=chart.points["observation"], name=watches, mode="markers",
                          marker={"size": 3, "color": ZONE}, opacity=0.5))  # fmt: skip
    _lines(fig, chart, x, row=None, zones=False, series_name="EWMA")
    shapes = _baseline_span(chart) + _truth_spans(fig, truth, chart)
    p = chart.params
    fig.update_layout(
        title=title
        or f"{chart.name or 'series'}: EWMA of the {watches} "
        f"(lambda {p.get('lam')}, L {p.get('L')})",
        xaxis_title=_x_title(chart),
        yaxis_title="EWMA",
        shapes=shapes,
        height=420,
    )
    return house_layout(fig)


def cusum_figure(
    chart: Chart, *, truth: pd.DataFrame | None = None, title: str | None = None
) -> go.Figure:
    """The tabular CUSUM: C+ upwards, C- drawn downwards, the decision interval +-H, and
    the points where a sum is beyond it."""
    fig = go.Figure()
    p = chart.points
    x = _x(p["x"])
    scatter = _scatter(len(x))
    h = float(p["h"].iloc[0]) if len(p) else 0.0
    fig.add_trace(scatter(x=x, y=p["upper"], name="C+ (upward)", mode="lines",
                          line={"color": SERIES}))  # fmt: skip
    fig.add_trace(scatter(x=x, y=-p["lower"], name="C- (downward, drawn negative)",
                          mode="lines", line={"color": "#ff7f0e"}))  # fmt: skip
    for y, name in ((h, "+H"), (-h, "-H")):
        fig.add_trace(scatter(x=x, y=np.full(len(x), y), name=name, mode="lines",
                              line={"color": LIMIT, "dash": "dash"},
                              showlegend=name == "+H"))  # fmt: skip
    up, down = p["CUSUM+"].to_numpy(), p["CUSUM-"].to_numpy()
    y = np.where(up, p["upper"], -p["lower"])
    hit = up | down
    text = np.where(up, "C+ > H: upward shift", "C- > H: downward shift")[hit]
    fig.add_trace(scatter(x=x[hit], y=y[hit], name="signals", mode="markers",
                          marker={"color": SIGNAL, "size": 7}, hovertext=text,
                          hoverinfo="x+y+text"))  # fmt: skip
    shapes = _baseline_span(chart) + _truth_spans(fig, truth, chart)
    fig.update_layout(
        title=title
        or f"{chart.name or 'series'}: CUSUM of the {chart.params.get('watches', 'readings')} "
        f"(k {chart.params.get('k')} sigma, h {chart.params.get('h')} sigma, "
        f"target {chart.center:.4g})",
        xaxis_title=_x_title(chart),
        yaxis_title="cumulative sum",
        shapes=shapes,
        height=420,
    )
    return house_layout(fig)


def violations_figure(results: SpcResults, title: str | None = None) -> go.Figure:
    """Points breaking a rule per machine (rows) and sensor (columns): where to look first.

    >>> import pandas as pd
    >>> from workbench.analysis.spc import chart_per_sensor
    >>> df = pd.DataFrame({"machine_id": "m-0001", "sensor_type": "pressure",
    ...                    "ts": pd.date_range("2026-01-01", periods=24, freq="s"),
    ...                    "value": [1.0, 1.1, 0.9, 1.0] * 5 + [2.0] * 4})
    >>> violations_figure(chart_per_sensor(df, baseline_s=20)).data[0].z.tolist()
    [[4]]
    """
    s = results.summary
    table = s.pivot_table(index="machine_id", columns="sensor_type", values="violations",
                          aggfunc="sum")  # fmt: skip
    fig = go.Figure(go.Heatmap(
        z=table.to_numpy(), x=list(table.columns), y=list(table.index), colorscale="Reds",
        hovertemplate="%{y} · %{x}: %{z} points breaking a rule<extra></extra>",
        colorbar={"title": "points"},
    ))  # fmt: skip
    fig.update_layout(
        title=title
        or f"Points breaking a rule ({', '.join(results.rules)}), per machine and sensor",
        yaxis={"autorange": "reversed"},
        height=max(300, 28 * len(table) + 160),
    )
    return fig


# --- pieces ----------------------------------------------------------------------------


def _limits(fig: go.Figure, chart: Chart, row: int, zones: bool) -> None:
    x = _x(chart.points["x"])
    suffix = f" ({_SHORT[chart.kind]})" if chart.kind in _SHORT else ""
    _lines(fig, chart, x, row=row, zones=zones, series_name=f"{chart.kind}{suffix}",
           suffix=suffix)  # fmt: skip


def _lines(
    fig: go.Figure,
    chart: Chart,
    x: Any,
    row: int | None,
    zones: bool,
    series_name: str,
    suffix: str = "",
) -> None:
    """The series, centre line, control limits, zone edges and rule violations."""
    p = chart.points
    scatter = _scatter(len(p))
    at = {"row": row, "col": 1} if row is not None else {}
    shape = "hv" if chart.kind in ("xbar", "range", "stdev") else "linear"
    legend = not suffix
    fig.add_trace(scatter(x=x, y=p["value"], name=series_name, mode="lines+markers",
                          line={"color": SERIES, "width": 1}, marker={"size": 4},
                          showlegend=False), **at)  # fmt: skip
    centre_name = "forecast (centre line)" if _moving(chart) and not suffix else "centre line"
    fig.add_trace(scatter(x=x, y=p["center"], name=centre_name, mode="lines",
                          line={"color": CENTRE, "width": 1.5, "shape": shape},
                          legendgroup="centre", showlegend=legend), **at)  # fmt: skip
    for col, name in (("ucl", "UCL"), ("lcl", "LCL")):
        fig.add_trace(scatter(x=x, y=p[col], name=name, mode="lines",
                              line={"color": LIMIT, "width": 1.5, "dash": "dash",
                                    "shape": shape},
                              legendgroup="limits", showlegend=legend and name == "UCL"),
                      **at)  # fmt: skip
    if zones:
        for k in (1, 2):
            for sign in (1, -1):
                fig.add_trace(scatter(x=x, y=p["center"] + sign * k * p["sigma"],
                                      name=f"{'+' if sign > 0 else '-'}{k} sigma", mode="lines",
                                      line={"color": ZONE, "width": 1, "dash": "dot",
                                            "shape": shape},
                                      legendgroup="zones", hoverinfo="skip",
                                      showlegend=legend and k == 1 and sign > 0),
                              **at)  # fmt: skip
    hit = chart.flagged().to_numpy()
    if hit.any():
        labels = chart.labels().to_numpy()
        text = [f"point {i}<br>{'<br>'.join(lab.split('; '))}"
                for i, lab in zip(np.flatnonzero(hit), labels, strict=True)]  # fmt: skip
        fig.add_trace(scatter(x=np.asarray(x)[hit], y=p["value"].to_numpy()[hit],
                              name=f"rule violations{suffix}", mode="markers",
                              marker={"color": SIGNAL, "size": 8, "symbol": "circle"},
                              hovertext=text, hoverinfo="x+y+text",
                              showlegend=legend), **at)  # fmt: skip


def _baseline_span(chart: Chart) -> list[dict[str, Any]]:
    """A grey span over the Phase I baseline, when it is not the whole series."""
    p = chart.points
    base = p["baseline"].to_numpy(dtype=bool)
    if not base.any() or base.all():
        return []
    x = _x(p["x"])
    xs = np.asarray(x)[base]
    return [{"type": "rect", "xref": "x", "yref": "paper", "x0": xs[0], "x1": xs[-1],
             "y0": 0, "y1": 1, "fillcolor": "#bdbdbd", "opacity": 0.18, "layer": "below",
             "line": {"width": 0},
             "label": {"text": "Phase I baseline", "textposition": "top left",
                       "font": {"size": 10, "color": "#616161"}}}]  # fmt: skip


def _truth_spans(fig: go.Figure, truth: pd.DataFrame | None, chart: Chart) -> list[dict]:
    """A span per ground-truth episode (a line for an instant), and one legend entry per
    fault kind whose marker hovers the episode's details."""
    if truth is None or not len(truth) or not _is_time(chart.points["x"]):
        return []
    t = truth.iloc[:MAX_SPANS]
    start, end = _x(t["start_ts"]), _x(t["end_ts"])
    shapes = []
    for kind, s, e in zip(t["kind"], start, end, strict=True):
        colour = fault_colour(kind)
        if s == e:
            shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": s, "x1": s,
                           "y0": 0, "y1": 1, "layer": "below",
                           "line": {"color": colour, "width": 2, "dash": "dot"}})  # fmt: skip
        else:
            shapes.append({"type": "rect", "xref": "x", "yref": "paper", "x0": s, "x1": e,
                           "y0": 0, "y1": 1, "fillcolor": colour, "opacity": 0.2,
                           "layer": "below", "line": {"width": 0}})  # fmt: skip
    top = np.nanmax(np.r_[chart.points["value"].to_numpy(dtype=float),
                          chart.points["ucl"].to_numpy(dtype=float), -np.inf])  # fmt: skip
    top = top if np.isfinite(top) else 0.0
    for kind, rows in t.assign(_s=start.to_numpy(), _e=end.to_numpy()).groupby("kind"):
        magnitude = rows["magnitude"] if "magnitude" in rows else pd.Series(np.nan, rows.index)
        text = [f"injected <b>{kind}</b><br>{_fmt(s)} to {_fmt(e)}"
                + (f"<br>magnitude {m:.4g}" if pd.notna(m) else "")
                for s, e, m in zip(rows["_s"], rows["_e"], magnitude, strict=True)]  # fmt: skip
        fig.add_trace(go.Scatter(x=rows["_s"], y=[top] * len(rows), name=f"injected {kind}",
                                 mode="markers", hovertext=text, hoverinfo="text",
                                 marker={"symbol": "triangle-down", "size": 10,
                                         "color": fault_colour(kind)}))  # fmt: skip
    return shapes


def _moving(chart: Chart) -> bool:
    return chart.params.get("centre") == "moving"


def _title(chart: Chart) -> str:
    if _moving(chart):
        return ("readings around their forecast" if chart.kind == "individuals"
                else "moving range of the forecast errors")  # fmt: skip
    return _TITLES.get(chart.kind, chart.kind)


def _is_time(x: pd.Series) -> bool:
    return pd.api.types.is_datetime64_any_dtype(x) or (
        len(x) > 0 and isinstance(x.iloc[0], pd.Timestamp)
    )


def _x(values: pd.Series) -> pd.Series:
    """Times as naive UTC (plotly.js does not read UTC offsets); anything else as it is."""
    if _is_time(values):
        return naive_utc(values).reset_index(drop=True)
    return values.reset_index(drop=True)


def _x_title(chart: Chart) -> str:
    if _is_time(chart.points["x"]):
        return "event time (UTC)"
    return "subgroup" if chart.kind in ("xbar", "range", "stdev") else "reading"


def _scatter(n: int) -> type[go.Scatter] | type[go.Scattergl]:
    return go.Scattergl if n > WEBGL_FROM else go.Scatter


def _fmt(t: Any) -> str:
    return "-" if t is None or pd.isna(t) else pd.Timestamp(t).strftime("%Y-%m-%d %H:%M:%S")
