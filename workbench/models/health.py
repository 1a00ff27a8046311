"""A health summary per machine: a score from 0 to 100 and a few sentences a maintenance
engineer reads, built only from numbers measured in a stored run.

The indicators, each read with SQL from the run's tables:

- **failures**: critical alerts that aim at a ``failure`` (the shutdown rule): how many, how
  many of them are *recent* (see below), and the **time since the last failure**: from the
  first breach of the last one to the run's latest reading;
- **alerts**: the other alerts, counted per rule, recent ones apart from older ones;
- **drift**: per sensor, the change of the one-minute window mean from the first third of
  the run to the last, in units of its spread (the first third's minute-to-minute standard
  deviation, or the mean within-minute one if that is larger);
- **heat per amp**: temperature per ampere of motor current (minutes with the motor
  running), first third against last third: a machine that runs hotter at equal load;
- **data quality**: the share of null readings, missing one-minute windows, dead letters.

**Recent** is measured on the run's event-time clock: an alert is recent when it was open at
some time in the ``recent_s`` seconds (default :data:`RECENT_S`, an hour) before the run's
latest reading, the same instant for every machine of the run. That is an alert opened in
that window, or opened earlier and still open in it: an alert that has not closed is news
however old it is. Recent alerts cost their full points; an older failure costs less the
longer ago it began (``since_failure``), and older alerts of the other rules are listed and
cost nothing.

The time since the last failure comes from the failure alerts, not from the chaos ground
truth: the summary must say what the pipeline measured, on a replayed or real plant as on a
simulated one, and a replayed file or a gateway's devices have no ground truth at all. (The
tests hold it against the ground truth instead.)

Each indicator that is out of its normal range takes points off 100; the deductions are
listed (indicator, value, points), and every sentence of the narrative names the numbers
it rests on. Same database, same answer: nothing is sampled, nothing calls out.
:func:`save` keeps the summaries in the ``machine_health`` table (one row per run and
machine, upserted), where Grafana's *Health summary* panel reads them.

>>> _points(0.0, 3.0, 2.0, 20.0), _points(5.0, 3.0, 2.0, 20.0), _points(99.0, 3.0, 2.0, 20.0)
(0.0, 4.0, 20.0)
>>> _since_points(600, 300), _since_points(3600, 300)
(5.0, 0.8)
>>> _window_text(3600), _window_text(90)
('60 min', '90 s')
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import sqlalchemy as sa

from workbench import sinks
from workbench.errors import ConfigError
from workbench.models import ModelError
from workbench.sinks import schema

log = logging.getLogger(__name__)

#: Where a score turns from red to orange and from orange to green, in the dashboard and the
#: lab's figures: a recent failure (25 points) alone makes a machine orange, a second
#: problem of that size red.
SCORE_BANDS = (60.0, 90.0)
#: Window width the indicators read (the processor's one-minute windows).
WIDTH_S = 60
#: Alerts open at some time within this many seconds before the run's latest reading are
#: recent and cost their full points (``--recent``, ``?recent=``).
RECENT_S = 3600.0
#: A recent failure alert: points for the first, for each more, and at most.
FAILURE_POINTS, MORE_FAILURE_POINTS, FAILURE_CAP = 25.0, 5.0, 40.0
#: A failure that is not recent costs at most this, times the recent window over the time
#: since it began: 10 points when it began just before the window, 5 at twice as long ago.
SINCE_FAILURE_POINTS = 10.0
#: A recent alert of another rule: points each, and at most.
ALERT_POINTS, ALERT_CAP = 3.0, 20.0
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

    @property
    def worst(self) -> str | None:
        """The indicator that took the most points (the first of equals), None if none did."""
        if not self.deductions:
            return None
        return max(self.deductions, key=lambda d: d.points).indicator

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        """The summary as a few lines: the score, the narrative, the deductions."""
        lines = [f"{self.machine_id}: health {self.score:g}/100 (run {self.run_id})"]
        lines += [f"  {s}" for s in self.narrative]
        lines += [f"  - {d.points:g} {d.indicator} ({d.why})" for d in self.deductions]
        return "\n".join(lines)


def band(score: float) -> str:
    """``red``, ``orange`` or ``green``: the score's band (:data:`SCORE_BANDS`).

    >>> band(59.9), band(60), band(90)
    ('red', 'orange', 'green')
    """
    low, high = SCORE_BANDS
    return "red" if score < low else "orange" if score < high else "green"


def _points(value: float, free: float, per_unit: float, cap: float) -> float:
    """Points for ``value``: none up to ``free``, then ``per_unit`` per unit, at most ``cap``."""
    return round(min(cap, max(0.0, value - free) * per_unit), 1)


def _since_points(since_s: float, recent_s: float) -> float:
    """Points of a failure that began ``since_s`` ago, before the recent window."""
    return round(min(SINCE_FAILURE_POINTS, SINCE_FAILURE_POINTS * recent_s / max(since_s, 1.0)), 1)


def recent_seconds(value: object, name: str = "recent") -> float:
    """The recent window in seconds from ``3600``, ``30m``, ``2h`` (None: :data:`RECENT_S`);
    :class:`~workbench.errors.ConfigError` naming ``name`` for anything else.

    >>> recent_seconds(None), recent_seconds("30m"), recent_seconds(90)
    (3600.0, 1800.0, 90.0)
    """
    if value is None:
        return RECENT_S
    from workbench.simulator.control import parse_duration_s

    seconds = parse_duration_s(value, name)
    if not seconds > 0:
        raise ConfigError(name, value, "a duration > 0, such as 30m or 3600")
    return seconds


def latest_run(database_url: str) -> str:
    """The id of the run that started last; :class:`HealthError` when there is none. A
    SQLite file of the edge path registers no runs: its newest windows' run is taken."""
    r, w = schema.runs, schema.window_stats
    query = sa.select(r.c.run_id).order_by(r.c.started_at.desc(), r.c.run_id.desc()).limit(1)
    with _connect(database_url) as conn:
        run_id = conn.execute(query).scalar()
        if run_id is None:
            newest = sa.select(w.c.run_id).order_by(w.c.emitted_at.desc()).limit(1)
            run_id = conn.execute(newest).scalar()
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


