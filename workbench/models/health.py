"""A health summary per machine: a score from 0 to 100 and a few sentences a maintenance
engineer reads, built only from numbers measured in a stored run.

Five indicators, each read with SQL from the run's tables:

- **failures**: critical alerts that aim at a ``failure`` (the shutdown rule), how many and
  how long before the end of the machine's data the last one began;
- **alerts**: the other alerts, counted per rule;
- **drift**: per sensor, the change of the one-minute window mean from the first third of
  the run to the last, in units of its spread (the first third's minute-to-minute standard
  deviation, or the mean within-minute one if that is larger);
- **heat per amp**: temperature per ampere of motor current (minutes with the motor
  running), first third against last third: a machine that runs hotter at equal load;
- **data quality**: the share of null readings, missing one-minute windows, dead letters.

Each indicator that is out of its normal range takes points off 100; the deductions are
listed (indicator, value, points), and every sentence of the narrative names the numbers
it rests on. Same database, same answer: nothing is sampled, nothing calls out.

>>> _points(0.0, 3.0, 2.0, 20.0), _points(5.0, 3.0, 2.0, 20.0), _points(99.0, 3.0, 2.0, 20.0)
(0.0, 4.0, 20.0)
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa

from workbench.models import ModelError
from workbench.sinks import schema
from workbench.sinks.postgres import engine

log = logging.getLogger(__name__)

#: Window width the indicators read (the processor's one-minute windows).
WIDTH_S = 60
#: Drift below this many within-minute standard deviations is load and noise, not drift.
DRIFT_FREE_SIGMAS = 3.0
#: Minutes a third of the run needs before drift and heat per amp are judged.
MIN_THIRD = 3
#: Heat per amp may change this much (per cent) before it counts: the temperature follows
#: a change of load minutes late, so a healthy machine's ratio moves 5 to 15 % in a run.
HEAT_FREE_PCT = 20.0
#: Current (A) below which the motor counts as stopped: heat per amp means nothing then.
RUNNING_A = 0.5


class HealthError(ModelError):
    """A health summary was asked of a run or machine the database does not have."""


@dataclass(frozen=True)
class Deduction:
    """Points one indicator took off the score, and the value that took them."""

    indicator: str
    value: float
    points: float
    why: str


@dataclass(frozen=True)
class MachineHealth:
    """The health of one machine in one run: ``score`` is 100 minus the deductions."""

    run_id: str
    machine_id: str
    score: float
    deductions: list[Deduction]
    narrative: list[str]
    indicators: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        """The summary as a few lines: the score, the narrative, the deductions."""
        lines = [f"{self.machine_id}: health {self.score:g}/100 (run {self.run_id})"]
        lines += [f"  {s}" for s in self.narrative]
        lines += [f"  - {d.points:g} {d.indicator} ({d.why})" for d in self.deductions]
        return "\n".join(lines)


def _points(value: float, free: float, per_unit: float, cap: float) -> float:
    """Points for ``value``: none up to ``free``, then ``per_unit`` per unit, at most ``cap``."""
    return round(min(cap, max(0.0, value - free) * per_unit), 1)


def latest_run(database_url: str) -> str:
    """The id of the run that started last; :class:`HealthError` when there is none."""
    r = schema.runs
    query = sa.select(r.c.run_id).order_by(r.c.started_at.desc(), r.c.run_id.desc()).limit(1)
    with _connect(database_url) as conn:
        run_id = conn.execute(query).scalar()
    if run_id is None:
        raise HealthError("no runs stored yet: make one with `workbench run`")
    return run_id


def machines(database_url: str, run_id: str) -> list[str]:
    """The machines of a run (those with one-minute windows), in order."""
    w = schema.window_stats
    query = (
        sa.select(w.c.machine_id)
        .where(w.c.run_id == run_id, w.c.width_s == WIDTH_S)
        .distinct()
        .order_by(w.c.machine_id)
    )
    with _connect(database_url) as conn:
        _check_run(conn, run_id)
        return list(conn.execute(query).scalars())


def health(database_url: str, run_id: str, machine_id: str) -> MachineHealth:
    """The health summary of one machine of a stored run; :class:`HealthError` for an
    unknown run or a machine without windows in it."""
    with _connect(database_url) as conn:
        _check_run(conn, run_id)
        return _summarise(conn, run_id, machine_id)


def health_all(database_url: str, run_id: str) -> list[MachineHealth]:
    """The summaries of every machine of a run, worst first (then by machine id)."""
    found = [health(database_url, run_id, m) for m in machines(database_url, run_id)]
    return sorted(found, key=lambda h: (h.score, h.machine_id))


class _connect:
    """A connection for a block, its engine disposed after it."""

    def __init__(self, url: str) -> None:
        self.engine = engine(url)

    def __enter__(self) -> sa.Connection:
        self.conn = self.engine.connect()
        return self.conn

    def __exit__(self, *exc: object) -> None:
        self.conn.close()
        self.engine.dispose()


def _check_run(conn: sa.Connection, run_id: str) -> None:
    r = schema.runs
    if conn.execute(sa.select(r.c.run_id).where(r.c.run_id == run_id)).first() is None:
        raise HealthError(f"no run {run_id!r} in the database (see `workbench db runs`)")


def _windows(conn: sa.Connection, run_id: str, machine_id: str) -> dict[str, list[Any]]:
    """The machine's final one-minute windows per sensor, in time order."""
    w = schema.window_stats
    query = (
        sa.select(
            w.c.sensor_type,
            w.c.window_start,
            w.c.window_end,
            w.c.count,
            w.c.nulls,
            w.c.mean,
            w.c.stddev,
        )
        .where(
            w.c.run_id == run_id, w.c.machine_id == machine_id, w.c.width_s == WIDTH_S, w.c.final
        )
        .order_by(w.c.sensor_type, w.c.window_start)
    )
    found: dict[str, list[Any]] = {}
    for row in conn.execute(query):
        found.setdefault(row.sensor_type, []).append(row)
    return found


