"""`workbench db digest`: digests of a run's stored results that do not depend on the run id,
on the order or batches rows were written in, or on the database (PostgreSQL or SQLite), and
that change when any digested value does."""

from __future__ import annotations

import hashlib
import json
import uuid

import numpy as np
import pytest
from conftest import isolated_settings
from test_cli import workbench

from workbench.sinks import open_sink
from workbench.sinks.columns import WriteBatch
from workbench.sinks.digest import EMPTY, UnknownRun, digest
from workbench.sinks.postgres import create_schema

T0 = 1_767_225_600_000


def objects(values) -> np.ndarray:
    values = list(values)
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = v
    return out


def run_batch(run: str, n: int = 300) -> dict[str, dict]:
    """A run's results as table columns: readings of 3 machines x 2 sensors, final and
    provisional windows, alerts and sensor statistics."""
    rng = np.random.default_rng(11)
    i = np.arange(n)
    machine = objects(f"m-{k}" for k in i % 3)
    sensor = objects(("temperature", "vibration")[k] for k in (i // 3) % 2)
    value = np.round(rng.normal(50, 5, n), 3)
    value[i % 17 == 5] = np.nan
    value[7] = -0.0  # SQLite keeps no negative zero: digested as 0.0 in both
    w = 8
    return {
        "readings": {
            "run_id": objects([run] * n), "machine_id": machine, "sensor_type": sensor,
            "seq": i // 6, "ts": T0 + (i // 6) * 1000, "value": value,
            "status_code": (i % 4).astype(np.int32), "late": i % 13 == 0,
            "score": rng.random(n) / 3, "rolling_1": value * 1.0000001, "rolling_2": value / 3,
        },
        "window_stats": {
            "run_id": objects([run] * w), "machine_id": objects(f"m-{k % 3}" for k in range(w)),
            "sensor_type": objects(["temperature"] * w),
            "width_s": np.array([60, 60, 60, 300, 60, 60, 300, 60], np.int32),
            "window_start": T0 + 60_000 * np.array([0, 0, 0, 0, 1, 1, 0, 2]),
            "window_end": T0 + 60_000 * np.array([1, 1, 1, 5, 2, 2, 5, 3]),
            "count": np.arange(10, 10 + w, dtype=np.int32), "nulls": np.ones(w, np.int32),
            "late": np.zeros(w, np.int32), "mean": rng.normal(50, 1, w),
            "min": np.full(w, 40.0), "max": np.full(w, 60.0), "stddev": np.full(w, np.nan),
            "quantile": np.full(w, 59.0),
            "final": np.array([True] * 6 + [False, False]),
            "revision": np.array([0, 0, 1, 0, 0, 3, -1, -1], np.int32),
        },
        "alerts": {
            "run_id": objects([run] * 2), "alert_id": objects(["hot/m-1/temperature/0",
                                                               "flat/m-2/-/0"]),
            "rule": objects(["hot", "flat"]), "kind": objects(["threshold", "flatline"]),
            "severity": objects(["critical", "warning"]), "state": objects(["closed", "open"]),
            "machine_id": objects(["m-1", "m-2"]), "sensor_type": objects(["temperature", None]),
            "start_ts": np.array([T0, T0 + 5000]), "opened_ts": np.array([T0 + 3000, T0 + 9000]),
            "updated_ts": np.array([T0 + 20_000, T0 + 9000]),
            "closed_ts": np.array([T0 + 20_000, np.nan]), "peak": np.array([61.5, np.nan]),
            "breaches": np.array([6, 3], np.int32), "detects": objects([["failure"], []]),
        },
        "sensor_stats": {
            "run_id": objects([run] * 2), "machine_id": objects(["m-0", "m-1"]),
            "sensor_type": objects(["temperature"] * 2), "n": np.array([50, 50]),
            "nulls": np.array([3, 2]), "late": np.array([4, 4]), "mean": np.array([50.1, 49.9]),
            "std": np.array([5.0, np.nan]), "ewma": np.array([50.0, 50.0]),
            "ewstd": np.array([1.0, 1.0]), "quantile": np.array([58.0, 58.5]),
            "baseline": np.array([50.0, 50.0]), "score": np.array([0.1, 0.2]),
            "drifts": np.array([0, 1], np.int32), "last_ts": np.array([T0 + 49_000, np.nan]),
        },
    }  # fmt: skip


def write(url: str, tables: dict[str, dict], pieces: int = 1, seed: int | None = None) -> None:
    """Write the tables in ``pieces`` batches, rows shuffled by ``seed`` (None: in order)."""
    with open_sink(url) as sink:
        for piece in range(pieces):
            batch = {}
            for name, cols in tables.items():
                n = len(next(iter(cols.values())))
                order = np.arange(n) if seed is None else np.random.default_rng(seed).permutation(n)
                part = order[piece::pieces]
                batch[name] = {k: np.asarray(v)[part] for k, v in cols.items()}
            sink.write(WriteBatch(**batch))


def changed(tables: dict[str, dict], table: str, column: str, row: int, value) -> dict:
    out = {
        name: {k: np.array(v, copy=True) for k, v in cols.items()} for name, cols in tables.items()
    }
    out[table][column][row] = value
    return out


@pytest.fixture
def pg(endpoints) -> str:
    create_schema(endpoints.database_url)
    return endpoints.database_url


def new_run() -> str:
    return f"digest-{uuid.uuid4().hex[:8]}"


def test_the_same_results_under_two_run_ids_in_any_order_give_the_same_digests(pg, tmp_path):
    a, b, c = new_run(), new_run(), new_run()
    write(pg, run_batch(a))
    write(pg, run_batch(b), pieces=4, seed=3)  # other batches, another order
    edge = f"sqlite:///{tmp_path / 'edge.db'}"
    write(edge, run_batch(c), pieces=3, seed=5)
    first = digest(pg, a)
    assert digest(pg, b) == first
    assert digest(edge, c) == first  # PostgreSQL == SQLite
    assert first.late == int(np.sum(np.arange(300) % 13 == 0))
    assert EMPTY not in (first.readings, first.windows, first.alerts, first.stats)


def test_a_window_digest_ignores_revisions_and_open_windows(tmp_path):
    url = f"sqlite:///{tmp_path / 'edge.db'}"
    base = run_batch("r")
    write(url, base)
    before = digest(url, "r")
    later = changed(base, "window_stats", "revision", 0, 5)  # corrected more often
    later = changed(later, "window_stats", "count", 7, 99)  # an open window moved on
    write(url, {"window_stats": later["window_stats"]})
    assert digest(url, "r") == before


@pytest.mark.parametrize(
    ("table", "column", "row", "value", "digests"),
    [
        ("readings", "late", 1, True, {"readings", "late"}),
        ("readings", "value", 2, 50.000000000001, {"readings"}),
        ("readings", "value", 3, np.nan, {"readings"}),  # a value against NULL
        ("readings", "score", 4, 0.0, {"readings"}),
        ("window_stats", "mean", 1, 1.5, {"windows"}),
        ("window_stats", "window_end", 4, T0 + 1, {"windows"}),
        ("alerts", "breaches", 0, 7, {"alerts"}),
        ("alerts", "closed_ts", 1, T0 + 30_000, {"alerts"}),
        ("sensor_stats", "std", 1, 4.0, {"stats"}),
    ],
)
def test_one_changed_value_changes_its_digest_and_only_that(tmp_path, table, column, row, value,
                                                            digests):  # fmt: skip
    url = f"sqlite:///{tmp_path / 'edge.db'}"
    write(url, run_batch("r"))
    write(url, changed(run_batch("other"), table, column, row, value))
    same, diff = digest(url, "r").to_dict(), digest(url, "other").to_dict()
    assert {k for k in same if same[k] != diff[k]} == digests


def test_digest_is_the_sha256_of_the_rows_as_canonical_json(tmp_path):
    url = f"sqlite:///{tmp_path / 'edge.db'}"
    alerts = run_batch("r")["alerts"]
    write(url, {"alerts": alerts})
    rows = [
        ["flat/m-2/-/0", "flat", "flatline", "warning", "open", "m-2", None,
         (T0 + 5000) * 1000, (T0 + 9000) * 1000, (T0 + 9000) * 1000, None, None, 3, []],
        ["hot/m-1/temperature/0", "hot", "threshold", "critical", "closed", "m-1",
         "temperature", T0 * 1000, (T0 + 3000) * 1000, (T0 + 20_000) * 1000,
         (T0 + 20_000) * 1000, 61.5, 6, ["failure"]],
    ]  # fmt: skip
    text = json.dumps(rows, separators=(",", ":"))
    assert digest(url, "r").alerts == hashlib.sha256(text.encode()).hexdigest()
    assert digest(url, "r").readings == EMPTY


def test_an_unknown_run_is_an_error(tmp_path):
    url = f"sqlite:///{tmp_path / 'edge.db'}"
    write(url, run_batch("r"))
    with pytest.raises(UnknownRun, match="unknown run id 'nope'"):
        digest(url, "nope")


def test_the_cli_prints_the_digests_and_refuses_an_unknown_run(tmp_path):
    settings = isolated_settings(tmp_path / "state")  # no stack: a SQLite file only
    url = f"sqlite:///{tmp_path / 'edge.db'}"
    write(url, run_batch("edge-run"))
    proc = workbench(settings, "-q", "db", "digest", "--run-id", "edge-run", "--database", url,
                     "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert list(data) == ["readings", "windows", "alerts", "stats", "predictions", "late"]
    assert data == digest(url, "edge-run").to_dict()
    text = workbench(settings, "db", "digest", "--run-id", "edge-run", "--sink", url)
    assert text.returncode == 0 and text.stdout.splitlines()[1].split() == [
        "readings", data["readings"],
    ]  # fmt: skip
    unknown = workbench(settings, "db", "digest", "--run-id", "no-such", "--database", url)
    assert unknown.returncode == 1 and unknown.stdout == ""
    assert unknown.stderr.strip().splitlines() == [
        f"workbench: error: unknown run id 'no-such': {url} has no readings, windows, alerts "
        "or statistics of it"
    ]


def test_the_cli_digest_of_a_postgresql_run(settings, pg):
    run = new_run()
    write(pg, run_batch(run))
    proc = workbench(settings, "db", "digest", "--run-id", run, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == digest(pg, run).to_dict()
    missing = workbench(settings, "db", "digest", "--run-id", new_run())
    assert missing.returncode == 1 and "unknown run id" in missing.stderr
