"""Raw reading messages of a poll batch -> numpy columns, in one compiled pass.

The legacy processor decoded each message with fastavro into a dict (a few µs each);
here the batch's payloads are joined into one byte buffer and a kernel reads every
record of the reading schema (``schemas/reading.avsc``, single-object encoding: marker
``C3 01``, CRC-64-AVRO fingerprint, body) straight into columns. A message that cannot be
a reading is not an exception but a reason code in the ``reason`` column, in the order of
the legacy :func:`workbench.processor.validate.check`: the first failing check wins.
:func:`reason_text` turns a code back into the legacy dead-letter text.

The kernel reads stricter than fastavro in four ways, each a message fastavro decodes
into nonsense because of how it indexes Python lists or shifts C integers: a negative
enum or union index (fastavro wraps it around: ``-2`` reads as the last sensor but one),
a varint longer than 10 bytes, and a ``status_code`` outside the 32 bits of an Avro
``int`` (the sinks store int4). These are dead-lettered as corrupt.

>>> from workbench.schemas import READING
>>> rec = {"machine_id": "m-1", "ts": 1_767_225_600_000, "sensor_type": "pressure",
...        "value": 4.25, "status_code": 0, "seq": 7}
>>> d = decode_batch([READING.encode(rec), b"junk", READING.encode(rec)], [b"m-1", None, b"m-2"])
>>> d.reason.tolist(), float(d.value[0]), d.machine_id(0), SYMBOLS[d.sensor[0]]
([0, 1, 6], 4.25, 'm-1', 'pressure')
>>> reason_text(int(d.reason[2]), READING.encode(rec), b"m-2")
"key 'm-2' does not match machine_id 'm-1'"
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from workbench.processor.kernels import kernel
from workbench.schemas import READING

if TYPE_CHECKING:
    from workbench.processor.validate import Limits

_ENUM = next(f["type"] for f in READING.raw["fields"] if f["name"] == "sensor_type")
#: The sensor_type enum's symbols: ``sensor`` column values index this tuple.
SYMBOLS: tuple[str, ...] = tuple(_ENUM["symbols"])
#: Index of the enum default ('unknown'): what a reader sees for a newer writer's symbol.
UNKNOWN = SYMBOLS.index(_ENUM["default"])
_FINGERPRINT = np.frombuffer(READING.fingerprint, np.uint8)

# Reason codes (the ``reason`` column, int8). Checks run in this order, as in the legacy
# Validator: decode (1-4, 10-13), key (6), sensor (5), then validate_batch (7-9).
OK = 0
NOT_SINGLE_OBJECT = 1  # None, shorter than the header, or no C3 01 marker
WRONG_SCHEMA = 2  # a single-object message of another schema
CORRUPT = 3  # truncated, bad string length, invalid UTF-8, enum/union index past the end
TRAILING_BYTES = 4  # a whole record and bytes after it
UNKNOWN_SENSOR = 5  # sensor_type is the enum default
KEY_MISMATCH = 6  # the Kafka key is not machine_id
BAD_TIME = 7  # event time before limits.min_ts_ms or too far past the wall clock
NOT_FINITE = 8  # value NaN or infinite (a null is fine)
OUT_OF_RANGE = 9  # value outside the sensor's physical range
BAD_ENUM = 10  # negative sensor_type index (fastavro wraps it around)
BAD_UNION = 11  # negative union branch (fastavro wraps it around)
OVERLONG_VARINT = 12  # a varint longer than 10 bytes (fastavro shifts past 64 bits)
INT_OVERFLOW = 13  # status_code outside int32 (fastavro reads any long)
BAD_ID = 14  # machine_id empty, longer than MAX_ID_BYTES, or with a control character
NULL_KEY = 15  # no Kafka key (a reading's key is its machine_id)

#: The longest machine id (and run id) accepted, in UTF-8 bytes.
MAX_ID_BYTES = 128

REASON_NAMES = {
    OK: "ok", NOT_SINGLE_OBJECT: "not single-object encoding", WRONG_SCHEMA: "wrong schema",
    CORRUPT: "corrupt body", TRAILING_BYTES: "bytes after the record",
    UNKNOWN_SENSOR: "unknown sensor type", KEY_MISMATCH: "key does not match machine_id",
    BAD_TIME: "implausible event time", NOT_FINITE: "value not finite",
    OUT_OF_RANGE: "value outside physical range", BAD_ENUM: "negative enum index",
    BAD_UNION: "negative union branch", OVERLONG_VARINT: "overlong varint",
    INT_OVERFLOW: "int outside 32 bits", BAD_ID: "machine_id not an id", NULL_KEY: "no key",
}  # fmt: skip

# what a legacy reader says when fastavro itself accepts the message (the stricter cases)
_STRICT_TEXT = {
    BAD_ENUM: "sensor_type index is negative",
    BAD_UNION: "value union branch is negative",
    OVERLONG_VARINT: "varint longer than 10 bytes",
    INT_OVERFLOW: "status_code does not fit in 32 bits",
    CORRUPT: "not a valid reading",
}

_TRUNCATED = -1  # _read_long's "next position" when the record ends inside the varint
_OVERLONG = -2  # ... when the varint runs past 10 bytes
_HASH_MOD = (1 << 47) - 115  # a prime: h * 65521 + 255 stays below 2**63
_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1


@dataclass
class Decoded:
    """A decoded batch: one row per message, in arrival order.

    The value columns hold what was read before the first failed check; they are
    meaningful where ``reason`` is OK (or a code of validate_batch, which runs on
    decoded rows only).

    Attributes
    ----------
    buf : uint8 array, every payload back to back; ``starts``/``lengths`` (int64,
        length -1 for a None payload) locate each message in it.
    ts, seq : int64. sensor : int16 index into :data:`SYMBOLS`, -1 when not read.
    value : float64, NaN for a null (``isnull`` True). status : int32.
    machine_start, machine_len : the machine id's bytes in ``buf`` (length -1 when not read).
    machine_hash : int64 hash of those bytes (0 when not read), for interning.
    has_key : bool, whether the message has a Kafka key.
    plain_id : bool, whether the machine id is 1 to MAX_ID_BYTES bytes without a control
        character (a NUL byte, which PostgreSQL's text refuses, a newline, ...).
    reason : int8 reason code, OK (0) for a good reading.
    """

    buf: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray
    ts: np.ndarray
    sensor: np.ndarray
    value: np.ndarray
    isnull: np.ndarray
    status: np.ndarray
    seq: np.ndarray
    machine_start: np.ndarray
    machine_len: np.ndarray
    machine_hash: np.ndarray
    reason: np.ndarray
    has_key: np.ndarray
    plain_id: np.ndarray

    def __len__(self) -> int:
        return self.reason.size

    def machine_bytes(self, row: int) -> bytes:
        """The machine id of ``row`` as the message carries it (UTF-8)."""
        start = int(self.machine_start[row])
        return self.buf[start : start + max(int(self.machine_len[row]), 0)].tobytes()

    def machine_id(self, row: int) -> str:
        return self.machine_bytes(row).decode()


def decode_batch(values: Sequence[bytes | None], keys: Sequence[bytes | None]) -> Decoded:
    """Decode a batch of raw messages (Kafka values and keys, None where absent).

    Every row gets a reason code; a None key is not checked (legacy does the same).
    """
    n = len(values)
    if len(keys) != n:
        raise ValueError(f"{n} values but {len(keys)} keys")
    buf, starts, lengths = _join(values)
    kbuf, kstarts, klengths = _join(keys)
    d = Decoded(
        buf, starts, lengths,
        ts=np.empty(n, np.int64), sensor=np.empty(n, np.int16), value=np.empty(n, np.float64),
        isnull=np.empty(n, np.bool_), status=np.empty(n, np.int32), seq=np.empty(n, np.int64),
        machine_start=np.empty(n, np.int64), machine_len=np.empty(n, np.int64),
        machine_hash=np.empty(n, np.int64), reason=np.empty(n, np.int8), has_key=klengths >= 0,
        plain_id=np.empty(n, np.bool_),
    )  # fmt: skip
    _decode(
        buf, starts, lengths, kbuf, kstarts, klengths, _FINGERPRINT, len(SYMBOLS), UNKNOWN,
        d.ts, d.sensor, d.value, d.isnull, d.status, d.seq,
        d.machine_start, d.machine_len, d.machine_hash, d.reason, d.plain_id,
    )  # fmt: skip
    # Legacy compares the key decoded with errors="replace": a key that is not UTF-8 still
    # matches a machine id holding U+FFFD where the key has its bad bytes.
    for i in np.flatnonzero(d.reason == KEY_MISMATCH):
        machine = d.machine_bytes(i)
        if b"\xef\xbf\xbd" in machine and keys[i].decode(errors="replace") == machine.decode():
            d.reason[i] = UNKNOWN_SENSOR if d.sensor[i] == UNKNOWN else OK
    return d


def reason_text(
    code: int, value: bytes | None, key: bytes | None, limits: Limits | None = None
) -> str:
    """The dead-letter reason of a message that :func:`decode_batch` rejected with ``code``.

    The text is the legacy :meth:`~workbench.processor.validate.Validator.check`'s,
    obtained by running it on this one message (rejects are rare) with ``limits``, the
    batch's validation limits (they matter only where fastavro reads a reading out of what
    the kernel rejects, codes 10-13, and that reading then fails validation). Where legacy
    accepts such a message, the text is the kernel's own, in the same form.
    """
    from workbench.processor.validate import Rejected, Validator  # validate imports this module

    result = Validator(limits).check(value, key, "")
    if isinstance(result, Rejected):
        return result.reason
    return f"corrupt {READING.name} body: {_STRICT_TEXT.get(code, REASON_NAMES.get(code))}"


def _join(items: Sequence[bytes | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One buffer of all ``items``, their int64 start offsets and lengths (-1 for None)."""
    n = len(items)
    if None in items:
        lengths = np.fromiter((-1 if b is None else len(b) for b in items), np.int64, n)
        items = [b"" if b is None else b for b in items]
    else:
        lengths = np.fromiter(map(len, items), np.int64, n)
    starts = np.zeros(n, np.int64)
    np.cumsum(np.maximum(lengths[:-1], 0), out=starts[1:])
    return np.frombuffer(b"".join(items), np.uint8), starts, lengths


