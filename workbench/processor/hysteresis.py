"""Alert rules over column batches: breaches in numpy, hysteresis in a kernel.

:class:`RuleEngine` gives exactly the alert transitions of the per-reading
:class:`~workbench.processor.legacy.alerts.AlertEngine` (the reference; its module docstring
and ``tests/test_alerts.py`` say what the rules mean), in the same order, for readings that
come in batches of columns in arrival order. Per batch:

1. *breaches*: for every rule, one int8 code per reading (``-1`` not judged, ``0`` normal,
   ``1`` breach) from a few numpy passes over the columns. A rule judges a reading of a
   sensor and machine it watches; except ``status`` and ``null`` rules, only readings with
   status 0 and a value; ``anomaly`` rules only readings with a score, ``model`` rules only
   those with a model score. ``stuck`` compares a value with the previous one of its key,
   carried from batch to batch, unless the key moves in steps (its runs of equal values are
   long on average: a stepped sensor's plateaus are not a stuck sensor).
2. *hysteresis*: a kernel walks the batch once, stepping the per-(key, rule) counters only
   where a reading breaches or the counters are already running, and writes the transitions
   (opened, updated, closed) to an event buffer. Status rules count per machine key.
3. *alone rules* (``alone_s``): a breach is held until ``alone_s`` of event time has passed
   on its machine, then replayed, as normal readings if another sensor of the machine was
   excited within ``alone_s`` of it. That needs lists of held readings and of recent
   excitements, so it runs in Python, but only on the rows where it has something to do,
   which a kernel finds: a breach of such a rule, a reading of a key with held breaches or
   running counters, a reading of a machine with a held breach that is due, a score that
   excites (is above the lowest ``alone_score``).

The two streams of transitions are merged in the reference's order: per reading, first what
a release of held breaches decided, then the rules in file order.

Rules are configuration: :meth:`RuleEngine.arrays` stores the counters and held breaches by
rule *name* and kind, and :meth:`RuleEngine.from_arrays` with another rule set keeps those of
rules that still exist with the same name and kind (under their new settings) and drops the
rest, so a restored processor applies the current rules file.

>>> from workbench.processor.rules import Rule, RuleSet
>>> hot = Rule("hot", "threshold", ("temperature",), above=30.0, open_after=2, close_after=2)
>>> engine = RuleEngine(RuleSet((hot,)))
>>> values = np.array([25.0, 31.0, 32.0, 33.0, 29.0, 35.0, 28.0, 27.0])
>>> n = values.size
>>> zeros = np.zeros(n, np.int64)
>>> for e in engine.observe(zeros, zeros, ["m-1"], ["temperature"], np.arange(n), values,
...                         np.isnan(values), zeros, np.full(n, np.nan), zeros.astype(bool)):
...     print(e.event_ts, e.state, e.start_ts, e.breaches, e.peak)
2 opened 1 2 32.0
5 updated 1 4 35.0
7 closed 1 4 35.0
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from workbench.processor.kernels import kernel
from workbench.processor.rules import Rule, RuleSet

log = logging.getLogger(__name__)

VERSION = 1

# fields of the int64 counters, per (key or machine key, rule)
OPEN, START, OPENED, BREACHES, NORMALS, EMITTED, RUN, RUN_START = range(8)
N_INT = 8
# fields of the float64 counters: the peak of the open alert, of the current breach run
PEAK, RUN_PEAK = range(2)
N_FLOAT = 2
# what a step did
NOTHING, OPENED_NOW, UPDATED_NOW, CLOSED_NOW = range(4)
STATES = ("", "opened", "updated", "closed")
# how a rule picks the more extreme of two measures
PEAK_MAX, PEAK_MIN, PEAK_FARTHEST = range(3)
# what a rule measures: the value, the score, the status code, nothing, the model's score
MEASURE_VALUE, MEASURE_SCORE, MEASURE_STATUS, MEASURE_NONE, MEASURE_MODEL = range(5)
#: Recent excitements remembered per key for the alone_s decision (as the reference).
EXCITED_KEPT = 16
#: A sensor whose runs of equal values are longer than this on average (an EW mean over its
#: runs, each counted up to RUN_CAP) moves in steps: its plateaus are not judged stuck. 1.5
#: is a sensor that repeats its previous value in a third of its readings (SKAB's pressure:
#: 1.8; the simulator's sensors, noisier than their resolution: 1.1-1.3).
STEPPED_RUN, RUN_ALPHA, RUN_CAP = 1.5, 0.05, 10


class AlertEvent(NamedTuple):
    """One transition in an alert's life."""

    alert_id: str
    rule: str
    kind: str
    severity: str
    machine_id: str
    sensor_type: str | None
    state: str  # opened | updated | closed
    start_ts: int  # event time of the first breach
    opened_ts: int  # event time of the reading that opened the alert
    event_ts: int  # event time of the reading behind this transition
    peak: float | None  # the most extreme value (score, for anomaly and model rules)
    value: float | None  # the value of the reading behind this transition
    breaches: int
    detects: tuple[str, ...]


# --- kernels ---------------------------------------------------------------------------


