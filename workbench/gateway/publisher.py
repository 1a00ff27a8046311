"""Produce a request's readings to the raw topic and await the broker's acknowledgement of
every one of them, without blocking the event loop.

librdkafka reports each message once, delivered or failed, from ``poll()``, which a
thread of its own calls; the report of a request's last message wakes the request's
coroutine. ``message.timeout.ms`` is the acknowledgement timeout, so every message is
reported within it: a request is answered only when the fate of each of its readings is
known (202 when all were acknowledged, 503 otherwise, with the counts). A 503 can come
for a reading the broker did store and whose acknowledgement was lost; a client that
sends it again makes a duplicate, which the processor drops (it keeps the sequence
numbers it has seen per machine and sensor): delivery is at least once, storage exactly
once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from workbench import kafka

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What the broker said about a request's messages."""

    sent: int
    delivered: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    #: the partitions the delivered messages went to
    partitions: set[int] = field(default_factory=set)

    @property
    def complete(self) -> bool:
        return self.delivered == self.sent


class _Pending:
    """The delivery reports of one request, counted in the poll thread."""

    def __init__(self, outcome: Outcome, loop: asyncio.AbstractEventLoop) -> None:
        self.outcome, self.loop = outcome, loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.expected = outcome.sent

    def callback(self, err: Any, _msg: Any) -> None:
        # called by the poll thread alone; no lock: see not_queued
        o = self.outcome
        if err is None:
            o.delivered += 1
        else:
            o.failed += 1
            o.errors[err.str()] = o.errors.get(err.str(), 0) + 1
        if o.delivered + o.failed >= self.expected:
            self.loop.call_soon_threadsafe(self._resolve)

    def tracking_partitions(self, err: Any, msg: Any) -> None:
        """:meth:`callback`, also noting the partition of each delivered message."""
        if err is None:
            self.outcome.partitions.add(msg.partition())
        self.callback(err, msg)

    def not_queued(self, n: int) -> None:
        """``n`` messages were never handed to the producer (its queue stayed full).

        The event loop's thread lowers what is expected while the poll thread may count a
        report: each writes first and reads after, so under the GIL at least one of them
        sees both writes and resolves (resolving twice does nothing)."""
        self.expected -= n
        self.outcome.errors["the producer's queue stayed full"] = n
        if self.outcome.delivered + self.outcome.failed >= self.expected:
            self.loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        if not self.future.done():
            self.future.set_result(None)


class Publisher:
    """One producer for the gateway's lifetime, shared by all requests.

    >>> # publisher = Publisher(bootstrap, "telemetry.raw", ack_timeout_s=10)
    >>> # outcome = await publisher.publish(keys, values, run_id="r1")
    """

    def __init__(
        self, bootstrap: kafka.Endpoint, topic: str, ack_timeout_s: float = 10.0, **config: Any
    ) -> None:
        self.bootstrap, self.topic, self.ack_timeout_s = bootstrap, topic, ack_timeout_s
        self._producer = kafka.make_producer(
            bootstrap,
            **{
                # A reading goes out at once, with up to five produce requests in flight
                # per connection: with one (what the simulator's producer keeps, for order
                # under retries), requests queue behind each other's acknowledgements
                # (measured on the embedded broker at 500 readings/s, one by one: p99
                # 28 ms with one in flight, 10 ms with five). A retry may then reorder a
                # few readings; the processor orders by event time and recognises a
                # reading by its sequence number, not by its place. Idempotence would keep
                # the order but the embedded broker holds an idempotent producer's
                # messages for up to a second (p99 460 ms).
                "linger.ms": 0,
                "max.in.flight.requests.per.connection": 5,
                "message.timeout.ms": max(1, int(ack_timeout_s * 1000)),
            }
            | config,
        )
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="gateway-acks", daemon=True)
        self._poller.start()
        self._ready_at, self._ready = -1.0, False

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    async def publish(
        self,
        keys: Sequence[bytes],
        values: Sequence[bytes],
        run_id: str,
        control: bytes | None = None,
    ) -> Outcome:
        """Produce the messages (``keys[i]``, ``values[i]``) with the run id header (and a
        ``control`` header, e.g. ``end-of-run``) and return once the broker reported on each."""
        outcome = Outcome(len(values))
        if not values:
            return outcome
        pending = _Pending(outcome, asyncio.get_running_loop())
        produce, topic = self._producer.produce, self.topic
        callback = pending.callback if control is None else pending.tracking_partitions
        headers = [("run_id", run_id.encode())]
        if control is not None:
            headers.append(("control", control))
        deadline = time.monotonic() + self.ack_timeout_s
        i, n = 0, len(values)
        while i < n:
            try:
                # positional (topic, value, key, partition, on_delivery, ...): keywords cost
                # as much as the call
                produce(topic, values[i], keys[i], -1, callback, None, 0, headers)
                i += 1
            except BufferError:
                if time.monotonic() > deadline:
                    pending.not_queued(n - i)
                    break
                await asyncio.sleep(0.005)  # the poll thread makes room meanwhile
        try:
            await asyncio.wait_for(asyncio.shield(pending.future), self.ack_timeout_s + 5.0)
        except TimeoutError:
            log.error("no delivery report for some of %d readings within %.0f s",
                      len(values), self.ack_timeout_s + 5.0)  # fmt: skip
        return outcome

    def ready(self, timeout_s: float = 1.0) -> bool:
        """Whether the broker answers and has the topic (asked at most once a second)."""
        now = time.monotonic()
        if now - self._ready_at >= 1.0:
            try:
                topics = self._producer.list_topics(timeout=timeout_s).topics
                self._ready = self.topic in topics
            except kafka.KafkaException:
                self._ready = False
            self._ready_at = time.monotonic()
        return self._ready

    def close(self, timeout_s: float = 10.0) -> int:
        """Send what is queued (up to ``timeout_s``), stop polling; the messages left."""
        left = self._producer.flush(timeout_s)
        self._stop.set()
        self._poller.join()
        return left
