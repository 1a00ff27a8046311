"""PostgreSQL's binary COPY format, built from columns with numpy: no Python per row.

The format (PostgreSQL docs, "COPY ... Binary Format"): a signature and two int32 (flags,
header extension), then per row an int16 field count and per field an int32 byte length
(-1 for NULL) followed by that many bytes, then an int16 -1. Every number is big-endian;
a ``timestamptz`` is int64 microseconds since 2000-01-01 UTC, a ``jsonb`` a version byte
(1) and the JSON text.

Rows whose fields have the same lengths (which fields are NULL, how long each text is) have
the same byte layout, so each such group is one numpy structured array whose fields are the
row's length words and values, filled a column at a time and dumped with ``tobytes``. Row
order does not matter to COPY (within a layout, rows keep their order). A batch of readings
has few layouts (text lengths repeat: a run id, a handful of machine-id and sensor lengths),
so the cost is a few numpy operations per column and layout. A batch of many layouts (texts
or bytes of many lengths: dead letters' payloads) is encoded row by row instead: per column
a list of per-row pieces, joined once.

>>> import numpy as np
>>> from workbench.sinks.columns import prepare
>>> text = lambda *values: np.array(values, dtype=object)
>>> t = prepare("processor_state", {"consumer_group": text("g", "g"),
...     "topic": text("raw", "chaos"), "partition": [0, 0], "next_offset": [7, 9],
...     "state": text(b"s", b"s")})
>>> names, data = encode(t)  # the topic's length varies: it goes last, and makes two layouts
>>> names, len(data), data[0][:6]
(['consumer_group', 'partition', 'next_offset', 'state', 'topic'], 4, b'PGCOPY')
"""

from __future__ import annotations

import functools
import itertools
import math
import struct

import numpy as np

from workbench.sinks.columns import Column, Prepared

__all__ = ["encode"]

HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)
#: 2000-01-01T00:00Z in epoch ms: PostgreSQL's timestamp origin.
PG_EPOCH_MS = 946_684_800_000

_BIG_ENDIAN = {"int8": ">i8", "int4": ">i4", "float8": ">f8", "bool": "u1", "timestamptz": ">i8"}
_NULL = struct.pack(">i", -1)
#: Above this, a text column's zero-padded table of distinct values (distinct values x the
#: longest) is too big to build: the batch is encoded row by row.
MAX_TABLE_BYTES = 1 << 24


class _Field:
    """One column's payloads and, per row, their byte lengths (-1 for NULL)."""

    def __init__(self, name: str, col: Column) -> None:
        self.name = name
        self.coded = not col.fixed
        self.null = col.null
        if col.fixed:
            self.dtype = np.dtype(_BIG_ENDIAN[col.kind])
            values = col.values
            if col.kind == "timestamptz":
                values = (values - PG_EPOCH_MS) * 1000
            self.values = values.astype(self.dtype)
            width = self.dtype.itemsize
            self.lengths = None if col.null is None else np.where(col.null, -1, width)
            self.constant = width if col.null is None else None
            return
        self.payloads = [b"\x01" + u if col.kind == "jsonb" else u for u in col.uniques]
        sizes = np.array([len(p) for p in self.payloads] + [-1], dtype=np.int64)
        self.values = col.values  # codes; -1 (NULL) picks the trailing size, -1
        self.lengths = sizes[col.values]
        low, high = (self.lengths.min(), self.lengths.max()) if len(col.values) else (0, 0)
        self.constant = int(low) if low == high else None
        self.longest = max(int(sizes.max()), 0)
        self.table_bytes = len(sizes) * self.longest

    @functools.cached_property
    def table(self) -> np.ndarray:
        """One row per distinct value, zero padded: a value's bytes are a slice of its row."""
        table = np.zeros((len(self.payloads) + 1, self.longest), dtype=np.uint8)
        for i, p in enumerate(self.payloads):
            table[i, : len(p)] = np.frombuffer(p, dtype=np.uint8)
        return table

    def payload(self, rows: np.ndarray | slice, length: int) -> np.ndarray:
        if self.coded:
            return self.table[self.values[rows], :length]
        return self.values[rows]

    def spec(self, i: int, length: int) -> list[tuple]:
        if length <= 0:  # NULL, or an empty text: the length word alone
            return [(f"l{i}", ">i4")]
        value = ("u1", (length,)) if self.coded else (self.dtype,)
        return [(f"l{i}", ">i4"), (f"v{i}", *value)]

    def pieces(self) -> list[bytes]:
        """Per row, the field's bytes: length word and value."""
        if self.coded:
            words = [struct.pack(">i", len(p)) + p for p in self.payloads] + [_NULL]
            return [words[c] for c in self.values.tolist()]
        packed = np.empty(len(self.values), dtype=[("l", ">i4"), ("v", self.dtype)])
        packed["l"] = self.dtype.itemsize
        packed["v"] = self.values
        data, size = packed.tobytes(), packed.itemsize
        out = [data[i : i + size] for i in range(0, len(data), size)]
        if self.null is not None:
            for i in np.flatnonzero(self.null).tolist():
                out[i] = _NULL
        return out


