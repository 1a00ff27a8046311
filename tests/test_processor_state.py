"""The processor's event-time state against the real broker and database: final windows
agree with the stored readings, physical-range and clock checks dead-letter, and the state
of a killed processor's partitions moves to the survivor of its consumer group."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time

import sqlalchemy as sa
from conftest import WORKBENCH, cli_env, own_settings, read_topic

from workbench.job import simulate
from workbench.processor.loop import Processor
from workbench.producer import RecordProducer
from workbench.runs import RunRegistry
from workbench.schemas import READING
from workbench.simulator.control import Pace
from workbench.simulator.spec import SimulationSpec

#: Two minutes of the standard chaos scenario: spikes, a drift, a failure, a stuck sensor,
#: power loss, duplicates, loss, malformed messages and delivery jitter.
SPEC = SimulationSpec.build(scenario="standard", duration_s=120)

WINDOWS_VS_READINGS = """
SELECT w.machine_id, w.sensor_type, w.width_s, w.window_start, w.final,
       w.count, w.nulls, w.mean, w.min, w.max,
       count(r.value) AS r_count, count(*) FILTER (WHERE r.value IS NULL) AS r_nulls,
       avg(r.value) AS r_mean, min(r.value) AS r_min, max(r.value) AS r_max
FROM window_stats w
JOIN readings r ON r.run_id = w.run_id AND r.machine_id = w.machine_id
     AND r.sensor_type = w.sensor_type AND r.ts >= w.window_start AND r.ts < w.window_end
WHERE w.run_id = :run
GROUP BY w.machine_id, w.sensor_type, w.width_s, w.window_start, w.final,
         w.count, w.nulls, w.mean, w.min, w.max
