"""Request bodies to Kafka messages, every reading checked field by field first.

A request is taken whole or not at all: one bad reading and nothing of the request is
produced, and the answer lists every bad field (its place in the body, what is wrong) the
way FastAPI reports request errors. The checks are those of the reading schema (types,
required fields, the sensor type's symbols); physical ranges are the processor's business
(it dead-letters what is out of range, as for every other source).

Three body formats, told apart by ``Content-Type``:

- ``application/json``: one reading object, or a list of them, with the reading schema's
  fields (``ts`` in epoch milliseconds; ``value`` and ``status_code`` may be left out).
- ``application/avro``: one reading in Avro single-object encoding (what the simulator
  and replay put on the raw topic).
- ``application/vnd.workbench.readings+avro``: many, as the Avro encoding of an
  ``array<bytes>`` of single-object-encoded readings (:func:`avro_array`).

Avro readings go to the topic byte for byte as they came, so a run sent through the
gateway leaves the same messages as one produced directly.

>>> batch = parse(b'{"machine_id": "m-1", "ts": 1700000000000, "sensor_type": "pressure",'
...               b' "value": 4.2, "seq": 0}', "application/json")
>>> batch.keys, batch.machines
([b'm-1'], {'m-1'})
>>> parse(b'[{"machine_id": "m-1", "ts": "soon"}]', "application/json")
Traceback (most recent call last):
...
workbench.gateway.ingest.InvalidBody: 422: 3 errors in the readings
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import orjson

from workbench.schemas import READING, DecodeError, ReadingEncoder, sensor_types, varint

JSON = "application/json"
AVRO_ONE = "application/avro"
AVRO_MANY = "application/vnd.workbench.readings+avro"
CONTENT_TYPES = (JSON, AVRO_ONE, AVRO_MANY)

_SENSORS = frozenset(sensor_types())
_FIELDSET = frozenset(ReadingEncoder.FIELDS)
_DOUBLE = struct.Struct("<d").pack
#: integers beyond this are not doubles any more (float() overflows)
_FLOAT_INT = 2**1023
_SENSOR_LIST = ", ".join(sorted(_SENSORS))
_FIELDS = ReadingEncoder.FIELDS
_OPTIONAL = {"value": None, "status_code": 0}
_LONG = 2**63
_INT = 2**31
#: longer machine ids are a client's mistake, not an id
MAX_MACHINE_ID = 128


@dataclass
class InvalidBody(Exception):
    """What is wrong with a request body: ``status`` 400 (not parseable), 415 (unknown
    content type) or 422 (readings that break the schema), and each error's place."""

    status: int
    message: str
    errors: list[dict[str, Any]] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.status}: {self.message}"

    def detail(self) -> dict[str, Any]:
        """The JSON answer: the message and, per bad field, its ``loc``, ``msg`` and ``type``."""
        return {"detail": self.message, "errors": self.errors}


@dataclass
class Batch:
    """A request's readings as messages: Kafka keys (machine ids) and Avro values."""

    keys: list[bytes] = field(default_factory=list)
    values: list[bytes] = field(default_factory=list)
    machines: set[str] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self.values)

    def add(self, machine: str, key: bytes, value: bytes) -> None:
        self.machines.add(machine)
        self.keys.append(key)
        self.values.append(value)

    def unless(self, errors: list[dict[str, Any]]) -> Batch:
        """The batch, or :class:`InvalidBody` with ``errors`` if there are any."""
        if errors:
            n = len(errors)
            raise InvalidBody(422, f"{n} error{'s' if n > 1 else ''} in the readings", errors)
        return self


def parse(body: bytes, content_type: str | None) -> Batch:
    """The messages of a request body; :class:`InvalidBody` says what is wrong with it."""
    kind = (content_type or JSON).split(";")[0].strip().lower()
    if kind == JSON:
        return _from_json(body)
    if kind == AVRO_ONE:
        return _from_avro([(("body",), body)])
    if kind == AVRO_MANY:
        items = _avro_items(body)
        return _from_avro([(("body", i), item) for i, item in enumerate(items)])
    raise InvalidBody(
        415, f"content type {kind!r} is not accepted; send one of {', '.join(CONTENT_TYPES)}"
    )


