"""A model of each machine across its sensors: how far a reading is from what the machine's
other sensors say it should be.

A single sensor's baseline cannot tell a fault from a change of load: when a machine goes
from idle to full load its vibration jumps, its pressure rises and its temperature follows
over minutes, and each of them, judged alone, looks like an anomaly. Judged against the
rest of the machine, none is: the others moved with it. A sensor that walks off while the
others stay where they were, or a valve that closes and cuts the flow while the pump's
current says it still runs, is off what the rest predicts.

Per (run, machine, sensor) key, an online linear regression of the sensor on the machine's
other sensors (their latest values, and their exponentially weighted means over a minute and
over five minutes, for sensors such as temperature that follow load with a lag):

* **recursive least squares with forgetting in event time**: a reading ``dt`` after the
  previous one weighs the past by ``exp(-dt / horizon)`` (an hour by default), so the model
  follows a machine's slow changes and forgets a recalibration after a while, at any
  sampling rate;
* **robust**: a reading more than ``clip`` predictive standard deviations off teaches the
  model with weight ``(clip / score)²``, the residual scale learns only clipped residuals,
  so a fault does not become the new normal within minutes, and such a reading is not
  what the machine's other sensors are predicted from (a sensor that walks off does not
  make its neighbours look wrong);
* **honest about what it has not seen**: the score is the residual over its *predictive*
  standard deviation, ``sqrt(s2 * (1 + x' P x))``. ``x' P x`` (the leverage) is large when
  the other sensors are somewhere the model has not seen them (a first overload, a
  machine's first minutes), and a model that cannot know says so with a low score rather
  than an alarm;
* **quantisation-aware**: the residual scale never falls below the variance of the sensor's
  own resolution (the smallest step seen in its first readings), so a sensor that moves in
  steps of 0.33 bar is judged in such steps, not against a noise it cannot have;
* **one culprit**: a reading scores at most ``clip`` while another sensor of its machine is
  further off (a sensor read against a broken neighbour is not itself broken);
* values are standardised per key by the median and interquartile range of its first
  ``warmup`` readings, and a key is scored from its ``2 * warmup``-th reading on.

A machine with one sensor (a NAB series) has only the intercept: its score is then a robust
long-horizon z-score of the sensor against its own past hour.

Only readings with a value, a status of 0 (a machine that is off teaches nothing) and an
event time after the key's previous reading are modelled; the others score NaN. A machine
that was off (a shutdown, a repair) restarts cold: for the longest lag after its last
reading with a non-zero status its readings teach the model but are not scored. A machine
models at most ``MAX_SENSORS`` sensors, the first it sends; readings of further sensors
score NaN.

Three sensors of one machine, the third the sum of the first two, then off it:

>>> import numpy as np
>>> rng = np.random.default_rng(3)
>>> state = MachineModelState()
>>> a, b = rng.normal(0, 1, 400).cumsum(), rng.normal(0, 1, 400).cumsum()
>>> c = a + b + rng.normal(0, 0.1, 400)
>>> c[-1] += 6.0
>>> n = 400 * 3
>>> keys = np.tile([0, 1, 2], 400)
>>> values = np.stack([a, b, c], axis=1).ravel()
>>> ts = np.repeat(np.arange(400) * 1000, 3)
>>> state.grow(3, 1)
>>> score = update(state, keys, np.zeros(n, np.int64), np.tile([0, 1, 2], 400), ts, values)
>>> bool(np.nanmax(score[2:-1:3]) < 5), bool(score[-1] > 10)
(True, True)
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np

from workbench.processor.kernels import kernel
from workbench.processor.stats.base import Fields, allocate, from_columns, to_columns
from workbench.schemas import sensor_types

#: Version of the :meth:`MachineModelState.arrays` layout.
FORMAT_VERSION = 2
#: Sensors of one machine the model takes (each one a regressor of the others).
MAX_SENSORS = 6
#: The lags: exponentially weighted means of the other sensors over these time constants.
N_LAGS = 2
#: Regressors of one sensor: an intercept, and per other sensor its value and its lags.
DIM = 1 + (MAX_SENSORS - 1) * (1 + N_LAGS)
#: P is symmetric: its upper triangle is kept, row by row (half the memory of a key).
PACKED = DIM * (DIM + 1) // 2
NO_TS = np.iinfo(np.int64).min
#: Squared z-scores of the load within which it counts as seen (3 standard deviations).
NOVEL = 9.0
#: A normal variable's interquartile range, in standard deviations.
IQR_PER_SD = 1.3489795


@dataclass(frozen=True)
class ModelConfig:
    """The machine model's settings (the ``[model]`` table of a rules file)."""

    #: Event-time constant (s) of the forgetting: the past weighs ``exp(-age / horizon)``.
    horizon_s: float = 3600.0
    #: Time constants (s) of the other sensors' lagged means.
    lags_s: tuple[float, float] = (60.0, 300.0)
    #: Readings per key that set its scale; scores start after twice as many.
    warmup: int = 30
    #: Predictive standard deviations past which a reading teaches the model less.
    clip: float = 3.0
    #: Prior variance of a regression weight (in standardised units).
    prior: float = 100.0
    #: Sensor types that say what the machine is asked to do (its load): where one of them
    #: is somewhere the past horizon has not seen it, the model does not know, and says so.
    load_sensors: tuple[str, ...] = ("current",)

    def __post_init__(self) -> None:
        if not self.horizon_s > 0:
            raise ValueError("the model's horizon must be > 0 s")
        if len(self.lags_s) != N_LAGS or not all(x > 0 for x in self.lags_s):
            raise ValueError(f"the model takes {N_LAGS} lags, each > 0 s")
        if not 5 <= self.warmup <= PACKED:
            raise ValueError(f"the model's warmup must be from 5 to {PACKED} readings")
        if not (self.clip > 0 and self.prior > 0):
            raise ValueError("the model's clip and prior must be > 0")

    def header(self) -> dict:
        return {"horizon_s": self.horizon_s, "lags_s": list(self.lags_s),
                "warmup": self.warmup, "clip": self.clip, "prior": self.prior,
                "load_sensors": list(self.load_sensors)}  # fmt: skip


