"""Column batches: what the processor hands the sinks, one set of columns per table.

A :class:`WriteBatch` holds, per table, equal-length arrays keyed by the table's own column
names (:mod:`workbench.sinks.schema`), so a sink copies columns without knowing the
processor. Conventions, the same for every table:

- times (``ts``, ``window_start``, ``closed_ts``, ...) are int64 epoch milliseconds;
- NULL is NaN in a float column, and in an integer or time column given as floats; a
  pyarrow array's nulls, a numpy masked array's mask and ``None`` in an object array are
  NULL too;
- text, bytes and JSON columns are numpy object arrays (or pyarrow arrays, dictionary
  encoded ones included); JSON values are Python objects (``["failure"]``);
- a column left out takes its server default, or NULL; a NOT NULL column without a default
  must be there.

:func:`prepare` checks a table's columns and turns each into a :class:`Column`: fixed-width
values with a NULL mask, or codes into the distinct values (a run id or a machine id repeats
thousands of times in a batch and is encoded once). Both sinks write from that form.

>>> import numpy as np
>>> text = lambda *values: np.array(values, dtype=object)
>>> t = prepare("readings", {
...     "run_id": text("r", "r"), "machine_id": text("m-1", "m-2"),
...     "sensor_type": text("vibration", "vibration"), "seq": np.array([0, 1]),
...     "ts": np.array([0, 1000]), "value": np.array([1.5, np.nan]), "status_code": [0, 0]})
>>> t.rows, t.columns["value"].null.tolist(), t.columns["machine_id"].uniques
(2, [False, True], (b'm-1', b'm-2'))
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa

from workbench.sinks import schema

if TYPE_CHECKING:
    import pyarrow as pa

# pyarrow (~40 MB resident) is imported only when a caller hands over Arrow data: the
# processor gives numpy columns and need not load it.

__all__ = [
    "ROW_LAYOUTS",
    "Column",
    "Prepared",
    "WriteBatch",
    "WriteResult",
    "encode",
    "kind_of",
    "prepare",
]

#: Kinds whose values have one width; the others (text, bytea, jsonb) vary per row.
FIXED = {"int8": np.int64, "int4": np.int32, "float8": np.float64, "bool": np.bool_,
         "timestamptz": np.int64}  # fmt: skip


def kind_of(column: sa.Column) -> str:
    """The PostgreSQL type name of a schema column (its binary COPY format).

    >>> kind_of(schema.readings.c.ts), kind_of(schema.alerts.c.detects)
    ('timestamptz', 'jsonb')
    """
    t = column.type
    for sa_type, kind in (
        (sa.BigInteger, "int8"), (sa.Integer, "int4"), (sa.Float, "float8"),
        (sa.Boolean, "bool"), (sa.DateTime, "timestamptz"), (sa.LargeBinary, "bytea"),
        (sa.JSON, "jsonb"), (sa.Text, "text"),
    ):  # fmt: skip
        if isinstance(t, sa_type):
            return kind
    raise TypeError(f"{column}: no column kind for {t!r}")


@dataclass(frozen=True)
class Column:
    """One column of a batch, checked and encoded for the sinks.

    Attributes
    ----------
    kind : str
        The PostgreSQL type (:func:`kind_of`).
    values : numpy.ndarray
        Fixed kinds: the values (times in epoch ms; anything under a NULL is 0). Text, bytea
        and jsonb: int32 codes into ``uniques``, -1 for NULL.
    null : numpy.ndarray or None
        True where the value is NULL; None when no value is.
    uniques : tuple of bytes
        Text, bytea and jsonb: the distinct values, as UTF-8 (JSON as its text).
    """

    kind: str
    values: np.ndarray
    null: np.ndarray | None = None
    uniques: tuple[bytes, ...] = ()

    @property
    def fixed(self) -> bool:
        return self.kind in FIXED

    def python(self) -> list[Any]:
        """The values as Python objects (None for NULL; times stay epoch ms; JSON as text)."""
        if not self.fixed:
            decode = (lambda b: b) if self.kind == "bytea" else bytes.decode
            table = np.array([*map(decode, self.uniques), None], dtype=object)
            return table[self.values].tolist()  # code -1 picks the trailing None
        if self.null is None:
            return self.values.tolist()
        out = self.values.astype(object)
        out[self.null] = None
        return out.tolist()


@dataclass(frozen=True)
class Prepared:
    """A table's columns from a batch, checked: every one of ``rows`` values."""

    table: sa.Table
    rows: int
    columns: Mapping[str, Column]

    def take(self, index: np.ndarray) -> Prepared:
        """The rows at ``index``, in that order."""
        cols = {
            name: Column(c.kind, c.values[index], _take(c.null, index), c.uniques)
            for name, c in self.columns.items()
        }
        return Prepared(self.table, len(index), cols)


