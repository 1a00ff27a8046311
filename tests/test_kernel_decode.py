"""The batch decoder and validator (processor/decode.py, validate.py) against their
references: fastavro for the decoded fields, the legacy per-message ``Validator.check`` for
every accept/reject decision and every dead-letter text, on crafted, random and fuzzed
messages, and on real data."""

from __future__ import annotations

import json
import math
import os
import random
import re
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from workbench.processor import decode
from workbench.processor.decode import MachineTable, decode_batch
from workbench.processor.validate import Limits, Reading, Validator, reasons, validate_batch
from workbench.schemas import READING, ReadingEncoder, codec_for

SENSORS = decode.SYMBOLS
# int bounds on purpose: the legacy text prints them as given ("[0, 1000]")
LIMITS = Limits(
    ranges={
        "temperature": (-100.0, 1000.0),
        "vibration": (0, 1000),
        "pressure": (None, 2000.0),
        "battery": (0.0, None),
    }
)
RECORD = {
    "machine_id": "m-0001",
    "ts": 1_767_225_600_000,
    "sensor_type": "temperature",
    "value": 21.5,
    "status_code": 0,
    "seq": 3,
}
#: what the kernel rejects and fastavro accepts (see decode's module docstring)
STRICTER = {decode.BAD_ENUM, decode.BAD_UNION, decode.OVERLONG_VARINT, decode.INT_OVERFLOW}
ADDRESS = re.compile(r"0x[0-9a-f]+")
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def enc(**changes) -> bytes:
    return READING.encode(RECORD | changes)


def body(*parts: bytes) -> bytes:
    """A reading message from hand-made body bytes."""
    return READING.header + b"".join(parts)


def zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    return bytes([*out, n])


def now_ms() -> int:
    return int(time.time() * 1000)


def run_batch(values, keys, limits=LIMITS):
    """The new path on a batch, and the legacy Validator on each message, at one clock."""
    d = decode_batch(values, keys)
    validate_batch(d, limits, now_ms())
    v = Validator(limits)
    return d, [v.check(value, key, "r") for value, key in zip(values, keys, strict=True)]


def assert_fields(d: decode.Decoded, i: int, rec: Reading | dict) -> None:
    if isinstance(rec, Reading):
        rec = {"machine_id": rec.machine_id, "ts": rec.ts_ms, "sensor_type": rec.sensor_type,
               "value": rec.value, "status_code": rec.status_code, "seq": rec.seq}  # fmt: skip
    assert d.machine_id(i) == rec["machine_id"]
    assert SENSORS[d.sensor[i]] == rec["sensor_type"]
    assert (int(d.ts[i]), int(d.seq[i]), int(d.status[i])) == (
        rec["ts"],
        rec["seq"],
        rec["status_code"],
    )
    if rec["value"] is None:
        assert d.isnull[i] and np.isnan(d.value[i])
    else:  # bit for bit: -0.0 and NaN payloads included
        assert not d.isnull[i]
        assert struct.pack("<d", d.value[i]) == struct.pack("<d", rec["value"])


def beyond_spec(data: bytes) -> bool:
    """Whether a message fastavro decodes breaks the Avro spec in one of the ways fastavro
    tolerates: an enum or union index below 0, a varint past 10 bytes, an int past 32 bits.

    An independent walk of the body (Python ints), for messages legacy accepted.
    """
    pos = 10

    def varint() -> int:
        nonlocal pos
        n = 0
        for k in range(10):
            b = data[pos]
            pos += 1
            n |= (b & 0x7F) << (7 * k)
            if b < 0x80:
                n &= (1 << 64) - 1
                return (n >> 1) ^ -(n & 1)
        raise OverflowError

    try:
        size = varint()  # machine_id (not pos += varint(): varint moves pos)
        pos += size
        varint()  # ts
        if varint() < 0:  # sensor_type
            return True
        branch = varint()
        if branch < 0:
            return True
        pos += 8 * branch  # a double
        if not -(2**31) <= varint() < 2**31:  # status_code
            return True
        varint()  # seq
    except OverflowError:
        return True
    return False


def same_text(ours: str, legacy: str) -> bool:
    """Equal texts, but for the address of the BytesIO that some fastavro errors name."""
    return ADDRESS.sub("0x_", ours) == ADDRESS.sub("0x_", legacy)


