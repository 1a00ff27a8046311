"""The processor's pipeline over one partition's share of a batch, top-down.

Every step is a function of the batch's columns and the partition's state
(:class:`~workbench.processor.state.PartitionState`), in the order the broker delivered the
readings::

    intern keys -> dedupe -> watermark (late) -> windows -> rolling means -> statistics
        -> machine model (when a rule uses it) -> rules

and a batch's readings come out as one column set named after the readings table. A
control message ``end-of-run`` ends its run at its place in the partition: the run's windows
become final, held alert decisions are taken, its statistics are written one last time, and
its readings that still arrive are stored as late without touching any state. What is due
without new readings (final windows behind the watermarks, provisional results, idleness)
comes from :func:`due`.

Nothing here reads a clock: wall time is passed in, and only :func:`due` uses it, for the
two things that are about wall time by nature (how often provisional results go out, and a
partition with nothing left to read going idle).
"""

from __future__ import annotations

import numpy as np

from workbench.processor import predict, rolling, stats, windows
from workbench.processor.batch import PartitionOutput, Rows, concat
from workbench.processor.dedup import dedupe
from workbench.processor.state import PartitionState
from workbench.processor.stats import machine
from workbench.processor.watermark import idle_advance, observe
from workbench.schemas import sensor_types

#: Sensor names by enum index (the reading schema's symbols).
SENSOR_NAMES = np.array([*sensor_types(), "unknown"], dtype=object)
#: A run's state is forgotten after this long without readings on a partition that has
#: nothing left to read, once its windows are out.
QUIET_RUN_S = 600.0


def process(
    state: PartitionState,
    rows: Rows,
    run_names: list[str],
    markers: list[tuple[int, str]],
    wall_s: float,
) -> PartitionOutput:
    """Fold one partition's valid readings and end-of-run markers (offset, run id) in."""
    out = PartitionOutput()
    start = 0
    for offset, run in sorted(markers):
        stop = int(np.searchsorted(rows.offset, offset))
        if stop > start:
            readings(state, rows.take(slice(start, stop)), run_names, wall_s, out)
        end_run(state, run, out)
        start = stop
    if start < len(rows):
        readings(state, rows.take(slice(start, None)), run_names, wall_s, out)
    return out


def readings(
    state: PartitionState, rows: Rows, run_names: list[str], wall_s: float, out: PartitionOutput
) -> None:
    """Valid readings through every step; their enriched columns appended to ``out``."""
    table = state.keys
    codes, inverse = np.unique(rows.run, return_inverse=True)
    names = [run_names[c] for c in codes.tolist()]
    local = np.array([-1 if n in state.ended else table.run_id(n) for n in names], np.int64)
    runs = local[inverse]
    after_end = runs < 0
    if after_end.any():
        out.after_end += int(after_end.sum())
        out.readings.append(_readings_out(rows.take(after_end), np.array(names, object)[
            inverse[after_end]], late=np.ones(int(after_end.sum()), bool)))  # fmt: skip
        keep = ~after_end
        rows, runs = rows.take(keep), runs[keep]
    if not len(rows):
        return
    keys, mkeys = table.intern(runs, rows.machine, rows.sensor)
    state.grow()
    dup = dedupe(state.dedup, keys, rows.seq)
    if dup.any():
        out.duplicates += int(dup.sum())
        fresh = ~dup
        rows, runs, keys, mkeys = rows.take(fresh), runs[fresh], keys[fresh], mkeys[fresh]
    late, before = observe(state.clock, runs, rows.ts)
    windows.add(state.windows, keys, rows.ts, rows.value, rows.isnull, late, before,
                table.key_run)  # fmt: skip
    means = rolling.update(state.rolling, keys, rows.ts, rows.value, rows.isnull)
    features = stats.update(state.stats, keys, rows.ts, rows.value, rows.isnull)
    model = _model_scores(state, rows, keys, mkeys)
    state.changed[keys] = True
    run_ids = np.array(table.runs, dtype=object)
    for run in np.unique(runs).tolist():
        state.last_wall[run] = wall_s
        sel = runs == run if len(table.runs) > 1 else slice(None)
        events = state.alerts.observe(
            keys[sel], mkeys[sel], table.machine_names(), table.sensor_names(SENSOR_NAMES),
            rows.ts[sel],
            rows.value[sel], rows.isnull[sel], rows.status[sel], features.score[sel],
            features.drift[sel], None if model is None else model[sel],
        )  # fmt: skip
        out.alerts += [(table.runs[run], e) for e in events]
    out.readings.append(_readings_out(rows, run_ids[runs], late, features.score, means))


