"""Whole jobs that wire the parts: simulate into Kafka, process into PostgreSQL, run both.

``run_experiment`` is the main job: it makes the stack available, records the run,
starts a processor, simulates the factory into the raw topic, waits until the
database accounts for every produced reading, and reports. Its summary says whether
the books close: produced = stored + dead-lettered + dropped by chaos.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from workbench import kafka, sinks
from workbench.config import Settings
from workbench.errors import WorkbenchError
from workbench.gateway.client import GatewaySender
from workbench.processor.loop import Processor, ProcessorStats
from workbench.processor.scoring import score_labels, score_run
from workbench.producer import RecordProducer
from workbench.runs import RunRegistry, new_run_id
from workbench.simulator.control import ChaosControl, Pace, RunProgress
from workbench.simulator.csvsource import CsvSource
from workbench.simulator.replay import ReplayOptions, replay
from workbench.simulator.source import Simulation
from workbench.simulator.spec import SimulationSpec
from workbench.simulator.truth import chaos_producer
from workbench.sinks.postgres import PostgresSink, create_schema, redact
from workbench.stack import Endpoints, Stack

log = logging.getLogger(__name__)


def prepare(settings: Settings, endpoints: Endpoints) -> None:
    """Create the topics and tables the pipeline needs (idempotent)."""
    kafka.ensure_topics(endpoints.broker, settings.topics, settings.partitions)
    create_schema(
        endpoints.database_url,
        settings.reader_password,
        settings.timescale,
        settings.expected_rows_per_s,
    )


def ready_stack(settings: Settings, sink: str | None = None) -> Endpoints:
    """Attach to or start the stack, and leave it running: the other half of the pipeline
    (processor or source, in another command) still needs it. Topics and tables exist
    on return.

    ``sink`` (``workbench process --sink URL``) replaces the configured database for this
    command only: a ``postgresql://`` URL is checked like a configured one; a
    ``sqlite:///PATH`` file gets the tables and no database server is started at all.
    The broker still comes from ``settings``; the returned ``database_url`` is the sink's.
    """
    if sink is not None and sinks.is_sqlite(sink):
        sinks.create_schema(sink)  # a file that cannot be written stops us before the broker
        return Endpoints(ready_broker(settings), sink)
    if sink is not None:
        settings = dataclasses.replace(settings, database_url=sink)
    endpoints, started = Stack(settings).up()
    prepare(settings, endpoints)
    _say_started(started)
    return endpoints


def ready_broker(settings: Settings) -> kafka.Endpoint:
    """Attach to or start the broker alone (no database), and leave it running; the topics
    exist on return. Returns the broker's endpoint. For the commands that only read or
    write topics (``workbench tail``, ``process --sink sqlite://``)."""
    endpoints, started = Stack(settings).up(parts=("broker",))
    kafka.ensure_topics(endpoints.broker, settings.topics, settings.partitions)
    _say_started(started)
    return endpoints.broker


def _say_started(started: list[str]) -> None:
    if started:
        log.info("started embedded %s; `workbench down` stops it", " and ".join(started))


@contextlib.contextmanager
def database(settings: Settings, url: str | None = None) -> Iterator[str]:
    """The URL of the database to read for a block: ``url`` (``sqlite:///PATH`` or
    ``postgresql://...``) if given, else the configured database, else the embedded
    PostgreSQL, started for the block if it is not running and stopped again after it
    (no broker is started). Nothing is created here."""
    if url is not None and sinks.is_sqlite(url):
        yield url
        return
    if url is not None:
        settings = dataclasses.replace(settings, database_url=url)
    with Stack(settings).session(parts=("database",)) as endpoints:
        yield endpoints.database_url


@dataclass(frozen=True)
class SimulationReport:
    """What one simulation made, did to it, and got acknowledged by the broker."""

    run_id: str
    #: readings the factory made (each counted once, whatever happened to it)
    produced: int
    #: readings lost on the way (chaos ``loss``): never sent
    dropped: int
    #: extra copies sent (chaos ``duplicate``) and readings replaced by bad bytes
    duplicates: int
    malformed: int
    #: messages handed to the broker, how many it acknowledged, and about how many of those
    #: it lost unprocessed (a memory broker that restarted mid-run, see kafka.TopicWatch)
    sent: int
    delivered: int
    failed: int
    lost: int
    #: ground-truth events by fault kind
    chaos: dict[str, int]
    sha256: str
    first_ts: int | None
    last_ts: int | None
    #: partitions that got the end-of-run marker
    partitions: list[int]
    #: sent through a gateway (``--via``): messages it refused (malformed ones), which
    #: never reach the broker
    rejected: int = 0
    via: str | None = None

    @property
    def acknowledged(self) -> bool:
        """Whether the broker acknowledged every message sent (that a gateway did not refuse)."""
        return self.failed == 0 and self.delivered + self.rejected == self.sent

    @property
    def intact(self) -> bool:
        """Acknowledged, and the broker lost none of them before they were processed."""
        return self.acknowledged and self.lost == 0

    @property
    def expected_in_database(self) -> int:
        """Readings that must end up stored or dead-lettered: all but the dropped (and
        those a gateway refused)."""
        return self.produced - self.dropped - self.rejected


@dataclass(frozen=True)
class Via:
    """Send through the HTTP gateway at ``url`` with ``api_key`` instead of to the broker."""

    url: str
    api_key: str


def simulate(
    settings: Settings,
    endpoints: Endpoints,
    spec: SimulationSpec,
    run_id: str,
    realtime: bool = False,
    control: ChaosControl | None = None,
    stop: threading.Event | None = None,
    pace: Pace | None = None,
    progress: RunProgress | None = None,
    via: Via | None = None,
) -> SimulationReport:
    """Produce a simulated run to the raw topic, with its ground truth to topic and table.

    As fast as possible by default; with ``realtime`` each tick is sent when its event
    time comes round on the wall clock. ``control`` lets a caller change chaos
    intensities while the run goes on; ``stop`` ends it early (ground truth is closed).
    ``pace`` (readings per wall second, changeable mid-run) paces the run instead of
    ``realtime``; ``progress`` tells another thread how far the simulation got. With
    ``via``, readings go through an HTTP gateway (the ground truth still goes straight to
    its topic and table: it is the lab's, not a device's).
    """
    control = control or ChaosControl(spec.chaos)
    sim = Simulation(spec.factory, run_id, control, spec.scripted(), spec.magnitudes)
    with (
        chaos_producer(endpoints.broker, settings.topic_chaos, run_id) as truth_producer,
        (
            GatewaySender(via.url, via.api_key, run_id)
            if via is not None
            else RecordProducer(
                endpoints.broker,
                settings.topic_raw,
                run_id,
                processed_by=settings.consumer_group,
                warn_held=settings.broker_held_warn,
            )
        ) as raw,
        PostgresSink(endpoints.database_url) as sink,
    ):

        def flush_truth(s: Simulation) -> None:
            s.truth.flush(truth_producer, sink)
            done = s.factory.index * s.factory.dt_s
            problems = raw.problems()
            log.log(
                logging.WARNING if problems else logging.INFO,
                "simulated %.0f of %.0f s of event time%s",
                done, spec.duration_s, f" ({problems})" if problems else "",
            )  # fmt: skip

        counts = sim.run(
            raw.send_raw, spec.duration_s, realtime, stop, flush_truth, 5.0, pace, progress
        )
        sim.truth.flush(truth_producer, sink)
        raw.flush()
        partitions = raw.end_of_run(m.encode() for m in sim.factory.machine_ids)
    report = raw.report
    assert report is not None
    return SimulationReport(
        run_id=run_id,
        produced=counts.produced,
        dropped=counts.dropped,
        duplicates=counts.duplicates,
        malformed=counts.malformed,
        sent=counts.sent,
        delivered=report.delivered,
        failed=report.failed,
        lost=report.lost,
        chaos=counts.chaos,
        sha256=report.sha256,
        first_ts=counts.first_ts,
        last_ts=counts.last_ts,
        partitions=sorted(partitions),
        rejected=report.rejected,
        via=via.url if via is not None else None,
    )


def simulate_run(
    settings: Settings,
    spec: SimulationSpec,
    run_id: str,
    realtime: bool = False,
    via: Via | None = None,
) -> SimulationReport:
    """``workbench simulate``: one registered simulation; the stack stays up for a processor."""
    endpoints = ready_stack(settings)
    params = spec.params() | {"realtime": realtime} | ({"via": via.url} if via else {})
    with (
        RunRegistry(endpoints.database_url) as registry,
        registry.track(run_id, "simulate", spec.factory.seed, params),
    ):
        report = simulate(settings, endpoints, spec, run_id, realtime, via=via)
        status = "completed" if report.intact else "failed"
        registry.finish(run_id, status, produced=report.produced, dropped=report.dropped)
    return report


@dataclass(frozen=True)
class RunSummary:
    """The outcome of one end-to-end run, as printed by ``workbench run --json``."""

    run_id: str
    scenario: str | None
    machines: int
    duration_s: float
    rate_hz: float
    seed: int
    #: readings the factory made; ``dropped`` of them were lost by chaos on the way
    produced: int
    dropped: int
    #: messages the broker acknowledged (duplicates included) and those it did not
    sent: int
    failed_deliveries: int
    #: about how many a broker that restarted lost before they were processed (the books
    #: below give the exact figure)
    lost_by_broker: int
    stored: int
    deadlettered: int
    duplicates_absorbed: int
    #: readings whose event time was behind their partition's watermark on arrival
    late: int
    #: alerts raised (each a lifecycle: opened, updated, closed), and final windows written
    alerts: int
    windows: int
    #: ground-truth events by fault kind
    chaos: dict[str, int]
    #: per fault kind: precision, recall, mean detection delay (s) of the alerts
    score: dict[str, dict[str, Any]]
    sha256: str
    elapsed_s: float
    events_per_s: float
    #: produced == stored + deadlettered + dropped, and every message acknowledged
    reconciled: bool
    bootstrap_servers: str
    database_url: str
    #: sent through a gateway (``--via``): its URL, and the messages it refused
    via: str | None = None
    rejected: int = 0
    #: the promoted model's predictions, per model and version: machine-minutes, alarms
    predictions: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _ProcessorThread(threading.Thread):
    """Runs a processor in the background and keeps its outcome, exception included."""

    def __init__(self, processor: Processor) -> None:
        super().__init__(name="workbench-processor", daemon=True)
        self.processor = processor
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.stats: ProcessorStats | None = None

    def run(self) -> None:
        try:
            self.stats = self.processor.run(self.stop)
        except BaseException as exc:
            self.error = exc


@contextlib.contextmanager
def _processing(settings: Settings, endpoints: Endpoints) -> Iterator[_ProcessorThread]:
    """A processor consuming in a background thread for the block, stopped at its end;
    a failure of the processor is raised once the block is over."""
    worker = _ProcessorThread(Processor(settings, endpoints.broker, endpoints.database_url))
    worker.start()
    try:
        yield worker
    finally:
        worker.stop.set()
        worker.join(30)
    if worker.error is not None:
        raise worker.error


def run_experiment(
    settings: Settings,
    spec: SimulationSpec | None = None,
    run_id: str | None = None,
    realtime: bool = False,
    keep_up: bool = False,
    control: ChaosControl | None = None,
    stall_timeout_s: float = 60.0,
    pace: Pace | None = None,
    stop: threading.Event | None = None,
    progress: RunProgress | None = None,
    via: Via | None = None,
) -> RunSummary:
    """Simulate, process and store one run end to end; see the module docstring.

    ``control``, ``pace`` and ``stop`` steer the simulation while it runs (chaos
    intensities, readings per wall second, an early end) and ``progress`` reports how far
    it got (see :func:`simulate`); a notebook's control panel runs this in a background
    thread (:class:`workbench.lab.live.LiveRun`). A stopped run is finished like any
    other: what was produced is processed, stored and accounted for. With ``via`` the
    readings go through an HTTP gateway (``workbench run --via URL``).

    >>> # run_experiment(Settings.from_env(), SimulationSpec.build(scenario="standard"))
    """
    spec = spec or SimulationSpec.build()
    run_id = run_id or new_run_id()
    started = time.monotonic()
    with Stack(settings).session(keep_up=keep_up) as endpoints:
        prepare(settings, endpoints)
        params = spec.params() | {"realtime": realtime} | ({"via": via.url} if via else {})
        with (
            RunRegistry(endpoints.database_url) as registry,
            registry.track(run_id, "run", spec.factory.seed, params),
        ):
            with _processing(settings, endpoints) as worker:
                report = simulate(
                    settings, endpoints, spec, run_id, realtime, control, stop, pace, progress,
                    via,
                )  # fmt: skip
                # what the broker lost cannot arrive: no waiting for it
                arriving = report.expected_in_database - report.lost
                _wait_for_sinks(registry, run_id, arriving, worker, stall_timeout_s)
                _wait_for_end_of_run(worker, run_id, report.partitions, stall_timeout_s)
            counts = registry.counts(run_id, full=True)
            predictions = registry.predictions(run_id)
            reconciled = (
                report.acknowledged
                and counts.stored + counts.deadlettered + report.dropped + report.rejected
                == report.produced
            )
            score = score_run(endpoints.database_url, run_id)
            save_health(endpoints.database_url, run_id)
            registry.finish(
                run_id,
                "completed" if reconciled else "failed",
                produced=report.produced,
                stored=counts.stored,
                deadlettered=counts.deadlettered,
                dropped=report.dropped,
            )
    elapsed = time.monotonic() - started
    stats = worker.stats or ProcessorStats()
    f = spec.factory
    return RunSummary(
        run_id=run_id,
        scenario=spec.scenario,
        machines=f.machines,
        duration_s=spec.duration_s,
        rate_hz=f.rate_hz,
        seed=f.seed,
        produced=report.produced,
        dropped=report.dropped,
        sent=report.delivered,
        failed_deliveries=report.failed,
        lost_by_broker=report.lost,
        stored=counts.stored,
        deadlettered=counts.deadlettered,
        duplicates_absorbed=stats.duplicates,
        late=counts.late,
        alerts=counts.alerts,
        windows=counts.windows_final,
        chaos=report.chaos,
        score=score,
        sha256=report.sha256,
        elapsed_s=round(elapsed, 3),
        events_per_s=round(report.produced / elapsed, 1) if elapsed else 0.0,
        reconciled=reconciled,
        bootstrap_servers=endpoints.bootstrap_servers,
        database_url=redact(endpoints.database_url),
        via=report.via,
        predictions=predictions,
        rejected=report.rejected,
    )


def save_health(database_url: str, run_id: str) -> int:
    """Store the health summary of every machine of the run (default recent window) in the
    ``machine_health`` table, for Grafana; returns the machines saved. Cheap enough for the
    end of every run (measured: 0.03 s for the default run of 5 machines x 30 s, 0.25 s for
    200 machines x 30 min). A database error is logged and the run goes on: the summary
    can be saved again with ``workbench health --run ID --save``."""
    import sqlalchemy as sa

    from workbench.models import health

    started = time.perf_counter()
    try:
        saved = health.save(database_url, health.health_all(database_url, run_id))
    except (WorkbenchError, sa.exc.SQLAlchemyError) as exc:
        log.warning("run %s: health summaries not saved (%s); `workbench health --run %s "
                    "--save` saves them", run_id, exc, run_id)  # fmt: skip
        return 0
    log.debug("run %s: saved the health of %d machine(s) in %.3f s", run_id, saved,
              time.perf_counter() - started)  # fmt: skip
    return saved


def _wait_for_end_of_run(
    worker: _ProcessorThread, run_id: str, partitions: list[int], timeout_s: float
) -> None:
    """Wait until the processor has made the run's windows final on every partition."""
    deadline = time.monotonic() + timeout_s
    want = {(run_id, p) for p in partitions}
    while not want <= worker.processor.ended:
        if worker.error is not None or not worker.is_alive() or time.monotonic() > deadline:
            log.warning("run %s: windows not all final when the run ended", run_id)
            return
        time.sleep(0.05)


def _wait_for_sinks(
    registry: RunRegistry,
    run_id: str,
    expected: int,
    worker: _ProcessorThread,
    stall_timeout_s: float,
):
    """Wait until the database accounts for ``expected`` messages of the run.

    Gives up when the processor died or the counts stopped moving for
    ``stall_timeout_s``: a run must end with an answer, never hang.
    """
    last_total, last_change = -1, time.monotonic()
    while True:
        counts = registry.counts(run_id)
        total = counts.stored + counts.deadlettered
        if total >= expected:
            return counts
        if worker.error is not None or not worker.is_alive():
            raise WorkbenchError(
                f"the processor stopped before storing run {run_id}: {worker.error}"
            ) from worker.error
        if total != last_total:
            last_total, last_change = total, time.monotonic()
        elif time.monotonic() - last_change > stall_timeout_s:
            log.error(
                "run %s: %d of %d messages stored after waiting %.0fs with no progress",
                run_id, total, expected, stall_timeout_s,
            )  # fmt: skip
            return counts
        time.sleep(0.2)


# -- real data: a replayed file through the whole pipeline, scored against its labels ----


@dataclass(frozen=True)
class ReplayRunSummary:
    """The outcome of one replay of real data end to end (:func:`replay_experiment`).

    Books: a replay drops nothing (there is no chaos) and dead-letters its bad rows itself,
    before producing, so they close when ``produced + bad_rows == stored + deadlettered``
    and every message was acknowledged.

    Score: labels of real data say *that* something was wrong, not which simulated fault
    it resembles, so ``score`` (per labelled kind, ``anomaly`` for the shipped data sets)
    counts every alert, whatever rule raised it: recall = labelled events an alert
    matched, precision = alerts that matched a labelled event / all alerts, delay = first
    matching alert's opening - event start (matching as in
    :mod:`~workbench.processor.scoring`). ``by_rule`` splits the same score per rule;
    ``label_events`` says for each labelled event whether it was caught, by which rule
    first, and when (for NAB windows also relative to the labelled anomaly point).
    """

    run_id: str
    file: str
    mapping: str
    #: data rows read, and those that could not be read (dead-lettered by the replay)
    rows: int
    bad_rows: int
    #: readings the broker acknowledged
    produced: int
    stored: int
    deadlettered: int
    late: int
    alerts: int
    windows: int
    #: ground-truth events made from the file's labels
    labels: int
    score: dict[str, dict[str, Any]]
    by_rule: list[dict[str, Any]]
    label_events: list[dict[str, Any]]
    #: the replay's own summary (``workbench replay --json``)
    replay: dict[str, Any]
    elapsed_s: float
    readings_per_s: float
    #: produced + bad rows == stored + dead-lettered, and every message acknowledged
    reconciled: bool
    bootstrap_servers: str
    database_url: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def replay_experiment(
    settings: Settings,
    source: CsvSource,
    options: ReplayOptions | None = None,
    run_id: str | None = None,
    keep_up: bool = False,
    stall_timeout_s: float = 60.0,
) -> ReplayRunSummary:
    """Replay a CSV file of real sensor data through the whole pipeline and score the
    alerts against the file's labels: the real-data twin of :func:`run_experiment`.

    The stack is attached to or started (and stopped again unless ``keep_up``); a
    processor consumes in the background while
    :func:`~workbench.simulator.replay.replay` produces the file, which records the run
    (kind ``replay``) itself: this function only adds the outcome to that one record.
    It then waits until the database accounts for every reading and bad row, and until
    the processor has made the run's windows final on every partition it used, so that
    alerts, windows and the score are complete.

    >>> # source = CsvSource.open("../shared/data/skab/valve1/0.csv")
    >>> # replay_experiment(Settings.from_env(), source).score["anomaly"]["recall"]
    """
    options = options or ReplayOptions()
    run_id = run_id or new_run_id()
    started = time.monotonic()
    with Stack(settings).session(keep_up=keep_up) as endpoints:
        prepare(settings, endpoints)
        with RunRegistry(endpoints.database_url) as registry:
            try:
                with _processing(settings, endpoints) as worker:
                    summary = replay(settings, endpoints, source, options, run_id)
                    expected = summary.produced + summary.bad_rows
                    _wait_for_sinks(registry, run_id, expected, worker, stall_timeout_s)
                    _wait_for_end_of_run(worker, run_id, summary.partitions, stall_timeout_s)
            except BaseException:  # replay() registered the run: record how it ended
                with contextlib.suppress(Exception):  # the database may be what failed
                    registry.finish(run_id, "failed")
                raise
            counts = registry.counts(run_id, full=True)
            reconciled = summary.ok and counts.stored + counts.deadlettered == expected
            score, by_rule, events = score_labels(endpoints.database_url, run_id)
            save_health(endpoints.database_url, run_id)
            registry.finish(
                run_id,
                "completed" if reconciled else "failed",
                produced=summary.produced,
                stored=counts.stored,
                deadlettered=counts.deadlettered,
            )
    elapsed = time.monotonic() - started
    return ReplayRunSummary(
        run_id=run_id,
        file=summary.file,
        mapping=summary.mapping,
        rows=summary.rows,
        bad_rows=summary.bad_rows,
        produced=summary.produced,
        stored=counts.stored,
        deadlettered=counts.deadlettered,
        late=counts.late,
        alerts=counts.alerts,
        windows=counts.windows_final,
        labels=summary.labels,
        score=score,
        by_rule=by_rule,
        label_events=events,
        replay=summary.to_dict(),
        elapsed_s=round(elapsed, 3),
        readings_per_s=round(summary.produced / elapsed, 1) if elapsed else 0.0,
        reconciled=reconciled,
        bootstrap_servers=endpoints.bootstrap_servers,
        database_url=redact(endpoints.database_url),
    )
