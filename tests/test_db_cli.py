"""`workbench db counts`: rows of one run per table, against PostgreSQL and SQLite; and the
interface later checks rely on: the same run (id and seed) twice leaves the same counts."""

from __future__ import annotations

import json
import sqlite3

from conftest import isolated_settings, readings_in
from test_cli import workbench

from workbench.runs import COUNTED_TABLES, table_counts
from workbench.sinks.sqlite import SqliteSink

T0 = 1_767_225_600_000


def counts(settings, *args: str) -> dict:
    proc = workbench(settings, "-q", "db", "counts", *args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_the_same_run_twice_with_the_same_id_and_seed_leaves_the_same_counts(settings):
    # the standard scenario has every kind of fault: malformed messages (dead letters),
    # duplicates, late readings, alerts, ground truth
    run = ["run", "--scenario", "standard", "--duration", "60", "--seed", "7",
           "--run-id", "db-twice", "--json"]  # fmt: skip
    first = workbench(settings, *run)
    assert first.returncode == 0, first.stderr
    once = counts(settings, "--run-id", "db-twice")
    assert once["run_id"] == "db-twice" and once["found"] is True
    assert list(once["tables"]) == list(COUNTED_TABLES)
    summary = json.loads(first.stdout)
    t = once["tables"]
    assert t["runs"] == 1 and t["readings"] == summary["stored"]
    assert t["dead_letters"] == summary["deadlettered"] > 0
    assert t["chaos_events"] > 0 and t["alerts"] == summary["alerts"] > 0
    assert t["window_stats"] >= summary["windows"] > 0 and t["sensor_stats"] > 0

    second = workbench(settings, *run)
    assert second.returncode == 0, second.stderr  # the books close again
    # and the run ends at once: the processor acknowledges an end it has seen before (it
    # waited out the 60 s stall timeout, then warned)
    assert "windows not all final" not in second.stderr
    assert counts(settings, "--run-id", "db-twice") == once
    again = json.loads(second.stdout)
    for key in ("produced", "stored", "deadlettered", "late", "alerts", "windows", "sha256"):
        assert again[key] == summary[key], key


def test_an_unknown_run_counts_zero_with_a_warning(settings):
    proc = workbench(settings, "db", "counts", "--run-id", "no-such-run", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "run_id": "no-such-run",
        "found": False,
        "tables": dict.fromkeys(COUNTED_TABLES, 0),
    }
    assert "run no-such-run: no rows in any table" in proc.stderr


def test_counts_of_a_sqlite_file_as_text_and_json(settings, tmp_path):
    url = f"sqlite:///{tmp_path / 'edge.db'}"
    rows = [("edge", "m-1", "pressure", i, T0 + i * 1000, 1.0, 0, False, None, None, None)
            for i in range(5)]  # fmt: skip
    with SqliteSink(url) as sink:
        sink.write(readings=rows, dead_letters=[("raw", 0, 1, "edge", "bad", None, b"x")])
    assert table_counts(url, "edge").tables == dict.fromkeys(COUNTED_TABLES, 0) | {
        "readings": 5,
        "dead_letters": 1,
    }
    data = counts(settings, "--run-id", "edge", "--database", url)
    assert data["found"] is True and data["tables"]["readings"] == 5
    text = workbench(settings, "db", "counts", "--run-id", "edge", "--sink", url)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0] == f"run edge in {url}" and len(lines) == 1 + len(COUNTED_TABLES)
    assert lines[2].split() == ["readings", "5"]


def test_counts_of_a_missing_sqlite_file_is_one_line_and_creates_nothing(settings, tmp_path):
    missing = tmp_path / "typo.db"
    proc = workbench(
        settings, "db", "counts", "--run-id", "x", "--database", f"sqlite:///{missing}"
    )
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"workbench: error: cannot reach the database at sqlite:///{missing}: "
        f"no such file {missing}"
    ]
    assert not missing.exists()


def test_counts_after_an_edge_run_match_the_file(settings, endpoints, tmp_path):
    """`workbench simulate` + `workbench process --sink sqlite:///...`, then the counts of the
    file agree with SQL over it (the runs row lives in PostgreSQL, where simulate put it)."""
    db = tmp_path / "edge.db"
    sim = workbench(settings, "simulate", "--machines", "2", "--duration", "30", "--json")
    assert sim.returncode == 0, sim.stderr
    run_id = json.loads(sim.stdout)["run_id"]
    proc = workbench(settings, "process", "--sink", f"sqlite:///{db}", "--idle-timeout", "3")
    assert proc.returncode == 0, proc.stderr
    data = counts(settings, "--run-id", run_id, "--database", f"sqlite:///{db}")
    assert data["tables"]["readings"] == readings_in(2, 30)
    assert data["tables"]["runs"] == 0  # the processor does not register runs
    with sqlite3.connect(db) as conn:
        windows = conn.execute("SELECT count(*) FROM window_stats WHERE final").fetchone()[0]
    assert data["tables"]["window_stats"] == windows > 0
    assert counts(settings, "--run-id", run_id)["tables"]["runs"] == 1


def test_runs_that_each_start_their_own_stack_store_everything_and_count_the_same(tmp_path):
    """Every `workbench run` on a machine with no stack running starts a new embedded broker
    (topics in memory) against the same PostgreSQL (data on disk), whose checkpoints point
    into the previous broker's logs: they must not make the processor skip the new run."""
    settings = isolated_settings(tmp_path / "state")
    run = ["run", "--machines", "3", "--duration", "20", "--seed", "2", "--json"]
    first = workbench(settings, *run, "--run-id", "fresh-a")
    assert first.returncode == 0, first.stderr
    once = counts(settings, "--run-id", "fresh-a")
    other = workbench(settings, *run, "--run-id", "fresh-b")
    assert other.returncode == 0, other.stderr  # before: 0 readings stored, books open
    assert json.loads(other.stdout)["stored"] == readings_in(3, 20)
    again = workbench(settings, *run, "--run-id", "fresh-a")
    assert again.returncode == 0, again.stderr
    assert "not all final" not in again.stderr
    assert counts(settings, "--run-id", "fresh-a") == once
    status = json.loads(workbench(settings, "status", "--json").stdout)
    assert not status["broker"]["running"] and not status["database"]["running"]
