"""A failure's precursor: the machine degrades for a lead time before its runaway.

The simulator is driven without a broker (messages to a list, decoded back with the codec
the processor uses), beside its clean twin: chaos draws from generators of its own, so a run
with a failure and the same seed without it agree on every reading the failure did not
touch, and the difference is what the degradation did. The last test runs the pipeline.
"""

import hashlib
import itertools
import json
import subprocess
from collections import defaultdict

import numpy as np
import pytest
import sqlalchemy as sa
from conftest import WORKBENCH, cli_env

from workbench.cli import build_parser
from workbench.errors import ConfigError
from workbench.processor.decode import OK, decode_batch
from workbench.processor.rules import load_rules
from workbench.processor.validate import reasons, validate_batch
from workbench.schemas import READING, DecodeError, codec_for
from workbench.simulator.chaos import Magnitudes, ScriptedFault
from workbench.simulator.control import ChaosControl
from workbench.simulator.physics import DEFAULT_START_MS, FactoryConfig
from workbench.simulator.scenario import ScenarioError, parse_scenario
from workbench.simulator.source import Simulation
from workbench.simulator.spec import SimulationSpec
from workbench.sinks import schema
from workbench.sinks.postgres import engine

LEAD = Magnitudes(failure_lead_s=(120.0, 180.0))
OFF = Magnitudes(failure_lead_s=(0.0, 0.0))


def at(seconds: float) -> int:
    return DEFAULT_START_MS + round(seconds * 1000)


def simulate(seconds, machines=6, seed=3, chaos=None, scripted=None, magnitudes=None,
             kind="machines", control=None):  # fmt: skip
    sim = Simulation(FactoryConfig(machines=machines, seed=seed, kind=kind), "p",
                     control or ChaosControl(chaos or {}), scripted, magnitudes)  # fmt: skip
    out: list[tuple[bytes, bytes]] = []
    counts = sim.run(lambda k, v: out.append((k, v)), seconds)
    return sim, counts, out


def readings(messages) -> dict[tuple[str, str], dict[int, float | None]]:
    """(machine, sensor) -> {event time: value} of the decodable readings."""
    out: dict[tuple[str, str], dict[int, float | None]] = defaultdict(dict)
    for _key, value in messages:
        try:
            r = READING.decode(value)
        except DecodeError:
            continue
        out[(r["machine_id"], r["sensor_type"])][r["ts"]] = r["value"]
    return out


def events(sim, kind):
    return [e for e in sim.truth.events if e.kind == kind]


def digest(messages) -> str:
    h = hashlib.sha256()
    for k, v in messages:
        h.update(k + b"\0" + v)
    return h.hexdigest()


def window_mean(series: dict[int, float | None], since: int, until: int) -> float:
    return float(np.mean([v for t, v in series.items() if since <= t < until and v is not None]))


# -- ground truth -----------------------------------------------------------------------


def test_every_failure_is_preceded_by_a_degradation_of_the_configured_lead():
    sim, counts, _ = simulate(1200, machines=20, chaos={"failure": 0.05}, magnitudes=LEAD)
    failures, degradations = events(sim, "failure"), events(sim, "degradation")
    assert len(failures) >= 10
    before = {(d.machine_id, d.end_ts): d for d in degradations}
    for f in failures:
        d = before.pop((f.machine_id, f.start_ts))  # the degradation ends where it begins
        assert 120_000 <= d.end_ts - d.start_ts < 181_000, d
        assert d.sensor_type is None and 0.2 <= d.magnitude <= 0.4 and d.source == "chaos"
        assert "bearing wear" in d.detail
    # the rest were still under way when the run ended, their failure yet to come
    assert before and all(d.end_ts == counts.last_ts and "still degrading" in d.detail
                          for d in before.values())  # fmt: skip
    # a machine degrades, fails, is repaired: one failure at a time, never overlapping
    by_machine = defaultdict(list)
    for e in sorted(failures + degradations, key=lambda e: e.start_ts):
        by_machine[e.machine_id].append(e)
    for episodes in by_machine.values():
        assert all(a.end_ts <= b.start_ts for a, b in itertools.pairwise(episodes))


def test_without_the_precursor_failures_come_unannounced():
    sim, _, _ = simulate(600, machines=20, chaos={"failure": 0.05}, magnitudes=OFF)
    assert len(events(sim, "failure")) >= 5 and not events(sim, "degradation")


