"""Anomaly labels of real data sets, turned into ground-truth events.

Two kinds of label source exist in the shipped data:

- a 0/1 **label column** (SKAB ``anomaly``, smoke ``Fire Alarm``), where a data set marks
  a whole fault or scenario as a contiguous block of 1s. Each block becomes *one* event
  (start = its earliest row's time, end = its latest), per machine, as a chaos injection
  would: a detector is scored per event, not per row (:class:`LabelBlocks`).
- a file of **anomaly windows** in the style of NAB (:func:`load_windows`): each window
  is one event, its labelled anomaly point kept as detail.

>>> blocks, rows = LabelBlocks(), [(1000, 0), (2000, 1), (3000, 1), (4000, 0), (5000, 1)]
>>> closed = [blocks.update("m1", label, ts, row=i, line=i + 2, seq=i)
...           for i, (ts, label) in enumerate(rows)]
>>> [(b.start_ts, b.end_ts, b.rows) for b in closed if b]  # closed by the 0 at row 3
[(2000, 3000, (1, 2))]
>>> [(b.start_ts, b.end_ts, b.rows) for b in blocks.close_all()]  # still open at the end
[(5000, 5000, (4, 4))]
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.simulator.mapping import MappingError, time_parser


@dataclass
class Block:
    """A run of labelled rows of one machine: times in epoch ms, rows 0-based data rows."""

    machine_id: str
    start_ts: int
    end_ts: int
    rows: tuple[int, int]
    lines: tuple[int, int]
    seqs: tuple[int, int]
    count: int = 1

    def detail(self, label_column: str) -> dict[str, Any]:
        return {
            "label_column": label_column,
            "rows": list(self.rows),
            "lines": list(self.lines),
            "seq": list(self.seqs),
            "labelled_rows": self.count,
        }


class LabelBlocks:
    """Turns one 0/1 label per row into blocks of consecutive 1s, tracked per machine.

    Rows of other machines in between do not break a machine's block (their labels are
    theirs); a row that could not be read does not either (its label is unknown).
    """

    def __init__(self) -> None:
        self._open: dict[str, Block] = {}

    def update(
        self, machine_id: str, labelled: bool, ts: int, row: int, line: int, seq: int
    ) -> Block | None:
        """Feed one row; return the block this row closed, if any."""
        block = self._open.get(machine_id)
        if labelled:
            if block is None:
                self._open[machine_id] = Block(machine_id, ts, ts, (row, row), (line, line),
                                               (seq, seq))  # fmt: skip
            else:
                block.start_ts, block.end_ts = min(block.start_ts, ts), max(block.end_ts, ts)
                block.rows, block.lines = (block.rows[0], row), (block.lines[0], line)
                block.seqs = (block.seqs[0], seq)
                block.count += 1
            return None
        return self._open.pop(machine_id, None)

    def close(self, machine_id: str) -> Block | None:
        """End a machine's open block (its recording session is over)."""
        return self._open.pop(machine_id, None)

    def close_all(self) -> list[Block]:
        """The blocks still open (the file ended inside them)."""
        blocks, self._open = list(self._open.values()), {}
        return blocks


@dataclass(frozen=True)
class Window:
    """One labelled anomaly window (epoch ms, inclusive), with its anomaly point if known."""

    start_ts: int
    end_ts: int
    point_ts: int | None = None


def load_windows(path: Path, data_file: Path, time_format: str = "iso") -> list[Window]:
    """Read anomaly windows from a JSON file.

    Layouts read: ``{"windows": [{"start", "end", "anomaly_point"?}, ...]}`` (the shipped
    NAB labels file); NAB's own ``combined_windows.json`` (``{"dir/file.csv": [[start,
    end], ...]}``, the entry whose key ends with the data file's name); or a bare list of
    ``[start, end]`` pairs. Times are ISO 8601 (naive: UTC) or in the mapping's format.
    """
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise MappingError(f"cannot read labels file {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise MappingError(f"labels file {path} is not valid JSON: {exc}") from None
    if isinstance(data, dict) and "windows" in data:
        items = data["windows"]
    elif isinstance(data, dict):
        keys = [k for k in data if k.replace("\\", "/").rsplit("/", 1)[-1] == data_file.name]
        if not keys:
            raise MappingError(f"labels file {path} has no windows for {data_file.name}")
        items = data[keys[0]]
    else:
        items = data
    parse = _parser(time_format)
    windows = []
    try:
        for item in items:
            if isinstance(item, dict):
                point = item.get("anomaly_point")
                start, end = parse(item["start"]), parse(item["end"])
                windows.append(Window(start, end, None if point is None else parse(point)))
            else:
                start, end = item
                windows.append(Window(parse(start), parse(end)))
    except (KeyError, TypeError, ValueError) as exc:
        raise MappingError(f"labels file {path}: cannot read window {item!r} ({exc})") from None
    return windows


def _parser(time_format: str) -> Callable[[Any], int]:
    own, iso = time_parser(time_format), time_parser("iso")

    def parse(value: Any) -> int:
        try:
            return own(str(value))
        except (ValueError, OverflowError):
            return iso(str(value))

    return parse


def iso_utc(ts_ms: int) -> str:
    """Epoch milliseconds as an ISO 8601 UTC time.

    >>> iso_utc(1386745200000)
    '2013-12-11T07:00:00Z'
    """
    d = dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=ts_ms)
    return d.isoformat(timespec="milliseconds" if ts_ms % 1000 else "seconds") + "Z"
