"""Re-delivered readings: a sequence number seen again for its key counts once.

A reading delivered twice (a producer retry, a chaos duplicate, a replay of the same run)
carries the same per-(machine, sensor) ``seq``. The processor remembers the last
:data:`RECENT` sequence numbers of every key, in arrival order, and a reading whose ``seq``
is among them is a duplicate: it is counted, and neither stored again nor seen by windows,
statistics or rules. A copy that arrives after more than ``RECENT`` newer readings of its key
is not recognised here; the readings table's primary key still absorbs it.

>>> import numpy as np
>>> state = DedupState()
>>> state.grow(2)
>>> dedupe(state, np.array([0, 0, 1, 0]), np.array([5, 6, 5, 5])).tolist()
[False, False, False, True]
"""

from __future__ import annotations

import numpy as np

from workbench.processor.kernels import kernel

#: Sequence numbers remembered per key.
RECENT = 32
VERSION = 1


class DedupState:
    """Per key: a ring of its last :data:`RECENT` sequence numbers and where it writes next."""

    def __init__(self) -> None:
        self.recent = np.full((0, RECENT), -1, dtype=np.int64)
        self.count = np.zeros(0, dtype=np.int64)  # sequence numbers written so far

    @property
    def n_keys(self) -> int:
        return self.count.size

    def grow(self, n_keys: int) -> None:
        """Room for key ids below ``n_keys``; new keys have seen nothing."""
        extra = n_keys - self.n_keys
        if extra > 0:
            self.recent = np.vstack([self.recent, np.full((extra, RECENT), -1, np.int64)])
            self.count = np.concatenate([self.count, np.zeros(extra, np.int64)])

    def keep(self, ids: np.ndarray) -> None:
        self.recent, self.count = self.recent[ids], self.count[ids]

    def arrays(self) -> dict[str, np.ndarray]:
        return {"version": np.array(VERSION), "recent": self.recent, "count": self.count}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> DedupState:
        _check_version(arrays)
        state = cls()
        state.recent, state.count = arrays["recent"].copy(), arrays["count"].copy()
        return state


def dedupe(state: DedupState, keys: np.ndarray, seq: np.ndarray) -> np.ndarray:
    """Mark the readings whose sequence number their key has seen recently (arrival order);
    the others are remembered."""
    dup = np.zeros(keys.size, dtype=np.bool_)
    _dedupe(keys, seq, state.recent, state.count, dup)
    return dup


@kernel
def _dedupe(keys, seq, recent, count, dup):
    width = recent.shape[1]
    for i in range(keys.size):
        k = keys[i]
        s = seq[i]
        seen = min(count[k], width)
        found = False
        for j in range(seen):
            if recent[k, j] == s:
                found = True
                break
        if found:
            dup[i] = True
        else:
            recent[k, count[k] % width] = s
            count[k] += 1


def _check_version(arrays: dict[str, np.ndarray]) -> None:
    version = int(arrays["version"])
    if version != VERSION:
        raise ValueError(f"dedup state version {version}, this code reads {VERSION}")