def machine_list(body: bytes) -> list[str]:
    """The machines of an end-of-run body, ``{"machines": ["m-0001", ...]}``.

    >>> machine_list(b'{"machines": ["m-1", "m-2"]}')
    ['m-1', 'm-2']
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidBody(400, f"the body is not valid JSON: {exc}") from None
    machines = doc.get("machines") if isinstance(doc, dict) else None
    if not isinstance(machines, list) or not machines:
        raise InvalidBody(422, 'the body must be {"machines": [machine ids]}, not empty')
    errors = [
        _error(("body", "machines", i), *problem)
        for i, m in enumerate(machines)
        if (problem := _machine_problem(m))
    ]
    Batch().unless(errors)
    return machines


def avro_array(values: Sequence[bytes]) -> bytes:
    """The body of an ``application/vnd.workbench.readings+avro`` request: the Avro
    encoding of ``array<bytes>`` (one block of ``len(values)`` items, then 0).

    >>> avro_array([b"ab", b"c"])
    b'\\x04\\x04ab\\x02c\\x00'
    """
    if not values:
        return b"\x00"
    parts = [varint(len(values))]
    for v in values:
        parts += (varint(len(v)), v)
    parts.append(b"\x00")
    return b"".join(parts)


def _from_json(body: bytes) -> Batch:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidBody(400, f"the body is not valid JSON: {exc}") from None
    if isinstance(doc, dict):
        items: list[tuple[tuple[Any, ...], Any]] = [(("body",), doc)]
    elif isinstance(doc, list):
        items = [(("body", i), rec) for i, rec in enumerate(doc)]
    else:
        raise InvalidBody(422, "the body must be a reading (a JSON object) or a list of them")
    if not items:
        raise InvalidBody(422, "the body holds no readings")
    errors: list[dict[str, Any]] = []
    batch = Batch()
    for loc, rec in items:
        fast = _fast(rec)
        if fast is not None:
            if not errors:
                batch.add(rec["machine_id"], *fast)
            continue
        checked = _check(rec, loc, errors)
        if checked is not None and not errors:
            machine = checked["machine_id"]
            batch.add(machine, machine.encode(), _encode(checked))
    return batch.unless(errors)


def _fast(rec: Any) -> tuple[bytes, bytes] | None:
    """Key and message of a reading whose every field is right, checked and encoded in
    one pass (the common case, about four times faster than :func:`_check` and
    :func:`_encode`); None for anything else, which the slow path then explains."""
    if type(rec) is not dict or not rec.keys() <= _FIELDSET:
        return None
    machine, ts, sensor = rec.get("machine_id"), rec.get("ts"), rec.get("sensor_type")
    value, status, seq = rec.get("value"), rec.get("status_code", 0), rec.get("seq")
    if type(machine) is not str or not 0 < len(machine) <= MAX_MACHINE_ID:
        return None
    if type(ts) is not int or not 0 <= ts < _LONG or type(sensor) is not str:
        return None
    if type(status) is not int or not -_INT <= status < _INT:
        return None
    if type(seq) is not int or not 0 <= seq < _LONG:
        return None
    symbol = _encoder().sensor_bytes.get(sensor) if sensor in _SENSORS else None
    if symbol is None:
        return None
    if value is None:
        body = b"\x00"
    elif type(value) is float and math.isfinite(value):
        body = b"\x02" + _DOUBLE(value)
    elif type(value) is int and -_FLOAT_INT < value < _FLOAT_INT:
        body = b"\x02" + _DOUBLE(float(value))
    else:
        return None
    key = machine.encode()
    return key, b"".join(
        (READING.header, varint(len(key)), key, varint(ts), symbol, body, varint(status),
         varint(seq))
    )  # fmt: skip


def _check(rec: Any, loc: tuple[Any, ...], errors: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The reading with its defaults filled in, or None with its errors appended."""
    if not isinstance(rec, dict):
        errors.append(_error(loc, "a reading must be a JSON object", "object_type"))
        return None
    before = len(errors)
    for name in rec.keys() - set(_FIELDS):
        errors.append(
            _error((*loc, name), f"unknown field; a reading has {', '.join(_FIELDS)}", "extra")
        )
    out = {}
    for name in _FIELDS:
        if name not in rec:
            if name in _OPTIONAL:
                out[name] = _OPTIONAL[name]
                continue
            errors.append(_error((*loc, name), "field required", "missing"))
            continue
        value = rec[name]
        problem = _PROBLEMS[name](value)
        if problem:
            errors.append(_error((*loc, name), problem[0], problem[1], value))
        out[name] = value
    return out if len(errors) == before else None


def _integer(lo: int, hi: int, what: str) -> Any:
    def problem(v: Any) -> tuple[str, str] | None:
        if not isinstance(v, int) or isinstance(v, bool):
            return f"must be a whole number ({what})", "int_type"
        if not lo <= v < hi:
            return f"must be in [{lo}, {hi}) ({what})", "int_range"
        return None

    return problem


