"""Scenario files: the shipped standard story, and clear errors for bad entries."""

import pytest

from workbench.errors import ConfigError
from workbench.simulator.physics import DEFAULT_START_MS
from workbench.simulator.scenario import ScenarioError, load_scenario, parse_scenario
from workbench.simulator.spec import SimulationSpec
from workbench.simulator.truth import FAULT_KINDS


def test_standard_scenario_has_every_fault_kind_several_times():
    sc = load_scenario("standard")
    assert 20 <= sc.machines <= 48 and 120 <= sc.duration_s <= 600
    scripted = {k: sum(1 for f in sc.faults if f.kind == k) for k in FAULT_KINDS}
    assert all(n >= 3 for n in scripted.values()), scripted
    assert all(f.at_s < sc.duration_s and 1 <= f.machine <= sc.machines for f in sc.faults)


def test_a_scenario_places_faults_in_event_time():
    sc = parse_scenario({"run": {"machines": 8, "duration": "5m"},
                         "fault": [{"kind": "failure", "machine": 7, "at": "3m"}]})  # fmt: skip
    (fault,) = sc.scripted()
    assert (fault.kind, fault.machine, fault.at_ms) == ("failure", 6, DEFAULT_START_MS + 180_000)


def test_arguments_override_the_scenario():
    spec = SimulationSpec.build(scenario="standard", machines=10, seed=3, chaos={"loss": 0.2})
    assert (spec.factory.machines, spec.factory.seed, spec.chaos["loss"]) == (10, 3, 0.2)
    assert spec.chaos["duplicate"] == load_scenario("standard").chaos["duplicate"]
    assert all(f.machine <= 10 for f in spec.faults)  # faults on machines not simulated go


def test_a_scenario_of_sensor_nodes_and_a_factory_given_on_the_command_line():
    sc = parse_scenario({"run": {"machines": 3, "duration": 60, "factory": "nodes"},
                         "fault": [{"kind": "drift", "machine": 1, "at": "5s",
                                    "sensor": "humidity"}]})  # fmt: skip
    spec = SimulationSpec.build(scenario=sc)
    assert spec.factory.kind == "nodes" and spec.params()["factory"] == "nodes"
    with pytest.raises(ConfigError, match="humidity"):
        SimulationSpec.build(scenario=sc, factory_kind="machines")
    assert SimulationSpec.build(scenario="standard", factory_kind=None).factory.kind == "machines"


def test_events_per_second_sets_the_rate_for_the_whole_factory():
    spec = SimulationSpec.build(machines=100, events_per_s=6200)
    assert spec.factory.events_per_second() == pytest.approx(6200)


@pytest.mark.parametrize(
    ("data", "where", "problem"),
    [
        ({"fault": [{"kind": "meteor", "machine": 1, "at": "1s"}]}, "fault #1", "kind 'meteor'"),
        ({"fault": [{"kind": "spike", "machine": 99, "at": "1s"}]}, "fault #1", "machine 99"),
        ({"fault": [{"kind": "spike", "machine": 1, "at": "later"}]}, "fault #1", "at='later'"),
        (
            {"fault": [{"kind": "spike", "machine": 1, "at": "2h"}]},
            "fault #1",
            "after the run's end",
        ),
        ({"fault": [{"kind": "loss", "machine": 1, "at": "1s"}]}, "fault #1", "needs a duration"),
        (
            {"fault": [{"kind": "drift", "machine": 1, "at": "1s", "sensor": "mood"}]},
            "fault #1",
            "sensor 'mood'",
        ),
        (
            {"fault": [{"kind": "spike", "machine": 1, "at": "1s", "colour": "red"}]},
            "fault #1",
            "unknown key",
        ),
        ({"chaos": {"loss": 3}}, "[chaos] loss", "probability"),
        ({"run": {"machines": "many"}}, "[run]", "many"),
        ({"run": {"machines": 5, "duration": 60, "factory": "plant"}}, "[run]", "factory 'plant'"),
        (
            {
                "run": {"machines": 5, "duration": 60, "factory": "nodes"},
                "fault": [{"kind": "drift", "machine": 1, "at": "1s", "sensor": "vibration"}],
            },
            "fault #1",
            "a factory of nodes",
        ),
        ({"magnitudes": {"warp": 9}}, "[magnitudes]", "unknown key"),
        ({"extra": {}}, "top level", "unknown table"),
    ],
)
def test_bad_entries_name_the_file_and_the_entry(data, where, problem):
    with pytest.raises(ScenarioError) as err:
        parse_scenario({"run": {"machines": 5, "duration": 60}} | data, "my.toml")
    assert err.value.where == where and problem in err.value.problem
    assert str(err.value).startswith("scenario my.toml: ")


def test_unknown_scenario_and_broken_toml(tmp_path):
    with pytest.raises(ConfigError, match="one of: standard"):
        load_scenario("nope")
    bad = tmp_path / "bad.toml"
    bad.write_text("[run\nmachines = 3")
    with pytest.raises(ScenarioError, match=r"bad\.toml: TOML"):
        load_scenario(str(bad))
