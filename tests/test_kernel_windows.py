"""The columnar event-time windows (workbench.processor.windows) against the reference,
legacy PartitionWindows.

First the reference's own tests (tests/test_windows.py), ported to the batch API with the
watermark kept by the test as the reference keeps it (max event time - lateness, per run).
Then parity on long streams: real files (NAB with its clock step back, SKAB), and a crafted
interleaved multi-run stream with nulls, delays small and big, readings later than the
correction horizon and an end of run mid-stream. The reference runs per run with its wall
clock fixed and no idle timeout; each reading's watermark on arrival is the reference's, and
both sides advance, give provisional results and end runs at the same points. Every row is
compared field by field: final rows exactly, provisional mean and stddev to 1e-12 relative.
"""

import io
import math
import os
import random
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from workbench.processor import cold, windows
from workbench.processor.legacy.windows import PartitionWindows, WindowResult
from workbench.processor.windows import NONE, WindowConfig, WindowRows, WindowState

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a multiple of 60 s and of 300 s
M, S = "m-0001", "temperature"


@pytest.fixture(autouse=True)
def small_cold_segments(monkeypatch):
    """Cold segments of a few hundred values, so that these streams seal many and read
    corrected windows back from them."""
    monkeypatch.setattr(cold, "SEGMENT_VALUES", 300)


def at(seconds: float) -> int:
    return T0 + round(seconds * 1000)


def config(**kw) -> WindowConfig:
    base = dict(widths_s=(60,), allowed_lateness_s=10.0, idle_timeout_s=None, late_policy="update")
    return WindowConfig(**(base | kw))


class Partition:
    """A WindowState fed one reading at a time, the watermark of each run kept here as the
    reference keeps it: the largest event time minus the lateness, raised to the run's end."""

    def __init__(self, **kw) -> None:
        self.cfg = config(**kw)
        self.state = WindowState(self.cfg)
        self.lateness = round(self.cfg.allowed_lateness_s * 1000)
        self.ids: dict[tuple[int, str], int] = {}
        self.names: list[str] = []
        self.key_run: list[int] = []
        self.wm = [NONE, NONE]

    def add(self, seconds: float, value, key: str = M, run: int = 0) -> tuple[bool, bool]:
        """(late, dropped) of one reading."""
        if (run, key) not in self.ids:
            self.ids[(run, key)] = len(self.names)
            self.names.append(key)
            self.key_run.append(run)
            self.state.grow(len(self.names))
        ts, wm = at(seconds), self.wm[run]
        late = ts < wm
        x = np.nan if value is None else value
        (dropped,) = windows.add(self.state, [self.ids[(run, key)]], [ts], [x], [value is None],
                                 [late], [wm], np.array(self.key_run))  # fmt: skip
        self.wm[run] = max(wm, ts - self.lateness)
        return bool(late), bool(dropped)

    def advance(self) -> WindowRows:
        return windows.advance(self.state, np.array(self.wm))

    def provisional(self) -> WindowRows:
        return windows.provisional(self.state, np.array(self.wm))

    def close(self, run: int = 0) -> WindowRows:
        rows = windows.close_run(self.state, run)
        self.wm[run] = max(self.wm[run], int(self.state.ended_ms[run]))
        return rows

    def brief(self, rows: WindowRows) -> list[tuple]:
        """(key name, start s, width s, count, nulls, late, final, revision) per row."""
        return [
            (self.names[k], (start - T0) / 1000, width, count, nulls, late, final, revision)
            for k, start, width, count, nulls, late, final, revision in zip(
                rows.key.tolist(), rows.start_ms.tolist(), rows.width_s.tolist(),
                rows.count.tolist(), rows.nulls.tolist(), rows.late.tolist(),
                rows.final.tolist(), rows.revision.tolist(), strict=True,
            )
        ]  # fmt: skip


def stat(rows: WindowRows, i: int = 0) -> tuple:
    """(mean, min, max, stddev, quantile) of row i, None for NaN."""
    return tuple(
        None if math.isnan(v) else v
        for v in (rows.mean[i], rows.min[i], rows.max[i], rows.stddev[i], rows.quantile[i])
    )


# -- the reference's tests, on the batch API -----------------------------------------------

# One key, 60 s windows, lateness 10 s: [0, 60): 2, 4, 6, 8 and a null.  [60, 120): 10, 20,
# 30, 40.  [120, 180): 5, 7.  Nothing in it is late.
SEQUENCE = [(5, 2.0), (50, 4.0), (45, None), (62, 10.0), (55, 6.0), (58, 8.0), (75, 20.0)]
SEQUENCE += [(70, 30.0), (110, 40.0), (131, 5.0), (125, 7.0), (200, 1.0)]


