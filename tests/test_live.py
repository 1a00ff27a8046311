"""The live control panel, driven from Python as a user would drive it in a notebook.

Runs go through the real broker and database; the widgets are real ipywidgets whose
callbacks steer the running simulation. Timing is measured with wide margins: the
assertions compare rates that differ a hundredfold, never a tight wall-clock budget.
"""

import contextlib
import dataclasses
import threading
import time

import pytest
from conftest import readings_in, run_notebook

from workbench.errors import DatabaseUnavailable
from workbench.lab.live import LiveRun
from workbench.lab.widgets import ControlPanel
from workbench.simulator.control import ChaosControl, Pace, RunProgress
from workbench.simulator.physics import FactoryConfig
from workbench.simulator.source import Simulation
from workbench.simulator.spec import SimulationSpec


def until(condition, timeout_s=20.0, what="condition"):
    """Poll ``condition`` until it is true; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def points(xs):
    return 0 if xs is None else len(xs)


@pytest.fixture
def panels():
    """Panels a test makes; any run still going at the end is stopped and waited for, so
    no thread outlives its test (and queries a stack that is going away)."""
    made = []
    yield made
    for panel in made:
        if panel.run is not None and panel.run.running:
            panel.stop()
            with contextlib.suppress(Exception):
                panel.wait(60)


def event_seconds_in(run_or_progress, wall_s):
    """Seconds of event time simulated during ``wall_s`` seconds of wall time."""
    before = run_or_progress.event_s
    time.sleep(wall_s)
    return run_or_progress.event_s - before


def test_sliders_and_toggles_steer_the_running_simulation_and_stop_reconciles(
    settings, endpoints, panels
):
    # 2 machines make 6.2 readings per tick: 200 readings/s is ~32 s of event time a second
    spec = SimulationSpec.build(machines=2, duration_s=3600, seed=1)
    panel = ControlPanel(settings, spec, endpoints.database_url, events_per_s=200,
                         refresh_s=0.3, view_s=120)  # fmt: skip
    panels.append(panel)
    assert panel.control.get("loss") == 0 and panel.sliders["loss"].disabled
    panel.start_button.click()
    run = panel.run
    assert run is not None and run.run_id and panel.start_button.disabled
    until(lambda: run.event_s > 5, what="the simulation to start")
    assert run.progress.snapshot()["dropped"] == 0

    # on at the toggle's default, then the slider sets what the simulation reads
    panel.toggles["loss"].value = True
    assert panel.control.get("loss") == panel.sliders["loss"].value > 0
    panel.sliders["loss"].value = 0.05
    assert panel.control.get("loss") == 0.05
    until(lambda: run.progress.snapshot()["dropped"] > 5, what="readings to be lost")

    # off: nothing more is lost (once the tick in hand is done); the slider keeps 0.05
    panel.toggles["loss"].value = False
    assert panel.control.get("loss") == 0 and panel.sliders["loss"].value == 0.05
    t0 = run.event_s
    until(lambda: run.event_s > t0 + 2, what="two more ticks")
    dropped = run.progress.snapshot()["dropped"]
    t1 = run.event_s
    until(lambda: run.event_s > t1 + 20, what="20 s more of event time")
    assert run.progress.snapshot()["dropped"] == dropped

    # on again: back at the remembered value, and readings are lost again
    panel.toggles["loss"].value = True
    assert panel.control.get("loss") == 0.05
    until(lambda: run.progress.snapshot()["dropped"] > dropped, what="losses to resume")

    # the live view drew this run's readings from the database meanwhile
    until(lambda: points(panel.figure.data[0].x) > 0, what="the live figure to fill")
    assert run.run_id in panel.figure.layout.title.text

    panel.stop_button.click()
    summary = panel.wait(60)
    assert run.stopped and run.phase == "done"
    assert summary.run_id == run.run_id
    assert 0 < summary.produced == run.produced < readings_in(2, 3600)
    assert summary.dropped == summary.chaos["loss"] > 5  # every loss is ground truth
    assert summary.stored + summary.deadlettered + summary.dropped == summary.produced
    assert summary.reconciled
    assert panel.progress_bar.value == 1.0 and panel.progress_bar.bar_style == "success"
    assert not panel.start_button.disabled and panel.stop_button.disabled
    assert "books close: yes" in panel.status.value


def test_rate_slider_changes_how_fast_the_run_goes(settings, endpoints, panels):
    # 2 machines, 6.2 readings per tick of 1 s: 20 readings/s is ~3 s of event time a
    # second, 6000 readings/s ~1000 s a second
    spec = SimulationSpec.build(machines=2, duration_s=100_000, seed=2)
    panel = ControlPanel(settings, spec, endpoints.database_url, events_per_s=20)
    panels.append(panel)
    panel.start()
    run = panel.run
    until(lambda: run.event_s > 0, what="the simulation to start")

    slow = event_seconds_in(run, 2.0)
    panel.rate_slider.value = 6000
    assert panel.pace.get() == pytest.approx(6000, rel=0.02)  # the log slider's own step
    fast = event_seconds_in(run, 2.0)
    panel.rate_slider.value = 20
    time.sleep(0.5)  # the tick in hand
    slow_again = event_seconds_in(run, 2.0)

    assert 1 <= slow <= 20, slow  # ~6.5 expected
    assert fast > 10 * slow, (slow, fast)  # ~300 times faster expected
    assert 1 <= slow_again <= 20, slow_again  # re-anchored: no stall, no catch-up burst

    panel.rate_toggle.value = False  # as fast as possible
    assert panel.pace.get() is None
    panel.stop()
    summary = panel.wait(60)
    assert summary.reconciled and summary.produced == run.produced


def test_a_new_pace_applies_at_once_without_a_burst_of_catch_up_ticks():
    """The simulation alone (no broker): ticks counted while the pace changes."""
    factory = FactoryConfig(machines=1, seed=3)  # 3.1 readings per 1 s tick
    sim = Simulation(factory, "pace", ChaosControl())
    pace, progress, stop = Pace(31.0), RunProgress(), threading.Event()  # 10 ticks/s
    options = {"stop": stop, "pace": pace, "progress": progress}
    thread = threading.Thread(target=sim.run, args=(lambda k, v: None, 1e6), kwargs=options)
    thread.start()
    try:
        until(lambda: progress.event_s > 0, what="the first tick")
        time.sleep(1.0)
        pace.set(3.1)  # one tick a second
        slow = event_seconds_in(progress, 3.0)
        pace.set(31.0)
        fast = event_seconds_in(progress, 1.0)
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert 1 <= slow <= 6, slow  # ~3 expected
    assert 3 <= fast <= 25, fast  # ~10 expected; a catch-up burst would be hundreds
    assert progress.finished


def test_live_run_keeps_and_reraises_the_failure_of_its_thread(settings):
    unreachable = dataclasses.replace(
        settings, database_url="postgresql://u:pw@127.0.0.1:1/x", connect_timeout_s=2.0
    )
    run = LiveRun(unreachable, SimulationSpec.build(machines=1, duration_s=5)).start()
    with pytest.raises(DatabaseUnavailable, match=r"127\.0\.0\.1:1"):
        run.wait(60)
    assert run.phase == "failed" and isinstance(run.error, DatabaseUnavailable)
    assert run.summary is None and "error" in run.status()


def test_notebook_runs_headless_with_its_parameters(kernel_env, tmp_path):
    chaos = {"spike": 0.01, "loss": 0.02, "duplicate": 0.01, "malformed": 0.005,
             "drift": 0.0, "stuck": 0.5, "burst": 0.0, "failure": 0.0, "power": 0.0,
             "latency": 0.0}  # fmt: skip
    result = run_notebook("03_live_control_panel", tmp_path, machines=2, duration_s=300,
                          seed=5, events_per_s=0.0, **chaos)  # fmt: skip
    assert result["reconciled"] is True and result["stopped_early"] is False
    assert result["event_s"] == 300
    produced = result["produced"]
    assert produced == readings_in(2, 300)  # no bursts: every reading the factory made, once
    assert result["stored"] + result["deadlettered"] + result["dropped"] == produced
    assert result["intensities_at_start"] == {k: v for k, v in chaos.items() if v > 0}
    assert result["intensities_at_end"] == result["intensities_at_start"]
    assert result["pace_events_per_s"] is None
    kinds = result["chaos"]
    assert kinds["loss"] == result["dropped"] > 0 and kinds["spike"] > 0
    assert kinds.get("stuck", 0) > 0 and "drift" not in kinds
    assert result["alerts"] == sum(result["alerts_by_rule"].values())
    assert 1 <= result["figures"] <= 3
