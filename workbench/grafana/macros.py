"""Grafana's PostgreSQL macros and template variables, expanded as Grafana does.

Why: the dashboards are only useful if their SQL runs, and no Grafana server is available
to run it. Grafana interpolates a panel query in two steps, reproduced here:

1. the front end replaces template variables (``$run``, ``${run}``, ``${run:sqlstring}``,
   ``[[run]]``) and the built-ins ``$__interval`` / ``$__interval_ms``;
2. the backend (``pkg/tsdb/grafana-postgresql-datasource/macros.go``) expands the
   ``$__name(args)`` macros for the time range.

A single-valued text variable is inserted as it is (Grafana's SQL data sources quote only
multi-value and "include all" variables), so queries write ``'$run'``.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: macro call: ``$__name(args)``, args up to the first ``)`` (as Grafana's regexp)
_MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^)]*)\)")
#: template variable forms, as Grafana's variableRegex: $name, [[name:fmt]], ${name:fmt}
_VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.[^:^}]+)?(?::([^}]+))?\}")
#: (upper bound in ms, rounded interval in ms): Grafana's kbn.roundInterval table
_ROUND = [
    (15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500), (1_500, 1_000),
    (3_500, 2_000), (7_500, 5_000), (12_500, 10_000), (17_500, 15_000), (25_000, 20_000),
    (45_000, 30_000), (90_000, 60_000), (210_000, 120_000), (450_000, 300_000),
    (750_000, 600_000), (1_050_000, 900_000), (1_500_000, 1_200_000), (2_700_000, 1_800_000),
    (5_400_000, 3_600_000), (9_000_000, 7_200_000), (16_200_000, 10_800_000),
    (24_300_000, 21_600_000), (64_800_000, 43_200_000), (129_600_000, 86_400_000),
    (864_000_000, 604_800_000),
]  # fmt: skip
_UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000,
             "w": 604_800_000, "y": 31_536_000_000}  # fmt: skip


class MacroError(ValueError):
    """A macro Grafana would reject (unknown name, missing argument, bad interval)."""


@dataclass(frozen=True)
class TimeRange:
    """The dashboard's time range (timezone-aware)."""

    start: dt.datetime
    end: dt.datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("a time range needs timezone-aware datetimes")
        if self.end < self.start:
            raise ValueError(f"time range ends before it starts: {self.start} > {self.end}")


def rfc3339(t: dt.datetime) -> str:
    """``t`` in UTC as Go's ``time.RFC3339Nano`` writes it (no trailing fraction zeros).

    >>> rfc3339(dt.datetime(2026, 1, 1, 0, 0, 1, 500000, tzinfo=dt.UTC))
    '2026-01-01T00:00:01.5Z'
    """
    t = t.astimezone(dt.UTC)
    text = t.strftime("%Y-%m-%dT%H:%M:%S")
    if t.microsecond:
        text += f".{t.microsecond:06d}".rstrip("0")
    return text + "Z"


def parse_interval(text: str) -> float:
    """Seconds in a Grafana interval ("500ms", "5s", "1m", "2h", "1d"), as gtime.ParseInterval.

    >>> parse_interval("5m"), parse_interval("'500ms'")
    (300.0, 0.5)
    """
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)", text.strip().strip("'"))
    if not match:
        raise MacroError(f"error parsing interval {text}")
    return float(match[1]) * _UNITS_MS[match[2]] / 1000


def format_interval(ms: int) -> str:
    """An interval in ms as Grafana's kbn.secondsToHms-like text ("500ms", "2s", "1m", "1h").

    >>> format_interval(500), format_interval(2000), format_interval(300000)
    ('500ms', '2s', '5m')
    """
    for unit in ("d", "h", "m", "s"):
        size = _UNITS_MS[unit]
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def auto_interval_ms(time_range: TimeRange, max_data_points: int = 1000, min_ms: int = 1) -> int:
    """``$__interval_ms`` for a range: span / data points, rounded as Grafana rounds it, at
    least ``min_ms`` (the panel's or data source's minimum interval).

    >>> t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    >>> auto_interval_ms(TimeRange(t0, t0 + dt.timedelta(hours=1)))
    5000
    """
    span_ms = (time_range.end - time_range.start).total_seconds() * 1000
    raw = span_ms / max(1, max_data_points)
    rounded = next((r for bound, r in _ROUND if raw < bound), 604_800_000)
    if raw < 10:
        rounded = max(1, math.floor(raw))
    return max(rounded, min_ms)


