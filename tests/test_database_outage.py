"""The database goes away in the middle of a run and comes back: the processor waits,
retries, and ends with every reading stored once and every window exact."""

from __future__ import annotations

import time

import pytest
from conftest import in_background, own_settings
from test_processor_state import assert_windows_agree_with_readings

from workbench.errors import DatabaseUnavailable
from workbench.job import simulate
from workbench.processor.loop import Processor
from workbench.runs import RunRegistry
from workbench.simulator.spec import SimulationSpec
from workbench.stack import Endpoints
from workbench.stack.postgres import EmbeddedPostgres


def test_database_down_mid_run_then_back_loses_nothing_and_duplicates_nothing(
    stack, endpoints, private_database, tmp_path
):
    pg, rec = private_database
    url = pg.url(rec)
    settings = own_settings(stack[0], endpoints, batch_size=500)
    ends = Endpoints(endpoints.broker, url)
    report = simulate(settings, ends, SimulationSpec.build(machines=50, duration_s=120), "outage")
    registry = RunRegistry(url)

    processor = Processor(settings, endpoints.broker, url)
    with in_background(processor) as errors:
        deadline = time.monotonic() + 180  # a guard against a hang, not a speed test
        while registry.counts("outage").stored < report.produced // 4:
            assert time.monotonic() < deadline and not errors, errors
            time.sleep(0.02)
        registry.close()
        pg.stop()  # the database goes away mid-run ...
        stored_before = None
        time.sleep(3)  # ... long enough for several failed attempts
        assert errors.thread.is_alive() and not errors, errors
        rec = EmbeddedPostgres(tmp_path, port=rec.port).start(timeout_s=60)  # ... and comes back
        registry = RunRegistry(url)
        stored_before = registry.counts("outage").stored
        assert stored_before < report.produced, "the outage must land mid-run"
        deadline = time.monotonic() + 90
        while not {("outage", p) for p in report.partitions} <= processor.ended:
            assert time.monotonic() < deadline and not errors, errors
            time.sleep(0.05)
    assert not errors, errors
    assert registry.counts("outage").stored == report.produced
    registry.close()
    assert_windows_agree_with_readings(url, "outage")


def test_a_database_that_stays_down_stops_the_processor_with_a_clear_error(
    stack, endpoints, private_database
):
    pg, rec = private_database
    url = pg.url(rec)
    settings = own_settings(stack[0], endpoints, db_retry_timeout_s=2.0)
    simulate(settings, Endpoints(endpoints.broker, url),
             SimulationSpec.build(machines=2, duration_s=10), "down")  # fmt: skip
    processor = Processor(settings, endpoints.broker, url)
    pg.stop()
    with pytest.raises(DatabaseUnavailable, match=r"127\.0\.0\.1"):
        processor.run(idle_timeout_s=30)
