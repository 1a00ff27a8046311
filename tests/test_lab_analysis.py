"""What notebooks compute from a stored run: data quality measured downstream against what
chaos injected, and detections fault by fault. One real run through the real pipeline."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from conftest import run_notebook

from workbench.analysis import quality
from workbench.analysis.detection import detections, examples
from workbench.job import run_experiment
from workbench.lab.plots.quality import dead_letters_figure, series_quality_figure
from workbench.lab.plots.timeline import detection_timeline
from workbench.processor.scoring import ALERTABLE
from workbench.simulator.spec import SimulationSpec
from workbench.sinks.postgres import engine

CHAOS = {"loss": 0.03, "duplicate": 0.02, "malformed": 0.01, "latency": 2.0, "power": 0.05,
         "stuck": 0.05, "spike": 0.002}  # fmt: skip


@pytest.fixture(scope="module")
def run(stack):
    from conftest import own_settings

    settings = own_settings(*stack)
    spec = SimulationSpec.build(machines=4, duration_s=180, seed=5, chaos=CHAOS)
    summary = run_experiment(settings, spec)
    assert summary.reconciled
    return stack[1].database_url, summary


def test_seq_gaps_are_exactly_the_lost_and_rejected_readings_before_each_series_end(run):
    url, summary = run
    series = quality.series_quality(url, summary.run_id)
    assert len(series) == 4 * 5 and (series["duplicates"] == 0).all()
    # each lost or malformed reading is a ground-truth event with its machine, sensor and
    # time; a gap is one of those before the last reading its series stored
    eng = engine(url)
    try:
        with eng.connect() as conn:
            invisible = conn.execute(sa.text("""
                SELECT count(*) FROM chaos_events c
                WHERE c.run_id = :run AND c.kind IN ('loss', 'malformed')
                  AND c.start_ts <= (SELECT max(ts) FROM readings r WHERE r.run_id = c.run_id
                      AND r.machine_id = c.machine_id AND r.sensor_type = c.sensor_type)
            """), {"run": summary.run_id}).scalar_one()  # fmt: skip
            nulls = conn.execute(sa.text(
                "SELECT count(*) FROM readings WHERE run_id = :run AND value IS NULL"
            ), {"run": summary.run_id}).scalar_one()  # fmt: skip
            range_rejected = int(quality.range_violations(url, summary.run_id)["violations"].sum())
    finally:
        eng.dispose()
    assert int(series["gaps"].sum()) == invisible + range_rejected
    q = quality.summary(url, summary.run_id, summary)
    assert q["seq_gaps"] == series["gaps"].sum() and q["stored"] == summary.stored
    assert 0 < q["injected_loss_rate"] <= q["measured_loss_rate"]  # gaps include dead letters
    assert q["late"] == summary.late > 0
    assert q["nulls"] == nulls
    assert q["duplicates_absorbed"] == summary.duplicates_absorbed > 0


def test_dead_letters_are_grouped_by_reason_and_the_books_close(run):
    url, summary = run
    dead = quality.dead_letters(url, summary.run_id)
    assert dead["count"].sum() == summary.deadlettered
    by = dead.groupby("category")["count"].sum()
    assert by["not a valid Avro reading"] == summary.chaos["malformed"]
    assert set(by.index) <= {"not a valid Avro reading", "outside physical range"}
    books = quality.accounting(url, [summary.run_id])
    assert books.loc[0, ["produced", "stored", "deadlettered", "dropped"]].tolist() == [
        summary.produced, summary.stored, summary.deadlettered, summary.dropped,
    ]  # fmt: skip
    assert bool(books.loc[0, "closes"])
    assert len(dead_letters_figure(dead).data) == 2
    assert len(series_quality_figure(quality.series_quality(url, summary.run_id)).data) == 4


def test_detections_agree_with_the_score_fault_by_fault(run):
    url, summary = run
    faults, alerts = detections(url, summary.run_id)
    scored = {k: v for k, v in summary.chaos.items() if k in ALERTABLE}
    assert faults["kind"].value_counts().to_dict() == scored
    for kind, s in summary.score.items():
        of_kind = faults[faults["kind"] == kind]
        assert of_kind["detected"].sum() == s["detected"], kind
        assert of_kind["open_at_end"].sum() == s["open_at_end"], kind
        if s["detected"]:
            assert of_kind["delay_s"].mean() == pytest.approx(s["mean_delay_s"], abs=0.01)
    assert len(alerts) == summary.alerts
    picked = examples(faults, per_kind=1)
    assert sorted(picked["kind"]) == sorted(scored) and picked["sensor_type"].notna().all()
    assert (picked["since"] < picked["start"]).all() and (picked["until"] > picked["end"]).all()
    fig = detection_timeline(faults, alerts)
    assert {t.name for t in fig.data} >= {f"{k} caught" for k in faults[faults.detected].kind}


def test_chaos_experiment_notebook_scores_the_run_it_made(kernel_env, tmp_path):
    got = run_notebook(
        "02_chaos_experiment",
        tmp_path,
        machines=3,
        duration_s=240,
        seed=3,
        stuck=0.5,
        power=0.3,
        drift=0.0,
        failure=0.0,
        examples_per_kind=1,
    )
    assert got["reconciled"] and got["produced"] > 0
    assert set(got["score"]) >= {"stuck", "power"}
    assert got["faults_scored"] == sum(got["chaos"].get(k, 0) for k in ALERTABLE) > 0
    detected = sum(s["detected"] for s in got["score"].values())
    assert got["faults_missed"] == got["faults_scored"] - detected
    # the section on machine health: the lowest score of the run's three machines
    assert 0 <= got["health_min"] <= 100 and got["health_worst"]["machine"].startswith("m-")


def test_data_quality_notebook_closes_the_books_and_measures_loss(kernel_env, tmp_path):
    got = run_notebook("05_data_quality", tmp_path, machines=3, duration_s=120, seed=2,
                       loss=0.05, runs_to_check=5)  # fmt: skip
    assert got["books_close"] and got["dropped"] > 0
    q = got["quality"]
    assert q["seq_gaps"] > 0 and q["duplicates_in_database"] == 0
    assert q["measured_loss_rate"] >= q["injected_loss_rate"] * 0.5
    assert 1 <= got["runs_checked"] <= 5


def test_no_examples_are_picked_when_none_are_asked_for():
    import pandas as pd

    start = pd.Timestamp("2026-01-01", tz="UTC")
    faults = pd.DataFrame({"kind": ["spike", "stuck"], "machine_id": "m-0001",
                           "sensor_type": ["pressure", None], "start": start,
                           "end": start + pd.Timedelta(seconds=30), "detected": [True, False],
                           "rule": ["spike", None], "delay_s": [1.0, None]})  # fmt: skip
    assert examples(faults, per_kind=0).empty  # not every fault with no time range
    assert examples(faults.iloc[:0]).empty
    picked = examples(faults, per_kind=1)
    assert len(picked) == 2 and picked["since"].notna().all()
    assert picked.loc[picked["kind"] == "stuck", "sensor_type"].item() == "temperature"
