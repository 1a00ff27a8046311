"""Checkpoints (processor/state.py): captured in the consume thread, encoded beside it,
readable across the compression library change; and the start-up that keeps the first
batch fast (processor/warmup.py, processor/malloc.py)."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest

from workbench.errors import ConfigError
from workbench.processor import cold, steps
from workbench.processor.decode import MachineTable
from workbench.processor.intake import Intake
from workbench.processor.rules import load_rules
from workbench.processor.state import ZSTD_MAGIC, EngineConfig, PartitionState, Snapshot
from workbench.processor.warmup import _feed, warm_up
from workbench.processor.windows import WindowConfig
from workbench.processor.writer import _checkpoint_tables
from workbench.simulator.physics import FactoryConfig
from workbench.simulator.source import Simulation

CONFIG = EngineConfig(WindowConfig(idle_timeout_s=None))


def stream(seconds: float = 200, machines: int = 3) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    Simulation(FactoryConfig(machines=machines, seed=4), "ckpt").run(
        lambda k, v: out.append((k, v)), seconds
    )
    return out


def fed(messages: list[tuple[bytes, bytes]]) -> tuple[PartitionState, Intake]:
    rules = load_rules()
    machines = MachineTable()
    intake = Intake(machines, rules.validation, "raw")
    state = PartitionState(CONFIG, rules, machines)
    _feed(intake, state, messages, 0, control=False, wall_s=0.0)
    return state, intake


def npz_of(data: bytes) -> dict[str, np.ndarray]:
    import zstandard

    assert data[:4] == ZSTD_MAGIC
    raw = zstandard.ZstdDecompressor().decompress(data[12:], max_output_size=int.from_bytes(
        data[4:12], "big"))  # fmt: skip
    with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def test_a_capture_keeps_the_state_it_was_taken_of_while_the_state_moves_on():
    messages = stream()
    half = len(messages) // 2
    state, intake = fed(messages[:half])
    before = state.snapshot()
    captured = state.capture()
    _feed(intake, state, messages[half:], half, control=False, wall_s=0.0)
    after = state.snapshot()
    late = captured.encode()  # encoded after the state moved on, as the writer does
    assert late.state == before.state
    assert late.state != after.state
    assert npz_of(late.state)["header"].tobytes() == npz_of(before.state)["header"].tobytes()


def test_the_writer_encodes_snapshots_futures_and_checkpoints_alike():
    from concurrent.futures import ThreadPoolExecutor

    state, _ = fed(stream(60, 2))
    data = state.snapshot()
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(state.capture().encode)
        rows = [("g", "raw", 0, 10, state.capture()), ("g", "raw", 1, 11, future),
                ("g", "raw", 2, 12, data)]  # fmt: skip
        cols, segments, dropped = _checkpoint_tables(rows)
    assert cols["state"].tolist() == [data.state] * 3
    assert cols["partition"].tolist() == [0, 1, 2] and cols["next_offset"].tolist() == [10, 11, 12]
    assert segments == {} and dropped == []


def test_a_checkpoint_compressed_by_the_former_library_is_restored():
    """Checkpoints written before zstandard replaced pyarrow's codec (the same zstd frames)
    restore to the same state."""
    pa = pytest.importorskip("pyarrow")
    rules = load_rules()
    state, intake = fed(stream(120, 2))
    arrays = state.capture().arrays
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    raw = buf.getvalue()
    old = ZSTD_MAGIC + len(raw).to_bytes(8, "big") + pa.compress(raw, codec="zstd", asbytes=True)
    restored = PartitionState.restore(CONFIG, rules, intake.machines, old)
    assert restored.snapshot().state == state.snapshot().state


def test_a_snapshot_is_one_npz_with_a_header_and_no_pickles():
    state, _ = fed(stream(60, 2))
    arrays = npz_of(state.snapshot().state)
    header = json.loads(arrays.pop("header").tobytes())
    assert header["format"] == 2 and header["config"] == CONFIG.header()
    assert all(a.dtype != object for a in arrays.values())
    assert {name.partition(".")[0] for name in arrays} == {
        "keys", "dedup", "clock", "windows", "rolling", "stats", "alerts", "model", "changed",
    }  # fmt: skip
    assert header["model"] == load_rules().model.header()
    assert isinstance(state.capture(), Snapshot)


def test_the_warm_up_runs_every_step_and_leaves_nothing_behind(monkeypatch):
    rules = load_rules()
    outputs = []
    process = steps.process

    def spy(*args, **kwargs):
        out = process(*args, **kwargs)
        outputs.append(out)
        return out

    monkeypatch.setattr(steps, "process", spy)
    seconds = warm_up(CONFIG, rules, rules.validation)
    assert seconds > 0
    readings = sum(len(r["seq"]) for o in outputs for r in o.readings if r)
    windows = sum(len(w["count"]) for o in outputs for w in o.windows if w)
    alerts = sum(len(o.alerts) for o in outputs)
    assert readings > 2000 and windows > 0 and alerts > 0, (readings, windows, alerts)


def test_a_fresh_process_has_its_kernels_loaded_after_the_warm_up():
    """In a new process (nothing loaded yet), the kernels a batch calls from Python all
    have their machine code after warm_up; pyarrow is never imported on the way."""
    code = """