def _take(null: np.ndarray | None, index: np.ndarray) -> np.ndarray | None:
    return None if null is None else null[index]


def prepare(table: str | sa.Table, columns: Mapping[str, Any]) -> Prepared:
    """Check the columns of one table (names, lengths, required columns) and encode them.

    Raises ValueError naming the table and column when a column is unknown, missing,
    of another length or of values its type cannot hold.
    """
    t = schema.metadata.tables[table] if isinstance(table, str) else table
    unknown = sorted(set(columns) - set(t.c.keys()))
    if unknown:
        raise ValueError(f"{t.name}: no column named {', '.join(unknown)}")
    missing = [c.name for c in t.columns if _required(c) and c.name not in columns]
    if missing:
        raise ValueError(f"{t.name}: missing column {', '.join(missing)} (NOT NULL, no default)")
    encoded: dict[str, Column] = {}
    rows = None
    for c in t.columns:  # in the table's order, whatever order they were given in
        if c.name not in columns:
            continue
        try:
            col = encode(kind_of(c), columns[c.name])
        except _encode_errors() as exc:
            raise ValueError(f"{t.name}.{c.name}: {exc}") from None
        if rows is None:
            rows = len(col.values)
        elif len(col.values) != rows:
            raise ValueError(f"{t.name}.{c.name}: {len(col.values)} values, expected {rows}")
        encoded[c.name] = col
    return Prepared(t, rows or 0, MappingProxyType(encoded))


def _required(c: sa.Column) -> bool:
    return not c.nullable and c.server_default is None


def encode(kind: str, data: Any) -> Column:
    """One column's values as a :class:`Column` of ``kind`` (see :func:`kind_of`).

    >>> encode("timestamptz", [5, None]).python()
    [5, None]
    >>> encode("text", np.array(["b", None, "a", "b"], object)).values.tolist()
    [0, -1, 1, 0]
    """
    if _is_arrow(data):
        return _from_arrow(kind, data)
    if kind in FIXED:
        return _fixed(kind, data)
    arr = data if isinstance(data, np.ndarray) else _objects(data)
    if arr.ndim != 1:
        raise ValueError(f"expected one dimension, got shape {arr.shape}")
    if kind == "jsonb":
        arr = np.array([None if v is None else json.dumps(v) for v in arr], dtype=object)
    return _coded_objects(kind, arr.tolist())


def _is_arrow(data: Any) -> bool:
    return type(data).__module__.startswith("pyarrow")


def _encode_errors() -> tuple[type[BaseException], ...]:
    pa = sys.modules.get("pyarrow")
    return (TypeError, ValueError) + ((pa.ArrowException,) if pa is not None else ())


