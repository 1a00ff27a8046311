"""The live control panel: sliders that steer a running simulation, and a live plot of it.

:class:`ControlPanel` puts together, for one factory (a
:class:`~workbench.simulator.spec.SimulationSpec`):

* a slider and an on/off toggle for every chaos injector, bound to a
  :class:`~workbench.simulator.control.ChaosControl` that the simulation reads every tick,
  so a slider move changes the running simulation from its next tick on (off keeps the
  slider's value, and on restores it); a toggle reads ``spike: on`` (green) or
  ``spike: off`` (grey), and the slider's unit is written out beside it;
* an event-rate slider (readings per wall second, with a toggle for "as fast as
  possible") bound to a :class:`~workbench.simulator.control.Pace`;
* Start and Stop buttons, a progress bar and a status line;
* machine and sensor dropdowns, and a plotly ``FigureWidget`` with that sensor's raw
  readings, the processor's rolling means, alerts and injected faults.

The run itself is a :class:`~workbench.lab.live.LiveRun` in a background thread, so the
kernel stays idle and handles widget events while it goes on. A second background thread
refreshes the progress display and the figure about once a second, each time querying
only the last ``view_s`` seconds of event time of one machine and sensor (and the run's
alerts and ground truth every few refreshes), never the whole run. It queries the database
of the stack the run uses, known once the run brought it up: a Start after the stack was
stopped starts a new one (perhaps on other ports), and the figure follows it. A page
reloaded in the browser draws the figure as it is now (:class:`LiveFigure`).

Every widget is an attribute, so a test or a script drives the panel from Python::

    panel.sliders["spike"].value = 0.02   # the running simulation's spike probability
    panel.toggles["spike"].value = False  # off; True switches it back on at 0.02
    panel.rate_slider.value = 500         # readings per wall second
    panel.start_button.click()
"""

from __future__ import annotations

import datetime as dt
import html
import logging
import threading
import warnings
from collections.abc import Iterable
from typing import Any

import ipywidgets as w
import pandas as pd
import plotly.graph_objects as go

from workbench import lab
from workbench.config import Settings
from workbench.job import RunSummary
from workbench.lab.live import LiveRun
from workbench.lab.plots.signals import signal_figure, update_signal_figure
from workbench.simulator.control import (
    DELAY,
    PER_MACHINE_MINUTE,
    PER_READING,
    ChaosControl,
    Pace,
)
from workbench.simulator.physics import Factory
from workbench.simulator.spec import SimulationSpec
from workbench.simulator.truth import FAULT_KINDS

log = logging.getLogger(__name__)

#: Slider range and step of each sort of intensity: (max, step, readout format, unit).
SLIDER_RANGES: dict[str, tuple[float, float, str, str]] = {
    **{k: (0.05, 0.0005, ".4f", "probability per reading") for k in PER_READING},
    **{k: (0.5, 0.005, ".3f", "episodes per machine-minute") for k in PER_MACHINE_MINUTE},
    **{k: (10.0, 0.1, ".1f", "mean extra delay, s") for k in DELAY},
}
#: Widths of a row: the toggle, the slider (track and readout), and the unit after it
#: (written out in full in its own label, so no description is cut short).
TOGGLE_WIDTH, SLIDER_WIDTH = "150px", "360px"

#: The intensity a toggle switches an injector on at when it has never been on.
DEFAULT_ON: dict[str, float] = {
    "spike": 0.005, "loss": 0.01, "duplicate": 0.01, "malformed": 0.002, "drift": 0.05,
    "stuck": 0.05, "burst": 0.05, "failure": 0.05, "power": 0.05, "latency": 1.0,
}  # fmt: skip
#: The event-rate slider's range, readings per wall second (log scale).
RATE_MIN, RATE_MAX = 1.0, 100_000.0
#: Machines offered in the dropdown (a large factory lists its first ones).
MAX_MACHINES_LISTED = 200


