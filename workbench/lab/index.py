"""``reports/index.html``: every report with its status, and the trend of every figure.

One self-contained page (no script, no network): first the series whose latest run
regressed or failed, then per notebook and parameter set the recorded figures across runs
(a small SVG line each, the latest value, the median of the runs before and a verdict),
then every report, newest first, with its status, duration, parameters and key results.
See :mod:`workbench.lab.history` for how runs are compared.
"""

from __future__ import annotations

import hashlib
import html
import json
from pathlib import Path
from typing import Any

from workbench.lab.history import Entry, Series, load, series

#: figures shown per series (the flagged ones first); the rest are in the results files
MAX_FIGURES = 40
#: recorded results shown per report in the list of reports
MAX_RESULTS = 6

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em}summary{cursor:pointer;margin:.4em 0}
table{border-collapse:collapse;margin:.5em 0 1em}
td,th{padding:3px 9px;border-bottom:1px solid #e3e3e3;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.failed,.regression{color:#fff;background:#c62828;border-radius:3px;padding:1px 6px}
.completed,.steady{color:#2e7d32}
.improvement{color:#fff;background:#2e7d32;border-radius:3px;padding:1px 6px}
.changed{color:#fff;background:#ef6c00;border-radius:3px;padding:1px 6px}.new{color:#777}
code{font-size:.9em}.small{color:#666;font-size:.9em}
"""


def write_index(root: Path) -> Path:
    """Write ``root/index.html`` from the results files under ``root``; return its path."""
    entries = load(root)
    groups = series(entries)
    parts = [
        "<!doctype html><html><head><meta charset=utf-8><title>workbench reports</title>",
        f"<style>{_STYLE}</style></head><body><h1>workbench reports</h1>",
        f"<p class=small>{len(entries)} reports of {len({e.notebook for e in entries})} "
        f"notebooks. Runs of a notebook with the same parameters form a series; each figure "
        "of a series' latest run is compared with the median of up to five runs before it."
        "</p>",
        _attention(groups),
        "<h2>Trends</h2>",
        *(_series_html(s) for s in groups),
        "<h2>Every report</h2>",
        _reports_table(list(reversed(entries))),
        "</body></html>",
    ]
    index = root / "index.html"
    index.write_text("\n".join(parts), encoding="utf-8")
    return index


def _attention(groups: list[Series]) -> str:
    rows = []
    for s in groups:
        latest = s.entries[-1]
        flagged = s.regressions()
        if latest.status != "completed" or flagged:
            what = (
                f"<span class=failed>failed</span> {_e(latest.error or '')}"
                if latest.status != "completed"
                else "<span class=regression>regression</span> "
                + ", ".join(
                    f"{_e(c.name)} {_fmt(c.baseline)} &rarr; {_fmt(c.latest)}" for c in flagged
                )
            )
            rows.append(
                f"<tr><td>{_series_link(s)}</td><td>{_link(latest)}</td><td>{what}</td></tr>"
            )
    if not rows:
        return "<p>No regression and no failure in the latest run of any series.</p>"
    return (
        "<h2>Needs a look</h2><table><tr><th>series</th><th>latest run</th><th>what</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _series_html(s: Series) -> str:
    changes = s.changes[:MAX_FIGURES]
    runs = len(s.entries)
    failed = sum(e.status != "completed" for e in s.entries)
    counts: dict[str, int] = {}
    for c in changes:
        counts[c.verdict] = counts.get(c.verdict, 0) + 1
    verdicts = ", ".join(f"<span class={v}>{n} {v}</span>" for v, n in counts.items())
    flagged = failed or counts.get("regression") or counts.get("changed")
    head = (
        f'<details id="{_anchor(s)}"{" open" * bool(flagged)}><summary><b>{_e(s.notebook)}</b> '
        f"<span class=small>{_params(s.changed)}; {runs} run{'s' * (runs != 1)}"
        + (f", <span class=failed>{failed} failed</span>" if failed else "")
        + f"</span> {verdicts}</summary>"
    )
    if not changes:
        return head + "<p>No completed run yet.</p></details>"
    rows = "".join(
        f"<tr><td><code>{_e(c.name)}</code></td><td>{_spark(c.values)}</td>"
        f"<td class=num>{_fmt(c.latest)}</td><td class=num>{_fmt(c.baseline)}</td>"
        f"<td><span class={c.verdict}>{c.verdict}</span></td></tr>"
        for c in changes
    )
    return (
        head + "<table><tr><th>figure</th><th>runs</th><th>latest</th><th>median before</th>"
        "<th></th></tr>" + rows + "</table></details>"
    )


def _reports_table(entries: list[Entry]) -> str:
    rows = []
    for e in entries:
        status = f"<span class={_e(e.status)}>{_e(e.status)}</span>"
        if e.error:
            status += f"<div class=small>{_e(e.error)}</div>"
        scalars = [
            (k, v)
            for k, v in e.results.items()
            if k != "run_id" and (v is None or isinstance(v, bool | int | float | str))
        ]
        results = "<br>".join(f"{_e(k)}: {_fmt(v)}" for k, v in scalars[:MAX_RESULTS])
        rows.append(
            f"<tr><td>{_e(e.started.replace('T', ' ')[:19])}</td><td>{_e(e.notebook)}</td>"
            f"<td>{_link(e)}</td><td>{status}</td><td class=num>{_fmt(e.seconds)} s</td>"
            f"<td>{_params(e.parameters)}</td><td>{results}</td></tr>"
        )
    return (
        "<table><tr><th>started (UTC)</th><th>notebook</th><th>run</th><th>status</th>"
        "<th>took</th><th>parameters</th><th>results</th></tr>" + "".join(rows) + "</table>"
    )


def _spark(values: list[float], width: int = 120, height: int = 24) -> str:
    """A small SVG line of ``values``, the latest point marked."""
    if len(values) < 2:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    step = width / (len(values) - 1)
    points = [(i * step, height - 2 - (v - low) / span * (height - 4))
              for i, v in enumerate(values)]  # fmt: skip
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    x, y = points[-1]
    return (
        f'<svg width="{width + 4}" height="{height}" viewBox="-2 0 {width + 4} {height}">'
        f'<polyline fill="none" stroke="#1565c0" stroke-width="1.5" points="{line}"/>'
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="#1565c0"/></svg>'
    )


def _link(e: Entry) -> str:
    if e.html is None:
        return f"<code>{_e(e.run_id)}</code>"
    return f'<a href="{_e(e.html)}"><code>{_e(e.run_id)}</code></a>'


def _series_link(s: Series) -> str:
    label = f"<span class=small>{_params(s.changed)}</span>"
    return f'<a href="#{_anchor(s)}">{_e(s.notebook)}</a> {label}'


def _anchor(s: Series) -> str:
    return "s-" + hashlib.sha1(s.entries[0].series.encode()).hexdigest()[:10]


def _params(params: dict[str, Any]) -> str:
    if not params:
        return "default parameters"
    return ", ".join(f"{_e(k)}={_e(json.dumps(v))}" for k, v in params.items())


def _fmt(value: Any) -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return _e(f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}")
    if isinstance(value, int):
        return f"{value:,}"
    return _e(str(value))


def _e(text: str) -> str:
    return html.escape(str(text))
