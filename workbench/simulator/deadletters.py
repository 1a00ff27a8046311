"""Bad rows of a replayed file, to the dead-letter path, as the processor does with bad messages.

Each bad row goes to the dead-letter topic (key: the machine id, value: the raw line, headers
``reason``, ``run_id`` and ``source`` = ``<file>:<line>``) and to the ``dead_letters`` table
(topic ``replay:<file>@<run id>``, partition 0, offset = the line number), with a reason that
names the line, the column and what was wrong with it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from workbench import kafka
from workbench.config import Settings
from workbench.simulator.csvsource import BadRow
from workbench.sinks.postgres import PostgresSink

log = logging.getLogger(__name__)

#: How many bad rows are logged one by one and listed in the summary.
SAMPLE = 5


class DeadLetters:
    """Bad rows of one replay to the dead-letter topic and table; the first few are logged.

    Rows are stored in batches, and messages produced as they come; :meth:`close` stores
    the rest, waits for the broker, and says how many it did not acknowledge.
    """

    def __init__(
        self,
        settings: Settings,
        broker: kafka.Endpoint,
        sink: PostgresSink,
        run_id: str,
        file: Path,
    ) -> None:
        self.topic, self.sink = settings.topic_deadletter, sink
        self.run_id, self.file = run_id, file
        # (topic, partition, offset) is the table's natural key: the run id keeps two
        # replays of one file apart, the line number the rows of one replay
        self.table_topic = f"replay:{file.name}@{run_id}"
        self.producer = kafka.make_producer(broker)
        self.tracker = kafka.DeliveryTracker()
        self.pending: list[tuple[Any, ...]] = []
        self.count = 0
        self.sample: list[dict[str, Any]] = []

    def add(self, row: BadRow) -> None:
        reason = f"line {row.line}: {row.reason}"
        self.count += 1
        if len(self.sample) < SAMPLE:
            self.sample.append({"line": row.line, "reason": reason})
            log.warning("%s %s (dead-lettered)", self.file.name, reason)
        key = None if row.machine_id is None else row.machine_id.encode()
        payload = row.raw.rstrip("\r\n").encode(errors="surrogateescape")
        headers = [("reason", reason.encode()), ("run_id", self.run_id.encode()),
                   ("source", f"{self.file.name}:{row.line}".encode())]  # fmt: skip
        while True:
            try:
                self.producer.produce(self.topic, key=key, value=payload, headers=headers,
                                      on_delivery=self.tracker.callback)  # fmt: skip
                break
            except BufferError:  # local queue full: let the broker catch up
                self.producer.poll(0.05)
        self.pending.append((self.table_topic, 0, row.line, self.run_id, reason, key, payload))
        if len(self.pending) >= 1000:
            self.write()

    def write(self) -> None:
        self.producer.poll(0)
        if self.pending:
            self.sink.write([], self.pending)
            self.pending = []

    def close(self) -> int:
        """Store and flush what is left; return how many were not acknowledged."""
        self.write()
        remaining = self.producer.flush(30)
        if self.count > SAMPLE:
            log.warning("%s: %d bad rows in all (dead-lettered)", self.file.name, self.count)
        return self.tracker.failed + remaining
