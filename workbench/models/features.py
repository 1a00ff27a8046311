"""Feature vectors per machine and minute, from the windows the processor stored.

A model sees what the pipeline keeps, not the raw readings: each machine's final
one-minute windows (``window_stats``, width 60 s), one row per sensor, become one vector
per machine and minute. Per sensor type S:

the features :mod:`workbench.processor.predict` lists (a window's level and shape, and its
trend against the sensor's own windows up to five minutes before), made by the same code
the processor scores machine-minutes with. Everything is causal: a minute's vector uses that
minute and earlier ones only. A value that cannot be computed is left out of the dict
(River's models take missing features).

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
>>> x["temperature.d1"], x["temperature.range"], x["temperature.dev"]
(4.0, 6.0, 4.5)
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
from workbench.processor import predict
from workbench.processor.predict import WIDTH_MS, WIDTH_S
from workbench.sinks import engine, redact, schema


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
    """The machine's latest final minute of the run, its vector made exactly as
    :func:`run_vectors` makes it (a machine's features depend on its own windows of that
    minute and the five before only); None when the machine has no such window in the run."""
    frame = load_windows(database_url, run_id, machine_id)
    return windows_to_vectors(run_id, frame)[-1] if not frame.empty else None


def windows_to_vectors(run_id: str, frame: pd.DataFrame) -> list[MachineMinute]:
    """:class:`MachineMinute` rows from window rows (the columns :func:`load_windows` reads),
    made minute by minute by the processor's own code (:mod:`workbench.processor.predict`):
    what a model learns from is what the processor will give it."""
    f = frame.sort_values(["window_start", "machine_id", "sensor_type"]).reset_index(drop=True)
    start = (f["window_start"] - pd.Timestamp(0, tz="UTC")) // dt.timedelta(milliseconds=1)
    start = start.to_numpy(np.int64)
    pairs = pd.MultiIndex.from_frame(f[["machine_id", "sensor_type"]])
    key_codes, key_pairs = pd.factorize(pairs)
    machine_codes, machines = pd.factorize(key_pairs.get_level_values(0))
    sensors = np.array(key_pairs.get_level_values(1), dtype=object)
    fs = predict.FeatureState(predict.HISTORY + 2)
    fs.grow(len(key_pairs))
    columns = ("count", "nulls", "mean", "min", "max", "stddev", "quantile")
    stats = np.column_stack([f[c].to_numpy(float) for c in columns])
    key_mkey = np.asarray(machine_codes, np.int64)
    key_sensor = np.arange(len(key_pairs))
    rows = []
    bounds = np.flatnonzero(np.diff(start)) + 1
    for part in np.split(np.arange(len(f)), bounds):
        if not part.size:
            continue
        fs.put(key_codes[part], start[part], stats[part])
        present = np.unique(key_mkey[key_codes[part]])
        minute = np.full(present.size, start[part[0]], np.int64)
        ms, ts, xs = predict.vectors(fs, present, minute, key_mkey, key_sensor, sensors)
        for m, t, x in sorted(zip(ms.tolist(), ts.tolist(), xs, strict=True),
                              key=lambda r: machines[r[0]]):  # fmt: skip
            rows.append(MachineMinute(run_id, machines[m], t, t + WIDTH_MS, x))
    return rows