def compare_with_legacy(values, keys, limits=LIMITS) -> tuple[decode.Decoded, list]:
    """Assert the same decision, fields and dead-letter text as legacy for every message."""
    d, legacy = run_batch(values, keys, limits)
    rejected = np.flatnonzero(d.reason != decode.OK)
    texts = dict(zip(rejected.tolist(), reasons(d, limits, rejected, values, keys), strict=True))
    for i, expected in enumerate(legacy):
        code = int(d.reason[i])
        if isinstance(expected, Reading):
            if code == decode.OK:
                assert_fields(d, i, expected)
            else:  # only where fastavro is laxer than the spec
                assert code in STRICTER and beyond_spec(values[i]), (i, code, values[i])
                assert texts[i].startswith("corrupt reading body: ")
        else:
            assert code != decode.OK, (i, values[i], keys[i], expected)
            assert same_text(texts[i], expected.reason), (i, values[i], keys[i], code)
    return d, legacy


# --- random valid records ------------------------------------------------------------

MACHINES = ["m-0001", "m-2", "", "機械-7", "pump🚀ü", "x" * 300, "m-\ufffd", "a\x00b", "Ω" * 70]


def random_record(rng: random.Random, wild: bool = True) -> dict:
    """A record of the schema; ``wild`` adds values that validation rejects."""
    now = now_ms()
    ts = [
        RECORD["ts"], rng.randrange(946_684_800_000, now), 946_684_800_000,
        now + 6 * 86_400_000,
    ]  # fmt: skip
    values = [None, rng.gauss(0, 300), 0.0, -0.0, 5e-324, rng.uniform(-1e308, 1e308)]
    if wild:
        ts += [946_684_800_000 - 1, now + 8 * 86_400_000, 0, -(2**63), 2**63 - 1]
        values += [math.nan, math.inf, -math.inf, 1e6, -1e6]
    return {
        "machine_id": rng.choice(MACHINES)
        if rng.random() < 0.8
        else "".join(chr(rng.randrange(1, 0x2FFFF)) for _ in range(rng.randrange(12)))
        .encode("utf-8", "ignore")
        .decode(),  # no lone surrogates
        "ts": rng.choice(ts),
        "sensor_type": rng.choice(SENSORS if wild else SENSORS[:-1]),
        "value": rng.choice(values),
        "status_code": rng.choice([0, 1, -1, 2**31 - 1, -(2**31), rng.randrange(-(2**31), 2**31)]),
        "seq": rng.choice([0, 1, 300, 2**63 - 1, -(2**63), rng.randrange(-(2**63), 2**63)]),
    }


def test_round_trip_matches_fastavro():
    rng = random.Random(7)
    records = [random_record(rng) for _ in range(3000)]
    values = [READING.encode(r) for r in records]
    keys = [r["machine_id"].encode() if i % 2 else None for i, r in enumerate(records)]
    d = decode_batch(values, keys)
    for i, (data, rec) in enumerate(zip(values, records, strict=True)):
        expected = decode.UNKNOWN_SENSOR if rec["sensor_type"] == "unknown" else decode.OK
        assert d.reason[i] == expected, (i, rec)
        assert_fields(d, i, READING.decode(data))  # fastavro's reading of the bytes
    # the simulator's hand-written encoder writes the same bytes
    simulator = ReadingEncoder()
    assert [simulator.encode(r) for r in records] == values


def test_hashes_are_a_function_of_the_machine_id():
    rng = random.Random(3)
    records = [random_record(rng) for _ in range(500)]
    d = decode_batch([READING.encode(r) for r in records], [None] * len(records))
    by_name: dict[str, int] = {}
    for i, r in enumerate(records):
        assert by_name.setdefault(r["machine_id"], int(d.machine_hash[i])) == d.machine_hash[i]
    assert len(set(by_name.values())) == len(by_name)


# --- every rejection, in legacy's words ---------------------------------------------

CHAOS = {"run_id": "r", "event_id": 1, "kind": "spike", "machine_id": "m-0001",
         "sensor_type": None, "start_ts": 1, "end_ts": 2, "magnitude": None, "source": "chaos",
         "detail": None}  # fmt: skip
FAR_FUTURE = now_ms() + 30 * 86_400_000
HEAD = zigzag(6) + b"m-0001" + zigzag(RECORD["ts"])  # machine_id and ts of RECORD

ELEVEN_BYTE_ZERO = b"\x80" * 10 + b"\x00"