def _model_scores(
    state: PartitionState, rows: Rows, keys: np.ndarray, mkeys: np.ndarray
) -> np.ndarray | None:
    """The machine model's score of each reading (None when no rule uses the model): it
    takes the readings with a value and status 0 of the sensors its rules watch."""
    if state.model is None:
        return None
    off = rows.status != 0
    judged = ~rows.isnull & ~off & state.model_takes[rows.sensor]
    return machine.update(state.model, keys, mkeys, rows.sensor, rows.ts, rows.value, judged,
                          state.model_load, off)  # fmt: skip


def end_run(state: PartitionState, run: str, out: PartitionOutput) -> None:
    """The run's end-of-run marker: its windows final, its held alerts decided, its
    statistics out; later readings of it are late."""
    if run in state.ended:  # again (the run made again under its id): ended, as before
        out.ended.append(run)
        return
    table = state.keys
    if table.has_run(run):
        r = table.run_id(run)
        final = windows.close_run(state.windows, r)
        out.windows.append(_windows_out(state, final))
        out.predictions.append(_predictions_out(state, final))
        mkeys = np.flatnonzero(table.mkey_run == r)
        out.alerts += [(run, e) for e in state.alerts.flush(mkeys)]
        keys = np.flatnonzero(table.key_run == r)
        out.sensor_stats.append(_stats_out(state, keys))
        state.changed[keys] = False
        state.dropping.add(r)
    state.end(run)
    out.ended.append(run)


def due(
    state: PartitionState,
    wall_s: float,
    provisional: bool,
    idle_since: float | None,
    idle_timeout_s: float | None,
) -> PartitionOutput:
    """What is due without new readings: final windows behind the watermarks and, when
    ``provisional``, the open windows and statistics that changed. ``idle_since`` is the wall
    time since which the partition has had nothing left to read (None: it has a backlog)."""
    out = PartitionOutput()
    clock = state.clock
    if (
        idle_since is not None
        and idle_timeout_s is not None
        and wall_s - idle_since >= idle_timeout_s
    ):
        quiet = [
            (r, wall_s - t) for r, t in state.last_wall.items() if wall_s - t >= idle_timeout_s
        ]
        if quiet:
            runs = np.array([r for r, _ in quiet], np.int64)
            idle_advance(clock, runs, np.array([q * 1000 for _, q in quiet]))
    final = windows.advance(state.windows, clock.watermark)
    out.windows.append(_windows_out(state, final))
    out.predictions.append(_predictions_out(state, final))
    if provisional:
        prov = windows.provisional(state.windows, clock.watermark)
        out.provisional.append(_windows_out(state, prov))
        changed = np.flatnonzero(state.changed)
        if changed.size:
            out.provisional_stats.append(_stats_out(state, changed))
            state.changed[changed] = False
    if idle_since is not None:
        for r, t in list(state.last_wall.items()):
            if wall_s - t >= QUIET_RUN_S and not windows.window_count(state.windows, r):
                state.dropping.add(r)
    return out


def forget_dropped(state: PartitionState) -> None:
    """Drop the runs that ended or went quiet, once their results are out."""
    if state.dropping:
        state.drop_runs(state.dropping)
        state.dropping = set()