def health(
    database_url: str, run_id: str, machine_id: str, recent_s: float = RECENT_S
) -> MachineHealth:
    """The health summary of one machine of a stored run, alerts open in the last
    ``recent_s`` seconds of the run counting in full; :class:`HealthError` for an unknown
    run or a machine without windows in it."""
    recent_s = recent_seconds(recent_s)
    with _connect(database_url) as conn:
        _check_run(conn, run_id)
        data = _load(conn, run_id, machine_id)
    if machine_id not in data.windows:
        raise HealthError(f"machine {machine_id!r} has no one-minute windows in run {run_id!r}")
    return _summarise(data, machine_id, recent_s)


def health_all(database_url: str, run_id: str, recent_s: float = RECENT_S) -> list[MachineHealth]:
    """The summaries of every machine of a run, worst first (then by machine id); the same
    five queries for the whole run, whatever its number of machines."""
    recent_s = recent_seconds(recent_s)
    with _connect(database_url) as conn:
        _check_run(conn, run_id)
        data = _load(conn, run_id)
    found = [_summarise(data, m, recent_s) for m in sorted(data.windows)]
    return sorted(found, key=lambda h: (h.score, h.machine_id))


def row(h: MachineHealth) -> dict[str, Any]:
    """The ``machine_health`` row of a summary (without ``computed_at``): what Grafana's
    table shows and what a notebook puts in a DataFrame."""
    return {
        "run_id": h.run_id,
        "machine_id": h.machine_id,
        "score": h.score,
        "worst_indicator": h.worst,
        "narrative": " ".join(h.narrative),
        "deductions": [asdict(d) for d in h.deductions],
        "indicators": h.indicators,
        "recent_s": h.indicators.get("recent_s"),
        "as_of": dt.datetime.fromisoformat(h.indicators["as_of"]),
    }


def save(database_url: str, found: Iterable[MachineHealth]) -> int:
    """Store summaries in the ``machine_health`` table, one row per run and machine: a
    summary saved again replaces the row (upsert), so saving twice leaves one row per
    machine. Creates the table in a database an earlier version made. Returns the rows
    written."""
    rows = [row(h) | {"computed_at": dt.datetime.now(dt.UTC)} for h in found]
    if not rows:
        return 0
    table = schema.machine_health
    if sinks.is_sqlite(database_url):
        from sqlalchemy.dialects.sqlite import insert

        from workbench.sinks.sqlite import engine as writer
    else:
        from sqlalchemy.dialects.postgresql import insert

        from workbench.sinks.postgres import engine as writer
    stmt = insert(table)
    key = [c.name for c in table.primary_key.columns]
    stmt = stmt.on_conflict_do_update(
        index_elements=key,
        set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name not in key},
    )
    eng = writer(database_url)
    try:
        table.create(eng, checkfirst=True)
        with eng.begin() as conn:
            conn.execute(stmt, rows)
    except sa.exc.OperationalError as exc:
        raise HealthError(f"cannot save to {sinks.redact(database_url)}: {exc.orig}") from None
    finally:
        eng.dispose()
    log.debug("saved the health of %d machine(s) of run %s", len(rows), rows[0]["run_id"])
    return len(rows)