import sys
from numba.core.registry import CPUDispatcher
from workbench.processor import loop  # the processor's whole import path
from workbench.processor.warmup import warm_up
from workbench.processor.rules import load_rules
from workbench.processor.state import EngineConfig
from workbench.processor.windows import WindowConfig
from workbench.processor import decode, dedup, hysteresis, rolling, watermark, windows
rules = load_rules()
warm_up(EngineConfig(WindowConfig()), rules, rules.validation)
entry = [decode._decode, dedup._dedupe, hysteresis._hysteresis, rolling._roll,
         watermark._observe, windows._add, windows._due]
print(sum(bool(k.signatures) for k in entry), len(entry), "pyarrow" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=True)  # fmt: skip
    loaded, total, arrow = out.stdout.split()
    assert loaded == total and arrow == "False", out.stdout


FREED_MB = """
import sys
import numpy as np
from workbench.processor.malloc import fix_mmap_threshold
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) // 1024
if sys.argv[1] == "fixed":
    fix_mmap_threshold()
big = np.ones(8 << 17); del big  # 8 MB freed: glibc raises its threshold past 1 MB
arrays = [np.ones(1 << 17) for _ in range(40)]  # 40 x 1 MB
before = rss()
del arrays[:-1]  # the last one stays: a heap cannot shrink below it
print(before - rss())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_freed_batch_arrays_go_back_to_the_system_once_the_threshold_is_fixed():
    """Without the fix, 1 MB arrays freed after a larger one stay in the heap (resident);
    with it, each is a mapping of its own and leaves when freed."""
    freed = {}
    for how in ("fixed", "default"):
        out = subprocess.run([sys.executable, "-c", FREED_MB, how], capture_output=True,
                             text=True, check=True, timeout=120)  # fmt: skip
        freed[how] = int(out.stdout)
    assert freed["fixed"] >= 30 and freed["default"] < 10, freed


def test_a_checkpoint_restores_under_another_rolling_history():
    """The history only bounds how late a reading may be for exact means, so a restart with
    another WORKBENCH_ROLLING_HISTORY_S keeps the partition's state and applies the new one."""
    rules = load_rules()
    state, intake = fed(stream(120, 2))
    longer = EngineConfig(CONFIG.windows, rolling_history_s=600.0)
    restored = PartitionState.restore(longer, rules, intake.machines, state.snapshot().state)
    assert restored.rolling.history_ms == 600_000
    assert restored.rolling.keep_ms == 600_000 + 300_000
    assert restored.keys.n_keys == state.keys.n_keys and restored.keys.n_keys > 0
    other = EngineConfig(WindowConfig(idle_timeout_s=None, allowed_lateness_s=30.0))
    with pytest.raises(ConfigError, match="checkpoint"):
        PartitionState.restore(other, rules, intake.machines, state.snapshot().state)


def test_checkpoints_are_incremental_each_cold_segment_stored_once(monkeypatch):
    """Final windows wait out their horizon in sealed cold segments; a checkpoint carries
    only the segments no earlier one carried, and names those it no longer needs. Stored as
    a sink stores them, the last checkpoint restores the same state."""
    monkeypatch.setattr(cold, "SEGMENT_VALUES", 300)
    config = EngineConfig(WindowConfig(idle_timeout_s=None, correction_horizon_s=300.0))
    rules = load_rules()
    machines = MachineTable()
    intake = Intake(machines, rules.validation, "raw")
    state = PartitionState(config, rules, machines)
    messages = stream(900, 4)
    stored: dict[int, bytes] = {}
    carried: list[set[int]] = []
    dropped: set[int] = set()
    step = len(messages) // 30
    for i in range(30):
        _feed(intake, state, messages[i * step : (i + 1) * step], i * step, control=False,
              wall_s=0.0)  # fmt: skip
        steps.due(state, 0.0, provisional=False, idle_since=None, idle_timeout_s=None)
        checkpoint = state.capture().encode()
        assert not set(checkpoint.segments) & set(stored)  # each carried once
        carried.append(set(checkpoint.segments))
        stored.update(checkpoint.segments)
        for n in checkpoint.dropped:
            del stored[n]
        dropped.update(checkpoint.dropped)
    assert len(stored) >= 3 and len(dropped) >= 3  # many sealed; the oldest past the horizon
    assert max(map(len, carried)) < len(stored) + len(dropped)  # no checkpoint carries all
    w = state.windows._windows
    live = w["key"] >= 0
    assert (live & (w["cold"] >= 0)).sum() > 50  # final windows wait in cold segments...
    assert not (live & w["closed"] & (w["cold"] < 0)).any()  # ... none in the arena

    restored = PartitionState.restore(config, rules, machines, checkpoint.state, stored)
    assert restored.snapshot().state == state.snapshot().state
    missing = dict(stored)
    missing.pop(min(missing))
    with pytest.raises(ConfigError, match="segment"):
        PartitionState.restore(config, rules, machines, checkpoint.state, missing)