CASES = [
    (None, None, decode.NOT_SINGLE_OBJECT),
    (b"", b"m-0001", decode.NOT_SINGLE_OBJECT),
    (READING.header[:9], None, decode.NOT_SINGLE_OBJECT),
    (b"\xc3\x02" + enc()[2:], None, decode.NOT_SINGLE_OBJECT),
    (b"garbage that is long enough", None, decode.NOT_SINGLE_OBJECT),
    (codec_for("chaos_event").encode(CHAOS), b"m-0001", decode.WRONG_SCHEMA),
    (b"\xc3\x01" + b"\x00" * 8 + enc()[10:], None, decode.WRONG_SCHEMA),
    (READING.header, None, decode.CORRUPT),
    (enc()[:-1], None, decode.CORRUPT),
    (enc(value=None)[:-2], None, decode.CORRUPT),
    (enc()[:-3], None, decode.CORRUPT),  # inside the double
    (body(zigzag(-1), b"m-0001"), None, decode.CORRUPT),  # negative string length
    (body(zigzag(60), b"m-0001"), None, decode.CORRUPT),  # string past the end
    (body(b"\x80"), None, decode.CORRUPT),  # the record ends inside a varint
    (body(zigzag(2), b"\xff\xfe", zigzag(1), b"\x00\x00\x00\x00"), None, decode.CORRUPT),
    (body(zigzag(3), b"\xed\xa0\x80", zigzag(1), b"\x00\x00\x00\x00"), None, decode.CORRUPT),
    (body(zigzag(2), b"\xc0\x80", zigzag(1), b"\x00\x00\x00\x00"), None, decode.CORRUPT),
    (body(HEAD, zigzag(12), b"\x00\x00\x00"), None, decode.CORRUPT),  # enum index past the end
    (body(HEAD, zigzag(0), zigzag(2), b"\x00\x00"), None, decode.CORRUPT),  # union branch 2
    (enc() + b"\x00", None, decode.TRAILING_BYTES),
    (enc() + b"\x01\x02\x03", b"m-0001", decode.TRAILING_BYTES),
    (enc(sensor_type="unknown"), b"m-0001", decode.UNKNOWN_SENSOR),
    (enc(sensor_type="unknown"), None, decode.UNKNOWN_SENSOR),
    (enc(), b"m-0002", decode.KEY_MISMATCH),
    (enc(), b"", decode.KEY_MISMATCH),
    (enc(), b"m-\xff\xfe", decode.KEY_MISMATCH),
    (enc(sensor_type="unknown"), b"m-9", decode.KEY_MISMATCH),  # the key is checked first
    (enc(ts=946_684_800_000 - 1), b"m-0001", decode.BAD_TIME),
    (enc(ts=FAR_FUTURE), b"m-0001", decode.BAD_TIME),
    (enc(ts=-5, value=math.nan), b"m-0001", decode.BAD_TIME),  # time is checked first
    (enc(value=math.nan), b"m-0001", decode.NOT_FINITE),
    (enc(sensor_type="flow", value=-math.inf), b"m-0001", decode.NOT_FINITE),  # no range needed
    (enc(value=1000.5), b"m-0001", decode.OUT_OF_RANGE),
    (enc(value=-100.25), b"m-0001", decode.OUT_OF_RANGE),
    (enc(sensor_type="vibration", value=-0.5), b"m-0001", decode.OUT_OF_RANGE),
    (enc(sensor_type="pressure", value=2e3 + 1), b"m-0001", decode.OUT_OF_RANGE),
    (enc(sensor_type="battery", value=-1e-300), b"m-0001", decode.OUT_OF_RANGE),
    (enc(machine_id="", value=None), b"", decode.BAD_ID),
    (enc(machine_id="m\x00-1"), b"m\x00-1", decode.BAD_ID),  # PostgreSQL refuses NUL
    (enc(machine_id="m-1\n"), b"m-1\n", decode.BAD_ID),
    (enc(machine_id="x" * 129), b"x" * 129, decode.BAD_ID),
    (enc(machine_id="\x00", ts=5), None, decode.BAD_ID),  # the id is checked first
    (enc(), None, decode.NULL_KEY),
    (enc(ts=5), None, decode.NULL_KEY),  # the key is checked before the time
]
CASE_IDS = [f"{i}-{decode.REASON_NAMES[code]}" for i, (*_, code) in enumerate(CASES)]
ACCEPTED = [
    (enc(), b"m-0001"),
    (enc(value=None), b"m-0001"),
    (enc(value=1000.0), b"m-0001"),  # bounds are inclusive
    (enc(sensor_type="vibration", value=0.0), b"m-0001"),
    (enc(sensor_type="pressure", value=-1e300), b"m-0001"),  # no lower bound
    (enc(sensor_type="flow", value=1e300), b"m-0001"),  # no range at all
    (enc(sensor_type="generic", value=-1e300), b"m-0001"),  # a value of unknown unit
    (enc(ts=946_684_800_000), b"m-0001"),
    (body(HEAD, zigzag(0), zigzag(0), b"\x80\x00", b"\x06"), b"m-0001"),  # 2-byte zero: allowed
    (body(HEAD, zigzag(0), zigzag(0), b"\x00", b"\xff" * 9 + b"\x7f"), b"m-0001"),  # 10th byte
    (enc(machine_id="x" * 128), b"x" * 128),  # the longest id
    (enc(machine_id="Ω" * 64), "Ω".encode() * 64),  # 128 bytes
]