def _key_fields(config: ModelConfig) -> Fields:
    return {
        "n": np.int64(0),  # values modelled (warm-up included)
        "last_ts": np.int64(NO_TS),
        "slot": np.int64(-1),  # this sensor's place among its machine's
        "mu": np.float64(np.nan),
        "sc": np.float64(np.nan),
        "floor": np.float64(np.nan),  # residual variance of the resolution (standardised)
        "s2": np.float64(np.nan),  # residual variance
        "w": np.zeros(DIM),
        # P, packed; until the scale is set it holds the first values instead
        "p": np.zeros(PACKED),
    }


_MACHINE_FIELDS: Fields = {
    "n_slots": np.int64(0),
    "sensor": np.full(MAX_SENSORS, -1, np.int64),  # sensor code per slot
    "z": np.full(MAX_SENSORS, np.nan),  # latest standardised value per slot
    "lag": np.full(N_LAGS * MAX_SENSORS, np.nan),  # lagged means per (lag, slot)
    "ts": np.full(MAX_SENSORS, NO_TS, np.int64),  # event time of the slot's latest value
    "slope": np.zeros(MAX_SENSORS),  # its recent rate of change (per s)
    "every": np.full(MAX_SENSORS, np.nan),  # its usual interval (s)
    "count": np.zeros(MAX_SENSORS, np.int64),  # values seen (for the moments' weights)
    "mean": np.zeros(MAX_SENSORS),  # its mean over the horizon
    "var": np.zeros(MAX_SENSORS),  # ... and variance
    "score": np.zeros(MAX_SENSORS),  # the score of its latest reading
    "scored": np.full(MAX_SENSORS, NO_TS, np.int64),  # ... and its event time
    "off": np.int64(NO_TS),  # event time of its latest reading with a non-zero status
}


