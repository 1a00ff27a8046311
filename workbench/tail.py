"""``workbench tail TOPIC``: the pipeline's topics, decoded, one line per message.

The topics carry binary Avro (and, on the clean topic, possibly Arrow IPC batches), which
no console consumer can show. This module turns each message into a record, a flat dict
with the fields its schema has plus where it came from (``partition``, ``offset``), and
prints it as one compact line or one JSON object. A message that cannot be decoded
becomes a record that says why (``error``) with its first bytes, never an exception: a
tail that stops at the first bad message would hide exactly what one looks for.

Reading never disturbs the pipeline: the partitions are assigned to a reader that joins
no consumer group and commits nothing (:func:`workbench.kafka.make_reader`).

>>> from workbench.schemas import codec_for
>>> value = codec_for("reading").encode({"machine_id": "m-0001", "ts": 1_767_225_605_000,
...     "sensor_type": "temperature", "value": 54.25, "status_code": 0, "seq": 5})
>>> [record] = decode("raw", b"m-0001", value, [("run_id", b"r1")])
>>> record["sensor_type"], record["value"], record["run_id"]
('temperature', 54.25, 'r1')
>>> print(line("raw", record | {"partition": 2, "offset": 17}))
2:17    2026-01-01 00:00:05.000  r1  m-0001  temperature      54.25  status=0 seq=5
>>> print(line("raw", decode("raw", b"m-0001", b"junk", [("run_id", b"r1")])[0]))
-       r1  m-0001  UNDECODABLE not Avro single-object encoding (no C3 01 marker)  4 bytes b'junk'
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO, Any

from workbench import kafka
from workbench.config import Settings
from workbench.errors import ConfigError, WorkbenchError
from workbench.processor.batch import END_OF_RUN
from workbench.processor.writer import ARROW_STREAM
from workbench.schemas import DecodeError, codec_for

log = logging.getLogger(__name__)

#: The topics by their short names, in data-flow order.
KINDS = ("raw", "clean", "alerts", "deadletter", "chaos")
#: Bytes of a payload shown with a dead letter or an undecodable message.
PEEK = 32

Record = dict[str, Any]


def topic_for(settings: Settings, name: str) -> tuple[str, str]:
    """``(kind, topic)`` for a short name (``raw``) or a configured topic name
    (``telemetry.raw``); :class:`ConfigError` for anything else."""
    topics = dict(zip(KINDS, settings.topics, strict=True))
    if name in topics:
        return name, topics[name]
    for kind, topic in topics.items():
        if name == topic:
            return kind, topic
    choices = ", ".join(KINDS)
    raise ConfigError(
        "TOPIC", name, f"one of {choices}, or a topic name ({settings.topic_raw}, ...)"
    )


# --- decoding: bytes -> records ---------------------------------------------------------


def decode(kind: str, key: bytes | None, value: bytes | None, headers: list | None) -> list[Record]:
    """The records of one message of topic ``kind``: one, or one per reading of an Arrow
    batch on the clean topic. Never raises for bad bytes: the record then carries
    ``error`` (the reason) and the payload's first bytes."""
    head = _headers(headers)
    value = value or b""
    base: Record = {"run_id": head.get("run_id"), "machine_id": _text(key)}
    if kind == "deadletter":
        return [_dead_letter(base, head, value)]
    if kind == "raw" and head.get("control") == END_OF_RUN.decode():
        return [base | {"control": head["control"]}]
    try:
        if kind == "clean" and head.get("content-type") == ARROW_STREAM.decode():
            return _arrow_rows(value)
        schema = {"raw": "reading", "clean": "clean_reading", "alerts": "alert",
                  "chaos": "chaos_event"}[kind]  # fmt: skip
        record = codec_for(schema).decode(value)
    except DecodeError as exc:
        return [base | {"error": str(exc)} | _peek(value)]
    # the body's fields win over the key's machine; raw readings carry no run in the body
    return [base | record]


def _headers(headers: list | None) -> dict[str, str]:
    return {name: _text(raw) or "" for name, raw in headers or ()}


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode(errors="backslashreplace")


