"""Each chaos injector does what it says, and records matching ground truth.

These tests drive the simulator without a broker: messages go to a list, and are decoded
back with the same codec the processor uses.
"""

import hashlib
import itertools
import threading
from collections import Counter, defaultdict

import numpy as np
import pytest

from workbench.processor.decode import OK, decode_batch
from workbench.processor.rules import load_rules
from workbench.processor.validate import reasons, validate_batch
from workbench.schemas import READING, DecodeError
from workbench.simulator.chaos import Magnitudes, ScriptedFault
from workbench.simulator.control import ChaosControl, parse_chaos
from workbench.simulator.physics import (
    DEFAULT_START_MS,
    STATUS_POWER_FAULT,
    STATUS_SHUTDOWN,
    FactoryConfig,
)
from workbench.simulator.source import Simulation


def simulate(
    machines=4, seconds=60, seed=1, chaos=None, scripted=None, magnitudes=None, kind="machines"
):
    sim = Simulation(
        FactoryConfig(machines=machines, seed=seed, kind=kind),
        "test",
        ChaosControl(chaos or {}),
        scripted,
        magnitudes,
    )
    out: list[tuple[bytes, bytes]] = []
    counts = sim.run(lambda k, v: out.append((k, v)), seconds)
    return sim, counts, out


def readings(messages):
    good, bad = [], []
    for _key, value in messages:
        try:
            good.append(READING.decode(value))
        except DecodeError as exc:
            bad.append(str(exc))
    return good, bad


def series(recs, machine, sensor):
    """(ts, value) of one machine's sensor, in event-time order, duplicates removed."""
    seen = {(r["seq"], r["ts"], r["value"]) for r in recs
            if r["machine_id"] == machine and r["sensor_type"] == sensor}  # fmt: skip
    return [(ts, v) for _seq, ts, v in sorted(seen, key=lambda x: (x[1], x[0]))]


def at(seconds):
    return DEFAULT_START_MS + seconds * 1000


def digest(messages):
    h = hashlib.sha256()
    for k, v in messages:
        h.update(k + b"\0" + v)
    return h.hexdigest()


def test_same_seed_and_chaos_give_the_same_bytes_in_the_same_order():
    chaos = parse_chaos("spike=0.01,drift=0.5,stuck=0.5,loss=0.05,duplicate=0.05,latency=2s,"
                        "burst=0.3,failure=0.3,power=0.3,malformed=0.01")  # fmt: skip
    a = simulate(machines=10, seconds=90, seed=5, chaos=chaos)
    b = simulate(machines=10, seconds=90, seed=5, chaos=chaos)
    c = simulate(machines=10, seconds=90, seed=6, chaos=chaos)
    assert digest(a[2]) == digest(b[2]) != digest(c[2])
    assert a[0].truth.events == b[0].truth.events


def test_chaos_leaves_the_physics_of_the_seed_alone():
    """A faulty run and its clean twin agree on every reading a fault did not touch."""
    _, _, clean = simulate(seconds=30)
    sim, _, faulty = simulate(seconds=30, chaos={"spike": 0.05})
    spiked = {(e.machine_id, e.sensor_type, e.start_ts) for e in sim.truth.events}
    clean_by_key = {
        (r["machine_id"], r["sensor_type"], r["ts"]): r["value"] for r in readings(clean)[0]
    }
    differing = {
        (r["machine_id"], r["sensor_type"], r["ts"])
        for r in readings(faulty)[0]
        if clean_by_key[(r["machine_id"], r["sensor_type"], r["ts"])] != r["value"]
    }
    assert spiked and differing == spiked


def test_spike_offsets_the_reading_by_its_recorded_magnitude():
    _, _, clean = simulate(seconds=20)
    sim, _, faulty = simulate(
        seconds=20, scripted=[ScriptedFault("spike", 1, at(10), "temperature")]
    )
    (event,) = sim.truth.events
    assert (event.kind, event.machine_id, event.sensor_type, event.source) == (
        "spike", "m-0002", "temperature", "scenario"
    )  # fmt: skip
    before = dict(series(readings(clean)[0], "m-0002", "temperature"))[event.start_ts]
    after = dict(series(readings(faulty)[0], "m-0002", "temperature"))[event.start_ts]
    assert after - before == pytest.approx(event.magnitude, abs=0.1)
    assert abs(event.magnitude) >= 0.8 * Magnitudes().spike["temperature"]


