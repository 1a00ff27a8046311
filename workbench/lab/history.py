"""The history of a reports folder: every run of every notebook, and what changed.

Each ``workbench report`` leaves ``<notebook>-<run id>.json`` beside its HTML: status,
duration, parameters and the results the notebook recorded. This module reads them back and
compares like with like: runs of the same notebook with the same effective parameters (its
defaults with the values given) form a *series*, and each recorded number of the latest run
is compared with the median of the runs before it.

A change is a *regression* when the figure has a known good direction and moved the wrong
way by more than its tolerance: recall, precision, throughput and whether the books close
should not fall; missed faults, false alarms, delays, latency, memory and duration should
not rise. Timing figures get a wide tolerance (machines are noisy), quality figures a
narrow one, counts none. A figure with no known direction that changed is reported as
*changed*: with the same seed most figures should not move at all.

>>> direction("score.spike.recall"), direction("faults_missed"), direction("produced")
(1, -1, 0)
>>> direction("processor_eps"), direction("latency_ms.p99"), direction("peak_rss_mb")
(1, -1, -1)
>>> direction("new.roc_auc"), direction("in_use.lead_time_s"), direction("promoted")
(1, 1, 0)
>>> flatten({"score": {"spike": {"recall": 1.0}}, "ok": True, "name": "x", "parameters": {"n": 1}})
{'score.spike.recall': 1.0, 'ok': 1.0}
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: previous runs of a series the latest is compared with (their median)
BASELINE_RUNS = 5
#: the figure every report has: how long the notebook took, start to end (a regression
#: only when it doubles: it includes starting a stack and a kernel)
REPORT_SECONDS = "report seconds"

_HIGHER = {"recall", "precision", "f1", "reconciled", "detected", "caught", "flagged", "per",
           "ratio", "throughput", "close", "closes", "eps", "nab", "health", "auc",
           "lead"}  # fmt: skip
_LOWER = {"missed", "false", "alarms", "alarm", "delay", "latency", "p50", "p90", "p95", "p99",
          "rss", "lost", "failed", "seconds", "elapsed", "errors", "error"}  # fmt: skip
_NOISY = {"per", "ratio", "throughput", "eps", "latency", "p50", "p90", "p95", "p99", "rss",
          "seconds", "elapsed", "delay", "lead"}  # fmt: skip


def _words(name: str) -> list[str]:
    return [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]


def direction(name: str) -> int:
    """+1 if a higher value of the figure ``name`` (a dotted path) is better, -1 if lower
    is, 0 if unknown. The last part of the path decides, then the parts before it.

    >>> direction("health_min"), direction("health_by_machine.m-0001")
    (1, 1)
    """
    for part in reversed(name.split(".")):
        words = set(_words(part))
        if words & _LOWER:
            return -1
        if words & _HIGHER:
            return 1
    return 0


def tolerance(name: str, baseline: float) -> float:
    """How far a figure may move the wrong way before it counts as a regression."""
    words = set(_words(name.rsplit(".", 1)[-1]))
    if name == REPORT_SECONDS:
        return abs(baseline)
    if words & _NOISY:
        return 0.25 * abs(baseline)  # timing on a shared machine
    if 0.0 <= baseline <= 1.0 and not float(baseline).is_integer():
        return 0.02  # a share: recall, precision
    return 0.0  # a count: one more missed fault is one more


#: recorded results that are inputs, not findings: never compared
INPUTS = frozenset({"parameters", "run_id"})


def flatten(results: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers in ``results`` by dotted path (booleans as 0/1; text, None and the
    recorded inputs left out)."""
    out: dict[str, float] = {}
    for key, value in results.items():
        if not prefix and key in INPUTS:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        elif isinstance(value, bool | int | float):
            out[name] = float(value)
    return out


@dataclass(frozen=True)
class Entry:
    """One report, as its results file says."""

    notebook: str
    run_id: str
    status: str
    seconds: float | None
    started: str
    #: the values given (``-p``), every parameter's value, and those that differ from the
    #: notebook's defaults
    parameters: dict[str, Any]
    effective: dict[str, Any]
    changed: dict[str, Any]
    results: dict[str, Any]
    html: str | None
    error: str | None

    @property
    def series(self) -> str:
        return f"{self.notebook} {json.dumps(self.effective, sort_keys=True)}"


@dataclass
class Change:
    """One figure of a series' latest run against the median of the runs before it."""

    name: str
    values: list[float]
    latest: float
    baseline: float | None
    verdict: str  # "regression", "improvement", "changed", "steady", "new"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "latest": self.latest, "baseline": self.baseline,
                "verdict": self.verdict, "values": self.values}  # fmt: skip


