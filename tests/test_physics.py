import numpy as np
import pytest

from workbench.errors import ConfigError
from workbench.simulator.physics import (
    KINDS,
    MACHINE_TYPES,
    REGIMES,
    SENSORS,
    Factory,
    FactoryConfig,
)


def run(cfg: FactoryConfig, seconds: float):
    f = Factory(cfg)
    return f, list(f.ticks(seconds))


def test_same_seed_same_readings_value_for_value():
    cfg = FactoryConfig(machines=20, seed=11, start_ms=0)
    f1, a = run(cfg, 30)
    f2, b = run(cfg, 30)
    assert [list(f1.records(t)) for t in a] == [list(f2.records(t)) for t in b]


def test_different_seed_different_readings():
    _, a = run(FactoryConfig(machines=5, seed=1, start_ms=0), 5)
    _, b = run(FactoryConfig(machines=5, seed=2, start_ms=0), 5)
    assert not np.array_equal(a[-1].values["temperature"], b[-1].values["temperature"])


def test_event_time_and_sequence_advance_per_sample():
    f, ticks = run(FactoryConfig(machines=3, rate_hz=4, seed=0, start_ms=1_000), 2)
    assert [t.ts_ms for t in ticks] == [1000 + 250 * i for i in range(8)]
    assert [int(t.seq["pressure"][2]) for t in ticks] == list(range(8))
    recs = list(f.records(ticks[0]))
    assert len(recs) == 3 * len(KINDS["machines"])  # the first tick samples every sensor
    assert {r["machine_id"] for r in recs} == {"m-0001", "m-0002", "m-0003"}


def test_temperature_follows_load_through_a_thermal_lag():
    """A step in load moves temperature towards its new equilibrium gradually."""
    f = Factory(FactoryConfig(machines=50, seed=3, start_ms=0))
    before = f.temp_c.copy()
    f.forced_load[:] = 1.0  # every machine to full load
    first = f.step()
    for _ in range(900):
        last = f.step()
    assert np.all(f.temp_c > before)
    # one second in, the true temperature moved only a little of the way ...
    assert np.all(np.abs(first.values["temperature"] - before) < 2.0)
    # ... fifteen minutes later most of the way to ambient + gain
    target = f.config.ambient_c + f.thermal_gain_c
    assert np.all(target - last.values["temperature"] < 0.25 * (target - before) + 1.0)


def test_vibration_and_pressure_grow_with_load():
    _, ticks = run(FactoryConfig(machines=200, seed=5, start_ms=0), 120)
    load = np.concatenate([t.load for t in ticks])
    for sensor in ("vibration", "pressure"):
        values = np.concatenate([t.values[sensor] for t in ticks])
        assert np.corrcoef(load, values)[0, 1] > 0.3


def test_values_are_quantised_to_the_sensor_resolution():
    for kind, sensors in KINDS.items():
        _, ticks = run(FactoryConfig(machines=10, seed=0, start_ms=0, kind=kind), 30)
        for sensor in sensors:
            spec = SENSORS[sensor]
            v = np.concatenate([t.values[sensor] for t in ticks if sensor in t.values])
            steps = v / spec["resolution"]
            assert v.size and np.allclose(steps, np.round(steps), atol=1e-6)


def test_machines_move_through_operating_regimes():
    f = Factory(FactoryConfig(machines=100, seed=9, start_ms=0))
    seen, load_by_regime = set(), {r: [] for r in range(len(REGIMES))}
    for _ in range(1200):
        tick = f.step()
        seen |= set(f.regime.tolist())
        for r in range(len(REGIMES)):
            load_by_regime[r].extend(tick.load[f.regime == r].tolist())
    assert seen == set(range(len(REGIMES)))
    mean = {REGIMES[r]: np.mean(v) for r, v in load_by_regime.items()}
    assert mean["idle"] < mean["ramp_up"] < mean["steady"] < mean["overload"]
    assert mean["cool_down"] < mean["steady"]
    assert set(f.machine_type) == set(MACHINE_TYPES)


def test_each_sensor_samples_at_its_own_rate():
    _f, ticks = run(FactoryConfig(machines=2, seed=0, start_ms=0, rate_hz=2.0), 60)
    counts = {s: sum(1 for t in ticks if s in t.values) for s in KINDS["machines"]}
    assert counts == {
        "temperature": 120,
        "vibration": 120,
        "pressure": 120,
        "battery": 12,
        "current": 120,
    }
    f2 = Factory(FactoryConfig(machines=2, seed=0, sensor_rates_hz={"vibration": 4, "battery": 0}))
    assert f2.tick_hz == 4 and "battery" not in f2.rates
    assert FactoryConfig(machines=10).events_per_second() == pytest.approx(41.0)


def test_a_factory_of_sensor_nodes_reads_the_air_of_a_hall_and_runs_its_batteries_down():
    f = Factory(FactoryConfig(machines=100, seed=3, kind="nodes"))
    assert f.machine_ids[0] == "n-0001" and f.measured == ("temperature", "humidity")
    ticks = [f.step() for _ in range(3600)]
    assert {s for t in ticks for s in t.values} == {"temperature", "humidity", "battery"}
    temp = np.array([t.values["temperature"] for t in ticks])
    humidity = np.array([t.values["humidity"] for t in ticks])
    battery = np.array([t.values["battery"] for t in ticks if "battery" in t.values])
    # an hour of air: 20-30 C, so that the edge rule "temperature > 30" means a fault
    assert temp.min() > 18 and temp.max() < 30 and np.ptp(temp, axis=0).max() > 1
    assert humidity.min() >= 5 and humidity.max() <= 95
    assert (np.abs(np.diff(battery, axis=0)) < 0.5).all() and battery[-1].mean() < battery[0].mean()
    with pytest.raises(ConfigError, match="factory"):
        FactoryConfig(kind="plant")
    with pytest.raises(ConfigError, match="sensor_rates_hz"):
        FactoryConfig(kind="nodes", sensor_rates_hz={"vibration": 1})


def test_five_thousand_machines_step_as_vectors():
    f = Factory(FactoryConfig(machines=5000, seed=1))
    tick = f.step()
    assert tick.values["temperature"].shape == (5000,) and f.machine_ids[-1] == "m-5000"


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"machines": 0}, "machines"), ({"rate_hz": 0}, "rate"), ({"seed": -1}, "seed"),
     ({"seed": 2**63}, "seed")],  # numpy takes no negative seed, the registry a bigint
)  # fmt: skip
def test_bad_factory_parameters_are_named(kwargs, name):
    with pytest.raises(ConfigError, match=name):
        FactoryConfig(**kwargs)
