"""Nothing a producer can send stops the processor: poison messages are dead letters.

Unit tests of the intake (ids, keys, run id headers, oversized messages), then a fuzz of
more than 10,000 bad messages of every kind interleaved with good readings, through the
real broker and database: the processor keeps running, every good reading is stored once,
every bad message is a dead letter with a reason.
"""

from __future__ import annotations

import json
import random
import subprocess
import uuid

import psycopg
import pytest
from conftest import own_settings

from workbench import kafka
from workbench.processor.batch import Batch
from workbench.processor.decode import MachineTable
from workbench.processor.intake import MAX_DEAD_PAYLOAD, SKIPPED, Intake
from workbench.processor.loop import Processor
from workbench.processor.rules import load_rules
from workbench.producer import RecordProducer
from workbench.schemas import READING, codec_for

T0 = 1_767_225_600_000
GOOD = {"machine_id": "m-1", "ts": T0, "sensor_type": "temperature", "value": 21.5,
        "status_code": 0, "seq": 0}  # fmt: skip


def zigzag(n: int) -> bytes:
    z, out = (n << 1) ^ (n >> 63), bytearray()
    while True:
        b = z & 0x7F
        z >>= 7
        if z:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


class Message:
    """What a consumer hands over, for :meth:`Batch.from_messages`."""

    def __init__(self, offset: int, key: bytes | None, value: bytes | None, run: bytes) -> None:
        self._offset, self._key, self._value = offset, key, value
        self._headers = [("run_id", run)] if run else None

    def error(self):
        return None

    def headers(self):
        return self._headers

    def key(self):
        return self._key

    def value(self):
        return self._value

    def partition(self):
        return 0

    def offset(self):
        return self._offset

    def timestamp(self):
        return (1, T0)


def take(messages):
    rules = load_rules()
    intake = Intake(MachineTable(), rules.validation, "raw")
    batch = Batch.from_messages([Message(i, *m) for i, m in enumerate(messages)], "live")
    return intake.take(batch, T0 + 1000)


def test_ids_keys_and_run_headers_that_a_database_refuses_are_dead_letters():
    good = READING.encode(GOOD)
    nul = READING.encode(GOOD | {"machine_id": "m\x00-1"})
    messages = [
        (b"m-1", good, b"r"),
        (b"m\x00-1", nul, b"r"),  # PostgreSQL text refuses NUL
        (None, good, b"r"),  # no key
        (b"m-1", good, b"r\x00un"),  # a run id header with NUL
        (b"m-1", good, b"r\xff"),  # ... not UTF-8
        (b"m-1", good, b"r" * 200),  # ... too long
        (b"m-1", good, b""),  # no run id: the live run
    ]
    taken = take(messages)
    assert taken.valid.tolist() == [True, False, False, False, False, False, True]
    dead = {row[2]: row for row in taken.dead_letters}
    assert sorted(dead) == [1, 2, 3, 4, 5]
    assert dead[1][4] == "machine_id 'm\\x00-1' is not an id: it holds a control character"
    assert dead[2][4].startswith("no Kafka key")
    assert dead[3][3] == "r\\x00un" and "run_id header" in dead[3][4]  # storable as text
    assert dead[4][4].endswith("it is not UTF-8")
    assert dead[5][4].endswith("more than 128")
    assert all("\x00" not in row[3] + row[4] for row in taken.dead_letters)


def test_an_oversized_message_is_cut_to_fit_the_dead_letter_topic():
    huge = b"\x00" * 1_500_000
    taken = take([(b"k" * 5000, huge, b"r")])
    (row,) = taken.dead_letters
    assert len(row[6]) == MAX_DEAD_PAYLOAD and len(row[5]) == 1024
    assert "value of 1500000 bytes" in row[4] and "key of 5000 bytes" in row[4]


