"""Decode and validate one raw message: a reading row for the sinks, or a reason to reject it.

A rejected message is never dropped: the processor sends it to the dead-letter topic
and table with the reason returned here and its original bytes.

>>> from workbench.schemas import READING
>>> rec = {"machine_id": "m-0001", "ts": 1_700_000_000_000, "sensor_type": "pressure",
...        "value": 4.2, "status_code": 0, "seq": 3}
>>> check(READING.encode(rec), b"m-0001", "r1")  # doctest: +NORMALIZE_WHITESPACE
Reading(run_id='r1', machine_id='m-0001', sensor_type='pressure', seq=3,
        ts_ms=1700000000000, value=4.2, status_code=0)
>>> check(READING.encode(rec | {"sensor_type": "unknown"}), b"m-0001", "r1")
Rejected(reason='unknown sensor type')
>>> check(READING.encode(rec), b"m-0002", "r1")
Rejected(reason="key 'm-0002' does not match machine_id 'm-0001'")
"""

from __future__ import annotations

from typing import NamedTuple

from workbench.schemas import READING, DecodeError, sensor_types


class Reading(NamedTuple):
    """A valid reading, in the column order of the readings sink."""

    run_id: str
    machine_id: str
    sensor_type: str
    seq: int
    ts_ms: int
    value: float | None
    status_code: int


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
