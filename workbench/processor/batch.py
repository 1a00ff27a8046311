"""A poll batch as columns, and what processing one partition's share of it gives back.

The consume loop turns the messages of one ``consume()`` call into a :class:`Batch`: one
numpy array per field, one row per message, in the order the broker delivered them (offset
order within a partition). Decoding and validation fill in the reading fields and a reason
code per row; steps (:mod:`workbench.processor.steps`) then work on the valid rows of one
partition at a time and return a :class:`PartitionOutput`: column sets named after the
tables' columns, so a sink copies them without knowing the processor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from workbench.processor.decode import MAX_ID_BYTES
from workbench.processor.hysteresis import AlertEvent
from workbench.processor.validate import escaped, id_problem


@dataclass
class Rows:
    """The valid readings of one partition in one batch, in offset order."""

    offset: np.ndarray  # int64
    run: np.ndarray  # int64, index into the batch's run names
    machine: np.ndarray  # int64, index into the loop's MachineNames
    sensor: np.ndarray  # int64, index into the reading schema's sensor symbols
    seq: np.ndarray  # int64
    ts: np.ndarray  # int64, event time in epoch ms
    value: np.ndarray  # float64, NaN for a null
    isnull: np.ndarray  # bool
    status: np.ndarray  # int64

    def take(self, rows: np.ndarray | slice) -> Rows:
        return Rows(*(getattr(self, f)[rows] for f in _ROW_FIELDS))

    def __len__(self) -> int:
        return self.offset.size


_ROW_FIELDS = ("offset", "run", "machine", "sensor", "seq", "ts", "value", "isnull", "status")


@dataclass
class PartitionOutput:
    """What one partition's share of a batch produced, as column sets per table.

    ``readings``, ``windows`` and ``sensor_stats`` are dicts of equal-length columns named
    after the columns of their tables (times as int64 epoch ms); ``alerts`` are the alert
    transitions with their run id, in the order they happened.
    """

    readings: list[dict[str, np.ndarray]] = field(default_factory=list)
    windows: list[dict[str, np.ndarray]] = field(default_factory=list)
    sensor_stats: list[dict[str, np.ndarray]] = field(default_factory=list)
    #: the promoted model's predictions per machine-minute (none without a model)
    predictions: list[dict[str, np.ndarray]] = field(default_factory=list)
    alerts: list[tuple[str, AlertEvent]] = field(default_factory=list)
    #: open windows and sensor statistics as of now: best effort, superseded by the next
    provisional: list[dict[str, np.ndarray]] = field(default_factory=list)
    provisional_stats: list[dict[str, np.ndarray]] = field(default_factory=list)
    #: run ids whose end-of-run marker was processed on this partition
    ended: list[str] = field(default_factory=list)
    duplicates: int = 0
    #: readings of a run that arrived after its end-of-run marker (stored, late)
    after_end: int = 0


def concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One column set from several with the same columns (empty dict for none)."""
    parts = [p for p in parts if p and len(next(iter(p.values())))]
    if not parts:
        return {}
    if len(parts) == 1:
        return parts[0]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def rows_in(columns: dict[str, np.ndarray]) -> int:
    return len(next(iter(columns.values()))) if columns else 0


@dataclass
class Batch:
    """The messages of one ``consume()`` call as columns, in delivery order.

    ``values`` and ``keys`` stay Python bytes (the decoder joins them into one buffer);
    everything else is a numpy column. ``run`` indexes ``run_names`` (the ``run_id`` header,
    or the live run id for messages without one); ``control`` marks end-of-run markers.
    """

    values: list[bytes | None]
    keys: list[bytes | None]
    partition: np.ndarray
    offset: np.ndarray
    run: np.ndarray
    run_names: list[str]
    control: np.ndarray
    created_ms: np.ndarray
    #: why a run's ``run_id`` header cannot be a run id, by run code: its messages are
    #: dead letters (its name in ``run_names`` is escaped, to be stored as their run id)
    run_problems: dict[int, str] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return self.offset.size

    @classmethod
    def from_messages(cls, messages: list, live_run: str, errors: list | None = None) -> Batch:
        """Columns of the messages that carry data; error events (end of partition and the
        like) are left out, or appended to ``errors`` when given.

        One pass per field (a comprehension costs a fraction of a loop body's per-element
        overhead), and the headers read once per distinct header list: the messages of a
        batch nearly all carry the same run id.
        """
        if any(m.error() is not None for m in messages):
            if errors is not None:
                errors += [m.error() for m in messages if m.error() is not None]
            messages = [m for m in messages if m.error() is None]
        headers = [m.headers() for m in messages]
        names: dict[bytes, int] = {}
        runs = np.empty(len(messages), np.int64)
        control = np.zeros(len(messages), np.bool_)
        last, last_code, last_marker = None, -1, False
        for i, h in enumerate(headers):
            if h != last:
                last, last_code, last_marker = h, *_run_of(h, names)
            runs[i] = last_code
            control[i] = last_marker
        run_names, problems = [], {}
        for code, name in enumerate(names):  # in code order
            text, problem = _run_name(name)
            run_names.append(text or live_run)
            if problem:
                problems[code] = f"run_id header {text!r} is not an id: {problem}"
        return cls(
            [m.value() for m in messages],
            [m.key() for m in messages],
            np.array([m.partition() for m in messages], np.int64),
            np.array([m.offset() for m in messages], np.int64),
            runs,
            run_names,
            control,
            np.array([m.timestamp()[1] for m in messages], np.int64),
            problems,
        )

    def next_offsets(self) -> dict[int, int]:
        """Per partition: the offset after its last message in the batch."""
        out: dict[int, int] = {}
        if not self.size:
            return out
        for p in np.unique(self.partition).tolist():
            out[p] = int(self.offset[self.partition == p].max()) + 1
        return out


#: The header value of an end-of-run control message.
END_OF_RUN = b"end-of-run"


def _run_name(raw: bytes) -> tuple[str, str | None]:
    """A run id header as text, and why it cannot be a run id (None if it can). A bad one
    comes back with its control characters and undecodable bytes escaped, cut to
    MAX_ID_BYTES characters: storable, and recognisable in a dead letter."""
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        return escaped(raw.decode(errors="backslashreplace"), MAX_ID_BYTES), "it is not UTF-8"
    problem = id_problem(text) if text else None
    return (escaped(text, MAX_ID_BYTES) if problem else text), problem


def _run_of(headers: list | None, names: dict[bytes, int]) -> tuple[int, bool]:
    """(run code, is an end-of-run marker) of one message's headers."""
    run, marker = b"", False
    for name, value in headers or ():
        if name == "run_id":
            run = value or b""
        elif name == "control" and value == END_OF_RUN:
            marker = True
    code = names.get(run)
    if code is None:
        code = names[run] = len(names)
    return code, marker
