"""A CSV file of real sensor data read through a mapping: one parsed row, or one bad row, at a time.

:meth:`CsvSource.open` checks everything that can be checked up front (the file exists,
the mapping fits its header, the labels file is there), so that a replay fails before
it produces anything. :meth:`CsvSource.rows` then yields, for each data row, either a
:class:`Row` (machine, event time in epoch ms, label, one value per mapped sensor) or a
:class:`BadRow` (line number, reason, raw text): a bad row never stops the reading.

Parsing uses the C ``csv`` module and plain ``float``; there is no per-row regex.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "line3.csv"
>>> _ = path.write_text("t,temp,label\\n1700000000,20.5,0\\n1700000001,,1\\nsoon,21,0\\n")
>>> src = CsvSource.open(path, overrides=Overrides(time_column="t", time_format="unix_s",
...                      sensors=["temp=temperature"], label_column="label"))
>>> for r in src.rows():
...     print(r)
Row(line=2, index=0, machine_id='line3', ts=1700000000000, labelled=False, values=[20.5])
Row(line=3, index=1, machine_id='line3', ts=1700000001000, labelled=True, values=[None])
BadRow(line=4, index=2, machine_id='line3', reason="column 't': 'soon' is not a time (unix_s)", raw='soon,21,0\\n')
>>> import shutil; shutil.rmtree(path.parent)
"""  # noqa: E501

from __future__ import annotations

import csv
import hashlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

from workbench.simulator.labels import Window, load_windows
from workbench.simulator.mapping import Mapping, MappingError, Overrides, resolve, time_parser

log = logging.getLogger(__name__)


class Row(NamedTuple):
    """A data row that could be read (``index``: 0-based data row; ``line``: 1-based)."""

    line: int
    index: int
    machine_id: str
    ts: int
    labelled: bool
    values: list[float | None]


class BadRow(NamedTuple):
    """A data row that could not be read, with the reason and its raw text."""

    line: int
    index: int
    machine_id: str | None
    reason: str
    raw: str


#: The longest line (and field) read, in characters: a sensor file's lines are short, and a
#: file that is one huge line (a binary or sparse file) must not be read whole into memory.
MAX_LINE = 1 << 20


class _Tap:
    """Passes lines to the csv reader and keeps those of the current row (for bad rows);
    a line longer than :data:`MAX_LINE` is an error, not a memory blow-up."""

    def __init__(self, f: Any, path: Path) -> None:
        self.f, self.path, self.lines, self.number = f, path, [], 0

    def __iter__(self) -> _Tap:
        return self

    def __next__(self) -> str:
        line = self.f.readline(MAX_LINE + 1)
        if not line:
            raise StopIteration
        self.number += 1
        if len(line) > MAX_LINE:
            raise MappingError(f"{self.path}: line {self.number} is longer than {MAX_LINE} "
                               "characters: not a CSV file of sensor readings?")  # fmt: skip
        self.lines.append(line)
        return line


def _fields(reader: Any, tap: _Tap) -> Iterator[list[str]]:
    """The reader's rows; a row it cannot parse (a field over csv's limit) is an error
    naming the line."""
    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise MappingError(f"{tap.path}: line {tap.number}: {exc}") from None


