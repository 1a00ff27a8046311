"""The whole columnar pipeline against the per-reading reference, without servers.

The standard chaos scenario (every fault kind, duplicates, malformed messages, delivery
jitter) and a real data set are encoded as the simulator sends them, split into partitions
by machine, cut into poll batches of random sizes and fed to both: the legacy per-reading
state (``processor/legacy``) and the columnar steps. Late flags, scores, rolling means, final
windows, sensor statistics and alert events must be the same.
"""

from __future__ import annotations

import csv
import math
import random
import zlib
from pathlib import Path

import numpy as np
import pytest

from workbench.processor import steps
from workbench.processor.batch import Batch
from workbench.processor.decode import MachineTable
from workbench.processor.intake import Intake
from workbench.processor.legacy.state import PartitionState as LegacyPartition
from workbench.processor.rules import load_rules
from workbench.processor.state import EngineConfig, PartitionState
from workbench.processor.validate import Rejected, Validator
from workbench.processor.windows import WindowConfig
from workbench.schemas import READING
from workbench.simulator.control import ChaosControl
from workbench.simulator.source import Simulation
from workbench.simulator.spec import SimulationSpec

PARTITIONS = 4
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
#: The per-reading rolling means keep 600 s of history (the engine's default is a setting).
LEGACY_HISTORY_S = 600.0
NOW_MS = 1_796_000_000_000  # validation's wall clock: after every event time used here


def standard_stream(run_id: str, seconds: float = 150) -> list[tuple[bytes, bytes]]:
    spec = SimulationSpec.build(scenario="standard", duration_s=seconds)
    sim = Simulation(spec.factory, run_id, ChaosControl(spec.chaos), spec.scripted(),
                     spec.magnitudes)  # fmt: skip
    out: list[tuple[bytes, bytes]] = []
    sim.run(lambda k, v: out.append((k, v)), seconds)
    return out


def nab_stream() -> list[tuple[bytes, bytes]]:
    path = DATA / "nab" / "machine_temperature_system_failure.csv"
    if not path.exists():
        pytest.skip(f"{path} not found")
    import datetime as dt

    out = []
    with path.open() as f:
        for seq, row in enumerate(csv.DictReader(f)):
            when = dt.datetime.fromisoformat(row["timestamp"]).replace(tzinfo=dt.UTC)
            rec = {"machine_id": "nab", "ts": int(when.timestamp() * 1000),
                   "sensor_type": "temperature", "value": float(row["value"]),
                   "status_code": 0, "seq": seq}  # fmt: skip
            out.append((b"nab", READING.encode(rec)))
    return out


def partition_of(key: bytes) -> int:
    return zlib.crc32(key) % PARTITIONS


class Reference:
    """The legacy per-reading processor state of one partition (no wall clock: idle off)."""

    def __init__(self, cfg: WindowConfig, rules) -> None:
        self.state = LegacyPartition(cfg, rules)
        self.validator = Validator(rules.validation)
        self.validator._latest_ok_ms = NOW_MS + int(rules.validation.max_future_s * 1000)
        self.validator._clock_checked = float("inf")
        self.readings: dict[tuple, tuple] = {}
        self.windows: dict[tuple, tuple] = {}
        self.events: list[tuple] = []
        self.stats: dict[tuple, tuple] = {}
        self.dead = 0

    def feed(self, run_id: str, key: bytes, value: bytes, control: bool) -> None:
        if control:
            self.events += [(run_id, *e) for e in self.state.run(run_id).end()]
            return
        r = self.validator.check(value, key, run_id)
        if isinstance(r, Rejected):
            self.dead += 1
            return
        run = self.state.run(run_id)
        redelivered = run.redelivered
        enriched, events = run.process(r, 0.0)
        if run.redelivered == redelivered:
            self.readings[(run_id, r.machine_id, r.sensor_type, r.seq)] = enriched
        self.events += [(run_id, *e) for e in events]

    def flush(self) -> None:
        for run_id, run in self.state.runs.items():
            for w in run.windows_due(0.0, provisional=False):
                self.windows[(run_id, w.machine_id, w.sensor_type, w.width_s,
                              w.window_start_ms)] = w  # fmt: skip
            for row in run.stats_due(run_id):
                self.stats[row[:3]] = row


