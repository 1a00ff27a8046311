"""A run that goes on in the background while a notebook steers it.

A Jupyter kernel handles widget events (a slider moved, a button pressed) only while it
is idle, between cells. A run started in a cell would keep the kernel busy until it
ends, and every slider move would wait until then. :class:`LiveRun` therefore runs
:func:`~workbench.job.run_experiment` in a daemon thread: the cell returns at once, the
kernel stays idle, and widget callbacks change the running simulation through the
thread-safe objects it reads every tick (:class:`~workbench.simulator.control.ChaosControl`
for chaos, :class:`~workbench.simulator.control.Pace` for the event rate).

Headless runs (``workbench report``, the test suite) set ``WORKBENCH_HEADLESS=1``: there is
no front end to render widgets, so a notebook starts the run with its parameters and waits.

>>> is_headless({"WORKBENCH_HEADLESS": "true"}), is_headless({"WORKBENCH_HEADLESS": "0"})
(True, False)
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Mapping

from workbench.config import Settings
from workbench.errors import WorkbenchError
from workbench.job import RunSummary, run_experiment
from workbench.runs import new_run_id
from workbench.simulator.control import ChaosControl, Pace, RunProgress
from workbench.simulator.spec import SimulationSpec
from workbench.stack import Endpoints, Stack

log = logging.getLogger(__name__)

#: The environment variable that says no front end is attached (papermill, CI).
HEADLESS_ENV = "WORKBENCH_HEADLESS"


def is_headless(environ: Mapping[str, str] | None = None) -> bool:
    """True when the notebook runs without a front end (``WORKBENCH_HEADLESS`` is 1/true
    in ``environ``, by default the process environment): widgets would render nothing,
    so cells must run to completion on their own."""
    env = os.environ if environ is None else environ
    return env.get(HEADLESS_ENV, "").strip().lower() in ("1", "true", "yes")


class LiveRun:
    """One end-to-end run (simulate, process, store) in a background daemon thread.

    ``control`` (chaos intensities) and ``pace`` (readings per wall second; ``None`` for
    as fast as possible) may be changed from any thread while the run goes on; they
    default to the spec's chaos and no pacing. :meth:`stop` ends the simulation early;
    the run still processes and accounts for what was produced. The run id is known
    before the run starts, and :attr:`endpoints` as soon as the run's stack is up, so a
    live view queries the database this run writes to while it goes on (a stack started
    again since may answer on other ports than an earlier one).

    States (:attr:`phase`): ``ready`` -> ``simulating`` -> ``draining`` (the simulation
    ended, the processor stores the rest) -> ``done`` or ``failed``.
    """

    def __init__(
        self,
        settings: Settings,
        spec: SimulationSpec,
        control: ChaosControl | None = None,
        pace: Pace | None = None,
        run_id: str | None = None,
        keep_up: bool = True,
    ) -> None:
        self.settings = settings
        self.control = control if control is not None else ChaosControl(spec.chaos)
        # the registry records the intensities in force when the run starts
        on = {k: v for k, v in self.control.snapshot().items() if v > 0}
        self.spec = dataclasses.replace(spec, chaos=on)
        self.pace = pace if pace is not None else Pace()
        self.run_id = run_id or new_run_id()
        self.keep_up = keep_up
        self.progress = RunProgress()
        #: where the run's broker and database answer, once its stack is up (else None)
        self.endpoints: Endpoints | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._summary: RunSummary | None = None
        self._error: BaseException | None = None
        self._started: float | None = None
        self._ended: float | None = None

    # -- control ---------------------------------------------------------------------

    def start(self) -> LiveRun:
        """Start the run in a daemon thread and return at once (returns ``self``)."""
        if self._thread is not None:
            raise WorkbenchError(f"run {self.run_id} was started already; make a new LiveRun")
        self._started = time.monotonic()
        self._thread = threading.Thread(
            target=self._run, name=f"workbench-live-{self.run_id}", daemon=True
        )
        self._thread.start()
        log.info("live run %s started", self.run_id)
        return self

    def stop(self) -> None:
        """End the simulation at its next tick; processing and accounting still finish."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> RunSummary:
        """Block until the run is over and return its summary; re-raise its failure.

        Raises :class:`TimeoutError` if it is still going after ``timeout`` seconds.
        """
        if self._thread is None:
            raise WorkbenchError(f"run {self.run_id} was not started")
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"run {self.run_id} still going after {timeout} s")
        if self._error is not None:
            raise self._error
        assert self._summary is not None
        return self._summary

    def _run(self) -> None:
        try:
            # the stack is brought up here rather than only inside run_experiment, so its
            # endpoints are known while the run goes on; run_experiment attaches to it
            with Stack(self.settings).session(keep_up=self.keep_up) as endpoints:
                self.endpoints = endpoints
                self._summary = run_experiment(
                    self.settings, self.spec, run_id=self.run_id, keep_up=self.keep_up,
                    control=self.control, pace=self.pace, stop=self._stop,
                    progress=self.progress,
                )  # fmt: skip
            log.info("live run %s done: reconciled=%s", self.run_id, self._summary.reconciled)
        except BaseException as exc:  # kept for wait(): a thread has no one to raise to
            log.error("live run %s failed: %s", self.run_id, exc)
            self._error = exc
        finally:
            self._ended = time.monotonic()

    # -- what a progress display reads ---------------------------------------------------

    @property
    def started(self) -> bool:
        return self._thread is not None

    @property
    def running(self) -> bool:
        """Started and not over yet (simulating or draining)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def done(self) -> bool:
        """Over, successfully or not."""
        return self._thread is not None and not self._thread.is_alive()

    @property
    def stopped(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stop.is_set()

    @property
    def database_url(self) -> str | None:
        """The database this run writes to, once its stack is up (``None`` before)."""
        return self.endpoints.database_url if self.endpoints is not None else None

    @property
    def summary(self) -> RunSummary | None:
        """The run's summary once it finished successfully, else ``None``."""
        return self._summary if self.done else None

    @property
    def error(self) -> BaseException | None:
        """The exception that ended the run, if one did."""
        return self._error if self.done else None

    @property
    def phase(self) -> str:
        """``ready``, ``simulating``, ``draining``, ``done`` or ``failed``."""
        if self._thread is None:
            return "ready"
        if self.done:
            return "failed" if self._error is not None else "done"
        return "draining" if self.progress.finished else "simulating"

    @property
    def duration_s(self) -> float:
        """Seconds of event time the run is to simulate (unless stopped)."""
        return self.spec.duration_s

    @property
    def event_s(self) -> float:
        """Seconds of event time simulated so far."""
        return self.progress.event_s

    @property
    def produced(self) -> int:
        """Readings the factory made so far."""
        return self.progress.produced

    @property
    def fraction(self) -> float:
        """How much of the duration has been simulated, 0 to 1 (1 once the run is over)."""
        if self.done:
            return 1.0
        return min(1.0, self.event_s / self.duration_s) if self.duration_s else 0.0

    @property
    def elapsed_s(self) -> float:
        """Wall seconds since the start (until the end, once over)."""
        if self._started is None:
            return 0.0
        return (self._ended or time.monotonic()) - self._started

    def status(self) -> str:
        """One line for a status display."""
        p = self.progress.snapshot()
        rate = self.pace.get()
        pace = f"{rate:,.0f} readings/s" if rate else "as fast as possible"
        line = (
            f"run {self.run_id} · {self.phase} · {p['event_s']:,.0f} of {self.duration_s:,.0f} s"
            f" of event time · {p['produced']:,} readings ({p['dropped']:,} dropped) · "
            f"{self.elapsed_s:,.1f} s · pace {pace}"
        )
        if self._summary is not None and self.done:
            s = self._summary
            line += (
                f" · stored {s.stored:,}, dead-lettered {s.deadlettered:,}, alerts {s.alerts}"
                f" · books close: {'yes' if s.reconciled else 'NO'}"
            )
        elif self._error is not None and self.done:
            line += f" · error: {self._error}"
        return line


