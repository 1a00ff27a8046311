"""The machine model (workbench.processor.stats.machine): each sensor judged against what the
machine's other sensors predict, and the ``model`` rules that read it.

What it must do, on crafted machines whose truth is known:
- a change of load that every sensor follows is explained (no score past 5), also when the
  load is somewhere it has never been (the model says it does not know);
- a sensor that walks off while the load stays is unexplained, and only that sensor;
- a sensor that moves in coarse steps is judged in such steps;
- what it learns is state: checkpointed arrays continue exactly, and renumbered keys too;
- the compiled kernel and the plain Python one agree (the same code, two ways to run it).
On the simulated factory: a clean factory's model scores stay quiet, and a drift on one
sensor is caught on that sensor.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from workbench.processor.rules import RulesError, load_rules, parse_rules
from workbench.processor.stats.machine import MAX_SENSORS, MachineModelState, ModelConfig, update
from workbench.simulator.physics import Factory, FactoryConfig

LOAD = np.array([False, False, True])  # sensor code 2 is the load (current)


def machine(
    seconds: int, load: np.ndarray, seed: int = 0, drift_from: int | None = None,
    drift_s: int = 120,
):  # fmt: skip
    """One machine at 1 Hz: temperature (code 0) follows load with a lag, vibration (1)
    follows it at once, current (2) is the load; sorted as a stream of readings."""
    rng = np.random.default_rng(seed)
    temp = np.empty(seconds)
    t = 40.0 + 30.0 * load[0]
    for i in range(seconds):
        t += (40.0 + 30.0 * load[i] - t) * (1 - np.exp(-1 / 90))
        temp[i] = t
    temp += rng.normal(0, 0.15, seconds)
    vib = 1.0 + 4.0 * load + rng.normal(0, 0.05, seconds)
    cur = 5.0 + 20.0 * load + rng.normal(0, 0.1, seconds)
    if drift_from is not None:
        walk = np.minimum(np.arange(seconds - drift_from) / drift_s, 1.0)
        vib[drift_from:] += 1.5 * walk
    values = np.stack([temp, vib, cur], axis=1).ravel()
    sensors = np.tile([0, 1, 2], seconds)
    ts = np.repeat(np.arange(seconds, dtype=np.int64) * 1000, 3)
    return sensors, ts, values


def scores_of(sensors, ts, values, state=None, is_load=LOAD):
    state = state or MachineModelState()
    state.grow(3, 1)
    out = update(state, sensors, np.zeros(sensors.size, np.int64), sensors, ts, values,
                 is_load=is_load)  # fmt: skip
    return out.reshape(-1, 3), state


def sustained(scores: np.ndarray, above: float = 5.0, readings: int = 6) -> np.ndarray:
    """Per row (and column): the reading ends a run of ``readings`` scores past ``above``
    in a row, what the default rule needs to open (5 s at 1 Hz). A reading read against
    another sensor's previous one at an abrupt step may score high alone, and opens
    nothing."""
    run = np.nan_to_num(scores) > above
    view = np.lib.stride_tricks.sliding_window_view(run, readings, axis=0)
    return view.min(axis=-1)


def steps(seconds: int, levels: list[tuple[int, float]]) -> np.ndarray:
    """A load that holds each level from its second on."""
    load = np.zeros(seconds)
    for start, level in levels:
        load[start:] = level
    return load


def test_a_load_change_every_sensor_follows_is_explained():
    # idle, run, idle, run again: the second run is a load the model has seen
    load = steps(3600, [(0, 0.1), (600, 0.7), (1500, 0.1), (2400, 0.7)])
    scores, _ = scores_of(*machine(3600, load))
    assert not sustained(scores).any(), np.argwhere(sustained(scores))[:5]


def test_a_load_never_seen_before_is_not_called_an_anomaly():
    load = steps(1800, [(0, 0.3), (1200, 0.95)])  # an overload after 20 calm minutes
    scores, _ = scores_of(*machine(1800, load))
    assert not sustained(scores).any(), np.argwhere(sustained(scores))[:5]
    # without a load sensor the same step is an unexplained jump of its sensors
    blind, _ = scores_of(*machine(1800, load), is_load=np.zeros(3, bool))
    assert sustained(blind[1200:1300]).any()


def test_a_sensor_that_walks_off_is_unexplained_and_its_neighbours_are_not():
    # a machine at work, load wandering; vibration walks 1.5 mm/s off in two minutes (the
    # simulator's drifts take 90-180 s; one over tens of minutes the model learns as it
    # goes, and misses)
    load = 0.5 + 0.1 * np.sin(np.arange(1440) / 120)
    scores, _ = scores_of(*machine(1440, load, drift_from=1200, drift_s=120))
    assert not sustained(scores[:1200]).any()
    late = scores[1260:]
    assert (late[:, 1] > 5).mean() > 0.9  # vibration, the drifting one
    assert not sustained(late[:, [0, 2]]).any()  # temperature and current are not blamed


def test_a_sensor_in_coarse_steps_is_judged_in_steps():
    # a pressure reading that flips between plateaus 0.33 apart (SKAB's Pressure)
    rng = np.random.default_rng(5)
    n = 1200
    level = np.round(rng.normal(0, 0.25, n).cumsum() * 0.05 / 0.33) * 0.33
    stepped = 1.0 + level + 0.33 * rng.integers(-1, 2, n) * (rng.random(n) < 0.1)
    sensors = np.zeros(n, np.int64)
    ts = np.arange(n, dtype=np.int64) * 1000
    state = MachineModelState()
    state.grow(1, 1)
    out = update(state, sensors, sensors, sensors, ts, stepped)
    assert np.nanmax(out) < 5, np.nanmax(out)


def test_only_readings_with_a_value_in_event_time_order_are_modelled():
    sensors, ts, values = machine(200, np.full(200, 0.5))
    judged = np.ones(values.size, bool)
    judged[300] = False  # e.g. a reading with status 2
    _, state = scores_of(sensors, ts, values)
    state2 = MachineModelState()
    state2.grow(3, 1)
    out = update(state2, sensors, np.zeros(sensors.size, np.int64), sensors, ts, values, judged,
                 LOAD)  # fmt: skip
    assert np.isnan(out[300]) and int(state2.keys["n"][0]) == int(state.keys["n"][0]) - 1
    again = update(state2, sensors[-3:], np.zeros(3, np.int64), sensors[-3:], ts[-3:],
                   values[-3:], is_load=LOAD)  # a re-delivery, event time not after  # fmt: skip
    assert np.isnan(again).all()


def test_checkpointed_arrays_continue_exactly_and_renumbered_keys_too():
    load = steps(1600, [(0, 0.2), (500, 0.6), (1100, 0.3)])
    sensors, ts, values = machine(1600, load, seed=3)
    whole, _ = scores_of(sensors, ts, values)
    cut = 2400
    _, state = scores_of(sensors[:cut], ts[:cut], values[:cut])
    restored = MachineModelState.from_arrays(state.arrays())
    rest, _ = scores_of(sensors[cut:], ts[cut:], values[cut:], restored)
    np.testing.assert_array_equal(rest, whole[cut // 3 :])
    # keys renumbered (another run's keys dropped before them): the same scores
    _, state = scores_of(sensors[:cut], ts[:cut], values[:cut])
    padded = MachineModelState()
    padded.grow(5, 2)
    padded.keys[2:5] = state.keys[:3]
    padded.machines[1] = state.machines[0]
    padded.keep(np.array([2, 3, 4]), np.array([1]))
    rest, _ = scores_of(sensors[cut:], ts[cut:], values[cut:], padded)
    np.testing.assert_array_equal(rest, whole[cut // 3 :])
    with pytest.raises(ValueError, match="version"):
        MachineModelState.from_arrays(state.arrays() | {"version": np.array(99)})


def test_a_machine_models_at_most_max_sensors_and_scores_nothing_of_the_rest():
    n, k = 200, MAX_SENSORS + 1
    rng = np.random.default_rng(1)
    sensors = np.tile(np.arange(k), n)
    state = MachineModelState()
    state.grow(k, 1)
    ts = np.repeat(np.arange(n) * 1000, k)
    out = update(state, sensors, np.zeros(sensors.size, np.int64), sensors, ts,
                 rng.normal(0, 1, n * k)).reshape(n, k)  # fmt: skip
    assert np.isnan(out[:, -1]).all() and not np.isnan(out[-1, :-1]).any()


def test_the_compiled_kernel_and_plain_python_agree():
    code = (
        "import sys, numpy as np; sys.path.insert(0, 'tests');"
        "from test_machine_model import machine, scores_of, steps;"
        "s, _ = scores_of(*machine(700, steps(700, [(0, 0.2), (300, 0.8)]), drift_from=400));"
        "np.save(sys.argv[1], s)"
    )
    out = {}
    for jit in ("0", "1"):
        path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"model-{os.getpid()}-{jit}.npy")
        env = os.environ | {"WORKBENCH_JIT": jit}
        subprocess.run([sys.executable, "-c", code, path], check=True, env=env, timeout=300)
        out[jit] = np.load(path)
        os.unlink(path)
    # LLVM may fuse a multiply and an add: the last bits differ, nothing else
    np.testing.assert_allclose(out["0"], out["1"], rtol=1e-6, atol=1e-9, equal_nan=True)


def test_a_clean_simulated_factory_is_explained_and_a_drift_is_caught_on_its_sensor():
    machines, seconds = 20, 1200
    factory = Factory(FactoryConfig(machines=machines, seed=11, start_ms=0))
    names = ["temperature", "vibration", "pressure", "current"]
    cols: dict[str, list] = {s: [] for s in names}
    for _ in range(seconds):
        tick = factory.step()
        for s in names:
            cols[s].append(tick.values[s])
    values = np.stack([np.array(cols[s]) for s in names], axis=2)  # (time, machine, sensor)
    values[900:, 4, 2] += np.minimum(np.arange(seconds - 900) / 120, 1) * 1.5  # pressure drifts
    keys = np.tile(np.arange(machines * 4), seconds)
    state = MachineModelState()
    state.grow(machines * 4, machines)
    out = update(state, keys, keys // 4, keys % 4, np.repeat(np.arange(seconds) * 1000,
                 machines * 4), values.ravel(), is_load=np.array([0, 0, 0, 1], bool))  # fmt: skip
    out = out.reshape(seconds, machines, 4)
    run = (out > 5).astype(int)
    # an alert needs 5 s of breaches in a row: count runs of 6 readings
    sustained = np.lib.stride_tricks.sliding_window_view(run, 6, axis=0).min(axis=-1) > 0
    assert sustained[:, 4, 2].any()
    sustained[:, 4, 2] = False
    assert not sustained.any(), np.argwhere(sustained)[:5]


def test_model_rules_and_the_model_table_are_checked():
    rule = {"name": "u", "kind": "model", "sensor": "vibration"}
    with pytest.raises(RulesError, match="a model rule needs score_above"):
        parse_rules({"rule": [rule]})
    with pytest.raises(RulesError, match="takes no alone_s"):
        parse_rules({"rule": [rule | {"score_above": 5, "alone_s": 3}]})
    model = {"horizon": "6h", "lags": ["30s", "10m"], "warmup": 20}
    rs = parse_rules({"rule": [rule | {"score_above": 5}], "model": model})
    assert rs.uses_model and rs.modelled_sensors == ("vibration",)
    assert rs.model == ModelConfig(horizon_s=21600.0, lags_s=(30.0, 600.0), warmup=20)
    for bad, says in (
        ({"horizon": "soon"}, "horizon"),
        ({"lags": ["1m"]}, "lags"),
        ({"warmup": 2}, "warmup"),
        ({"load_sensors": ["*"]}, "load_sensors"),
        ({"load_sensors": ["torque"]}, "unknown"),
        ({"depth": 3}, "unknown"),
    ):
        with pytest.raises(RulesError, match=says):
            parse_rules({"rule": [rule | {"score_above": 5}], "model": bad})
    assert not parse_rules({"rule": [rule | {"kind": "anomaly", "score_above": 5}]}).uses_model
    assert load_rules().uses_model