def encode(rows: Prepared) -> tuple[list[str], list[bytes]]:
    """The COPY column list and the binary COPY data of ``rows``, in pieces to send in
    order (the first holds the header, the last the trailer)."""
    fields = [_Field(name, col) for name, col in rows.columns.items()]
    # fields of one layout for every row first, then those that vary
    fields.sort(key=lambda f: f.constant is None)
    names = [f.name for f in fields]
    n = rows.rows
    # a layout costs a few numpy calls per column, a row by row ~1 us: layouts must be few
    layouts = _layouts([f for f in fields if f.constant is None], n, max(8, n // 100))
    if layouts is None or any(f.coded and f.table_bytes > MAX_TABLE_BYTES for f in fields):
        return names, [HEADER, _row_by_row(fields, n), TRAILER]
    chunks = [HEADER]
    for members, widths in layouts:
        width = {f.name: f.constant for f in fields if f.constant is not None} | widths
        spec: list[tuple] = [("count", ">i2")]
        for i, f in enumerate(fields):
            spec += f.spec(i, width[f.name])
        out = np.empty(n if isinstance(members, slice) else len(members), dtype=np.dtype(spec))
        out["count"] = len(fields)
        for i, f in enumerate(fields):
            out[f"l{i}"] = width[f.name]
            if width[f.name] > 0:
                out[f"v{i}"] = f.payload(members, width[f.name])
        chunks.append(out.tobytes())
    chunks.append(TRAILER)
    return names, chunks


def _row_by_row(fields: list[_Field], n: int) -> bytes:
    """The rows for a batch of many layouts: per field a list of per-row pieces, joined."""
    count = [struct.pack(">h", len(fields))] * n
    columns = [f.pieces() for f in fields]
    return b"".join(itertools.chain.from_iterable(zip(count, *columns, strict=True)))


def _layouts(
    varying: list[_Field], n: int, most: int
) -> list[tuple[np.ndarray | slice, dict[str, int]]] | None:
    """Groups of rows with the same field lengths: (rows, the lengths of ``varying`` by
    name); None for more than ``most`` groups."""
    if not varying or n == 0:
        return [(slice(None), {})] if n else []
    # one number per layout: the lengths (>= -1) as digits of a mixed-radix number
    radix = [int(f.lengths.max()) + 2 for f in varying]
    if math.prod(radix) >= 2**62:  # too many to number in an int64: surely too many
        return None
    key = np.zeros(n, dtype=np.int64)
    for f, r in zip(varying, radix, strict=True):
        key = key * r + (f.lengths + 1)
    order = np.argsort(key, kind="stable")  # stable: rows keep their order within a layout
    sorted_key = key[order]
    starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
    if len(starts) > most:
        return None
    groups = [slice(None)] if len(starts) == 1 else np.split(order, starts[1:])
    out = []
    for g in groups:
        first = 0 if isinstance(g, slice) else int(g[0])
        out.append((g, {f.name: int(f.lengths[first]) for f in varying}))
    return out