def run_with_progress(
    settings: Settings,
    spec: SimulationSpec,
    control: ChaosControl | None = None,
    keep_up: bool = True,
    refresh_s: float = 0.5,
) -> RunSummary:
    """:func:`~workbench.job.run_experiment` with a progress bar of the event time simulated
    (tqdm: a widget in Jupyter, a text bar in a terminal), then its summary. Headless (a
    report) there is no bar: a static page would keep a widget's first state, "0%".

    For the notebooks that run one experiment and then study it; a long run shows where it
    is instead of a cell that looks hung. Failures are raised as from ``run_experiment``.
    """
    from tqdm.auto import tqdm  # a notebook or terminal dependency, not the pipeline's

    run = LiveRun(settings, spec, control=control, keep_up=keep_up).start()
    total = max(1, round(spec.duration_s))
    with tqdm(total=total, unit="s", desc=f"run {run.run_id}", leave=True,
              disable=is_headless()) as bar:  # fmt: skip
        while not run.done:
            bar.n = min(total, round(run.event_s))
            bar.set_postfix_str(f"{run.phase}, {run.produced:,} readings", refresh=True)
            time.sleep(refresh_s)
        bar.n = total if run.error is None and not run.stopped else round(run.event_s)
        bar.set_postfix_str(run.phase, refresh=True)
    return run.wait()