def _peek(value: bytes) -> Record:
    """The payload's size and its first :data:`PEEK` bytes, as hex (lossless in JSON)."""
    return {"size": len(value), "payload": value[:PEEK].hex()}


def _dead_letter(base: Record, head: dict[str, str], value: bytes) -> Record:
    """A dead letter: why (header ``reason``), from where (``source``), the payload's first
    bytes, and the reading it holds when it is one (a value out of range is well formed)."""
    try:
        reading: Record | None = codec_for("reading").decode(value)
    except DecodeError:
        reading = None
    return base | {
        "sensor_type": reading["sensor_type"] if reading else None,
        "ts": reading["ts"] if reading else None,
        "reason": head.get("reason"),
        "source": head.get("source"),
        **_peek(value),
        "reading": reading,
    }


def _arrow_rows(value: bytes) -> list[Record]:
    """The readings of one Arrow IPC stream (``WORKBENCH_PUBLISH_CLEAN=batch``), their
    fields in the clean reading schema's order."""
    import pyarrow as pa  # only a clean topic in batch mode needs it

    try:
        table = pa.ipc.open_stream(value).read_all()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DecodeError(f"not an Arrow IPC stream: {exc}") from None
    order = [f for f in codec_for("clean_reading").field_names if f in table.column_names]
    order += [f for f in table.column_names if f not in order]
    return table.select(order).to_pylist()