@kernel
def _extreme(mode: int, mid: float, a: float, b: float) -> float:
    """The more extreme of two measures (NaN: none), as the reference's ``_extreme``."""
    if a != a:
        return b
    if b != b:
        return a
    if mode == PEAK_MIN:
        return b if b < a else a
    if mode == PEAK_FARTHEST:
        return b if abs(b - mid) > abs(a - mid) else a
    return b if b > a else a


@kernel
def _step(si, sf, busy, k, r, ts, breach, measure, open_after, close_after, open_ms, close_ms,
          max_breaches, mode, mid):  # fmt: skip
    """One judged reading through the counters ``si[k, r]`` / ``sf[k, r]``; returns what
    happened (NOTHING, OPENED_NOW, ...). ``busy[k, r]``: the counters have state (an alert
    open or a breach run going), kept apart because it is read for every reading."""
    what = _advance(si, sf, k, r, ts, breach, measure, open_after, close_after, open_ms,
                    close_ms, max_breaches, mode, mid)  # fmt: skip
    busy[k, r] = si[k, r, OPEN] != 0 or si[k, r, RUN] != 0
    return what


@kernel
def _advance(si, sf, k, r, ts, breach, measure, open_after, close_after, open_ms, close_ms,
             max_breaches, mode, mid):  # fmt: skip
    """The reference's ``_step``. Counters with OPEN and RUN zero are "no state"; a closed
    alert keeps its other fields until the next breach, so the caller can report it.

    While an alert is open, RUN_START holds the time of the first normal reading of the
    calm under way (a rule in time closes once it has lasted ``close_ms``)."""
    if si[k, r, OPEN]:
        if breach:
            si[k, r, BREACHES] += 1
            si[k, r, NORMALS] = 0
            sf[k, r, PEAK] = _extreme(mode, mid, sf[k, r, PEAK], measure)
            if si[k, r, BREACHES] >= 2 * si[k, r, EMITTED]:
                si[k, r, EMITTED] = si[k, r, BREACHES]
                return UPDATED_NOW
            return NOTHING
        si[k, r, NORMALS] += 1
        if si[k, r, NORMALS] == 1:
            si[k, r, RUN_START] = ts
        if si[k, r, NORMALS] >= close_after and ts - si[k, r, RUN_START] >= close_ms:
            si[k, r, OPEN] = 0
            si[k, r, RUN] = 0
            return CLOSED_NOW
        return NOTHING
    run = si[k, r, RUN]
    if breach:
        if run == 0:
            si[k, r, RUN_START] = ts
            sf[k, r, RUN_PEAK] = measure
        else:
            sf[k, r, RUN_PEAK] = _extreme(mode, mid, sf[k, r, RUN_PEAK], measure)
        run += 1
        si[k, r, RUN] = run
        if max_breaches == 0 and run >= open_after and ts - si[k, r, RUN_START] >= open_ms:
            return _open(si, sf, k, r, ts, 0, close_after)
        return NOTHING
    if max_breaches > 0 and open_after <= run <= max_breaches:
        return _open(si, sf, k, r, ts, 1, close_after)  # a transient, over
    si[k, r, RUN] = 0
    return NOTHING


@kernel
def _open(si, sf, k, r, ts, normals, close_after):
    si[k, r, OPEN] = 1
    si[k, r, START] = si[k, r, RUN_START]
    si[k, r, RUN_START] = ts  # a transient opens on a normal reading: its calm starts here
    si[k, r, OPENED] = ts
    sf[k, r, PEAK] = sf[k, r, RUN_PEAK]
    si[k, r, BREACHES] = si[k, r, RUN]
    si[k, r, EMITTED] = si[k, r, RUN]
    # a transient opens on its first normal reading; with close_after 1 that one must not
    # also close it
    si[k, r, NORMALS] = normals - 1 if normals >= close_after else normals
    return OPENED_NOW


@kernel
def _previous(keys, values, isnull, last, prev, run, mean_run, stepped):
    """``prev[i]``: the value of the reading of ``keys[i]`` before it (NaN: none or null);
    ``stepped[i]``: whether the key moves in steps (its runs of equal values have been
    longer than ``STEPPED_RUN`` on average), from the runs that ended before it."""
    for i in range(keys.size):
        k = keys[i]
        before = last[k]
        prev[i] = before
        stepped[i] = mean_run[k] > STEPPED_RUN
        if isnull[i]:
            run[k] = 0
            last[k] = np.nan
            continue
        x = values[i]
        if x == before:
            run[k] += 1
        else:
            if before == before:  # a run of equal values ended
                mean_run[k] += RUN_ALPHA * (min(run[k] + 1, RUN_CAP) - mean_run[k])
            run[k] = 0
        last[k] = x