def test_a_scripted_failure_degrades_before_the_time_it_is_placed_at():
    scripted = [
        ScriptedFault("failure", 0, at(600), duration_s=60),  # lead drawn: 5-15 min
        ScriptedFault("failure", 1, at(90), duration_s=60),  # run younger than the lead
        ScriptedFault("failure", 2, at(0), duration_s=60),  # at the start: no lead at all
        ScriptedFault("failure", 3, at(300), duration_s=60, lead_s=30),  # its own lead
    ]
    sim, _, _ = simulate(700, scripted=scripted)
    degraded = {e.machine_id: (e.start_ts, e.end_ts) for e in events(sim, "degradation")}
    failed = {e.machine_id: e.start_ts for e in events(sim, "failure")}
    assert failed == {"m-0001": at(600), "m-0002": at(90), "m-0003": at(0), "m-0004": at(300)}
    assert degraded == {"m-0001": (at(0), at(600)), "m-0002": (at(0), at(90)),
                        "m-0004": (at(270), at(300))}  # fmt: skip
    assert all(e.source == "scenario" for e in sim.truth.events)
    # a longer run: the drawn lead is within the range
    sim, _, _ = simulate(1300, scripted=[ScriptedFault("failure", 0, at(1200), duration_s=60)])
    (d,) = events(sim, "degradation")
    assert d.end_ts == at(1200) and 300_000 <= d.end_ts - d.start_ts <= 900_000


def test_a_scripted_failure_whose_degradation_could_not_begin_still_happens():
    """Machine 1 is failing (a scripted failure at 0) when the second one's degradation is
    due: that failure comes unannounced at its time, as scripted failures always did."""
    scripted = [ScriptedFault("failure", 0, at(0), duration_s=30),
                ScriptedFault("failure", 0, at(400), duration_s=30, lead_s=390)]  # fmt: skip
    sim, _, _ = simulate(500, scripted=scripted, magnitudes=Magnitudes(failure_repair_s=(60, 60)))
    assert [e.start_ts for e in events(sim, "failure")] == [at(0), at(400)]
    assert not events(sim, "degradation")


# -- readings -----------------------------------------------------------------------------


def test_the_machine_vibrates_more_and_runs_warmer_in_the_lead_window():
    """Against its clean twin, reading by reading: nothing differs before the degradation
    began; then the vibration rises towards its recorded share, noisier, and the temperature
    creeps up, at the same load; other machines are untouched."""
    failure = ScriptedFault("failure", 2, at(900), duration_s=60, lead_s=480)
    sim, _, faulty = simulate(960, scripted=[failure])
    _, _, clean = simulate(960)
    f, c = readings(faulty), readings(clean)
    (d,) = events(sim, "degradation")
    assert (d.start_ts, d.end_ts) == (at(420), at(900))
    for key in c:
        if key[0] != "m-0003" or key[1] not in ("vibration", "temperature"):
            assert f[key] == c[key], key
    vib_f, vib_c = f[("m-0003", "vibration")], c[("m-0003", "vibration")]
    temp_f, temp_c = f[("m-0003", "temperature")], c[("m-0003", "temperature")]
    assert all(vib_f[t] == vib_c[t] and temp_f[t] == temp_c[t] for t in vib_c if t < at(420))
    ratio = {t: vib_f[t] / vib_c[t] for t in vib_c if vib_c[t]}
    heat = {t: temp_f[t] - temp_c[t] for t in temp_c}
    early, late = (at(420), at(540)), (at(780), at(900))
    # the vibration's mean rises over the lead window, to about its recorded share at the end
    assert 1.0 < window_mean(ratio, *early) < window_mean(ratio, *late)
    assert window_mean(ratio, *late) == pytest.approx(1 + d.magnitude * 0.875, abs=0.06)
    # ... and grows noisier than the twin's, whose noise is the sensor's alone
    spread = np.std([ratio[t] for t in ratio if late[0] <= t < late[1]])
    assert spread > 4 * np.std([ratio[t] for t in ratio if early[0] - 60_000 <= t < early[0]])
    # the machine runs warmer at the same load: by 2-4 C at the end, a few tenths at first
    assert 0 < window_mean(heat, *early) < window_mean(heat, *late) < 4.0
    assert window_mean(heat, *late) > 1.0
    # its own earlier minutes: the means in the lead window's last minutes exceed the first's
    assert window_mean(vib_f, *late) / window_mean(vib_c, *late) > window_mean(
        vib_f, at(300), at(420)
    ) / window_mean(vib_c, at(300), at(420))