# --- filtering ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    """Only records of this run, machine and sensor type (None: any). A record without
    the field (an undecodable message has no sensor) does not pass a filter on it."""

    run: str | None = None
    machine: str | None = None
    sensor: str | None = None

    def match(self, record: Record) -> bool:
        return all(
            want is None or record.get(name) == want
            for name, want in (("run_id", self.run), ("machine_id", self.machine),
                               ("sensor_type", self.sensor))
        )  # fmt: skip


# --- formatting: records -> lines --------------------------------------------------------


def line(kind: str, record: Record) -> str:
    """One compact, human-readable line: position, event time, run, machine, sensor, then
    what the topic adds."""
    where = f"{record['partition']}:{record['offset']}" if "partition" in record else "-"
    where = f"{where:<6}"  # most positions: the columns after it line up
    who = f"{record.get('run_id') or '-'}  {record.get('machine_id') or '-'}"
    if "error" in record:
        return f"{where}  {who}  UNDECODABLE {record['error']}  {_bytes(record)}"
    if "control" in record:
        return f"{where}  {who}  {record['control']}"
    sensor = f"{record.get('sensor_type') or '*':<11}"
    if kind == "deadletter":
        what, reading = who, record["reading"]
        if reading is not None:  # a well-formed reading the processor refused
            what = f"{_time(reading['ts'])}  {who}  {sensor} {_num(reading['value']):>10}"
        return (
            f"{where}  {what}  DEAD LETTER {record['reason']} (from {record['source']})  "
            f"{_bytes(record)}"
        )
    if kind == "alerts":
        r = record
        return (
            f"{where}  {_time(r['event_ts'])}  {who}  {sensor} {r['state'].upper()} {r['rule']} "
            f"({r['kind']}, {r['severity']})  value={_num(r['value'])} peak={_num(r['peak'])} "
            f"breaches={r['breaches']} since {_time(r['start_ts'])[11:]}"
        )
    if kind == "chaos":
        r = record
        extra = f" detail={r['detail']}" if r.get("detail") else ""
        return (
            f"{where}  {_time(r['start_ts'])}  {who}  {sensor} {r['kind']} until "
            f"{_time(r['end_ts'])[11:]}  magnitude={_num(r['magnitude'])} "
            f"source={r['source']}{extra}"
        )
    r = record  # a reading: raw or clean
    text = (
        f"{where}  {_time(r['ts'])}  {who}  {sensor} {_num(r['value']):>10}  "
        f"status={r['status_code']} seq={r['seq']}"
    )
    if kind == "clean":
        text += f" score={_num(r.get('score'))} rolling_1={_num(r.get('rolling_1'))} " + (
            f"rolling_2={_num(r.get('rolling_2'))}" + (" LATE" if r.get("late") else "")
        )
    return text


def _time(ms: int | None) -> str:
    if ms is None:
        return "-"
    when = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S.") + f"{ms % 1000:03d}"


def _num(x: float | None) -> str:
    return "null" if x is None else f"{x:.6g}"


def _bytes(record: Record) -> str:
    """``N bytes`` and the first of them: as text when they are printable (a replayed CSV
    line), else as hex."""
    head = bytes.fromhex(record["payload"])
    more = "..." if record["size"] > len(head) else ""
    try:
        text = head.decode()
    except UnicodeDecodeError:
        text = None
    shown = repr(head) if text is not None and text.isprintable() else head.hex()
    return f"{record['size']} bytes {shown}{more}"


def as_json(record: Record) -> str:
    """One JSON object: times as epoch ms like the schemas, payloads as hex, and a
    non-finite number as a string ("nan"), which JSON has no literal for."""
    return json.dumps(_finite(record))


def _finite(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    return x


# --- the loop ---------------------------------------------------------------------------


def tail(
    broker: kafka.Endpoint,
    kind: str,
    topic: str,
    emit: Callable[[Record], None],
    stop: threading.Event,
    from_beginning: bool = False,
    filters: Filters = Filters(),  # frozen: one shared default is safe
    max_records: int | None = None,
    flush: Callable[[], None] = lambda: None,
) -> int:
    """Read ``topic`` and ``emit`` each record that passes ``filters``, until ``stop`` is
    set or ``max_records`` were emitted; return how many were.

    Without ``from_beginning`` only messages that arrive after the start are shown. The
    embedded broker reports a partition's end at the start of its last record batch, so
    reading from "the end" would first show that batch again: a message read before its
    partition reached its true end (the fetch says so) that was written before the start
    is passed over. ``flush`` runs after each fetched batch, so a pipe sees lines at once.
    """
    started_ms = time.time() * 1000
    consumer, partitions = kafka.make_reader(broker, topic, from_beginning)
    at_end: set[int] = set()
    warned: set[str] = set()

    def records(msg: kafka.Message) -> list[Record]:
        err = msg.error()
        if err is not None:
            _on_error(err, msg.partition(), at_end, partitions, topic, warned)
            return []
        if not (from_beginning or msg.partition() in at_end) and msg.timestamp()[1] < started_ms:
            return []  # there before we started
        where = {"partition": msg.partition(), "offset": msg.offset()}
        return [where | r for r in decode(kind, msg.key(), msg.value(), msg.headers())
                if filters.match(r)]  # fmt: skip

    log.info(
        "following %s (%d partitions) from %s; Ctrl-C stops",
        topic, len(partitions), "the beginning" if from_beginning else "now on",
    )  # fmt: skip
    shown = 0
    try:
        while not stop.is_set() and shown != max_records:
            batch = [r for msg in consumer.consume(500, 0.2) for r in records(msg)]
            for record in batch[: None if max_records is None else max_records - shown]:
                emit(record)
                shown += 1
            flush()
    finally:
        consumer.close()
    return shown


def _on_error(
    err: kafka.KafkaError,
    partition: int,
    at_end: set[int],
    partitions: Iterable[int],
    topic: str,
    warned: set[str],
) -> None:
    """The end of a partition is noted (once every partition has been reached, what was
    there is shown and the rest is new); any other error is said once, or raised when
    nothing more can be read."""
    if err.code() == kafka.KafkaError._PARTITION_EOF:
        if partition not in at_end:
            at_end.add(partition)
            if at_end.issuperset(partitions):
                log.info("at the end of %s; waiting for new messages", topic)
        return
    if err.fatal():
        raise WorkbenchError(f"cannot read {topic}: {err.str()}")
    if err.str() not in warned:
        warned.add(err.str())
        log.warning("reading %s: %s", topic, err.str())


def printer(kind: str, as_json_lines: bool, out: IO[str]) -> Callable[[Record], None]:
    """What :func:`tail` emits with: one line (or JSON object) per record on ``out``."""

    def emit(record: Record) -> None:
        out.write((as_json(record) if as_json_lines else line(kind, record)) + "\n")

    return emit
