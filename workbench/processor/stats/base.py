"""How an estimator's per-key state is laid out, and how a fresh one is made.

Every estimator of this package keeps its state in one numpy structured array indexed by
a dense key id: record ``k`` is key ``k``'s River object taken apart into named numbers.
A module declares its fields as ``{name: initial value}`` (a scalar per key, or a small
fixed vector per key such as the five P² markers); :func:`allocate` makes ``n`` records
of them. A kernel reads a field as ``state[k]["mean"]``, in compiled and in plain Python
code alike.

One structured array rather than one array per field: a compiled function that takes
arrays pays a reference count per array and per call, and the fused kernel calls the
estimators once per reading, so seven arrays cost seven times what one does. Records keep
a key's state together in memory too. Checkpoints still hold plain arrays, one per field
(:func:`to_columns`, :func:`from_columns`).

>>> import numpy as np
>>> state = allocate({"n": np.float64(0.0), "marks": np.arange(3.0)}, 2)
>>> state["n"].tolist(), state["marks"].tolist()
([0.0, 0.0], [[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]])
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

#: ``{field name: initial value}``; the value's dtype and shape are the field's.
Fields = dict[str, np.ndarray | np.generic]


def dtype_of(fields: Fields) -> np.dtype:
    """The record type of ``fields`` (aligned, so compiled code reads it directly)."""
    return np.dtype(
        [(name, np.asarray(init).dtype, np.shape(init)) for name, init in fields.items()],
        align=True,
    )


def allocate(fields: Fields, n: int) -> np.ndarray:
    """``n`` records of ``fields``, each field at its initial value."""
    out = np.zeros(n, dtype=dtype_of(fields))
    for name, init in fields.items():
        out[name] = init
    return out


def to_columns(state: np.ndarray, prefix: str) -> dict[str, np.ndarray]:
    """Each field of ``state`` as its own contiguous array, named ``prefix + field``."""
    return {prefix + name: np.ascontiguousarray(state[name]) for name in state.dtype.names}


def from_columns(fields: Fields, columns: Mapping[str, np.ndarray], prefix: str) -> np.ndarray:
    """The state :func:`to_columns` wrote; every field must be there, all of one length."""
    n = len(columns[prefix + next(iter(fields))])
    state = allocate(fields, n)
    for name, init in fields.items():
        column = np.asarray(columns[prefix + name])
        if column.shape != (n, *np.shape(init)):
            raise ValueError(f"{prefix}{name} has shape {column.shape}, expected {n} rows")
        state[name] = column
    return state


def batch_keys(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Validated ``keys`` (int64, >= 0) and ``values`` (float64) columns and the key count."""
    keys = np.ascontiguousarray(keys, dtype=np.int64)
    values = np.ascontiguousarray(values, dtype=np.float64)
    if keys.shape != values.shape or keys.ndim != 1:
        raise ValueError("keys and values must be 1-d columns of equal length")
    if keys.size and keys.min() < 0:
        raise ValueError("key ids must be >= 0")
    return keys, values, int(keys.max()) + 1 if keys.size else 0