@pytest.mark.parametrize(("value", "key", "code"), CASES, ids=CASE_IDS)
def test_every_rejection_has_its_code_and_the_legacy_text(value, key, code):
    d, (legacy,) = run_batch([value], [key])
    assert d.reason.tolist() == [code], decode.REASON_NAMES[int(d.reason[0])]
    assert reasons(d, LIMITS, [0], [value], [key]) == [legacy.reason]
    if code <= decode.KEY_MISMATCH:  # a decode reason: the same text without a Validator
        assert decode.reason_text(code, value, key) == legacy.reason


@pytest.mark.parametrize(("value", "key"), ACCEPTED, ids=lambda x: "")
def test_what_legacy_accepts_is_accepted_with_its_fields(value, key):
    d, (legacy,) = run_batch([value], [key])
    assert isinstance(legacy, Reading) and d.reason.tolist() == [decode.OK]
    assert_fields(d, 0, legacy)


@pytest.mark.parametrize(
    ("value", "code", "fastavro_reads"),
    [
        # fastavro indexes the symbols with -2: the last but one sensor
        (body(HEAD, zigzag(-2), zigzag(0), b"\x00\x00"), decode.BAD_ENUM, "generic"),
        (body(HEAD, zigzag(-12), zigzag(0), b"\x00\x00"), decode.BAD_ENUM, "temperature"),
        (body(HEAD, zigzag(0), zigzag(-1), b"\x00" * 8, b"\x00\x00"), decode.BAD_UNION, 0.0),
        (body(HEAD, zigzag(0), zigzag(-2), b"\x00\x00"), decode.BAD_UNION, None),
        (body(HEAD, zigzag(0), zigzag(0), b"\x00", ELEVEN_BYTE_ZERO), decode.OVERLONG_VARINT, 0),
        (body(HEAD, zigzag(0), zigzag(0), zigzag(2**31), b"\x00"), decode.INT_OVERFLOW, 2**31),
    ],
)
def test_stricter_than_fastavro_where_it_reads_nonsense(value, code, fastavro_reads):
    legacy = Validator(LIMITS).check(value, b"m-0001", "r")
    assert isinstance(legacy, Reading)  # what legacy let through
    assert fastavro_reads in (legacy.sensor_type, legacy.value, legacy.seq, legacy.status_code)
    d, _ = run_batch([value], [b"m-0001"])
    assert d.reason.tolist() == [code]
    (text,) = reasons(d, LIMITS, [0], [value], [b"m-0001"])
    assert text.startswith("corrupt reading body: ") and text != "corrupt reading body: None"


def test_enum_index_minus_one_is_rejected_with_legacy_text():
    value = body(HEAD, zigzag(-1), zigzag(0), b"\x00\x00")  # fastavro: 'unknown'
    d, (legacy,) = run_batch([value], [b"m-0001"])
    assert d.reason.tolist() == [decode.BAD_ENUM]
    texts = reasons(d, LIMITS, [0], [value], [b"m-0001"])
    assert texts == [legacy.reason] == ["unknown sensor type"]


def test_a_key_that_is_not_utf8_is_compared_as_legacy_decodes_it():
    # legacy decodes the key with errors="replace": b"m-\xff" reads "m-\ufffd"
    values = [enc(machine_id="m-\ufffd"), enc(machine_id="m-\ufffd"), enc(machine_id="m-x")]
    keys = [b"m-\xff", b"m-\xff\xff", b"m-\xff"]
    d, _ = compare_with_legacy(values, keys)
    assert d.reason.tolist() == [decode.OK, decode.KEY_MISMATCH, decode.KEY_MISMATCH]
    d, _ = compare_with_legacy([enc(machine_id="\ufffd", sensor_type="unknown")], [b"\x80"])
    assert d.reason.tolist() == [decode.UNKNOWN_SENSOR]