def test_out_of_order_sequence_gives_exact_window_statistics():
    p = Partition()
    finals = []
    for step, (seconds, value) in enumerate(SEQUENCE):
        assert p.add(seconds, value) == (False, False)
        rows = p.advance()
        finals += [(step, b, stat(rows, i)) for i, b in enumerate(p.brief(rows))]
    assert [(step, b) for step, b, _ in finals] == [
        (6, (M, 0.0, 60, 4, 1, 0, True, 0)),
        (9, (M, 60.0, 60, 4, 0, 0, True, 0)),
        (11, (M, 120.0, 60, 2, 0, 0, True, 0)),
    ]
    a, b, c = (s for _, _, s in finals)
    # [2, 4, 6, 8]: mean 5, sample var 20/3, p95 at rank 2.85 -> 7.7
    assert a == (5.0, 2.0, 8.0, pytest.approx(math.sqrt(20 / 3)), pytest.approx(7.7))
    assert b == (25.0, 10.0, 40.0, pytest.approx(math.sqrt(500 / 3)), pytest.approx(38.5))
    assert c == (6.0, 5.0, 7.0, pytest.approx(math.sqrt(2)), pytest.approx(6.9))


def test_late_event_within_lateness_joins_its_open_window():
    p = Partition()
    p.add(50, 1.0)
    p.add(65, 2.0, key="m-0002")  # wm 55
    assert p.add(52, 3.0) == (True, False)  # late, but [0, 60) is still open
    p.add(80, 0.0, key="m-0002")  # wm 70
    rows = p.advance()
    assert p.brief(rows)[0] == (M, 0.0, 60, 2, 0, 1, True, 0)
    assert stat(rows)[:3] == (2.0, 1.0, 3.0)


def finalised(policy: str, **kw) -> Partition:
    """[0, 60) holds 1 and 3 and has been emitted as final; the watermark is 65."""
    p = Partition(late_policy=policy, **kw)
    for seconds, value in [(10, 1.0), (20, 3.0), (75, 5.0)]:
        p.add(seconds, value)
    rows = p.advance()
    assert p.brief(rows) == [(M, 0.0, 60, 2, 0, 0, True, 0)] and rows.mean[0] == 2.0
    return p


def test_late_event_after_finalisation_is_dropped_under_drop():
    p = finalised("drop")
    assert p.add(30, 8.0) == (True, True)
    assert len(p.advance()) == 0  # the window is left alone
    assert p.brief(p.provisional()) == [(M, 60.0, 60, 1, 0, 0, False, -1)]


def test_late_event_after_finalisation_corrects_the_window_under_update():
    p = finalised("update")
    assert p.add(30, 8.0) == (True, False)
    rows = p.advance()
    assert p.brief(rows) == [(M, 0.0, 60, 3, 0, 1, True, 1)]
    # [1, 3, 8]: mean 4, var 13, p95 at rank 1.9 -> 7.5
    assert stat(rows) == (4.0, 1.0, 8.0, pytest.approx(math.sqrt(13)), pytest.approx(7.5))
    assert len(p.advance()) == 0  # emitted once
    p.add(40, None)  # a late null is a correction too
    assert p.brief(p.advance()) == [(M, 0.0, 60, 3, 1, 2, True, 2)]


def test_late_event_for_a_key_without_a_window_creates_its_first_final():
    p = finalised("update")
    p.add(30, 4.0, key="m-0002")
    assert p.brief(p.advance()) == [("m-0002", 0.0, 60, 1, 0, 1, True, 0)]


def test_beyond_the_correction_horizon_late_events_are_dropped():
    p = finalised("update", correction_horizon_s=120.0)  # [0, 60) correctable until wm 180
    p.add(185, 1.0)  # wm 175
    assert p.add(30, 7.0) == (True, False)
    assert [b for b in p.brief(p.advance()) if b[1] == 0.0] == [(M, 0.0, 60, 3, 0, 1, True, 1)]
    p.add(190, 1.0)  # wm 180: the horizon has passed, [0, 60) is forgotten
    p.advance()
    assert p.add(31, 9.0) == (True, True)
    assert len(p.advance()) == 0


def test_memory_is_bounded_by_the_correction_horizon():
    for policy, held in (("update", 4), ("drop", 2)):
        p = Partition(late_policy=policy, correction_horizon_s=120.0)
        for i in range(100):
            p.add(i * 60 + 1, 1.0)
            p.advance()
        # open [5880, 5940) and [5940, 6000); "update" keeps [5760, 5820) and [5820, 5880)
        assert windows.window_count(p.state) == held
        assert p.state._arena.size <= 1024  # and their values: the arena does not grow