def test_an_operator_skips_a_message_whatever_it_holds():
    rules = load_rules()
    intake = Intake(MachineTable(), rules.validation, "raw", skip=[(0, 1)])
    good = READING.encode(GOOD)
    messages = [Message(i, b"m-1", good, b"r") for i in range(3)]
    taken = intake.take(Batch.from_messages(messages, "live"), T0 + 1000)
    assert taken.valid.tolist() == [True, False, True]
    ((_, partition, offset, _, reason, _, value),) = taken.dead_letters
    assert (partition, offset, reason, value) == (0, 1, SKIPPED, good)


def test_skip_takes_partition_colon_offset(tmp_path):
    from conftest import WORKBENCH, cli_env, isolated_settings

    settings = isolated_settings(tmp_path / "state")
    for bad in ("2", "a:1", "1:-3"):
        proc = subprocess.run([WORKBENCH, "process", "--skip", bad], env=cli_env(settings),
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert proc.returncode == 2 and "PARTITION:OFFSET" in proc.stderr, proc.stderr
    assert not (tmp_path / "state").exists()  # refused before anything started


def bad_messages(rng: random.Random, n: int) -> list[tuple[bytes | None, bytes | None, bytes]]:
    """``n`` messages of every kind of wrong, as (key, value, run id header)."""
    good = [READING.encode(GOOD | {"seq": i, "ts": T0 + i}) for i in range(50)]
    header = READING.header
    kinds = [
        lambda: (b"m-1", rng.randbytes(rng.randrange(60))),  # random bytes
        lambda: (b"m-1", header + rng.randbytes(rng.randrange(40))),  # behind the header
        lambda: (b"m-1", (g := rng.choice(good))[: rng.randrange(len(g))]),  # truncated
        lambda: (b"m-1", header + zigzag(3) + b"m-1" + zigzag(T0) + zigzag(-rng.randrange(1, 9))
                 + zigzag(0) + zigzag(0) + zigzag(0)),  # negative enum index
        lambda: (b"m-1", header + zigzag(3) + b"m-1" + zigzag(T0) + zigzag(40) + zigzag(0)
                 + zigzag(0) + zigzag(0)),  # enum index past the end
        lambda: ((i := "m\x00" + str(rng.randrange(9))).encode(),
                 READING.encode(GOOD | {"machine_id": i})),  # NUL in the id
        lambda: (b"m-\xff", header + zigzag(3) + b"m-\xff" + zigzag(T0) + zigzag(0) + zigzag(0)
                 + zigzag(0) + zigzag(0)),  # invalid UTF-8 in the id
        lambda: ((i := "m" * rng.randrange(129, 400)).encode(),
                 READING.encode(GOOD | {"machine_id": i})),  # an id too long
        lambda: (None, rng.choice(good)),  # no key
        lambda: (b"m-2", rng.choice(good)),  # the key of another machine
        lambda: (b"m-1", codec_for("alert").header + rng.randbytes(20)),  # another schema
        lambda: (b"m-1", READING.encode(GOOD | {"value": rng.choice(
            [float("nan"), float("inf"), -float("inf"), 1e300]), "seq": 7})),  # (temperature)
        lambda: (b"m-1", READING.encode(GOOD | {"ts": rng.choice([0, -1, 2**62])})),
        lambda: (b"m-1", None),  # no value at all
    ]  # fmt: skip
    out = [(*rng.choice(kinds)(), b"") for _ in range(n)]
    out += [(b"m-1", rng.choice(good), h) for h in (b"bad\x00run", b"\xfe\xff", b"x" * 300)]
    out += [(b"m-1", rng.randbytes(size), b"") for size in (1_100_000, 2_000_000)]  # 1-2 MB
    return out


@pytest.mark.slow
def test_ten_thousand_poison_messages_among_good_ones_stop_nothing(stack):
    base, endpoints = stack
    settings = own_settings(base, endpoints)
    run = f"poison-{uuid.uuid4().hex[:6]}"
    rng = random.Random(5)
    good = [(f"m-{m}", GOOD | {"machine_id": f"m-{m}", "seq": s, "ts": T0 + 1000 * s})
            for s in range(400) for m in range(4)]  # fmt: skip
    bad = bad_messages(rng, 10_000)
    # the poison goes first into every partition of the run, then between the good ones
    mixed: list[tuple[bytes | None, bytes | None, bytes]] = []
    for machine, rec in good:
        mixed.append((machine.encode(), READING.encode(rec), run.encode()))
    for item in bad:
        mixed.insert(rng.randrange(len(mixed) + 1), item)
    producer = kafka.make_producer(endpoints.broker, **{"message.max.bytes": 4 << 20})
    failed = []
    for key, value, run_header in mixed:
        headers = [("run_id", run_header or run.encode())]
        producer.produce(settings.topic_raw, value, key, headers=headers,
                         on_delivery=lambda err, _: err and failed.append(err))  # fmt: skip
        producer.poll(0)
    assert producer.flush(60) == 0 and not failed, failed[:3]
    with RecordProducer(endpoints.broker, settings.topic_raw, run) as p:
        p.end_of_run(f"m-{m}".encode() for m in range(4))

    processor = Processor(settings, endpoints.broker, endpoints.database_url)
    processor.run(idle_timeout_s=3)  # returns when idle: never raises on poison

    with psycopg.connect(endpoints.database_url) as conn:
        stored = conn.execute(
            "SELECT count(*), count(DISTINCT (machine_id, seq)) FROM readings WHERE run_id = %s",
            (run,),
        ).fetchone()
        dead = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE reason <> ''), max(octet_length(payload)) "
            "FROM dead_letters WHERE topic = %s",
            (settings.topic_raw,),
        ).fetchone()
    assert stored == (len(good), len(good))  # every good reading, once
    assert dead[0] == dead[1] == len(bad)  # every bad message, with a reason
    assert dead[2] == MAX_DEAD_PAYLOAD  # the 1-2 MB ones cut to fit


