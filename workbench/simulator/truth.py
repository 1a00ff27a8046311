"""Ground truth: every fault a source injects (or a data set labels), recorded as it happens.

Each event is numbered within its run and published twice: on the chaos topic (Avro
``chaos_event``, keyed by machine) for anything that listens live, and in the
``chaos_events`` table, so that an experiment can score what the pipeline detected.
Publishing is incremental (:meth:`GroundTruth.flush`), so a live run's ground truth
appears while it runs, and idempotent (natural key run id + event number).

>>> truth = GroundTruth("r1", source="chaos")
>>> truth.record("spike", "m-0001", "temperature", 1_000, 1_000, magnitude=12.5)
>>> truth.counts()
{'spike': 1}
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import astuple, dataclass
from typing import TYPE_CHECKING

from workbench import kafka
from workbench.producer import RecordProducer
from workbench.schemas import codec_for

if TYPE_CHECKING:  # the sink (SQLAlchemy) is not loaded by everything that imports settings
    from workbench.sinks.postgres import PostgresSink

log = logging.getLogger(__name__)

#: The simulator's fault kinds: each has a chaos intensity and can be scripted.
FAULT_KINDS = (
    "spike", "drift", "stuck", "loss", "duplicate",
    "latency", "burst", "failure", "power", "malformed",
)  # fmt: skip
#: Every kind of ground-truth event: the fault kinds; ``degradation``, the wear before a
#: failure's runaway (part of a ``failure``, not a fault of its own: no intensity, no script);
#: ``anomaly``, a label of a real data set.
KINDS = (*FAULT_KINDS, "anomaly", "degradation")


@dataclass(frozen=True)
class FaultEvent:
    """One fault, in the column order of the ``chaos_events`` table (times in epoch ms)."""

    run_id: str
    event_id: int
    kind: str
    machine_id: str
    sensor_type: str | None
    start_ts: int
    end_ts: int
    magnitude: float | None
    source: str
    detail: str | None = None

    def record(self) -> dict:
        return {
            "run_id": self.run_id,
            "event_id": self.event_id,
            "kind": self.kind,
            "machine_id": self.machine_id,
            "sensor_type": self.sensor_type,
            "start_ts": self.start_ts,
            "end_ts": self.end_ts,
            "magnitude": self.magnitude,
            "source": self.source,
            "detail": self.detail,
        }


class GroundTruth:
    """Collects a run's fault events and publishes the new ones on :meth:`flush`."""

    def __init__(self, run_id: str, source: str = "chaos") -> None:
        self.run_id = run_id
        self.source = source
        self.events: list[FaultEvent] = []
        self._published = 0

    def record(
        self,
        kind: str,
        machine_id: str,
        sensor_type: str | None,
        start_ts: int,
        end_ts: int,
        magnitude: float | None = None,
        detail: str | None = None,
        source: str | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(KINDS)}")
        event = FaultEvent(
            self.run_id, len(self.events), kind, machine_id, sensor_type,
            int(start_ts), int(end_ts), magnitude, source or self.source, detail,
        )  # fmt: skip
        self.events.append(event)

    def counts(self) -> dict[str, int]:
        """How many events of each kind were recorded (kinds with none are left out)."""
        return dict(Counter(e.kind for e in self.events))

    def flush(self, producer: RecordProducer | None, sink: PostgresSink | None) -> int:
        """Publish the events recorded since the last flush; return how many."""
        new = self.events[self._published :]
        if not new:
            return 0
        if producer is not None:
            for event in new:
                producer.send(event.record())
        if sink is not None:
            sink.write_chaos_events([astuple(e) for e in new])
        self._published = len(self.events)
        return len(new)


def chaos_producer(broker: kafka.Endpoint, topic: str, run_id: str) -> RecordProducer:
    """A producer for ``chaos_event`` records (same delivery accounting as readings)."""
    return RecordProducer(broker, topic, run_id, codec=codec_for("chaos_event"))
