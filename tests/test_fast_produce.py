"""The fast produce path sends the very bytes the per-reading path sent, in the same order.

The simulator encodes and routes a tick at a time as arrays (``ReadingColumnsEncoder``, the
network faults as masks, a delay queue in arrays) and the producer takes a batch per call
(``RecordProducer.send_many``: one digest update per batch, failures-only delivery
reports). What must not change is the stream: for a seed and chaos settings, the list of
(key, value) messages, the counts and the ground truth are those of the per-reading code.

Proof, in three layers:

* ``LegacySimulation`` below is the per-reading path as it was (commit d29868e,
  ``workbench/simulator/source.py``), kept as the reference: one ``encode_parts`` call and
  one ``_route`` per reading, a ``heapq`` delivery queue. The array path must equal it on
  several seeds and every chaos setting, scripted network windows and intensities changed
  mid-run included.
* ``PINNED`` holds SHA-256 digests and counts that the unchanged code produced before the
  change (made by running commit d29868e's ``Simulation`` with a list-appending ``send``
  on the ``CASES`` below), so the reference above cannot drift from the code it copies.
  If the physics or the chaos injectors change on purpose, the pinned values change with
  them: regenerate them with ``LegacySimulation`` (the ``test_pinned_streams`` assertion
  message prints the new values). They changed when failures gained their precursor (a
  degradation before the runaway); ``PINNED_NO_PRECURSOR`` keeps the values from before,
  which the simulator still gives with the precursor off.
* The column encoder equals fastavro (``READING.encode``) on random records, the batch
  digest equals the per-message digest, and one test against the embedded broker checks
  that everything sent is delivered and consumed back with the same digest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import itertools
import time

import numpy as np
import pytest

from workbench import kafka, schemas
from workbench.errors import SchemaError
from workbench.producer import RecordProducer, frames
from workbench.schemas import READING, ReadingColumnsEncoder, ReadingEncoder, codec_for, varint
from workbench.simulator.chaos import Magnitudes, ScriptedFault
from workbench.simulator.control import ChaosControl, parse_chaos
from workbench.simulator.physics import SENSORS, FactoryConfig, bounded, quantise
from workbench.simulator.source import Simulation, _DelayQueue

#: Every fault kind on (the brief's setting): network faults through the delay queue.
ALL = (
    "spike=0.01,drift=0.2,loss=0.05,duplicate=0.02,malformed=0.01,latency=2s,burst=0.1,"
    "stuck=0.1,failure=0.05,power=0.05"
)
#: Every kind but latency: network faults sent at once, no queue.
NO_LATENCY = (
    "spike=0.01,drift=0.2,loss=0.05,duplicate=0.02,malformed=0.01,burst=0.3,stuck=0.1,"
    "failure=0.05,power=0.05"
)


def scripted(start: int) -> list[ScriptedFault]:
    """Scenario faults of every network kind (windows) and a few machine faults."""
    return [
        ScriptedFault("loss", 1, start + 5000, duration_s=10),
        ScriptedFault("duplicate", 2, start + 8000, duration_s=6),
        ScriptedFault("malformed", 0, start + 12000, duration_s=4),
        ScriptedFault("latency", 3, start + 20000, duration_s=15, magnitude=3.0),
        ScriptedFault("latency", 4, start + 50000, duration_s=5),
        ScriptedFault("burst", 1, start + 4000, duration_s=12),
        ScriptedFault("spike", 2, start + 30000, sensor="pressure", magnitude=5.0),
        ScriptedFault("failure", 0, start + 10000, duration_s=30),
        ScriptedFault("power", 3, start + 2000, duration_s=40),
    ]


class ScheduledControl(ChaosControl):
    """Chaos intensities that change at given ticks (the simulator takes one snapshot per
    tick), as a notebook slider would mid-run, but reproducibly."""

    def __init__(self, intensities: dict[str, float], changes: dict[int, dict[str, float]]):
        super().__init__(intensities)
        self.changes, self.tick = changes, 0

    def snapshot(self) -> dict[str, float]:
        for kind, value in self.changes.get(self.tick, {}).items():
            self.set(kind, value)
        self.tick += 1
        return super().snapshot()


#: name -> factory config, chaos spec, event seconds, scripted faults, mid-run changes
CASES = {
    "none-s1": (dict(machines=7, seed=1), "", 90, False, None),
    "none-s2-rate2": (dict(machines=5, seed=2, rate_hz=2.0, start_ms=0), "", 40, False, None),
    "all-s1": (dict(machines=9, seed=1), ALL, 150, False, None),
    "all-s7": (dict(machines=20, seed=7, start_ms=1_000), ALL, 120, False, None),
    "nolat-s3": (dict(machines=12, seed=3), NO_LATENCY, 150, False, None),
    "scripted-s4": (dict(machines=6, seed=4, start_ms=0), "", 80, True, None),
    "scripted-all-s5": (dict(machines=6, seed=5, start_ms=0), ALL, 80, True, None),
    "switch-s6": (
        dict(machines=8, seed=6, sensor_rates_hz={"battery": 0.5, "pressure": 0}),
        ALL,
        100,
        False,
        {33: {"latency": 0.0, "loss": 0.2}, 66: {"latency": 1.0, "duplicate": 0.0, "burst": 2.0}},
    ),
}

#: What commit d29868e's Simulation sent for CASES: SHA-256 of the stream (the producer's
#: framing), messages sent, readings produced, dropped, duplicated, malformed, and the
#: SHA-256 of repr([astuple(e) for e in sim.truth.events]). The stream digests were made
#: anew when the reading schema gained the sensor type ``generic``: every message carries
#: the schema's fingerprint (counts and ground truth did not change). Made anew again when
#: failures gained their degradation (the cases with failures, and those with malformed
#: messages: see ``test_without_the_precursor_the_streams_are_those_from_before_it``).
PINNED = {
    "none-s1": ("2e09efba0e58ac9469cf13feab194b0193a003a87a76f98da72db9bf3f432ba1",
                2583, 2583, 0, 0, 0,
                "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945"),
    "none-s2-rate2": ("984686e7ad3af83898a9cbcb9094d2ae6d1c570cad18b55b434293aab8864856",
                      1640, 1640, 0, 0, 0,
                      "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945"),
    "all-s1": ("b51998fb1f2d689c4b461e5e34dbfc1b5bf697591ee59bb0f7ce756d457f954c",
               5344, 5535, 298, 107, 52,
               "e026f0db0076e28d52eb84b36179cfbc40ef32c1cc2ace03f3d2533e56bec502"),
    "all-s7": ("40e04d4d4ce98008507577bd8a8228ee18825216b1900ce055168315c98613bd",
               10300, 10608, 525, 217, 118,
               "c21c58d2b209b137ca42d74d25e09488d92f3d688bcdc2f50efb37b6a23a65ad"),
    "nolat-s3": ("df985d4e256b2175277efb5f82e747e536222539bac465da5bd1de0cb0706794",
                 8716, 8972, 422, 166, 72,
                 "b52ce12a499a82159e0adc0f75b4a7b8631ec853f4c2e4ab193fc044edcff257"),
    "scripted-s4": ("7eadee92cc6b0b16cd1510d389c3a8464d5904c16dcc4ff47e4602599ba33144",
                    1984, 2164, 205, 25, 16,
                    "8d8bcaf887a92f2883faa64500ddbafbffc20b6b627803944c2bdb229a5a5d21"),
    "scripted-all-s5": ("c32d0d8f92e942187168e8bbad5658d1adee82c14524d12f1df59cd2e3cac722",
                        1938, 2164, 293, 67, 35,
                        "409716198fdf174f4d69f12d42f598c4b93eb4a473ac2ca0721c3f029c3ca808"),
    "switch-s6": ("4440ed57b7853b05cfdeb8291d062dddc76aeffd11221862ef7670500ea83778",
                  3185, 3796, 646, 35, 42,
                  "c3d96c2a81f8bb2927c2cef69096ff137a6737a75cbb6370f81f9ecc8ceb4133"),
}  # fmt: skip

#: What the simulator sent for CASES before failures had a precursor (PINNED, as it was
#: then), and sends with ``failure_lead_s = (0, 0)``.
PINNED_NO_PRECURSOR = {
    # without failures the precursor changes nothing
    "none-s1": PINNED["none-s1"],
    "none-s2-rate2": PINNED["none-s2-rate2"],
    "all-s1": ("7d09d7f02ac46922b84ca26b70fda1285cbb243397cf6110459a4dee4ee1c315",
               5344, 5535, 298, 107, 52,
               "a6d7d095e6b3bd0a1aedb7222be8a4cc5cf940765c0d77a8f13fe714884fda5a"),
    "all-s7": ("2ad7cae3f5de715a077849d24970c3aca84d817080d41f09fca581aebe5ae6df",
               10447, 10736, 510, 221, 130,
               "ef8124c2efc007c1f35c424999ffe51081e7e84148aa3602963fe2c13c60a959"),
    "nolat-s3": ("28647e2641260c72a7128b8279d25d69cd58e63425ebafdb3f3021912e106d45",
                 8732, 8968, 410, 174, 73,
                 "29dbe80f46a11e77b4c365ba37365069ab7830c9e87df29b4c87301c6532efa3"),
    "scripted-s4": ("dff260fac8493f85676d91ea4f7577a6431e60823fade9ea64093bedee07b963",
                    1984, 2164, 205, 25, 16,
                    "0da12928da1285092dd2248c5f32c0227fe1f912c28bfc46a362ada1214949f0"),
    "scripted-all-s5": ("1adbd2e4386e52293032eb072db6fbd26d5050bcc71e6a3832181d7cf912076f",
                        1938, 2164, 293, 67, 35,
                        "fa377a1bda7c18c94602792fde62030484db4e8045d9e3f38bb50f81a2b8bae5"),
    "switch-s6": ("ba6d2da329d5b7677cc5c250f5e9633c0e39ebe941106dbf43c7b6bc230af99a",
                  2709, 3200, 526, 35, 33,
                  "f48c90cb4a7a8cb86daaff1458ad6ce3c7650935044a5747698a25f7f03b47ea"),
}  # fmt: skip


class LegacySimulation(Simulation):
    """The per-reading path of commit d29868e: the reference the array path must equal.

    Copied method by method from that commit's ``Simulation``; the methods the change did
    not touch (latency episodes, scripted windows' bookkeeping, ground truth) are
    inherited.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.encoder = ReadingEncoder()
        self._queue = []  # a heap of (at, order, key, message)

    def step(self) -> None:
        f, counts = self.factory, self.counts
        intensity = self.control.snapshot()
        now = f.now_ms
        self._track_latency(intensity["latency"], now)
        self.injector.before_step(intensity)
        tick = f.step()
        self.injector.apply(tick, intensity)
        if counts.first_ts is None:
            counts.first_ts = tick.ts_ms
        counts.last_ts = tick.ts_ms
        windows = self._active_windows(now)
        bursting = self.injector.bursting(now)
        status = tick.status.tolist()
        ts_bytes = varint(tick.ts_ms)
        for sensor, values in tick.values.items():
            self._emit_sensor(sensor, values, tick.seq[sensor], status, tick.ts_ms, ts_bytes,
                              intensity, windows)  # fmt: skip
            if bursting.any():
                self._emit_burst(sensor, values, bursting, status, tick.ts_ms, intensity, windows)
        self.injector.close_bursts(now)
        self._deliver_due(tick.ts_ms)

    def _emit_sensor(self, sensor, values, seqs, status, ts_ms, ts_bytes, intensity, windows):
        n = values.size
        lost, dup, bad, delay = self._network_draws(n, intensity, windows)
        encode, sensor_bytes = self.encoder.encode_parts, self.encoder.sensor_bytes[sensor]
        ids, keys = self._ids, self._keys
        for i, (v, seq) in enumerate(zip(values.tolist(), seqs.tolist(), strict=True)):
            value = None if v != v else v
            message = encode(ids[i], ts_bytes, sensor_bytes, value, status[i], seq)
            self._route(i, sensor, ts_ms, keys[i], message, lost, dup, bad, delay)

    def _emit_burst(self, sensor, values, bursting, status, ts_ms, intensity, windows):
        f, factor = self.factory, self.injector.m.burst_factor
        spec = SENSORS[sensor]
        step_ms = f.dt_s * 1000 / factor
        for i in np.flatnonzero(bursting).tolist():
            for j in range(1, factor):
                t = ts_ms + round(j * step_ms)
                v = values[i]
                if v == v:
                    v = quantise(v + self.rng.normal(0, spec["noise"]), spec["resolution"])
                    v = float(bounded(sensor, v))  # held in its range (not in d29868e)
                seq = int(f.seq[sensor][i])
                f.seq[sensor][i] += 1
                self.injector.burst_extra[i] += 1
                message = self.encoder.encode_parts(
                    self._ids[i], varint(t), self.encoder.sensor_bytes[sensor],
                    None if v != v else v, status[i], seq,
                )  # fmt: skip
                lost, dup, bad, delay = self._network_draws(1, intensity, windows, machine=i)
                self._route(0, sensor, t, self._keys[i], message, lost, dup, bad, delay, machine=i)

    def _network_draws(self, n, intensity, windows, machine=None):
        rng = self.rng
        self._window_machines = {}
        p_loss, p_dup, p_bad = intensity["loss"], intensity["duplicate"], intensity["malformed"]
        lost = (rng.random(n) < p_loss).tolist() if p_loss > 0 else None
        dup = (rng.random(n) < p_dup).tolist() if p_dup > 0 else None
        bad = (rng.random(n) < p_bad).tolist() if p_bad > 0 else None
        mean_ms = intensity["latency"] * 1000
        delay = rng.exponential(mean_ms, n).round().astype(int).tolist() if mean_ms > 0 else None
        if windows:
            lost, dup, bad, delay = self._apply_windows(n, windows, machine, lost, dup, bad, delay)
        return lost, dup, bad, delay

    def _apply_windows(self, n, windows, machine, lost, dup, bad, delay):
        lost = list(lost) if lost is not None else [False] * n
        dup = list(dup) if dup is not None else [False] * n
        bad = list(bad) if bad is not None else [False] * n
        delay = list(delay) if delay is not None else [0] * n
        for w in windows:
            i = w.machine if machine is None else (0 if w.machine == machine else None)
            if i is None or i >= n:
                continue
            self._window_machines[(w.kind, w.machine)] = w
            if w.kind == "loss":
                lost[i] = True
            elif w.kind == "duplicate":
                dup[i] = True
            elif w.kind == "malformed":
                bad[i] = True
            else:
                delay[i] += int(1000 * (w.magnitude or 10.0))
        return lost, dup, bad, delay

    def _route(self, i, sensor, ts_ms, key, message, lost, dup, bad, delay, machine=None):
        counts, truth = self.counts, self.truth
        m = i if machine is None else machine
        counts.produced += 1
        if lost is not None and lost[i]:
            counts.dropped += 1
            self._count_window_hit("loss", m) or truth.record(
                "loss", self.factory.machine_ids[m], sensor, ts_ms, ts_ms, 1.0
            )
            return
        at = ts_ms + (delay[i] if delay is not None else 0)
        if bad is not None and bad[i]:
            counts.malformed += 1
            variant, message = self._malform(message)
            self._count_window_hit("malformed", m) or truth.record(
                "malformed", self.factory.machine_ids[m], sensor, ts_ms, ts_ms, 1.0, detail=variant
            )
            self._deliver(at, key, message)
            return
        self._deliver(at, key, message)
        if dup is not None and dup[i]:
            counts.duplicates += 1
            self._count_window_hit("duplicate", m) or truth.record(
                "duplicate", self.factory.machine_ids[m], sensor, ts_ms, ts_ms, 1.0
            )
            jitter = int(self.rng.integers(0, 200)) if self._queueing else 0
            self._deliver(at + jitter, key, message)

    def _malform(self, message: bytes) -> tuple[str, bytes]:
        variant = ("garbage", "truncated", "wrong-schema")[int(self.rng.integers(3))]
        if variant == "garbage":
            junk = self.rng.integers(0, 256, len(message), dtype=np.uint8).tobytes()
            return variant, b"\x00" + junk[1:]
        if variant == "truncated":
            return variant, message[: len(message) // 2]
        return variant, self._wrong_schema_header + message[10:]

    @property
    def _queueing(self) -> bool:
        return bool(self._latency_mean_ms > 0 or self._queue or self.windows)

    def _deliver(self, at_ms, key, message):
        if self._queueing:
            self._order += 1
            heapq.heappush(self._queue, (at_ms, self._order, key, message))
        else:
            self._send(key, message)
            self.counts.sent += 1

    def _deliver_due(self, now_ms):
        queue = self._queue
        while queue and (now_ms is None or queue[0][0] <= now_ms):
            _at, _order, key, message = heapq.heappop(queue)
            self._send(key, message)
            self.counts.sent += 1


def build(cls: type[Simulation], name: str, magnitudes: Magnitudes | None = None) -> Simulation:
    config, chaos, _seconds, with_scripts, changes = CASES[name]
    cfg = FactoryConfig(**config)
    start = cfg.start_ms if cfg.start_ms is not None else 0
    control = ScheduledControl(parse_chaos(chaos), changes or {})
    return cls(cfg, name, control, scripted(start) if with_scripts else None, magnitudes)


def stream(sim: Simulation, seconds: float, send=None) -> tuple[list, dict, list]:
    """Run ``sim``; return its messages, counts and ground-truth events."""
    out: list[tuple[bytes, bytes]] = []
    counts = sim.run(send or (lambda k, v: out.append((k, v))), seconds)
    return out, dataclasses.asdict(counts), [dataclasses.astuple(e) for e in sim.truth.events]


def split(keys, buffer: bytes, offsets) -> list:
    """A batch as (key, message) pairs."""
    return [(k, buffer[a:b]) for k, (a, b) in zip(keys, itertools.pairwise(offsets), strict=True)]


def digest(messages: list[tuple[bytes, bytes]]) -> str:
    """The producer's digest of a stream, message by message (the definition)."""
    h = hashlib.sha256()
    for key, value in messages:
        h.update(len(key).to_bytes(4, "big") + key)
        h.update(len(value).to_bytes(4, "big") + value)
    return h.hexdigest()


# -- the stream is the per-reading path's -------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_array_path_sends_what_the_per_reading_path_sent(name):
    seconds = CASES[name][2]
    new, new_counts, new_truth = stream(build(Simulation, name), seconds)
    old, old_counts, old_truth = stream(build(LegacySimulation, name), seconds)
    assert len(new) == len(old)
    assert new == old
    assert new_counts == old_counts
    assert repr(new_truth) == repr(old_truth)  # repr: a magnitude may be NaN


@pytest.mark.parametrize("name", list(CASES))
def test_pinned_streams(name):
    sim = build(Simulation, name)
    messages, counts, truth = stream(sim, CASES[name][2])
    got = (
        digest(messages),
        len(messages),
        counts["produced"],
        counts["dropped"],
        counts["duplicates"],
        counts["malformed"],
        hashlib.sha256(repr(truth).encode()).hexdigest(),
    )
    assert got == PINNED[name], f"{name!r}: {got!r}"
    assert counts["sent"] == len(messages)


@pytest.mark.parametrize("name", list(CASES))
def test_without_the_precursor_the_streams_are_those_from_before_it(name):
    """Failures without their degradation (``failure_lead_s = (0, 0)``) give the streams,
    counts and ground truth the simulator gave before failures had one. The one difference
    is in bytes a message does not carry as a reading: a malformed message of the kind
    "wrong schema" starts with the chaos event schema's fingerprint, which changed when that
    schema's kinds gained ``degradation``."""
    sim = build(Simulation, name, Magnitudes(failure_lead_s=(0.0, 0.0)))
    messages, counts, truth = stream(sim, CASES[name][2])
    new_header = codec_for("chaos_event").header
    assert new_header != OLD_CHAOS_HEADER
    as_before = [(k, OLD_CHAOS_HEADER + v[10:] if v.startswith(new_header) else v)
                 for k, v in messages]  # fmt: skip
    got = (
        digest(as_before),
        len(messages),
        counts["produced"],
        counts["dropped"],
        counts["duplicates"],
        counts["malformed"],
        hashlib.sha256(repr(truth).encode()).hexdigest(),
    )
    assert got == PINNED_NO_PRECURSOR[name]
    assert "degradation" not in counts["chaos"]


#: The header of a chaos event before its schema's kinds gained ``degradation``.
OLD_CHAOS_HEADER = b"\xc3\x01i\xe0\xb5\xb9\xfe\x10/L"


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_random_chaos_mixes_equal_the_reference(seed):
    """Random intensities per seed, changed at random ticks: still the same stream."""
    rng = np.random.default_rng(seed)
    kinds = ["spike", "drift", "loss", "duplicate", "malformed", "latency", "burst", "stuck",
             "failure", "power"]  # fmt: skip

    def draw() -> dict[str, float]:
        chosen = rng.choice(kinds, size=int(rng.integers(1, len(kinds))), replace=False)
        return {k: float(rng.uniform(0, 3.0 if k == "latency" else 0.3)) for k in chosen}

    start, changes = draw(), {int(t): draw() for t in rng.integers(1, 60, 3)}
    cfg = FactoryConfig(machines=int(rng.integers(1, 15)), seed=seed, start_ms=0)
    faults = scripted(0)[: int(rng.integers(0, 9))]
    results = [stream(cls(cfg, "r", ScheduledControl(start, changes), faults), 60)
               for cls in (Simulation, LegacySimulation)]  # fmt: skip
    assert repr(results[0]) == repr(results[1])


def test_batch_senders_and_plain_callables_get_the_same_stream():
    """``send_many`` of an object, a producer's ``send_raw`` (taken as the producer), and a
    plain callable: the same messages in the same order."""

    class Batches:
        def __init__(self):
            self.messages, self.calls = [], 0

        def send_many(self, keys, buffer, offsets):
            self.calls += 1
            self.messages += split(keys, buffer, offsets)

        def send_raw(self, key, value):
            raise AssertionError("the batch path should have been taken")

    plain, _, _ = stream(build(Simulation, "all-s1"), 150)
    batches, raw = Batches(), Batches()
    stream(build(Simulation, "all-s1"), 150, send=batches)
    stream(build(Simulation, "all-s1"), 150, send=raw.send_raw)
    assert batches.messages == plain and raw.messages == plain
    assert 0 < batches.calls < len(plain)


def test_step_by_step_with_a_send_callable_still_works():
    """Tests and notebooks drive ``step()`` themselves with ``sim._send`` set."""
    sim = build(Simulation, "nolat-s3")
    sent: list[tuple[bytes, bytes]] = []
    sim._send = lambda k, v: sent.append((k, v))
    for _ in range(20):
        sim.step()
    assert len(sent) == sim.counts.sent > 0


# -- the delay queue is a heap of (time, order) ---------------------------------------------


def test_delay_queue_releases_in_heap_order():
    rng = np.random.default_rng(3)
    queue, heap, order = _DelayQueue(), [], 0
    for now in range(0, 5000, 100):
        n = int(rng.integers(0, 40))
        at = now + rng.integers(-50, 800, n)
        payloads = [rng.bytes(int(k)) for k in rng.integers(0, 30, n)]
        machine = rng.integers(0, 5, n)
        offsets = np.concatenate(([0], np.cumsum([len(p) for p in payloads]))).astype(np.int64)
        queue.push(at, order + 1 + np.arange(n), machine, b"".join(payloads), offsets)
        for i in range(n):
            order += 1
            heapq.heappush(heap, (int(at[i]), order, int(machine[i]), payloads[i]))
        for when in (now, None) if now == 4900 else (now,):
            got_machine, buffer, offs = queue.pop_due(when)
            got = split(got_machine.tolist(), buffer, offs)
            expected = []
            while heap and (when is None or heap[0][0] <= when):
                _at, _o, m, p = heapq.heappop(heap)
                expected.append((m, p))
            assert got == expected
            assert len(queue) == len(heap)
    assert len(queue) == 0


# -- the column encoder is Avro ---------------------------------------------------------------


def random_columns(rng: np.random.Generator, n: int, machines: int, sensors: int):
    ts = rng.integers(-(2**40), 2**62, n)
    ts[: n // 4] = rng.integers(0, 300, n // 4)
    value = rng.normal(0, 1e3, n)
    value[rng.random(n) < 0.15] = np.nan
    value[:6] = [-0.0, 0.0, np.inf, -np.inf, 5e-324, np.nan]
    status = rng.integers(-(2**31), 2**31, n)
    status[: n // 2] = rng.integers(0, 4, n // 2)
    seq = rng.integers(-(2**63), 2**63 - 1, n)
    seq[: n // 2] = rng.integers(0, 2000, n // 2)
    return rng.integers(0, machines, n), ts, rng.integers(0, sensors, n), value, status, seq


def test_column_encoder_equals_fastavro_on_random_records():
    ids = [f"m-{i + 1:04d}" for i in range(300)] + ["m-100000", "", "ünïcode-machine-ß", "x" * 200]
    enc = ReadingColumnsEncoder(ids)
    sensors = list(enc.sensor_index)
    assert sensors == codec_for("reading").raw["fields"][2]["type"]["symbols"]
    rng = np.random.default_rng(42)
    machine, ts, sensor, value, status, seq = random_columns(rng, 5000, len(ids), len(sensors))
    buffer, offsets = enc.encode(machine, ts, sensor, value, status, seq)
    assert offsets[0] == 0 and offsets[-1] == len(buffer) and len(offsets) == 5001
    for i in range(5000):
        v = float(value[i])
        record = {"machine_id": ids[machine[i]], "ts": int(ts[i]),
                  "sensor_type": sensors[sensor[i]], "value": None if v != v else v,
                  "status_code": int(status[i]), "seq": int(seq[i])}  # fmt: skip
        assert buffer[offsets[i] : offsets[i + 1]] == READING.encode(record), record


def test_column_encoder_takes_scalars_for_columns_that_hold_for_every_message():
    enc = ReadingColumnsEncoder(["a", "bb"])
    one = ReadingEncoder()
    buffer, offsets = enc.encode([1, 0, 1], 1_767_225_600_000, [3, 3, 3], [1.5, np.nan, 2.0], 2, 7)
    expected = [one.encode({"machine_id": m, "ts": 1_767_225_600_000, "sensor_type": "battery",
                            "value": v, "status_code": 2, "seq": 7})
                for m, v in (("bb", 1.5), ("a", None), ("bb", 2.0))]  # fmt: skip
    assert [buffer[a:b] for a, b in itertools.pairwise(offsets)] == expected
    empty, offsets = enc.encode([], 0, [], [], 0, [])
    assert empty == b"" and offsets.tolist() == [0]


def test_column_encoder_refuses_to_build_when_it_disagrees_with_the_schema(monkeypatch):
    def wrong_double(value, null):
        body, used, lengths = original(value, null)
        body[:, 1:] = body[:, :0:-1]  # big-endian instead of little-endian
        return body, used, lengths

    original = schemas._null_or_double
    monkeypatch.setattr(schemas, "_null_or_double", wrong_double)
    with pytest.raises(SchemaError, match="ReadingColumnsEncoder disagrees"):
        ReadingColumnsEncoder(["m-0001"])
    monkeypatch.undo()
    with pytest.raises(SchemaError, match="knows the fields"):
        ReadingColumnsEncoder(["m-0001"], codec_for("chaos_event"))


# -- the producer: batch digest, failures counted without a broker -----------------------------


def random_batch(rng: np.random.Generator, n: int, same_keys: bool = False, same_values=False):
    """Keys and a buffer of values: of random lengths (empty ones too), or of one length."""
    if same_keys:
        keys = [f"m-{i:04d}".encode() for i in rng.integers(0, 10_000, n)]
    else:
        keys = [rng.bytes(int(k)) for k in rng.integers(0, 12, n)]
        keys[: n // 2] = [f"m-{i:04d}".encode() for i in range(n // 2)]
    lengths = np.full(n, 37) if same_values else rng.integers(0, 60, n)
    offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    return keys, rng.bytes(int(offsets[-1])), offsets


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("same_keys", "same_values"), [(0, 0), (1, 0), (1, 1)])
def test_frames_are_the_per_message_framing(seed, same_keys, same_values):
    rng = np.random.default_rng(seed)
    keys, buffer, offsets = random_batch(rng, int(rng.integers(4, 400)), same_keys, same_values)
    messages = split(keys, buffer, offsets)
    assert hashlib.sha256(frames(keys, buffer, offsets)).hexdigest() == digest(messages)
    # a slice of a larger buffer: offsets need not start at 0
    part = slice(3, len(keys))
    sub = frames(keys[part], buffer, offsets[3:])
    assert hashlib.sha256(sub).hexdigest() == digest(messages[part])


def test_send_many_and_send_raw_give_the_same_digest_and_count_failures():
    """No broker: every message times out, and is counted as failed with its reason."""
    rng = np.random.default_rng(7)
    keys, buffer, offsets = random_batch(rng, 300)
    messages = split(keys, buffer, offsets)
    nowhere = {"message.timeout.ms": 200, "log_level": 0}
    one, many = (
        RecordProducer(kafka.Endpoint("127.0.0.1:9"), "t", "r", **nowhere) for _ in range(2)
    )
    for key, value in messages:
        one.send_raw(key, value)
    many.send_many(keys[:100], buffer, offsets[:101])
    many.send_many(keys[100:], buffer, offsets[100:])
    many.send_many([], b"", np.zeros(1, dtype=np.int64))
    reports = [p.flush(20) for p in (one, many)]
    for report in reports:
        assert report.sha256 == digest(messages)
        assert (report.sent, report.delivered, report.failed) == (300, 0, 300)
        assert report.errors == {"Local: Message timed out": 300}
    with pytest.raises(ValueError, match="offsets"):
        many.send_many(keys[:2], buffer, offsets[:2])


def test_connect_says_whether_the_producer_can_send():
    """An idempotent producer with nowhere to connect: False after the timeout; without
    idempotence (the default, see workbench.kafka.make_producer) there is no handshake to
    wait for."""
    started = time.monotonic()
    idempotent = {"enable.idempotence": True, "max.in.flight.requests.per.connection": 5}
    assert not RecordProducer(
        kafka.Endpoint("127.0.0.1:9"), "t", "r", log_level=0, **idempotent
    ).connect(0.3)
    assert time.monotonic() - started < 3
    assert RecordProducer(kafka.Endpoint("127.0.0.1:9"), "t", "r", log_level=0).connect(0.0)


# -- against the embedded broker ----------------------------------------------------------------


def test_simulation_through_the_producer_is_delivered_and_consumed_back_unchanged(
    settings, endpoints
):
    """Everything sent is delivered (failures-only reports), and what a consumer reads back
    has the digest the producer computed per batch; the end-of-run markers reach the
    partitions the data went to."""
    bootstrap = endpoints.broker
    topic = f"{settings.topic_raw}.one"
    kafka.ensure_topics(bootstrap, [topic], 1)  # one partition: consumed in send order
    expected, _, _ = stream(build(Simulation, "all-s7"), 120)
    with RecordProducer(bootstrap, topic, "fast") as producer:
        assert producer.connect(10)  # the idempotent producer's handshake is done
        sim = build(Simulation, "all-s7")
        sim.run(producer.send_raw, 120)  # as job.py passes it: the batch path is taken
    report = producer.report
    assert (report.sent, report.delivered, report.failed) == (len(expected), len(expected), 0)
    assert report.sha256 == digest(expected) == PINNED["all-s7"][0]

    consumer = kafka.make_consumer(bootstrap, "fast-produce", 6000)
    consumer.assign([kafka.TopicPartition(topic, 0, 0)])
    got, deadline = [], time.monotonic() + 30
    try:
        while len(got) < len(expected) and time.monotonic() < deadline:
            got += [m for m in consumer.consume(1000, 0.2) if m.error() is None]
    finally:
        consumer.close()
    assert digest([(m.key(), m.value()) for m in got]) == report.sha256
    assert all(dict(m.headers())["run_id"] == b"fast" for m in got)

    # several partitions: end-of-run reaches exactly the partitions the machines' data did
    with RecordProducer(bootstrap, settings.topic_raw, "fast") as producer:
        Simulation(FactoryConfig(machines=12, seed=3), "fast").run(producer, 5)
    machines = [f"m-{i + 1:04d}".encode() for i in range(12)]
    reached = producer.end_of_run(machines)
    consumer = kafka.make_consumer(bootstrap, "fast-produce-2", 6000)
    consumer.assign([kafka.TopicPartition(settings.topic_raw, p, 0)
                     for p in range(settings.partitions)])  # fmt: skip
    data, markers, deadline = set(), set(), time.monotonic() + 30
    try:
        while len(markers) < 12 and time.monotonic() < deadline:
            for m in consumer.consume(1000, 0.2):
                if m.error() is None:
                    is_marker = "control" in dict(m.headers())
                    (markers if is_marker else data).add((m.key(), m.partition()))
    finally:
        consumer.close()
    assert markers == data and len(markers) == 12
    assert reached == {p for _, p in data}