@kernel
def _hysteresis(
    i0, j, keys, mkeys, ts, values, scores, models, status, codes, rules, per_machine, open_after,
    close_after, open_ms, close_ms, max_breaches, mode, mid, measure_of, si, sf, busy, ev,
    ev_peak,
):  # fmt: skip
    """Step the counters of ``rules`` (indexes into ``codes``' rows) over rows ``i0..``;
    transitions go to ``ev[j:]`` as (row, rule, what, start, opened, breaches) and
    ``ev_peak[j:]``. Returns (events written, next row): it stops early, at a row
    boundary, when the buffer could overflow; the caller grows it and goes on."""
    n = keys.size
    cap = ev.shape[0]
    nr = rules.size
    for i in range(i0, n):
        if j + nr > cap:
            return j, i
        for q in range(nr):
            r = rules[q]
            c = codes[r, i]
            if c < 0:
                continue
            k = mkeys[i] if per_machine[r] else keys[i]
            if c == 0 and not busy[k, r]:
                continue  # the common case: a normal reading, no alert under way
            src = measure_of[r]
            if src == MEASURE_VALUE:
                measure = values[i]
            elif src == MEASURE_SCORE:
                measure = scores[i]
            elif src == MEASURE_MODEL:
                measure = models[i]
            elif src == MEASURE_STATUS:
                measure = float(status[i])
            else:
                measure = np.nan
            what = _step(si, sf, busy, k, r, ts[i], c == 1, measure, open_after[r], close_after[r],
                         open_ms[r], close_ms[r], max_breaches[r], mode[r], mid[r])  # fmt: skip
            if what != NOTHING:
                ev[j, 0] = i
                ev[j, 1] = r
                ev[j, 2] = what
                ev[j, 3] = si[k, r, START]
                ev[j, 4] = si[k, r, OPENED]
                ev[j, 5] = si[k, r, BREACHES]
                ev_peak[j] = sf[k, r, PEAK]
                j += 1
    return j, n


@kernel
def _next_alone_row(i0, keys, mkeys, ts, excited, codes, alone, live, due):
    """The first row from ``i0`` on where a rule with alone_s has something to do: its
    score excites, a held breach of its machine key is due (``due``: the earliest event
    time one is), or an alone rule breaches or judges a key with held breaches or running
    counters (``live``). ``keys.size`` if none."""
    for i in range(i0, keys.size):
        if excited[i] or ts[i] >= due[mkeys[i]]:
            return i
        k = keys[i]
        for q in range(alone.size):
            c = codes[alone[q], i]
            if c == 1 or (c == 0 and live[k]):
                return i
    return keys.size


# --- the engine ------------------------------------------------------------------------


class _Held:
    """Breaches of one (rule, key) held for the alone_s decision, and the readings since."""

    __slots__ = ("first", "readings", "seq")

    def __init__(self, first: int, readings: list, seq: int) -> None:
        self.first = first
        self.readings = readings  # [(ts, value, breach, measure)], None for a missing one
        self.seq = seq  # order of creation: flush decides in that order