def interpolate_variables(sql: str, variables: Mapping[str, str]) -> str:
    """Replace template variables in ``sql`` the way Grafana's front end does for a SQL
    data source; unknown names (and the ``$__`` macros) are left as they are.

    Formats: none or ``raw`` (the value as is), ``sqlstring`` / ``singlequote`` (quoted,
    quotes doubled), ``csv`` (the value), ``doublequote``.

    >>> interpolate_variables("run_id = '$run' AND m = ${m:sqlstring}", {"run": "r1", "m": "o'k"})
    "run_id = 'r1' AND m = 'o''k'"
    """

    def replace(match: re.Match[str]) -> str:
        name = match[1] or match[2] or match[4]
        fmt = match[3] or match[5]
        if name not in variables:
            return match[0]
        value = str(variables[name])
        if fmt in (None, "raw", "csv", "text"):
            return value
        if fmt in ("sqlstring", "singlequote"):
            return "'" + value.replace("'", "''") + "'"
        if fmt == "doublequote":
            return '"' + value.replace('"', '\\"') + '"'
        raise MacroError(f"unsupported variable format {fmt!r} in {match[0]}")

    return _VARIABLE.sub(replace, sql)


def _time_group(args: list[str], timescaledb: bool) -> str:
    if len(args) < 2:
        raise MacroError("macro __timeGroup needs time column and interval and optional fill value")
    seconds = parse_interval(args[1])
    if timescaledb:
        return f"time_bucket('{seconds:.3f}s',{args[0]})"
    return f"floor(extract(epoch from {args[0]})/{_go_number(seconds)})*{_go_number(seconds)}"


def _go_number(x: float) -> str:
    """A float as Go's ``%v`` prints it: 300 not 300.0, 0.5 stays 0.5."""
    return str(int(x)) if x == int(x) else repr(x)


def _evaluate(name: str, args: list[str], time_range: TimeRange, timescaledb: bool) -> str:
    start, end = rfc3339(time_range.start), rfc3339(time_range.end)
    if name in ("__time", "__timeEpoch", "__timeFilter", "__unixEpochFilter") and not args[0]:
        raise MacroError(f"missing time column argument for macro {name}")
    match name:
        case "__time":
            return f'{args[0]} AS "time"'
        case "__timeEpoch":
            return f'extract(epoch from {args[0]}) as "time"'
        case "__timeFilter":
            return f"{args[0]} BETWEEN '{start}' AND '{end}'"
        case "__timeFrom":
            return f"'{start}'"
        case "__timeTo":
            return f"'{end}'"
        case "__timeGroup":
            return _time_group(args, timescaledb)
        case "__timeGroupAlias":
            return _time_group(args, timescaledb) + ' AS "time"'
        case "__unixEpochFilter":
            lo, hi = int(time_range.start.timestamp()), int(time_range.end.timestamp())
            return f"{args[0]} >= {lo} AND {args[0]} <= {hi}"
        case "__unixEpochGroup" | "__unixEpochGroupAlias":
            if len(args) < 2:
                raise MacroError(f"macro {name} needs time column and interval")
            s = _go_number(parse_interval(args[1]))
            alias = ' AS "time"' if name.endswith("Alias") else ""
            return f"floor(({args[0]})/{s})*{s}{alias}"
    raise MacroError(f"unknown macro {name!r}")


def expand_macros(sql: str, time_range: TimeRange, timescaledb: bool = False) -> str:
    """Expand every ``$__macro(args)`` in ``sql`` for ``time_range`` as Grafana's PostgreSQL
    data source does (``timescaledb``: the data source's TimescaleDB switch, which makes
    ``$__timeGroup`` a ``time_bucket``). Raises :class:`MacroError` like Grafana would.

    >>> t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    >>> r = TimeRange(t0, t0 + dt.timedelta(hours=1))
    >>> print(expand_macros("$__timeGroupAlias(ts, 1m), $__timeFrom()", r))
    floor(extract(epoch from ts)/60)*60 AS "time", '2026-01-01T00:00:00Z'
    """

    def replace(match: re.Match[str]) -> str:
        name = match[1]
        # Grafana: "$__timeGroup(...)," is the pre-5.3 form and gets the alias
        if name == "__timeGroup" and sql[match.end() : match.end() + 1] == ",":
            name = "__timeGroupAlias"
        args = [a.strip() for a in match[2].split(",")]
        return _evaluate(name, args, time_range, timescaledb)

    return _MACRO.sub(replace, sql)


def render(
    sql: str,
    time_range: TimeRange,
    variables: Mapping[str, str],
    timescaledb: bool = False,
    interval_ms: int | None = None,
) -> str:
    """A panel query as the database receives it: variables (with ``$__interval``,
    ``$__interval_ms``, ``$__range_s``), then macros."""
    interval_ms = interval_ms or auto_interval_ms(time_range)
    builtins = {
        "__interval": format_interval(interval_ms),
        "__interval_ms": str(interval_ms),
        "__range_s": str(int((time_range.end - time_range.start).total_seconds())),
    }
    return expand_macros(
        interpolate_variables(sql, {**variables, **builtins}), time_range, timescaledb
    )