def test_close_run_ends_the_run():
    p = finalised("update")  # [0, 60) emitted; [60, 120) open with 5; wm 65
    p.add(30, 7.0)  # a pending correction of [0, 60)
    p.add(250, None, key="m-0002")  # [240, 300) open; wm 240
    p.add(20, 1.0, run=1)  # another run: untouched
    assert p.brief(p.close(0)) == [
        (M, 0.0, 60, 3, 0, 1, True, 1),
        (M, 60.0, 60, 1, 0, 0, True, 0),  # due since wm 240, but advance() has not run
        ("m-0002", 240.0, 60, 0, 1, 0, True, 0),
    ]
    assert (windows.window_count(p.state, 0), windows.window_count(p.state, 1)) == (0, 1)
    assert (p.state.ended_ms[0], len(p.advance())) == (at(300), 0)
    assert p.add(299, 1.0) == (True, True)  # its window was closed by close_run
    assert p.add(300, 1.0) == (False, False)  # a new window opens as usual
    assert p.brief(p.provisional()) == [
        (M, 0.0, 60, 1, 0, 0, False, -1),  # run 1's
        (M, 300.0, 60, 1, 0, 0, False, -1),
    ]


def test_a_window_closed_by_the_end_of_its_run_drops_readings_whatever_their_late_flag():
    p = Partition()
    p.add(10, 1.0)
    p.close()
    ts = np.array([at(20), at(70)])
    dropped = windows.add(p.state, [0, 0], ts, [2.0, 3.0], [False, False], [False, False],
                          [NONE, NONE], np.array([0]))  # fmt: skip
    assert dropped.tolist() == [True, False]


def test_latest_revisions_do_not_depend_on_how_often_advance_is_called():
    rare, often = Partition(), Partition()
    got = []
    for seconds, value in [(10, 1.0), (50, 2.0), (62, 5.0), (55, 3.0), (130, 3.0), (20, 4.0)]:
        rare.add(seconds, value)
        often.add(seconds, value)
        got += often.brief(often.advance())
    # the late 20 s corrects [0, 60) when it was emitted already, else joins its emission
    assert got == [(M, 0.0, 60, 3, 0, 0, True, 0), (M, 60.0, 60, 1, 0, 0, True, 0),
                   (M, 0.0, 60, 4, 0, 1, True, 1)]  # fmt: skip
    assert rare.brief(rare.advance()) == [(M, 0.0, 60, 4, 0, 1, True, 0), got[1]]


def test_two_widths_at_once():
    p = Partition(widths_s=(60, 300), late_policy="drop")
    for seconds, value in [(30, 1.0), (90, 2.0), (150, 3.0), (270, 4.0), (290, 5.0)]:
        p.add(seconds, value)  # wm 280
    assert [b[1:4] for b in p.brief(p.advance())] == [(0, 60, 1), (60, 60, 1), (120, 60, 1)]
    assert p.add(100, 3.0) == (True, True)  # dropped from [60, 120), into [0, 300)
    p.add(320, 6.0)  # wm 310
    rows = p.advance()
    assert p.brief(rows) == [(M, 240.0, 60, 2, 0, 0, True, 0), (M, 0.0, 300, 6, 0, 1, True, 0)]
    assert rows.mean[0] == 4.5 and rows.end_ms[1] == at(300)
    # [1, 2, 3, 4, 5, 3]: mean 3, var 2; p95 at rank 4.75 of [1, 2, 3, 3, 4, 5] -> 4.75
    assert stat(rows, 1) == (3.0, 1.0, 5.0, pytest.approx(math.sqrt(2)), pytest.approx(4.75))


def test_provisional_results_are_marked_and_only_for_changed_open_windows():
    p = Partition()
    p.add(10, 1.0)
    p.add(20, 3.0)
    p.add(15, 5.0, key="m-0002")
    rows = p.provisional()
    assert p.brief(rows) == [(M, 0.0, 60, 2, 0, 0, False, -1),
                             ("m-0002", 0.0, 60, 1, 0, 0, False, -1)]  # fmt: skip
    assert rows.mean[0] == 2.0 and rows.quantile[0] == pytest.approx(2.9)
    assert len(p.provisional()) == 0  # nothing changed since
    p.add(30, 2.0)
    rows = p.provisional()
    assert (rows.key.tolist(), rows.count.tolist(), rows.mean.tolist()) == ([0], [3], [2.0])
    p.add(40, 1.0, key="m-0002")
    p.add(75, 1.0)  # wm 65: [0, 60) is due as final, no longer provisional
    assert p.brief(p.provisional()) == [(M, 60.0, 60, 1, 0, 0, False, -1)]
    rows = p.advance()
    assert [(b[0], b[3], b[6]) for b in p.brief(rows)] == [(M, 3, True), ("m-0002", 2, True)]


def test_nulls_are_counted_not_averaged():
    p = Partition()
    p.add(10, None)
    p.add(20, None)
    p.add(70, None, key="m-0002")
    p.add(75, 4.0, key="m-0002")
    p.add(130, 1.0)  # wm 120
    rows = p.advance()
    assert p.brief(rows) == [(M, 0.0, 60, 0, 2, 0, True, 0),
                             ("m-0002", 60.0, 60, 1, 1, 0, True, 0)]  # fmt: skip
    assert stat(rows, 0) == (None,) * 5
    assert stat(rows, 1) == (4.0, 4.0, 4.0, 0.0, 4.0)