@dataclass(frozen=True)
class CsvSource:
    """A CSV file with the mapping that reads it."""

    path: Path
    mapping: Mapping
    header: list[str]
    #: The mapping's machine id with ``{stem}`` and ``{parent}`` filled in.
    machine_id: str
    #: The label column, when the file has it (an optional one may be absent).
    label_column: str | None
    windows: list[Window]
    labels_path: Path | None = None

    @classmethod
    def open(
        cls, file: str | Path, mapping: str | Path | None = None, overrides: Overrides | None = None
    ) -> CsvSource:
        """Read the header and fit the mapping (named, detected, or made from ``overrides``)."""
        path = Path(file)
        if not path.is_file():
            raise MappingError(
                f"no such file: {path}" if not path.exists() else f"not a file: {path}"
            )
        overrides = overrides or Overrides()
        if overrides.labels_file:  # a labels file given as a flag is relative to the cwd
            overrides = replace(overrides, labels_file=str(Path(overrides.labels_file).resolve()))
        with open(path, encoding="utf-8-sig", errors="surrogateescape") as f:
            header_line = f.readline(MAX_LINE + 1)
        if len(header_line) > MAX_LINE:
            raise MappingError(f"{path}: the header line is longer than {MAX_LINE} characters: "
                               "not a CSV file of sensor readings?")  # fmt: skip
        header_line = header_line.rstrip("\r\n")
        if not header_line:
            raise MappingError(f"{path} is empty: no header line")
        m, header = resolve(path, header_line, mapping, overrides)
        machine_id = m.machine_id.replace("{stem}", path.stem)
        machine_id = machine_id.replace("{parent}", path.resolve().parent.name)
        if "{" in machine_id.replace("{session}", ""):
            raise MappingError(f"mapping {m.name}: machine_id {m.machine_id!r} has an unknown "
                               "placeholder (known: {stem}, {parent}, {session})")  # fmt: skip
        label_column = m.label_column if m.label_column in header else None
        if m.label_column and label_column is None:
            log.info("%s has no label column %r: no labels", path.name, m.label_column)
        windows: list[Window] = []
        labels = None
        if m.labels_file:
            labels = Path(m.labels_file.replace("{stem}", path.stem))
            labels = labels if labels.is_absolute() else path.parent / labels
            if labels.is_file():
                windows = load_windows(labels, path, m.time_format)
            elif m.labels_optional:
                log.warning("no labels file %s: replaying %s without labels", labels, path.name)
                labels = None
            else:
                raise MappingError(f"no labels file {labels} (mapping {m.name})")
        return cls(path, m, header, machine_id, label_column, windows, labels)

    @property
    def ignored_columns(self) -> list[str]:
        """Columns of the file that the mapping does not read."""
        used = {*self.mapping.columns(), self.mapping.label_column}
        return [c for c in self.header if c not in used]

    def params(self) -> dict[str, Any]:
        """What identifies this input, for the run registry."""
        with open(self.path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        return {"file": str(self.path.resolve()), "file_sha256": digest,
                "mapping": self.mapping.params(), "label_windows": len(self.windows)}  # fmt: skip

    def rows(self, limit: int | None = None) -> Iterator[Row | BadRow]:
        """Each data row (at most ``limit``), read or rejected; blank lines are skipped.

        The machine of a row is the mapping's constant, its machine column, or the
        session: a new one starts where the session counter does not increase. Only
        rows that could be read move the session on.
        """
        m = self.mapping
        col = {c: i for i, c in enumerate(self.header)}
        ncols, t_idx, parse_time = len(self.header), col[m.time_column], time_parser(m.time_format)
        sensors = [(col[s.column], repr(s.column), s.scale, s.offset,
                    (s.scale, s.offset) != (1.0, 0.0)) for s in m.sensors]  # fmt: skip
        label = col[self.label_column] if self.label_column else None
        session_idx = col[m.session_column] if m.session_column else None
        machine_idx = col[m.machine_column] if m.machine_column else None
        session, counter, count, name = 1, None, 0.0, ""
        machine = self.machine_id.replace("{session}", "1")
        index = 0
        with open(self.path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
            tap = _Tap(f, self.path)
            reader = csv.reader(tap, delimiter=m.separator)
            next(_fields(reader, tap), None)
            tap.lines = []
            for fields in _fields(reader, tap):
                lines, tap.lines = tap.lines, []
                if not fields:
                    continue
                if index == limit:
                    return
                line, reason, ts = reader.line_num - len(lines) + 1, None, 0
                if len(fields) != ncols:
                    reason = f"{len(fields)} fields, expected {ncols}"
                else:
                    try:
                        ts = parse_time(fields[t_idx])
                    except (ValueError, OverflowError):
                        reason = f"column {m.time_column!r}: {fields[t_idx]!r} is not a time ({m.time_format})"  # fmt: skip  # noqa: E501
                if reason is None and session_idx is not None:
                    try:
                        count = float(fields[session_idx])
                    except ValueError:
                        reason = f"column {m.session_column!r}: {fields[session_idx]!r} is not a number"  # fmt: skip  # noqa: E501
                if reason is None and machine_idx is not None:
                    name = fields[machine_idx].strip()
                    reason = None if name else f"column {m.machine_column!r} is empty"
                labelled = False
                if reason is None and label is not None and fields[label].strip():
                    try:
                        labelled = float(fields[label]) != 0
                    except ValueError:
                        reason = f"column {self.label_column!r}: {fields[label]!r} is not 0 or 1"
                values: list[float | None] = []
                for i, column, scale, offset, scaled in sensors if reason is None else ():
                    cell = fields[i]
                    try:
                        v: float | None = float(cell)
                    except ValueError:
                        if cell.strip():
                            reason = f"column {column}: {cell!r} is not a number"
                            break
                        v = None  # an empty cell: the sensor sent nothing
                    else:
                        if math.isnan(v):
                            v = None
                        elif math.isinf(v):
                            reason = f"column {column}: {cell!r} is not a finite number"
                            break
                        elif scaled:
                            v = v * scale + offset
                    values.append(v)
                if reason is not None:
                    key = machine
                    if machine_idx is not None:
                        key = fields[machine_idx].strip() if len(fields) > machine_idx else None
                    yield BadRow(line, index, key, reason, "".join(lines))
                elif session_idx is not None:
                    if counter is not None and count <= counter:
                        session += 1
                        machine = self.machine_id.replace("{session}", str(session))
                    counter = count
                    yield Row(line, index, machine, ts, labelled, values)
                else:
                    machine = name or machine
                    yield Row(line, index, machine, ts, labelled, values)
                index += 1
