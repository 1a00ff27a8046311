"""Replay a CSV file of real sensor data through the producer, as if its machines sent it.

Each data row becomes one reading per mapped column (see :mod:`~workbench.simulator.mapping`),
produced to the raw topic exactly like the simulator's readings, with ``seq`` counting
the rows of each machine. The file's anomaly labels become ground-truth events, as chaos
injections do (:mod:`~workbench.simulator.labels`), so that detection can be scored on
real data. A replay is one run of the run registry, of kind ``replay``.

Times: ``original`` keeps the file's event times (a time without a zone, as in NAB and
SKAB, is read as UTC); ``now`` moves the first row to the current time and divides every
interval by the speed factor. Rows are sent as fast as possible unless ``realtime`` paces
them to their (re-timed) event time. Times that go back or repeat (NAB's clock steps
back 55 minutes) are replayed as they are, since event time is the pipeline's business,
and counted: ``backwards_steps`` (rows earlier than the row before, per machine) and
``rows_behind`` (rows not later than the latest time already sent for their machine).

Bad rows (:class:`~workbench.simulator.csvsource.BadRow`) are logged with their line
number and sent to the dead-letter topic and table
(:mod:`~workbench.simulator.deadletters`), and the replay goes on.

>>> # source = CsvSource.open("skab/valve1/0.csv")          # the skab mapping is detected
>>> # summary = replay(settings, endpoints, source, ReplayOptions(limit=100))
>>> # summary.rows, summary.produced, summary.labels, summary.bad_rows
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from workbench import kafka
from workbench.config import Settings
from workbench.errors import ConfigError
from workbench.processor.decode import SYMBOLS
from workbench.processor.rules import load_rules
from workbench.processor.validate import physical_bounds
from workbench.producer import ProduceReport, RecordProducer
from workbench.runs import RunRegistry, new_run_id
from workbench.simulator.csvsource import BadRow, CsvSource
from workbench.simulator.deadletters import DeadLetters
from workbench.simulator.labels import Block, LabelBlocks, iso_utc
from workbench.simulator.truth import GroundTruth, chaos_producer
from workbench.sinks.postgres import PostgresSink
from workbench.stack import Endpoints

log = logging.getLogger(__name__)

TIMESTAMPS = ("original", "now")
#: How many ground-truth events the summary lists (all are stored).
MAX_LISTED_EVENTS = 100
#: A replay whose dead letters are more than this share of its readings says so loudly
#: (and fails with ``--strict``): a column mapped to the wrong sensor type, most likely.
DEADLETTER_WARN_SHARE = 0.01


@dataclass(frozen=True)
class ReplayOptions:
    """How to replay: times kept or moved to now, speed factor, pacing, row limit.

    >>> ReplayOptions(timestamps="later")
    Traceback (most recent call last):
    ...
    workbench.errors.ConfigError: timestamps='later' is not valid: expected original or now
    """

    timestamps: str = "original"
    speed: float = 1.0
    realtime: bool = False
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.timestamps not in TIMESTAMPS:
            raise ConfigError("timestamps", self.timestamps, " or ".join(TIMESTAMPS))
        if not self.speed > 0:
            raise ConfigError("speed", self.speed, "a number > 0")
        if self.limit is not None and self.limit < 1:
            raise ConfigError("limit", self.limit, "a whole number >= 1")


@dataclass(frozen=True)
class ReplaySummary:
    """What a replay read, produced, rejected and labelled (``workbench replay --json``).

    ``rows`` counts data rows read (bad ones included); ``produced`` the readings the
    broker acknowledged; ``labels`` the ground-truth events; ``first_ts``/``last_ts`` the
    earliest and latest event time produced (epoch ms).
    """

    run_id: str
    file: str
    mapping: str
    rows: int
    produced: int
    failed: int
    bad_rows: int
    bad_rows_sample: list[dict[str, Any]]
    labels: int
    label_events: list[dict[str, Any]]
    machines: list[str]
    sensors: dict[str, str]
    null_values: int
    first_ts: int | None
    last_ts: int | None
    backwards_steps: int
    rows_behind: int
    ignored_columns: list[str]
    timestamps: str
    speed: float
    topic: str
    elapsed_s: float
    rows_per_s: float
    readings_per_s: float
    sha256: str
    #: partitions that got the end-of-run marker
    partitions: list[int]
    #: values outside their sensor type's physical range (the rules file's validation),
    #: by column: the processor dead-letters them
    out_of_range: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Every message (readings, dead letters, ground truth) was acknowledged."""
        return self.failed == 0

    @property
    def deadlettered(self) -> int:
        """Dead letters the replay makes: its bad rows, and the readings the processor will
        refuse for their range."""
        return self.bad_rows + sum(self.out_of_range.values())

    @property
    def deadletter_share(self) -> float:
        """Dead letters per reading the file held (a bad row counts one per column)."""
        readings = self.produced + self.bad_rows * max(1, len(self.sensors))
        return self.deadlettered / readings if readings else 0.0

    def warnings(self) -> list[str]:
        """What a user must hear about this replay: a high share of dead letters, and why."""
        if self.deadletter_share <= DEADLETTER_WARN_SHARE:
            return []
        said = [f"{self.deadlettered} of the file's readings ({self.deadletter_share:.0%}) "
                "are dead letters: the pipeline will not see them"]  # fmt: skip
        for column, n in sorted(self.out_of_range.items()):
            stype = self.sensors[column]
            said.append(
                f"{n} values of column {column!r} are outside the physical range of "
                f"{stype}: is it really {stype}? (a value of unknown unit: "
                f"--sensor {column}=generic)"
            )
        if self.bad_rows:
            said.append(f"{self.bad_rows} rows could not be read (see bad_rows_sample)")
        return said

    def to_dict(self) -> dict[str, Any]:
        times = {"first_time": self.first_ts, "last_time": self.last_ts}
        iso = {k: None if v is None else iso_utc(v) for k, v in times.items()}
        extra = {"ok": self.ok, "deadlettered": self.deadlettered, "warnings": self.warnings()}
        return dataclasses.asdict(self) | iso | extra

    def text(self) -> str:
        span = "-" if self.first_ts is None else f"{iso_utc(self.first_ts)} .. "
        span += "" if self.last_ts is None else iso_utc(self.last_ts)
        sample = "".join(f"\n                {b['reason']}" for b in self.bad_rows_sample)
        return "\n".join([
            f"run {self.run_id}: replayed {self.file} (mapping {self.mapping})",
            f"  rows          {self.rows} ({self.bad_rows} bad, dead-lettered){sample}",
            f"  produced      {self.produced} readings of {', '.join(self.sensors)} "
            f"from {len(self.machines)} machine(s), to {self.topic}",
            f"  labels        {self.labels} ground-truth events",
            f"  event time    {span} ({self.timestamps})",
            f"  out of order  {self.rows_behind} row(s) behind an earlier time, "
            f"{self.backwards_steps} step(s) back",
            f"  ignored       {', '.join(repr(c) for c in self.ignored_columns) or '-'}",
            f"  elapsed       {self.elapsed_s:.2f}s ({self.rows_per_s:,.0f} rows/s, "
            f"{self.readings_per_s:,.0f} readings/s)",
            *(f"  WARNING       {w}" for w in self.warnings()),
        ])  # fmt: skip