def test_validate_batch_leaves_decode_rejections_alone():
    values = [None, enc(value=math.nan, ts=0)[:-1], enc(sensor_type="unknown", ts=0), enc(ts=0)]
    d = decode_batch(values, [b"m-0001"] * 4)
    validate_batch(d, LIMITS, now_ms())
    assert d.reason.tolist() == [
        decode.NOT_SINGLE_OBJECT, decode.CORRUPT, decode.UNKNOWN_SENSOR, decode.BAD_TIME
    ]  # fmt: skip


def test_an_empty_batch_and_a_batch_of_nones():
    d = decode_batch([], [])
    validate_batch(d, LIMITS, now_ms())
    assert len(d) == 0 and MachineTable().intern(d).size == 0
    d = decode_batch([None, None], (None, b"m-1"))
    validate_batch(d, LIMITS, now_ms())
    assert d.reason.tolist() == [decode.NOT_SINGLE_OBJECT] * 2
    assert MachineTable().intern(d).tolist() == [-1, -1]


def test_max_future_is_measured_from_the_given_clock():
    now = 1_800_000_000_000
    lim = Limits(max_future_s=60.0)
    d = decode_batch([enc(ts=now + 60_000), enc(ts=now + 60_001)], [b"m-0001"] * 2)
    validate_batch(d, lim, now)
    assert d.reason.tolist() == [decode.OK, decode.BAD_TIME]


# --- fuzz: every message against legacy ---------------------------------------------