class Columnar:
    """The new steps over one partition."""

    def __init__(self, cfg: WindowConfig, rules, machines: MachineTable) -> None:
        self.state = PartitionState(EngineConfig(cfg, rolling_history_s=LEGACY_HISTORY_S), rules,
                                    machines)  # fmt: skip
        self.intake = Intake(machines, rules.validation, "raw")
        self.readings: dict[tuple, tuple] = {}
        self.windows: dict[tuple, dict] = {}
        self.events: list[tuple] = []
        self.stats: dict[tuple, tuple] = {}
        self.dead = 0

    def feed(self, batch: Batch, partition: int) -> None:
        taken = self.intake.take(batch, NOW_MS)
        self.dead += len(taken.dead_letters)
        rows, markers = taken.partition(partition)
        out = steps.process(self.state, rows, batch.run_names, markers, 0.0)
        names = self.intake.machines.names
        for cols in filter(None, out.readings):
            for i in range(len(cols["seq"])):
                machine = names[cols["machine_id"][i]]
                self.readings[(cols["run_id"][i], machine, cols["sensor_type"][i],
                               int(cols["seq"][i]))] = (
                    bool(cols["late"][i]), _n(cols["score"][i]), _n(cols["rolling_1"][i]),
                    _n(cols["rolling_2"][i]))  # fmt: skip
        self.events += [(run, *e) for run, e in out.alerts]
        self._take(out)
        self._take(steps.due(self.state, 0.0, provisional=False, idle_since=None,
                             idle_timeout_s=None))  # fmt: skip
        steps.forget_dropped(self.state)

    def _take(self, out) -> None:
        for cols in filter(None, out.windows):
            for i in range(len(cols["count"])):
                row = {k: v[i] for k, v in cols.items()}
                if row["final"]:
                    self.windows[(row["run_id"], row["machine_id"], row["sensor_type"],
                                  int(row["width_s"]), int(row["window_start"]))] = row  # fmt: skip
        for cols in filter(None, out.sensor_stats):
            for i in range(len(cols["n"])):
                row = tuple(cols[k][i] for k in cols)
                self.stats[row[:3]] = row


def _n(x: float) -> float | None:
    return None if x != x else float(x)


def run_both(messages: list[tuple[str, bytes, bytes, bool]], seed: int):
    """Feed (run id, key, value, control) messages to both, in poll batches of random
    sizes per partition."""
    rules = load_rules()
    cfg = WindowConfig(idle_timeout_s=None)
    machines = MachineTable()
    refs = {p: Reference(cfg, rules) for p in range(PARTITIONS)}
    news = {p: Columnar(cfg, rules, machines) for p in range(PARTITIONS)}
    by_part: dict[int, list] = {p: [] for p in range(PARTITIONS)}
    for m in messages:
        by_part[partition_of(m[1])].append(m)
    rng = random.Random(seed)
    for p, msgs in by_part.items():
        start = 0
        while start < len(msgs):
            n = rng.choice([1, 3, 50, 400, 2000])
            chunk = msgs[start : start + n]
            names = sorted({m[0] for m in chunk})
            code = {name: i for i, name in enumerate(names)}
            batch = Batch(
                values=[m[2] for m in chunk], keys=[m[1] for m in chunk],
                partition=np.full(len(chunk), p, np.int64),
                offset=np.arange(start, start + len(chunk), dtype=np.int64),
                run=np.array([code[m[0]] for m in chunk], np.int64), run_names=names,
                control=np.array([m[3] for m in chunk], bool),
                created_ms=np.zeros(len(chunk), np.int64),
            )  # fmt: skip
            news[p].feed(batch, p)
            for m in chunk:
                refs[p].feed(*m)
            refs[p].flush()
            start += n
    return refs, news


