"""Dense ids for what the processor keeps state of, within one Kafka partition.

Every piece of per-key state (statistics, rolling means, windows, rule hysteresis) lives in
arrays indexed by a small integer, so a batch is mapped to ids once and the kernels index
arrays. A *key* is a (run, machine, sensor) series; a *machine key* a (run, machine) pair
(status rules speak of the machine); a *run* a run id seen on the partition.

Machines come in as ids of the loop's :class:`~workbench.processor.decode.MachineTable`
(shared by all the partitions a process owns); checkpoints store names, so another process
maps them to its own ids on restore.

>>> import numpy as np
>>> names = MachineTable(["m-1", "m-2"])
>>> m = np.array([0, 1])
>>> table = KeyTable(names)
>>> runs = table.run_ids(["r1", "r1", "r1"])
>>> keys, mkeys = table.intern(runs, m[[0, 1, 0]], np.array([2, 2, 0]))
>>> keys.tolist(), mkeys.tolist(), table.n_keys, table.n_mkeys
([0, 1, 2], [0, 1, 0], 3, 2)
>>> table.describe(2)
('r1', 'm-1', 0)
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from workbench.processor.decode import MachineTable

#: Sensor indexes are below this (the reading schema's enum has 12 symbols).
SENSOR_SLOTS = 16


class KeyTable:
    """Runs, keys and machine keys of one partition, as dense ids (see the module docstring)."""

    def __init__(self, machines: MachineTable) -> None:
        self.machines = machines
        self.runs: list[str] = []
        self._run_index: dict[str, int] = {}
        self.key_run = np.zeros(0, np.int64)
        self.key_machine = np.zeros(0, np.int64)  # index into machines
        self.key_sensor = np.zeros(0, np.int64)
        self.key_mkey = np.zeros(0, np.int64)
        self.mkey_run = np.zeros(0, np.int64)
        self.mkey_machine = np.zeros(0, np.int64)
        self._keys: dict[int, np.ndarray] = {}  # run -> dense lookup machine*16+sensor -> key
        self._mkeys: dict[int, np.ndarray] = {}  # run -> dense lookup machine -> mkey

    @property
    def n_keys(self) -> int:
        return self.key_run.size

    @property
    def n_mkeys(self) -> int:
        return self.mkey_run.size

    def run_id(self, name: str) -> int:
        i = self._run_index.get(name)
        if i is None:
            i = self._run_index[name] = len(self.runs)
            self.runs.append(name)
        return i

    def run_ids(self, names: Sequence[str]) -> np.ndarray:
        return np.array([self.run_id(n) for n in names], dtype=np.int64)

    def has_run(self, name: str) -> bool:
        return name in self._run_index

    def intern(
        self, runs: np.ndarray, machines: np.ndarray, sensors: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Key ids and machine-key ids of rows (run, machine, sensor); new ones created in
        order of first appearance."""
        keys = np.empty(runs.size, np.int64)
        mkeys = np.empty(runs.size, np.int64)
        for run in np.unique(runs).tolist():
            rows = np.flatnonzero(runs == run) if runs.size and (runs != run).any() else None
            m = machines if rows is None else machines[rows]
            s = sensors if rows is None else sensors[rows]
            mk = self._lookup(self._mkeys, run, m, len(self.machines), self._new_mkeys)
            k = self._lookup(self._keys, run, m * SENSOR_SLOTS + s,
                             len(self.machines) * SENSOR_SLOTS, self._new_keys)  # fmt: skip
            if rows is None:
                keys[:], mkeys[:] = k, mk
            else:
                keys[rows], mkeys[rows] = k, mk
        return keys, mkeys

    def _lookup(self, tables: dict, run: int, codes: np.ndarray, size: int, create) -> np.ndarray:
        table = tables.get(run)
        if table is None or table.size < size:
            grown = np.full(max(size, 64), -1, np.int64)
            if table is not None:
                grown[: table.size] = table
            table = tables[run] = grown
        ids = table[codes]
        missing = ids < 0
        if missing.any():
            new, first = np.unique(codes[missing], return_index=True)
            new = new[np.argsort(first)]  # ids in order of first appearance
            table[new] = create(run, new)
            ids = table[codes]
        return ids

    def _new_mkeys(self, run: int, machines: np.ndarray) -> np.ndarray:
        start = self.n_mkeys
        self.mkey_run = np.concatenate([self.mkey_run, np.full(machines.size, run, np.int64)])
        self.mkey_machine = np.concatenate([self.mkey_machine, machines])
        return np.arange(start, self.n_mkeys, dtype=np.int64)

    def _new_keys(self, run: int, codes: np.ndarray) -> np.ndarray:
        start = self.n_keys
        machines, sensors = np.divmod(codes, SENSOR_SLOTS)
        mkeys = self._lookup(self._mkeys, run, machines, len(self.machines), self._new_mkeys)
        self.key_run = np.concatenate([self.key_run, np.full(codes.size, run, np.int64)])
        self.key_machine = np.concatenate([self.key_machine, machines])
        self.key_sensor = np.concatenate([self.key_sensor, sensors])
        self.key_mkey = np.concatenate([self.key_mkey, mkeys])
        return np.arange(start, self.n_keys, dtype=np.int64)

    def describe(self, key: int) -> tuple[str, str, int]:
        """(run id, machine id, sensor index) of a key."""
        return (self.runs[self.key_run[key]], self.machines.names[self.key_machine[key]],
                int(self.key_sensor[key]))  # fmt: skip

    def machine_names(self) -> _Names:
        """Machine id of each machine key, looked up when asked (a batch's rules read only
        the new ones)."""
        return _Names(self.machines.names, self.mkey_machine)

    def sensor_names(self, symbols: Sequence[str]) -> _Names:
        """Sensor name of each key, looked up when asked."""
        return _Names(symbols, self.key_sensor)

    def drop_runs(self, gone: set[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Forget runs (and their keys); ids are renumbered densely in their old order.
        Returns the kept (old) key ids, machine-key ids and run ids, for the state arrays."""
        kept_runs = np.array([r for r in range(len(self.runs)) if r not in gone], np.int64)
        run_map = np.full(len(self.runs), -1, np.int64)
        run_map[kept_runs] = np.arange(kept_runs.size)
        keep_keys = np.flatnonzero(run_map[self.key_run] >= 0)
        keep_mkeys = np.flatnonzero(run_map[self.mkey_run] >= 0)
        mkey_map = np.full(self.n_mkeys, -1, np.int64)
        mkey_map[keep_mkeys] = np.arange(keep_mkeys.size)
        runs = [self.runs[r] for r in kept_runs.tolist()]
        self._rebuild(runs, self.machines.names, run_map[self.key_run[keep_keys]],
                      self.key_machine[keep_keys], self.key_sensor[keep_keys],
                      run_map[self.mkey_run[keep_mkeys]], self.mkey_machine[keep_mkeys],
                      mkey_map[self.key_mkey[keep_keys]])  # fmt: skip
        return keep_keys, keep_mkeys, kept_runs

    def _rebuild(self, runs, names, key_run, key_machine, key_sensor, mkey_run, mkey_machine,
                 key_mkey) -> None:  # fmt: skip
        self.runs = list(runs)
        self._run_index = {name: i for i, name in enumerate(self.runs)}
        self.key_run, self.key_machine, self.key_sensor = key_run, key_machine, key_sensor
        self.mkey_run, self.mkey_machine, self.key_mkey = mkey_run, mkey_machine, key_mkey
        self._keys, self._mkeys = {}, {}
        size = len(names)
        for run in range(len(self.runs)):
            k = np.full(max(size * SENSOR_SLOTS, 64), -1, np.int64)
            rows = np.flatnonzero(key_run == run)
            k[key_machine[rows] * SENSOR_SLOTS + key_sensor[rows]] = rows
            self._keys[run] = k
            mk = np.full(max(size, 64), -1, np.int64)
            rows = np.flatnonzero(mkey_run == run)
            mk[mkey_machine[rows]] = rows
            self._mkeys[run] = mk

    def arrays(self) -> dict[str, np.ndarray]:
        """For a checkpoint: names as JSON bytes, ids as arrays."""
        used = np.unique(np.concatenate([self.key_machine, self.mkey_machine]))
        local = np.full(len(self.machines), -1, np.int64)
        local[used] = np.arange(used.size)
        names = [self.machines.names[m] for m in used.tolist()]
        meta = json.dumps({"runs": self.runs, "machines": names}).encode()
        return {"meta": np.frombuffer(meta, np.uint8), "key_run": self.key_run,
                "key_machine": local[self.key_machine], "key_sensor": self.key_sensor,
                "key_mkey": self.key_mkey, "mkey_run": self.mkey_run,
                "mkey_machine": local[self.mkey_machine]}  # fmt: skip

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], machines: MachineTable) -> KeyTable:
        meta = json.loads(arrays["meta"].tobytes())
        to_global = np.array([machines.id_of(n.encode()) for n in meta["machines"]], np.int64)
        table = cls(machines)
        g = lambda a: to_global[a] if a.size else a.astype(np.int64)  # noqa: E731
        table._rebuild(meta["runs"], machines.names, arrays["key_run"].copy(),
                       g(arrays["key_machine"]), arrays["key_sensor"].copy(),
                       arrays["mkey_run"].copy(), g(arrays["mkey_machine"]),
                       arrays["key_mkey"].copy())  # fmt: skip
        return table


class _Names:
    """``names[ids[i]]`` for ``i``, without building the whole list."""

    def __init__(self, names: Sequence[str], ids: np.ndarray) -> None:
        self._names, self._ids = names, ids

    def __getitem__(self, i: int) -> str:
        return self._names[self._ids[i]]

    def __len__(self) -> int:
        return self._ids.size
