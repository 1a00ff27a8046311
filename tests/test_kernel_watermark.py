"""Watermarks per run, late flags, broken clocks, re-delivery and key ids."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.processor.decode import MachineTable
from workbench.processor.dedup import RECENT, DedupState, dedupe
from workbench.processor.keys import KeyTable
from workbench.processor.legacy.watermark import Watermark
from workbench.processor.watermark import NONE, WatermarkState, idle_advance, observe


def state(runs: int = 1, lateness: int = 10_000, jump: int = 3_600_000) -> WatermarkState:
    s = WatermarkState(lateness, jump, confirm=3)
    s.grow(runs)
    return s


def test_late_flags_equal_the_per_reading_watermark_on_ordinary_streams():
    rng = np.random.default_rng(3)
    ts = (np.arange(5000) * 1000 + rng.normal(0, 4000, 5000)).astype(np.int64)
    legacy = Watermark(10_000, None)
    expected = []
    for t in ts.tolist():
        wm = legacy.at(0.0)
        expected.append(wm is not None and t < wm)
        legacy.observe(t, 0.0)
    s = state()
    late, before = observe(s, np.zeros(ts.size, np.int64), ts)
    assert late.tolist() == expected
    assert sum(expected) > 100
    assert before[0] == NONE and int(s.watermark[0]) == legacy.value


def test_runs_have_watermarks_of_their_own():
    s = state(runs=2)
    late, _ = observe(s, np.array([0, 1, 0, 1]), np.array([100_000, 5_000, 50_000, 4_000]))
    assert late.tolist() == [False, False, True, False]


@pytest.mark.parametrize("cut", [1, 2, 5, 17])
def test_results_do_not_depend_on_batch_boundaries(cut):
    rng = np.random.default_rng(cut)
    runs = rng.integers(0, 3, 3000)
    ts = (np.arange(3000) * 500 + rng.normal(0, 8000, 3000)).astype(np.int64)
    ts[1234] += 9 * 86_400_000  # a broken clock
    whole = state(3)
    expected, _ = observe(whole, runs, ts)
    parts = state(3)
    got = np.concatenate([observe(parts, runs[i : i + cut], ts[i : i + cut])[0]
                          for i in range(0, 3000, cut)])  # fmt: skip
    assert got.tolist() == expected.tolist()
    assert np.array_equal(parts.watermark, whole.watermark)


def test_one_reading_from_the_future_makes_nothing_after_it_late():
    ts = np.arange(100, dtype=np.int64) * 1000
    broken = np.insert(ts, 50, ts[49] + 6 * 86_400_000)
    s = state()
    late, _ = observe(s, np.zeros(broken.size, np.int64), broken)
    assert not late.any()
    assert int(s.contained[0]) == 1
    assert int(s.watermark[0]) == 99_000 - 10_000


def test_a_real_jump_moves_the_clock_after_confirmation():
    """A replayed file whose next session starts days later: the third reading in a row
    past the jump limit moves the clock; the old session's stragglers are then late."""
    old = np.arange(10, dtype=np.int64) * 1000
    new = 5 * 86_400_000 + np.arange(10, dtype=np.int64) * 1000
    ts = np.concatenate([old, new, [9_000]])
    s = state()
    late, _ = observe(s, np.zeros(ts.size, np.int64), ts)
    assert not late[:20].any()
    assert late[20]
    assert int(s.watermark[0]) == int(new[-1]) - 10_000


def test_idle_advance_moves_only_the_runs_asked_for():
    s = state(runs=2)
    observe(s, np.array([0, 1]), np.array([100_000, 100_000]))
    idle_advance(s, np.array([1]), np.array([30_000.0]))
    assert s.watermark.tolist() == [90_000, 120_000]


def test_state_round_trip_and_keep():
    s = state(runs=3)
    observe(s, np.array([0, 1, 2]), np.array([1, 2, 3]) * 100_000)
    back = WatermarkState.from_arrays(dict(s.arrays()), 10_000, 3_600_000)
    assert np.array_equal(back.watermark, s.watermark)
    back.keep(np.array([2, 0]))
    assert back.clock.tolist() == [300_000, 100_000]


def test_dedupe_remembers_the_last_recent_sequence_numbers_per_key():
    d = DedupState()
    d.grow(2)
    seq = np.arange(RECENT + 5)
    keys = np.zeros(seq.size, np.int64)
    assert not dedupe(d, keys, seq).any()
    again = dedupe(d, np.array([0, 0, 1]), np.array([RECENT + 4, 2, RECENT + 4]))
    assert again.tolist() == [True, False, False]  # seq 2 has been forgotten; key 1 is new
    back = DedupState.from_arrays(d.arrays())
    assert dedupe(back, np.array([0]), np.array([RECENT + 3])).tolist() == [True]


def test_key_table_interns_in_order_and_survives_a_checkpoint_and_dropped_runs():
    machines = MachineTable(["a", "b", "c"])
    table = KeyTable(machines)
    runs = table.run_ids(["r1", "r2", "r1", "r1"])
    keys, mkeys = table.intern(runs, np.array([0, 0, 1, 0]), np.array([0, 0, 2, 1]))
    assert mkeys.tolist() == [0, 2, 1, 0]
    assert keys.tolist() == [0, 3, 1, 2]  # run by run, each in order of first appearance
    assert table.describe(int(keys[1])) == ("r2", "a", 0)
    other = MachineTable(["z", "b", "a"])  # another process numbers machines its own way
    back = KeyTable.from_arrays(table.arrays(), other)
    assert [back.describe(k) for k in range(back.n_keys)] == [
        table.describe(k) for k in range(table.n_keys)
    ]
    again, _ = back.intern(back.run_ids(["r1"]), np.array([other.id_of(b"b")]), np.array([2]))
    assert back.describe(int(again[0])) == ("r1", "b", 2) and back.n_keys == table.n_keys
    keep_keys, keep_mkeys, kept_runs = table.drop_runs({table.run_id("r2")})
    assert table.runs == ["r1"] and kept_runs.tolist() == [0]
    assert [table.describe(k)[0] for k in range(table.n_keys)] == ["r1"] * 3
    assert keep_keys.size == 3 and keep_mkeys.size == 2
