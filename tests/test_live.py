"""The live control panel, driven from Python as a user would drive it in a notebook.

Runs go through the real broker and database; the widgets are real ipywidgets whose
callbacks steer the running simulation. Timing is measured with wide margins: the
assertions compare rates that differ a hundredfold, never a tight wall-clock budget.
"""

import contextlib
import dataclasses
import threading
import time

import ipywidgets as w
import pandas as pd
import pytest
from conftest import isolated_settings, readings_in, run_notebook

from workbench.errors import DatabaseUnavailable
from workbench.lab.live import LiveRun
from workbench.lab.plots.signals import signal_figure
from workbench.lab.widgets import SLIDER_RANGES, ControlPanel
from workbench.simulator.control import ChaosControl, Pace, RunProgress
from workbench.simulator.physics import FactoryConfig
from workbench.simulator.source import Simulation
from workbench.simulator.spec import SimulationSpec
from workbench.stack import Stack
from workbench.stack.process import free_port


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
    panel = ControlPanel(settings, spec, events_per_s=200, refresh_s=0.3, view_s=120)
    panels.append(panel)
    assert panel.control.get("loss") == 0 and panel.sliders["loss"].disabled
    panel.start_button.click()
    run = panel.run
    assert run is not None and run.run_id and panel.start_button.disabled
    until(lambda: panel.database_url is not None, what="the run's stack")
    assert panel.database_url == endpoints.database_url  # the session's stack, attached to
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
    panel = ControlPanel(settings, spec, events_per_s=20)
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
    # a pace is for someone watching: headless, the run goes as fast as it can (at 50
    # readings/s these 3,000 readings would take a minute; at 1/s, the default factory 15 h)
    result = run_notebook("03_live_control_panel", tmp_path, machines=2, duration_s=300,
                          seed=5, events_per_s=50.0, **chaos)  # fmt: skip
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


def raw_points(panel_or_state) -> int:
    """Points of the live figure's first trace (the raw readings)."""
    return points(panel_or_state["_widget_data"][0].get("x"))


def test_a_second_start_after_the_stack_was_stopped_reads_from_the_new_stack(tmp_path, panels):
    # the notebook's way: a stack is up, a run, the last cell stops the stack, Start again
    settings = isolated_settings(tmp_path / "state")
    stack = Stack(settings)
    first_endpoints, _ = stack.up()
    try:
        spec = SimulationSpec.build(machines=1, duration_s=120, seed=7)
        panel = ControlPanel(settings, spec, refresh_s=0.2)
        panels.append(panel)
        panel.start_button.click()
        first = panel.wait(120)
        assert first.reconciled and panel.database_url == first_endpoints.database_url
        assert first.run_id in panel.figure.layout.title.text
        stack.down()
        # the new stack's database comes up elsewhere (as when its last port is taken);
        # nothing answers at the old address any more
        old_port = int(stack.postgres.last_port_path.read_text())
        new_port = free_port()
        while new_port == old_port:
            new_port = free_port()
        stack.postgres.last_port_path.write_text(f"{new_port}\n")

        panel.start_button.click()
        second = panel.wait(120)
        assert second.reconciled and second.run_id != first.run_id
        assert f":{new_port}/" in panel.database_url
        assert f":{old_port}/" in first_endpoints.database_url
        # the figure shows the second run, read from the new stack, and no failed query
        assert second.run_id in panel.figure.layout.title.text
        assert points(panel.figure.data[0].x) > 0
        assert "live view" not in panel.status.value, panel.status.value
        assert "books close: yes" in panel.status.value
    finally:
        stack.down()


def test_a_reloaded_page_gets_the_figure_as_it_is_now(settings, panels):
    spec = SimulationSpec.build(machines=1, duration_s=120, seed=8)
    panel = ControlPanel(settings, spec, refresh_s=0.2)
    panels.append(panel)
    panel.start()
    summary = panel.wait(120)
    assert points(panel.figure.data[0].x) > 0
    # what the kernel sends a page that asks for every widget's state (a reload)
    states = w.Widget.get_manager_state(widgets=[panel.figure])["state"]
    state = states[panel.figure.model_id]["state"]
    assert raw_points(state) == points(panel.figure.data[0].x)
    assert summary.run_id in state["_widget_layout"]["title"]["text"]
    # and what it sends a view that asks for the figure alone
    assert raw_points(panel.figure.get_state()) == points(panel.figure.data[0].x)


