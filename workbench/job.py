"""Whole jobs that wire the parts: simulate into Kafka, process into PostgreSQL, run both.

``run_experiment`` is the main job: it makes the stack available, records the run,
starts a processor, simulates the factory into the raw topic, waits until the
database accounts for every produced message, and reports. Its summary says whether
the books close: produced = stored + dead-lettered.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from workbench import kafka
from workbench.config import Settings
from workbench.errors import WorkbenchError
from workbench.processor.pipeline import Processor, ProcessorStats
from workbench.producer import ProduceReport, RecordProducer
from workbench.runs import RunRegistry, new_run_id
from workbench.simulator.physics import Factory, FactoryConfig
from workbench.sinks.postgres import create_schema, redact
from workbench.stack import Endpoints, Stack

log = logging.getLogger(__name__)


def prepare(settings: Settings, endpoints: Endpoints) -> None:
    """Create the topics and tables the pipeline needs (idempotent)."""
    kafka.ensure_topics(endpoints.bootstrap_servers, settings.topics, settings.partitions)
    create_schema(endpoints.database_url)


def simulate(
    settings: Settings,
    endpoints: Endpoints,
    factory: FactoryConfig,
    duration_s: float,
    run_id: str,
    realtime: bool = False,
) -> ProduceReport:
    """Produce ``duration_s`` seconds of event time from a factory to the raw topic.

    As fast as possible by default; with ``realtime`` each tick is sent when its event
    time comes round on the wall clock (a live view then sees data as it happens).
    """
    sim = Factory(factory)
    started = time.monotonic()
    last_log = started
    with RecordProducer(endpoints.bootstrap_servers, settings.topic_raw, run_id) as producer:
        for n, tick in enumerate(sim.ticks(duration_s)):
            if realtime:
                wait = started + n * sim.dt_s - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            for record in sim.records(tick):
                producer.send(record)
            if time.monotonic() - last_log >= 5.0:
                last_log = time.monotonic()
                log.info("simulated %.0f of %.0f s of event time", (n + 1) * sim.dt_s, duration_s)
    assert producer.report is not None
    return producer.report


@dataclass(frozen=True)
class RunSummary:
    """The outcome of one end-to-end run, as printed by ``workbench run --json``."""

    run_id: str
    machines: int
    duration_s: float
    rate_hz: float
    seed: int
    produced: int
    failed_deliveries: int
    stored: int
    deadlettered: int
    duplicates_absorbed: int
    elapsed_s: float
    events_per_s: float
    reconciled: bool
    bootstrap_servers: str
    database_url: str

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


def run_experiment(
    settings: Settings,
    machines: int = 5,
    duration_s: float = 30.0,
    seed: int = 0,
    rate_hz: float = 1.0,
    run_id: str | None = None,
    realtime: bool = False,
    keep_up: bool = False,
    stall_timeout_s: float = 60.0,
) -> RunSummary:
    """Simulate, process and store one run end to end; see the module docstring."""
    run_id = run_id or new_run_id()
    factory = FactoryConfig(machines=machines, rate_hz=rate_hz, seed=seed)
    started = time.monotonic()
    with Stack(settings).session(keep_up=keep_up) as endpoints:
        prepare(settings, endpoints)
        registry = RunRegistry(endpoints.database_url)
        try:
            params = {"machines": machines, "duration_s": duration_s, "rate_hz": rate_hz,
                      "realtime": realtime}  # fmt: skip
            registry.start(run_id, "run", seed, params)
            worker = _ProcessorThread(
                Processor(settings, endpoints.bootstrap_servers, endpoints.database_url)
            )
            worker.start()
            try:
                report = simulate(settings, endpoints, factory, duration_s, run_id, realtime)
                counts = _wait_for_sinks(
                    registry, run_id, report.delivered, worker, stall_timeout_s
                )
            finally:
                worker.stop.set()
                worker.join(30)
            if worker.error is not None:
                raise worker.error
            reconciled = (
                report.failed == 0
                and report.delivered == report.sent
                and counts.stored + counts.deadlettered == report.delivered
            )
            registry.finish(
                run_id,
                "completed" if reconciled else "failed",
                produced=report.delivered,
                stored=counts.stored,
                deadlettered=counts.deadlettered,
            )
        except BaseException:
            with contextlib.suppress(Exception):  # the database may be what failed
                registry.finish(run_id, "failed")
            raise
        finally:
            registry.close()
    elapsed = time.monotonic() - started
    stats = worker.stats or ProcessorStats()
    return RunSummary(
        run_id=run_id,
        machines=machines,
        duration_s=duration_s,
        rate_hz=rate_hz,
        seed=seed,
        produced=report.delivered,
        failed_deliveries=report.failed,
        stored=counts.stored,
        deadlettered=counts.deadlettered,
        duplicates_absorbed=stats.duplicates,
        elapsed_s=round(elapsed, 3),
        events_per_s=round(report.delivered / elapsed, 1) if elapsed else 0.0,
        reconciled=reconciled,
        bootstrap_servers=endpoints.bootstrap_servers,
        database_url=redact(endpoints.database_url),
    )


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