def replay(
    settings: Settings,
    endpoints: Endpoints,
    source: CsvSource,
    options: ReplayOptions | None = None,
    run_id: str | None = None,
) -> ReplaySummary:
    """Replay ``source`` to the raw topic as one registered run (kind ``replay``)."""
    options = options or ReplayOptions()
    run_id = run_id or new_run_id()
    if options.speed != 1 and options.timestamps == "original" and not options.realtime:
        log.warning(
            "speed %g has no effect: times are original and rows are not paced", options.speed
        )
    params = source.params() | dataclasses.asdict(options)
    with (
        RunRegistry(endpoints.database_url) as registry,
        registry.track(run_id, "replay", None, params),
    ):
        with PostgresSink(endpoints.database_url, settings.connect_timeout_s) as sink:
            summary = _Replay(settings, endpoints.broker, sink, source, options, run_id).run()
        registry.finish(run_id, "completed" if summary.ok else "failed",
                        produced=summary.produced, deadlettered=summary.bad_rows)  # fmt: skip
    for warning in summary.warnings():
        log.warning("replay of %s: %s", source.path.name, warning)
    return summary


class _Replay:
    """One pass over the file: re-time, number, produce, label and dead-letter its rows."""

    def __init__(self, settings: Settings, broker: kafka.Endpoint, sink: PostgresSink,
                 source: CsvSource, options: ReplayOptions, run_id: str) -> None:  # fmt: skip
        self.settings, self.broker, self.sink = settings, broker, sink
        self.source, self.options, self.run_id = source, options, run_id
        self.truth = GroundTruth(run_id, source=f"replay:{source.path.name}")
        self.first_ts: int | None = None  # the first good row's original time
        self.base_ms = 0  # where that row goes with --timestamps now
        self.rows = self.nulls = self.backwards = self.behind = 0
        self.seqs: dict[str, int] = {}
        self.spans: dict[str, list[int]] = {}  # machine -> [min, max, last] original time
        # per mapped column, the physical range of its sensor type, as the validator has it
        low, high = physical_bounds(load_rules(settings.rules_file).validation)
        at = [SYMBOLS.index(m.sensor_type) for m in source.mapping.sensors]
        self.bounds = [(float(low[i]), float(high[i])) for i in at]
        self.out_of_range = [0] * len(self.bounds)

    def retime(self, ts: int) -> int:
        if self.options.timestamps == "original" or self.first_ts is None:
            return ts
        return self.base_ms + round((ts - self.first_ts) / self.options.speed)

    def run(self) -> ReplaySummary:
        started = time.monotonic()
        src, s = self.source, self.settings
        # all three producers start at once: a producer's first delivery waits for its
        # handshake with the broker, which then overlaps with the replay
        with (
            RecordProducer(
                self.broker,
                s.topic_raw,
                self.run_id,
                processed_by=s.consumer_group,
                warn_held=s.broker_held_warn,
            ) as producer,
            chaos_producer(self.broker, s.topic_chaos, self.run_id) as chaos,
        ):
            dead = DeadLetters(s, self.broker, self.sink, self.run_id, src.path)
            try:
                self._stream(producer, dead, chaos)
            finally:
                dead_failed = dead.close()
            self.truth.flush(chaos, self.sink)
            producer.flush()
            partitions = producer.end_of_run(m.encode() for m in self.seqs)
        assert producer.report is not None and chaos.report is not None
        failed = producer.report.failed + chaos.report.failed + dead_failed
        elapsed = time.monotonic() - started
        return self._summary(producer.report, failed, dead, elapsed, sorted(partitions))

    def _summary(
        self,
        report: ProduceReport,
        failed: int,
        dead: DeadLetters,
        elapsed: float,
        partitions: list[int],
    ) -> ReplaySummary:
        src = self.source
        lows = [self.retime(s[0]) for s in self.spans.values()]
        highs = [self.retime(s[1]) for s in self.spans.values()]
        events = [e.record() | {"start": iso_utc(e.start_ts), "end": iso_utc(e.end_ts),
                                "detail": json.loads(e.detail or "null")}
                  for e in self.truth.events[:MAX_LISTED_EVENTS]]  # fmt: skip
        return ReplaySummary(
            run_id=self.run_id, file=str(src.path), mapping=src.mapping.name, rows=self.rows,
            produced=report.delivered, failed=failed,
            bad_rows=dead.count, bad_rows_sample=dead.sample, labels=len(self.truth.events),
            label_events=events, machines=list(self.seqs),
            sensors={s.column: s.sensor_type for s in src.mapping.sensors},
            null_values=self.nulls, first_ts=min(lows, default=None),
            last_ts=max(highs, default=None), backwards_steps=self.backwards,
            rows_behind=self.behind, ignored_columns=src.ignored_columns,
            timestamps=self.options.timestamps, speed=self.options.speed,
            topic=self.settings.topic_raw, elapsed_s=round(elapsed, 3),
            rows_per_s=round(self.rows / elapsed, 1),
            readings_per_s=round(report.delivered / elapsed, 1),
            sha256=report.sha256, partitions=partitions,
            out_of_range={m.column: n for m, n in zip(src.mapping.sensors, self.out_of_range,
                                                      strict=True) if n},
        )  # fmt: skip

    def _stream(self, producer: RecordProducer, dead: DeadLetters, chaos: RecordProducer) -> None:
        src, opt = self.source, self.options
        types = [s.sensor_type for s in src.mapping.sensors]
        blocks = LabelBlocks() if src.label_column else None
        sessions, previous = src.mapping.session_column is not None, ""
        pace0, max_seen, last_log = 0.0, 0, time.monotonic()
        for row in src.rows(opt.limit):
            self.rows += 1
            if type(row) is BadRow:
                dead.add(row)
                continue
            machine, ts = row.machine_id, row.ts
            if sessions and blocks is not None and machine != previous and previous:
                self._record_block(blocks.close(previous))  # a new session: the last is over
            previous = machine
            if self.first_ts is None:
                self.first_ts, self.base_ms = ts, round(time.time() * 1000)
                pace0, max_seen = time.monotonic(), ts
            out = self.retime(ts)
            seq = self.seqs.get(machine, 0)
            self.seqs[machine] = seq + 1
            span = self.spans.get(machine)
            if span is None:
                self.spans[machine] = [ts, ts, ts]
            else:
                self.backwards += ts < span[2]
                self.behind += ts <= span[1]
                span[0], span[1], span[2] = min(span[0], ts), max(span[1], ts), ts
            for i, (stype, value) in enumerate(zip(types, row.values, strict=True)):
                producer.send({"machine_id": machine, "ts": out, "sensor_type": stype,
                               "value": value, "status_code": 0, "seq": seq})  # fmt: skip
                if value is not None and not self.bounds[i][0] <= value <= self.bounds[i][1]:
                    self.out_of_range[i] += 1
            self.nulls += row.values.count(None)
            if blocks is not None:
                self._record_block(
                    blocks.update(machine, row.labelled, out, row.index, row.line, seq)
                )
            if opt.realtime:  # pace on the latest time so far: a step back sends at once
                max_seen = max(max_seen, ts)
                wait = pace0 + (max_seen - self.first_ts) / 1000 / opt.speed - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            if time.monotonic() - last_log >= 5.0:
                last_log = time.monotonic()
                log.info("replayed %d rows of %s", self.rows, src.path.name)
                self.truth.flush(chaos, self.sink)  # a live view sees it while the replay runs
        for block in blocks.close_all() if blocks is not None else ():
            self._record_block(block)
        self._record_windows()

    def _record_block(self, block: Block | None) -> None:
        if block is None:
            return
        detail = block.detail(self.source.label_column or "")
        self.truth.record("anomaly", block.machine_id, None, block.start_ts, block.end_ts,
                          detail=json.dumps(detail))  # fmt: skip

    def _record_windows(self) -> None:
        """One event per labels-file window and machine whose replayed rows it overlaps."""
        labels_file = self.source.labels_path.name if self.source.labels_path else None
        for w in self.source.windows:
            for machine, (low, high, _) in self.spans.items():
                if w.start_ts > high or w.end_ts < low:
                    continue
                detail: dict[str, Any] = {"labels_file": labels_file}
                if w.point_ts is not None:
                    point = self.retime(w.point_ts)
                    detail |= {"anomaly_point": iso_utc(point), "anomaly_point_ts": point}
                if self.options.timestamps != "original":
                    detail["original_window"] = [iso_utc(w.start_ts), iso_utc(w.end_ts)]
                self.truth.record("anomaly", machine, None, self.retime(w.start_ts),
                                  self.retime(w.end_ts), detail=json.dumps(detail))  # fmt: skip
