"""Every notebook over a grid of its documented parameter ranges: no valid combination fails,
and each run records its results (None where a figure cannot exist, never a crash).

A parameter's documented range is the ``[LO .. HI]`` or ``[a | b]`` at the end of its
comment in the ``parameters`` cell (``workbench.lab.report.inspect``); ``workbench report
NAME -p ...`` refuses a value outside it. The grid is derived from those ranges:

* the default lane runs each notebook's cheap corners: the low corner of every range (one
  machine, the shortest duration: windows that barely close, no alerts, no faults), every
  chaos intensity at 0 and at its maximum on a small factory, each choice value somewhere,
  a second seed, and unlabelled, labelled-but-not-in-these-rows and whole labelled files
  for notebook 06 (about three minutes of CPU);
* the full sweep (``scripts/sweep.sh``, or ``WORKBENCH_SWEEP=1``) adds the expensive
  corners: the high corner of every notebook, every choice value on its own, every shared
  data file whole.

The shared data sets are read from ``../shared/data`` beside the checkout.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import NOTEBOOKS, run_notebook

from workbench.lab.report import Notebook, inspect

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FULL = bool(os.environ.get("WORKBENCH_SWEEP"))
full_sweep = pytest.mark.skipif(not FULL, reason="the full sweep is opt-in: scripts/sweep.sh")

#: Chaos intensities of the simulator, by the name the notebooks give them.
CHAOS = ("spike", "drift", "stuck", "failure", "power", "burst", "loss", "duplicate",
         "malformed", "latency")  # fmt: skip


@functools.cache
def notebook(name: str) -> Notebook:
    return inspect(NOTEBOOKS / f"{name}.ipynb")


def corner(name: str, side: str, **overrides: Any) -> dict[str, Any]:
    """Every ranged number of notebook ``name`` at its ``low`` or ``high`` bound (of the
    default's type: ints stay ints), then ``overrides``; choices keep their defaults."""
    values = {}
    for p in notebook(name).parameters.values():
        bound = p.low if side == "low" else p.high
        if bound is not None and p.choices is None:
            number = isinstance(p.default, float) or isinstance(bound, float)
            values[p.name] = float(bound) if number else int(bound)
    values.update(overrides)
    check(name, values)
    return values


def chaos_at(name: str, side: str) -> dict[str, Any]:
    """Every chaos intensity of notebook ``name`` at its low (0) or high bound."""
    params = notebook(name).parameters
    return {k: getattr(params[k], side) for k in CHAOS if k in params}


def check(name: str, values: dict[str, Any]) -> None:
    """The grid stays inside the documented ranges: what `workbench report` would accept."""
    params = notebook(name).parameters
    for key, value in values.items():
        params[key].check(value)


def ids(grid: list[tuple[str, str, dict[str, Any]]]) -> list[str]:
    return [f"{name[:2]}-{case}" for name, case, _ in grid]


def run(name: str, tmp_path: Path, values: dict[str, Any]) -> dict[str, Any]:
    check(name, values)
    return run_notebook(name, tmp_path, **values)


# --- what every run must have recorded ----------------------------------------------------


def books_close(got: dict[str, Any]) -> None:
    assert got["run_id"] and got["produced"] > 0
    assert got["stored"] <= got["produced"] + got.get("duplicates", 0)


def check_quickstart(got: dict[str, Any], values: dict[str, Any]) -> None:
    books_close(got)
    assert got["produced"] == got["stored"] == got["rows_read_back"]
    assert got["windows_final"] >= values["machines"] * 5  # one window per sensor at least


def check_chaos(got: dict[str, Any], values: dict[str, Any]) -> None:
    books_close(got)
    assert got["reconciled"] is True
    faults = sum(got["chaos"].get(k, 0) for k in ("spike", "drift", "stuck", "failure", "power"))
    assert got["faults_scored"] <= faults
    detected = sum(s["detected"] for s in got["score"].values())
    assert got["faults_missed"] == got["faults_scored"] - detected >= 0
    assert got["false_alarms"] >= 0
    if not any(values.get(k) for k in CHAOS):
        assert got["chaos"] == {} and got["faults_scored"] == 0 and got["faults_missed"] == 0


def check_live(got: dict[str, Any], values: dict[str, Any]) -> None:
    assert got["reconciled"] is True and got["stopped_early"] is False
    assert got["event_s"] == values["duration_s"]
    assert got["stored"] + got["deadlettered"] + got["dropped"] == got["produced"] > 0
    assert got["alerts"] == sum(got["alerts_by_rule"].values())
    assert 1 <= got["figures"] <= 3  # the busiest sensors, or the one in the dropdowns


def check_spc(got: dict[str, Any], values: dict[str, Any]) -> None:
    assert got["run_id"] and got["series"] >= got["series_charted"]
    assert got["centre"] == values.get("centre", "moving")
    if got["charted"] is None:  # nothing could be charted: every figure is None, not a crash
        assert got["points"] == 0 and got["violations"] is None and got["cpk"] is None
        return
    machine, sensor = got["charted"].split("/")
    assert machine.startswith("m-") and got["points"] > 0
    assert sensor in notebook("04_spc").parameters["sensor"].choices
    v = got["violations"]
    assert v["any"] <= got["points"] and all(n <= v["any"] for k, n in v.items() if k != "any")
    cap = got["capability"]
    if cap is not None:  # Cpk only for a process in control, Ppk always (raw readings)
        assert (cap["cpk"] is not None) == cap["stable"] and cap["ppk"] is not None
        assert got["cpk"] == cap["cpk"]
    fixed = got["violations_fixed_centre"]
    assert fixed is None or fixed["any"] <= got["points"]
    assert (got["xbar_violations"] is None) == (got["subgroups"] == 0)
    caught = got["faults_caught"]
    assert 0 <= caught["flagged"] <= caught["episodes"]
    share = got["violations_in_faults"]
    assert share is None or 0 <= share <= 1


def check_quality(got: dict[str, Any], values: dict[str, Any]) -> None:
    assert got["books_close"] is True and got["produced"] > 0
    q = got["quality"]
    assert q["duplicates_in_database"] == 0 and 0 <= q["measured_loss_rate"] <= 1
    assert 1 <= got["runs_checked"] <= values["runs_to_check"]
    if not values.get("loss"):
        assert got["dropped"] == 0 and q["injected_loss_rate"] == 0


def check_health(got: dict[str, Any], values: dict[str, Any]) -> None:
    books_close(got)
    scores = got["health_by_machine"]
    assert got["machines"] == got["saved"] == len(scores) == values["machines"]
    assert sum(got["bands"].values()) == len(scores) and got["health_min"] == min(scores.values())
    assert all(0 <= s <= 100 for s in scores.values())
    assert got["recent_failure_alerts"] <= got["failure_alerts"]
    if not values.get("failure"):  # no failure injected: none in the ground truth
        assert got["failed_machines"] == [] and got["failed_machines_score"] is None


def check_real(got: dict[str, Any], values: dict[str, Any]) -> None:
    assert got["reconciled"] is True and got["rows"] > 0
    assert got["produced"] + got["bad_rows"] == got["stored"] + got["deadlettered"]
    if values.get("limit"):
        assert got["rows"] <= values["limit"]
    bench = got["benchmark"]
    if got["labels"] == 0:  # no labelled event in the rows replayed: nothing scored
        assert got["score"] == {} and got["label_events"] == [] and got["by_rule"] == []
    else:
        assert got["score"]["anomaly"]["faults"] == got["labels"] == len(got["label_events"])
        assert got["score"]["anomaly"]["alerts"] == got["alerts"]
    if "anomaly-free" in got["file"]:  # no labels at all: the benchmark scores are None
        assert bench["f1"] is None and bench["nab"]["standard"] is None


def check_retrain(got: dict[str, Any], values: dict[str, Any]) -> None:
    if got.get("skipped"):  # too few stored runs (or faults): it said so, recorded no figures
        assert values.get("source") != "factory" and got["new"] is got["promoted"] is None
        return
    runs, policy = got["runs"], values.get("promote", "if-better")
    assert len(runs["train"]) == values.get("runs", 3) and runs["holdout"] not in runs["train"]
    if values.get("source") == "factory":
        assert runs["made"] == [*runs["train"], runs["holdout"]]
    assert got["promoted"] is {"always": True, "never": False}.get(policy, got["promoted"])
    promoted = got["versions"]["in_use"] == got["versions"]["new"]
    assert promoted is got["promoted"] and got["in_use"] == (got["new"] if promoted else got["old"])


CHECKS = {
    "01_quickstart": check_quickstart,
    "02_chaos_experiment": check_chaos,
    "03_live_control_panel": check_live,
    "04_spc": check_spc,
    "05_data_quality": check_quality,
    "08_machine_health": check_health,
    "06_real_data": check_real,
    "09_retrain": check_retrain,
}


# --- the cheap grid -------------------------------------------------------------------------


def cheap_grid() -> list[tuple[str, str, dict[str, Any]]]:
    """(notebook, case, values): the corners that cost seconds each."""
    return [
        ("01_quickstart", "low corner", corner("01_quickstart", "low")),
        ("02_chaos_experiment", "low corner, no chaos", corner("02_chaos_experiment", "low")),
        ("02_chaos_experiment", "chaos at max",
         corner("02_chaos_experiment", "low", machines=2, duration_s=120, examples_per_kind=3,
                **chaos_at("02_chaos_experiment", "high"))),
        ("03_live_control_panel", "low corner, no chaos, unpaced",
         corner("03_live_control_panel", "low")),
        ("04_spc", "low corner, battery, fixed centre, nelson",
         corner("04_spc", "low", sensor="battery", centre="fixed", rule_set="nelson")),
        ("04_spc", "duration 300 (issue 15), pressure",
         {"duration_s": 300, "sensor": "pressure", "seed": 11}),
        ("05_data_quality", "low corner, no chaos", corner("05_data_quality", "low")),
        ("05_data_quality", "chaos at max",
         corner("05_data_quality", "low", machines=2, duration_s=120,
                **chaos_at("05_data_quality", "high"))),
        ("08_machine_health", "low corner, no chaos", corner("08_machine_health", "low")),
        ("08_machine_health", "chaos at max, 2 min recent",
         corner("08_machine_health", "low", machines=2, duration_s=600, recent_min=2,
                **chaos_at("08_machine_health", "high"))),
        ("06_real_data", "unlabelled (SKAB anomaly-free)",
         {"dataset": "skab/anomaly-free/anomaly-free.csv", "limit": 1500}),
        ("06_real_data", "labelled, no label in the rows (smoke), re-timed",
         {"dataset": "smoke", "limit": 300, "timestamps": "now", "speed": 100.0}),
        ("06_real_data", "one row (NAB)", {"dataset": "nab", "limit": 1}),
        ("09_retrain", "low corner, factory runs, never promoted",
         corner("09_retrain", "low", source="factory", promote="never", model="sweep-retrain")),
    ]  # fmt: skip


@pytest.mark.parametrize(("name", "case", "values"), cheap_grid(), ids=ids(cheap_grid()))
def test_notebook_corner_runs_and_records_its_results(kernel_env, tmp_path, name, case, values):
    got = run(name, tmp_path, values)
    CHECKS[name](got, values)


def test_performance_notebook_low_corner_records_its_figures(kernel_env, tmp_path):
    values = corner("07_performance", "low", parts="simulator")
    got = run("07_performance", tmp_path, values)
    assert got["parts"] == ["simulator"] and got["simulator_produce_eps"] > 0
    assert got["peak_rss_mb"] > 0 and "processor_ratio" not in got
    assert {s["section"] for s in got["stages"]} == {"simulator"}


def test_the_grid_covers_every_range_and_choice():
    """Every ranged parameter of every notebook is at its low bound in some run of the
    grid (the cheap one, or the full one for what is costly), and every choice value is
    run: a range added to a notebook is swept without touching this file."""
    grid = cheap_grid() + full_grid()
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        runs = [v for n, _, v in grid if n == path.stem]
        for p in inspect(path).parameters.values():
            if p.choices:
                run_values = {v.get(p.name, p.default) for v in runs}
                assert run_values >= set(p.choices), (path.stem, p.name)
            elif p.low is not None:
                assert any(v.get(p.name) == p.low for v in runs), (path.stem, p.name, "low")
                assert any(v.get(p.name) == p.high for v in runs), (path.stem, p.name, "high")


# --- the full sweep (opt-in) ----------------------------------------------------------------


def shared_files() -> list[str]:
    """Every CSV data file in ../shared/data, relative to it."""
    return sorted(str(p.relative_to(DATA)) for p in DATA.rglob("*.csv"))


def full_grid() -> list[tuple[str, str, dict[str, Any]]]:
    """(notebook, case, values): the expensive corners and every choice on its own."""
    grid = []
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        name = path.stem
        grid.append((name, "high corner", corner(name, "high")))
        for p in notebook(name).parameters.values():
            for choice in p.choices or ():
                grid.append((name, f"{p.name}={choice}", {p.name: choice}))
    grid += [("06_real_data", f"file {f}", {"dataset": f}) for f in shared_files()]
    grid += [
        ("01_quickstart", "second seed", corner("01_quickstart", "low", machines=2, seed=12345)),
        ("02_chaos_experiment", "high corner, no chaos",
         corner("02_chaos_experiment", "high", **chaos_at("02_chaos_experiment", "low"))),
        ("03_live_control_panel", "high corner unpaced",
         corner("03_live_control_panel", "high", events_per_s=0.0)),
        ("04_spc", "low corner, second seed", corner("04_spc", "low", seed=99)),
        ("04_spc", "no chaos, baseline longer than the run, vibration",
         corner("04_spc", "low", machines=2, duration_s=120, baseline_s=600, bucket_s=60,
                chaos={}, sensor="vibration")),
        ("05_data_quality", "high corner, no chaos",
         corner("05_data_quality", "high", **chaos_at("05_data_quality", "low"))),
        ("06_real_data", "high corner, smoke",
         {"dataset": "smoke", "limit": 100000, "speed": 100.0, "timestamps": "now"}),
        ("06_real_data", "file ends inside its fault (SKAB other/1), slowed",
         {"dataset": "skab/other/1.csv", "timestamps": "now", "speed": 0.1}),
        ("07_performance", "low corner", corner("07_performance", "low")),
    ]  # fmt: skip
    return grid


FULL_GRID = full_grid() if FULL else []


@full_sweep
@pytest.mark.parametrize(("name", "case", "values"), FULL_GRID, ids=ids(FULL_GRID))
def test_full_sweep(kernel_env, tmp_path, name, case, values):
    got = run(name, tmp_path, values)
    if name in CHECKS:
        CHECKS[name](got, values)
    else:
        assert got["peak_rss_mb"] > 0 and got["stages"]