def test_rows_the_database_refuses_are_dead_lettered_and_the_rest_stored(stack, private_database):
    """A row that passes the validator but that the database refuses (here a CHECK an
    operator added) would fail its whole batch on every retry. The batch is split to find
    it; it becomes a dead letter with the database's reason, the rest is stored, and the
    processor goes on; a second delivery of the same batch adds nothing."""
    base, endpoints = stack
    pg, rec = private_database
    url = pg.url(rec)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER TABLE readings ADD CONSTRAINT no_seq_17 CHECK (seq <> 17)")
    settings = own_settings(base, endpoints)
    run = f"refused-{uuid.uuid4().hex[:6]}"
    good = [GOOD | {"machine_id": f"m-{m}", "seq": s, "ts": T0 + 1000 * s}
            for s in range(300) for m in range(4)]  # fmt: skip
    for _ in range(2):  # the second time: a redelivery, as after a crash before the commit
        with RecordProducer(endpoints.broker, settings.topic_raw, run) as p:
            for record in good:
                p.send(record)
    processor = Processor(settings, endpoints.broker, url)
    stats = processor.run(idle_timeout_s=3)
    assert stats.consumed == 2 * len(good)

    with psycopg.connect(url) as conn:
        stored = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE seq = 17) FROM readings WHERE run_id = %s",
            (run,),
        ).fetchone()
        dead = conn.execute(
            "SELECT reason, key, payload FROM dead_letters WHERE run_id = %s ORDER BY key", (run,)
        ).fetchall()
    assert stored == (len(good) - 4, 0)
    assert [bytes(key) for _, key, _ in dead] == [b"m-0", b"m-1", b"m-2", b"m-3"]
    for reason, key, payload in dead:
        assert "refused" in reason and "no_seq_17" in reason, reason
        row = json.loads(bytes(payload))
        assert (row["machine_id"], row["seq"], row["run_id"]) == (bytes(key).decode(), 17, run)
