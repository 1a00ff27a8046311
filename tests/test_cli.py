"""The `workbench` command end to end, as a user runs it, against real servers."""

import json
import subprocess
import time

import psutil
import pytest
from conftest import WORKBENCH, cli_env, isolated_settings, readings_in

from workbench import kafka
from workbench.runs import RunRegistry


def workbench(settings, *args, timeout=180, **env):
    return subprocess.run(
        [WORKBENCH, *args],
        env=cli_env(settings, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_run_json_reconciles_and_records_the_run(settings, endpoints):
    proc = workbench(
        settings, "run", "--machines", "3", "--duration", "10", "--seed", "5", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["produced"] == summary["stored"] == readings_in(3, 10)
    assert summary["deadlettered"] == 0 and summary["reconciled"] is True
    assert summary["elapsed_s"] > 0 and summary["run_id"]
    row = RunRegistry(endpoints.database_url).get(summary["run_id"])
    n = readings_in(3, 10)
    assert (row["status"], row["seed"], row["produced"], row["stored"]) == ("completed", 5, n, n)
    assert row["params"]["machines"] == 3


#: One machine whose battery is replaced (a power fault) and which then samples 5x faster
#: (a burst), every reading sent twice.
FULL_BATTERY_BURST = """
[run]
machines = 1
duration = "150s"
seed = 1

[chaos]
duplicate = 1.0

[[fault]]
kind = "power"
machine = 1
at = "0s"
duration = "10s"

[[fault]]
kind = "burst"
machine = 1
at = "75s"
duration = "60s"
"""


def test_books_close_when_a_duplicated_reading_sits_at_its_physical_bound(settings, tmp_path):
    # the burst's noise took the full battery to 100.1 %, which the processor refuses: each
    # copy was dead-lettered, and stored + dead-lettered came to 3 more than produced
    scenario = tmp_path / "full_battery_burst.toml"
    scenario.write_text(FULL_BATTERY_BURST)
    proc = workbench(settings, "run", "--scenario", str(scenario), "--json")
    assert proc.returncode == 0, proc.stdout or proc.stderr  # a summary that does not close
    s = json.loads(proc.stdout)
    assert s["chaos"] == {"duplicate": s["produced"], "power": 1, "burst": 1}
    assert (s["stored"], s["deadlettered"], s["dropped"]) == (s["produced"], 0, 0)
    assert s["duplicates_absorbed"] == s["produced"] and s["reconciled"] is True


def test_run_on_a_fresh_machine_starts_and_stops_its_own_stack(tmp_path):
    settings = isolated_settings(tmp_path / "state")
    proc = workbench(settings, "run", "--machines", "2", "--duration", "5", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["produced"] == summary["stored"] == readings_in(2, 5)
    stopped = workbench(settings, "status", "--json")
    status = json.loads(stopped.stdout)
    assert not status["broker"]["running"] and not status["database"]["running"]
    assert stopped.returncode == 1  # a health check: not every part answers
    leftovers = [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if any(str(tmp_path) in part for part in (p.info["cmdline"] or []))
    ]
    assert leftovers == []


def test_up_status_down_as_json(tmp_path):
    settings = isolated_settings(tmp_path / "state")
    try:
        up = workbench(settings, "up", "--json")
        assert up.returncode == 0, up.stderr
        running = workbench(settings, "status", "--json")
        assert running.returncode == 0, running.stderr
        status = json.loads(running.stdout)
        assert set(status) == {"broker", "database"}
        for part in status.values():
            assert part["running"] is True and part["embedded"] is True
            assert part["address"].split(":")[0] in {"127.0.0.1", "postgresql"}
        again = workbench(settings, "up")
        assert "already running" in again.stdout
    finally:
        down = workbench(settings, "down", "--json")
    assert json.loads(down.stdout) == {"stopped": {"broker": True, "database": True}}


def test_simulate_then_process_as_separate_commands(settings, endpoints):
    sim = workbench(settings, "simulate", "--machines", "2", "--duration", "4", "--json")
    assert sim.returncode == 0, sim.stderr
    produced = json.loads(sim.stdout)
    assert produced["produced"] == readings_in(2, 4) and len(produced["sha256"]) == 64
    proc = workbench(settings, "process", "--idle-timeout", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    assert stats["per_run"] == {produced["run_id"]: readings_in(2, 4)}
    assert RunRegistry(endpoints.database_url).counts(produced["run_id"]).stored == readings_in(
        2, 4
    )


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["run", "--machines", "0"], "is not a whole number > 0"),
        (["run", "--duration", "soon"], "expected a duration such as 2s"),
        (["run", "--chaos", "loss=7"], "probability from 0 to 1"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_are_named(tmp_path, args, complaint):
    proc = workbench(isolated_settings(tmp_path / "state"), *args)
    assert proc.returncode == 2 and complaint in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_scenario_lists_the_shipped_ones(tmp_path):
    proc = workbench(isolated_settings(tmp_path / "s"), "run", "--scenario", "nope")
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "workbench: error: scenario='nope' is not valid: expected a file, or one of: standard"
    )


def test_bad_setting_is_one_line(tmp_path):
    proc = workbench(isolated_settings(tmp_path / "s"), "status", WORKBENCH_PARTITIONS="lots")
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "workbench: error: WORKBENCH_PARTITIONS='lots' is not valid: expected a whole number >= 1"
    )


def test_bench_json_has_the_processor_figures(settings, tmp_path):
    out = tmp_path / "bench.json"
    proc = workbench(
        settings, "bench", "--machines", "20", "--duration", "20", "--repeats", "1",
        "--latency-rate", "200", "--latency-seconds", "3", "--sink-rows", "2000", "--json",
        "--rss-machines", "200", "--rss-duration", "10s", "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result == json.loads(out.read_text())
    assert result["raw_eps"] > 0 and result["processor_eps"] > 0
    assert result["ratio"] == pytest.approx(result["processor_eps"] / result["raw_eps"], abs=1e-3)
    # the machine model's cost: the same compute pass without it, in the same process
    rows = result["processor"]["rows"]
    assert rows[3]["name"] == "compute without the machine model"
    assert rows[3]["events"] == rows[1]["events"]
    share = result["processor"]["model_share"]
    assert share == pytest.approx(1 - rows[1]["events_per_s"] / rows[3]["events_per_s"], abs=1e-3)
    # ... and scoring each machine-minute with a failure-precursor model, on a run that ends
    assert [r["name"] for r in rows[4:]] == [
        "compute, the run ending", "compute, the run ending, with a failure-precursor model"
    ]  # fmt: skip
    assert rows[4]["events"] == rows[5]["events"] == rows[1]["events"]
    share = result["processor"]["prediction_share"]
    assert share == pytest.approx(1 - rows[5]["events_per_s"] / rows[4]["events_per_s"], abs=1e-3)
    assert result["processor"]["predictions"] == 20  # 20 machines, one minute each
    for key, pattern in (("latency_ms", "steady"), ("latency_ticks_ms", "ticks")):
        lat = result[key]
        assert lat["pattern"] == pattern and lat["samples"] > 0
        assert lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert result["peak_rss_mb"] == result["memory"]["peak_rss_mb"] > 0
    assert (result["memory"]["machines"], result["memory"]["duration_s"]) == (200, 10.0)
    assert result["memory"]["consumed"] == result["memory"]["readings"] > 0
    assert {"cpu", "cores", "memory_gib", "python"} <= set(result["machine"])
    archived = result["archive"]  # the processor's readings, written as the archive does
    assert archived["readings"] == result["processor"]["rows"][1]["events"]
    assert archived["parquet_mb_per_s"] > 0 and archived["compression_ratio"] > 1
    baseline, bulk = result["sink"]["rows"]  # executemany, then COPY + merge
    assert baseline["rows"] == bulk["rows"] == 2000 and bulk["rows_per_s"] > 0
    assert bulk["ratio"] == pytest.approx(bulk["rows_per_s"] / baseline["rows_per_s"], abs=0.01)


def test_run_standard_scenario_json_scores_the_alerts(settings):
    proc = workbench(settings, "run", "--scenario", "standard", "--seed", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["deadlettered"] > 0 and summary["late"] > 0 and summary["alerts"] > 0
    for kind in ("spike", "failure", "drift"):
        score = summary["score"][kind]
        assert set(score) >= {"precision", "recall", "mean_delay_s"}
        assert score["recall"] >= 0.9 and score["precision"] >= 0.8, (kind, score)


def test_the_edge_story_sensor_nodes_judged_by_the_edge_rules(settings):
    # environmental sensor nodes (air at 20-30 C, batteries that fail): the edge gateway's
    # two rules catch every overheating node and every failing cell, and nothing else (30
    # minutes: a node's failure warms it for 5-15 minutes before it overheats)
    args = ("run", "--factory", "nodes", "--machines", "20", "--duration", "30m", "--seed", "7",
            "--rules", "edge", "--json")  # fmt: skip
    proc = workbench(settings, *args, "--chaos", "failure=0.02,power=0.02")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["reconciled"] is True
    for kind in ("failure", "power"):
        score = summary["score"][kind]
        assert score["faults"] >= 2 and score["recall"] == 1.0 and score["precision"] == 1.0
    clean = json.loads(workbench(settings, *args).stdout)
    assert clean["reconciled"] is True and clean["alerts"] == 0


def test_a_bad_rules_file_stops_run_with_one_line_before_anything_starts(settings, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\nname = "hot"\nkind = "threshold"\nsensor = "temperature"\n')
    proc = workbench(settings, "run", "--rules", str(bad), "--json")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"workbench: error: rules {bad}: rule 'hot': a threshold rule needs above and/or below"
    ]


def test_down_keeps_a_stack_with_unprocessed_messages_unless_forced(tmp_path):
    """The embedded broker keeps topics in memory: stopping it with raw messages no
    processor took would drop them without a word."""
    settings = isolated_settings(tmp_path / "state")
    try:
        sent = workbench(settings, "simulate", "--machines", "2", "--duration", "5")
        assert sent.returncode == 0, sent.stderr
        refused = workbench(settings, "down")
        assert refused.returncode == 1 and "Traceback" not in refused.stderr
        assert "were not processed" in refused.stderr and "--force" in refused.stderr
        assert json.loads(workbench(settings, "status", "--json").stdout)["broker"]["running"]
        processed = workbench(settings, "process", "--idle-timeout", "3")
        assert processed.returncode == 0, processed.stderr
        assert workbench(settings, "down").returncode == 0  # nothing left to lose
    finally:
        workbench(settings, "down", "--force")


def test_a_broker_restart_mid_run_is_reported_at_once_and_simulate_fails(tmp_path):
    """The embedded broker keeps topics in memory: a restart loses what it held. The
    producer hears nothing of it (its later messages go to the topics made anew), so the
    simulation must notice by itself, while it runs, and end with the count and exit 1."""
    settings = isolated_settings(tmp_path / "state")
    try:
        assert workbench(settings, "up").returncode == 0
        broker = json.loads(workbench(settings, "status", "--json").stdout)["broker"]
        sim = subprocess.Popen(
            [WORKBENCH, "simulate", "--machines", "3", "--duration", "40", "--realtime",
             "--json"],
            env=cli_env(settings), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        lines = []
        for line in sim.stderr:  # wait until some messages are in the broker
            lines.append(line)
            if "simulated " in line and "of 40 s" in line:
                break
        gone = psutil.Process(broker["pid"])
        gone.terminate()
        gone.wait(30)
        for line in sim.stderr:  # a progress line that sees the broker away, not a sleep
            lines.append(line)
            if "waiting for the broker, which does not answer" in line:
                break
        restarted = workbench(settings, "up")
        assert restarted.returncode == 0, restarted.stderr
        lines += sim.stderr  # to the end of the simulation
        out, err = sim.stdout.read(), "".join(lines)
        sim.wait(timeout=60)
        assert any("waiting for the broker, which does not answer" in x for x in lines), err
        said = [i for i, line in enumerate(lines) if "lost topic telemetry.raw" in line]
        assert said and "ERROR" in lines[said[0]], err
        # told while the simulation went on, not at its end
        later = [line for line in lines[said[0] :] if "lost by the broker" in line]
        assert any("of 40 s of event time" in line for line in later), err
        report = json.loads(out)
        assert sim.returncode == 1 and report["lost"] > 0, (report, err)
        assert report["delivered"] == report["sent"]  # acknowledged, then lost
    finally:
        workbench(settings, "down", "--force")


def test_an_idempotent_producer_renews_itself_after_a_broker_restart(tmp_path):
    """A restarted memory broker forgets the idempotent producer's id, and librdkafka then
    holds every later message for good: the producer must replace itself, report what it
    held as failed at once, and deliver what follows."""
    from workbench.producer import RecordProducer

    settings = isolated_settings(tmp_path / "state")
    try:
        assert workbench(settings, "up").returncode == 0
        status = json.loads(workbench(settings, "status", "--json").stdout)["broker"]
        broker = kafka.Endpoint(status["address"])
        producer = RecordProducer(broker, settings.topic_raw, "r", **{"enable.idempotence": True})
        producer.connect()
        for i in range(500):
            producer.send_raw(b"m-%d" % (i % 5), b"before")
        assert producer._producer.flush(10) == 0
        gone = psutil.Process(status["pid"])
        gone.terminate()
        gone.wait(30)
        assert workbench(settings, "up").returncode == 0
        for i in range(3000):
            producer.send_raw(b"m-%d" % (i % 5), b"after")
            time.sleep(0.002)  # over ~6 s: the watch looks every 2 s
        report = producer.flush(30)
        producer.close()
        assert report.sent == 3500 and report.failed > 0, report
        # purged where they were: waiting in the queue, or sent and not yet acknowledged
        assert set(report.errors) <= {"Local: Purged in queue", "Local: Purged in flight"}, report
        assert report.delivered >= 1000 and report.lost > 0, report  # renewed, then delivered
    finally:
        workbench(settings, "down", "--force")


def test_a_clean_factory_raises_no_alert_through_its_load_changes(settings):
    """50 machines for 30 minutes without chaos change load many times (the motor current
    steps by half and back): with the default rules none of it is an alert. This seed made
    four runaway alerts on vibration, which follows the load, before runaway left vibration
    to the machine model."""
    r = workbench(settings, "run", "--machines", "50", "--duration", "30m", "--seed", "9",
                  "--chaos", "", "--json", timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["chaos"] == {} and summary["alerts"] == 0, summary["score"]