def _readings_out(
    rows: Rows,
    run_ids: np.ndarray,
    late: np.ndarray,
    score: np.ndarray | None = None,
    means: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    n = len(rows)
    nan = np.full(n, np.nan)
    return {
        "run_id": run_ids,
        "machine_id": rows.machine,  # machine index: the loop names them
        "sensor_type": SENSOR_NAMES[rows.sensor],
        "seq": rows.seq,
        "ts": rows.ts,
        "value": rows.value,
        "status_code": rows.status,
        "late": late,
        "score": nan if score is None else score,
        "rolling_1": nan if means is None else means[:, 0],
        "rolling_2": nan if means is None or means.shape[1] < 2 else means[:, 1],
    }


def _windows_out(state: PartitionState, w) -> dict[str, np.ndarray]:
    table = state.keys
    if not w.key.size:
        return {}
    names = np.array(table.machines.names, dtype=object)
    runs = np.array(table.runs, dtype=object)
    return {
        "run_id": runs[table.key_run[w.key]],
        "machine_id": names[table.key_machine[w.key]],
        "sensor_type": SENSOR_NAMES[table.key_sensor[w.key]],
        "width_s": w.width_s,
        "window_start": w.start_ms,
        "window_end": w.end_ms,
        "count": w.count,
        "nulls": w.nulls,
        "late": w.late,
        "mean": w.mean,
        "min": w.min,
        "max": w.max,
        "stddev": w.stddev,
        "quantile": w.quantile,
        "final": w.final,
        "revision": w.revision,
    }


def _predictions_out(state: PartitionState, w: windows.WindowRows) -> dict[str, np.ndarray]:
    """The promoted models' scores of the machine-minutes that final one-minute window
    results (first ones and corrections) just made or changed (none without a model; see
    :mod:`~workbench.processor.predict`)."""
    fs = state.features
    if not state.predictors or fs is None or not w.key.size:
        return {}
    pick = np.flatnonzero(w.width_s == predict.WIDTH_S)
    if not pick.size:
        return {}
    table = state.keys
    mkeys, starts, vectors = predict.take(fs, w.key[pick], w.start_ms[pick],
                                          predict.window_stats(w, pick), table.key_mkey,
                                          table.key_sensor, SENSOR_NAMES)  # fmt: skip
    if not vectors:
        return {}
    n = len(vectors)
    runs = np.array(table.runs, dtype=object)[table.mkey_run[mkeys]]
    machines = np.array(table.machines.names, dtype=object)[table.mkey_machine[mkeys]]
    sizes = np.array([len(x) for x in vectors], np.int64)
    parts = []
    for model in state.predictors:
        score = model.scores(vectors)
        parts.append({
            "run_id": runs, "machine_id": machines, "window_start": starts,
            "window_end": starts + predict.WIDTH_MS,
            "model": np.full(n, model.name, dtype=object),
            "version": np.full(n, model.version, np.int64),
            "kind": np.full(n, model.kind, dtype=object),
            "score": score, "alarm": score >= model.threshold, "features": sizes,
        })  # fmt: skip
    return concat(parts)


def _stats_out(state: PartitionState, keys: np.ndarray) -> dict[str, np.ndarray]:
    table = state.keys
    if not keys.size:
        return {}
    names = np.array(table.machines.names, dtype=object)
    runs = np.array(table.runs, dtype=object)
    counters = state.stats.counters
    f = state.stats.features
    last = state.stats.last_ts[keys]
    return {
        "run_id": runs[table.key_run[keys]],
        "machine_id": names[table.key_machine[keys]],
        "sensor_type": SENSOR_NAMES[table.key_sensor[keys]],
        "n": counters["n"][keys],
        "nulls": counters["nulls"][keys],
        "late": counters["late"][keys],
        "mean": f.mean[keys],
        "std": f.std[keys],
        "ewma": f.ewma[keys],
        "ewstd": f.ewstd[keys],
        "quantile": f.quantile[keys],
        "baseline": f.baseline[keys],
        "score": f.score[keys],
        "drifts": counters["drifts"][keys],
        "last_ts": last,  # NONE (int64 min) where the key has no value yet: NULL
    }


__all__ = ["due", "end_run", "forget_dropped", "process", "readings"]