def test_runs_have_their_own_watermarks():
    p = Partition()
    p.add(10, 1.0, run=0)
    p.add(10, 2.0, run=1)
    p.add(500, 3.0, run=1)  # run 1's watermark 490; run 0's stays at 0
    assert p.add(20, 4.0, run=0) == (False, False)
    # late in run 1: its [0, 60) is due as final but not emitted yet, so it joins the first
    # emission instead of correcting it
    assert p.add(20, 5.0, run=1) == (True, False)
    rows = p.advance()
    assert (p.brief(rows), rows.key.tolist(), rows.mean.tolist()) == (
        [(M, 0.0, 60, 2, 0, 1, True, 0)],
        [1],
        [3.5],
    )
    rows = p.provisional()  # run 0's [0, 60) is open still; run 1's [480, 540) too
    assert (rows.key.tolist(), rows.end_ms.tolist()) == ([0, 1], [at(60), at(540)])
    assert rows.mean.tolist() == [2.5, 3.0]


def test_checkpoint_mid_stream_behaves_the_same():
    cfg = config(widths_s=(60, 300), correction_horizon_s=120.0)
    events = [(5, 1.0), (62, 2.0), (50, None), (125, 3.0), (58, 4.0), (59, 5.0), (40, 6.0)]
    events += [(121, 7.0), (130, None), (20, 8.0), (61, 9.0), (400, 1.0), (100, 2.0)]
    events += [(1500, 3.0), (300, 4.0), (1510, 2.5), (1490, 1.5)]
    one, two = Partition(**cfg.__dict__), Partition(**cfg.__dict__)
    out: dict[int, list] = {1: [], 2: []}
    for i, (seconds, value) in enumerate(events):
        for n, p in ((1, one), (2, two)):
            out[n].append(p.add(seconds, value, key=f"m-{int(seconds) % 3}"))
            out[n] += [rows_tuple(p.provisional()), rows_tuple(p.advance())]
        if i == 6:  # a pending correction, changed windows, values in the arena
            buf = io.BytesIO()
            np.savez(buf, **two.state.arrays())
            with np.load(io.BytesIO(buf.getvalue()), allow_pickle=False) as npz:
                two.state = WindowState.from_arrays(dict(npz), two.cfg, two.state.cold.sealed)
    assert out[1] == out[2]
    revisions = [r for rows in out[1] if len(rows) == 14 for r in rows[-1]]
    assert max(revisions) > 0 and -1 in revisions  # corrections and provisional rows


def test_from_arrays_rejects_other_widths():
    arrays = WindowState(config(widths_s=(60,))).arrays()
    with pytest.raises(ValueError, match="widths"):
        WindowState.from_arrays(arrays, config(widths_s=(300,)))


def rows_tuple(rows: WindowRows, select=slice(None)) -> tuple:
    """Every column of the rows (or of the selected ones), as lists; NaN becomes None."""
    cols = []
    for name in WindowRows.__dataclass_fields__:
        values = getattr(rows, name)[select].tolist()
        cols.append([None if isinstance(v, float) and math.isnan(v) else v for v in values])
    return tuple(cols)


# -- the exact sum -------------------------------------------------------------------------


def hard_sums(rng: random.Random) -> list[list[float]]:
    """Sums that plain or compensated summation gets wrong."""
    cases = [[1e-16, 1.0, 1e16], [1e100, 1.0, -1e100, 1e-100, 1e50, -1.0, -1e50]]
    cases += [[0.1] * 10, [-0.0, -0.0], [-0.0, 0.0], [5e-324, 5e-324, -1e-323], []]
    cases += [[2.0**53, 1.0, 2.0**-53], [2.0**53, 1.0, -(2.0**-53)], [1.0, 2.0**-53, 2.0**-106]]
    for _ in range(300):
        n = rng.randint(1, 60)
        cases.append(
            [
                rng.uniform(-1, 1) * 10.0 ** rng.randint(-30, 30) * rng.choice((1, -1))
                for _ in range(n)
            ]
        )
        base = [rng.uniform(-1e6, 1e6) for _ in range(n)]
        cases.append(base + [-v for v in base] + [rng.uniform(-1e-9, 1e-9)])
    return cases


@pytest.mark.parametrize("compiled", [True, False], ids=["jit", "python"])
def test_values_read_in_order_are_pythons_stable_sort(compiled):
    """A window's values, appended in arrival order, then sorted and merged in on reading:
    as ``sorted`` has them, down to which zero comes first (the short tails take the
    insertion sort, the long ones the merges too)."""
    sort = windows._sort if compiled else getattr(windows._sort, "py_func", windows._sort)
    rng = random.Random(3)
    for n, reads in [(5, 1), (40, 3), (300, 1), (300, 7), (1000, 2)]:
        values = [rng.choice((0.0, -0.0, 1.0, -1.0, rng.uniform(-2, 2))) for _ in range(n)]
        win = np.zeros(1, windows.WINDOW)
        arena = np.zeros(n + 8)
        w = win[0]
        w["offset"], w["capacity"] = 3, n
        meta = np.zeros(5, np.int64)
        cuts = [*sorted(rng.sample(range(1, n), reads - 1)), n]
        done = 0
        for cut in cuts:
            for v in values[done:cut]:
                windows._append(win, arena, meta, 0, v)
            sort(win, arena, 0, np.empty(2 * n))
            done = cut
            assert bits(arena[3 : 3 + cut].tolist()) == bits(sorted(values[:cut]))
        assert (win[0]["sorted"], arena[:3].tolist(), arena[-5:].tolist()) == (
            n,
            [0.0] * 3,
            [0.0] * 5,
        )