"""


def assert_windows_agree_with_readings(database_url: str, run_id: str) -> int:
    """Every window of the run is final and matches SQL over the readings stored for it."""
    eng = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with eng.connect() as conn:
            rows = conn.execute(sa.text(WINDOWS_VS_READINGS), {"run": run_id}).all()
            windows = conn.execute(
                sa.text("SELECT count(*) FROM window_stats WHERE run_id = :run"), {"run": run_id}
            ).scalar_one()
    finally:
        eng.dispose()
    assert rows and len(rows) == windows  # no window without readings, none missing
    for r in rows:
        where = f"{r.machine_id}/{r.sensor_type}/{r.width_s}s@{r.window_start}"
        assert r.final, where
        assert (r.count, r.nulls) == (r.r_count, r.r_nulls), where
        if r.count:
            assert abs(r.mean - r.r_mean) < 1e-9 * max(1.0, abs(r.r_mean)), where
            assert (r.min, r.max) == (r.r_min, r.r_max), where
    return windows


def alerts_of(database_url: str, run_id: str) -> set[tuple]:
    eng = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with eng.connect() as conn:
            return {
                tuple(r)
                for r in conn.execute(
                    sa.text(
                        "SELECT alert_id, state, breaches, peak FROM alerts WHERE run_id = :run"
                    ),
                    {"run": run_id},
                )
            }
    finally:
        eng.dispose()


def test_final_windows_agree_with_the_stored_readings_under_chaos(settings, endpoints):
    report = simulate(settings, endpoints, SPEC, "win-ref")
    processor = Processor(settings, endpoints.broker, endpoints.database_url)
    stats = processor.run(idle_timeout_s=3)
    assert {("win-ref", p) for p in report.partitions} <= processor.ended
    assert stats.late > 0 and stats.duplicates > 0  # the chaos did reach the processor
    windows = assert_windows_agree_with_readings(endpoints.database_url, "win-ref")
    assert windows >= 24 * 3 * 2  # at least one window per sensor and width

    # the River statistics of every sensor are in the database, and agree with SQL
    eng = sa.create_engine(endpoints.database_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with eng.connect() as conn:
            rows = conn.execute(sa.text("""
                SELECT s.n, s.nulls, s.mean, s.std, s.quantile, s.drifts, count(*) AS r_n,
                       count(*) FILTER (WHERE r.value IS NULL) AS r_nulls,
                       avg(r.value) AS r_mean, stddev_samp(r.value) AS r_std
                FROM sensor_stats s JOIN readings r USING (run_id, machine_id, sensor_type)
                WHERE s.run_id = 'win-ref'
                GROUP BY s.run_id, s.machine_id, s.sensor_type""")).all()  # fmt: skip
    finally:
        eng.dispose()
    assert len(rows) == 24 * 5  # temperature, vibration, pressure, battery, current
    for r in rows:
        assert (r.n, r.nulls) == (r.r_n, r.r_nulls)
        if r.r_mean is not None:
            assert abs(r.mean - r.r_mean) < 1e-6 * max(1.0, abs(r.r_mean))
            assert abs(r.std - r.r_std) < 1e-6 * max(1.0, r.r_std)
    assert all(r.quantile is not None for r in rows if r.r_mean is not None)


def test_out_of_range_and_implausible_times_are_dead_lettered_with_reasons(settings, endpoints):
    now_ms = int(time.time() * 1000)
    records = {
        "too-hot": {"ts": now_ms, "sensor_type": "temperature", "value": 5000.0},
        "flat-negative": {"ts": now_ms, "sensor_type": "battery", "value": -3.0},
        "not-a-number": {"ts": now_ms, "sensor_type": "pressure", "value": float("nan")},
        "future": {"ts": now_ms + 30 * 86_400_000, "sensor_type": "pressure", "value": 1.0},
        "ancient": {"ts": 0, "sensor_type": "pressure", "value": 1.0},
        "fine": {"ts": now_ms, "sensor_type": "pressure", "value": 1.0},
    }
    with RecordProducer(endpoints.broker, settings.topic_raw, "dl-run") as p:
        for seq, fields in enumerate(records.values()):
            p.send({"machine_id": "m-1", "status_code": 0, "seq": seq, **fields})
    stats = Processor(settings, endpoints.broker, endpoints.database_url).run(idle_timeout_s=2)
    assert (stats.stored, stats.deadlettered) == (1, 5)
    dead = read_topic(settings, endpoints, settings.topic_deadletter, 5)
    reasons = {READING.decode(m.value())["seq"]: dict(m.headers())["reason"].decode() for m in dead}
    assert reasons[0] == "temperature 5000.0 is outside its physical range [-100.0, 1000.0]"
    assert "battery -3.0 is outside its physical range" in reasons[1]
    assert reasons[2] == "pressure value nan is not a finite number"
    assert "event time" in reasons[3] and "not plausible" in reasons[3]
    assert "event time 0 ms" in reasons[4]


class Worker:
    """A `workbench process` subprocess whose log lines are collected as they come."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [WORKBENCH, "process", "--json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)

    def assigned(self) -> list[int]:
        """The partitions of its latest assignment."""
        for line in reversed(self.lines):
            m = re.search(r"assigned partitions \[([0-9, ]*)\]", line)
            if m:
                return [int(p) for p in m.group(1).split(",") if p.strip()]
        return []

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_killed_processors_partitions_and_state_move_to_the_survivor(stack, endpoints):
    base, _ = stack
    # The reference: the same seeded run through one processor that is never disturbed.
    ref = own_settings(base, endpoints)
    simulate(ref, endpoints, SPEC, "handoff-ref")
    Processor(ref, endpoints.broker, endpoints.database_url).run(idle_timeout_s=3)

    # Two processors in one group split the 4 partitions before any data comes ...
    settings = own_settings(base, endpoints, batch_size=200)
    env = cli_env(settings)
    a, b = Worker(env), Worker(env)
    registry = RunRegistry(endpoints.database_url)
    try:
        wait_for(lambda: a.assigned() and b.assigned(), 60, "both processors to get partitions")
        assert sorted(a.assigned() + b.assigned()) == [0, 1, 2, 3]
        # ... then the run arrives and one of them dies mid-way, without a goodbye. The run
        # is paced to take about 20 s, so that the kill lands while it still comes in.
        expected = registry.counts("handoff-ref").stored
        pace, sent = Pace(expected / 20), {}
        sender = threading.Thread(
            target=lambda: sent.update(report=simulate(
                settings, endpoints, SPEC, "handoff", pace=pace
            ))
        )  # fmt: skip
        sender.start()
        wait_for(lambda: registry.counts("handoff").stored > expected // 4, 60, "a quarter")
        os.kill(a.proc.pid, signal.SIGKILL)
        a.proc.wait(10)
        assert sender.is_alive(), "the kill must land mid-run"
        pace.set(None)  # the rest as fast as it goes
        sender.join(60)
        report = sent["report"]

        wait_for(lambda: sorted(b.assigned()) == [0, 1, 2, 3], 60, "the survivor to take over")
        restored = [line for line in b.lines if "state restored" in line]
        assert restored, "the survivor must restore the dead processor's checkpoints"

        # Readings are visible one transaction before the windows that follow from them:
        # done means every final window of the reference is there too, not merely some.
        ref_windows = registry.counts("handoff-ref", full=True).windows_final

        def finished() -> bool:
            c = registry.counts("handoff", full=True)
            return c.stored == expected and c.windows_open == 0 and c.windows_final >= ref_windows

        wait_for(finished, 90, "the survivor to finish the run")
        b.proc.send_signal(signal.SIGTERM)
        out, _ = b.proc.communicate(timeout=30)
        assert b.proc.returncode == 0
        assert json.loads(out)["consumed"] > 0
    finally:
        a.stop()
        b.stop()
    assert report.partitions
    # Nothing lost, nothing twice; every window exact; the same alerts as the reference.
    counts, ref_counts = (
        registry.counts("handoff", full=True),
        registry.counts("handoff-ref", full=True),
    )
    registry.close()
    assert (counts.stored, counts.deadlettered) == (ref_counts.stored, ref_counts.deadlettered)
    assert counts.windows_final == ref_counts.windows_final
    assert_windows_agree_with_readings(endpoints.database_url, "handoff")
    alerts = alerts_of(endpoints.database_url, "handoff")
    assert alerts and alerts == alerts_of(endpoints.database_url, "handoff-ref")