@kernel
def _decode(
    buf, starts, lengths, kbuf, kstarts, klengths, fingerprint, n_symbols, unknown,
    ts, sensor, value, isnull, status, seq, machine_start, machine_len, machine_hash, reason,
    plain_id,
):  # fmt: skip
    bits = np.zeros(1, np.uint64)  # a double's 8 bytes, reinterpreted through ``double``
    double = bits.view(np.float64)
    for i in range(starts.size):
        ts[i] = 0
        sensor[i] = -1
        value[i] = np.nan
        isnull[i] = False
        status[i] = 0
        seq[i] = 0
        machine_start[i] = 0
        machine_len[i] = -1
        machine_hash[i] = 0
        start = starts[i]
        code = _read_reading(
            buf, start, start + lengths[i], fingerprint, n_symbols, i,
            ts, sensor, value, isnull, status, seq, machine_start, machine_len, bits, double,
        )  # fmt: skip
        plain_id[i] = False
        if machine_len[i] >= 0:
            first, end = machine_start[i], machine_start[i] + machine_len[i]
            machine_hash[i] = _hash_bytes(buf, first, end)
            plain_id[i] = 1 <= machine_len[i] <= MAX_ID_BYTES and _printable(buf, first, end)
        if code == OK:
            if klengths[i] >= 0 and not _same_bytes(
                kbuf, kstarts[i], klengths[i], buf, machine_start[i], machine_len[i]
            ):
                code = KEY_MISMATCH
            elif sensor[i] == unknown:
                code = UNKNOWN_SENSOR
        reason[i] = code


