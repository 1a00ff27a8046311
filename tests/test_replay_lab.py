"""Real data through the whole pipeline (``replay_experiment``) and notebook 06, against the
real embedded broker and database.

Expected numbers (rows, label windows and their times) come from ../shared/data/README.md,
not from reading the files again.
"""

import datetime as dt
from pathlib import Path

import sqlalchemy as sa
from conftest import query_rows, run_notebook

from workbench.job import replay_experiment
from workbench.lab import alerts, ground_truth, readings
from workbench.lab.plots.replay import replay_figure
from workbench.lab.queries import runs
from workbench.simulator.csvsource import CsvSource
from workbench.simulator.labels import iso_utc
from workbench.simulator.mapping import Overrides
from workbench.simulator.replay import ReplayOptions
from workbench.sinks.schema import machine_health

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NAB = DATA / "nab" / "machine_temperature_system_failure.csv"
# README section 2: the first anomaly window covers data rows 2126-2692, the second starts
# at row 3703; 2800 rows hold the first window whole and nothing of the second.
NAB_ROWS = 2800
NAB_WINDOW = ("2013-12-10 06:25:00", "2013-12-12 05:35:00", "2013-12-11 06:00:00")
# README section 3: valve1/0.csv has one anomaly block (rows 573-973) and 6 mapped sensors.
SKAB_FILE, SKAB_SENSORS = "skab/valve1/0.csv", 6


def iso(text: str) -> str:
    return iso_utc(int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp() * 1000))


def test_nab_slice_closes_its_books_and_scores_every_alert_against_its_window(settings, endpoints):
    s = replay_experiment(settings, CsvSource.open(NAB), ReplayOptions(limit=NAB_ROWS))
    assert s.rows == s.produced == s.stored == NAB_ROWS  # one temperature per row
    assert s.bad_rows == s.deadlettered == 0 and s.reconciled
    assert s.windows > 0 and s.replay["mapping"] == "nab"

    truth = ground_truth(endpoints.database_url, s.run_id)
    assert s.labels == len(truth) == 1
    (event,) = s.label_events
    start, end, point = NAB_WINDOW
    assert (event["start"], event["end"], event["anomaly_point"]) == (iso(start), iso(end),
                                                                      iso(point))  # fmt: skip
    assert event["kind"] == "anomaly" and event["detected"] == (event["alerts"] > 0)

    # every alert counts against the labels, whatever kind its rule aims at
    anomaly = s.score["anomaly"]
    assert anomaly["faults"] == 1 and anomaly["alerts"] == s.alerts
    assert anomaly["detected"] == int(event["detected"])
    assert sum(r["alerts"] for r in s.by_rule) == s.alerts

    # the run is recorded once, as the replay registered it, with the outcome added
    recorded = runs(endpoints.database_url, limit=50)
    mine = recorded[recorded["run_id"] == s.run_id]
    assert len(mine) == 1
    row = mine.iloc[0]
    assert (row["kind"], row["status"], row["stored"]) == ("replay", "completed", NAB_ROWS)

    # its health summary saved for Grafana's table, as a simulated run's is
    saved = query_rows(endpoints.database_url, sa.select(machine_health.c.machine_id).where(
        machine_health.c.run_id == s.run_id))  # fmt: skip
    assert [r.machine_id for r in saved] == s.replay["machines"] and len(saved) == 1, saved

    # the figure: the one window shaded, the signal whole, one marker per alert
    signal = readings(endpoints.database_url, s.run_id)
    fig = replay_figure(signal, truth, alerts(endpoints.database_url, s.run_id))
    assert len(fig.layout.shapes) == 1
    assert fig.data[0].name == "generic" and len(fig.data[0].x) == NAB_ROWS
    assert sum(len(t.x) for t in fig.data[1:]) == s.alerts


def test_bad_rows_and_out_of_range_readings_are_accounted_for(settings, endpoints, tmp_path):
    lines = [f"2014-01-01 00:{m:02d}:00,{20 + m % 3}" for m in range(0, 60, 5)]
    lines[3] = "2014-01-01 00:15:00,warm"  # not a number: the replay dead-letters the row
    lines[5] = "yesterday,21"  # not a time: likewise
    lines[7] = "2014-01-01 00:35:00,5000"  # out of the physical range: the processor does
    path = tmp_path / "plant.csv"
    path.write_text("timestamp,value\n" + "\n".join(lines) + "\n")
    as_temperature = Overrides(sensors=["value=temperature"])  # which has a physical range
    s = replay_experiment(settings, CsvSource.open(path, "nab", as_temperature))
    assert (s.rows, s.bad_rows, s.produced) == (12, 2, 10)
    assert (s.stored, s.deadlettered) == (9, 3) and s.reconciled
    assert s.labels == 0 and s.score == {} and s.label_events == []


def test_real_data_notebook_runs_headless_and_records_its_score(kernel_env, tmp_path):
    result = run_notebook("06_real_data", tmp_path, dataset="skab", limit=None)
    assert result["dataset"] == "skab" and result["file"].endswith(SKAB_FILE)
    assert result["rows"] > 973  # the whole file: the labelled block ends at row 973
    assert result["produced"] == result["rows"] * SKAB_SENSORS == result["stored"]
    assert result["reconciled"] is True
    assert result["labels"] == 1 == result["score"]["anomaly"]["faults"]
    assert result["score"]["anomaly"]["alerts"] == result["alerts"]
    (event,) = result["label_events"]
    assert event["machine_id"] == "skab-valve1-0" and event["anomaly_point"] is None
    # scored as the benchmarks score it, beside the baselines
    bench = result["benchmark"]
    assert set(bench["nab"]) == {"standard", "reward_low_FP", "reward_low_FN"}
    assert 0 <= bench["f1"] <= 1 and bench["baselines"]["null"]["nab"]["standard"] == 0.0
    assert set(bench["baselines"]) == {"null", "zscore"}
