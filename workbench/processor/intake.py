"""A batch's messages in: decoded, validated, split into dead letters, end-of-run markers and
each partition's valid readings.

>>> # intake = Intake(MachineTable(), limits, "telemetry.raw")
>>> # taken = intake.take(batch, now_ms)
>>> # rows, markers = taken.partition(0)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workbench.processor.batch import Batch, Rows
from workbench.processor.decode import OK, Decoded, MachineTable, decode_batch
from workbench.processor.validate import Limits, reasons, validate_batch


@dataclass
class Taken:
    """One batch after intake: its valid readings as columns, with where they came from."""

    batch: Batch
    decoded: Decoded
    valid: np.ndarray  # bool per message: a reading to process
    machine: np.ndarray  # machine id per message (-1 where not valid)
    dead_letters: list[tuple]

    def partition(self, p: int) -> tuple[Rows, list[tuple[int, str]]]:
        """The valid readings of partition ``p`` in offset order, and its end-of-run markers
        as (offset, run id)."""
        b, d = self.batch, self.decoded
        here = b.partition == p
        rows = np.flatnonzero(here & self.valid)
        if rows.size > 1 and (np.diff(b.offset[rows]) < 0).any():
            rows = rows[np.argsort(b.offset[rows], kind="stable")]
        markers = [(int(b.offset[i]), b.run_names[b.run[i]])
                   for i in np.flatnonzero(here & b.control).tolist()]  # fmt: skip
        return Rows(
            offset=b.offset[rows], run=b.run[rows], machine=self.machine[rows].astype(np.int64),
            sensor=d.sensor[rows].astype(np.int64), seq=d.seq[rows], ts=d.ts[rows],
            value=d.value[rows], isnull=d.isnull[rows], status=d.status[rows].astype(np.int64),
        ), markers  # fmt: skip


class Intake:
    """Decode and validate batches; machines interned in one table for the whole process."""

    def __init__(self, machines: MachineTable, limits: Limits, topic: str) -> None:
        self.machines = machines
        self.limits = limits
        self.topic = topic

    def take(self, batch: Batch, now_ms: int) -> Taken:
        decoded = decode_batch(batch.values, batch.keys)
        validate_batch(decoded, self.limits, now_ms)
        valid = (decoded.reason == OK) & ~batch.control
        machine = self.machines.intern(decoded, np.flatnonzero(valid))
        bad = np.flatnonzero((decoded.reason != OK) & ~batch.control)
        dead: list[tuple] = []
        if bad.size:
            texts = reasons(decoded, self.limits, bad, batch.values, batch.keys)
            for i, text in zip(bad.tolist(), texts, strict=True):
                dead.append((self.topic, int(batch.partition[i]), int(batch.offset[i]),
                             batch.run_names[batch.run[i]], text, batch.keys[i],
                             batch.values[i]))  # fmt: skip
        return Taken(batch, decoded, valid, machine, dead)