class RuleEngine:
    """Applies a :class:`RuleSet` to batches of readings; see the module docstring.

    Parameters
    ----------
    rules
        The rules. Rule ``i``'s counters are column ``i`` of the state arrays.

    Attributes
    ----------
    event_mkeys
        The machine key of each event the last :meth:`observe` or :meth:`flush` returned
        (an event names its machine, not its run).
    """

    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules
        rs = rules.rules
        self._n_rules = len(rs)
        self._per_machine = np.array([r.per_machine for r in rs], np.bool_)
        self._open_after = np.array([r.open_after for r in rs], np.int64)
        self._close_after = np.array([r.close_after for r in rs], np.int64)
        self._open_ms = np.array([round(r.open_after_s * 1000) for r in rs], np.int64)
        self._close_ms = np.array([round(r.close_after_s * 1000) for r in rs], np.int64)
        self._max_breaches = np.array([r.max_breaches or 0 for r in rs], np.int64)
        self._mode = np.array([_peak_mode(r) for r in rs], np.int64)
        self._mid = np.array(
            [(r.above + r.below) / 2 if _peak_mode(r) == PEAK_FARTHEST else 0.0 for r in rs]
        )
        self._measure_of = np.array([_measure_of(r) for r in rs], np.int64)
        self._measure_py = self._measure_of.tolist()
        alone = [i for i, r in enumerate(rs) if r.alone_s is not None and not r.per_machine]
        self._alone = alone
        self._stepped = np.array([i for i in range(len(rs)) if i not in alone], np.int64)
        scores = [r.alone_score for r in rs if r.alone_s is not None]
        self._excited_above = min(scores) if scores else None
        # rules watching only some sensors or machines: one row of _applies per filter
        filters: dict[tuple, int] = {}
        self._filter_of = []
        for r in rs:
            f = (r.sensors, r.machines)
            self._filter_of.append(filters.setdefault(f, len(filters)) if any(f) else -1)
        self._filters = list(filters)
        # per id (key or machine key; status rules count per machine key)
        self._cap = 0
        self._si = np.zeros((0, self._n_rules, N_INT), np.int64)
        self._sf = np.zeros((0, self._n_rules, N_FLOAT))
        self._busy = np.zeros((0, self._n_rules), np.bool_)
        # per key
        self._n_keys = self._n_mkeys = 0
        self._last = np.zeros(0)
        self._run = np.zeros(0, np.int64)  # equal values in a row, per key
        self._mean_run = np.zeros(0)  # the key's runs of equal values, on average
        self._key_mkey = np.zeros(0, np.int64)  # -1: not seen yet
        self._applies = np.zeros((len(self._filters), 0), np.bool_)
        self._live = np.zeros(0, np.bool_)  # per key: alone rules hold or count something
        self._due = np.zeros(0)  # per machine key: when its first held breach is due
        self._sensor_names: list[str] = []
        self._machine_names: list[str] = []  # per machine key
        # alone_s: held breaches per machine key {(rule, key): _Held}; recent excitements
        # per key [(ts, score)] and which keys of a machine key have some; the live keys
        self._held: dict[int, dict[tuple[int, int], _Held]] = {}
        self._held_seq = 0
        self._excited: dict[int, list[tuple[int, float]]] = {}
        self._excited_of: dict[int, set[int]] = {}
        self._n_live = 0
        self._ev = np.zeros((256, 6), np.int64)
        self._ev_peak = np.zeros(256)
        self.event_mkeys = np.zeros(0, np.int64)

    @property
    def open_alerts(self) -> int:
        """Alerts open now, over every key and rule."""
        return int(np.count_nonzero(self._si[: self._cap, :, OPEN]))

    @property
    def held_breaches(self) -> int:
        """(rule, key) pairs with breaches held for the alone_s decision."""
        return sum(len(h) for h in self._held.values())

    def grow(self, n_ids: int) -> None:
        """Make room for key and machine-key ids below ``n_ids`` (capacity doubles)."""
        if n_ids <= self._cap:
            return
        cap = max(n_ids, 2 * self._cap, 16)
        old = self._cap
        self._si = _grown(self._si, cap, 0)
        self._sf = _grown(self._sf, cap, 0.0)
        self._busy = _grown(self._busy, cap, False)
        self._last = _grown(self._last, cap, np.nan)
        self._run = _grown(self._run, cap, 0)
        self._mean_run = _grown(self._mean_run, cap, 1.0)
        self._key_mkey = _grown(self._key_mkey, cap, -1)
        self._live = _grown(self._live, cap, False)
        self._due = _grown(self._due, cap, np.inf)
        applies = np.zeros((len(self._filters), cap), np.bool_)
        applies[:, :old] = self._applies[:, :old]
        self._applies = applies
        self._cap = cap

    # -- readings ---------------------------------------------------------------------

    def observe(
        self,
        keys: np.ndarray,
        mkeys: np.ndarray,
        machine_names: Sequence[str],
        sensor_names: Sequence[str],
        ts_ms: np.ndarray,
        values: np.ndarray,
        isnull: np.ndarray,
        status: np.ndarray,
        score: np.ndarray,
        drift: np.ndarray,
        model: np.ndarray | None = None,
    ) -> list[AlertEvent]:
        """Judge a batch of readings (arrival order) against every rule; the transitions.

        ``keys`` are dense ids of (run, machine, sensor) and ``mkeys`` of (run, machine);
        ``machine_names[mkey]`` and ``sensor_names[key]`` name them (read for new ids only).
        ``values`` is NaN where ``isnull``; ``score`` NaN where there is none; ``drift``
        whether the drift detector fired on the reading; ``model`` the machine model's score
        (:mod:`workbench.processor.stats.machine`), NaN where there is none (default: none).
        """
        keys = np.asarray(keys, np.int64)
        mkeys = np.asarray(mkeys, np.int64)
        n = keys.size
        self.event_mkeys = np.zeros(0, np.int64)
        if n == 0:
            return []
        ts_ms = np.asarray(ts_ms, np.int64)
        values = np.asarray(values, np.float64)
        isnull = np.asarray(isnull, np.bool_)
        status = np.asarray(status)
        score = np.asarray(score, np.float64)
        drift = np.asarray(drift, np.bool_)
        model = np.full(n, np.nan) if model is None else np.asarray(model, np.float64)
        self._register(keys, mkeys, machine_names, sensor_names)
        prev = np.empty(n)
        steps = np.empty(n, np.bool_)
        _previous(keys, values, isnull, self._last, prev, self._run, self._mean_run, steps)
        codes = self._codes(keys, values, isnull, status, score, drift, prev, model, steps)
        stepped = self._run_kernel(keys, mkeys, ts_ms, values, score, model, status, codes)
        alone = self._alone_rows(keys, mkeys, ts_ms, values, isnull, status, score, codes)
        if alone and stepped:
            # per reading: released held breaches first, then the rules in file order
            merged = sorted(stepped + alone, key=lambda t: t[:3])
        else:
            merged = stepped or alone
        self.event_mkeys = np.array([t[3] for t in merged], np.int64)
        return [t[4] for t in merged]

    def flush(self, mkeys_of_run: Sequence[int] | np.ndarray | None = None) -> list[AlertEvent]:
        """Decide every held breach now, with what is known (at the end of a run): those of
        the machine keys ``mkeys_of_run``, or all of them."""
        if mkeys_of_run is None:
            chosen = list(self._held)
        else:
            chosen = [m for m in np.asarray(mkeys_of_run, np.int64).tolist() if m in self._held]
        pending = sorted(
            (held.seq, m, hk) for m in chosen for hk, held in self._held[m].items()
        )  # fmt: skip
        out: list = []
        for _seq, m, hk in pending:
            self._release_one(m, hk, self._held[m].pop(hk), -1, out)
            self._refresh_key(hk[1], m)
        for m in chosen:
            del self._held[m]
            self._due[m] = np.inf
        self.event_mkeys = np.array([t[3] for t in out], np.int64)
        return [t[4] for t in out]

    # -- state --------------------------------------------------------------------------

    def keep(self, key_ids: np.ndarray, mkey_ids: np.ndarray) -> None:
        """Keep only these keys and machine keys, renumbered 0.. in the order given."""
        key_ids = np.asarray(key_ids, np.int64)
        mkey_ids = np.asarray(mkey_ids, np.int64)
        kmap = np.full(max(self._cap, 1), -1, np.int64)
        kmap[key_ids] = np.arange(key_ids.size)
        mmap = np.full(max(self._cap, 1), -1, np.int64)
        mmap[mkey_ids] = np.arange(mkey_ids.size)
        si, sf = self._si, self._sf
        key_mkey = self._key_mkey[key_ids]
        last, applies = self._last[key_ids], self._applies[:, key_ids]
        run, mean_run = self._run[key_ids], self._mean_run[key_ids]
        sensors = [self._sensor_names[k] for k in key_ids.tolist()]
        machines = [self._machine_names[m] for m in mkey_ids.tolist()]
        self._cap = 0
        self._si, self._sf, self._busy = si[:0], sf[:0], self._busy[:0]
        self._last, self._key_mkey = last[:0], key_mkey[:0]
        self._run, self._mean_run = run[:0], mean_run[:0]
        live, due = self._live[key_ids], self._due[mkey_ids]
        self._live, self._due = live[:0], due[:0]
        self.grow(max(key_ids.size, mkey_ids.size))
        nk, nm = key_ids.size, mkey_ids.size
        per_key = ~self._per_machine
        self._si[:nk, per_key] = si[key_ids][:, per_key]
        self._sf[:nk, per_key] = sf[key_ids][:, per_key]
        self._si[:nm, self._per_machine] = si[mkey_ids][:, self._per_machine]
        self._sf[:nm, self._per_machine] = sf[mkey_ids][:, self._per_machine]
        self._busy[:] = (self._si[:, :, OPEN] != 0) | (self._si[:, :, RUN] != 0)
        self._last[:nk] = last
        self._run[:nk], self._mean_run[:nk] = run, mean_run
        self._live[:nk], self._due[:nm] = live, due
        self._n_live = int(np.count_nonzero(live))
        self._key_mkey[:nk] = np.where(key_mkey >= 0, mmap[np.maximum(key_mkey, 0)], -1)
        self._applies[:, :nk] = applies
        self._n_keys, self._n_mkeys = nk, nm
        self._sensor_names, self._machine_names = sensors, machines
        held: dict[int, dict[tuple[int, int], _Held]] = {}
        for m, hs in self._held.items():
            for (r, k), h in hs.items():
                if kmap[k] >= 0 and mmap[m] >= 0:
                    held.setdefault(int(mmap[m]), {})[(r, int(kmap[k]))] = h
        self._held = held
        self._excited = {int(kmap[k]): v for k, v in self._excited.items() if kmap[k] >= 0}
        self._excited_of = {}
        for k in self._excited:
            self._excited_of.setdefault(int(self._key_mkey[k]), set()).add(k)

    def arrays(self) -> dict[str, np.ndarray]:
        """The state as plain arrays (for ``np.savez``): counters and held breaches by rule
        name and kind, per-key values and names, recent excitements."""
        nk, nm = self._n_keys, self._n_mkeys
        rs = self.rules.rules
        si, sf = self._si, self._sf
        ids, rules = np.nonzero(self._busy)
        held = sorted(
            (h.seq, r, k, h) for hs in self._held.values() for (r, k), h in hs.items()
        )  # fmt: skip
        readings = [x for *_, h in held for x in h.readings]
        ring = [(k, t, s) for k, v in self._excited.items() for t, s in v]
        return {
            "version": np.array([VERSION], np.int64),
            "rule_names": np.array([r.name for r in rs], dtype=str),
            "rule_kinds": np.array([r.kind for r in rs], dtype=str),
            "state_id": ids.astype(np.int64),
            "state_rule": rules.astype(np.int64),
            "state_int": si[ids, rules].reshape(-1, N_INT),
            "state_float": sf[ids, rules].reshape(-1, N_FLOAT),
            "key_mkey": self._key_mkey[:nk].copy(),
            "last": self._last[:nk].copy(),
            "run": self._run[:nk].copy(),
            "mean_run": self._mean_run[:nk].copy(),
            "sensor_names": np.array(self._sensor_names, dtype=str),
            "machine_names": np.array(self._machine_names, dtype=str),
            "held_rule": np.array([r for _, r, _, _ in held], np.int64),
            "held_key": np.array([k for _, _, k, _ in held], np.int64),
            "held_first": np.array([h.first for *_, h in held], np.int64),
            "held_len": np.array([len(h.readings) for *_, h in held], np.int64),
            "held_ts": np.array([x[0] for x in readings], np.int64),
            "held_value": _floats(x[1] for x in readings),
            "held_breach": np.array([x[2] for x in readings], np.bool_),
            "held_measure": _floats(x[3] for x in readings),
            "excited_key": np.array([x[0] for x in ring], np.int64),
            "excited_ts": np.array([x[1] for x in ring], np.int64),
            "excited_score": np.array([x[2] for x in ring], np.float64),
            "n_mkeys": np.array([nm], np.int64),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], rules: RuleSet) -> RuleEngine:
        """Rebuild from :meth:`arrays` under ``rules`` (perhaps not the rules it was taken
        with): counters and held breaches of a rule carry over when a rule of the same name
        and kind exists (held ones only if it still has ``alone_s``); the rest are dropped."""
        version = int(arrays["version"][0])
        if version != VERSION:
            raise ValueError(f"rule engine checkpoint version {version}, expected {VERSION}")
        eng = cls(rules)
        now = {(r.name, r.kind): i for i, r in enumerate(rules.rules)}
        names = arrays["rule_names"].tolist()
        old = [now.get(nk, -1) for nk in zip(names, arrays["rule_kinds"].tolist(), strict=True)]
        gone = [n for n, i in zip(names, old, strict=True) if i < 0]
        if gone:
            log.info("rules %s are gone or changed kind: their alert state is dropped", gone)
        rule_map = np.array(old, np.int64)
        key_mkey = arrays["key_mkey"]
        nk, nm = key_mkey.size, int(arrays["n_mkeys"][0])
        eng.grow(max(nk, nm))
        eng._n_keys, eng._n_mkeys = nk, nm
        eng._key_mkey[:nk] = key_mkey
        eng._last[:nk] = arrays["last"]
        if "run" in arrays:  # checkpoints before the runs were kept start them afresh
            eng._run[:nk], eng._mean_run[:nk] = arrays["run"], arrays["mean_run"]
        eng._sensor_names = arrays["sensor_names"].tolist()
        eng._machine_names = arrays["machine_names"].tolist()
        eng._fill_applies(np.flatnonzero(key_mkey >= 0))
        ids, rs = arrays["state_id"], rule_map[arrays["state_rule"]]
        ok = rs >= 0
        eng._si[ids[ok], rs[ok]] = arrays["state_int"][ok]
        eng._sf[ids[ok], rs[ok]] = arrays["state_float"][ok]
        eng._busy[:] = (eng._si[:, :, OPEN] != 0) | (eng._si[:, :, RUN] != 0)
        alone = set(eng._alone)
        starts = np.concatenate([[0], np.cumsum(arrays["held_len"])]).tolist()
        ts, breach = arrays["held_ts"].tolist(), arrays["held_breach"].tolist()
        value, measure = _optional(arrays["held_value"]), _optional(arrays["held_measure"])
        held = zip(rule_map[arrays["held_rule"]].tolist(), arrays["held_key"].tolist(),
                   arrays["held_first"].tolist(), strict=True)  # fmt: skip
        for h, (r, k, first) in enumerate(held):
            if r not in alone:
                continue
            span = range(starts[h], starts[h + 1])
            readings = [(ts[x], value[x], breach[x], measure[x]) for x in span]
            eng._held.setdefault(int(key_mkey[k]), {})[(r, k)] = _Held(first, readings, h)
        eng._held_seq = len(arrays["held_len"])
        for k, t, s in zip(arrays["excited_key"].tolist(), arrays["excited_ts"].tolist(),
                           arrays["excited_score"].tolist(), strict=True):  # fmt: skip
            eng._excited.setdefault(k, []).append((t, s))
            eng._excited_of.setdefault(int(key_mkey[k]), set()).add(k)
        for k in np.unique(ids[ok][np.isin(rs[ok], eng._alone)]).tolist():
            eng._refresh_key(k, int(key_mkey[k]))
        for m, hs in eng._held.items():
            eng._refresh_due(m)
            for _r, k in hs:
                eng._refresh_key(k, m)
        return eng

    # -- inside a batch -----------------------------------------------------------------

    def _register(self, keys, mkeys, machine_names, sensor_names) -> None:
        """Grow to the ids of the batch; learn the names and rule filters of new keys."""
        top = int(max(keys.max(), mkeys.max())) + 1
        self.grow(top)
        rows = np.flatnonzero(self._key_mkey[keys] < 0)
        if rows.size == 0:
            return
        new, first = np.unique(keys[rows], return_index=True)
        self._key_mkey[new] = mkeys[rows[first]]
        self._n_keys = max(self._n_keys, int(new[-1]) + 1)
        self._n_mkeys = max(self._n_mkeys, int(mkeys[rows].max()) + 1)
        _pad(self._sensor_names, self._n_keys)
        _pad(self._machine_names, self._n_mkeys)
        for k, m in zip(new.tolist(), self._key_mkey[new].tolist(), strict=True):
            self._sensor_names[k] = str(sensor_names[k])
            self._machine_names[m] = str(machine_names[m])
        self._fill_applies(new)

    def _fill_applies(self, new: np.ndarray) -> None:
        for g, (sensors, machines) in enumerate(self._filters):
            for k in new.tolist():
                m = self._machine_names[self._key_mkey[k]]
                s = self._sensor_names[k]
                self._applies[g, k] = (not sensors or s in sensors) and (
                    not machines or m in machines
                )

    def _codes(self, keys, values, isnull, status, score, drift, prev, model, steps) -> np.ndarray:
        """Per rule and reading: -1 not judged, 0 normal, 1 breach (see the module doc)."""
        n = keys.size
        codes = np.empty((self._n_rules, n), np.int8)
        judged = (status == 0) & ~isnull
        scored = None
        watched: dict[int, np.ndarray] = {}
        for i, rule in enumerate(self.rules.rules):
            g = self._filter_of[i]
            if g >= 0 and g not in watched:
                watched[g] = self._applies[g][keys]
            watches = watched.get(g)
            kind = rule.kind
            if kind == "status":
                breach = status == rule.status[0]
                for code in rule.status[1:]:
                    breach |= status == code
                base = watches
            elif kind == "null":
                breach, base = isnull, watches
            elif kind == "anomaly":
                if scored is None:
                    scored = judged & ~np.isnan(score)
                breach = score > rule.score_above
                base = scored if watches is None else scored & watches
            elif kind == "model":
                modelled = judged & ~np.isnan(model)
                breach = model > rule.score_above
                base = modelled if watches is None else modelled & watches
            else:
                if kind == "threshold":
                    if rule.above is not None and rule.below is not None:
                        breach = (values > rule.above) | (values < rule.below)
                    elif rule.above is not None:
                        breach = values > rule.above
                    else:
                        breach = values < rule.below
                elif kind == "drift":
                    breach = drift
                else:  # stuck
                    breach = (values == prev) & ~steps
                base = judged if watches is None else judged & watches
            row = codes[i]
            if base is None:
                row[:] = breach
            else:
                np.subtract(base, 1, out=row, dtype=np.int8)
                row += breach & base
        return codes

    def _run_kernel(self, keys, mkeys, ts, values, scores, models, status, codes) -> list[tuple]:
        if self._stepped.size == 0:
            return []
        i, j, n = 0, 0, keys.size
        while True:
            j, i = _hysteresis(
                i, j, keys, mkeys, ts, values, scores, models, status, codes, self._stepped,
                self._per_machine, self._open_after, self._close_after, self._open_ms,
                self._close_ms, self._max_breaches, self._mode, self._mid, self._measure_of,
                self._si, self._sf, self._busy, self._ev, self._ev_peak,
            )  # fmt: skip
            if i >= n:
                break
            self._ev = np.concatenate([self._ev, np.zeros_like(self._ev)])
            self._ev_peak = np.concatenate([self._ev_peak, np.zeros_like(self._ev_peak)])
        if j == 0:
            return []
        out = []
        rs = self.rules.rules
        for (row, r, what, start, opened, breaches), peak in zip(
            self._ev[:j].tolist(), self._ev_peak[:j].tolist(), strict=True
        ):
            m = int(mkeys[row])
            sensor = None if rs[r].per_machine else self._sensor_names[int(keys[row])]
            value = None if values[row] != values[row] else float(values[row])
            event = self._event(rs[r], m, sensor, STATES[what], start, opened, int(ts[row]),
                                peak, value, breaches)  # fmt: skip
            out.append((row, 1, r, m, event))
        return out

    def _alone_rows(self, keys, mkeys, ts, values, isnull, status, score, codes) -> list[tuple]:
        """The rules with alone_s, in Python, on the rows where they have something to do."""
        if not self._alone:
            return []
        excited = score > self._excited_above
        if not (self._n_live or self._held or excited.any()
                or any((codes[r] == 1).any() for r in self._alone)):  # fmt: skip
            return []
        alone = np.array(self._alone, np.int64)
        out: list[tuple] = []
        i, n = 0, keys.size
        while True:
            i = _next_alone_row(i, keys, mkeys, ts, excited, codes, alone, self._live, self._due)
            if i >= n:
                return out
            self._alone_row(i, int(keys[i]), int(mkeys[i]), int(ts[i]),
                            None if isnull[i] else float(values[i]),
                            None if score[i] != score[i] else float(score[i]),
                            int(status[i]), excited[i], codes[:, i].tolist(), out)  # fmt: skip
            i += 1

    def _alone_row(self, i, k, m, t, v, s, st, excited, codes, out) -> None:
        """One reading through the alone rules, as the reference's ``observe`` does it."""
        if excited:
            recent = self._excited.get(k)
            if recent is None:
                recent = self._excited[k] = []
                self._excited_of.setdefault(m, set()).add(k)
            recent.append((t, s))
            del recent[:-EXCITED_KEPT]
        if m in self._held:
            for released in self._release(m, t, i, out):
                self._refresh_key(released, m)
        held_m = self._held.get(m)
        for r in self._alone:
            c = codes[r]
            if c < 0:
                continue
            src = self._measure_py[r]
            measure = (v if src == MEASURE_VALUE else s if src == MEASURE_SCORE
                       else float(st) if src == MEASURE_STATUS else None)  # fmt: skip
            held = held_m.get((r, k)) if held_m else None
            if held is not None:
                held.readings.append((t, v, c == 1, measure))
            elif c == 1:
                if held_m is None:
                    held_m = self._held[m] = {}
                held_m[(r, k)] = _Held(t, [(t, v, True, measure)], self._held_seq)
                self._held_seq += 1
            else:
                event = self._step_one(r, k, m, t, v, False, measure)
                if event is not None:
                    out.append((i, 1, r, m, event))
        self._refresh_key(k, m)
        self._refresh_due(m)

    def _refresh_key(self, k: int, m: int) -> None:
        """Is key ``k`` live: do alone rules hold breaches of it, or count for it?"""
        held_m = self._held.get(m, {})
        si = self._si
        live = any((r, k) in held_m or si[k, r, OPEN] or si[k, r, RUN] for r in self._alone)
        if live != self._live[k]:
            self._live[k] = live
            self._n_live += 1 if live else -1

    def _refresh_due(self, m: int) -> None:
        """When the first held breach of machine key ``m`` is due (inf: none held)."""
        rs = self.rules.rules
        held_m = self._held.get(m)
        self._due[m] = min(
            (h.first + rs[r].alone_s * 1000 for (r, _k), h in held_m.items()), default=np.inf
        ) if held_m else np.inf  # fmt: skip

    def _release(self, m: int, ts: int, row: int, out: list) -> list[int]:
        """Decide the held breaches of machine key ``m`` whose wait is over at ``ts``;
        returns their keys."""
        helds = self._held[m]
        released = []
        for hk in list(helds):
            held = helds[hk]
            if ts < held.first + self.rules.rules[hk[0]].alone_s * 1000:
                continue
            del helds[hk]
            self._release_one(m, hk, held, row, out)
            released.append(hk[1])
        if not helds:
            del self._held[m]
        return released

    def _release_one(self, m: int, hk: tuple[int, int], held: _Held, row: int, out: list):
        r, k = hk
        rule = self.rules.rules[r]
        readings = held.readings
        if self._shared(rule, m, k, held.first, rule.alone_s * 1000):
            log.debug("%s on %s/%s at %d moved with another sensor: not alone", rule.name,
                      self._machine_names[m], self._sensor_names[k], held.first)  # fmt: skip
            readings = [(t, v, False, x) for t, v, _b, x in readings]
        for t, v, breach, measure in readings:
            event = self._step_one(r, k, m, t, v, breach, measure)
            if event is not None:
                out.append((row, 0, len(out), m, event))

    def _shared(self, rule: Rule, m: int, k: int, first: int, wait_ms: float) -> bool:
        """Another sensor of the machine key was excited within ``wait_ms`` of ``first``."""
        for other in self._excited_of.get(m, ()):
            if other != k and any(
                abs(t - first) <= wait_ms and s > rule.alone_score for t, s in self._excited[other]
            ):
                return True
        return False

    def _step_one(self, r, k, m, ts, value, breach, measure) -> AlertEvent | None:
        what = _step(self._si, self._sf, self._busy, k, r, ts, breach,
                     np.nan if measure is None else measure, self._open_after[r],
                     self._close_after[r], self._open_ms[r], self._close_ms[r],
                     self._max_breaches[r], self._mode[r], self._mid[r])  # fmt: skip
        if what == NOTHING:
            return None
        si, rule = self._si[k, r], self.rules.rules[r]
        return self._event(rule, m, self._sensor_names[k], STATES[what], int(si[START]),
                           int(si[OPENED]), ts, float(self._sf[k, r, PEAK]), value,
                           int(si[BREACHES]))  # fmt: skip

    def _event(self, rule, m, sensor, state, start, opened, ts, peak, value, breaches):
        machine = self._machine_names[m]
        return AlertEvent(
            f"{rule.name}/{machine}/{sensor or '*'}/{start}", rule.name, rule.kind,
            rule.severity, machine, sensor, state, start, opened, ts,
            None if peak != peak else peak, value, breaches, rule.detects,
        )  # fmt: skip


# --- helpers ---------------------------------------------------------------------------


def _peak_mode(rule: Rule) -> int:
    if rule.kind == "threshold" and rule.above is None:
        return PEAK_MIN
    if rule.kind == "threshold" and rule.below is not None and rule.above is not None:
        return PEAK_FARTHEST
    return PEAK_MAX


def _measure_of(rule: Rule) -> int:
    return {"anomaly": MEASURE_SCORE, "status": MEASURE_STATUS, "null": MEASURE_NONE,
            "model": MEASURE_MODEL}.get(rule.kind, MEASURE_VALUE)  # fmt: skip


def _grown(a: np.ndarray, cap: int, fill) -> np.ndarray:
    out = np.full((cap, *a.shape[1:]), fill, a.dtype)
    out[: a.shape[0]] = a
    return out


def _pad(names: list[str], n: int) -> None:
    if len(names) < n:
        names.extend([""] * (n - len(names)))


def _floats(xs) -> np.ndarray:
    return np.array([np.nan if x is None else x for x in xs], np.float64)


def _optional(a: np.ndarray) -> list[float | None]:
    return [None if x != x else x for x in a.tolist()]
