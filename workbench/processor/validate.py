"""Decode and validate one raw message: a reading row for the sinks, or a reason to reject it.

A rejected message is never dropped: the processor sends it to the dead-letter topic
and table with the reason returned here and its original bytes.

>>> from workbench.schemas import READING
>>> rec = {"machine_id": "m-0001", "ts": 1_700_000_000_000, "sensor_type": "pressure",
...        "value": 4.2, "status_code": 0, "seq": 3}
>>> check(READING.encode(rec), b"m-0001", "r1")  # doctest: +NORMALIZE_WHITESPACE
Reading(run_id='r1', machine_id='m-0001', sensor_type='pressure', seq=3,
        ts_ms=1700000000000, value=4.2, status_code=0, late=False, score=None,
        rolling_1=None, rolling_2=None)
>>> check(READING.encode(rec | {"sensor_type": "unknown"}), b"m-0001", "r1")
Rejected(reason='unknown sensor type')
>>> check(READING.encode(rec), b"m-0002", "r1")
Rejected(reason="key 'm-0002' does not match machine_id 'm-0001'")
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import NamedTuple

from workbench.schemas import READING, DecodeError, sensor_types


class Reading(NamedTuple):
    """A valid reading, in the column order of the readings sink; the processor fills in
    the last four fields."""

    run_id: str
    machine_id: str
    sensor_type: str
    seq: int
    ts_ms: int
    value: float | None
    status_code: int
    late: bool = False
    score: float | None = None
    rolling_1: float | None = None
    rolling_2: float | None = None


class Rejected(NamedTuple):
    reason: str


_KNOWN_SENSORS = frozenset(sensor_types())


def check(value: bytes | None, key: bytes | None, run_id: str) -> Reading | Rejected:
    """Decode ``value`` and check what the schema alone cannot."""
    try:
        rec = READING.decode(value)
    except DecodeError as exc:
        return Rejected(str(exc))
    machine_id = rec["machine_id"]
    if key is not None and key.decode(errors="replace") != machine_id:
        return Rejected(
            f"key {key.decode(errors='replace')!r} does not match machine_id {machine_id!r}"
        )
    if rec["sensor_type"] not in _KNOWN_SENSORS:
        return Rejected("unknown sensor type")
    return Reading(
        run_id,
        machine_id,
        rec["sensor_type"],
        rec["seq"],
        rec["ts"],
        rec["value"],
        rec["status_code"],
    )


@dataclass(frozen=True)
class Limits:
    """What a plausible reading looks like, beyond its schema (from the rules file).

    ``ranges`` maps a sensor type to its physical (min, max), either bound None for
    none; event time must lie in [``min_ts_ms``, wall clock + ``max_future_s``].
    """

    ranges: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    min_ts_ms: int = 946_684_800_000  # 2000-01-01T00:00Z
    max_future_s: float = 7 * 86_400.0


class Validator:
    """:func:`check` plus the physical range of each sensor type and timestamp sanity.

    >>> v = Validator(Limits(ranges={"temperature": (-50.0, 250.0)}))
    >>> rec = {"machine_id": "m-1", "ts": 1_767_225_600_000, "sensor_type": "temperature",
    ...        "value": 900.0, "status_code": 0, "seq": 0}
    >>> v.check(READING.encode(rec), b"m-1", "r1")
    Rejected(reason='temperature 900.0 is outside its physical range [-50.0, 250.0]')
    """

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._latest_ok_ms = 0
        self._clock_checked = 0.0

    def check(self, value: bytes | None, key: bytes | None, run_id: str) -> Reading | Rejected:
        result = check(value, key, run_id)
        if isinstance(result, Rejected):
            return result
        lim = self.limits
        ts = result.ts_ms
        if ts < lim.min_ts_ms or ts > self._max_ts_ms():
            return Rejected(f"event time {ts} ms is not plausible (before 2000 or in the future)")
        bounds = lim.ranges.get(result.sensor_type)
        v = result.value
        if v is not None and not math.isfinite(v):
            return Rejected(f"{result.sensor_type} value {v} is not a finite number")
        if bounds is not None and v is not None:
            low, high = bounds
            if (low is not None and v < low) or (high is not None and v > high) or v != v:
                return Rejected(
                    f"{result.sensor_type} {v} is outside its physical range [{low}, {high}]"
                )
        return result

    def _max_ts_ms(self) -> int:
        now = time.monotonic()
        if now - self._clock_checked > 1.0:  # the wall clock, read once a second
            self._clock_checked = now
            self._latest_ok_ms = int((time.time() + self.limits.max_future_s) * 1000)
        return self._latest_ok_ms
