"""What a notebook changes or watches while a simulation runs: chaos intensities, pace, progress.

Chaos intensities are parsed from a compact spec and changed mid-run through
:class:`ChaosControl`; :class:`Pace` sets how fast the run goes on the wall clock, and
:class:`RunProgress` tells another thread how far it got. All three are thread-safe: a
widget callback or a script changes them while the simulation's own thread reads them.

Each fault kind has one intensity; 0 switches it off. What the number means depends on
the kind:

============================  ==========================================================
kind                          intensity
============================  ==========================================================
spike, loss, duplicate,       probability per reading (0 to 1)
malformed
drift, stuck, burst,          episodes per machine per minute of event time
failure, power
latency                       mean extra delivery delay, seconds (``2s``, ``500ms``, ``1.5``)
============================  ==========================================================

>>> parse_chaos("spike=0.01, drift=0.2, loss=0.05, latency=500ms")
{'spike': 0.01, 'drift': 0.2, 'loss': 0.05, 'latency': 0.5}
>>> parse_chaos("spikes=1")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
workbench.errors.ConfigError: chaos='spikes=1' is not valid: expected a fault kind, one of ...
>>> control = ChaosControl({"loss": 0.05})
>>> control.set("loss", 0.1); control.snapshot()["loss"]
0.1
>>> pace = Pace(200); pace.set(None); pace.get() is None
True
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping

from workbench.errors import ConfigError
from workbench.simulator.truth import FAULT_KINDS

PER_READING = ("spike", "loss", "duplicate", "malformed")
PER_MACHINE_MINUTE = ("drift", "stuck", "burst", "failure", "power")
DELAY = ("latency",)

_NUMBER = re.compile(r"^\s*[0-9]*\.?[0-9]+\s*$")
_PART = r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h|d)"
_DURATION = re.compile(rf"^(?:{_PART})+\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration_s(text: object, name: str = "duration") -> float:
    """Seconds from ``2s``, ``500ms``, ``1.5m``, ``1m30s``, ``7d`` or a plain number of seconds.

    >>> parse_duration_s("250ms"), parse_duration_s("3"), parse_duration_s("2m30s")
    (0.25, 3.0, 150.0)
    """
    raw = str(text)
    if _NUMBER.match(raw):
        return float(raw)
    if not _DURATION.match(raw):
        raise ConfigError(name, text, "a duration such as 2s, 500ms, 1m30s or a number of seconds")
    return sum(float(n) * _UNIT_S[unit] for n, unit in re.findall(_PART, raw))


def duration_argument(text: str) -> float:
    """An argparse ``type=`` for a positive duration (``90``, ``5m``): seconds, or an
    ``ArgumentTypeError`` that argparse prints as one line."""
    import argparse

    try:
        value = parse_duration_s(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration > 0")
    return value


def check_intensity(kind: str, value: float) -> float:
    """Validate one intensity; return it as a float."""
    if kind not in FAULT_KINDS:
        raise ConfigError("chaos", kind, f"a fault kind, one of {', '.join(FAULT_KINDS)}")
    value = float(value)
    if value < 0 or (kind in PER_READING and value > 1):
        bound = "a probability from 0 to 1" if kind in PER_READING else "a number >= 0"
        raise ConfigError(f"chaos {kind}", value, bound)
    return value


def parse_chaos(spec: str) -> dict[str, float]:
    """Parse ``kind=value,kind=value``; every problem names the item it is in."""
    result: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        kind, sep, raw = item.partition("=")
        kind = kind.strip()
        if not sep or kind not in FAULT_KINDS:
            raise ConfigError("chaos", item, f"a fault kind, one of {', '.join(FAULT_KINDS)}")
        try:
            value = parse_duration_s(raw, f"chaos {kind}") if kind in DELAY else float(raw)
        except ValueError:
            raise ConfigError(f"chaos {kind}", raw.strip(), "a number") from None
        result[kind] = check_intensity(kind, value)
    return result


class ChaosControl:
    """Thread-safe fault intensities that a notebook widget or a script changes mid-run.

    The simulator takes a :meth:`snapshot` once per tick, so a change applies from the
    next sample on, and a tick never sees half of an update.
    """

    def __init__(self, intensities: Mapping[str, float] | None = None) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(FAULT_KINDS, 0.0)
        self._last_on: dict[str, float] = {}
        for kind, value in (intensities or {}).items():
            self.set(kind, value)

    def set(self, kind: str, value: float) -> None:
        value = check_intensity(kind, value)
        with self._lock:
            self._values[kind] = value
            if value > 0:
                self._last_on[kind] = value

    def off(self, kind: str) -> None:
        self.set(kind, 0.0)

    def on(self, kind: str, default: float) -> None:
        """Switch ``kind`` back on at its last non-zero intensity (or ``default``)."""
        self.set(kind, self._last_on.get(kind, default))

    def get(self, kind: str) -> float:
        with self._lock:
            return self._values[kind]

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return dict(self._values)


class Pace:
    """Thread-safe, live-adjustable pace of a simulation on the wall clock.

    The value is a target rate in readings per wall-clock second over the whole factory
    (bursts not counted); ``None`` or 0 means as fast as possible. The simulation reads
    it once per tick and re-anchors its schedule whenever it changes, so a new pace
    applies from the next tick on, without a burst of catch-up ticks.

    >>> pace = Pace(100)
    >>> pace.get(), pace.interval_s(readings_per_tick=20)
    (100.0, 0.2)
    >>> pace.set(0); pace.get() is None, pace.interval_s(20)
    (True, 0.0)
    >>> pace.set(-1)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    workbench.errors.ConfigError: pace=-1.0 is not valid: expected readings per second >= 0, ...
    """

    def __init__(self, events_per_s: float | None = None) -> None:
        self._lock = threading.Lock()
        self._value: float | None = None
        self._version = 0
        self.set(events_per_s)

    def set(self, events_per_s: float | None) -> None:
        """Change the target rate (readings per wall second); ``None`` or 0: no pacing."""
        value = None if events_per_s is None else float(events_per_s)
        if value is not None and not value >= 0:  # also refuses NaN
            raise ConfigError(
                "pace", value, "readings per second >= 0, or None for as fast as possible"
            )
        with self._lock:
            self._value = value or None
            self._version += 1

    def get(self) -> float | None:
        """The target rate in readings per wall second, or ``None`` (as fast as possible)."""
        with self._lock:
            return self._value

    def read(self) -> tuple[int, float | None]:
        """``(version, rate)`` in one go: the version changes with every :meth:`set`."""
        with self._lock:
            return self._version, self._value

    def interval_s(self, readings_per_tick: float) -> float:
        """Wall seconds between two ticks of ``readings_per_tick`` readings (0: no wait)."""
        rate = self.get()
        return readings_per_tick / rate if rate else 0.0


class RunProgress:
    """How far a running simulation got, readable from another thread at any moment.

    The simulation updates it once per tick; a progress bar or a live plot reads
    :meth:`snapshot`, which is always one consistent state.

    >>> progress = RunProgress()
    >>> progress.update(event_s=30.0, produced=93, dropped=1)
    >>> progress.snapshot()
    {'event_s': 30.0, 'produced': 93, 'dropped': 1, 'finished': False}
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = {"event_s": 0.0, "produced": 0, "dropped": 0, "finished": False}

    def update(self, event_s: float, produced: int, dropped: int, finished: bool = False) -> None:
        """Record the simulation's position: event seconds simulated, readings made, lost."""
        with self._lock:
            self._state = {"event_s": event_s, "produced": produced, "dropped": dropped,
                           "finished": finished}  # fmt: skip

    def snapshot(self) -> dict[str, float | int | bool]:
        """The latest state: ``event_s``, ``produced``, ``dropped``, ``finished``."""
        with self._lock:
            return dict(self._state)

    @property
    def event_s(self) -> float:
        """Seconds of event time simulated so far."""
        return float(self.snapshot()["event_s"])

    @property
    def produced(self) -> int:
        """Readings the factory made so far (dropped ones included)."""
        return int(self.snapshot()["produced"])

    @property
    def finished(self) -> bool:
        """Whether the simulation ended (its duration reached, or stopped)."""
        return bool(self.snapshot()["finished"])