def test_drift_grows_linearly_and_ends_with_recalibration():
    fault = ScriptedFault("drift", 0, at(20), "pressure", duration_s=100, magnitude=2.0)
    _, _, clean = simulate(seconds=150)
    sim, _, faulty = simulate(seconds=150, scripted=[fault])
    (event,) = sim.truth.events
    assert (event.kind, event.start_ts, event.end_ts, event.magnitude) == (
        "drift",
        at(20),
        at(120),
        2.0,
    )
    c = dict(series(readings(clean)[0], "m-0001", "pressure"))
    f = dict(series(readings(faulty)[0], "m-0001", "pressure"))
    offset = {t: f[t] - c[t] for t in c}
    assert offset[at(19)] == 0 and offset[at(130)] == 0
    assert offset[at(70)] == pytest.approx(1.0, abs=0.02)  # half way
    assert offset[at(119)] == pytest.approx(1.98, abs=0.02)


def test_stuck_sensor_repeats_one_value_for_its_duration():
    sim, _, out = simulate(
        seconds=120, scripted=[ScriptedFault("stuck", 2, at(30), "vibration", 40)]
    )
    (event,) = sim.truth.events
    values = dict(series(readings(out)[0], "m-0003", "vibration"))
    window = [values[t] for t in values if at(30) <= t < at(70)]
    assert len(window) == 40 and len(set(window)) == 1 and window[0] == event.magnitude
    assert len({values[t] for t in values if at(70) <= t < at(110)}) > 5
    assert (event.start_ts, event.end_ts) == (at(30), at(70))


def test_loss_and_duplicate_rates_are_within_tolerance_and_accounted():
    sim, counts, out = simulate(machines=20, seconds=300, chaos={"loss": 0.1, "duplicate": 0.05})
    n = counts.produced
    for rate, observed in ((0.1, counts.dropped), (0.05, counts.duplicates)):
        sd = np.sqrt(n * rate * (1 - rate))
        assert abs(observed - n * rate) < 4 * sd
    truth = Counter(e.kind for e in sim.truth.events)
    assert (truth["loss"], truth["duplicate"]) == (counts.dropped, counts.duplicates)
    assert len(out) == counts.sent == n - counts.dropped + counts.duplicates
    # every lost reading shows as a gap in its sequence numbers downstream
    recs = readings(out)[0]
    seqs = defaultdict(set)
    for r in recs:
        seqs[(r["machine_id"], r["sensor_type"])].add(r["seq"])
    gaps = sum(max(s) + 1 - len(s) for s in seqs.values())
    tail_losses = sum(1 for e in sim.truth.events if e.kind == "loss" and e.start_ts >= at(290))
    assert counts.dropped - tail_losses <= gaps <= counts.dropped


def test_latency_delivers_late_and_out_of_order():
    sim, counts, out = simulate(machines=5, seconds=120, chaos={"latency": 3.0})
    ts = [r["ts"] for r in readings(out)[0]]
    assert sum(1 for a, b in itertools.pairwise(ts) if b < a) > len(ts) // 10
    assert sorted(ts) != ts and len(ts) == counts.produced
    episodes = [e for e in sim.truth.events if e.kind == "latency"]
    assert len(episodes) == 5 and all(e.magnitude == 3000 for e in episodes)


def test_scripted_latency_window_delays_one_machine_by_its_magnitude():
    window = ScriptedFault("latency", 0, at(30), duration_s=10, magnitude=20.0)
    sim, _, out = simulate(seconds=60, scripted=[window])
    order = [(r["machine_id"], r["ts"]) for r in readings(out)[0]]
    # m-0001's readings from the window arrive after readings 20 s younger from other machines
    first_late = order.index(("m-0001", at(30)))
    assert any(m != "m-0001" and t >= at(49) for m, t in order[:first_late])
    (event,) = [e for e in sim.truth.events if e.kind == "latency"]
    assert (event.start_ts, event.end_ts, event.magnitude, event.source) == (
        at(30),
        at(40),
        20000.0,
        "scenario",
    )