@kernel
def _read_reading(
    buf, pos, end, fingerprint, n_symbols, i,
    ts, sensor, value, isnull, status, seq, machine_start, machine_len, bits, double,
):  # fmt: skip
    """Read the message at ``buf[pos:end]`` into row ``i``; return its reason code."""
    if end - pos < 10 or buf[pos] != 0xC3 or buf[pos + 1] != 0x01:
        return NOT_SINGLE_OBJECT
    for k in range(8):
        if buf[pos + 2 + k] != fingerprint[k]:
            return WRONG_SCHEMA
    pos += 10

    size, pos = _read_long(buf, pos, end)  # machine_id: string
    if pos < 0:
        return _varint_code(pos)
    if size < 0 or size > end - pos or not _valid_utf8(buf, pos, pos + size):
        return CORRUPT
    machine_start[i] = pos
    machine_len[i] = size
    pos += size

    t, pos = _read_long(buf, pos, end)  # ts: long
    if pos < 0:
        return _varint_code(pos)
    ts[i] = t

    index, pos = _read_long(buf, pos, end)  # sensor_type: enum
    if pos < 0:
        return _varint_code(pos)
    if index < 0:
        return BAD_ENUM
    if index >= n_symbols:
        return CORRUPT
    sensor[i] = index

    branch, pos = _read_long(buf, pos, end)  # value: union [null, double]
    if pos < 0:
        return _varint_code(pos)
    if branch == 0:
        isnull[i] = True
    elif branch == 1:
        if end - pos < 8:
            return CORRUPT
        b = np.uint64(0)
        for k in range(8):  # little-endian IEEE 754
            b |= np.uint64(buf[pos + k]) << np.uint64(8 * k)
        bits[0] = b
        value[i] = double[0]
        pos += 8
    elif branch < 0:
        return BAD_UNION
    else:
        return CORRUPT

    device_status, pos = _read_long(buf, pos, end)  # status_code: int
    if pos < 0:
        return _varint_code(pos)
    if device_status < _INT32_MIN or device_status > _INT32_MAX:
        return INT_OVERFLOW
    status[i] = device_status

    number, pos = _read_long(buf, pos, end)  # seq: long
    if pos < 0:
        return _varint_code(pos)
    seq[i] = number
    return OK if pos == end else TRAILING_BYTES