def test_a_sensor_node_degrades_by_heat_alone():
    failure = ScriptedFault("failure", 0, at(400), duration_s=60, lead_s=300)
    sim, _, faulty = simulate(460, machines=2, kind="nodes", scripted=[failure])
    _, _, clean = simulate(460, machines=2, kind="nodes")
    f, c = readings(faulty), readings(clean)
    heat = {t: f[("n-0001", "temperature")][t] - v for t, v in c[("n-0001", "temperature")].items()}
    assert window_mean(heat, at(340), at(400)) > 1.0
    assert window_mean(heat, at(0), at(100)) == 0
    assert [e.kind for e in sim.truth.events] == ["degradation", "failure"]


def test_readings_stay_within_the_physical_ranges_the_processor_accepts():
    """Every reading of a run full of degrading machines, sent twice, is one the processor
    takes: nothing but malformed messages could be dead-lettered, so the books can close."""
    chaos = {"failure": 0.3, "duplicate": 1.0, "spike": 0.01}
    magnitudes = Magnitudes(failure_lead_s=(60.0, 240.0), degradation_noise=(0.3, 0.5))
    sim, counts, out = simulate(600, machines=10, chaos=chaos, magnitudes=magnitudes)
    assert len(events(sim, "degradation")) >= 10 and counts.sent == 2 * counts.produced
    keys, values = [k for k, _ in out], [v for _, v in out]
    decoded = decode_batch(values, keys)
    limits = load_rules().validation
    validate_batch(decoded, limits, now_ms=at(600))
    refused = np.flatnonzero(decoded.reason != OK)
    assert refused.size == 0, reasons(decoded, limits, refused[:3], values, keys)
    vibration = [v for (_, s), series in readings(out).items() if s == "vibration"
                 for v in series.values() if v is not None]  # fmt: skip
    assert min(vibration) >= 0.0


# -- determinism and the live controls -------------------------------------------------


def test_same_seed_same_stream_and_ground_truth():
    chaos = {"failure": 0.1, "drift": 0.2, "spike": 0.005, "loss": 0.02, "latency": 1.0}
    scripted = [ScriptedFault("failure", 1, at(200), duration_s=60)]
    a = simulate(600, machines=8, seed=5, chaos=chaos, scripted=scripted, magnitudes=LEAD)
    b = simulate(600, machines=8, seed=5, chaos=chaos, scripted=scripted, magnitudes=LEAD)
    c = simulate(600, machines=8, seed=6, chaos=chaos, scripted=scripted, magnitudes=LEAD)
    assert digest(a[2]) == digest(b[2]) != digest(c[2])
    assert a[0].truth.events == b[0].truth.events and events(a[0], "degradation")


def test_the_precursor_leaves_a_scenario_s_other_faults_as_they_were():
    """Scripted failures degrade from generators of their own and begin their runaway where
    they are placed: with the precursor on or off, every fault but the degradations is the
    same, and only the failing machines' vibration and temperature read differently."""
    spec_on = SimulationSpec.build(scenario="standard")
    spec_off = SimulationSpec.build(scenario="standard", failure_lead_s=(0, 0))
    runs = []
    for spec in (spec_on, spec_off):
        sim = Simulation(spec.factory, "s", ChaosControl(spec.chaos), spec.scripted(),
                         spec.magnitudes)  # fmt: skip
        out: list[tuple[bytes, bytes]] = []
        sim.run(lambda k, v, out=out: out.append((k, v)), spec.duration_s)
        runs.append((sim, readings(out)))
    (on, r_on), (off, r_off) = runs
    failing = {e.machine_id for e in events(on, "failure")}
    assert len(failing) == 3 and {e.machine_id for e in events(on, "degradation")} == failing
    differ = {key for key in r_off if r_on[key] != r_off[key]}
    assert differ == {(m, s) for m in failing for s in ("vibration", "temperature")}

    def others(sim):
        return [(e.kind, e.machine_id, e.sensor_type, e.start_ts, e.end_ts, e.magnitude)
                for e in sim.truth.events if e.kind not in ("failure", "degradation")]  # fmt: skip

    assert others(on) == others(off)
    assert [e.start_ts for e in events(on, "failure")] == [
        e.start_ts for e in events(off, "failure")
    ]


def test_turning_failures_off_mid_run_stops_decisions_not_degradations_under_way():
    control = ChaosControl({"failure": 0.5})
    sim = Simulation(FactoryConfig(machines=20, seed=2), "live", control, magnitudes=LEAD)
    sim._send = lambda k, v: None
    for _ in range(30):
        sim.step()
    decided = int((sim.injector.fail_phase != 0).sum())
    assert decided > 0
    control.off("failure")
    for _ in range(400):
        sim.step()
    sim.finish()
    degradations, failures = events(sim, "degradation"), events(sim, "failure")
    assert len(degradations) == len(failures) == decided  # each decided failure happened
    assert all(d.start_ts < at(30) for d in degradations)  # and none was decided after
    control.set("failure", 0.5)  # on again: new decisions, the precursor as before
    for _ in range(30):
        sim.step()
    assert int((sim.injector.fail_phase == 3).sum()) > 0