class LiveFigure(go.FigureWidget):
    """A plotly ``FigureWidget`` that a reloaded page (or any new front end) draws as it is
    now, not as it was first displayed.

    ``FigureWidget`` sends each change to the views open at the time and keeps the state a
    new view starts from (``_widget_data``, ``_widget_layout``) as it was when the figure
    was last displayed by itself; a figure inside a panel is never displayed by itself, so
    after a page reload the live figure came back empty. Here the state a front end asks
    for is taken from the figure's current data and layout.
    """

    def get_state(
        self, key: str | Iterable[str] | None = None, drop_defaults: bool = False
    ) -> dict[str, Any]:
        """The widget's state for a front end, with the figure's current data and layout."""
        state = super().get_state(key, drop_defaults)
        if getattr(self, "_layout_obj", None) is None:  # asked while the figure is being made
            return state
        keys = self.keys if key is None else [key] if isinstance(key, str) else list(key)
        current = {"_widget_data": self._data, "_widget_layout": self._layout_obj._props}
        for name, value in current.items():
            if name in keys:
                to_json = self.trait_metadata(name, "to_json")
                state[name] = to_json(value, self)
        return state


class ControlPanel:
    """Sliders, buttons and a live figure that steer and show runs of one factory.

    ``events_per_s`` is the initial pace in readings per wall second (``None`` or 0: as
    fast as possible). The figure shows the last ``view_s`` seconds of event time and
    is refreshed every ``refresh_s`` seconds of wall time; it reads from the database of
    the stack each run uses (:attr:`database_url`). ``keep_up`` keeps a stack the run
    starts running afterwards (a notebook stops its stack itself, at the end).
    ``database_url`` is not used any more (each Start may find its stack elsewhere) and is
    accepted, with a warning, so older notebooks still run.
    """

    def __init__(
        self,
        settings: Settings,
        spec: SimulationSpec,
        database_url: str | None = None,
        events_per_s: float | None = None,
        refresh_s: float = 1.0,
        view_s: float = 600.0,
        keep_up: bool = True,
    ) -> None:
        if database_url is not None:
            warnings.warn(
                "ControlPanel's database_url is not used: the live figure reads from the "
                "database of the stack each run uses; leave it out",
                DeprecationWarning,
                stacklevel=2,
            )
        self.settings = settings
        self.spec = spec
        self.refresh_s = refresh_s
        self.view_s = view_s
        self.keep_up = keep_up
        self.control = ChaosControl(spec.chaos)
        self.pace = Pace(events_per_s)
        self.run: LiveRun | None = None
        self.runs: list[LiveRun] = []
        self._updater: threading.Thread | None = None
        self._wake = threading.Event()
        self._draw = threading.Lock()
        self._context: dict[str, pd.DataFrame] = {}
        self._build_widgets(events_per_s)

    # -- widgets ---------------------------------------------------------------------

    def _build_widgets(self, events_per_s: float | None) -> None:
        self.sliders: dict[str, w.FloatSlider] = {}
        self.toggles: dict[str, w.ToggleButton] = {}
        #: the unit each slider is in, beside it (the kinds, and "rate")
        self.units: dict[str, w.Label] = {}
        rows = []
        for kind in FAULT_KINDS:
            top, step, fmt, unit = SLIDER_RANGES[kind]
            value = self.control.get(kind)
            on = value > 0
            start = value if on else DEFAULT_ON[kind]
            slider = w.FloatSlider(
                value=start, min=0.0, max=max(top, start), step=step, readout_format=fmt,
                disabled=not on, continuous_update=False, tooltip=f"{kind}: {unit}",
                layout=w.Layout(width=SLIDER_WIDTH),
            )  # fmt: skip
            toggle = w.ToggleButton(value=on, tooltip=f"switch {kind} on or off",
                                    layout=w.Layout(width=TOGGLE_WIDTH))  # fmt: skip
            _show_toggle(toggle, kind)
            slider.observe(lambda change, k=kind: self._on_slider(k, change["new"]), "value")
            toggle.observe(lambda change, k=kind: self._on_toggle(k, change["new"]), "value")
            self.sliders[kind], self.toggles[kind] = slider, toggle
            self.units[kind] = w.Label(unit)
            rows.append(w.HBox([toggle, slider, self.units[kind]]))
        paced = bool(events_per_s)
        rate = min(max(float(events_per_s or 200.0), RATE_MIN), RATE_MAX)
        self.rate_slider = w.FloatLogSlider(
            value=rate, base=10, min=0, max=5, step=0.05, readout_format=",.0f",
            disabled=not paced, continuous_update=False, tooltip="readings per wall second",
            layout=w.Layout(width=SLIDER_WIDTH),
        )  # fmt: skip
        self.rate_toggle = w.ToggleButton(value=paced, layout=w.Layout(width=TOGGLE_WIDTH),
                                          tooltip="off: as fast as possible")  # fmt: skip
        _show_toggle(self.rate_toggle, "paced")
        self.units["rate"] = w.Label("readings per second")
        self.rate_slider.observe(lambda change: self._on_rate(change["new"]), "value")
        self.rate_toggle.observe(lambda change: self._on_rate_toggle(change["new"]), "value")
        self.start_button = w.Button(description="Start", button_style="success", icon="play")
        self.stop_button = w.Button(
            description="Stop", button_style="danger", icon="stop", disabled=True
        )
        self.start_button.on_click(lambda _button: self.start())
        self.stop_button.on_click(lambda _button: self.stop())
        self.progress_bar = w.FloatProgress(
            value=0.0, min=0.0, max=1.0, description="event time", bar_style="info",
            layout=w.Layout(width="520px"),
        )  # fmt: skip
        self.status = w.HTML(value=self._line("ready: press Start"))
        machines = Factory(self.spec.factory).machine_ids[:MAX_MACHINES_LISTED]
        self.machine_dropdown = w.Dropdown(options=machines, value=machines[0],
                                           description="machine")  # fmt: skip
        sensors = list(self.spec.factory.rates())
        self.sensor_dropdown = w.Dropdown(options=sensors, value=sensors[0],
                                          description="sensor")  # fmt: skip
        self.machine_dropdown.observe(lambda _change: self.refresh(), "value")
        self.sensor_dropdown.observe(lambda _change: self.refresh(), "value")
        empty = pd.DataFrame(columns=["machine_id", "sensor_type", "ts", "value",
                                      "rolling_1", "rolling_2"])  # fmt: skip
        first = signal_figure(empty, machines[0], sensors[0], title="no run yet: press Start",
                              widths_s=self.settings.window_widths_s)  # fmt: skip
        self.figure = LiveFigure(first)
        self.widget = w.VBox([
            w.HTML("<b>Chaos</b> (toggle an injector off and on: it comes back at its "
                   "last value)"),
            *rows,
            w.HTML("<b>Event rate</b> (readings per wall-clock second over the factory)"),
            w.HBox([self.rate_toggle, self.rate_slider, self.units["rate"]]),
            w.HBox([self.start_button, self.stop_button, self.progress_bar]),
            self.status,
            w.HBox([self.machine_dropdown, self.sensor_dropdown]),
            self.figure,
        ])  # fmt: skip

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        """Display the panel's widgets (``panel`` as the last line of a cell)."""
        return self.widget._repr_mimebundle_(**kwargs)

    # -- callbacks: widgets -> the running simulation ----------------------------------

    def _on_slider(self, kind: str, value: float) -> None:
        if self.toggles[kind].value:
            self.control.set(kind, value)

    def _on_toggle(self, kind: str, on: bool) -> None:
        _show_toggle(self.toggles[kind], kind)
        slider = self.sliders[kind]
        if on:
            self.control.on(kind, slider.value or DEFAULT_ON[kind])
            slider.value = self.control.get(kind)
        else:
            self.control.off(kind)
        slider.disabled = not on

    def _on_rate(self, value: float) -> None:
        if self.rate_toggle.value:
            self.pace.set(value)

    def _on_rate_toggle(self, on: bool) -> None:
        _show_toggle(self.rate_toggle, "paced")
        self.pace.set(self.rate_slider.value if on else None)
        self.rate_slider.disabled = not on

    # -- runs ------------------------------------------------------------------------

    @property
    def database_url(self) -> str | None:
        """The database the current run writes to and the figure reads from (``None``
        before a run has brought its stack up)."""
        return self.run.database_url if self.run is not None else None

    def start(self) -> LiveRun:
        """Start a run of the factory with the intensities and pace now set (Start button).

        Returns the running :class:`LiveRun`; while one is running, returns that one.
        """
        if self.run is not None and self.run.running:
            return self.run
        run = LiveRun(self.settings, self.spec, self.control, self.pace, keep_up=self.keep_up)
        self.run = run
        self.runs.append(run)
        self._context = {}
        self.start_button.disabled, self.stop_button.disabled = True, False
        self.progress_bar.value, self.progress_bar.bar_style = 0.0, "info"
        run.start()
        self._updater = threading.Thread(
            target=self._update_loop, args=(run,), name="workbench-panel", daemon=True
        )
        self._updater.start()
        return run

    def stop(self) -> None:
        """End the running simulation early (Stop button); the run still accounts for it."""
        if self.run is not None:
            self.run.stop()
            self.stop_button.disabled = True

    def wait(self, timeout: float | None = None) -> RunSummary:
        """Block until the current run and its last display refresh are done; return the
        run's summary (re-raising its failure)."""
        if self.run is None:
            raise RuntimeError("no run was started: press Start or call start()")
        summary = self.run.wait(timeout)
        if self._updater is not None:
            self._updater.join(timeout)
        return summary

    def refresh(self) -> None:
        """Redraw now (a dropdown changed): wake the updater, or draw once if none runs."""
        if self._updater is not None and self._updater.is_alive():
            self._wake.set()
        elif self.run is not None:
            self._refresh(self.run, full=False)

    # -- the display ---------------------------------------------------------------------

    def _update_loop(self, run: LiveRun) -> None:
        n = 0
        while True:
            over = run.done
            self._refresh(run, full=over or n % 5 == 0)
            if over:
                break
            self._wake.wait(self.refresh_s)
            self._wake.clear()
            n += 1
        self.start_button.disabled, self.stop_button.disabled = False, True

    def _refresh(self, run: LiveRun, full: bool) -> None:
        """Progress bar, status line and figure, from the run and the database."""
        with self._draw:
            self.progress_bar.value = run.fraction
            if run.done:
                ok = run.summary is not None and run.summary.reconciled
                self.progress_bar.bar_style = "success" if ok else "danger"
            self.status.value = self._line(run.status())
            if run.event_s <= 0 and not run.done:
                return
            try:
                self._draw_figure(run, full)
            except Exception as exc:  # a live view must outlive a failed query
                log.warning("live view of run %s: %s", run.run_id, exc)
                self.status.value = self._line(f"{run.status()} · live view: {exc}")

    def _draw_figure(self, run: LiveRun, full: bool) -> None:
        machine, sensor = self.machine_dropdown.value, self.sensor_dropdown.value
        end = dt.datetime.fromtimestamp((run.spec.start_ms + run.event_s * 1000) / 1000, tz=dt.UTC)
        since = end - dt.timedelta(seconds=self.view_s)
        url, run_id = run.database_url, run.run_id
        if url is None:  # the run's stack is not up yet
            return
        try:
            df = lab.readings(url, run_id, sensor_type=sensor, machine_ids=[machine],
                              since=since, max_rows=20_000)  # fmt: skip
        except lab.TooManyRows:  # a fast sensor: buckets of a 500th of the view
            df = lab.readings(url, run_id, sensor_type=sensor, machine_ids=[machine],
                              since=since, bucket=self.view_s / 500)  # fmt: skip
        if full or not self._context:
            self._context = {"alerts": lab.alerts(url, run_id),
                             "truth": lab.ground_truth(url, run_id)}  # fmt: skip
        alerts, truth = (_since(self._context[k], since) for k in ("alerts", "truth"))
        title = f"run {run_id} · {machine} · {sensor} · last {self.view_s / 60:g} min"
        update_signal_figure(self.figure, df, machine, sensor, alerts, truth, title,
                             self.settings.window_widths_s)  # fmt: skip

    @staticmethod
    def _line(text: str) -> str:
        return f"<code>{html.escape(text)}</code>"


def _show_toggle(toggle: w.ToggleButton, name: str) -> None:
    """Label a toggle with its state, so on and off cannot be mistaken for each other:
    ``spike: on`` in green with a switched-on icon, ``spike: off`` plain."""
    on = bool(toggle.value)
    toggle.description = f"{name}: {'on' if on else 'off'}"
    toggle.button_style = "success" if on else ""
    toggle.icon = "toggle-on" if on else "toggle-off"


def _since(frame: pd.DataFrame, since: dt.datetime) -> pd.DataFrame:
    """Alerts or faults still going on at ``since`` or later (they end after it)."""
    if not len(frame):
        return frame
    end = frame["closed_ts"].fillna(frame["updated_ts"]) if "closed_ts" in frame else None
    if end is None:
        end = frame["end_ts"]
    return frame[pd.to_datetime(end, utc=True) >= pd.Timestamp(since)]