class _connect:
    """A connection for a block (read-only on a SQLite file), its engine disposed after it."""

    def __init__(self, url: str) -> None:
        self.engine = sinks.engine(url)

    def __enter__(self) -> sa.Connection:
        self.conn = self.engine.connect()
        return self.conn

    def __exit__(self, *exc: object) -> None:
        self.conn.close()
        self.engine.dispose()


def _check_run(conn: sa.Connection, run_id: str) -> None:
    """A run is known by its ``runs`` row or, on the edge path (no runs rows), its windows."""
    r, w = schema.runs, schema.window_stats
    if conn.execute(sa.select(r.c.run_id).where(r.c.run_id == run_id)).first() is not None:
        return
    if conn.execute(sa.select(w.c.run_id).where(w.c.run_id == run_id).limit(1)).first() is None:
        raise HealthError(f"no run {run_id!r} in the database (see `workbench db runs`)")


class _Window(NamedTuple):
    """One final one-minute window of one sensor."""

    sensor_type: str
    window_start: dt.datetime
    window_end: dt.datetime
    count: int
    nulls: int
    mean: float | None
    stddev: float | None


class _Alert(NamedTuple):
    rule: str
    severity: str
    detects: list[str]
    start_ts: dt.datetime
    opened_ts: dt.datetime
    closed_ts: dt.datetime | None


@dataclass
class _Run:
    """What the summaries of a run read: its clock, and per machine its windows (by sensor,
    in time order), alerts (by first breach) and dead letters."""

    run_id: str
    as_of: dt.datetime
    windows: dict[str, dict[str, list[_Window]]]
    alerts: dict[str, list[_Alert]]
    dead: dict[str, int]


def _utc(ts: dt.datetime | None) -> dt.datetime | None:
    """An aware UTC time: SQLite gives times back naive, in UTC."""
    if ts is None or ts.tzinfo is not None:
        return ts
    return ts.replace(tzinfo=dt.UTC)


def _load(conn: sa.Connection, run_id: str, machine_id: str | None = None) -> _Run:
    """The run's rows the summaries read: every machine's, or ``machine_id``'s only."""
    w, a, d = schema.window_stats, schema.alerts, schema.dead_letters
    mine = (lambda t: t.c.machine_id == machine_id) if machine_id else (lambda t: sa.true())
    windows: dict[str, dict[str, list[_Window]]] = {}
    query = (
        sa.select(w.c.machine_id, *(w.c[name] for name in _Window._fields))
        .where(w.c.run_id == run_id, mine(w), w.c.width_s == WIDTH_S, w.c.final)
        .order_by(w.c.machine_id, w.c.sensor_type, w.c.window_start)
    )
    for m, sensor, start, end, *rest in conn.execute(query):
        window = _Window(sensor, _utc(start), _utc(end), *rest)
        windows.setdefault(m, {}).setdefault(sensor, []).append(window)
    alerts: dict[str, list[_Alert]] = {}
    query = (
        sa.select(a.c.machine_id, *(a.c[name] for name in _Alert._fields))
        .where(a.c.run_id == run_id, mine(a))
        .order_by(a.c.machine_id, a.c.start_ts, a.c.rule)
    )
    for m, rule, severity, detects, start, opened, closed in conn.execute(query):
        alert = _Alert(rule, severity, list(detects or []), _utc(start), _utc(opened), _utc(closed))
        alerts.setdefault(m, []).append(alert)
    keys = d.c.run_id == run_id
    if machine_id:
        keys = sa.and_(keys, d.c.key == machine_id.encode())
    query = sa.select(d.c.key, sa.func.count()).where(keys).group_by(d.c.key)
    dead = {bytes(k).decode(errors="replace"): n for k, n in conn.execute(query) if k is not None}
    as_of = _latest_reading(conn, run_id)
    if as_of is None:  # readings pruned (the windows are kept longer): the latest window's end
        as_of = conn.execute(
            sa.select(sa.func.max(w.c.window_end)).where(w.c.run_id == run_id, w.c.final)
        ).scalar()
    if as_of is None:  # no readings and no final window: nothing to summarise anyway
        as_of = dt.datetime.fromtimestamp(0, dt.UTC)
    return _Run(run_id, _utc(as_of), windows, alerts, dead)


def _latest_reading(conn: sa.Connection, run_id: str) -> dt.datetime | None:
    """The event time of the run's latest reading: the newest of each machine and sensor's
    newest, each one step down the readings key (``max(ts)`` of the whole run would read
    every reading of it: 0.4 s against 0.02 s at 1.5 million readings)."""
    r, s = schema.readings, schema.sensor_stats
    newest = (
        sa.select(sa.func.max(r.c.ts))
        .where(*(r.c[k] == s.c[k] for k in ("run_id", "machine_id", "sensor_type")))
        .scalar_subquery()
    )
    return conn.execute(sa.select(sa.func.max(newest)).where(s.c.run_id == run_id)).scalar()


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


