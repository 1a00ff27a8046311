"""What both database sinks share: the write entry point, its result, and the row-tuple
form of the per-reading processor (converted to columns on the way in)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Self

from workbench.sinks.columns import WriteBatch, WriteResult

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
        inserted = stored.get("readings", 0)
        return WriteResult(
            inserted,
            readings - inserted,
            stored.get("dead_letters", 0),
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
