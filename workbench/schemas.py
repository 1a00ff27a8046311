"""Avro schemas from ``schemas/*.avsc``, parsed once, and their encode/decode helpers.

There is no schema registry (the schemas are static and versioned with the code), so
messages use Avro's *single-object encoding*: two marker bytes ``C3 01``, the 8-byte
CRC-64-AVRO fingerprint of the writer schema, then the Avro body. A reader can thus
tell a message of the wrong schema from a corrupt one and say which it is, which a
bare Avro body cannot do.

Timestamps stay integers (epoch milliseconds) in Python: decoding them into datetime
objects would cost more than the rest of the decode, and every later stage works in
milliseconds anyway.

>>> codec = codec_for("reading")
>>> data = codec.encode({"machine_id": "m-001", "ts": 1_700_000_000_000,
...                      "sensor_type": "temperature", "value": 21.5, "status_code": 0, "seq": 0})
>>> data[:2].hex(), len(data) > 10
('c301', True)
>>> codec.decode(data)["value"]
21.5
>>> codec.decode(b"garbage")
Traceback (most recent call last):
...
workbench.schemas.DecodeError: not Avro single-object encoding (no C3 01 marker)
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
from fastavro.schema import fingerprint, to_parsing_canonical_form

from workbench.errors import SchemaError

MARKER = b"\xc3\x01"


class DecodeError(SchemaError):
    """A message could not be decoded; the message is the dead-letter reason."""


def schema_dir() -> Path:
    """``schemas/`` of the source tree, or the copy a wheel install carries in the package."""
    packaged = Path(__file__).parent / "schemas"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "schemas"


def _strip_timestamp_logical_types(node: Any) -> Any:
    if isinstance(node, dict):
        if node.get("logicalType", "").startswith("timestamp-"):
            node = {k: v for k, v in node.items() if k != "logicalType"}
        return {k: _strip_timestamp_logical_types(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_strip_timestamp_logical_types(v) for v in node]
    return node


class AvroCodec:
    """Encode and decode one record schema in single-object encoding."""

    def __init__(self, name: str, raw: dict[str, Any]) -> None:
        self.name = name
        self.raw = raw
        try:
            self.schema = fastavro.parse_schema(_strip_timestamp_logical_types(raw))
        except Exception as exc:  # fastavro raises SchemaParseException and others
            raise SchemaError(f"schema {name!r} is not a valid Avro schema: {exc}") from None
        # the fingerprint is of the schema as written, logical types included
        canonical = to_parsing_canonical_form(fastavro.parse_schema(raw))
        self.fingerprint = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
        self.header = MARKER + self.fingerprint
        self.field_names = [f["name"] for f in raw["fields"]]

    def encode(self, record: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        buf.write(self.header)
        fastavro.schemaless_writer(buf, self.schema, record)
        return buf.getvalue()

    def decode(self, data: bytes) -> dict[str, Any]:
        """Decode one message; :class:`DecodeError` says what is wrong with a bad one."""
        if data is None or len(data) < len(self.header) or data[:2] != MARKER:
            raise DecodeError("not Avro single-object encoding (no C3 01 marker)")
        if data[2:10] != self.fingerprint:
            raise DecodeError(
                f"wrong schema: fingerprint {data[2:10].hex()} is not {self.name} "
                f"({self.fingerprint.hex()})"
            )
        buf = io.BytesIO(data)
        buf.seek(len(self.header))
        try:
            record = fastavro.schemaless_reader(buf, self.schema, None)
        except Exception as exc:  # truncated or corrupt body: EOFError, IndexError, ...
            raise DecodeError(f"corrupt {self.name} body: {type(exc).__name__}: {exc}") from None
        if buf.tell() != len(data):
            raise DecodeError(
                f"corrupt {self.name} body: {len(data) - buf.tell()} bytes left after the record"
            )
        return record


@cache
def codec_for(name: str) -> AvroCodec:
    """The codec for ``schemas/<name>.avsc``, parsed on first use and kept."""
    path = schema_dir() / f"{name}.avsc"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise SchemaError(f"no schema file {path}") from None
    except json.JSONDecodeError as exc:
        raise SchemaError(f"{path} is not valid JSON: {exc}") from None
    return AvroCodec(name, raw)


def sensor_types() -> list[str]:
    """The sensor types a reading may carry (the enum's symbols, less the 'unknown' default)."""
    for f in codec_for("reading").raw["fields"]:
        if f["name"] == "sensor_type":
            return [s for s in f["type"]["symbols"] if s != f["type"].get("default")]
    raise SchemaError("reading schema has no sensor_type field")


READING = codec_for("reading")


def varint(n: int) -> bytes:
    """Avro's zig-zag variable-length encoding of a signed integer."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


class ReadingEncoder:
    """Encodes readings field by field, about five times faster than a general Avro writer.

    The simulator produces readings by the hundred thousand per second; a schemaless
    writer call per record would make it the bottleneck of every benchmark. The byte
    layout is Avro's (string, long, enum, union of null/double, int, long), checked against
    fastavro when the encoder is built, so a schema change that this class does not follow
    fails loudly instead of producing wrong bytes.

    >>> enc = ReadingEncoder()
    >>> rec = {"machine_id": "m-1", "ts": 5, "sensor_type": "pressure", "value": None,
    ...        "status_code": 0, "seq": 300}
    >>> enc.encode(rec) == READING.encode(rec)
    True
    """

    FIELDS = ("machine_id", "ts", "sensor_type", "value", "status_code", "seq")

    def __init__(self, codec: AvroCodec | None = None) -> None:
        self.codec = codec or codec_for("reading")
        if tuple(self.codec.field_names) != self.FIELDS:
            raise SchemaError(
                f"ReadingEncoder knows the fields {self.FIELDS}, the reading schema has "
                f"{tuple(self.codec.field_names)}: update the encoder with the schema"
            )
        enum = next(f["type"] for f in self.codec.raw["fields"] if f["name"] == "sensor_type")
        self.sensor_bytes = {s: varint(i) for i, s in enumerate(enum["symbols"])}
        self._strings: dict[str, bytes] = {}
        self._small = [varint(i) for i in range(1024)]
        sample = {"machine_id": "m-0001", "ts": 1_767_225_600_000, "sensor_type": "vibration",
                  "value": -1.25, "status_code": 2, "seq": 123_456}  # fmt: skip
        for value in (sample["value"], None):
            rec = sample | {"value": value}
            if self.encode(rec) != self.codec.encode(rec):
                raise SchemaError("ReadingEncoder disagrees with the reading schema's encoding")

    def string(self, text: str) -> bytes:
        """The encoded string, cached: machine ids repeat on every reading."""
        encoded = self._strings.get(text)
        if encoded is None:
            raw = text.encode()
            encoded = self._strings[text] = varint(len(raw)) + raw
        return encoded

    def long(self, n: int) -> bytes:
        return self._small[n] if 0 <= n < 1024 else varint(n)

    def encode_parts(
        self, machine: bytes, ts: bytes, sensor: bytes, value: float | None, status: int, seq: int
    ) -> bytes:
        """The message from pre-encoded machine id, time and sensor (the per-tick constants)."""
        body = b"\x00" if value is None else b"\x02" + _DOUBLE(value)
        return b"".join(
            (self.codec.header, machine, ts, sensor, body, self.long(status), self.long(seq))
        )

    def encode(self, record: dict[str, Any]) -> bytes:
        return self.encode_parts(
            self.string(record["machine_id"]),
            varint(record["ts"]),
            self.sensor_bytes[record["sensor_type"]],
            record["value"],
            record["status_code"],
            record["seq"],
        )


_DOUBLE = struct.Struct("<d").pack


class ReadingColumnsEncoder:
    """Encodes readings held as numpy columns, all at once: one buffer and the message offsets.

    The simulator makes a tick's readings as arrays; encoding them with array operations
    instead of a call per reading removes the encoder from its profile. Each field becomes
    a matrix of byte columns with a per-row length (Avro varints are 1 to 10 bytes), and
    the rows' used bytes, read in row order, are the messages one after the other. The
    bytes are those of :class:`ReadingEncoder` and fastavro, checked when the encoder is
    built.

    Parameters
    ----------
    machine_ids
        The ids that ``machine`` columns index (``Factory.machine_ids``).

    >>> enc = ReadingColumnsEncoder(["m-1", "m-2"])
    >>> buffer, offsets = enc.encode(machine=[1, 0], ts=[5, 5], sensor=[2, 0],
    ...                              value=[np.nan, -1.5], status=[0, 3], seq=[300, 0])
    >>> offsets.tolist()
    [0, 20, 47]
    >>> rec = {"machine_id": "m-2", "ts": 5, "sensor_type": "pressure", "value": None,
    ...        "status_code": 0, "seq": 300}
    >>> buffer[: offsets[1]] == READING.encode(rec)
    True
    """

    def __init__(self, machine_ids: Sequence[str], codec: AvroCodec | None = None) -> None:
        scalar = ReadingEncoder(codec)  # checks the fields against the schema
        self.codec = scalar.codec
        #: sensor type -> its index in the schema's enum (the ``sensor`` column's values)
        self.sensor_index = {s: i for i, s in enumerate(scalar.sensor_bytes)}
        self.machine_ids = list(machine_ids)
        if not self.machine_ids:
            raise ValueError("ReadingColumnsEncoder needs at least one machine id")
        ids = [scalar.string(m) for m in self.machine_ids]
        # the encoded ids as rows of a table, padded to the longest: a gather per batch
        self._ids = np.zeros((len(ids), max(map(len, ids))), dtype=np.uint8)
        for row, encoded in zip(self._ids, ids, strict=True):
            row[: len(encoded)] = np.frombuffer(encoded, dtype=np.uint8)
        self._id_len = np.array([len(b) for b in ids], dtype=np.int64)
        self._id_used = np.arange(self._ids.shape[1]) < self._id_len[:, None]
        self._header = np.frombuffer(self.codec.header, dtype=np.uint8)
        self._check()

    def encode(
        self, machine: Any, ts: Any, sensor: Any, value: Any, status: Any, seq: Any
    ) -> tuple[bytes, np.ndarray]:
        """Encode the columns (``value`` NaN means null); return ``(buffer, offsets)``.

        Message ``i`` is ``buffer[offsets[i]:offsets[i + 1]]``. ``machine`` holds indices
        into ``machine_ids`` and sets the number of messages; ``sensor`` holds indices into
        the schema's enum (``sensor_index``). Any other column may be a scalar that holds
        for every message (a tick's time), which is then encoded once.
        """
        machine = np.asarray(machine, dtype=np.int64)
        value = np.broadcast_to(np.asarray(value, dtype=np.float64), machine.shape)
        null = np.isnan(value)
        fields = [
            (self._ids[machine], self._id_used[machine], self._id_len[machine]),
            _varints(ts),
            _varints(sensor),
            _null_or_double(value, null),
            _varints(status),
            _varints(seq),
        ]
        header = len(self._header)
        width = header + sum(f.shape[1] for f, _, _ in fields)
        matrix = np.empty((len(machine), width), dtype=np.uint8)
        used = np.empty((len(machine), width), dtype=bool)
        matrix[:, :header] = self._header
        used[:, :header] = True
        col, lengths = header, np.full(len(machine), header, dtype=np.int64)
        for field, field_used, field_lengths in fields:
            end = col + field.shape[1]
            matrix[:, col:end] = field
            used[:, col:end] = field_used
            lengths += field_lengths
            col = end
        offsets = np.zeros(len(machine) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # the used bytes of the rows, row after row: the messages one after the other
        return np.compress(used.ravel(), matrix.ravel()).tobytes(), offsets

    def _check(self) -> None:
        """Refuse to run if any field's bytes differ from the general encoder's."""
        sensors = list(self.sensor_index)
        last = len(self.machine_ids) - 1
        rows = [(0, 1_767_225_600_000, 1, -1.25, 2, 123_456), (last, 0, 0, None, 0, 0),
                (0, 5, len(sensors) - 1, -0.0, -1, 2**40), (0, 2**62, 0, 1e300, 2**31 - 1, 127),
                (last, 64, 2, 3.5, -(2**31), 128)]  # fmt: skip
        rows += [(m, 1_767_225_600_000, 0, 21.5, 0, m) for m in range(min(last, 50))]
        machine, ts, sensor, value, status, seq = zip(*rows, strict=True)
        nan_for_null = [np.nan if v is None else v for v in value]
        buffer, offsets = self.encode(machine, ts, sensor, nan_for_null, status, seq)
        for i, (m, t, s, v, st, sq) in enumerate(rows):
            rec = {"machine_id": self.machine_ids[m], "ts": t, "sensor_type": sensors[s],
                   "value": v, "status_code": st, "seq": sq}  # fmt: skip
            if buffer[offsets[i] : offsets[i + 1]] != self.codec.encode(rec):
                raise SchemaError(
                    "ReadingColumnsEncoder disagrees with the reading schema's encoding"
                )


def _varints(column: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Avro varints of signed integers: a byte matrix (a row per value), its used bytes and
    their count per row.

    Zig-zag maps the sign into the lowest bit; then seven bits per byte, least significant
    first, the high bit set on every byte but the last. The width is what the largest value
    needs, so small values cost little. A scalar gives one row, for every message.
    """
    x = np.asarray(column, dtype=np.int64).reshape(-1)
    z = ((x << 1) ^ (x >> 63)).view(np.uint64)
    width = max(1, -(-int(z.max(initial=0)).bit_length() // 7))
    shifted = z[:, None] >> (np.arange(width, dtype=np.uint64) * np.uint64(7))
    more = shifted[:, 1:] != 0  # byte j + 1 exists: byte j carries the continuation bit
    groups = (shifted & np.uint64(0x7F)).astype(np.uint8)
    groups[:, :-1] |= more.view(np.uint8) << 7
    used = np.empty(groups.shape, dtype=bool)
    used[:, 0] = True
    used[:, 1:] = more
    lengths = np.ones(len(z), dtype=np.int64)
    for j in range(1, width):
        lengths += more[:, j - 1]
    return groups, used, lengths


def _null_or_double(
    value: np.ndarray, null: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The union ``["null", "double"]``: branch 0 alone, or branch 1 and 8 bytes little-endian."""
    n = len(value)
    body = np.empty((n, 9), dtype=np.uint8)
    body[:, 0] = np.where(null, 0, 2)
    body[:, 1:] = value.astype("<f8").view(np.uint8).reshape(n, 8)
    used = np.empty((n, 9), dtype=bool)
    used[:, 0] = True
    used[:, 1:] = ~null[:, None]
    return body, used, np.where(null, 1, 9)


class CleanReadingEncoder:
    """Encodes processed readings (``schemas/clean_reading.avsc``) field by field.

    The processor publishes every reading it processes; a general Avro writer per record
    costs more than the processor's statistics. Checked against fastavro when built.

    >>> enc = CleanReadingEncoder()
    >>> rec = {"run_id": "r", "machine_id": "m-1", "ts": 5, "sensor_type": "pressure",
    ...        "value": 1.5, "status_code": 0, "seq": 300, "late": True, "score": None,
    ...        "rolling_1": 1.5, "rolling_2": None}
    >>> enc.encode(*rec.values()) == codec_for("clean_reading").encode(rec)
    True
    """

    FIELDS = ("run_id", "machine_id", "ts", "sensor_type", "value", "status_code", "seq",
              "late", "score", "rolling_1", "rolling_2")  # fmt: skip

    def __init__(self) -> None:
        self.codec = codec_for("clean_reading")
        if tuple(self.codec.field_names) != self.FIELDS:
            raise SchemaError(
                f"CleanReadingEncoder knows the fields {self.FIELDS}, the clean_reading schema "
                f"has {tuple(self.codec.field_names)}: update the encoder with the schema"
            )
        self._strings = ReadingEncoder().string
        values = ("r-1", "m-0001", 1_767_225_600_000, "vibration", -1.25, 2, 123_456, False,
                  3.5, None, 0.25)  # fmt: skip
        sample = dict(zip(self.FIELDS, values, strict=True))
        for value in (sample["value"], None):
            rec = sample | {"value": value}
            if self.encode(*rec.values()) != self.codec.encode(rec):
                raise SchemaError("CleanReadingEncoder disagrees with the schema's encoding")

    def encode(
        self,
        run_id: str,
        machine_id: str,
        ts: int,
        sensor_type: str,
        value: float | None,
        status_code: int,
        seq: int,
        late: bool,
        score: float | None,
        rolling_1: float | None,
        rolling_2: float | None,
    ) -> bytes:
        s = self._strings
        return b"".join((
            self.codec.header, s(run_id), s(machine_id), varint(ts), s(sensor_type),
            _NULL if value is None else b"\x02" + _DOUBLE(value), varint(status_code),
            varint(seq), b"\x01" if late else b"\x00",
            _NULL if score is None else b"\x02" + _DOUBLE(score),
            _NULL if rolling_1 is None else b"\x02" + _DOUBLE(rolling_1),
            _NULL if rolling_2 is None else b"\x02" + _DOUBLE(rolling_2),
        ))  # fmt: skip


_NULL = b"\x00"