@pytest.mark.parametrize("compiled", [True, False], ids=["jit", "python"])
def test_fsum_kernel_is_math_fsum_bit_for_bit(compiled):
    fsum = windows._fsum if compiled else getattr(windows._fsum, "py_func", windows._fsum)
    partials = np.empty(windows.PARTIALS)
    for case in hard_sums(random.Random(7)):
        x = np.array([0.0, *case, 0.0])
        got = fsum(x, 1, len(case), partials)
        want = math.fsum(case)
        assert got == want and math.copysign(1, got) == math.copysign(1, want), case


# -- parity with the reference on long streams ---------------------------------------------


class Twin:
    """The reference (one PartitionWindows per run, wall clock fixed, no idle timeout) and
    one WindowState, fed the same readings and asked at the same points.

    Key ids are given in (run, machine, sensor) order, so that rows ordered by (end, width,
    key) come in the reference's order (end, width, machine, sensor) within a run.
    """

    def __init__(self, cfg: WindowConfig, keys) -> None:
        assert cfg.idle_timeout_s is None
        self.cfg = cfg
        self.keys = sorted(set(keys))
        self.ids = {k: i for i, k in enumerate(self.keys)}
        self.key_run = np.array([k[0] for k in self.keys], np.int64)
        self.legacy = [PartitionWindows(cfg) for _ in range(int(self.key_run.max()) + 1)]
        self.state = WindowState(cfg)
        self.state.grow(len(self.keys))
        self.batch: list[tuple] = []
        self.seen = {"final": 0, "provisional": 0, "revision>0": 0, "late": 0, "dropped": 0,
                     "beyond horizon": 0, "read back": 0}  # fmt: skip
        self.stored: dict[int, bytes] = {}  # cold segments "in the database"

    def add(self, run: int, machine: str, sensor: str, ts: int, value: float | None) -> None:
        pw = self.legacy[run]
        wm = pw.watermark_ms
        outcome = pw.add(machine, sensor, ts, value, wall_s=0.0)
        wm = NONE if wm is None else wm
        self.batch.append((self.ids[(run, machine, sensor)], ts, value, wm, outcome))

    def flush(self) -> None:
        if not self.batch:
            return
        keys, ts, values, wm, outcomes = zip(*self.batch, strict=True)
        self.batch = []
        ts, wm = np.array(ts, np.int64), np.array(wm, np.int64)
        isnull = np.array([v is None for v in values])
        x = np.array([np.nan if v is None else v for v in values])
        late = ts < wm
        assert late.tolist() == [o.late for o in outcomes]
        dropped = windows.add(self.state, keys, ts, x, isnull, late, wm, self.key_run)
        assert dropped.tolist() == [o.dropped for o in outcomes]
        self.seen["late"] += int(late.sum())
        self.seen["dropped"] += int(dropped.sum())
        width = round(self.cfg.widths_s[0] * 1000)
        end = ts - ts % width + width
        beyond = late & (end + round(self.cfg.correction_horizon_s * 1000) <= wm)
        self.seen["beyond horizon"] += int(beyond.sum())

    def marks(self) -> np.ndarray:
        return np.array([NONE if pw.watermark_ms is None else pw.watermark_ms
                         for pw in self.legacy])  # fmt: skip

    def advance(self) -> None:
        self.flush()
        want = [pw.advance(0.0) for pw in self.legacy]
        self.compare(want, windows.advance(self.state, self.marks()))
        for run, pw in enumerate(self.legacy):
            assert windows.window_count(self.state, run) == pw.window_count

    def provisional(self) -> None:
        self.flush()
        want = [pw.provisional() for pw in self.legacy]
        self.compare(want, windows.provisional(self.state, self.marks()))

    def close(self, run: int) -> None:
        self.flush()
        want: list[list[WindowResult]] = [[] for _ in self.legacy]
        want[run] = self.legacy[run].close_all()
        self.compare(want, windows.close_run(self.state, run))
        assert self.state.ended_ms[run] == self.legacy[run]._ended_ms

    def checkpoint(self) -> None:
        """Carry on from the state's arrays, saved and loaded as a checkpoint is, with the
        cold segments stored as a sink stores them: each new one once, the unused deleted."""
        self.flush()
        buf = io.BytesIO()
        arrays = self.state.arrays()
        np.savez(buf, **arrays)
        self.stored.update(self.state.cold.take_new())
        self.stored = {s: self.stored[s] for s in arrays["cold_sealed"].tolist()}
        self.seen["read back"] += self.state.cold.decompressed
        with np.load(io.BytesIO(buf.getvalue()), allow_pickle=False) as npz:
            self.state = WindowState.from_arrays(dict(npz), self.cfg, self.stored)

    def compare(self, want: list[list[WindowResult]], rows: WindowRows) -> None:
        """Rows equal to the reference's, run by run, in the same order: every field
        exactly, but for provisional mean and stddev (1e-12 relative)."""
        runs = self.key_run[rows.key]
        assert len(rows) == sum(map(len, want))
        for run, expected in enumerate(want):
            if not expected:
                continue
            got = rows_tuple(rows, np.flatnonzero(runs == run))
            ref = [[self.ids[(run, r.machine_id, r.sensor_type)] for r in expected]]
            ref += [[getattr(r, name) for r in expected] for name in REFERENCE_FIELDS[1:]]
            for name, g, r in zip(WindowRows.__dataclass_fields__, got, ref, strict=True):
                if name in ("mean", "stddev") and not expected[0].final:
                    close = [a == b or math.isclose(a, b, rel_tol=1e-12)
                             for a, b in zip(g, r, strict=True)]  # fmt: skip
                    assert all(close), (name, expected[close.index(False)], g[close.index(False)])
                elif bits(g) != bits(r):  # bit for bit: -0.0 is not 0.0
                    pairs = enumerate(zip(bits(g), bits(r), strict=True))
                    bad = next(i for i, (a, b) in pairs if a != b)
                    raise AssertionError((name, expected[bad], g[bad]))
            self.seen["final" if expected[0].final else "provisional"] += len(expected)
            self.seen["revision>0"] += sum(r.revision > 0 for r in expected)