def test_burst_samples_faster_with_contiguous_sequence_numbers():
    sim, _, out = simulate(seconds=60, scripted=[ScriptedFault("burst", 3, at(20), duration_s=10)])
    recs = [
        r
        for r in readings(out)[0]
        if r["machine_id"] == "m-0004" and r["sensor_type"] == "temperature"
    ]
    in_burst = [r for r in recs if at(20) <= r["ts"] < at(30)]
    assert len(in_burst) == 10 * Magnitudes().burst_factor
    seqs = sorted(r["seq"] for r in recs)
    assert seqs == list(range(len(seqs)))
    (event,) = sim.truth.events
    assert event.kind == "burst" and event.magnitude == 10 * 4 * (Magnitudes().burst_factor - 1) + 4
    # + the battery sensor, which samples at 0.1 Hz: once in this window, 4 extra samples


def test_failure_overheats_then_shuts_the_machine_down_and_repairs_it():
    sim, _, out = simulate(
        seconds=400, scripted=[ScriptedFault("failure", 0, at(60), duration_s=90)]
    )
    (event,) = [e for e in sim.truth.events if e.kind == "failure"]
    assert (event.start_ts, event.end_ts) == (at(60), at(150))
    recs = readings(out)[0]
    temps = dict(series(recs, "m-0001", "temperature"))
    assert temps[at(150)] - temps[at(59)] > 30 and event.magnitude > 30
    status = {r["ts"]: r["status_code"] for r in recs if r["machine_id"] == "m-0001"}
    assert status[at(149)] == 0 and status[at(151)] == STATUS_SHUTDOWN
    assert status[at(399)] == 0  # repaired (60-120 s) and running again
    assert temps[at(200)] < temps[at(150)] - 10  # cooling down while shut down


def test_power_drain_turns_readings_null_until_the_battery_is_replaced():
    sim, _, out = simulate(seconds=200, scripted=[ScriptedFault("power", 1, at(20), duration_s=40)])
    (event,) = [e for e in sim.truth.events if e.kind == "power"]
    recs = [r for r in readings(out)[0] if r["machine_id"] == "m-0002"]
    nulls = [r for r in recs if r["value"] is None]
    assert nulls and all(r["status_code"] == STATUS_POWER_FAULT for r in nulls)
    assert all(event.start_ts < r["ts"] < event.end_ts for r in nulls)
    battery = series(recs, "m-0002", "battery")
    assert next(v for t, v in battery if t > event.end_ts + 1000) > 99


def test_readings_stay_within_the_physical_ranges_the_processor_accepts():
    """Noise, bursts and faults never take a reading past its sensor's physical range, so
    that only malformed messages become dead letters. A reading the processor refuses, sent
    twice by chaos ``duplicate``, was dead-lettered twice and a run's books did not close:
    a burst on a battery just replaced read 100.1 %, a humidity drifted past 100 %."""
    cases = {
        "battery": ("machines", [ScriptedFault("power", 0, at(0), duration_s=10),
                                 ScriptedFault("burst", 0, at(75), duration_s=60)]),
        "humidity": ("nodes", [ScriptedFault("drift", 0, at(10), "humidity", duration_s=30,
                                             magnitude=80.0)]),
    }  # fmt: skip
    limits = load_rules().validation
    for sensor, (kind, scripted) in cases.items():
        _, counts, out = simulate(machines=1, seconds=150, chaos={"duplicate": 1.0},
                                  scripted=scripted, kind=kind)  # fmt: skip
        assert counts.sent == 2 * counts.produced
        keys, values = [k for k, _ in out], [v for _, v in out]
        decoded = decode_batch(values, keys)
        validate_batch(decoded, limits, now_ms=at(150))
        refused = np.flatnonzero(decoded.reason != OK)
        assert refused.size == 0, reasons(decoded, limits, refused[:3], values, keys)
        read = [r["value"] for r in readings(out)[0] if r["sensor_type"] == sensor]
        assert max(v for v in read if v is not None) == 100.0  # the fault reached the bound