def _machine_problem(v: Any) -> tuple[str, str] | None:
    if not isinstance(v, str):
        return "must be a string", "string_type"
    if not 0 < len(v) <= MAX_MACHINE_ID:
        return f"must be 1 to {MAX_MACHINE_ID} characters", "string_length"
    return None


def _sensor_problem(v: Any) -> tuple[str, str] | None:
    if v not in _SENSORS:
        return f"unknown sensor type; one of {_SENSOR_LIST}", "enum"
    return None


def _value_problem(v: Any) -> tuple[str, str] | None:
    if v is None:
        return None
    if not isinstance(v, int | float) or isinstance(v, bool):
        return "must be a number or null", "float_type"
    if isinstance(v, int) and not -_FLOAT_INT < v < _FLOAT_INT:
        return "is too large for a double", "finite_number"
    if not math.isfinite(v):
        return "must be finite", "finite_number"
    return None


_PROBLEMS = {
    "machine_id": _machine_problem,
    "ts": _integer(0, _LONG, "event time in epoch milliseconds"),
    "sensor_type": _sensor_problem,
    "value": _value_problem,
    "status_code": _integer(-_INT, _INT, "device status, 0 ok"),
    "seq": _integer(0, _LONG, "per machine and sensor, from 0"),
}


def _from_avro(items: list[tuple[tuple[Any, ...], bytes]]) -> Batch:
    if not items:
        raise InvalidBody(422, "the body holds no readings")
    errors: list[dict[str, Any]] = []
    batch = Batch()
    for loc, data in items:
        try:
            rec = READING.decode(data)
        except DecodeError as exc:
            errors.append(_error(loc, str(exc), "avro"))
            continue
        problem = _machine_problem(rec["machine_id"]) or _sensor_problem(rec["sensor_type"])
        if problem:
            errors.append(_error(loc, f"{problem[0]} ({rec!r:.200})", problem[1]))
            continue
        batch.add(rec["machine_id"], rec["machine_id"].encode(), bytes(data))
    return batch.unless(errors)


def _avro_items(body: bytes) -> list[bytes]:
    """The items of an Avro ``array<bytes>`` (blocks of items, ended by a 0 count)."""
    view, items, at = memoryview(body), [], 0
    try:
        while True:
            count, at = _read_long(view, at)
            if count == 0:
                break
            if count < 0:  # a block that also gives its size in bytes
                count = -count
                _, at = _read_long(view, at)
            for _ in range(count):
                size, at = _read_long(view, at)
                if size < 0 or at + size > len(view):
                    raise ValueError("an item runs past the end of the body")
                items.append(view[at : at + size])
                at += size
    except ValueError as exc:
        raise InvalidBody(
            400, f"the body is not an Avro array of single-object-encoded readings: {exc}"
        ) from None
    if at != len(view):
        raise InvalidBody(400, f"{len(view) - at} bytes after the end of the Avro array")
    return items


def _read_long(view: memoryview, at: int) -> tuple[int, int]:
    """An Avro long (zig-zag varint) at ``at``: the value and the position after it."""
    shift = n = 0
    while True:
        if at >= len(view):
            raise ValueError("the body ends inside a number")
        byte = view[at]
        at += 1
        n |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (n >> 1) ^ -(n & 1), at
        shift += 7
        if shift > 63:
            raise ValueError("a number longer than 10 bytes")


def _error(loc: tuple[Any, ...], msg: str, kind: str, value: Any = ...) -> dict[str, Any]:
    err: dict[str, Any] = {"loc": list(loc), "msg": msg, "type": kind}
    if value is not ...:
        err["input"] = value
    return err


def bad_indices(errors: list[dict[str, Any]]) -> Iterator[int]:
    """The positions, in a batch, of the readings ``errors`` are about."""
    for err in errors:
        loc = err["loc"]
        if len(loc) > 1 and isinstance(loc[1], int):
            yield loc[1]


@cache
def _encoder() -> ReadingEncoder:
    return ReadingEncoder()


def _encode(rec: dict[str, Any]) -> bytes:
    """A checked reading in single-object encoding. The machine id is encoded each time:
    the encoder's cache of ids would grow with every id any client ever sent."""
    enc, machine = _encoder(), rec["machine_id"].encode()
    return enc.encode_parts(
        varint(len(machine)) + machine,
        varint(rec["ts"]),
        enc.sensor_bytes[rec["sensor_type"]],
        None if rec["value"] is None else float(rec["value"]),
        rec["status_code"],
        rec["seq"],
    )