def _is_null(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _coded_objects(kind: str, values: list[Any]) -> Column:
    """Codes into the distinct values, in order of first appearance: one dict lookup per
    row (no sort, no call per row); NULLs (None, NaN) are found among the distinct values."""
    index: dict[Any, int] = {}
    codes = np.array([index.setdefault(v, len(index)) for v in values], np.int32)
    distinct = list(index)
    nulls = [_is_null(v) for v in distinct]
    if any(nulls):
        remap = np.cumsum([not n for n in nulls], dtype=np.int32) - 1
        remap[np.array(nulls)] = -1
        codes = remap[codes]
        distinct = [v for v, n in zip(distinct, nulls, strict=True) if not n]
    want, name = (bytes, "bytes") if kind == "bytea" else (str, "text")
    for v in distinct:
        if not isinstance(v, want):
            raise TypeError(f"expected {name}, got {type(v).__name__} {v!r:.40}")
    uniques = tuple(distinct) if kind == "bytea" else tuple(str.encode(v) for v in distinct)
    null = codes < 0
    return Column(kind, codes, null if null.any() else None, uniques)


def _objects(values: Sequence[Any]) -> np.ndarray:
    """A one-dimensional object array, even of lists (JSON values)."""
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = v
    return out


def _from_arrow(kind: str, data: Any) -> Column:
    import pyarrow as pa

    if isinstance(data, pa.ChunkedArray):
        data = data.combine_chunks()
    if kind in FIXED:
        return _fixed(kind, data)
    return _coded(kind, data)


def _coded(kind: str, arr: pa.Array) -> Column:
    """Codes into the distinct values: an Arrow hash table, so no sort and no per-row Python."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_dictionary(arr.type):
        # a dictionary may repeat values or hold unused ones: re-encode it, so that equal
        # values always have equal codes (the merge rules compare keys by code)
        canonical = pc.dictionary_encode(arr.dictionary)
        remap = np.append(canonical.indices.to_numpy(zero_copy_only=False), -1)
        codes = arr.indices.fill_null(-1).to_numpy(zero_copy_only=False)
        codes = remap[codes].astype(np.int32)  # code -1 (NULL) picks the trailing -1
        dictionary = canonical.dictionary
    else:
        encoded = pc.dictionary_encode(arr)
        codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32)
        dictionary = encoded.dictionary
    if pa.types.is_string(dictionary.type) or pa.types.is_large_string(dictionary.type):
        uniques = tuple(s.encode() for s in dictionary.to_pylist())
    else:
        uniques = tuple(dictionary.to_pylist())
    null = codes < 0
    return Column(kind, codes, null if null.any() else None, uniques)


def _fixed(kind: str, data: Any) -> Column:
    dtype = FIXED[kind]
    null = None
    if _is_arrow(data):
        import pyarrow as pa

        if pa.types.is_timestamp(data.type):
            data = data.cast(pa.timestamp("ms", data.type.tz)).cast(pa.int64())
        if data.null_count:
            null = data.is_null().to_numpy(zero_copy_only=False)
            data = data.fill_null(False if kind == "bool" else 0)
        data = data.to_numpy(zero_copy_only=False)
    elif isinstance(data, np.ma.MaskedArray):
        null = np.ma.getmaskarray(data)
        data = data.filled(0)
    arr = np.asarray(data)
    if arr.ndim != 1:
        raise ValueError(f"expected one dimension, got shape {arr.shape}")
    if arr.dtype.kind == "M":
        nat = np.isnat(arr)
        null = nat if null is None else null | nat
        arr = arr.astype("datetime64[ms]").view(np.int64)
    elif arr.dtype == object:  # Python values, None (or NaN) for NULL
        values = arr.tolist()
        nulls = [_is_null(v) for v in values]
        if any(nulls):
            null = np.array(nulls)
            values = [0 if n else v for v, n in zip(values, nulls, strict=True)]
        for v in values:
            if isinstance(v, str | bytes) or (kind == "bool" and not isinstance(v, bool | int)):
                raise TypeError(f"expected {kind} values, got {type(v).__name__} {v!r:.40}")
        arr = np.array(values, dtype=np.float64 if kind == "float8" else None)
        if arr.dtype == object or arr.ndim != 1:
            raise TypeError(f"expected {kind} values, got {arr.dtype} of shape {arr.shape}")
    if arr.dtype.kind == "f":
        nan = np.isnan(arr)
        if nan.any():
            null = nan if null is None else null | nan
            if kind != "float8":
                arr = np.where(nan, 0, arr)
    if kind != "float8" and arr.dtype.kind == "f" and not np.array_equal(arr, np.trunc(arr)):
        raise ValueError(f"{kind} values with a fraction")
    if kind == "bool" and arr.dtype.kind not in "bui":
        raise ValueError(f"expected booleans, got {arr.dtype}")
    values = np.ascontiguousarray(arr, dtype=dtype)
    if null is not None and not null.any():
        null = None
    return Column(kind, values, None if null is None else np.ascontiguousarray(null), ())


# -- the batch ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WriteBatch:
    """What the processor stores at once: per table, equal-length columns named after the
    table's columns (see the module docstring for times and NULLs). A sink stores a batch
    in one transaction: all of it or, on any error, none of it.

    Each table is merged by its rule (:mod:`workbench.sinks.merge`): readings, dead letters
    and chaos events are stored once; a window, an alert, a sensor's statistics and a
    partition's checkpoint replace the stored row when they are newer.

    >>> import numpy as np
    >>> batch = WriteBatch(readings={"run_id": np.array(["r"], object), "seq": np.array([0])})
    >>> [name for name, _ in batch.tables()]
    ['readings']
    """

    readings: Mapping[str, Any] = field(default_factory=dict)
    dead_letters: Mapping[str, Any] = field(default_factory=dict)
    window_stats: Mapping[str, Any] = field(default_factory=dict)
    alerts: Mapping[str, Any] = field(default_factory=dict)
    sensor_stats: Mapping[str, Any] = field(default_factory=dict)
    predictions: Mapping[str, Any] = field(default_factory=dict)
    processor_state: Mapping[str, Any] = field(default_factory=dict)
    processor_state_segments: Mapping[str, Any] = field(default_factory=dict)
    chaos_events: Mapping[str, Any] = field(default_factory=dict)
    #: checkpoint segments no checkpoint refers to any more, deleted in the same transaction
    #: (consumer_group, topic, partition, segment)
    dropped_segments: Sequence[tuple[str, str, int, int]] = ()

    def tables(self) -> list[tuple[str, Mapping[str, Any]]]:
        """The tables this batch writes, in the order a sink writes them: facts first, the
        checkpoint that covers them last."""
        out = [(name, getattr(self, name)) for name in TABLE_ORDER]
        return [(name, cols) for name, cols in out if cols and _length(cols) > 0]

    @classmethod
    def from_rows(
        cls,
        readings: Sequence[Sequence[Any]] = (),
        dead_letters: Sequence[Sequence[Any]] = (),
        windows: Sequence[Sequence[Any]] = (),
        alerts: Sequence[Sequence[Any]] = (),
        checkpoints: Sequence[Sequence[Any]] = (),
        sensor_stats: Sequence[Sequence[Any]] = (),
        chaos_events: Sequence[Sequence[Any]] = (),
    ) -> WriteBatch:
        """A batch from row tuples in the layouts of :data:`ROW_LAYOUTS` (the per-reading
        processor's rows; times in epoch ms, None for NULL)."""
        given = {"readings": readings, "dead_letters": dead_letters, "window_stats": windows,
                 "alerts": alerts, "processor_state": checkpoints, "sensor_stats": sensor_stats,
                 "chaos_events": chaos_events}  # fmt: skip
        return cls(**{t: _columns_of(t, rows) for t, rows in given.items() if len(rows)})


#: The order a sink writes a batch's tables in.
TABLE_ORDER = ("readings", "dead_letters", "window_stats", "alerts", "sensor_stats",
               "predictions", "chaos_events", "processor_state_segments",
               "processor_state")  # fmt: skip

#: Row tuples of :meth:`WriteBatch.from_rows`: the table's column names in tuple order.
ROW_LAYOUTS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "readings": ("run_id", "machine_id", "sensor_type", "seq", "ts", "value", "status_code",
                 "late", "score", "rolling_1", "rolling_2"),
    "dead_letters": ("topic", "partition", "offset", "run_id", "reason", "key", "payload"),
    "window_stats": ("run_id", "machine_id", "sensor_type", "width_s", "window_start",
                     "window_end", "count", "nulls", "late", "mean", "min", "max", "stddev",
                     "quantile", "final", "revision"),
    "alerts": ("run_id", "alert_id", "rule", "kind", "severity", "state", "machine_id",
               "sensor_type", "start_ts", "opened_ts", "updated_ts", "closed_ts", "peak",
               "breaches", "detects"),
    "sensor_stats": ("run_id", "machine_id", "sensor_type", "n", "nulls", "late", "mean", "std",
                     "ewma", "ewstd", "quantile", "baseline", "score", "drifts", "last_ts"),
    "processor_state": ("consumer_group", "topic", "partition", "next_offset", "state"),
    "processor_state_segments": ("consumer_group", "topic", "partition", "segment", "data"),
    "chaos_events": ("run_id", "event_id", "kind", "machine_id", "sensor_type", "start_ts",
                     "end_ts", "magnitude", "source", "detail"),
})  # fmt: skip


def _columns_of(table: str, rows: Sequence[Sequence[Any]]) -> dict[str, Any]:
    names = ROW_LAYOUTS[table]
    values = list(zip(*rows, strict=True)) if rows else [()] * len(names)
    if len(values) != len(names):
        raise ValueError(f"{table}: rows of {len(values)} fields, expected {len(names)}")
    return {name: _objects(vals) for name, vals in zip(names, values, strict=True)}


def _length(columns: Mapping[str, Any]) -> int:
    return len(next(iter(columns.values())))


@dataclass(frozen=True)
class WriteResult:
    """What one batch did to the database.

    Attributes
    ----------
    readings_inserted : int
        Readings stored now.
    readings_duplicate : int
        Readings of the batch that were stored already (or twice in the batch).
    dead_letters_inserted : int
        Dead letters stored now.
    windows_written, alerts_written : int
        Window and alert rows inserted or replaced by a newer version.
    """

    readings_inserted: int
    readings_duplicate: int
    dead_letters_inserted: int
    windows_written: int = 0
    alerts_written: int = 0