def bits(values: list) -> list:
    """Floats as their bit patterns (ints, None and bools as they are)."""
    return [struct.pack("<d", v) if isinstance(v, float) else v for v in values]


#: The reference's field for each column of WindowRows (the key is mapped to an id).
REFERENCE_FIELDS = ("key", "width_s", "window_start_ms", "window_end_ms", "count", "nulls")
REFERENCE_FIELDS += ("late", "mean", "min", "max", "stddev", "quantile", "final", "revision")


def replay(
    twin: Twin, events, seed: int, closes: dict[int, int] | None = None, sizes=(1, 1, 2, 5, 20, 100)
) -> dict:
    """Events (run, machine, sensor, ts, value) in arrival order, in batches of random sizes;
    after each batch an advance, sometimes provisional results, now and then a checkpoint;
    ``closes`` ends a run after the event at that position."""
    rng = random.Random(seed)
    closes = closes or {}
    ops = [twin.advance, twin.provisional, twin.checkpoint]
    left = 0
    for i, event in enumerate(events):
        twin.add(*event)
        if i in closes:
            twin.close(closes[i])
        left -= 1
        if left <= 0:
            left = rng.choice(sizes)
            for op, p in zip(ops, (0.8, 0.3, 0.02), strict=True):
                if rng.random() < p:
                    op()
    twin.advance()
    twin.provisional()
    for run in range(len(twin.legacy)):
        twin.close(run)
    twin.seen["read back"] += twin.state.cold.decompressed
    return twin.seen


def delayed(events: list, seed: int, small: float = 0.05, big: float = 0.005) -> list:
    """Arrival order with some readings held back: a few places (small), hundreds to
    thousands of places (big), and for three in ten of the big ones tens of thousands of
    places (later than the correction horizon)."""
    rng = random.Random(seed)
    arrival = []
    for i in range(len(events)):
        r = rng.random()
        delay = 0
        if r < small:
            delay = rng.randint(1, 6)
        elif r < small + big:
            delay = rng.randint(200, 3000) if rng.random() < 0.7 else rng.randint(10000, 60000)
        arrival.append(i + delay)
    order = sorted(range(len(events)), key=arrival.__getitem__)
    return [events[i] for i in order]


CONFIGS = {
    "update": dict(widths_s=(60, 300, 45), late_policy="update", correction_horizon_s=600.0),
    "drop": dict(widths_s=(60, 300, 45), late_policy="drop"),
    "update-long": dict(widths_s=(45, 3600, 60), allowed_lateness_s=120.0, late_policy="update",
                        correction_horizon_s=7200.0, quantile=0.5),
}  # fmt: skip


def nab_events() -> list:
    path = DATA / "nab" / "machine_temperature_system_failure.csv"
    if not path.exists():
        pytest.skip(f"real data not found: {path}")
    lines = path.read_text().splitlines()[1:]
    stamps = np.array([line.split(",")[0].replace(" ", "T") for line in lines], "datetime64[ms]")
    ts = stamps.astype(np.int64).tolist()
    assert min(np.diff(ts)) == -55 * 60_000  # the clock steps back 55 minutes
    values = [float(line.split(",")[1]) for line in lines]
    return [(0, "nab", "temperature", t, None if i % 23 == 7 else v)
            for i, (t, v) in enumerate(zip(ts, values, strict=True))]  # fmt: skip