@kernel
def _read_long(buf, pos, end):
    """Avro's zig-zag varint at ``buf[pos:end]``: (value, next position), the position
    being _TRUNCATED or _OVERLONG when there is no valid varint.

    A 10th byte's bits beyond the 64th are dropped, as fastavro (and Java) do.
    """
    n = np.uint64(0)
    shift = np.uint64(0)
    for _ in range(10):
        if pos >= end:
            return np.int64(0), np.int64(_TRUNCATED)
        b = buf[pos]
        pos += 1
        n |= np.uint64(b & 0x7F) << shift
        if b < 0x80:
            half = np.int64(n >> np.uint64(1))
            return (~half if n & np.uint64(1) else half), pos
        shift += np.uint64(7)
    return np.int64(0), np.int64(_OVERLONG)


@kernel
def _varint_code(pos):
    return OVERLONG_VARINT if pos == _OVERLONG else CORRUPT


@kernel
def _valid_utf8(buf, pos, end):
    """Whether ``buf[pos:end]`` is strict UTF-8, as Python's ``bytes.decode()`` demands
    (no overlong forms, no surrogates, nothing past U+10FFFF)."""
    while pos < end:
        b = buf[pos]
        if b < 0x80:
            pos += 1
            continue
        lo, hi = 0x80, 0xBF  # allowed range of the first continuation byte
        if 0xC2 <= b <= 0xDF:
            more = 1
        elif b == 0xE0:
            more, lo = 2, 0xA0
        elif b == 0xED:
            more, hi = 2, 0x9F
        elif 0xE1 <= b <= 0xEF:
            more = 2
        elif b == 0xF0:
            more, lo = 3, 0x90
        elif 0xF1 <= b <= 0xF3:
            more = 3
        elif b == 0xF4:
            more, hi = 3, 0x8F
        else:
            return False
        if pos + more >= end:
            return False
        c = buf[pos + 1]
        if c < lo or c > hi:
            return False
        for k in range(2, more + 1):
            c = buf[pos + k]
            if c < 0x80 or c > 0xBF:
                return False
        pos += more + 1
    return True


@kernel
def _hash_bytes(buf, pos, end):
    """A 47-bit polynomial hash of ``buf[pos:end]``, seeded with the length.

    Only a hint for interning: equal hashes are always confirmed byte by byte.
    """
    h = np.int64(end - pos) % _HASH_MOD
    for j in range(pos, end):
        h = (h * 65521 + np.int64(buf[j])) % _HASH_MOD
    return h


@kernel
def _printable(buf, pos, end):
    """Whether ``buf[pos:end]`` (UTF-8) holds no control character: in UTF-8 these are
    single bytes below 0x20 or 0x7F (every byte of a longer character is 0x80 or above)."""
    clean = True
    for j in range(pos, end):
        if buf[j] < 0x20 or buf[j] == 0x7F:
            clean = False
            break
    return clean


@kernel
def _same_bytes(a, a_start, a_len, b, b_start, b_len):
    if a_len != b_len:
        return False
    for k in range(a_len):  # noqa: SIM110 (numba compiles no generator in all())
        if a[a_start + k] != b[b_start + k]:
            return False
    return True


