"""Decode and validate one raw message: a reading row for the sinks, or a reason to reject it.

A rejected message is never dropped: the processor sends it to the dead-letter topic
and table with the reason returned here and its original bytes.

:func:`validate_batch` makes the same checks on a whole batch decoded into columns by
:mod:`workbench.processor.decode`, and :func:`reasons` gives its rejected rows the texts
:meth:`Validator.check` gives them, so both processors dead-letter alike.

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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from workbench.processor import decode
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


def id_problem(name: str) -> str | None:
    """Why ``name`` cannot be a machine or run id (None if it can): empty, longer than
    :data:`~workbench.processor.decode.MAX_ID_BYTES` bytes, or holding a control character
    (a NUL byte, which PostgreSQL's text refuses, a newline, ...).

    >>> id_problem("m-0001") is None, id_problem("m" + chr(0) + "-1"), id_problem("")
    (True, 'it holds a control character', 'it is empty')
    """
    size = len(name.encode("utf-8", "surrogatepass"))
    if size == 0:
        return "it is empty"
    if size > decode.MAX_ID_BYTES:
        return f"it is {size} bytes long, more than {decode.MAX_ID_BYTES}"
    if any(c < " " or c == "\x7f" for c in name):
        return "it holds a control character"
    return None


def escaped(text: str, limit: int | None = None) -> str:
    """``text`` with its control characters written as ``\\xNN`` (storable as text
    anywhere, readable in a log), cut to ``limit`` characters.

    >>> print(escaped("m" + chr(0) + "-1"))
    m\\x00-1
    """
    if text.isprintable():
        return text[:limit]
    out = "".join(c if " " <= c != "\x7f" else f"\\x{ord(c):02x}" for c in text)
    return out[:limit]


def _id_text(name: str, problem: str) -> str:
    shown = name if len(name) <= 40 else name[:40] + "..."
    return f"machine_id {shown!r} is not an id: {problem}"


#: The dead-letter reason of a reading without a Kafka key.
NO_KEY_TEXT = "no Kafka key: a reading's key must be its machine_id"


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
        problem = id_problem(result.machine_id)
        if problem is not None:
            return Rejected(_id_text(result.machine_id, problem))
        if key is None:
            return Rejected(NO_KEY_TEXT)
        lim = self.limits
        ts = result.ts_ms
        if ts < lim.min_ts_ms or ts > self._max_ts_ms():
            return Rejected(_time_text(ts))
        bounds = lim.ranges.get(result.sensor_type)
        v = result.value
        if v is not None and not math.isfinite(v):
            return Rejected(_not_finite_text(result.sensor_type, v))
        if bounds is not None and v is not None:
            low, high = bounds
            if (low is not None and v < low) or (high is not None and v > high) or v != v:
                return Rejected(_range_text(result.sensor_type, v, bounds))
        return result

    def _max_ts_ms(self) -> int:
        now = time.monotonic()
        if now - self._clock_checked > 1.0:  # the wall clock, read once a second
            self._clock_checked = now
            self._latest_ok_ms = int((time.time() + self.limits.max_future_s) * 1000)
        return self._latest_ok_ms


def _time_text(ts: int) -> str:
    return f"event time {ts} ms is not plausible (before 2000 or in the future)"


def _not_finite_text(sensor: str, v: float) -> str:
    return f"{sensor} value {v} is not a finite number"


def _range_text(sensor: str, v: float, bounds: tuple[float | None, float | None]) -> str:
    low, high = bounds
    return f"{sensor} {v} is outside its physical range [{low}, {high}]"


def validate_batch(decoded: decode.Decoded, limits: Limits, now_ms: int) -> None:
    """:meth:`Validator.check`'s checks on a decoded batch, vectorised: set the ``reason``
    of each row that decoded but fails one, the first failing check winning as in the
    legacy order (a plain machine id, a key, event time, then a finite value, then the
    sensor's physical range).

    ``now_ms`` is the wall clock (epoch ms) the batch is judged by: event time may be at
    most ``limits.max_future_s`` past it.

    >>> from workbench.schemas import READING
    >>> rec = {"machine_id": "m-1", "ts": 1_767_225_600_000, "sensor_type": "temperature",
    ...        "value": 900.0, "status_code": 0, "seq": 0}
    >>> messages = [READING.encode(rec), READING.encode(rec | {"ts": 5})]
    >>> d = decode.decode_batch(messages, [b"m-1"] * 2)
    >>> lim = Limits(ranges={"temperature": (-50.0, 250.0)})
    >>> validate_batch(d, lim, now_ms=1_767_225_600_000)
    >>> d.reason.tolist() == [decode.OUT_OF_RANGE, decode.BAD_TIME]
    True
    >>> for text in reasons(d, lim, [0, 1], [None, None], [None, None]):
    ...     print(text)
    temperature 900.0 is outside its physical range [-50.0, 250.0]
    event time 5 ms is not plausible (before 2000 or in the future)
    """
    reason, ts, v = decoded.reason, decoded.ts, decoded.value
    ok = reason == decode.OK
    bad = ok & ~decoded.plain_id
    reason[bad] = decode.BAD_ID
    ok &= ~bad
    bad = ok & ~decoded.has_key
    reason[bad] = decode.NULL_KEY
    ok &= ~bad
    late_limit = int(now_ms + limits.max_future_s * 1000.0)
    bad = ok & ((ts < limits.min_ts_ms) | (ts > late_limit))
    reason[bad] = decode.BAD_TIME
    ok &= ~bad
    bad = ok & ~decoded.isnull & ~np.isfinite(v)
    reason[bad] = decode.NOT_FINITE
    ok &= ~bad
    if limits.ranges:
        low, high = physical_bounds(limits)
        sensor = np.where(ok, decoded.sensor, 0)  # -1 where the sensor was not read
        bad = ok & ~decoded.isnull & ((v < low[sensor]) | (v > high[sensor]))
        reason[bad] = decode.OUT_OF_RANGE


def physical_bounds(limits: Limits) -> tuple[np.ndarray, np.ndarray]:
    """Per sensor index (of the schema's symbols): the physical (low, high), +-inf for none."""
    low = np.full(len(decode.SYMBOLS), -np.inf)
    high = np.full(len(decode.SYMBOLS), np.inf)
    for s, name in enumerate(decode.SYMBOLS):
        lo, hi = limits.ranges.get(name, (None, None))
        low[s] = -np.inf if lo is None else lo
        high[s] = np.inf if hi is None else hi
    return low, high


def reasons(
    decoded: decode.Decoded,
    limits: Limits,
    rows: Sequence[int] | np.ndarray,
    values: Sequence[bytes | None],
    keys: Sequence[bytes | None],
) -> list[str]:
    """The dead-letter reasons of rejected ``rows`` (batch row numbers), in the legacy
    :meth:`Validator.check`'s words; ``values`` and ``keys`` are the batch's messages."""
    out = []
    for i in np.asarray(rows, np.int64).tolist():
        code = int(decoded.reason[i])
        if code == decode.OK:
            raise ValueError(f"row {i} is not rejected")
        if code == decode.BAD_ID:
            name = decoded.machine_id(i)
            out.append(_id_text(name, id_problem(name) or "?"))
        elif code == decode.NULL_KEY:
            out.append(NO_KEY_TEXT)
        elif code in (decode.BAD_TIME, decode.NOT_FINITE, decode.OUT_OF_RANGE):
            sensor, v = decode.SYMBOLS[decoded.sensor[i]], float(decoded.value[i])
            if code == decode.BAD_TIME:
                out.append(_time_text(int(decoded.ts[i])))
            elif code == decode.NOT_FINITE:
                out.append(_not_finite_text(sensor, v))
            else:
                out.append(_range_text(sensor, v, limits.ranges[sensor]))
        else:
            out.append(decode.reason_text(code, values[i], keys[i], limits))
    return out