def fuzz_messages(seed: int, n: int = 4000) -> tuple[list, list]:
    rng = random.Random(seed)
    valid = [READING.encode(random_record(rng, rng.random() < 0.3)) for _ in range(n // 4)]
    values: list[bytes | None] = list(valid)
    for data in valid[:15]:  # every truncation
        values += [data[:k] for k in range(len(data))]
    for _ in range(n // 8):  # random bytes, bare and behind the reading header
        junk = rng.randbytes(rng.randrange(40))
        values += [junk, READING.header + junk]
    for _ in range(n // 2):  # bit flips and byte changes, mostly in the body
        data = bytearray(rng.choice(valid))
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            pos = rng.randrange(len(data)) if rng.random() < 0.1 else rng.randrange(10, len(data))
            if rng.random() < 0.7:
                data[pos] ^= 1 << rng.randrange(8)
            else:
                data[pos] = rng.randrange(256)
        values.append(bytes(data))
    for _ in range(n // 20):
        values.append(rng.choice(valid) + rng.randbytes(rng.randrange(1, 6)))
        chaos = codec_for(rng.choice(["chaos_event", "clean_reading", "alert"]))
        values.append(chaos.encode(CHAOS) if chaos.name == "chaos_event" else chaos.header)
        values.append(None)
    rng.shuffle(values)
    keys = []
    for v in values:
        try:
            right = READING.decode(v)["machine_id"].encode()
        except Exception:
            right = b"m-0001"
        keys.append(rng.choice([None, right, right, right, b"m-0002", b"", right + b"\xff"]))
    return values, keys


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fuzz_decisions_fields_and_texts_match_legacy(seed):
    values, keys = fuzz_messages(seed)
    d, legacy = compare_with_legacy(values, keys)
    # the fuzz reached every decode outcome, and the stricter ones
    seen = set(d.reason.tolist())
    assert {decode.OK, decode.NOT_SINGLE_OBJECT, decode.WRONG_SCHEMA, decode.CORRUPT,
            decode.TRAILING_BYTES, decode.UNKNOWN_SENSOR, decode.KEY_MISMATCH, decode.BAD_TIME,
            decode.NOT_FINITE, decode.OUT_OF_RANGE, decode.BAD_ID,
            decode.NULL_KEY} <= seen  # fmt: skip
    assert seen & STRICTER
    assert sum(isinstance(r, Reading) for r in legacy) > len(values) / 20


# --- machine interning --------------------------------------------------------------


def test_interning_is_stable_across_batches_and_checkpoints():
    table = MachineTable()
    names1 = ["m-b", "m-a", "m-b", "機械", "m-a"]
    d1 = decode_batch([enc(machine_id=m) for m in names1] + [b"junk"], [None] * 6)
    assert table.intern(d1).tolist() == [0, 1, 0, 2, 1, -1]
    names2 = ["m-c", "機械", "m-b", "m-c"]
    d2 = decode_batch([enc(machine_id=m) for m in names2], [None] * 4)
    assert table.intern(d2).tolist() == [3, 2, 0, 3]
    assert table.names == ["m-b", "m-a", "機械", "m-c"]

    restored = MachineTable.from_arrays(table.arrays())
    assert restored.names == table.names
    assert restored.intern(d2).tolist() == [3, 2, 0, 3]
    restored.keep(np.array([2, 0]))
    assert restored.names == ["機械", "m-b"]
    assert restored.intern(d2).tolist() == [2, 0, 1, 2]


def test_interning_never_merges_machines_whose_hashes_collide():
    names = ["m-1", "m-2", "m-1", "m-3", "m-2"]
    d = decode_batch([enc(machine_id=m) for m in names], [None] * 5)
    d.machine_hash[:] = 42  # every machine on one hash
    table = MachineTable()
    ids = table.intern(d)
    assert [table.names[i] for i in ids] == names
    assert ids.tolist()[:3] == [0, 1, 0]


def test_interning_only_takes_rows_with_a_machine_id():
    d = decode_batch([b"junk", enc()], [None, None])
    with pytest.raises(ValueError, match="machine id"):
        MachineTable().intern(d, np.array([0, 1]))


# --- the pure-Python path -----------------------------------------------------------

_FIELDS = ["ts", "sensor", "value", "isnull", "status", "seq", "machine_start", "machine_len",
           "machine_hash", "reason"]  # fmt: skip
_SCRIPT = """
import json, sys
from workbench.processor import decode, kernels
from workbench.processor.validate import Limits, validate_batch
assert not kernels.JIT
msgs = json.load(sys.stdin)
values, keys = ([None if h is None else bytes.fromhex(h) for h in col] for col in msgs)
d = decode.decode_batch(values, keys)
validate_batch(d, Limits(ranges={"temperature": (-100.0, 1000.0)}), 1_800_000_000_000)
ids = decode.MachineTable().intern(d)
print(json.dumps({f: getattr(d, f).tolist() for f in %r} | {"ids": ids.tolist()}))
"""


def test_pure_python_path_gives_the_compiled_columns():
    values = [v for v, _, _ in CASES[:28]] + [v for v, _ in ACCEPTED]
    values += [enc(machine_id=m, value=None) for m in MACHINES]
    values.append(body(zigzag(10**6), b"m-1"))  # last: Python indexing past it would raise
    keys = [None if i % 3 else b"m-0001" for i in range(len(values))]
    env = os.environ | {"WORKBENCH_JIT": "0"}
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT % _FIELDS],
        input=json.dumps([[None if v is None else v.hex() for v in col] for col in (values, keys)]),
        capture_output=True, text=True, env=env, check=True, timeout=120,
    )  # fmt: skip
    python = json.loads(out.stdout)
    d = decode_batch(values, keys)
    validate_batch(d, Limits(ranges={"temperature": (-100.0, 1000.0)}), 1_800_000_000_000)
    assert python.pop("ids") == MachineTable().intern(d).tolist()
    for f in _FIELDS:
        np.testing.assert_array_equal(np.array(python[f], getattr(d, f).dtype), getattr(d, f), f)
    assert len(set(python["reason"])) >= 8


# --- real data ------------------------------------------------------------------------


def test_real_temperatures_decode_and_validate_as_legacy():
    path = DATA / "nab" / "machine_temperature_system_failure.csv"
    if not path.exists():
        pytest.skip(f"{path} is absent (see /work/shared/data/README.md)")
    lines = path.read_text().splitlines()[1:3001]
    temps = [float(line.split(",")[1]) for line in lines]
    hot = Limits(ranges={"temperature": (0.0, 100.0)})  # real readings on both sides
    rng = random.Random(5)
    values = [
        enc(machine_id=f"m-{i % 7}", value=t, seq=i, ts=RECORD["ts"] + 300_000 * i)
        for i, t in enumerate(temps)
    ]
    values = [v if rng.random() > 0.02 else v[: rng.randrange(len(v))] for v in values]
    keys = [f"m-{i % 7}".encode() for i in range(len(values))]
    d, _ = compare_with_legacy(values, keys, hot)
    assert (d.reason == decode.OK).sum() > 1000 and (d.reason == decode.OUT_OF_RANGE).sum() > 10