class MachineModelState:
    """Per key (run, machine, sensor) regression state and per machine key (run, machine)
    the latest standardised values of its sensors, for dense ids ``0 .. n - 1``."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        self.config = config or ModelConfig()
        self._key_fields = _key_fields(self.config)
        self.keys = allocate(self._key_fields, 0)
        self.machines = allocate(_MACHINE_FIELDS, 0)
        self.n_keys = self.n_mkeys = 0

    def grow(self, n_keys: int, n_mkeys: int) -> None:
        """Make room for key ids below ``n_keys`` and machine-key ids below ``n_mkeys``."""
        if n_keys > len(self.keys):
            self.keys = _grown(self.keys, self._key_fields, max(n_keys, 2 * len(self.keys)))
        if n_mkeys > len(self.machines):
            self.machines = _grown(self.machines, _MACHINE_FIELDS,
                                   max(n_mkeys, 2 * len(self.machines)))  # fmt: skip
        self.n_keys = max(self.n_keys, n_keys)
        self.n_mkeys = max(self.n_mkeys, n_mkeys)

    def keep(self, keys: np.ndarray, mkeys: np.ndarray) -> None:
        """Keep only ``keys`` and ``mkeys``, renumbered in that order (a key's slot in its
        machine is the machine's business, and stays)."""
        self.keys = self.keys[: self.n_keys][np.asarray(keys, np.int64)]
        self.machines = self.machines[: self.n_mkeys][np.asarray(mkeys, np.int64)]
        self.n_keys, self.n_mkeys = len(self.keys), len(self.machines)

    def arrays(self) -> dict[str, np.ndarray]:
        """The state as named plain arrays, for a checkpoint."""
        out = {"version": np.array(FORMAT_VERSION, np.int64)}
        out.update(to_columns(self.keys[: self.n_keys], "key_"))
        out.update(to_columns(self.machines[: self.n_mkeys], "machine_"))
        return out

    @classmethod
    def from_arrays(
        cls, arrays: Mapping[str, np.ndarray], config: ModelConfig | None = None
    ) -> MachineModelState:
        """The state :meth:`arrays` wrote, under the same ``config``."""
        version = int(arrays["version"])
        if version != FORMAT_VERSION:
            raise ValueError(f"machine model state version {version}, expected {FORMAT_VERSION}")
        state = cls(config)
        state.keys = from_columns(state._key_fields, arrays, "key_")
        state.machines = from_columns(_MACHINE_FIELDS, arrays, "machine_")
        state.n_keys, state.n_mkeys = len(state.keys), len(state.machines)
        return state

    def _params(self) -> np.ndarray:
        c = self.config
        return np.array([c.horizon_s, c.lags_s[0], c.lags_s[1], c.clip, c.prior], np.float64)


def sensor_masks(taken: Collection[str], loads: Collection[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per sensor code (the reading schema's symbols, then ``unknown``): whether the model
    takes the sensor type, and whether it is a load sensor (:func:`update`'s ``is_load``)."""
    names = [*sensor_types(), "unknown"]
    return (np.array([n in taken for n in names], np.bool_),
            np.array([n in loads for n in names], np.bool_))  # fmt: skip


def _grown(a: np.ndarray, fields: Fields, n: int) -> np.ndarray:
    out = allocate(fields, n)
    out[: len(a)] = a
    return out


def update(
    state: MachineModelState,
    keys: np.ndarray,
    mkeys: np.ndarray,
    sensors: np.ndarray,
    ts_ms: np.ndarray,
    values: np.ndarray,
    judged: np.ndarray | None = None,
    is_load: np.ndarray | None = None,
    off: np.ndarray | None = None,
) -> np.ndarray:
    """Score a batch of readings (arrival order) and let them teach the model.

    ``keys`` and ``mkeys`` are dense ids (below ``state.n_keys`` / ``state.n_mkeys``),
    ``sensors`` a code per reading naming its sensor type (any int, the same per type),
    ``judged`` which readings the model may take (default: those with a value; pass
    ``~isnull & (status == 0)``, and only the sensors the rules model), ``is_load`` per
    sensor code whether it is a load sensor (:attr:`ModelConfig.load_sensors`; default
    none), ``off`` which readings say their machine is off (a non-zero status; default
    none): for the longest lag after such a reading, while the machine settles, its readings
    teach the model but get no score. Returns the score per reading, NaN where there is
    none.
    """
    keys = np.ascontiguousarray(keys, np.int64)
    mkeys = np.ascontiguousarray(mkeys, np.int64)
    sensors = np.ascontiguousarray(sensors, np.int64)
    ts_ms = np.ascontiguousarray(ts_ms, np.int64)
    values = np.ascontiguousarray(values, np.float64)
    judged = ~np.isnan(values) if judged is None else np.ascontiguousarray(judged, np.bool_)
    n = keys.size
    off = np.zeros(n, np.bool_) if off is None else np.ascontiguousarray(off, np.bool_)
    if any(c.shape != (n,) for c in (mkeys, sensors, ts_ms, values, judged, off)):
        raise ValueError("the columns must be 1-d and of equal length")
    if n and (keys.max() >= state.n_keys or mkeys.max() >= state.n_mkeys):
        raise ValueError("key ids beyond the state (grow it first)")
    out = np.full(n, np.nan)
    is_load = np.zeros(1, np.bool_) if is_load is None else np.ascontiguousarray(is_load, np.bool_)
    _update_kernel(keys, mkeys, sensors, ts_ms, values, judged, off, is_load, state._params(),
                   state.config.warmup, state.keys, state.machines, np.zeros(DIM),
                   np.zeros(DIM), out)  # fmt: skip
    return out


@kernel
def _slot_of(mc, sensor):
    """The slot of ``sensor`` in machine record ``mc``, given one if there is room (-1:
    the machine has ``MAX_SENSORS`` others)."""
    for j in range(mc["n_slots"]):
        if mc["sensor"][j] == sensor:
            return j
    j = mc["n_slots"]
    if j >= MAX_SENSORS:
        return -1
    mc["sensor"][j] = sensor
    mc["n_slots"] = j + 1
    return j


@kernel
def _set_scale(kc, warmup, prior):
    """The key's standardisation from its first ``warmup`` values (kept in P's place):
    median and interquartile range (else the standard deviation, else 1 % of the level),
    and the variance of its resolution: the smallest step between them, squared, over 12;
    then P starts as the prior."""
    p = kc["p"]
    w = np.sort(p[:warmup].copy())
    mu = np.median(w)
    sc = np.percentile(w, 75.0) - np.percentile(w, 25.0)
    if not sc > 0:
        sc = np.std(w)
    if not sc > 0:
        sc = max(abs(mu), 1.0) * 0.01
    step = np.inf
    for i in range(1, w.size):
        d = w[i] - w[i - 1]
        if d > 0 and d < step:
            step = d
    if step == np.inf:
        step = sc * 0.1
    kc["mu"] = mu
    kc["sc"] = sc
    kc["floor"] = (step / sc) ** 2 / 12.0
    p[:] = 0.0
    for i in range(DIM):
        p[_row(i) + i] = prior


@kernel
def _features(mc, slot, x, lags, t):
    """The regressors of the sensor in ``slot`` at event time ``t``: 1, then per other slot
    in slot order its latest value, carried forward to ``t`` along its recent slope (for
    at most its usual interval: a sensor read a second ago is read where it is now), and
    its lagged means; 0 where there is none yet. Returns how many."""
    x[0] = 1.0
    d = 1
    for o in range(mc["n_slots"]):
        if o == slot:
            continue
        z = mc["z"][o]
        if z == z:
            every = mc["every"][o]
            ahead = (t - mc["ts"][o]) / 1000.0
            if every == every and ahead > 0.0:
                z += mc["slope"][o] * min(ahead, every)
            x[d] = z
        else:
            x[d] = 0.0
        for q in range(lags):
            v = mc["lag"][q * MAX_SENSORS + o]
            x[d + 1 + q] = v if v == v else 0.0
        d += 1 + lags
    return d


@kernel
def _novelty(mc, slot, z, is_load):
    """How far the machine's load is from where the horizon has seen it: the largest
    squared z-score of a load sensor's latest value (this reading's, for its own slot)
    against its mean and variance over the horizon; 0 without a load sensor."""
    worst = 0.0
    for o in range(mc["n_slots"]):
        code = mc["sensor"][o]
        if code < 0 or code >= is_load.size or not is_load[code] or mc["count"][o] < 2:
            continue
        v = z if o == slot else mc["z"][o]
        if v != v:
            continue
        dev = v - mc["mean"][o]
        d2 = dev * dev / max(mc["var"][o], 1e-6)
        if d2 > worst:
            worst = d2
    return worst


@kernel
def _blamed(mc, slot, score, clip, t):
    """The score the reading is given: its own, unless another sensor of the machine is
    further off still (its latest score, at most two of its intervals old, is higher): then
    that one is to blame, and this reading, read against it, counts as explained (at most
    ``clip``)."""
    for o in range(mc["n_slots"]):
        if o == slot or mc["score"][o] <= score or mc["scored"][o] == NO_TS:
            continue
        every = mc["every"][o]
        if t - mc["scored"][o] <= 2000.0 * (every if every == every else 1.0):
            return min(score, clip)
    return score


@kernel
def _learn(kc, x, px, d, r, lam, weight, lev):
    """One weighted recursive-least-squares step with forgetting ``lam`` on the first
    ``d`` regressors; P is kept symmetric and its trace bounded by the prior's (no
    wind-up where the regressors do not move)."""
    w = kc["w"]
    p = kc["p"]
    g = 1.0 / (lam / weight + lev)
    for i in range(d):
        w[i] += g * px[i] * r
    trace = 0.0
    for i in range(d):
        row = _row(i)
        for j in range(i, d):
            p[row + j] = (p[row + j] - g * px[i] * px[j]) / lam
        trace += p[row + i]
    return trace


@kernel
def _row(i):
    """Where row ``i`` of the packed upper triangle starts, less ``i`` (so that element
    (i, j), j >= i, is at ``_row(i) + j``)."""
    return i * DIM - i * (i + 1) // 2


@kernel
def _update_kernel(keys, mkeys, sensors, ts_ms, values, judged, off, is_load, params, warmup,
                   kst, mst, x, px, out):  # fmt: skip
    horizon, lag1, lag2, clip, prior = params[0], params[1], params[2], params[3], params[4]
    settle = 1000.0 * max(lag1, lag2)
    for i in range(keys.size):
        if off[i]:
            mst[mkeys[i]]["off"] = max(mst[mkeys[i]]["off"], ts_ms[i])
        if not judged[i]:
            continue
        k = keys[i]
        kc = kst[k]
        t = ts_ms[i]
        if kc["last_ts"] != NO_TS and t <= kc["last_ts"]:
            continue  # late, or a re-delivery: the model learns in event-time order
        mc = mst[mkeys[i]]
        slot = kc["slot"]
        if slot < 0:
            slot = _slot_of(mc, sensors[i])
            if slot < 0:
                continue
            kc["slot"] = slot
        dt = 0.0 if kc["last_ts"] == NO_TS else (t - kc["last_ts"]) / 1000.0
        kc["last_ts"] = t
        v = values[i]
        n = kc["n"]
        kc["n"] = n + 1
        if n < warmup:
            kc["p"][n] = v
            if n + 1 == warmup:
                _set_scale(kc, warmup, prior)
            continue
        z = (v - kc["mu"]) / kc["sc"]
        d = _features(mc, slot, x, N_LAGS, t)
        p = kc["p"]
        lev = 0.0
        for a in range(d):
            acc = 0.0
            for b in range(a):
                acc += p[_row(b) + a] * x[b]
            row = _row(a)
            for b in range(a, d):
                acc += p[row + b] * x[b]
            px[a] = acc
            lev += x[a] * acc
        if lev < 0.0:
            lev = 0.0
        w = kc["w"]
        pred = 0.0
        for a in range(d):
            pred += w[a] * x[a]
        r = z - pred
        if kc["s2"] != kc["s2"]:  # start wide, the sensor's own spread, and learn down
            kc["s2"] = 1.0 / IQR_PER_SD**2
        var = max(kc["s2"], kc["floor"])
        unknown = _novelty(mc, slot, z, is_load) - NOVEL
        score = abs(r) / math.sqrt(var * (1.0 + lev + max(unknown, 0.0)))
        if n >= 2 * warmup and (mc["off"] == NO_TS or t - mc["off"] >= settle):
            out[i] = _blamed(mc, slot, score, clip, t)
        mc["score"][slot] = score
        mc["scored"][slot] = t
        weight = 1.0 if score <= clip else (clip / score) ** 2
        lam = math.exp(-dt / horizon)
        trace = _learn(kc, x, px, d, r, lam, weight, lev)
        if trace > d * prior:  # forgetting grew P where nothing moved: scale it back
            s = d * prior / trace
            for a in range(d):
                row = _row(a)
                for b in range(a, d):
                    p[row + b] *= s
        if score <= 2.0 * clip:  # trimmed: an anomaly must not widen the scale it is judged by
            alpha = max(1.0 / (n - warmup + 2), 1.0 - lam)  # the wide start weighs as one
            kc["s2"] += alpha * (r * r / (1.0 + lev) - kc["s2"])
        code = sensors[i]
        if score > clip and not (code < is_load.size and is_load[code]):
            # a suspect reading is not what the other sensors are predicted from: a sensor
            # that walks off must not make its neighbours look wrong (the load is what the
            # machine is asked to do, and always is)
            continue
        # the machine's view of this sensor, for its other sensors' models
        prev_ts = mc["ts"][slot]
        gap = 0.0 if prev_ts == NO_TS else (t - prev_ts) / 1000.0
        mc["ts"][slot] = t
        if gap > 0.0:
            prev_z = mc["z"][slot]
            if prev_z == prev_z:
                mc["slope"][slot] += 0.5 * ((z - prev_z) / gap - mc["slope"][slot])
            every = mc["every"][slot]
            mc["every"][slot] = gap if every != every else every + 0.1 * (gap - every)
        mc["z"][slot] = z
        c = mc["count"][slot] + 1
        mc["count"][slot] = c
        a = max(1.0 / c, 1.0 - math.exp(-gap / horizon))
        dev = z - mc["mean"][slot]
        mc["mean"][slot] += a * dev
        mc["var"][slot] = (1.0 - a) * (mc["var"][slot] + a * dev * dev)
        for q in range(N_LAGS):
            tau = lag1 if q == 0 else lag2
            j = q * MAX_SENSORS + slot
            old = mc["lag"][j]
            mc["lag"][j] = z if old != old else old + (1.0 - math.exp(-gap / tau)) * (z - old)