@pytest.mark.parametrize("name", CONFIGS)
def test_parity_on_nab_with_its_clock_step_back(name):
    events = nab_events()
    twin = Twin(config(**CONFIGS[name]), [e[:3] for e in events])
    seen = replay(twin, events, seed=1, sizes=(1, 2, 5, 20))
    assert seen["final"] > 20_000 and seen["late"] >= 11 and seen["provisional"] > 500
    # the readings of the step back correct the minute windows they belong to, unless these
    # are past the horizon (all under "update": 45 and 60 s windows end 10 min before)
    assert seen["revision>0"] == {"update": 5, "drop": 0, "update-long": 4}[name]


SKAB = ["valve1/0.csv", "valve1/1.csv", "other/1.csv", "other/7.csv"]


def skab_events(seed: int) -> list:
    """The SKAB files as runs (one machine each, 8 sensors), interleaved in chunks, 2% of
    values null."""
    rng = random.Random(seed)
    per_run = []
    for run, name in enumerate(SKAB):
        path = DATA / "skab" / name
        if not path.exists():
            pytest.skip(f"real data not found: {path}")
        lines = path.read_text().splitlines()
        sensors = lines[0].split(";")[1:9]
        rows = [line.split(";") for line in lines[1:]]
        stamps = np.array([r[0].replace(" ", "T") for r in rows], "datetime64[ms]")
        events = []
        for r, t in zip(rows, stamps.astype(np.int64).tolist(), strict=True):
            for sensor, v in zip(sensors, r[1:9], strict=True):
                events.append((run, name, sensor, t, None if rng.random() < 0.02 else float(v)))
        per_run.append(events)
    out = []
    while any(per_run):
        run = rng.choice([r for r, e in enumerate(per_run) if e])
        take = rng.randint(1, 400)
        out += per_run[run][:take]
        per_run[run] = per_run[run][take:]
    return out