def _thirds(rows: list[Any]) -> tuple[list[Any], list[Any]]:
    k = len(rows) // 3
    return rows[:k], rows[-k:] if k else []


def _std(values: list[float]) -> float | None:
    """The sample standard deviation, None under two values."""
    values = [v for v in values if v is not None]
    if len(values) < 2:
        return None
    m = sum(values) / len(values)
    return (sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _summarise(conn: sa.Connection, run_id: str, machine_id: str) -> MachineHealth:
    windows = _windows(conn, run_id, machine_id)
    if not windows:
        raise HealthError(f"machine {machine_id!r} has no one-minute windows in run {run_id!r}")
    end = max(rows[-1].window_end for rows in windows.values())
    deductions: list[Deduction] = []
    narrative: list[str] = []
    indicators: dict[str, Any] = {"data_end": end.isoformat()}

    def deduct(indicator: str, value: float, points: float, why: str) -> None:
        if points > 0:
            deductions.append(Deduction(indicator, round(value, 3), points, why))

    # failures and alerts
    a = schema.alerts
    query = (
        sa.select(a.c.rule, a.c.severity, a.c.detects, a.c.start_ts)
        .where(a.c.run_id == run_id, a.c.machine_id == machine_id)
        .order_by(a.c.start_ts, a.c.rule)
    )
    alerts = list(conn.execute(query))
    failures = [x for x in alerts if x.severity == "critical" and "failure" in (x.detects or [])]
    others = [x for x in alerts if x not in failures]
    if failures:
        last = failures[-1].start_ts
        since_s = round((end - last).total_seconds())
        rules = ", ".join(sorted({x.rule for x in failures}))
        narrative.append(
            f"{len(failures)} failure alert(s) ({rules}); the last began at "
            f"{_hms(last)}, {since_s} s before the end of its data ({_hms(end)})."
        )
        points = min(40.0, 25.0 + 5.0 * (len(failures) - 1))
        deduct("failures", len(failures), points, f"{len(failures)} failure alert(s)")
        indicators["failures"] = {"count": len(failures), "last": last.isoformat(),
                                  "since_s": since_s}  # fmt: skip
    else:
        narrative.append(f"No failure alert in the run's {_span(windows)} min of data.")
        indicators["failures"] = {"count": 0, "last": None, "since_s": None}
    by_rule: dict[str, int] = {}
    for x in others:
        by_rule[x.rule] = by_rule.get(x.rule, 0) + 1
    indicators["alerts"] = {"count": len(others), "by_rule": by_rule}
    if others:
        listed = ", ".join(f"{n} {rule}" for rule, n in sorted(by_rule.items()))
        narrative.append(f"{len(others)} other alert(s): {listed}.")
        deduct("alerts", len(others), _points(len(others), 0, 3.0, 20.0), "3 points per alert")

    # drift: the window mean's change from the first third to the last, against its spread
    drift: dict[str, float] = {}
    for sensor, rows in sorted(windows.items()):
        early, late = _thirds(rows)
        if len(early) < MIN_THIRD:
            continue
        e, la = _mean([r.mean for r in early]), _mean([r.mean for r in late])
        # the first third's minute-to-minute spread, but never less than the noise within
        # a minute (a constant sensor's means differ by rounding only)
        spread = max(_std([r.mean for r in early]) or 0.0, _mean([r.stddev for r in rows]) or 0.0)
        if e is None or la is None or not spread:
            continue
        drift[sensor] = {"early": round(e, 3), "late": round(la, 3), "spread": round(spread, 3),
                         "sigmas": round((la - e) / spread, 2)}  # fmt: skip
    indicators["drift"] = drift
    if drift:
        sensor = max(sorted(drift), key=lambda s: abs(drift[s]["sigmas"]))
        d = drift[sensor]
        z = d["sigmas"]
        said = "drifted" if abs(z) > DRIFT_FREE_SIGMAS else "moved most, within its spread"
        narrative.append(
            f"{sensor.capitalize()} {said}: its one-minute mean went from {d['early']:g} in the "
            f"first third of the run to {d['late']:g} in the last, {z:+.2f} times its spread "
            f"of {d['spread']:g}."
        )
        deduct("drift", abs(z), _points(abs(z), DRIFT_FREE_SIGMAS, 2.0, 20.0),
               f"{sensor} {z:+.2f} sigma, free up to {DRIFT_FREE_SIGMAS:g}")  # fmt: skip

    # temperature per amp of motor current, while running
    heat = _heat_per_amp(windows.get("temperature", []), windows.get("current", []))
    indicators["heat_per_amp"] = heat
    if heat is not None:
        narrative.append(
            f"Temperature per ampere of motor current went from {heat['early']:.3f} to "
            f"{heat['late']:.3f} °C/A ({heat['change_pct']:+.1f} %) at equal load."
        )
        deduct("heat_per_amp", abs(heat["change_pct"]),
               _points(abs(heat["change_pct"]), HEAT_FREE_PCT, 0.5, 10.0),
               f"{heat['change_pct']:+.1f} %, free up to {HEAT_FREE_PCT:g} %")  # fmt: skip

    # data quality
    count = sum(r.count for rows in windows.values() for r in rows)
    nulls = sum(r.nulls for rows in windows.values() for r in rows)
    gaps = sum(_gaps(rows) for rows in windows.values())
    d = schema.dead_letters
    dead = conn.execute(
        sa.select(sa.func.count()).where(d.c.run_id == run_id, d.c.key == machine_id.encode())
    ).scalar_one()
    null_pct = round(100.0 * nulls / count, 2) if count else 0.0
    indicators["quality"] = {"readings": count, "nulls": nulls, "null_pct": null_pct,
                             "missing_windows": gaps, "dead_letters": dead}  # fmt: skip
    narrative.append(
        f"Data quality: {nulls} of {count} readings null ({null_pct:.2f} %), {gaps} missing "
        f"one-minute window(s), {dead} dead letter(s)."
    )
    deduct("null_share", null_pct, _points(null_pct, 1.0, 1.0, 10.0), "per cent over 1 %")
    deduct("missing_windows", gaps, _points(gaps, 0, 1.0, 10.0), "1 point per window")
    deduct("dead_letters", dead, _points(dead, 0, 0.5, 5.0), "0.5 points per message")

    score = round(max(0.0, 100.0 - sum(x.points for x in deductions)), 1)
    return MachineHealth(run_id, machine_id, score, deductions, narrative, indicators)


def _heat_per_amp(temperature: list[Any], current: list[Any]) -> dict[str, float] | None:
    """Temperature per ampere in minutes with the motor running: first third, last third."""
    amps = {r.window_start: r.mean for r in current}
    ratios = [
        t.mean / amps[t.window_start]
        for t in temperature
        if t.mean is not None and (amps.get(t.window_start) or 0.0) > RUNNING_A
    ]
    early, late = _thirds(ratios)
    if len(early) < MIN_THIRD:
        return None
    e, la = sum(early) / len(early), sum(late) / len(late)
    return {"early": round(e, 3), "late": round(la, 3), "minutes": len(ratios),
            "change_pct": round(100.0 * (la - e) / e, 1)}  # fmt: skip


def _gaps(rows: list[Any]) -> int:
    """One-minute windows missing between a sensor's first and last."""
    if not rows:
        return 0
    span = (rows[-1].window_start - rows[0].window_start).total_seconds()
    return int(span // WIDTH_S) + 1 - len(rows)


def _span(windows: dict[str, list[Any]]) -> int:
    starts = [r.window_start for rows in windows.values() for r in rows]
    return round((max(starts) - min(starts)).total_seconds() / 60) + 1


def _hms(ts: dt.datetime) -> str:
    return ts.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
