"""The event-time watermark of one Kafka partition, with an idle timeout.

The watermark is the maximum event time seen on the partition minus the allowed
lateness: the processor assumes that no event older than it will still arrive, so a
window ending at or before it can be finalised. It never moves backwards.

A partition that goes quiet would freeze a plain watermark, and with it every open
window of the partition. So when no event has arrived for ``idle_timeout_s`` of wall
time, the watermark advances as if event time had kept pace with the wall clock since
the last event: ``max_ts + (wall_now - wall_of_last_event) - lateness``. Wall time is
always passed in by the caller (``time.monotonic()`` in the processor, plain numbers in
tests); this module never reads a clock.

>>> wm = Watermark(lateness_ms=10_000, idle_timeout_s=30.0)
>>> print(wm.at(wall_s=0.0))
None
>>> wm.observe(ts_ms=100_000, wall_s=0.0)
>>> wm.at(wall_s=29.9)  # busy enough: max event time - lateness
90000
>>> wm.at(wall_s=40.0)  # idle for 40 s of wall time: event time assumed to keep pace
130000
>>> wm.observe(ts_ms=101_000, wall_s=41.0)  # a new event never moves it back
>>> wm.at(wall_s=41.0)
130000
"""

from __future__ import annotations

from typing import Any


class Watermark:
    """Maximum event time seen minus the allowed lateness, advanced on idleness.

    Parameters
    ----------
    lateness_ms
        How far behind the maximum event time an event may arrive and still count as
        on time.
    idle_timeout_s
        Wall-clock seconds without any event after which the watermark follows the wall
        clock; ``None`` disables idle advancement.

    Attributes
    ----------
    max_ts_ms
        The largest event time observed, or ``None`` before the first event.
    wall_last_s
        Wall time of the last observed event (any event, late ones included).
    value
        The watermark as last computed by :meth:`at` or :meth:`observe`.
    """

    __slots__ = ("idle_timeout_s", "lateness_ms", "max_ts_ms", "value", "wall_last_s")

    def __init__(self, lateness_ms: int, idle_timeout_s: float | None) -> None:
        self.lateness_ms = lateness_ms
        self.idle_timeout_s = idle_timeout_s
        self.max_ts_ms: int | None = None
        self.wall_last_s = 0.0
        self.value: int | None = None

    def at(self, wall_s: float) -> int | None:
        """The watermark at wall time ``wall_s``, including idle advancement."""
        if self.max_ts_ms is None:
            return None
        quiet_s = wall_s - self.wall_last_s
        if self.idle_timeout_s is not None and quiet_s >= self.idle_timeout_s:
            idle = self.max_ts_ms + int(quiet_s * 1000) - self.lateness_ms
            if idle > self.value:
                self.value = idle
        return self.value

    def observe(self, ts_ms: int, wall_s: float) -> None:
        """Record an event with event time ``ts_ms`` that arrived at wall time ``wall_s``."""
        if self.max_ts_ms is None:
            self.max_ts_ms = ts_ms
            self.value = ts_ms - self.lateness_ms
        elif ts_ms > self.max_ts_ms:
            self.max_ts_ms = ts_ms
            if ts_ms - self.lateness_ms > self.value:
                self.value = ts_ms - self.lateness_ms
        self.wall_last_s = wall_s

    def snapshot(self) -> dict[str, Any]:
        """Plain data from which :meth:`restore` rebuilds this watermark."""
        return {"max_ts_ms": self.max_ts_ms, "wall_last_s": self.wall_last_s, "value": self.value}

    @classmethod
    def restore(
        cls,
        lateness_ms: int,
        idle_timeout_s: float | None,
        state: dict[str, Any],
        wall_s: float | None = None,
    ) -> Watermark:
        """Rebuild from :meth:`snapshot`.

        Monotonic clocks of two processes are unrelated: a new owner of the partition
        passes its own ``wall_s``, and the idle clock restarts there (the partition
        waits a full idle timeout before it counts as quiet again). Without ``wall_s``
        the saved wall time is kept, which is right within one process.
        """
        wm = cls(lateness_ms, idle_timeout_s)
        wm.max_ts_ms = state["max_ts_ms"]
        wm.value = state["value"]
        wm.wall_last_s = state["wall_last_s"] if wall_s is None else wall_s
        return wm