@kernel
def _differs_from(buf, starts, lens, rows, reference):
    """For each ``rows[k]``, whether its bytes differ from those of row ``reference[k]``."""
    out = np.zeros(rows.size, np.bool_)
    for k in range(rows.size):
        r, q = rows[k], reference[k]
        out[k] = not _same_bytes(buf, starts[r], lens[r], buf, starts[q], lens[q])
    return out


class MachineTable:
    """Machine ids -> dense ints (0, 1, ... in order of first appearance), stable across
    batches.

    Interning costs one dict look-up per distinct machine of a batch, not per row: rows
    are grouped by the hash of their machine id (``np.unique``), each group is looked up
    by its first row's bytes, and a compiled check confirms every row's bytes equal its
    group's, so two machines whose hashes collide are never merged (the odd row out is
    looked up on its own).

    >>> from workbench.schemas import READING
    >>> rec = {"machine_id": "m-1", "ts": 1_767_225_600_000, "sensor_type": "pressure",
    ...        "value": 4.25, "status_code": 0, "seq": 7}
    >>> msgs = [READING.encode(rec | {"machine_id": m}) for m in ("b", "a", "b")]
    >>> table = MachineTable()
    >>> table.intern(decode_batch(msgs, [None] * 3)).tolist(), table.names
    ([0, 1, 0], ['b', 'a'])
    """

    VERSION = 1

    def __init__(self, names: Sequence[str] = ()) -> None:
        self.names: list[str] = []
        self._ids: dict[bytes, int] = {}
        for name in names:
            self.id_of(name.encode())

    def __len__(self) -> int:
        return len(self.names)

    def id_of(self, name: bytes) -> int:
        """The id of machine ``name`` (UTF-8 bytes), a new one if it is new."""
        i = self._ids.get(name)
        if i is None:
            i = self._ids[name] = len(self.names)
            self.names.append(name.decode())
        return i

    def intern(self, decoded: Decoded, rows: np.ndarray | None = None) -> np.ndarray:
        """Machine ids (int32) of ``rows`` (default: the rows whose reason is OK); -1 in
        the other rows."""
        if rows is None:
            rows = np.flatnonzero(decoded.reason == OK)
        rows = np.asarray(rows, np.int64)
        if (decoded.machine_len[rows] < 0).any():
            raise ValueError("intern() needs rows whose machine id was decoded")
        ids = np.full(len(decoded), -1, np.int32)
        if rows.size == 0:
            return ids
        _, first, inverse = np.unique(
            decoded.machine_hash[rows], return_index=True, return_inverse=True
        )
        group_ids = np.empty(first.size, np.int32)
        for g in np.argsort(first):  # new ids in order of first appearance
            group_ids[g] = self.id_of(decoded.machine_bytes(rows[first[g]]))
        ids[rows] = group_ids[inverse]
        odd = _differs_from(
            decoded.buf, decoded.machine_start, decoded.machine_len, rows, rows[first[inverse]]
        )
        for r in rows[odd]:  # a hash collision
            ids[r] = self.id_of(decoded.machine_bytes(r))
        return ids

    def keep(self, ids: np.ndarray) -> None:
        """Keep only machines ``ids``, renumbered 0..len(ids)-1 in that order."""
        names = [self.names[i] for i in np.asarray(ids).tolist()]
        self.names, self._ids = [], {}
        for name in names:
            self.id_of(name.encode())

    def arrays(self) -> dict[str, np.ndarray]:
        """The table as plain arrays (a checkpoint): UTF-8 names back to back, their lengths."""
        encoded = [n.encode() for n in self.names]
        return {
            "version": np.array([self.VERSION], np.int64),
            "names_buf": np.frombuffer(b"".join(encoded), np.uint8).copy(),
            "names_len": np.array([len(e) for e in encoded], np.int64),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> MachineTable:
        version = int(arrays["version"][0])
        if version != cls.VERSION:
            raise ValueError(f"MachineTable checkpoint version {version}, expected {cls.VERSION}")
        raw = np.asarray(arrays["names_buf"], np.uint8).tobytes()
        ends = np.cumsum(arrays["names_len"]).tolist()
        return cls([raw[s:e].decode() for s, e in zip([0, *ends[:-1]], ends, strict=True)])