def test_markers_are_clipped_to_the_time_the_readings_cover():
    def readings(ts):
        return pd.DataFrame({"machine_id": "m-1", "sensor_type": "pressure", "ts": ts,
                             "value": 1.0, "rolling_1": 1.0, "rolling_2": 1.0})  # fmt: skip

    t0 = pd.Timestamp("2026-01-01 00:10", tz="UTC")
    ts = pd.date_range(t0, periods=601, freq="s")  # the last 10 minutes
    minute = pd.Timedelta(minutes=1)
    truth = pd.DataFrame({
        "kind": ["drift", "spike", "stuck"], "machine_id": "m-1", "sensor_type": "pressure",
        # drift reaches into the view from 7 min before; spike and stuck lie outside it
        "start_ts": [t0 - 7 * minute, t0 - 5 * minute, t0 + 12 * minute],
        "end_ts": [t0 + 2 * minute, t0 - 5 * minute, t0 + 13 * minute],
        "magnitude": 1.0, "detail": None,
    })  # fmt: skip
    alerts = pd.DataFrame({
        "rule": ["r-in", "r-before"], "machine_id": "m-1", "sensor_type": "pressure",
        "start_ts": [t0 - 4 * minute, t0 - 9 * minute],
        "opened_ts": [t0 - 3 * minute, t0 - 8 * minute],
        "closed_ts": [t0 + minute, t0 - 6 * minute], "updated_ts": [t0 + minute, t0 - 6 * minute],
    })  # fmt: skip
    fig = signal_figure(readings(ts), "m-1", "pressure", alerts, truth)
    lo, hi = ts[0].tz_localize(None), ts[-1].tz_localize(None)
    xs = [pd.Timestamp(x) for trace in fig.data for x in trace.x]
    xs += [pd.Timestamp(v) for shape in fig.layout.shapes for v in (shape.x0, shape.x1)]
    assert min(xs) == lo and max(xs) == hi  # nothing stretches the axis
    names = [trace.name for trace in fig.data]
    assert "injected drift" in names and "injected spike" not in names
    assert "injected stuck" not in names
    alert_trace = next(trace for trace in fig.data if trace.name == "alerts")
    assert len(alert_trace.x) == 1 and "r-in" in alert_trace.hovertext[0]
    drift = next(trace for trace in fig.data if trace.name == "injected drift")
    assert pd.Timestamp(drift.x[0]) == lo  # at the edge of the view, and says when it began
    assert "2026-01-01 00:03:00" in drift.hovertext[0]

    # a whole run's readings (a static report) keep every marker where it happened
    whole = pd.date_range(t0 - 10 * minute, t0 + 15 * minute, freq="s")
    fig = signal_figure(readings(whole), "m-1", "pressure", alerts, truth)
    names = [trace.name for trace in fig.data]
    assert {"injected drift", "injected spike", "injected stuck", "alerts"} <= set(names)
    spike = next(trace for trace in fig.data if trace.name == "injected spike")
    assert pd.Timestamp(spike.x[0]) == (t0 - 5 * minute).tz_localize(None)


def test_toggles_say_on_or_off_and_units_are_written_out(tmp_path):
    settings = isolated_settings(tmp_path)
    spec = SimulationSpec.build(machines=1, duration_s=60, chaos={"spike": 0.01})
    panel = ControlPanel(settings, spec)
    spike, loss = panel.toggles["spike"], panel.toggles["loss"]
    assert (spike.description, spike.button_style) == ("spike: on", "success")
    assert (loss.description, loss.button_style) == ("loss: off", "")
    assert spike.icon != loss.icon
    spike.value, loss.value = False, True
    assert (spike.description, spike.button_style) == ("spike: off", "")
    assert (loss.description, loss.button_style) == ("loss: on", "success")
    rate = panel.rate_toggle
    assert rate.description == "paced: off"
    rate.value = True
    assert (rate.description, rate.button_style) == ("paced: on", "success")
    # each slider's unit in full in a label of its own, beside it; no description that a
    # fixed description width cuts ("episodes per machine-min…")
    for kind, (_top, _step, _fmt, unit) in SLIDER_RANGES.items():
        assert panel.sliders[kind].description == ""
        assert panel.units[kind].value == unit
        row = next(box for box in panel.widget.children
                   if isinstance(box, w.HBox) and panel.sliders[kind] in box.children)  # fmt: skip
        assert panel.units[kind] in row.children
    assert panel.rate_slider.description == "" and "per second" in panel.units["rate"].value


def test_the_legend_sits_under_the_plot_clear_of_the_title():
    fig = signal_figure(pd.DataFrame(), "m-1", "pressure", title="a long title " * 8)
    legend, title = fig.layout.legend, fig.layout.title
    # at the bottom of the figure: a legend that wraps grows away from the title
    assert (legend.yref, legend.y, legend.yanchor) == ("container", 0, "bottom")
    assert (title.yref, title.y, title.yanchor) == ("container", 1, "top")
    assert title.automargin
