"""Event-time watermarks of the runs in one Kafka partition, and the late flag of each reading.

Each run is its own event-time universe (a seeded run starts at a fixed origin), so each run
on a partition has its own watermark: the largest event time seen minus the allowed lateness.
A reading is *late* when its event time is behind its run's watermark on arrival. The
watermark never moves back, and it depends on the readings alone, in partition order, so a
run processed twice (after a crash, by another worker, at another speed) gets the same late
flags.

Two things could still move it wrongly, and are contained:

- **A broken clock.** A reading dated far ahead of the rest of its run (more than
  ``max_jump_ms`` past the largest event time so far) does not move the watermark on its
  own: it is stored and windowed as any reading, but only ``confirm`` such readings *in a
  row* move the clock forward (a replayed file that really jumps ahead, a device back after
  a long gap). One reading from the future therefore cannot make the readings after it late.
- **Idleness.** A run that stops sending would keep its windows open. Only when its
  partition has *nothing left to read* (the processor has caught up with the broker) and the
  run has been quiet for the idle timeout of wall time does :func:`idle_advance` move its
  watermark with the wall clock. A partition with a backlog (a slow or restarted processor, a
  database outage) is never idle, so the wall clock cannot change a result there.

>>> import numpy as np
>>> state = WatermarkState(lateness_ms=10_000, max_jump_ms=3_600_000, confirm=3)
>>> state.grow(1)
>>> runs = np.zeros(5, dtype=np.int64)
>>> ts = np.array([100_000, 80_000, 999_000_000, 101_000, 89_000])
>>> late, before = observe(state, runs, ts)
>>> late.tolist()  # 80 s is behind 100 s - 10 s; the far-future reading moved nothing
[False, True, False, False, True]
>>> int(state.watermark[0])
91000
"""

from __future__ import annotations

import numpy as np

from workbench.processor.kernels import kernel

#: "No watermark yet" (and "no event time seen yet").
NONE = np.iinfo(np.int64).min
VERSION = 1


class WatermarkState:
    """Per run of a partition: the clock (largest confirmed event time), the watermark, and
    the readings ahead of the clock that are waiting for confirmation.

    Parameters
    ----------
    lateness_ms
        How far the watermark trails the largest event time.
    max_jump_ms
        A reading further than this past the largest event time is *ahead*: it moves the
        clock only when ``confirm`` readings in a row are ahead.
    confirm
        Readings ahead in a row that prove the clock really jumped.
    """

    def __init__(self, lateness_ms: int, max_jump_ms: int, confirm: int = 3) -> None:
        self.lateness_ms, self.max_jump_ms, self.confirm = lateness_ms, max_jump_ms, confirm
        self.clock = np.zeros(0, dtype=np.int64)
        self.watermark = np.zeros(0, dtype=np.int64)
        self.ahead = np.zeros(0, dtype=np.int64)  # readings ahead in a row
        self.ahead_max = np.zeros(0, dtype=np.int64)
        self.contained = np.zeros(0, dtype=np.int64)  # readings that were ahead, ever

    @property
    def n_runs(self) -> int:
        return self.clock.size

    def grow(self, n_runs: int) -> None:
        extra = n_runs - self.n_runs
        if extra > 0:
            none = np.full(extra, NONE, np.int64)
            zero = np.zeros(extra, np.int64)
            self.clock = np.concatenate([self.clock, none])
            self.watermark = np.concatenate([self.watermark, none])
            self.ahead = np.concatenate([self.ahead, zero])
            self.ahead_max = np.concatenate([self.ahead_max, none])
            self.contained = np.concatenate([self.contained, zero])

    def keep(self, ids: np.ndarray) -> None:
        for name in ("clock", "watermark", "ahead", "ahead_max", "contained"):
            setattr(self, name, getattr(self, name)[ids])

    def arrays(self) -> dict[str, np.ndarray]:
        return {"version": np.array(VERSION), "clock": self.clock, "watermark": self.watermark,
                "ahead": self.ahead, "ahead_max": self.ahead_max,
                "contained": self.contained}  # fmt: skip

    @classmethod
    def from_arrays(
        cls, arrays: dict[str, np.ndarray], lateness_ms: int, max_jump_ms: int, confirm: int = 3
    ) -> WatermarkState:
        version = int(arrays["version"])
        if version != VERSION:
            raise ValueError(f"watermark state version {version}, this code reads {VERSION}")
        state = cls(lateness_ms, max_jump_ms, confirm)
        for name in ("clock", "watermark", "ahead", "ahead_max", "contained"):
            setattr(state, name, arrays[name].copy())
        return state


def observe(
    state: WatermarkState, runs: np.ndarray, ts_ms: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Readings in partition order: their late flags and their run's watermark on arrival
    (:data:`NONE` before the run's first reading); the watermarks move on."""
    late = np.zeros(runs.size, dtype=np.bool_)
    before = np.empty(runs.size, dtype=np.int64)
    s = state
    _observe(runs, ts_ms, s.clock, s.watermark, s.ahead, s.ahead_max, s.contained,
             s.lateness_ms, s.max_jump_ms, s.confirm, late, before)  # fmt: skip
    return late, before


@kernel
def _observe(runs, ts, clock, watermark, ahead, ahead_max, contained, lateness, max_jump,
             confirm, late, before):  # fmt: skip
    none = np.iinfo(np.int64).min
    for i in range(runs.size):
        r = runs[i]
        t = ts[i]
        wm = watermark[r]
        before[i] = wm
        late[i] = wm != none and t < wm
        c = clock[r]
        if c == none:
            clock[r] = t
            watermark[r] = t - lateness
        elif t - c <= max_jump:
            ahead[r] = 0
            if t > c:
                clock[r] = t
                if t - lateness > wm:
                    watermark[r] = t - lateness
        else:
            contained[r] += 1
            if ahead[r] == 0 or t > ahead_max[r]:
                ahead_max[r] = t
            ahead[r] += 1
            if ahead[r] >= confirm:
                clock[r] = ahead_max[r]
                watermark[r] = max(wm, ahead_max[r] - lateness)
                ahead[r] = 0


def idle_advance(state: WatermarkState, runs: np.ndarray, quiet_ms: np.ndarray) -> None:
    """Move the watermarks of ``runs`` as if event time had kept pace with the wall clock
    for ``quiet_ms`` since their last reading. Only for runs of a partition that has nothing
    left to read (see the module docstring)."""
    for r, quiet in zip(runs.tolist(), quiet_ms.tolist(), strict=True):
        if state.clock[r] != NONE:
            state.watermark[r] = max(
                state.watermark[r], state.clock[r] + int(quiet) - state.lateness_ms
            )