def test_a_failing_cell_reports_a_low_battery_before_the_node_goes_dark():
    # the edge rule "battery < 10" must have readings to judge: a random power fault sags the
    # charge and drains it slowly enough for the node (battery every 10 s) to say so
    sim, _, out = simulate(machines=20, seconds=600, seed=4, chaos={"power": 0.05})
    events = [e for e in sim.truth.events if e.kind == "power"]
    assert len(events) >= 3
    recs = readings(out)[0]
    for e in events:
        mine = sorted((r for r in recs if r["machine_id"] == e.machine_id
                       and e.start_ts <= r["ts"] <= e.end_ts), key=lambda r: r["ts"])  # fmt: skip
        dark = next(r["ts"] for r in mine if r["value"] is None)
        low = [r["value"] for r in mine if r["sensor_type"] == "battery" and r["ts"] < dark
               and r["value"] is not None and r["value"] < 10]  # fmt: skip
        assert 2 <= len(low) <= 6, (e, low)
        assert all(r["status_code"] == 0 for r in mine if r["ts"] < dark)


def test_malformed_messages_fail_to_decode_for_each_reason_and_are_counted():
    sim, counts, out = simulate(machines=10, seconds=120, chaos={"malformed": 0.05})
    good, bad = readings(out)
    assert len(bad) == counts.malformed == Counter(e.kind for e in sim.truth.events)["malformed"]
    reasons = {b.split(":")[0].split(" (")[0] for b in bad}
    assert reasons == {"not Avro single-object encoding", "wrong schema", "corrupt reading body"}
    assert len(good) + len(bad) == counts.produced


def test_random_episodes_start_at_their_intensity():
    chaos = {"drift": 1.0, "stuck": 1.0, "failure": 0.2, "power": 0.2, "burst": 1.0}
    sim, _, _ = simulate(machines=20, seconds=300, chaos=chaos)
    kinds = Counter(e.kind for e in sim.truth.events)
    # 1/machine/minute over 20 machines and 5 minutes: about 100, fewer while one is running
    assert 30 < kinds["drift"] < 130 and 30 < kinds["stuck"] < 130 and 30 < kinds["burst"] < 130
    # a failure is decided 5-15 minutes before its runaway, and degrades meanwhile: in 5
    # minutes every failure is still a degradation
    assert 3 <= kinds["degradation"] <= 40 and kinds["failure"] == 0 and 3 <= kinds["power"] <= 40
    assert all(e.source == "chaos" and e.end_ts >= e.start_ts for e in sim.truth.events)


def test_changing_intensity_mid_run_takes_effect_from_the_next_tick():
    control = ChaosControl()
    sim = Simulation(FactoryConfig(machines=10, seed=2), "live", control)
    sent = []
    sim._send = lambda k, v: sent.append(v)
    for _ in range(30):
        sim.step()
    assert sim.counts.dropped == 0
    control.set("loss", 1.0)
    before = sim.counts.produced
    for _ in range(10):
        sim.step()
    assert sim.counts.dropped == sim.counts.produced - before > 0
    control.off("loss")
    dropped = sim.counts.dropped
    sim.step()
    assert sim.counts.dropped == dropped


def test_control_is_safe_to_change_from_another_thread_while_running():
    control = ChaosControl()
    sim = Simulation(FactoryConfig(machines=50, seed=2), "live", control)
    stop = threading.Event()
    changing = threading.Event()

    # Never back to 0: how often the main thread gets the GIL between two writes is up
    # to the scheduler, and the assertion must not depend on it.
    def twiddle():
        while not stop.is_set():
            for p in (0.2, 0.5, 0.35):
                control.set("duplicate", p)
                changing.set()

    thread = threading.Thread(target=twiddle)
    thread.start()
    assert changing.wait(10)
    try:
        counts = sim.run(lambda k, v: None, 120)
    finally:
        stop.set()
        thread.join()
    assert counts.duplicates > 0
    assert counts.sent == counts.produced + counts.duplicates


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        ("loss=2", "probability from 0 to 1"),
        ("drift=-1", ">= 0"),
        ("latency=soon", "duration"),
        ("spike", "fault kind"),
        ("spike=x", "a number"),
    ],
)
def test_bad_chaos_specs_are_named(spec, complaint):
    from workbench.errors import ConfigError

    with pytest.raises(ConfigError, match=complaint):
        parse_chaos(spec)
