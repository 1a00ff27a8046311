"""A batch's messages in: decoded, validated, split into dead letters, end-of-run markers and
each partition's valid readings.

>>> # intake = Intake(MachineTable(), limits, "telemetry.raw")
>>> # taken = intake.take(batch, now_ms)
>>> # rows, markers = taken.partition(0)
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from workbench.processor.batch import Batch, Rows
from workbench.processor.decode import OK, Decoded, MachineTable, decode_batch
from workbench.processor.validate import Limits, escaped, reasons, validate_batch


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

    def __init__(
        self,
        machines: MachineTable,
        limits: Limits,
        topic: str,
        skip: Collection[tuple[int, int]] = (),
    ) -> None:
        self.machines = machines
        self.limits = limits
        self.topic = topic
        #: (partition, offset) of messages an operator told the processor to skip
        self.skip = frozenset(skip)

    def take(self, batch: Batch, now_ms: int) -> Taken:
        decoded = decode_batch(batch.values, batch.keys)
        validate_batch(decoded, self.limits, now_ms)
        # messages refused whatever they hold: those of a run with a bad run id header (end
        # of run markers too), and those an operator skips
        refused: dict[int, str] = {}
        if batch.run_problems:
            for i in np.flatnonzero(np.isin(batch.run, list(batch.run_problems))).tolist():
                refused[i] = batch.run_problems[int(batch.run[i])]
        for p, o in self.skip:
            for i in np.flatnonzero((batch.partition == p) & (batch.offset == o)).tolist():
                refused[i] = SKIPPED
        whole = np.zeros(batch.size, np.bool_)
        whole[list(refused)] = True
        batch.control[whole] = False
        valid = (decoded.reason == OK) & ~batch.control & ~whole
        machine = self.machines.intern(decoded, np.flatnonzero(valid))
        bad = np.flatnonzero(((decoded.reason != OK) | whole) & ~batch.control)
        dead: list[tuple] = []
        if bad.size:
            rejected = bad[~whole[bad]]
            said = reasons(decoded, self.limits, rejected, batch.values, batch.keys)
            texts = dict(zip(rejected.tolist(), said, strict=True)) | refused
            for i in bad.tolist():
                dead.append(dead_letter(self.topic, int(batch.partition[i]), int(batch.offset[i]),
                                        batch.run_names[batch.run[i]], texts[i], batch.keys[i],
                                        batch.values[i]))  # fmt: skip
        return Taken(batch, decoded, valid, machine, dead)


#: The dead-letter reason of a message skipped by ``workbench process --skip``.
SKIPPED = "skipped by the operator (workbench process --skip PARTITION:OFFSET)"
#: The most of a rejected message's value a dead letter keeps (topic and table alike).
MAX_DEAD_PAYLOAD = 64 * 1024
#: ... and of its key.
MAX_DEAD_KEY = 1024


def dead_letter(
    topic: str, partition: int, offset: int, run: str, reason: str,
    key: bytes | None, value: bytes | None,
) -> tuple:  # fmt: skip
    """A dead-letter row: a value or key too large for the dead-letter topic (whose
    messages must fit the broker's limit, as the raw one did without headers) is cut, and
    the reason says how large it was.

    >>> dead_letter("raw", 0, 7, "r", "corrupt", b"k", bytes(70_000))[4:6]
    ('corrupt (value of 70000 bytes, the first 65536 kept)', b'k')
    """
    cut = []
    if value is not None and len(value) > MAX_DEAD_PAYLOAD:
        cut.append(f"value of {len(value)} bytes, the first {MAX_DEAD_PAYLOAD} kept")
        value = value[:MAX_DEAD_PAYLOAD]
    if key is not None and len(key) > MAX_DEAD_KEY:
        cut.append(f"key of {len(key)} bytes, the first {MAX_DEAD_KEY} kept")
        key = key[:MAX_DEAD_KEY]
    if cut:
        reason = f"{reason} ({'; '.join(cut)})"
    return (topic, partition, offset, escaped(run), escaped(reason), key, value)