@pytest.mark.parametrize("name", ["update", "drop"])
def test_parity_on_skab_runs_interleaved_delayed_and_one_ended_mid_stream(name):
    events = delayed(skab_events(seed=2), seed=3)
    run0 = [i for i, e in enumerate(events) if e[0] == 0]
    closes = {run0[len(run0) * 2 // 3]: 0}  # run 0 ends; its later readings still arrive
    twin = Twin(config(**CONFIGS[name]), [e[:3] for e in events])
    seen = replay(twin, events, seed=4, closes=closes)
    assert seen["late"] > 500 and seen["dropped"] > 100 and seen["final"] > 1000
    assert seen["beyond horizon"] > 5 and (name == "drop" or seen["revision>0"] > 100)
    assert name == "drop" or seen["read back"] > 10  # corrections of windows in cold segments


def crafted_events(seed: int) -> list:
    """3 runs x 5 machines x 2 sensors, readings every ~2 s with jitter, interleaved; run 2
    starts before the epoch (negative times); values of very different magnitudes, repeats,
    outliers, and a machine of zeros of either sign; 10% nulls."""
    rng = random.Random(seed)
    origin = {0: T0, 1: T0 + 3_600_000, 2: -200_000}
    base = {"m-a": 0.0, "m-b": 1e8, "m-c": -3e5, "m-d": 1e-6, "m-z": 0.0}
    scale = {"m-a": 1.0, "m-b": 5.0, "m-c": 1e-3, "m-d": 1e-9, "m-z": 0.0}
    events = []
    for run, start in origin.items():
        for step in range(700):
            t = start + step * 2000
            for machine in base:
                for sensor in ("temperature", "vibration"):
                    ts = t + rng.randint(-900, 900)
                    r = rng.random()
                    if r < 0.1:
                        value = None
                    elif r < 0.13:
                        value = rng.choice((0.0, -0.0, base[machine]))
                    elif r < 0.14:
                        value = base[machine] + rng.choice((1, -1)) * 1e4 * scale[machine]
                    else:
                        value = base[machine] + round(rng.gauss(0, scale[machine]), 3 + step % 7)
                    events.append((run, machine, sensor, ts, value))
    events.sort(key=lambda e: (e[3] - origin[e[0]], e[0]))  # runs side by side
    return events


@pytest.mark.parametrize("name", CONFIGS)
def test_parity_on_a_crafted_multi_run_stream(name):
    events = delayed(crafted_events(seed=5), seed=6, small=0.1, big=0.01)
    run1 = [i for i, e in enumerate(events) if e[0] == 1]
    twin = Twin(config(**CONFIGS[name]), [e[:3] for e in events])
    seen = replay(twin, events, seed=7, closes={run1[len(run1) // 2]: 1})
    assert seen["late"] > 500 and seen["dropped"] > 50 and seen["provisional"] > 5000
    assert name == "drop" or seen["revision>0"] > 100
    assert name == "update-long" or seen["beyond horizon"] > 10  # (its horizon is 2 hours)
    assert name == "drop" or seen["read back"] > 10


def small_stream_parity() -> dict:
    """A short crafted stream through the twin (also run with the JIT off)."""
    events = delayed(crafted_events(seed=8)[:1500], seed=9, small=0.1, big=0.02)
    cfg = config(widths_s=(60, 45), late_policy="update", correction_horizon_s=120.0)
    twin = Twin(cfg, [e[:3] for e in events])
    run1 = [i for i, e in enumerate(events) if e[0] == 1]
    return replay(twin, events, seed=10, closes={run1[len(run1) // 2]: 1})


def test_small_stream_parity_compiled():
    seen = small_stream_parity()
    assert seen["final"] > 100 and seen["revision>0"] > 0 and seen["dropped"] > 0


def test_small_stream_parity_with_the_jit_off():
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import test_kernel_windows as t, workbench.processor.kernels as k;"
        "assert not k.JIT; print(t.small_stream_parity())"
    )
    env = os.environ | {"WORKBENCH_JIT": "0"}
    done = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent)], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "'final'" in done.stdout


def test_keep_drops_a_run_and_renumbers_keys_and_runs():
    cfg = config(widths_s=(60, 45), late_policy="update")
    events = crafted_events(seed=11)[:2000]
    a = Twin(cfg, [e[:3] for e in events])
    first, rest = events[:1000], events[1000:]
    for e in first:
        a.add(*e)
    a.close(1)
    a.advance()
    # drop run 1 from a: its keys go, runs 0 and 2 become 0 and 1
    kept = np.flatnonzero(a.key_run != 1)
    a.state.keep(kept, runs=np.array([0, 2]))
    a.legacy = [a.legacy[0], a.legacy[2]]
    a.keys = [(0 if r == 0 else 1, m, s) for r, m, s in (a.keys[k] for k in kept.tolist())]
    a.ids = {k: i for i, k in enumerate(a.keys)}
    a.key_run = np.array([k[0] for k in a.keys], np.int64)
    a.checkpoint()
    for e in rest:
        if e[0] != 1:
            a.add(0 if e[0] == 0 else 1, *e[1:])
    a.advance()
    a.provisional()
    for run in (0, 1):
        a.close(run)
    assert a.seen["final"] > 100


# -- speed (not a test of speed: it prints, for the report) --------------------------------


def measure(n: int = 1_000_000, keys: int = 1000, batch: int = 10_000) -> dict:
    """CPU µs per reading, kernels vs the reference, on a synthetic stream: 1 reading/s per
    key, arrival jitter under a second, 60 s and 300 s windows, 2% nulls; after each batch
    an advance, and (second figures) provisional results as well."""
    import time

    rng = np.random.default_rng(0)
    cfg = config(widths_s=(60, 300))
    key = np.tile(np.arange(keys), n // keys)
    ts = T0 + np.repeat(np.arange(n // keys), keys) * 1000 + rng.integers(0, 1000, n)
    x = rng.normal(50, 5, n)
    isnull = rng.random(n) < 0.02
    before = np.concatenate([[NONE], np.maximum.accumulate(ts)[:-1] - 10_000])
    late = ts < before
    key_run = np.zeros(keys, np.int64)

    def kernels(m: int, with_provisional: bool) -> float:
        state = WindowState(cfg)
        state.grow(keys)
        t = time.process_time()
        for i in range(0, m, batch):
            s = slice(i, min(i + batch, m))
            windows.add(state, key[s], ts[s], x[s], isnull[s], late[s], before[s], key_run)
            windows.advance(state, before[s][-1:])
            if with_provisional:
                windows.provisional(state, before[s][-1:])
        return (time.process_time() - t) / m * 1e6

    def legacy(m: int, with_provisional: bool) -> float:
        pw = PartitionWindows(cfg)
        names = [f"m-{k}" for k in range(keys)]
        values = [None if isnull[i] else float(x[i]) for i in range(m)]
        stamps = ts[:m].tolist()
        t = time.process_time()
        for i in range(m):
            pw.add(names[key[i]], S, stamps[i], values[i], 0.0)
            if i % batch == batch - 1:
                pw.advance(0.0)
                if with_provisional:
                    pw.provisional()
        return (time.process_time() - t) / m * 1e6

    kernels(n // 10, True)  # compiled (or loaded from the cache) first
    out = {}
    for name, flag in (("advance", False), ("advance+provisional", True)):
        k, ref = kernels(n, flag), legacy(n // 2, flag)
        out[name] = {"kernel_us": round(k, 3), "legacy_us": round(ref, 3),
                     "ratio": round(ref / k, 1)}  # fmt: skip
    return out


if __name__ == "__main__":
    print(measure())