@dataclass
class Series:
    """The runs of one notebook with the same effective parameters, oldest first."""

    notebook: str
    effective: dict[str, Any]
    entries: list[Entry] = field(default_factory=list)

    @functools.cached_property
    def changes(self) -> list[Change]:
        """Every recorded figure of the latest completed run, regressions first (computed
        once: the index, ``ok``, ``text`` and ``to_dict`` all read it; a series is complete
        by the time anyone asks)."""
        done = [e for e in self.entries if e.status == "completed"]
        if not done:
            return []
        *before, latest = done
        before = before[-BASELINE_RUNS:]
        history = [flatten(e.results) for e in before]
        # the run's duration is a figure too: a notebook that got slower shows it
        now = flatten(latest.results) | {REPORT_SECONDS: latest.seconds or 0.0}
        for e, h in zip(before, history, strict=True):
            h[REPORT_SECONDS] = e.seconds or 0.0
        out = []
        for name, value in now.items():
            past = [h[name] for h in history if name in h]
            values = [*past, value]
            if not past:
                out.append(Change(name, values, value, None, "new"))
                continue
            base = statistics.median(past)
            out.append(Change(name, values, value, base, _verdict(name, value, base)))
        order = {"regression": 0, "changed": 1, "improvement": 2, "new": 3, "steady": 4}
        return sorted(out, key=lambda c: (order[c.verdict], c.name))

    @property
    def changed(self) -> dict[str, Any]:
        """The parameters that differ from the notebook's defaults (as of the latest run)."""
        return self.entries[-1].changed

    def regressions(self) -> list[Change]:
        return [c for c in self.changes if c.verdict == "regression"]

    @property
    def ok(self) -> bool:
        """The latest run completed and no figure of it regressed."""
        return self.entries[-1].status == "completed" and not self.regressions()

    def to_dict(self) -> dict[str, Any]:
        latest = self.entries[-1]
        return {
            "notebook": self.notebook, "parameters": self.changed, "runs": len(self.entries),
            "ok": self.ok,
            "latest": {"run_id": latest.run_id, "status": latest.status, "html": latest.html,
                       "started": latest.started, "error": latest.error},
            "changes": [c.to_dict() for c in self.changes if c.verdict != "steady"],
        }  # fmt: skip

    def text(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.changed.items()) or "defaults"
        latest = self.entries[-1]
        head = f"{self.notebook} ({params}): {len(self.entries)} runs, latest {latest.run_id}"
        if latest.status != "completed":
            return f"{head} FAILED: {latest.error}"
        flagged = [c for c in self.changes if c.verdict in ("regression", "changed")]
        lines = [head + (" ok" if not flagged else "")]
        lines += [f"  {c.verdict}: {c.name} {c.baseline:g} -> {c.latest:g}" for c in flagged]
        return "\n".join(lines)


def _verdict(name: str, value: float, base: float) -> str:
    if value == base:
        return "steady"
    way = direction(name)
    if way == 0:
        return "changed"
    worse = (base - value) if way > 0 else (value - base)
    if worse > tolerance(name, base):
        return "regression"
    if worse < 0 and -worse > tolerance(name, base):
        return "improvement"
    return "steady"


def load(root: Path) -> list[Entry]:
    """Every report under ``root``, oldest first. Files that are not report results (the
    bench's JSON, a file cut short) are skipped with a log line, never fatal."""
    entries = []
    for path in root.glob("*/*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            log.info("skipping %s: %s", path, exc)
            continue
        if not isinstance(data, dict) or not {"notebook", "status", "run_id"} <= data.keys():
            continue
        html = path.with_suffix(".html")
        started = data.get("started") or dt.datetime.fromtimestamp(
            path.stat().st_mtime, dt.UTC
        ).isoformat(timespec="seconds")
        entries.append(Entry(
            notebook=data["notebook"], run_id=data["run_id"], status=data["status"],
            seconds=data.get("seconds"), started=started,
            parameters=data.get("parameters") or {},
            effective=data.get("effective") or data.get("parameters") or {},
            changed=data.get("changed", data.get("parameters")) or {},
            results=data.get("results") or {},
            html=str(html.relative_to(root)) if html.is_file() else None,
            error=data.get("error"),
        ))  # fmt: skip
    return sorted(entries, key=lambda e: (e.started, e.run_id))


def series(entries: list[Entry]) -> list[Series]:
    """``entries`` grouped into series, by notebook, then the most recent first."""
    groups: dict[str, Series] = {}
    for e in entries:
        groups.setdefault(e.series, Series(e.notebook, e.effective)).entries.append(e)
    return sorted(groups.values(), key=lambda s: (s.notebook, -_last(s)))


def _last(s: Series) -> float:
    return dt.datetime.fromisoformat(s.entries[-1].started).timestamp()
