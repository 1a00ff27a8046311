"""Notebook queries against a real stored run: filters, SQL downsampling, the row guard."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest

from workbench.job import simulate
from workbench.lab import (
    TooManyRows,
    alerts,
    ground_truth,
    readings,
    sensor_stats,
    windows,
)
from workbench.processor.loop import Processor
from workbench.simulator.spec import SimulationSpec

RUN = "lab-q"


@pytest.fixture
def stored_run(settings, endpoints):
    """Two minutes of the standard chaos scenario, processed and stored."""
    simulate(settings, endpoints, SimulationSpec.build(scenario="standard", duration_s=120), RUN)
    Processor(settings, endpoints.broker, endpoints.database_url).run(idle_timeout_s=3)
    return endpoints.database_url


def test_bucketed_readings_equal_downsampling_the_raw_ones(stored_run):
    url = stored_run
    raw = readings(url, RUN, sensor_type="temperature", machine_ids=["m-0002", "m-0003"])
    assert set(raw.machine_id) == {"m-0002", "m-0003"} and set(raw.sensor_type) == {"temperature"}
    assert raw.ts.is_monotonic_increasing

    binned = readings(url, RUN, sensor_type="temperature", machine_ids=["m-0002", "m-0003"],
                      bucket="10s")  # fmt: skip
    assert len(binned) < len(raw) / 5
    raw["bucket"] = raw.ts.dt.floor("10s")
    expected = raw.groupby(["machine_id", "bucket"]).value.agg(["mean", "min", "max", "count"])
    got = binned.set_index(["machine_id", "bucket"])[["mean", "min", "max", "count"]]
    pd.testing.assert_frame_equal(got.sort_index(), expected.sort_index(), check_dtype=False)


def test_time_range_is_half_open_and_naive_times_are_utc(stored_run):
    part = readings(stored_run, RUN, since="2026-01-01T00:00:30", until="2026-01-01T00:01:00")
    assert part.ts.min() >= pd.Timestamp("2026-01-01T00:00:30Z")
    assert part.ts.max() < pd.Timestamp("2026-01-01T00:01:00Z")
    assert len(part) > 0


def test_a_raw_query_that_is_too_big_says_to_bucket_it(stored_run):
    with pytest.raises(TooManyRows, match="bucket="):
        readings(stored_run, RUN, max_rows=100)
    assert len(readings(stored_run, RUN, bucket="1m", max_rows=10_000)) <= 10_000


def test_windows_alerts_ground_truth_and_statistics_of_a_run(stored_run):
    url = stored_run
    final = windows(url, RUN, width_s=60)
    assert len(final) > 0 and final.final.all() and set(final.width_s) == {60}
    spikes = alerts(url, RUN)
    truth = ground_truth(url, RUN)
    assert {"spike"} <= set(truth.kind)
    assert {"spike"} <= set(spikes.rule)
    stats = sensor_stats(url, RUN, arrow=True)
    assert isinstance(stats, pa.Table) and stats.num_rows == 24 * 5


def test_bad_arguments_are_one_clear_error(stored_run):
    with pytest.raises(Exception, match="since='yesterday' is not valid"):
        readings(stored_run, RUN, since="yesterday")
    with pytest.raises(Exception, match="bucket"):
        readings(stored_run, RUN, bucket="soon")


def test_runs_gives_the_most_recent_ones_however_many_there_are(stored_run):
    """A database with more runs than ``limit`` is the usual case, not too big a query."""
    from workbench.lab.queries import runs
    from workbench.runs import RunRegistry

    with RunRegistry(stored_run) as registry:
        for run_id in ("lab-q-older", "lab-q-newer"):
            registry.start(run_id, "simulation", 1, {})
    everything = runs(stored_run, limit=10_000)
    assert len(everything) >= 2
    newest = runs(stored_run, limit=1)
    assert len(newest) == 1
    assert newest["run_id"].iloc[0] == everything["run_id"].iloc[0] == "lab-q-newer"
