"""Results are a function of the input stream alone.

The same seeded stream (standard chaos scenario plus heavy delivery jitter, so many readings
are late, and duplicates) is produced to topics of their own under different run ids, and
processed: undisturbed; with the processor killed -9 at several moments and restarted; by two
workers; in tiny batches; and through a database outage longer than the idle timeout. The
stored readings with their late flags, the final windows, the sensor statistics and the
alerts must be identical (``workbench db digest``, which does not depend on the run id).
A reading with a broken clock must not make the readings after it late.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
import uuid

import psycopg
import pytest
from conftest import WORKBENCH, cli_env, in_background, own_settings

from workbench.bench import bench_predictor
from workbench.job import simulate
from workbench.models import registry
from workbench.processor.loop import Processor
from workbench.producer import RecordProducer
from workbench.runs import RunRegistry
from workbench.schemas import READING
from workbench.simulator.control import parse_chaos
from workbench.simulator.spec import SimulationSpec
from workbench.sinks.digest import EMPTY
from workbench.stack import Endpoints

pytestmark = pytest.mark.slow

#: A model of this name is promoted in each database the processors here use: predictions
#: must be a function of the stream too (windows corrected by late readings re-score them).
MODEL = f"det-{uuid.uuid4().hex[:6]}"

SPEC = SimulationSpec.build(
    scenario="standard", duration_s=150, chaos=parse_chaos("latency=4s,duplicate=0.01")
)


def promote_model(url: str) -> None:
    """Store and promote :data:`MODEL` (a logistic model of the default kind: what it
    learnt does not matter here, only that its scores tell minutes apart)."""
    model = bench_predictor().model
    saved = registry.save(url, MODEL, "precursor", model, {"threshold": 0.5}, [], {})
    registry.promote(url, MODEL, saved.version)


def digest(url: str, run_id: str) -> dict:
    out = subprocess.run(
        [WORKBENCH, "-q", "db", "digest", "--run-id", run_id, "--database", url, "--json"],
        capture_output=True, text=True, check=True, env=cli_env_plain(),
    )  # fmt: skip
    return json.loads(out.stdout)


def cli_env_plain() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("WORKBENCH_")}


def stored_segments(url: str, group: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM processor_state_segments "
                            "WHERE consumer_group = %s", (group,)).fetchone()[0]  # fmt: skip


def wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def ended(processor: Processor, report) -> bool:
    return {(report.run_id, p) for p in report.partitions} <= processor.ended


def finished(registry: RunRegistry, report) -> bool:
    """Everything of the run is stored and no window is open (whoever processed it)."""
    c = registry.counts(report.run_id, full=True)
    return (c.stored + c.deadlettered == report.expected_in_database and c.windows_open == 0
            and c.windows_final > 0)  # fmt: skip


def run_undisturbed(settings, endpoints, run_id: str, url: str | None = None):
    ends = Endpoints(endpoints.broker, url or endpoints.database_url)
    report = simulate(settings, ends, SPEC, run_id)
    processor = Processor(settings, endpoints.broker, ends.database_url)
    stop = threading.Event()
    worker = threading.Thread(target=processor.run, args=(stop,))
    worker.start()
    try:
        wait_until(lambda: ended(processor, report), 120, f"{run_id} to end")
    finally:
        stop.set()
        worker.join(60)
    return report


@pytest.fixture(scope="module")
def reference(stack):
    base, endpoints = stack
    promote_model(endpoints.database_url)
    settings = own_settings(base, endpoints, model=MODEL)
    report = run_undisturbed(settings, endpoints, "det-ref")
    d = digest(endpoints.database_url, "det-ref")
    # the comparison means something only if the stream has late readings and predictions
    assert d["late"] > 50, d
    assert d["predictions"] != EMPTY, d
    assert report.duplicates > 0
    return d


def test_tiny_batches_give_the_same_results(stack, reference):
    base, endpoints = stack
    settings = own_settings(base, endpoints, model=MODEL, batch_size=37, provisional_interval_s=0.0)
    run_undisturbed(settings, endpoints, "det-tiny")
    assert digest(endpoints.database_url, "det-tiny") == reference


def test_kill_9_at_random_moments_gives_the_same_results(stack, reference):
    base, endpoints = stack
    # small cold segments: many are sealed, stored with checkpoints, restored after kills
    settings = own_settings(base, endpoints, model=MODEL, batch_size=200, checkpoint_interval_s=0.3,
                            cold_segment_values=50)  # fmt: skip
    report = simulate(settings, endpoints, SPEC, "det-kill")
    registry = RunRegistry(endpoints.database_url)
    env = cli_env(settings)
    rng = random.Random(11)
    try:
        for fraction in sorted(rng.uniform(0.1, 0.9) for _ in range(4)):
            proc = subprocess.Popen(
                [WORKBENCH, "-q", "process"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                wait_until(lambda f=fraction: registry.counts("det-kill").stored
                           >= f * report.produced * 0.97, 120, "progress")  # fmt: skip
                time.sleep(rng.uniform(0, 0.3))
            finally:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
    finally:
        registry.close()
    # the end-of-run markers may have been processed before the last kill
    run_to_the_end(settings, endpoints, report)
    assert digest(endpoints.database_url, "det-kill") == reference


def test_a_hand_over_with_final_windows_in_cold_segments_gives_the_same_results(stack, reference):
    """Two thirds of the stream, then a checkpoint with its cold segments (the values of
    the final windows, which late readings may still correct) in the database; a new
    processor restores them and finishes."""
    base, endpoints = stack
    settings = own_settings(base, endpoints, model=MODEL, batch_size=300, cold_segment_values=50)
    report = simulate(settings, endpoints, SPEC, "det-cold")
    first = Processor(settings, endpoints.broker, endpoints.database_url)
    first.run(max_messages=report.produced * 2 // 3)
    assert stored_segments(endpoints.database_url, settings.consumer_group) > 0
    run_to_the_end(settings, endpoints, report)
    assert digest(endpoints.database_url, "det-cold") == reference


def run_to_the_end(settings, endpoints, report) -> None:
    registry = RunRegistry(endpoints.database_url)
    processor = Processor(settings, endpoints.broker, endpoints.database_url)
    stop = threading.Event()
    worker = threading.Thread(target=processor.run, args=(stop,))
    worker.start()
    try:
        wait_until(lambda: finished(registry, report), 120, "the run to end")
        time.sleep(1.0)  # the last statistics go out with the batch after
    finally:
        stop.set()
        worker.join(60)
        registry.close()


def test_two_workers_give_the_same_results(stack, reference):
    base, endpoints = stack
    settings = own_settings(base, endpoints, model=MODEL, batch_size=500, cold_segment_values=1000)
    report = simulate(settings, endpoints, SPEC, "det-two")
    proc = subprocess.Popen([WORKBENCH, "-q", "process", "--workers", "2", "--json"],
                            env=cli_env(settings), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    registry = RunRegistry(endpoints.database_url)
    try:
        wait_until(lambda: finished(registry, report), 120, "the workers to finish")
        time.sleep(1.0)
    finally:
        registry.close()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert len(summary["workers"]) == 2
    assert all(w["consumed"] > 0 for w in summary["workers"]), summary
    assert digest(endpoints.database_url, "det-two") == reference


def test_a_database_outage_longer_than_the_idle_timeout_changes_nothing(
    stack, reference, private_database, tmp_path
):
    from workbench.stack.postgres import EmbeddedPostgres

    base, endpoints = stack
    pg, rec = private_database
    url = pg.url(rec)
    promote_model(url)
    settings = own_settings(base, endpoints, model=MODEL, batch_size=300, idle_timeout_s=1.0)
    report = simulate(settings, Endpoints(endpoints.broker, url), SPEC, "det-outage")
    registry = RunRegistry(url)
    processor = Processor(settings, endpoints.broker, url)
    with in_background(processor) as errors:
        wait_until(lambda: registry.counts("det-outage").stored > report.produced // 4, 60,
                   "a quarter")  # fmt: skip
        registry.close()
        pg.stop()
        time.sleep(4)  # four idle timeouts with nothing consumed
        assert errors.thread.is_alive() and not errors, errors
        EmbeddedPostgres(tmp_path, port=rec.port).start(timeout_s=60)
        wait_until(lambda: ended(processor, report) or errors, 120, "the run to end")
    assert not errors, errors
    assert digest(url, "det-outage") == reference


def test_a_reading_from_the_future_makes_no_reading_after_it_late(settings, endpoints):
    """The same readings twice, once with one reading dated six days ahead in the middle:
    every other reading has the same late flag in both, and the odd one is kept."""
    t0 = 1_767_225_600_000
    records = [{"machine_id": f"m-{m}", "ts": t0 + 1000 * i, "sensor_type": "temperature",
                "value": 20.0 + (i % 7), "status_code": 0, "seq": i}
               for i in range(300) for m in range(3)]  # fmt: skip
    future = {**records[450], "ts": t0 + 6 * 86_400_000, "seq": 10_000}
    for run_id, extra in (("clock-ok", []), ("clock-broken", [future])):
        with RecordProducer(endpoints.broker, settings.topic_raw, run_id) as p:
            for i, r in enumerate(records):
                p.send(r)
                if i == 450:
                    for e in extra:
                        p.send(e)
        with RecordProducer(endpoints.broker, settings.topic_raw, run_id) as p:
            p.end_of_run(f"m-{m}".encode() for m in range(3))
    processor = Processor(settings, endpoints.broker, endpoints.database_url)
    processor.run(idle_timeout_s=3)
    import sqlalchemy as sa

    eng = sa.create_engine(endpoints.database_url.replace("postgresql://",
                                                          "postgresql+psycopg://"))  # fmt: skip
    with eng.connect() as conn:
        rows = {
            run: dict(
                conn.execute(
                    sa.text(
                        "SELECT machine_id || '/' || seq, late FROM readings WHERE run_id = :r"
                    ),
                    {"r": run},
                ).all()
            )
            for run in ("clock-ok", "clock-broken")
        }
    eng.dispose()
    ok, broken = rows["clock-ok"], rows["clock-broken"]
    assert len(ok) == 900 and len(broken) == 901  # nothing lost, the odd one stored too
    assert not any(ok.values())
    assert {k: v for k, v in broken.items() if k != "m-0/10000"} == ok
    assert READING  # the records above are plain readings of the reading schema
