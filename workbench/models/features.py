"""Feature vectors per machine and minute, from the windows the processor stored.

A model sees what the pipeline keeps, not the raw readings: each machine's final
one-minute windows (``window_stats``, width 60 s), one row per sensor, become one vector
per machine and minute. Per sensor type S:

- ``S.mean``, ``S.std``, ``S.n`` (values), ``S.nulls`` (share of readings without value)
- ``S.range`` (max - min), ``S.top`` (max - mean), ``S.p95`` (p95 - mean): a window's shape
- ``S.d1`` (mean - the previous minute's mean), ``S.d5`` (the mean's slope over the last
  five minutes, per minute), ``S.dstd`` (std - the previous minute's std): trends across
  consecutive windows, left out when the earlier window is missing
- ``S.dev`` (mean - an exponentially weighted mean, alpha 0.2, of the machine's earlier
  minutes): the level against the machine's own recent past, since machines differ

Everything is causal: a minute's vector uses that minute and earlier ones only, so a model
could compute it the moment the window is final. A value that cannot be computed is left
out of the dict (River's models take missing features).

>>> frame = pd.DataFrame({
...     "machine_id": ["m-1"] * 3, "sensor_type": ["temperature"] * 3,
...     "window_start": pd.to_datetime([0, 60, 120], unit="s", utc=True),
...     "count": [60, 60, 60], "nulls": [0, 0, 0], "mean": [20.0, 21.0, 25.0],
...     "min": [19.0, 20.0, 22.0], "max": [21.0, 22.0, 28.0], "stddev": [0.5, 0.5, 1.5],
...     "quantile": [20.8, 21.8, 27.0]})
>>> rows = windows_to_vectors("r", frame)
>>> [(r.machine_id, r.end_ms) for r in rows]
[('m-1', 60000), ('m-1', 120000), ('m-1', 180000)]
>>> x = rows[2].x
>>> x["temperature.d1"], x["temperature.range"], round(x["temperature.dev"], 2)
(4.0, 6.0, 4.8)
>>> "temperature.d1" in rows[0].x
False
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd
import sqlalchemy as sa

from workbench.models import ModelError
from workbench.sinks import engine, redact, schema

#: The window width the features are made of (the processor's first default width).
WIDTH_S = 60
#: Weight of the newest minute in ``S.dev``'s baseline.
DEV_ALPHA = 0.2


@dataclass(frozen=True)
class MachineMinute:
    """One machine's features over one window; times in epoch ms (event time)."""

    run_id: str
    machine_id: str
    start_ms: int
    end_ms: int
    x: dict[str, float]


def load_windows(database_url: str, run_id: str, machine_id: str | None = None) -> pd.DataFrame:
    """The final one-minute windows of one run (of one machine, if given), in event-time
    order (SQL, any backend)."""
    w = schema.window_stats
    query = (
        sa.select(w.c.machine_id, w.c.sensor_type, w.c.window_start, w.c["count"], w.c.nulls,
                  w.c.mean, w.c.min, w.c.max, w.c.stddev, w.c.quantile)
        .where(w.c.run_id == run_id, w.c.width_s == WIDTH_S, w.c.final.is_(True))
        .order_by(w.c.window_start, w.c.machine_id, w.c.sensor_type)
    )  # fmt: skip
    if machine_id is not None:
        query = query.where(w.c.machine_id == machine_id)
    eng = engine(database_url)
    try:
        with eng.connect() as conn:
            frame = pd.read_sql(query, conn)
    except sa.exc.OperationalError as exc:
        raise ModelError(f"cannot read windows from {redact(database_url)}: {exc.orig}") from None
    finally:
        eng.dispose()
    frame["window_start"] = pd.to_datetime(frame["window_start"], utc=True)
    return frame


def run_vectors(database_url: str, run_id: str) -> list[MachineMinute]:
    """Every machine-minute of a stored run, ordered by event time (window end), then
    machine: the order a model sees them in."""
    frame = load_windows(database_url, run_id)
    if frame.empty:
        raise ModelError(
            f"run {run_id} has no final {WIDTH_S} s windows in {redact(database_url)}: "
            "is the run id right, and was it processed?"
        )
    return windows_to_vectors(run_id, frame)


def latest_vector(database_url: str, run_id: str, machine_id: str) -> MachineMinute | None:
    """The machine's latest final minute of the run, its vector made from every earlier
    minute of the machine exactly as :func:`run_vectors` makes it (a machine's features
    depend on its own windows only); None when the machine has no such window in the run."""
    frame = load_windows(database_url, run_id, machine_id)
    return windows_to_vectors(run_id, frame)[-1] if not frame.empty else None


def windows_to_vectors(run_id: str, frame: pd.DataFrame) -> list[MachineMinute]:
    """:class:`MachineMinute` rows from window rows (the columns :func:`load_windows` reads)."""
    f = frame.sort_values(["machine_id", "sensor_type", "window_start"]).reset_index(drop=True)
    start_ms = (f["window_start"] - pd.Timestamp(0, tz="UTC")) // dt.timedelta(milliseconds=1)
    f = f.assign(start_ms=start_ms.astype(np.int64))
    groups = f.groupby(["machine_id", "sensor_type"], sort=False)
    width_ms = WIDTH_S * 1000

    def lagged(column: str, k: int) -> pd.Series:
        """``column`` k windows earlier, NaN where that window is not exactly k minutes back."""
        earlier = groups[column].shift(k)
        gap = f["start_ms"] - groups["start_ms"].shift(k)
        return earlier.where(gap == k * width_ms)

    seen = f["count"] + f["nulls"]
    out = pd.DataFrame({
        "mean": f["mean"], "std": f["stddev"], "n": f["count"].astype(float),
        "nulls": (f["nulls"] / seen.where(seen > 0)).astype(float),
        "range": f["max"] - f["min"], "top": f["max"] - f["mean"],
        "p95": f["quantile"] - f["mean"],
        "d1": f["mean"] - lagged("mean", 1), "d5": (f["mean"] - lagged("mean", 5)) / 5,
        "dstd": f["stddev"] - lagged("stddev", 1),
        "dev": f["mean"] - groups["mean"].transform(
            lambda s: s.shift(1).ewm(alpha=DEV_ALPHA, adjust=False, ignore_na=True).mean()),
    })  # fmt: skip
    out[["machine_id", "sensor_type", "start_ms"]] = f[["machine_id", "sensor_type", "start_ms"]]
    wide = out.pivot(index=["start_ms", "machine_id"], columns="sensor_type")
    wide.columns = [f"{sensor}.{name}" for name, sensor in wide.columns]
    wide = wide.sort_index(axis=1).sort_index()
    names = list(wide.columns)
    rows = []
    for (start, machine), values in zip(wide.index, wide.to_numpy(), strict=True):
        x = {n: float(v) for n, v in zip(names, values, strict=True) if np.isfinite(v)}
        rows.append(MachineMinute(run_id, machine, int(start), int(start) + width_ms, x))
    return rows