def compare(refs, news) -> dict[str, int]:
    seen = {"readings": 0, "late": 0, "windows": 0, "events": 0, "stats": 0}
    for p in refs:
        ref, new = refs[p], news[p]
        assert new.dead == ref.dead
        assert set(new.readings) == set(ref.readings), p
        for key, got in new.readings.items():
            r = ref.readings[key]
            # rolling means: exact sums now, running sums in the reference (drift ~1e-15)
            assert got[:2] == (r.late, r.score), (key, got, r)
            for mine, theirs in zip(got[2:], (r.rolling_1, r.rolling_2), strict=True):
                assert (mine is None) == (theirs is None), (key, got, r)
                assert mine is None or abs(mine - theirs) <= 1e-9 * max(1.0, abs(theirs))
            seen["late"] += r.late
        seen["readings"] += len(new.readings)
        assert set(new.windows) == set(ref.windows), p
        for key, got in new.windows.items():
            w = ref.windows[key]
            expected = (w.count, w.nulls, w.late, w.mean, w.min, w.max, w.stddev, w.quantile)
            values = tuple(_n(got[k]) if isinstance(got[k], float) else int(got[k])
                           for k in ("count", "nulls", "late", "mean", "min", "max", "stddev",
                                     "quantile"))  # fmt: skip
            assert values == tuple(None if x is None else x for x in expected), key
        seen["windows"] += len(new.windows)
        assert new.events == ref.events, p
        seen["events"] += len(new.events)
        assert set(new.stats) == set(ref.stats)
        for key, got in new.stats.items():
            r = ref.stats[key]
            assert tuple(_n(x) if isinstance(x, float) else x for x in got[3:14]) == tuple(
                None if isinstance(x, float) and math.isnan(x) else x for x in r[3:14]
            ), key
        seen["stats"] += len(new.stats)
    return seen


@pytest.mark.parametrize("seed", [1, 2])
def test_standard_scenario_gives_the_reference_results(seed):
    messages = [("std", k, v, False) for k, v in standard_stream("std")]
    keys = sorted({k for _, k, _, _ in messages})
    messages += [("std", k, b"", True) for k in keys]  # end of run, as the simulator ends
    seen = compare(*run_both(messages, seed))
    assert seen["late"] > 0 and seen["events"] > 10 and seen["windows"] > 100, seen


def test_a_real_file_with_a_clock_step_back_gives_the_reference_results():
    messages = [("nab", k, v, False) for k, v in nab_stream()]
    messages.append(("nab", b"nab", b"", True))
    seen = compare(*run_both(messages, 3))
    assert seen["late"] > 0 and seen["windows"] > 1000, seen


def test_a_checkpoint_mid_stream_changes_nothing():
    """Half the standard stream, a checkpoint restored in a 'new process' (machines numbered
    anew), the other half: the same results as without the interruption."""
    rules = load_rules()
    cfg = WindowConfig(idle_timeout_s=None)
    stream = [("std", k, v, False) for k, v in standard_stream("ckpt", 90)]
    stream += [("std", k, b"", True) for k in sorted({k for _, k, _, _ in stream})]
    p = 0
    msgs = [m for m in stream if partition_of(m[1]) == p]

    def feed(col: Columnar, part: list, start: int) -> None:
        for i in range(0, len(part), 500):
            chunk = part[i : i + 500]
            batch = Batch(
                values=[m[2] for m in chunk], keys=[m[1] for m in chunk],
                partition=np.full(len(chunk), p, np.int64),
                offset=np.arange(start + i, start + i + len(chunk), dtype=np.int64),
                run=np.zeros(len(chunk), np.int64), run_names=["std"],
                control=np.array([m[3] for m in chunk], bool),
                created_ms=np.zeros(len(chunk), np.int64),
            )  # fmt: skip
            col.feed(batch, p)

    whole = Columnar(cfg, rules, MachineTable())
    feed(whole, msgs, 0)
    half = len(msgs) // 2
    first = Columnar(cfg, rules, MachineTable())
    feed(first, msgs[:half], 0)
    data = first.state.snapshot()
    assert data.state[:4] == b"WBZ1"
    second = Columnar(cfg, rules, MachineTable(["z-other", "m-0003"]))
    config = EngineConfig(cfg, rolling_history_s=LEGACY_HISTORY_S)
    second.state = PartitionState.restore(config, rules, second.intake.machines, data.state,
                                          data.segments)  # fmt: skip
    feed(second, msgs[half:], half)
    for name in ("readings", "windows", "events", "stats"):
        combined = getattr(first, name)
        if isinstance(combined, dict):
            combined = {**combined, **getattr(second, name)}
            expected = getattr(whole, name)
            assert set(combined) == set(expected), name
            for key, got in combined.items():
                assert repr(got) == repr(expected[key]), (name, key)
        else:
            assert combined + getattr(second, name) == getattr(whole, name), name
