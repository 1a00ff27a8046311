"""What both database sinks share: the write entry point, its result, and the row-tuple
form of the per-reading processor (converted to columns on the way in)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Self

import numpy as np

from workbench.sinks.columns import Prepared, WriteBatch, WriteResult, prepare

#: Tables of a few big binary values each (checkpoints), written row by row.
BLOBS = ("processor_state", "processor_state_segments")
#: Deletes a checkpoint segment no checkpoint refers to any more.
DROP_SEGMENT = ("DELETE FROM processor_state_segments WHERE consumer_group = ? AND topic = ? "
                "AND partition = ? AND segment = ?")  # fmt: skip


class StoredCheckpoint(NamedTuple):
    """A partition's last checkpoint as stored: the offset it was taken at, the state, and
    the stored segments of it (by number; a few may be left over, unused)."""

    next_offset: int
    state: bytes
    segments: Mapping[int, bytes]


class SinkBase:
    """A database sink: stores a :class:`WriteBatch` in one transaction per call.

    Subclasses implement :meth:`_store`, which writes the batch's tables in one
    transaction and returns the rows each statement stored (inserted, or replaced by a
    newer version), by table name.
    """

    url: str

    def write(
        self, batch: WriteBatch | Sequence[Sequence[Any]] | None = None, /,
        *rows: Sequence[Sequence[Any]], **named: Sequence[Sequence[Any]],
    ) -> WriteResult:  # fmt: skip
        """Store one batch in one transaction: all of it or, on any error, none of it.

        ``write(batch)`` takes a :class:`WriteBatch`. The per-reading processor's form,
        ``write(readings, dead_letters, windows, alerts, checkpoints, sensor_stats)`` with
        row tuples (:data:`~workbench.sinks.columns.ROW_LAYOUTS`, positional or by name),
        is converted to one.
        """
        if not isinstance(batch, WriteBatch):
            batch = WriteBatch.from_rows(*(() if batch is None else (batch,)), *rows, **named)
        elif rows or named:
            raise TypeError("write(batch) takes a WriteBatch alone")
        stored = self._store(batch)
        readings = len(next(iter(batch.readings.values()))) if batch.readings else 0
        inserted, refused = stored.get("readings", 0), stored.get("refused", 0)
        return WriteResult(
            inserted,
            readings - inserted - refused,
            stored.get("dead_letters", 0) + refused,
            stored.get("window_stats", 0),
            stored.get("alerts", 0),
        )

    def write_chaos_events(self, events: Sequence[Sequence[Any]]) -> int:
        """Store ground-truth events (rows in the layout ``ROW_LAYOUTS["chaos_events"]``,
        times in epoch ms); return how many were new."""
        if not events:
            return 0
        return self._store(WriteBatch.from_rows(chaos_events=events)).get("chaos_events", 0)

    def _store(self, batch: WriteBatch) -> dict[str, int]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: The ``topic`` of a dead letter for a row the database refused (not a Kafka topic: the
#: row was made by the processor, from a message that the validator accepted).
REFUSED_TOPIC = "database:{table}"


def refusals(table: str, columns: Mapping[str, Any], refused: Mapping[int, str]) -> Prepared:
    """Dead letters for the rows of ``table`` the database refused: row index -> reason.

    Each keeps the row itself as JSON (``payload``) and its reason; its position, which a
    row has not, is a stable 63-bit hash of the row's identity, so that the same row
    refused again (a redelivered batch) is the same dead letter.

    >>> cols = {"run_id": ["r"], "machine_id": ["m-1"], "sensor_type": ["flow"], "seq": [7]}
    >>> refusals("readings", cols, {0: "value out of range"}).rows
    1
    """
    index = sorted(refused)
    rows = [{name: _plain(values[i]) for name, values in columns.items()} for i in index]
    payloads = [json.dumps(row, default=str).encode() for row in rows]
    identity = [
        "\x00".join(str(row.get(k)) for k in ("machine_id", "sensor_type", "seq", "ts"))
        for row in rows
    ]
    return prepare("dead_letters", {
        "topic": np.array([REFUSED_TOPIC.format(table=table)] * len(index), dtype=object),
        "partition": np.zeros(len(index), dtype=np.int32),
        "offset": np.array([_hash63(i.encode()) for i in identity], dtype=np.int64),
        "run_id": np.array([str(row.get("run_id")) for row in rows], dtype=object),
        "reason": np.array([f"the database refused this {table} row: {refused[i]}"
                            for i in index], dtype=object),
        "key": np.array([str(row.get("machine_id") or "").encode() for row in rows],
                        dtype=object),
        "payload": np.array(payloads, dtype=object),
    })  # fmt: skip


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _hash63(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big") >> 1