def _by_rule(alerts: Sequence[_Alert]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for x in alerts:
        counts[x.rule] = counts.get(x.rule, 0) + 1
    return dict(sorted(counts.items()))


def _listed(by_rule: dict[str, int]) -> str:
    return ", ".join(f"{n} {rule}" for rule, n in by_rule.items())


def _summarise(data: _Run, machine_id: str, recent_s: float) -> MachineHealth:
    windows = data.windows[machine_id]
    end = max(rows[-1].window_end for rows in windows.values())
    as_of = data.as_of
    since = as_of - dt.timedelta(seconds=recent_s)
    window = _window_text(recent_s)
    deductions: list[Deduction] = []
    narrative: list[str] = []
    indicators: dict[str, Any] = {"as_of": as_of.isoformat(), "recent_s": recent_s,
                                  "recent_since": since.isoformat(),
                                  "data_end": end.isoformat()}  # fmt: skip

    def deduct(indicator: str, value: float, points: float, why: str) -> None:
        if points > 0:
            deductions.append(Deduction(indicator, round(value, 3), points, why))

    def recent(x: _Alert) -> bool:
        """Open at some time in the recent window: opened in it, or not closed before it."""
        return x.closed_ts is None or x.closed_ts >= since

    # failures, and the time since the last one
    alerts = data.alerts.get(machine_id, [])
    failures = [x for x in alerts if x.severity == "critical" and "failure" in x.detects]
    others = [x for x in alerts if x not in failures]
    if failures:
        fresh = sum(recent(x) for x in failures)
        last = failures[-1].start_ts
        since_s = round((as_of - last).total_seconds())
        rules = ", ".join(sorted({x.rule for x in failures}))
        narrative.append(
            f"{len(failures)} failure alert(s) ({rules}), {fresh or 'none'} in the last "
            f"{window}; the last began at {_hms(last)}, {since_s} s before the run's latest "
            f"reading ({_hms(as_of)})."
        )
        if fresh:
            points = min(FAILURE_CAP, FAILURE_POINTS + MORE_FAILURE_POINTS * (fresh - 1))
            deduct("failures", fresh, points, f"{fresh} failure alert(s) in the last {window}")
        else:
            deduct("since_failure", since_s, _since_points(since_s, recent_s),
                   f"the last began {since_s} s ago: {SINCE_FAILURE_POINTS:g} x "
                   f"{recent_s:g} / {since_s} s")  # fmt: skip
        indicators["failures"] = {"count": len(failures), "recent": fresh,
                                  "last": last.isoformat(), "since_s": since_s}  # fmt: skip
    else:
        narrative.append(f"No failure alert in the run's {_span(windows)} min of data.")
        indicators["failures"] = {"count": 0, "recent": 0, "last": None, "since_s": None}

    # the other alerts: recent ones cost points, older ones are listed
    fresh_rules = _by_rule([x for x in others if recent(x)])
    older_rules = _by_rule([x for x in others if not recent(x)])
    fresh, older = sum(fresh_rules.values()), sum(older_rules.values())
    indicators["alerts"] = {"count": len(others), "by_rule": _by_rule(others),
                            "recent": fresh, "recent_by_rule": fresh_rules,
                            "older_by_rule": older_rules}  # fmt: skip
    if others:
        said = f"{len(others)} other alert(s): {fresh or 'none'} in the last {window}"
        said += f" ({_listed(fresh_rules)})" if fresh else ""
        said += f", {older} older, listed only ({_listed(older_rules)})" if older else ""
        narrative.append(said + ".")
        deduct("alerts", fresh, _points(fresh, 0, ALERT_POINTS, ALERT_CAP),
               f"{ALERT_POINTS:g} points per alert in the last {window}")  # fmt: skip

    # drift: the window mean's change from the first third to the last, against its spread
    drift: dict[str, dict[str, float]] = {}
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
    dead = data.dead.get(machine_id, 0)
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
    return MachineHealth(data.run_id, machine_id, score, deductions, narrative, indicators)


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


def _gaps(rows: list[_Window]) -> int:
    """One-minute windows missing between a sensor's first and last."""
    if not rows:
        return 0
    span = (rows[-1].window_start - rows[0].window_start).total_seconds()
    return int(span // WIDTH_S) + 1 - len(rows)


def _span(windows: dict[str, list[_Window]]) -> int:
    starts = [r.window_start for rows in windows.values() for r in rows]
    return round((max(starts) - min(starts)).total_seconds() / 60) + 1


def _hms(ts: dt.datetime) -> str:
    return ts.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _window_text(seconds: float) -> str:
    """The recent window as the narrative says it: whole minutes in minutes."""
    return f"{seconds / 60:g} min" if seconds % 60 == 0 else f"{seconds:g} s"