# -- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "lead"),
    [("5m-15m", (300.0, 900.0)), ("10m", (600.0, 600.0)), ("0", (0.0, 0.0)),
     ("90-2m", (90.0, 120.0))],
)  # fmt: skip
def test_the_lead_is_an_option_of_run_and_simulate(text, lead):
    for command in ("run", "simulate"):
        args = build_parser().parse_args([command, "--failure-lead", text])
        assert args.failure_lead == lead
    spec = SimulationSpec.build(failure_lead_s=lead)
    assert spec.magnitudes.failure_lead_s == lead
    assert spec.params()["failure_lead_s"] == list(lead)
    assert SimulationSpec.build().params()["failure_lead_s"] == [300.0, 900.0]


@pytest.mark.parametrize("text", ["15m-5m", "soon", "-5m"])
def test_a_lead_that_is_not_a_range_of_durations_is_refused(text, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--failure-lead", text])
    assert "--failure-lead" in capsys.readouterr().err


def test_a_scenario_sets_the_lead_for_all_failures_or_for_one():
    sc = parse_scenario({
        "run": {"machines": 3, "duration": "20m"},
        "magnitudes": {"failure_lead_s": ["2m", "4m"], "degradation_vibration": [0.5, 0.6]},
        "fault": [{"kind": "failure", "machine": 1, "at": "10m", "lead": "90s"},
                  {"kind": "failure", "machine": 2, "at": "12m"}],
    })  # fmt: skip
    assert sc.magnitudes.failure_lead_s == (120.0, 240.0)
    assert sc.magnitudes.degradation_vibration == (0.5, 0.6)
    assert [f.lead_s for f in sc.scripted()] == [90.0, None]
    off = parse_scenario({"magnitudes": {"failure_lead_s": [0, 0]}})
    assert not off.magnitudes.precursor and Magnitudes().precursor
    with pytest.raises(ScenarioError, match="failure_lead_s"):
        parse_scenario({"magnitudes": {"failure_lead_s": ["15m", "5m"]}})
    with pytest.raises(ScenarioError, match="lead is a failure's"):
        parse_scenario({"fault": [{"kind": "drift", "machine": 1, "at": "1s", "lead": "1m"}]})
    with pytest.raises(ConfigError):
        Magnitudes(failure_lead_s=(-1.0, 5.0))


def test_a_degradation_is_a_chaos_event_the_schema_encodes():
    codec = codec_for("chaos_event")
    sim, _, _ = simulate(200, scripted=[ScriptedFault("failure", 0, at(100), lead_s=60)])
    (d,) = events(sim, "degradation")
    assert codec.decode(codec.encode(d.record())) == d.record()


# -- through the pipeline -----------------------------------------------------------------


def test_a_run_with_degrading_machines_closes_its_books_and_scores_failures(settings, endpoints):
    args = ["run", "--machines", "10", "--duration", "8m", "--seed", "4", "--failure-lead",
            "1m-3m", "--chaos", "failure=0.1,spike=0.001,loss=0.01,duplicate=0.01,malformed=0.001",
            "--json"]  # fmt: skip
    proc = subprocess.run([WORKBENCH, "-q", *args], env=cli_env(settings), capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    s = json.loads(proc.stdout)
    assert s["reconciled"] is True
    assert s["produced"] == s["stored"] + s["deadlettered"] + s["dropped"]
    assert s["chaos"]["degradation"] >= s["chaos"]["failure"] >= 3
    assert "degradation" not in s["score"]  # part of a failure, not scored on its own
    assert s["score"]["failure"]["faults"] == s["chaos"]["failure"]
    assert "early" in s["score"]["failure"]
    c, r = schema.chaos_events, schema.runs
    with engine(endpoints.database_url).connect() as conn:
        kinds = dict(conn.execute(sa.select(c.c.kind, sa.func.count()).where(
            c.c.run_id == s["run_id"]).group_by(c.c.kind)).all())  # fmt: skip
        params = conn.execute(sa.select(r.c.params).where(r.c.run_id == s["run_id"])).scalar()
    assert kinds["degradation"] == s["chaos"]["degradation"]
    assert params["failure_lead_s"] == [60.0, 180.0]  # the run says how it was made
