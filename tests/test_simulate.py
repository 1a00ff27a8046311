"""`workbench simulate` and the standard scenario against the real broker and database."""

import json
import subprocess

import sqlalchemy as sa
from conftest import WORKBENCH, cli_env, read_topic

from workbench.schemas import codec_for
from workbench.simulator.scenario import load_scenario
from workbench.simulator.truth import FAULT_KINDS, KINDS
from workbench.sinks import schema
from workbench.sinks.postgres import engine

CHAOS = (
    "spike=0.01,drift=0.5,stuck=0.5,loss=0.05,duplicate=0.05,latency=2s,"
    "burst=0.3,failure=0.3,power=0.3,malformed=0.01"
)


def workbench(settings, *args):
    proc = subprocess.run(
        [WORKBENCH, "-q", *args], env=cli_env(settings), capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def ground_truth(database_url, run_id):
    with engine(database_url).connect() as conn:
        rows = conn.execute(
            sa.select(schema.chaos_events).where(schema.chaos_events.c.run_id == run_id)
        )
        return [dict(r._mapping) for r in rows]


def test_simulate_is_reproducible_and_publishes_its_ground_truth(settings, endpoints):
    args = [
        "simulate",
        "--machines",
        "6",
        "--duration",
        "2m",
        "--seed",
        "11",
        "--chaos",
        CHAOS,
        "--json",
    ]
    first = workbench(settings, *args)
    second = workbench(settings, *args)
    other = workbench(settings, *args[:-1], "--seed", "12", "--json")
    assert first["sha256"] == second["sha256"] != other["sha256"]
    assert first["produced"] == second["produced"] and first["chaos"] == second["chaos"]
    assert (
        first["sent"]
        == first["delivered"]
        == first["produced"] - first["dropped"] + first["duplicates"]
    )
    assert set(first["chaos"]) <= set(KINDS) and sum(first["chaos"].values()) > 0

    truth = ground_truth(endpoints.database_url, first["run_id"])
    kinds = {}
    for row in truth:
        kinds[row["kind"]] = kinds.get(row["kind"], 0) + 1
        assert row["end_ts"] >= row["start_ts"]
    assert kinds == first["chaos"]

    total = (
        sum(first["chaos"].values()) + sum(second["chaos"].values()) + sum(other["chaos"].values())
    )
    on_topic = read_topic(settings, endpoints, settings.topic_chaos, total)
    events = [codec_for("chaos_event").decode(m.value()) for m in on_topic]
    mine = [e for e in events if e["run_id"] == first["run_id"]]
    assert len(mine) == len(truth)
    assert {e["event_id"] for e in mine} == {r["event_id"] for r in truth}


def test_standard_scenario_end_to_end_closes_the_books(settings, endpoints):
    summary = workbench(settings, "run", "--scenario", "standard", "--json")
    assert summary["reconciled"] is True and summary["scenario"] == "standard"
    assert summary["produced"] == summary["stored"] + summary["deadlettered"] + summary["dropped"]
    assert summary["duplicates_absorbed"] > 0 and summary["dropped"] > 0
    # every fault kind occurs several times, and each failure degrades before its runaway
    assert set(summary["chaos"]) == {*FAULT_KINDS, "degradation"}
    assert all(n >= 3 for n in summary["chaos"].values()), summary["chaos"]
    assert summary["chaos"]["degradation"] == summary["chaos"]["failure"]
    scenario = load_scenario("standard")
    scripted = [
        r
        for r in ground_truth(endpoints.database_url, summary["run_id"])
        if r["source"] == "scenario"
    ]
    placed = [r for r in scripted if r["kind"] != "degradation"]
    assert len(placed) == len(scenario.faults)
    assert len(scripted) - len(placed) == sum(f.kind == "failure" for f in scenario.faults)
